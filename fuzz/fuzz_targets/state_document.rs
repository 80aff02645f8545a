//! The state document decoder (what S3 and `latest.json` hold): any bytes
//! decode to a document or fail with an error, and a decoded document
//! encodes and decodes to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(doc) = prov_state::fuzzing::decode_version(data) {
        let again = serde_json::to_vec(&doc).expect("a decoded document encodes");
        let back = prov_state::fuzzing::decode_version(&again).expect("and decodes again");
        assert_eq!(back, doc);
    }
});
