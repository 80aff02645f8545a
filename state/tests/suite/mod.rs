//! A backend-agnostic test suite for [`StateBackend`] implementations.
//!
//! Each property is a function taking fresh backends. To run them all against
//! a backend, write an `async fn fresh() -> suite::Fixture` that creates an
//! empty state (a new one on every call) and invoke
//! `state_backend_suite!(fresh);` in the test crate (after
//! `#[macro_use] mod suite;`).

use std::collections::BTreeMap;
use std::time::Duration;

use prov_state::{
    LockInfo, ResourceStatus, StateBackend, StateDocument, StateError, FORMAT_VERSION,
};

/// A backend on a fresh, empty state, plus whatever must live as long as it.
pub struct Fixture {
    /// The backend.
    pub backend: Box<dyn StateBackend>,
    /// Kept alive for the test (a temporary directory, a bucket cleaner).
    pub _keep: Box<dyn std::any::Any + Send>,
}

/// Generates one `#[tokio::test]` per suite property, each on `$fresh().await`.
#[macro_export]
macro_rules! state_backend_suite {
    ($fresh:path) => {
        $crate::state_backend_suite!(@one $fresh, empty_read_is_none);
        $crate::state_backend_suite!(@one $fresh, write_then_read_back);
        $crate::state_backend_suite!(@one $fresh, serial_must_increase_by_one);
        $crate::state_backend_suite!(@one $fresh, lineage_mismatch_conflicts);
        $crate::state_backend_suite!(@one $fresh, history_lists_every_version);
        $crate::state_backend_suite!(@one $fresh, read_serial_returns_old_versions);
        $crate::state_backend_suite!(@one $fresh, lock_twice_names_holder);
        $crate::state_backend_suite!(@one $fresh, unlock_then_lock_again);
        $crate::state_backend_suite!(@one $fresh, force_unlock_wrong_id_mismatches);
        $crate::state_backend_suite!(@one $fresh, write_rejects_other_format);
        $crate::state_backend_suite!(@one $fresh, every_version_reads_back_as_written_and_prune_keeps_the_newest);
        $crate::state_backend_suite!(@two $fresh, a_lock_writes_only_its_own_state);
    };
    (@one $fresh:path, $name:ident) => {
        #[tokio::test]
        async fn $name() {
            let fixture = $fresh().await;
            $crate::suite::$name(&*fixture.backend).await;
        }
    };
    (@two $fresh:path, $name:ident) => {
        #[tokio::test]
        async fn $name() {
            let a = $fresh().await;
            let b = $fresh().await;
            $crate::suite::$name(&*a.backend, &*b.backend).await;
        }
    };
}

/// Runs every property, each on fresh backends from `fresh`.
pub async fn run_all<F, Fut>(fresh: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Fixture>,
{
    empty_read_is_none(&*fresh().await.backend).await;
    write_then_read_back(&*fresh().await.backend).await;
    serial_must_increase_by_one(&*fresh().await.backend).await;
    lineage_mismatch_conflicts(&*fresh().await.backend).await;
    history_lists_every_version(&*fresh().await.backend).await;
    read_serial_returns_old_versions(&*fresh().await.backend).await;
    lock_twice_names_holder(&*fresh().await.backend).await;
    unlock_then_lock_again(&*fresh().await.backend).await;
    force_unlock_wrong_id_mismatches(&*fresh().await.backend).await;
    write_rejects_other_format(&*fresh().await.backend).await;
    every_version_reads_back_as_written_and_prune_keeps_the_newest(&*fresh().await.backend).await;
    let (a, b) = (fresh().await, fresh().await);
    a_lock_writes_only_its_own_state(&*a.backend, &*b.backend).await;
}

/// A document as a backend would read it: `lineage` at `serial`, with
/// `resources` (records by address) and `outputs`.
fn document(
    lineage: &str,
    serial: u64,
    resources: &BTreeMap<String, serde_json::Value>,
    outputs: serde_json::Value,
) -> StateDocument {
    serde_json::from_value(serde_json::json!({
        "format_version": FORMAT_VERSION,
        "lineage": lineage,
        "serial": serial,
        "deployment": "suite",
        "resources": resources,
        "outputs": outputs,
    }))
    .unwrap()
}

/// A document of `lineage` at `serial` holding `resources` instances.
pub fn doc(lineage: &str, serial: u64, resources: usize) -> StateDocument {
    let records: BTreeMap<String, serde_json::Value> = (0..resources)
        .map(|i| {
            let record = serde_json::json!({
                "provider": "test",
                "kind": "instance",
                "id": format!("i-{serial}-{i}"),
                "status": ResourceStatus::Ready,
                "generation": 1,
                "attributes": {"serial": serial, "index": i},
            });
            (format!("web[{i}]"), record)
        })
        .collect();
    document(
        lineage,
        serial,
        &records,
        serde_json::json!({"serial": serial}),
    )
}

/// The versions an apply of `count` resources writes, one save per resource,
/// each resource with a few hundred bytes of attributes; on the way, every
/// tenth save also changes an earlier resource and every seventeenth removes
/// one (so patches add, replace and remove). Serials start at 1.
pub fn applied_one_by_one(lineage: &str, count: usize) -> Vec<StateDocument> {
    let mut records: BTreeMap<String, serde_json::Value> = BTreeMap::new();
    let mut versions = Vec::with_capacity(count);
    for i in 0..count {
        let record = serde_json::json!({
            "provider": "ec2",
            "kind": "instance",
            "id": format!("i-{i:017x}"),
            "status": ResourceStatus::Ready,
            "generation": 1,
            "token": format!("{lineage}-web[{i}]-1"),
            "attributes": {
                "image": format!("ami-{i:017x}"),
                "instance_type": "t3.micro",
                "private_ip": format!("10.0.{}.{}", i / 250, i % 250),
                "public_ip": null,
                "tags": {"Name": format!("web-{i}"), "prov:deployment": "suite", "prov:address": format!("web[{i}]"), "role": "web"},
                "security_groups": ["sg-0123456789abcdef0", "sg-0fedcba9876543210"],
                "user_data_sha256": format!("{:064x}", i * 7919),
            },
            "dependencies": ["key_pair.key"],
        });
        records.insert(format!("web[{i}]"), record);
        if i % 10 == 9 {
            if let Some(r) = records.get_mut(&format!("web[{}]", i / 2)) {
                r["attributes"]["instance_type"] = "t3.small".into();
                let generation = r["generation"].as_u64().unwrap();
                r["generation"] = (generation + 1).into();
            }
        }
        if i % 17 == 16 {
            records.remove(&format!("web[{}]", i - 3));
        }
        let outputs = serde_json::json!({"count": records.len()});
        versions.push(document(lineage, i as u64 + 1, &records, outputs));
    }
    versions
}

/// A fresh lineage.
fn lineage() -> String {
    StateDocument::new("suite").lineage
}

/// Takes the lock for `operation` without waiting.
async fn lock(b: &dyn StateBackend, operation: &str) -> Box<dyn prov_state::StateLock> {
    b.lock(LockInfo::for_this_process(operation), Duration::ZERO)
        .await
        .unwrap()
}

/// An empty state reads as nothing, with no history.
pub async fn empty_read_is_none(b: &dyn StateBackend) {
    assert_eq!(b.read().await.unwrap(), None);
    assert!(!b.exists().await.unwrap());
    assert_eq!(b.history().await.unwrap(), vec![]);
    assert_eq!(b.read_serial(1).await.unwrap(), None);
    assert_eq!(b.lock_holder().await.unwrap(), None);
}

/// A written document reads back equal.
pub async fn write_then_read_back(b: &dyn StateBackend) {
    let guard = lock(b, "apply").await;
    assert!(!b.exists().await.unwrap(), "locked, nothing written yet");
    let d = doc(&lineage(), 1, 2);
    guard.write(&d).await.unwrap();
    assert_eq!(b.read().await.unwrap().as_ref(), Some(&d));
    assert!(b.exists().await.unwrap());
    guard.unlock().await.unwrap();
    assert_eq!(b.read().await.unwrap(), Some(d.clone()));
    assert!(b.exists().await.unwrap());
    assert_eq!(b.read_serial(1).await.unwrap(), Some(d));
}

/// Each write must carry the latest serial plus one; others change nothing.
pub async fn serial_must_increase_by_one(b: &dyn StateBackend) {
    let l = lineage();
    let guard = lock(b, "apply").await;
    let first = doc(&l, 1, 1);
    guard.write(&first).await.unwrap();
    for bad in [doc(&l, 1, 3), doc(&l, 3, 3), doc(&l, 0, 3)] {
        let err = guard.write(&bad).await.unwrap_err();
        assert!(matches!(err, StateError::Conflict(_)), "{err}");
        assert!(err.to_string().contains("expected serial 2"), "{err}");
        assert!(
            err.to_string().contains(&format!("got {}", bad.serial)),
            "{err}"
        );
    }
    assert_eq!(b.read().await.unwrap().as_ref(), Some(&first));
    assert_eq!(b.history().await.unwrap().len(), 1);
    let second = doc(&l, 2, 2);
    guard.write(&second).await.unwrap();
    assert_eq!(b.read().await.unwrap(), Some(second));
    guard.unlock().await.unwrap();
}

/// A document of another lineage cannot be written over the state.
pub async fn lineage_mismatch_conflicts(b: &dyn StateBackend) {
    let guard = lock(b, "apply").await;
    let first = doc(&lineage(), 1, 1);
    guard.write(&first).await.unwrap();
    let err = guard.write(&doc(&lineage(), 2, 1)).await.unwrap_err();
    assert!(matches!(err, StateError::Conflict(_)), "{err}");
    assert!(err.to_string().contains("lineage"), "{err}");
    assert_eq!(b.read().await.unwrap(), Some(first));
    guard.unlock().await.unwrap();
}

/// History lists every version, oldest first, with resource counts and writer.
pub async fn history_lists_every_version(b: &dyn StateBackend) {
    let l = lineage();
    let guard = lock(b, "apply").await;
    for serial in 5..=8 {
        guard
            .write(&doc(&l, serial, (serial - 5) as usize))
            .await
            .unwrap();
    }
    guard.unlock().await.unwrap();
    let history = b.history().await.unwrap();
    let summary: Vec<(u64, usize)> = history.iter().map(|h| (h.serial, h.resources)).collect();
    assert_eq!(summary, [(5, 0), (6, 1), (7, 2), (8, 3)]);
    let who = LockInfo::for_this_process("x").who;
    for entry in &history {
        assert_eq!(entry.written_by, format!("{who} (apply)"));
        assert!(
            chrono::DateTime::parse_from_rfc3339(&prov_state::timestamp::format(&entry.written_at))
                .is_ok(),
            "{}",
            entry.written_at
        );
    }
}

/// Old versions stay readable and unchanged.
pub async fn read_serial_returns_old_versions(b: &dyn StateBackend) {
    let l = lineage();
    let docs: Vec<StateDocument> = (1..=3).map(|s| doc(&l, s, s as usize)).collect();
    let guard = lock(b, "apply").await;
    for d in &docs {
        guard.write(d).await.unwrap();
    }
    guard.unlock().await.unwrap();
    for d in &docs {
        assert_eq!(b.read_serial(d.serial).await.unwrap().as_ref(), Some(d));
    }
    assert_eq!(b.read_serial(4).await.unwrap(), None);
    assert_eq!(b.read_serial(0).await.unwrap(), None);
    assert_eq!(b.read().await.unwrap().as_ref(), docs.last());
}

/// A second lock fails, naming the holder (who, pid, operation, lock id).
pub async fn lock_twice_names_holder(b: &dyn StateBackend) {
    let guard = lock(b, "apply").await;
    let err = b
        .lock(LockInfo::for_this_process("plan"), Duration::ZERO)
        .await
        .unwrap_err();
    let StateError::Locked { holder } = &err else {
        panic!("expected Locked, got {err}");
    };
    assert_eq!(**holder, *guard.info());
    let message = err.to_string();
    for part in [
        guard.info().who.clone(),
        format!("pid {}", guard.info().pid),
        "apply".to_owned(),
        guard.info().id.clone(),
    ] {
        assert!(message.contains(&part), "`{part}` missing from: {message}");
    }
    assert_eq!(b.lock_holder().await.unwrap(), Some(guard.info().clone()));
    guard.unlock().await.unwrap();
}

/// After unlocking, the lock is free and can be taken again.
pub async fn unlock_then_lock_again(b: &dyn StateBackend) {
    let guard = lock(b, "apply").await;
    guard.unlock().await.unwrap();
    assert_eq!(b.lock_holder().await.unwrap(), None);
    let again = lock(b, "destroy").await;
    assert_eq!(b.lock_holder().await.unwrap(), Some(again.info().clone()));
    again.unlock().await.unwrap();
    assert_eq!(b.lock_holder().await.unwrap(), None);
}

/// `force_unlock` with an id that is not the holder's fails and keeps the lock.
pub async fn force_unlock_wrong_id_mismatches(b: &dyn StateBackend) {
    let guard = lock(b, "apply").await;
    let err = b.force_unlock("not-the-lock-id").await.unwrap_err();
    let StateError::LockMismatch { given, holder } = &err else {
        panic!("expected LockMismatch, got {err}");
    };
    assert_eq!(given, "not-the-lock-id");
    assert_eq!(holder.as_deref(), Some(guard.info()));
    assert!(err.to_string().contains(&guard.info().id), "{err}");
    assert_eq!(b.lock_holder().await.unwrap(), Some(guard.info().clone()));
    guard.unlock().await.unwrap();
}

/// A lock writes to the state it was taken on and to no other: a write
/// through the lock on `other` (a backend on a different state) stores
/// nothing in `b`. (A write to a state without holding its lock cannot be
/// expressed at all: writes go through the held lock.)
pub async fn a_lock_writes_only_its_own_state(b: &dyn StateBackend, other: &dyn StateBackend) {
    let foreign = lock(other, "apply").await;
    let d = doc(&lineage(), 1, 1);
    foreign.write(&d).await.unwrap();
    foreign.unlock().await.unwrap();
    assert_eq!(other.read().await.unwrap(), Some(d));
    assert_eq!(b.read().await.unwrap(), None);
    assert_eq!(b.history().await.unwrap(), vec![]);
}

/// A document of another layout version is not written.
pub async fn write_rejects_other_format(b: &dyn StateBackend) {
    let guard = lock(b, "apply").await;
    let mut d = doc(&lineage(), 1, 0);
    d.format_version = FORMAT_VERSION + 1;
    let err = guard.write(&d).await.unwrap_err();
    assert!(matches!(err, StateError::Format { .. }), "{err}");
    guard.unlock().await.unwrap();
    assert_eq!(b.read().await.unwrap(), None);
}

/// Every version written one save at a time reads back exactly as written
/// (whole or rebuilt from patches); pruning to the newest 25 removes the
/// rest from history and reads, and what is kept still reads back, also
/// after more writes.
pub async fn every_version_reads_back_as_written_and_prune_keeps_the_newest(b: &dyn StateBackend) {
    let l = lineage();
    let docs = applied_one_by_one(&l, 80);
    let guard = lock(b, "apply").await;
    for d in &docs[..70] {
        guard.write(d).await.unwrap();
    }
    for d in &docs[..70] {
        assert_eq!(
            b.read_serial(d.serial).await.unwrap().as_ref(),
            Some(d),
            "serial {}",
            d.serial
        );
    }
    assert_eq!(guard.prune(25).await.unwrap(), 45);
    assert_eq!(guard.prune(25).await.unwrap(), 0, "nothing more to prune");
    let serials: Vec<u64> = b
        .history()
        .await
        .unwrap()
        .iter()
        .map(|e| e.serial)
        .collect();
    assert_eq!(serials, (46..=70).collect::<Vec<_>>());
    assert_eq!(b.read_serial(45).await.unwrap(), None);
    assert_eq!(b.read_serial(1).await.unwrap(), None);
    for d in &docs[70..] {
        guard.write(d).await.unwrap();
    }
    for d in &docs[45..] {
        assert_eq!(
            b.read_serial(d.serial).await.unwrap().as_ref(),
            Some(d),
            "serial {}",
            d.serial
        );
    }
    assert_eq!(b.read().await.unwrap().as_ref(), docs.last());
    assert_eq!(
        guard.prune(0).await.unwrap(),
        34,
        "at least the latest is kept"
    );
    assert_eq!(b.read_serial(80).await.unwrap().as_ref(), docs.last());
    assert_eq!(b.read_serial(79).await.unwrap(), None);
    guard.unlock().await.unwrap();
}

/// Environments (`prov env`): `a` and `b` are the states of the
/// environments `a` and `b` of the deployment whose state is `base`. Each
/// is a state of its own; `base` lists them; removing one (under its lock)
/// leaves nothing of it, and its name can be used again.
pub async fn environments_are_apart_listed_and_removed(
    base: &dyn StateBackend,
    a: &dyn StateBackend,
    b: &dyn StateBackend,
) {
    assert_eq!(base.environments().await.unwrap(), Vec::<String>::new());
    for (env, serial) in [(a, 3), (b, 1)] {
        let lineage = lineage();
        let lock = lock(env, "env up").await;
        for s in 1..=serial {
            lock.write(&doc(&lineage, s, 1)).await.unwrap();
        }
        lock.unlock().await.unwrap();
    }
    assert_eq!(base.environments().await.unwrap(), ["a", "b"]);
    assert_eq!(
        base.read().await.unwrap(),
        None,
        "the deployment's own state is apart"
    );
    assert_eq!(a.history().await.unwrap().len(), 3);

    lock(a, "env down").await.remove().await.unwrap();
    assert_eq!(a.read().await.unwrap(), None);
    assert_eq!(a.history().await.unwrap(), vec![]);
    assert_eq!(a.lock_holder().await.unwrap(), None);
    assert_eq!(base.environments().await.unwrap(), ["b"]);
    assert_eq!(b.read().await.unwrap().unwrap().serial, 1, "b is untouched");

    // The name is free again: a new state begins at any serial.
    let lock = lock(a, "env up").await;
    lock.write(&doc(&lineage(), 1, 0)).await.unwrap();
    lock.unlock().await.unwrap();
    assert_eq!(a.read().await.unwrap().unwrap().serial, 1);
}
