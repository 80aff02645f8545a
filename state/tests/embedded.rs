//! The embedded (sled) backend: the shared suite plus flock-specific tests.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[macro_use]
mod suite;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use prov_state::{EmbeddedBackend, LockInfo, StateBackend, StateDocument, StateError};

/// An embedded backend on a new temporary directory.
async fn fresh() -> suite::Fixture {
    let tmp = tempfile::tempdir().unwrap();
    suite::Fixture {
        backend: Box::new(EmbeddedBackend::new(tmp.path().join(".prov"))),
        _keep: Box::new(tmp),
    }
}

state_backend_suite!(fresh);

/// Saves `docs` in turn under one `apply` lock.
async fn save_all(backend: &EmbeddedBackend, docs: &[StateDocument]) {
    let guard = backend
        .lock(LockInfo::for_this_process("apply"), Duration::ZERO)
        .await
        .unwrap();
    for d in docs {
        guard.write(d).await.unwrap();
    }
    guard.unlock().await.unwrap();
}

#[tokio::test]
async fn suite_runs_in_sequence() {
    suite::run_all(fresh).await;
}

#[tokio::test]
async fn describe_names_the_directory() {
    let b = EmbeddedBackend::new("some/.prov");
    assert_eq!(b.describe(), "embedded state at some/.prov");
    assert_eq!(b.dir(), Path::new("some/.prov"));
}

#[tokio::test]
async fn reading_a_missing_state_creates_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join(".prov");
    let b = EmbeddedBackend::new(&dir);
    assert_eq!(b.read().await.unwrap(), None);
    assert!(!b.exists().await.unwrap());
    assert_eq!(b.history().await.unwrap(), vec![]);
    assert_eq!(b.lock_holder().await.unwrap(), None);
    b.force_unlock("anything").await.unwrap();
    assert!(!dir.exists());
}

/// Every file under `dir` is 0600 and every directory 0700.
fn assert_private(dir: &Path) {
    let mode = std::fs::metadata(dir).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "{}", dir.display());
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let kind = entry.file_type().unwrap();
        if kind.is_dir() {
            assert_private(&entry.path());
        } else {
            let mode = entry.metadata().unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", entry.path().display());
        }
    }
}

#[tokio::test]
async fn files_are_private() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join(".prov");
    let b = EmbeddedBackend::new(&dir);
    let guard = b
        .lock(LockInfo::for_this_process("apply"), Duration::ZERO)
        .await
        .unwrap();
    assert_private(&dir);
    let lineage = suite::doc("x", 0, 0).lineage;
    for serial in 1..=20 {
        guard.write(&suite::doc(&lineage, serial, 5)).await.unwrap();
    }
    assert_private(&dir);
    guard.unlock().await.unwrap();
    assert_private(&dir);
    assert!(dir.join("lock").is_file());
    assert!(dir.join("state.db").is_dir());
}

#[tokio::test]
async fn lock_file_holds_the_record_while_locked() {
    let tmp = tempfile::tempdir().unwrap();
    let b = EmbeddedBackend::new(tmp.path());
    let guard = b
        .lock(LockInfo::for_this_process("apply"), Duration::ZERO)
        .await
        .unwrap();
    let text = std::fs::read_to_string(tmp.path().join("lock")).unwrap();
    let record: LockInfo = serde_json::from_str(&text).unwrap();
    assert_eq!(record, *guard.info());
    guard.unlock().await.unwrap();
    assert_eq!(
        std::fs::read_to_string(tmp.path().join("lock")).unwrap(),
        ""
    );
}

#[tokio::test]
async fn lock_timeout_waits_then_fails() {
    let tmp = tempfile::tempdir().unwrap();
    let a = EmbeddedBackend::new(tmp.path());
    let b = EmbeddedBackend::new(tmp.path());
    let guard = a
        .lock(LockInfo::for_this_process("apply"), Duration::ZERO)
        .await
        .unwrap();
    let started = Instant::now();
    let err = b
        .lock(LockInfo::for_this_process("plan"), Duration::from_secs(1))
        .await
        .unwrap_err();
    let waited = started.elapsed();
    assert!(matches!(err, StateError::Locked { .. }), "{err}");
    assert!(
        waited >= Duration::from_millis(900),
        "waited only {waited:?}"
    );
    assert!(waited < Duration::from_secs(10), "waited {waited:?}");
    guard.unlock().await.unwrap();
}

#[tokio::test]
async fn lock_timeout_succeeds_when_released_meanwhile() {
    let tmp = tempfile::tempdir().unwrap();
    let a = std::sync::Arc::new(EmbeddedBackend::new(tmp.path()));
    let b = EmbeddedBackend::new(tmp.path());
    let guard = a
        .lock(LockInfo::for_this_process("apply"), Duration::ZERO)
        .await
        .unwrap();
    let releaser = {
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            guard.unlock().await.unwrap();
        })
    };
    let guard = b
        .lock(LockInfo::for_this_process("plan"), Duration::from_secs(10))
        .await
        .unwrap();
    releaser.await.unwrap();
    guard.unlock().await.unwrap();
}

#[tokio::test]
async fn reads_take_a_short_lock() {
    let tmp = tempfile::tempdir().unwrap();
    let a = EmbeddedBackend::new(tmp.path());
    let b = EmbeddedBackend::new(tmp.path());
    let guard = a
        .lock(LockInfo::for_this_process("apply"), Duration::ZERO)
        .await
        .unwrap();
    let d = suite::doc("l", 1, 1);
    guard.write(&d).await.unwrap();
    let err = b.read().await.unwrap_err();
    assert!(matches!(err, StateError::Locked { .. }), "{err}");
    let err = b.history().await.unwrap_err();
    assert!(matches!(err, StateError::Locked { .. }), "{err}");
    guard.unlock().await.unwrap();
    assert_eq!(b.read().await.unwrap(), Some(d.clone()));
    assert_eq!(b.read_serial(1).await.unwrap(), Some(d));
    assert_eq!(b.lock_holder().await.unwrap(), None);
    // The short lock was released: another backend can lock.
    let guard = a
        .lock(LockInfo::for_this_process("apply"), Duration::ZERO)
        .await
        .unwrap();
    guard.unlock().await.unwrap();
}

#[tokio::test]
async fn readers_at_once_wait_for_each_other_instead_of_failing() {
    // `prov ssh a` and `prov ssh b` in one directory at once each read
    // state under a short `read` lock: the second one failed at once with
    // "state is locked by … for `read`".
    let tmp = tempfile::tempdir().unwrap();
    let d = suite::doc("l", 1, 1);
    save_all(&EmbeddedBackend::new(tmp.path()), std::slice::from_ref(&d)).await;
    let readers: Vec<_> = (0..4)
        .map(|_| {
            let dir = tmp.path().to_owned();
            let d = d.clone();
            tokio::spawn(async move {
                let b = EmbeddedBackend::new(dir);
                for _ in 0..25 {
                    assert_eq!(b.read().await.unwrap(), Some(d.clone()));
                }
            })
        })
        .collect();
    for reader in readers {
        reader.await.unwrap();
    }
}

#[tokio::test]
async fn dropping_a_guard_releases_the_lock() {
    let tmp = tempfile::tempdir().unwrap();
    let a = EmbeddedBackend::new(tmp.path());
    let b = EmbeddedBackend::new(tmp.path());
    let guard = a
        .lock(LockInfo::for_this_process("apply"), Duration::ZERO)
        .await
        .unwrap();
    guard.write(&suite::doc("l", 1, 1)).await.unwrap();
    drop(guard);
    let guard = b
        .lock(LockInfo::for_this_process("plan"), Duration::ZERO)
        .await
        .unwrap();
    guard.write(&suite::doc("l", 2, 1)).await.unwrap();
    guard.unlock().await.unwrap();
    assert_eq!(a.read().await.unwrap().map(|d| d.serial), Some(2));
}

// ---- Two processes ----

/// Set in a child process: the state directory it locks.
const CHILD_ENV: &str = "PROV_STATE_TEST_CHILD_DIR";
/// What the child prints once it holds the lock, followed by the lock id.
const CHILD_READY: &str = "PROV_STATE_CHILD_READY";

/// Not a test of its own: in a child process (with [`CHILD_ENV`] set) it takes
/// the lock, writes serial 1, reports, and sleeps until killed.
#[test]
fn child_lock_holder() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let b = EmbeddedBackend::new(dir);
        let guard = b
            .lock(LockInfo::for_this_process("child-apply"), Duration::ZERO)
            .await
            .unwrap();
        guard.write(&suite::doc("child", 1, 3)).await.unwrap();
        let mut out = std::io::stdout().lock();
        writeln!(out, "{CHILD_READY} {}", guard.info().id).unwrap();
        out.flush().unwrap();
        drop(out);
        tokio::time::sleep(Duration::from_secs(120)).await;
        guard.unlock().await.unwrap();
    });
}

/// A child process, killed if the test ends early.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts [`child_lock_holder`] on `dir`; returns it and its lock id.
fn spawn_holder(dir: &Path) -> (ChildGuard, String) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_lock_holder",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, dir)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let child = ChildGuard(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            // libtest prints `test child_lock_holder ... ` on the same line.
            if let Some((_, id)) = line.split_once(CHILD_READY) {
                let _ = tx.send(id.trim().to_owned());
            }
        }
    });
    let id = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the child process did not take the lock");
    (child, id)
}

#[tokio::test]
async fn two_processes_contend_and_a_killed_holder_frees_the_lock() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join(".prov");
    let (mut child, child_lock_id) = spawn_holder(&dir);
    let child_pid = child.0.id();
    let b = EmbeddedBackend::new(&dir);

    let err = b
        .lock(LockInfo::for_this_process("apply"), Duration::ZERO)
        .await
        .unwrap_err();
    let StateError::Locked { holder } = &err else {
        panic!("expected Locked, got {err}");
    };
    assert_eq!(holder.pid, child_pid);
    assert_eq!(holder.operation, "child-apply");
    assert_eq!(holder.id, child_lock_id);
    assert!(
        err.to_string().contains(&format!("pid {child_pid}")),
        "{err}"
    );

    let err = b.read().await.unwrap_err();
    assert!(matches!(err, StateError::Locked { .. }), "{err}");
    assert_eq!(
        b.lock_holder().await.unwrap().map(|h| h.pid),
        Some(child_pid)
    );

    // A live holder's kernel lock cannot be broken.
    let err = b.force_unlock(&child_lock_id).await.unwrap_err();
    assert!(matches!(err, StateError::HolderRunning { .. }), "{err}");
    assert!(err.to_string().contains(&child_pid.to_string()), "{err}");
    let err = b.force_unlock("wrong").await.unwrap_err();
    assert!(matches!(err, StateError::LockMismatch { .. }), "{err}");

    // SIGKILL: the kernel releases the flock; the child's record stays behind.
    child.0.kill().unwrap();
    child.0.wait().unwrap();
    let mut guard = None;
    for _ in 0..50 {
        match b
            .lock(LockInfo::for_this_process("apply"), Duration::ZERO)
            .await
        {
            Ok(g) => {
                guard = Some(g);
                break;
            }
            Err(StateError::Locked { .. } | StateError::LockedUnknown { .. }) => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("{e}"),
        }
    }
    let guard = guard.expect("the lock was not freed after the holder was killed");
    // The write the child made before being killed survived.
    let doc = b.read().await.unwrap().unwrap();
    assert_eq!(doc, suite::doc("child", 1, 3));
    guard.write(&suite::doc("child", 2, 0)).await.unwrap();
    guard.unlock().await.unwrap();
    assert_eq!(b.history().await.unwrap().len(), 2);
}

#[tokio::test]
async fn force_unlock_after_holder_was_killed_clears_its_record() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join(".prov");
    let (mut child, child_lock_id) = spawn_holder(&dir);
    child.0.kill().unwrap();
    child.0.wait().unwrap();
    let record = std::fs::read_to_string(dir.join("lock")).unwrap();
    assert!(record.contains(&child_lock_id), "{record}");
    let b = EmbeddedBackend::new(&dir);
    assert_eq!(b.lock_holder().await.unwrap(), None);
    b.force_unlock(&child_lock_id).await.unwrap();
    assert_eq!(std::fs::read_to_string(dir.join("lock")).unwrap(), "");
    assert_eq!(b.read().await.unwrap().map(|d| d.serial), Some(1));
}

/// state-hardening 9: `[state] path = "."` chmodded the whole tree (the
/// spec became 0600, `.git` 0700). prov touches only what it creates, and
/// refuses a state directory that holds files it did not create.
#[tokio::test]
async fn a_state_path_shared_with_other_files_is_refused_and_left_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    fs_err::write(dir.join("prov.toml"), "deployment = \"x\"\n").unwrap();
    fs_err::create_dir(dir.join(".git")).unwrap();
    fs_err::set_permissions(
        dir.join("prov.toml"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    fs_err::set_permissions(dir.join(".git"), std::fs::Permissions::from_mode(0o755)).unwrap();
    fs_err::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let backend = EmbeddedBackend::new(dir);
    let error = backend
        .lock(LockInfo::for_this_process("apply"), Duration::ZERO)
        .await
        .expect_err("a shared directory is refused");
    let text = error.to_string();
    assert!(
        text.contains("prov.toml") && text.contains("of its own"),
        "{text}"
    );
    let mode = |p: &Path| fs_err::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir.join("prov.toml")), 0o644);
    assert_eq!(mode(&dir.join(".git")), 0o755);
    assert_eq!(mode(dir), 0o755);
    assert!(!dir.join("lock").exists() && !dir.join("state.db").exists());

    // prov's own files next to each other are fine (the deployer key too).
    let own = tmp.path().join(".prov");
    fs_err::create_dir_all(own.join("ssh")).unwrap();
    let backend = EmbeddedBackend::new(&own);
    let guard = backend
        .lock(LockInfo::for_this_process("apply"), Duration::ZERO)
        .await
        .unwrap();
    guard.unlock().await.unwrap();
}

/// Bytes of every file under `dir`.
fn disk_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    for entry in fs_err::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let meta = entry.metadata().unwrap();
        total += if meta.is_dir() {
            disk_bytes(&entry.path())
        } else {
            meta.len()
        };
    }
    total
}

/// state-hardening 7: 300 saves of a deployment applied one resource at a
/// time take less than ten times the final document on disk (every version
/// stored whole took over 100 times).
#[tokio::test]
async fn history_storage_grows_with_the_changes_not_with_the_document() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join(".prov");
    let backend = EmbeddedBackend::new(&dir);
    let docs = suite::applied_one_by_one(&StateDocument::new("s").lineage, 300);
    save_all(&backend, &docs).await;
    let last = serde_json::to_vec(docs.last().unwrap()).unwrap().len() as u64;
    let whole: u64 = docs
        .iter()
        .map(|d| serde_json::to_vec(d).unwrap().len() as u64)
        .sum();
    let stored = disk_bytes(&dir);
    eprintln!(
        "300 versions: final document {last} B, every version whole {whole} B, on disk {stored} B ({:.1}x the document)",
        stored as f64 / last as f64
    );
    assert!(
        stored < 10 * last,
        "{stored} B on disk for a {last} B document"
    );
    assert_eq!(
        backend.read_serial(150).await.unwrap().as_ref(),
        Some(&docs[149])
    );
}

#[tokio::test]
async fn environments_live_under_envs_and_leave_nothing_when_removed() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join(".prov");
    let env = |name: &str| EmbeddedBackend::new(EmbeddedBackend::environment_dir(&dir, name));
    let (a, b) = (env("a"), env("b"));
    // Something that is no environment is not listed.
    std::fs::create_dir_all(dir.join("envs").join("Not_a_name")).unwrap();
    suite::environments_are_apart_listed_and_removed(&EmbeddedBackend::new(&dir), &a, &b).await;
    let l = a
        .lock(LockInfo::for_this_process("env down"), Duration::ZERO)
        .await
        .unwrap();
    l.remove().await.unwrap();
    assert!(
        !dir.join("envs").join("a").exists(),
        "its directory is gone"
    );
    assert!(dir.join("envs").join("b").join("state.db").exists());
}

/// Opening the database reads only the latest version's header, so a
/// latest patch that does not apply is found when the document is read:
/// that read says the database is damaged and names its copy, as opening
/// it did, and `recover` rebuilds it from the copy.
#[tokio::test]
async fn a_latest_patch_that_does_not_apply_is_damage_the_copy_repairs() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join(".prov");
    let backend = EmbeddedBackend::new(&dir);
    let docs = suite::applied_one_by_one(&StateDocument::new("s").lineage, 3);
    save_all(&backend, &docs).await;
    {
        let db = sled::open(dir.join("state.db")).unwrap();
        let patches = db.open_tree("patches").unwrap();
        let key = 3u64.to_be_bytes();
        assert!(patches.get(key).unwrap().is_some(), "version 3 is a patch");
        let broken =
            br#"[{"op":"replace","path":"/serial","value":3},{"op":"remove","path":"/nowhere"}]"#;
        patches.insert(key, &broken[..]).unwrap();
        db.flush().unwrap();
    }
    assert!(backend.exists().await.unwrap());
    let err = backend.read().await.unwrap_err();
    assert!(matches!(err, StateError::Damaged { .. }), "{err}");
    assert!(err.to_string().contains("latest.json"), "{err}");
    let recovered = backend
        .recover(LockInfo::for_this_process("state recover"))
        .await
        .unwrap();
    assert_eq!(recovered.serial, 3);
    assert_eq!(backend.read().await.unwrap().as_ref(), docs.last());
}
