//! The libvirt domain XML reader (what `virsh dumpxml` returns).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(xml) = std::str::from_utf8(data) {
        let _ = prov_provider_libvirt::fuzz_parse_domain(xml);
    }
});
