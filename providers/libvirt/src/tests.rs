//! The provider against libvirt's built-in `test:///default` driver: a real
//! libvirt API (XML parsing and normalisation, metadata, pools, volumes)
//! with an in-memory hypervisor whose state lives as long as the
//! connection (shared by every connection of the process while one is
//! open, so each test uses its own deployment and names). Booting and SSH are covered by prov's integration tests on a
//! real libvirtd.

use prov_provider::{Address, Attributes, CreateRequest, Provider, ProviderError, UpdateRequest};
use serde_json::{json, Value};

use crate::attrs::{Boot, Nic, VmSpec};
use crate::choices::{DiskBus, DomainType, Firmware};
use crate::xml::{self, Meta};
use crate::{LibvirtProvider, LibvirtSettings, KIND};

/// The test driver's one pool.
const POOL: &str = "default-pool";

async fn provider(deployment: &str) -> LibvirtProvider {
    let settings = LibvirtSettings {
        uri: "test:///default".into(),
        ..LibvirtSettings::default()
    };
    LibvirtProvider::connect(deployment, &settings)
        .await
        .unwrap()
}

fn attributes(value: Value) -> Attributes {
    serde_json::from_value(value).unwrap()
}

fn spec(name: &str) -> VmSpec {
    VmSpec {
        name: name.into(),
        base: "base.qcow2".into(),
        pool: POOL.into(),
        cpus: 2,
        memory: 512,
        domain_type: DomainType::Qemu,
        disk_bus: DiskBus::Virtio,
        boot: Boot::Firmware(Firmware::Bios),
        nic: Nic::User {
            port: Some(40022),
            isolated: true,
        },
        autostart: false,
        authorized_keys: vec!["ssh-ed25519 AAAAdeployer".into()],
    }
}

/// Defines a domain as a finished create would have left it.
async fn define(p: &LibvirtProvider, name: &str, token: &str, ready: bool) {
    let layout = p.layout(name);
    for volume in [&layout.overlay, &layout.seed] {
        p.libvirt
            .create_volume(POOL, xml::volume(volume, 1 << 20, "raw", None))
            .await
            .unwrap();
    }
    let meta = Meta {
        token: token.into(),
        base: "base.qcow2".into(),
        host_key: "ssh-ed25519 AAAAhost".into(),
        authorized_keys: vec!["ssh-ed25519 AAAAdeployer".into()],
        ready,
    };
    p.libvirt
        .define(xml::domain(&spec(name), &layout, &meta, Some(40022), None))
        .await
        .unwrap();
    p.libvirt.start(name).await.unwrap();
}

async fn volumes(p: &LibvirtProvider, name: &str) -> Vec<String> {
    let layout = p.layout(name);
    let mut found = Vec::new();
    for volume in [layout.overlay, layout.seed] {
        if p.libvirt.volume(POOL, &volume).await.unwrap().is_some() {
            found.push(volume);
        }
    }
    found
}

#[tokio::test]
async fn a_defined_vm_reads_back_and_is_found_by_its_token() {
    let p = provider("a").await;
    define(&p, "prov-a-web-0", "tok-1", true).await;
    define(&p, "prov-a-web-1", "tok-2", false).await;
    let read = p
        .read(KIND, &["prov-a-web-0".into(), "prov-a-gone".into()])
        .await
        .unwrap();
    assert_eq!(read.len(), 1);
    let vm = &read["prov-a-web-0"].attributes;
    // Values as libvirt normalised them (memory in KiB) read back in the
    // spec's terms.
    assert_eq!(vm["memory"], json!(512));
    assert_eq!(vm["cpus"], json!(2));
    assert_eq!(vm["domain_type"], json!("qemu"));
    assert_eq!(vm["disk_bus"], json!("virtio"));
    assert_eq!(vm["firmware"], json!("bios"));
    assert_eq!(vm["pool"], json!(POOL));
    assert_eq!(vm["base"], json!("base.qcow2"));
    assert_eq!(vm["host_key"], json!("ssh-ed25519 AAAAhost"));
    assert_eq!(vm["authorized_keys"], json!(["ssh-ed25519 AAAAdeployer"]));
    assert_eq!(vm["state"], json!("running"));
    assert_eq!(vm["running"], json!(true));
    assert_eq!(vm["autostart"], json!(false));
    // The spec's view of this VM plans no change.
    let desired = prov_provider::Desired {
        attributes: attributes(json!({
            "name": "prov-a-web-0", "base": "base.qcow2", "pool": POOL, "cpus": 2,
            "memory": 512, "domain_type": "qemu", "authorized_keys": ["ssh-ed25519 AAAAdeployer"],
            // The test driver drops QEMU passthrough, so no port reads back.
            "isolated": vm.get("isolated").cloned().unwrap_or(Value::Null),
        })),
        unknown: Default::default(),
    };
    assert_eq!(p.diff(KIND, &desired, vm).unwrap(), []);
    // A VM stopped outside prov is drift the next apply puts right.
    p.libvirt.destroy("prov-a-web-0").await.unwrap();
    let stopped = &p.read(KIND, &["prov-a-web-0".into()]).await.unwrap()["prov-a-web-0"];
    assert_eq!(stopped.attributes["state"], json!("shut off"));
    let changes = p.diff(KIND, &desired, &stopped.attributes).unwrap();
    assert_eq!(changes.len(), 1, "{changes:?}");
    assert_eq!(changes[0].name, "running");
    assert!(!changes[0].forces_replacement);
    assert_eq!(p.update_effects(KIND, &changes), ["the VM is started"]);
    // Only the finished create is adopted by token.
    let found = p
        .find_by_token(KIND, &["tok-1".into(), "tok-2".into()])
        .await
        .unwrap();
    assert_eq!(found.keys().collect::<Vec<_>>(), ["tok-1"]);
    assert_eq!(found["tok-1"].id, "prov-a-web-0");
}

#[tokio::test]
async fn autostart_changes_in_place_and_delete_leaves_nothing() {
    let p = provider("b").await;
    define(&p, "prov-b-db", "tok", true).await;
    let current = p.read(KIND, &["prov-b-db".into()]).await.unwrap()["prov-b-db"]
        .attributes
        .clone();
    let mut desired = current.clone();
    desired.insert("autostart".into(), json!(true));
    let changes = p
        .diff(
            KIND,
            &prov_provider::Desired {
                attributes: desired.clone(),
                unknown: Default::default(),
            },
            &current,
        )
        .unwrap();
    assert_eq!(changes.len(), 1, "{changes:?}");
    assert!(p.update_effects(KIND, &changes).is_empty());
    let address = Address::host("db", None);
    let updated = p
        .update(UpdateRequest {
            address: &address,
            kind: KIND,
            id: "prov-b-db",
            attributes: &desired,
            changes: &changes,
        })
        .await
        .unwrap();
    assert_eq!(updated.attributes["autostart"], json!(true));
    // Memory restarts the VM, and the plan says so.
    let memory = [prov_provider::AttributeChange {
        name: "memory".into(),
        before: Some(json!(512)),
        after: Some(json!(1024)),
        after_unknown: false,
        forces_replacement: false,
    }];
    assert!(p.update_effects(KIND, &memory)[0].contains("shut down"));

    assert_eq!(volumes(&p, "prov-b-db").await.len(), 2);
    p.delete(KIND, "prov-b-db").await.unwrap();
    assert!(p.libvirt.domain("prov-b-db").await.unwrap().is_none());
    assert_eq!(volumes(&p, "prov-b-db").await, Vec::<String>::new());
    // Deleting what is gone succeeds.
    p.delete(KIND, "prov-b-db").await.unwrap();
}

fn create_attributes(name: &str, base: &str, pool: &str) -> Attributes {
    attributes(json!({
        "name": name, "base": base, "pool": pool, "domain_type": "qemu",
        "authorized_keys": ["ssh-ed25519 AAAAdeployer"], "ssh_port": 40023,
    }))
}

async fn create(p: &LibvirtProvider, attributes: &Attributes) -> Result<(), ProviderError> {
    let address = Address::host("web", Some(0));
    p.create(CreateRequest {
        address: &address,
        kind: KIND,
        token: "tok",
        attributes,
    })
    .await
    .map(drop)
}

fn missing_message(error: ProviderError) -> String {
    match error {
        ProviderError::Prerequisite { message, .. } => message,
        other => panic!("expected a missing prerequisite, got {other}"),
    }
}

#[tokio::test]
async fn a_missing_pool_or_base_is_named_with_a_fix_and_nothing_is_made() {
    let p = provider("c").await;
    let message = missing_message(
        create(&p, &create_attributes("prov-c-web-0", "base.qcow2", "nope"))
            .await
            .unwrap_err(),
    );
    assert!(
        message.contains("storage pool `nope` does not exist"),
        "{message}"
    );
    assert!(message.contains("pool-define-as nope dir"), "{message}");

    let message = missing_message(
        create(
            &p,
            &create_attributes("prov-c-web-0", "missing.qcow2", POOL),
        )
        .await
        .unwrap_err(),
    );
    assert!(
        message.contains("`missing.qcow2` is not in pool `default-pool`"),
        "{message}"
    );
    assert!(message.contains("vol-upload"), "{message}");

    let message = missing_message(
        create(
            &p,
            &create_attributes("prov-c-web-0", "/nonexistent/debian.qcow2", POOL),
        )
        .await
        .unwrap_err(),
    );
    assert!(
        message.contains("/nonexistent/debian.qcow2 cannot be read"),
        "{message}"
    );
    assert!(message.contains("scripts/libvirt-image.sh"), "{message}");

    assert!(p.libvirt.domain("prov-c-web-0").await.unwrap().is_none());
    assert_eq!(volumes(&p, "prov-c-web-0").await, Vec::<String>::new());
}

#[tokio::test]
async fn a_create_failing_half_way_removes_what_it_made() {
    let p = provider("e").await;
    p.libvirt
        .create_volume(POOL, xml::volume("base-e.qcow2", 1 << 20, "raw", None))
        .await
        .unwrap();
    // The test driver cannot upload (the seed), so the create fails after
    // it made the seed volume.
    let error = create(&p, &create_attributes("prov-e-web-0", "base-e.qcow2", POOL))
        .await
        .unwrap_err();
    assert!(error.to_string().contains("virStorageVolUpload"), "{error}");
    assert!(p.libvirt.domain("prov-e-web-0").await.unwrap().is_none());
    assert_eq!(volumes(&p, "prov-e-web-0").await, Vec::<String>::new());
    // The base stays.
    assert!(p
        .libvirt
        .volume(POOL, "base-e.qcow2")
        .await
        .unwrap()
        .is_some());
}

#[tokio::test]
async fn a_foreign_domain_with_the_name_is_not_taken_over() {
    let p = provider("f").await;
    define(&p, "prov-f-web-0", "someone-else", true).await;
    let error = create(&p, &create_attributes("prov-f-web-0", "base.qcow2", POOL))
        .await
        .unwrap_err();
    assert!(error.to_string().contains("already exists"), "{error}");
    assert!(p.libvirt.domain("prov-f-web-0").await.unwrap().is_some());
}

#[tokio::test]
async fn no_libvirtd_is_a_clear_error() {
    let settings = LibvirtSettings {
        uri: "qemu:///system?socket=/nonexistent/libvirt-sock".into(),
        ..LibvirtSettings::default()
    };
    let message = missing_message(LibvirtProvider::connect("d", &settings).await.unwrap_err());
    assert!(
        message.contains("cannot connect to libvirt at qemu:///system"),
        "{message}"
    );
    assert!(message.contains("is libvirtd running?"), "{message}");
    assert!(message.contains("libvirtd -d"), "{message}");
}
