//! History rebuilt from a whole version and patches: the input is split at
//! NUL bytes into the whole version and the patches after it.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut parts = data.split(|b| *b == 0);
    let whole = parts.next().unwrap_or_default();
    let patches: Vec<&[u8]> = parts.take(16).collect();
    let _ = prov_state::fuzzing::rebuild(whole, &patches);
});
