//! The VBoxManage `showvminfo --machinereadable` and `list vms` parsers:
//! they never panic, and what `--machinereadable` parsing returns, written
//! back the way VBoxManage writes it (`key="value"`, `\` and `"` escaped),
//! parses to the same again.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = prov_provider_virtualbox::parse_list_vms(&text);
    let info = prov_provider_virtualbox::parse_machine_readable(&text);
    let kept: Vec<(&String, &String)> = info
        .iter()
        .filter(|(key, value)| !key.contains(['"', '=', '\r']) && !value.contains('\r'))
        .collect();
    let rendered: String = kept
        .iter()
        .map(|(key, value)| {
            let escaped = value.replace('\\', "\\\\").replace('"', "\\\"");
            format!("{key}=\"{escaped}\"\n")
        })
        .collect();
    let again = prov_provider_virtualbox::parse_machine_readable(&rendered);
    assert_eq!(again.len(), kept.len(), "{rendered:?}");
    for (key, value) in &again {
        assert_eq!(info.get(key), Some(value), "{key} after writing it back");
    }
});
