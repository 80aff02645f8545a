//! The material store on disk: round trips, untouched kept files, removal,
//! no plaintext secret in any file, interrupted writes, foreign files.

use std::collections::BTreeMap;
use std::path::Path;

use super::*;
use crate::kube::model::Flavor;
use crate::kube::pki::issue::issue;
use crate::kube::pki::renewal::plan;
use crate::kube::testing::{cluster, identity, issued, now};

/// Every file under `dir` with its bytes.
fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(current) = stack.pop() {
        for entry in fs_err::read_dir(&current).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let name = path.strip_prefix(dir).unwrap().display().to_string();
                files.insert(name, fs_err::read(&path).unwrap());
            }
        }
    }
    files
}

/// A store holding the fixture cluster's material, with the identity that
/// opens it.
fn saved(dir: &Path) -> (Store, Material, Identities, Vec<String>) {
    let cluster = cluster(Flavor::Nixos);
    let material = issued(&cluster);
    let (identity_path, recipient) = identity(dir);
    let store = Store::new(dir, "dev");
    let changes = plan(&cluster, &Existing::default(), now());
    store
        .save(&changes, &material, std::slice::from_ref(&recipient))
        .unwrap();
    let identities = Identities::load(&[identity_path], None).unwrap();
    (store, material, identities, vec![recipient])
}

#[test]
fn saves_and_loads_every_item() {
    let dir = tempfile::tempdir().unwrap();
    let (store, material, identities, _) = saved(dir.path());
    assert_eq!(store.dir(), dir.path().join("pki/dev"));
    assert_eq!(store.existing().unwrap(), material.existing());
    assert_eq!(store.load(&identities).unwrap(), material);
    let files = snapshot(store.dir());
    for name in [
        "kubernetes-ca.pem",
        "kubernetes-ca-key.pem.age",
        "service-account.pem",
        "service-account-key.pem.age",
        "encryption-key.age",
        "nodes/cp/kube-apiserver.pem",
        "nodes/cp/kube-apiserver-key.pem.age",
        "nodes/w2/flannel-client-key.pem.age",
    ] {
        assert!(
            files.contains_key(name),
            "{name} missing: {:?}",
            files.keys()
        );
    }
    // No private key or secret in plaintext anywhere.
    let encryption_key = material.get(None, Kind::EncryptionKey).unwrap();
    for (name, bytes) in &files {
        let text = String::from_utf8_lossy(bytes);
        assert!(!text.contains("PRIVATE KEY"), "{name}");
        assert!(!text.contains(encryption_key.secret.expose()), "{name}");
        if name.ends_with(".age") {
            assert!(
                text.starts_with("-----BEGIN AGE ENCRYPTED FILE-----"),
                "{name}"
            );
        }
    }
}

#[test]
fn an_empty_directory_is_an_empty_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::new(dir.path(), "none");
    assert_eq!(store.existing().unwrap(), Existing::default());
}

#[test]
fn only_changed_items_touch_their_files() {
    let dir = tempfile::tempdir().unwrap();
    let (store, material, identities, recipients) = saved(dir.path());
    let before = snapshot(store.dir());
    let mut cluster = cluster(Flavor::Nixos);
    cluster.members[1].ips.push("192.0.2.99".parse().unwrap());
    cluster.members.retain(|m| m.node_name != "w2");
    let changes = plan(&cluster, &store.existing().unwrap(), now());
    let material = issue(&cluster, &changes, material, now()).unwrap();
    store.save(&changes, &material, &recipients).unwrap();
    let after = snapshot(store.dir());
    let changed: Vec<&String> = before
        .iter()
        .filter(|(name, bytes)| after.get(*name) != Some(*bytes))
        .map(|(name, _)| name)
        .collect();
    assert_eq!(
        changed,
        [
            "nodes/w1/kubelet-key.pem.age",
            "nodes/w1/kubelet.pem",
            "nodes/w2/flannel-client-key.pem.age",
            "nodes/w2/flannel-client.pem",
            "nodes/w2/kube-proxy-client-key.pem.age",
            "nodes/w2/kube-proxy-client.pem",
            "nodes/w2/kubelet-client-key.pem.age",
            "nodes/w2/kubelet-client.pem",
            "nodes/w2/kubelet-key.pem.age",
            "nodes/w2/kubelet.pem",
        ]
    );
    assert!(!store.dir().join("nodes/w2").exists());
    assert_eq!(after.len(), before.len() - 8);
    assert_eq!(store.load(&identities).unwrap(), material);
}

#[test]
fn an_interrupted_write_is_reissued_not_mismatched() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _, identities, _) = saved(dir.path());
    let id = ItemId::node("w1", Kind::KubeletClient);
    fs_err::remove_file(store.public_path(&id)).unwrap();
    let cluster = cluster(Flavor::Nixos);
    let changes = plan(&cluster, &store.existing().unwrap(), now());
    let reissued: Vec<String> = changes
        .iter()
        .filter(|c| c.action != Action::Keep)
        .map(|c| format!("{}: {}", c.id, c.action))
        .collect();
    assert_eq!(
        reissued,
        ["kubelet-client (w1): reissue: its certificate is missing"]
    );
    assert!(!store.load(&identities).unwrap().items.contains_key(&id));
}

#[test]
fn a_certificate_beside_a_foreign_key_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _, identities, _) = saved(dir.path());
    let w1 = store.public_path(&ItemId::node("w1", Kind::KubeletClient));
    let w2 = store.public_path(&ItemId::node("w2", Kind::KubeletClient));
    fs_err::copy(&w2, &w1).unwrap();
    let error = store.load(&identities).unwrap_err();
    assert!(matches!(&error, MaterialError::KeyMismatch(id) if id.node.as_deref() == Some("w1")));
}

#[test]
fn a_foreign_identity_cannot_load_and_foreign_files_are_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let (store, material, _, _) = saved(dir.path());
    fs_err::write(store.dir().join("README.md"), "notes").unwrap();
    fs_err::create_dir_all(store.dir().join("nodes/Not_A_Node")).unwrap();
    assert_eq!(store.existing().unwrap(), material.existing());
    let other = tempfile::tempdir().unwrap();
    let (other_identity, _) = identity(other.path());
    let identities = Identities::load(&[other_identity], None).unwrap();
    assert!(matches!(
        store.load(&identities),
        Err(MaterialError::Decrypt { .. })
    ));
}

#[test]
fn writing_needs_the_item_and_a_valid_recipient() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::new(dir.path(), "dev");
    let cluster = cluster(Flavor::Nixos);
    let changes = plan(&cluster, &Existing::default(), now());
    let missing = store.save(&changes, &Material::default(), &[]);
    assert!(matches!(missing, Err(MaterialError::Missing(_))));
    let bad = store.save(&changes, &issued(&cluster), &["age1notakey".to_owned()]);
    assert!(matches!(bad, Err(MaterialError::Encrypt { .. })));
    assert!(snapshot(dir.path()).is_empty());
}
