//! The TOML spec front end through validation: any bytes either become a
//! spec or a located error; it never panics, and an error's location is
//! inside the input.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(error) = prov::spec::parse_toml_bytes(data, Path::new("fuzz.toml")) {
        // Rendering the error (with its source excerpt) must not panic either.
        let _ = error.to_string();
    }
});
