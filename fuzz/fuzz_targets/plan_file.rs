//! The saved plan file decoder (`prov apply FILE`), plain and encrypted
//! (an age-armored input is "decrypted" to its own body past the armor
//! line, so both branches see fuzzed bytes).
#![no_main]

use libfuzzer_sys::fuzz_target;
use prov::plan::file::PlanFile;
use zeroize::Zeroizing;

fuzz_target!(|data: &[u8]| {
    let _ = PlanFile::decode(Zeroizing::new(data.to_vec()), "fuzz.plan", |armored| {
        let body = armored
            .splitn(2, |b| *b == b'\n')
            .nth(1)
            .unwrap_or_default();
        Ok(Zeroizing::new(body.to_vec()))
    });
});
