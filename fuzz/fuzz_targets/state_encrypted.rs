//! The encrypted state decoder: an envelope document whose `encrypted`
//! field is opened with an identity that is a recipient. The input is the
//! envelope; half the runs instead seal the input as the inner document,
//! so the decrypting side sees real ciphertext around fuzzed plaintext.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prov::secrets::Identities;
use prov_state::StateDocument;

struct Keys {
    identities: Identities,
    recipient: String,
    _dir: tempfile::TempDir,
}

/// A fresh identity (age identities are not `Sync`: one per thread, and
/// libFuzzer runs the target on one).
fn keys() -> Keys {
    use age::secrecy::ExposeSecret;
    let identity = age::x25519::Identity::generate();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("identity.txt");
    std::fs::write(&path, identity.to_string().expose_secret()).expect("the identity file");
    Keys {
        identities: Identities::load(&[path], None).expect("the identity loads"),
        recipient: identity.to_public().to_string(),
        _dir: dir,
    }
}

thread_local! {
    static KEYS: Keys = keys();
}

fuzz_target!(|data: &[u8]| KEYS.with(|keys| run(keys, data)));

fn run(keys: &Keys, data: &[u8]) {
    let Some((&mode, data)) = data.split_first() else {
        return;
    };
    if mode & 1 == 0 {
        let Ok(envelope) = prov_state::fuzzing::decode_version(data) else {
            return;
        };
        if let Some(sealed) = &envelope.encrypted {
            let _ = prov::secrets::state::open_envelope(
                &envelope,
                sealed,
                &keys.identities,
                std::slice::from_ref(&keys.recipient),
            );
        }
    } else {
        let sealed = prov::secrets::encrypt(std::slice::from_ref(&keys.recipient), data)
            .expect("encrypting to a valid recipient");
        let sealed = String::from_utf8_lossy(&sealed).into_owned();
        let envelope = StateDocument::new("fuzz").envelope(sealed.clone());
        if let Ok(inner) = prov::secrets::state::open_envelope(
            &envelope,
            &sealed,
            &keys.identities,
            std::slice::from_ref(&keys.recipient),
        ) {
            assert_eq!(inner.lineage, envelope.lineage);
        }
    }
}
