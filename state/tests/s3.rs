//! The S3 backend against a real moto server: the shared suite (a fresh bucket
//! per test) plus compare-and-swap, lock and history properties.
//!
//! One moto server serves the whole test binary (`MOTO_SERVER` overrides the
//! `moto_server` program); it is stopped when the binary exits.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[macro_use]
mod suite;

use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use aws_sdk_s3::primitives::ByteStream;
use prov_state::{LockInfo, S3Backend, S3Settings, StateBackend, StateDocument, StateError};

/// The moto server shared by every test in this binary.
struct SharedMoto {
    /// `http://127.0.0.1:PORT`.
    endpoint: String,
    /// The wrapper shell; it stops moto when this pipe closes (the test
    /// binary exited).
    _child: Child,
    _stdin: ChildStdin,
}

/// A free TCP port on 127.0.0.1.
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// Starts a moto server with `extra` arguments (at most 30 s); it stops
/// when the returned value is dropped.
fn spawn_moto(extra: &str) -> SharedMoto {
    let port = free_port();
    let program = std::env::var("MOTO_SERVER").unwrap_or_else(|_| "moto_server".into());
    // The shell runs moto in the background and kills it when its
    // stdin (a pipe from this process) reaches end of file.
    let mut child = Command::new("sh")
        .args([
            "-c",
            r#""$0" -H 127.0.0.1 -p "$1" $2 >/dev/null 2>&1 & m=$!; cat >/dev/null; kill $m"#,
            &program,
            &port.to_string(),
            extra,
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {program} (run scripts/setup.sh): {e}"));
    let stdin = child.stdin.take().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "{program} did not start within 30 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    SharedMoto {
        endpoint: format!("http://127.0.0.1:{port}"),
        _child: child,
        _stdin: stdin,
    }
}

/// The shared moto endpoint, starting moto on first use.
fn moto() -> &'static str {
    static MOTO: OnceLock<SharedMoto> = OnceLock::new();
    &MOTO.get_or_init(|| spawn_moto("")).endpoint
}

/// AWS configuration for moto: static credentials, us-east-1.
async fn sdk_config() -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_s3::config::Credentials::new(
            "testing", "testing", None, None, "moto",
        ))
        .endpoint_url(moto())
        .load()
        .await
}

/// A raw client on moto, to act behind the backend's back.
async fn raw_client() -> aws_sdk_s3::Client {
    let config = aws_sdk_s3::config::Builder::from(&sdk_config().await)
        .force_path_style(true)
        .build();
    aws_sdk_s3::Client::from_conf(config)
}

/// Creates a new, empty bucket and returns its name.
async fn new_bucket(client: &aws_sdk_s3::Client) -> String {
    let bucket = format!("prov-test-{}", uuid::Uuid::new_v4().simple());
    client.create_bucket().bucket(&bucket).send().await.unwrap();
    bucket
}

/// Settings for `bucket` on moto.
fn settings(bucket: &str) -> S3Settings {
    let mut settings = S3Settings::new(bucket, "demo/state.json");
    settings.endpoint = Some(moto().to_owned());
    settings.region = Some("us-east-1".to_owned());
    settings
}

/// A backend on `settings`.
async fn backend(settings: S3Settings) -> S3Backend {
    S3Backend::from_sdk_config(settings, &sdk_config().await).unwrap()
}

/// An S3 backend on a new bucket.
async fn fresh() -> suite::Fixture {
    let client = raw_client().await;
    let bucket = new_bucket(&client).await;
    suite::Fixture {
        backend: Box::new(backend(settings(&bucket)).await),
        _keep: Box::new(bucket),
    }
}

/// A backend on a new bucket, and a raw client on the same moto.
async fn rig() -> (S3Backend, aws_sdk_s3::Client) {
    let client = raw_client().await;
    let bucket = new_bucket(&client).await;
    (backend(settings(&bucket)).await, client)
}

/// Reads an object with the raw client (`None` when missing).
async fn raw_get(client: &aws_sdk_s3::Client, bucket: &str, key: &str) -> Option<Vec<u8>> {
    match client.get_object().bucket(bucket).key(key).send().await {
        Ok(resp) => Some(resp.body.collect().await.unwrap().into_bytes().to_vec()),
        Err(e) => {
            let text = format!("{e:?}");
            assert!(text.contains("NoSuchKey"), "{text}");
            None
        }
    }
}

/// Writes an object with the raw client, unconditionally.
async fn raw_put(client: &aws_sdk_s3::Client, bucket: &str, key: &str, body: Vec<u8>) {
    client
        .put_object()
        .bucket(bucket)
        .key(key)
        .body(ByteStream::from(body))
        .send()
        .await
        .unwrap();
}

/// Takes the lock without waiting.
async fn lock(b: &S3Backend, operation: &str) -> Box<dyn prov_state::StateLock> {
    b.lock(LockInfo::for_this_process(operation), Duration::ZERO)
        .await
        .unwrap()
}

state_backend_suite!(fresh);

#[tokio::test]
async fn suite_runs_in_sequence() {
    suite::run_all(fresh).await;
}

#[tokio::test]
async fn describe_and_keys() {
    let (b, _) = rig().await;
    let bucket = b.settings().bucket.clone();
    assert_eq!(
        b.describe(),
        format!("S3 state at s3://{bucket}/demo/state.json")
    );
    assert_eq!(b.lock_key(), "demo/state.json.lock");
    assert_eq!(
        b.history_key(7),
        "demo/state.json.history/00000000000000000007.json"
    );
}

#[tokio::test]
async fn layout_in_the_bucket() {
    let (b, client) = rig().await;
    let bucket = b.settings().bucket.clone();
    let guard = lock(&b, "apply").await;
    let lock_body = raw_get(&client, &bucket, b.lock_key()).await.unwrap();
    let record: LockInfo = serde_json::from_slice(&lock_body).unwrap();
    assert_eq!(record, *guard.info());
    let d = suite::doc("l", 1, 2);
    guard.write(&d).await.unwrap();
    guard.unlock().await.unwrap();
    assert_eq!(raw_get(&client, &bucket, b.lock_key()).await, None);
    let main: StateDocument =
        serde_json::from_slice(&raw_get(&client, &bucket, b.state_key()).await.unwrap()).unwrap();
    assert_eq!(main, d);
    let hist: StateDocument =
        serde_json::from_slice(&raw_get(&client, &bucket, &b.history_key(1)).await.unwrap())
            .unwrap();
    assert_eq!(hist, d);
    let head = client
        .head_object()
        .bucket(&bucket)
        .key(b.history_key(1))
        .send()
        .await
        .unwrap();
    let meta = head.metadata().unwrap();
    assert_eq!(meta.get("prov-serial").map(String::as_str), Some("1"));
    assert_eq!(meta.get("prov-resources").map(String::as_str), Some("2"));
}

#[tokio::test]
async fn cas_conflict_when_the_state_changes_between_read_and_write() {
    let (b, client) = rig().await;
    let bucket = b.settings().bucket.clone();
    let guard = lock(&b, "apply").await;
    let first = suite::doc("l", 1, 1);
    guard.write(&first).await.unwrap();
    assert_eq!(b.read().await.unwrap(), Some(first.clone()));

    // Someone rewrites the state object behind prov's back (same serial,
    // other content), between our read and our write.
    let mut theirs = suite::doc("l", 1, 3);
    theirs.outputs.insert("by".into(), "someone else".into());
    let theirs_bytes = serde_json::to_vec(&theirs).unwrap();
    raw_put(&client, &bucket, b.state_key(), theirs_bytes.clone()).await;

    let err = guard.write(&suite::doc("l", 2, 0)).await.unwrap_err();
    assert!(matches!(err, StateError::Conflict(_)), "{err}");
    let message = err.to_string();
    assert!(
        message.contains("changed since it was read (expected ETag"),
        "{message}"
    );
    assert!(message.contains("nothing was overwritten"), "{message}");
    // Nothing was overwritten, and history holds no version 2.
    assert_eq!(
        raw_get(&client, &bucket, b.state_key()).await.unwrap(),
        theirs_bytes
    );
    assert_eq!(raw_get(&client, &bucket, &b.history_key(2)).await, None);
    assert_eq!(b.read_serial(2).await.unwrap(), None);
    let serials: Vec<u64> = b
        .history()
        .await
        .unwrap()
        .iter()
        .map(|h| h.serial)
        .collect();
    assert_eq!(serials, [1]);

    // Re-reading shows their document; a write based on it succeeds.
    assert_eq!(b.read().await.unwrap(), Some(theirs));
    let second = suite::doc("l", 2, 4);
    guard.write(&second).await.unwrap();
    assert_eq!(b.read().await.unwrap(), Some(second.clone()));
    assert_eq!(b.read_serial(2).await.unwrap(), Some(second));
    guard.unlock().await.unwrap();
}

#[tokio::test]
async fn cas_conflict_when_someone_else_wrote_the_next_serial() {
    let (b, client) = rig().await;
    let bucket = b.settings().bucket.clone();
    let guard = lock(&b, "apply").await;
    guard.write(&suite::doc("l", 1, 1)).await.unwrap();
    // Someone writes serial 2 without the lock.
    let theirs = suite::doc("l", 2, 7);
    raw_put(
        &client,
        &bucket,
        b.state_key(),
        serde_json::to_vec(&theirs).unwrap(),
    )
    .await;
    let err = guard.write(&suite::doc("l", 2, 0)).await.unwrap_err();
    assert!(matches!(err, StateError::Conflict(_)), "{err}");
    assert_eq!(b.read().await.unwrap(), Some(theirs.clone()));
    // History agrees with the state object: version 2 is theirs.
    assert_eq!(b.read_serial(2).await.unwrap(), Some(theirs));
    let history = b.history().await.unwrap();
    assert_eq!(history.iter().map(|h| h.serial).collect::<Vec<_>>(), [1, 2]);
    assert_eq!(history[1].resources, 7);
    guard.unlock().await.unwrap();
}

#[tokio::test]
async fn cas_conflict_when_the_state_appears_after_reading_it_absent() {
    let (b, client) = rig().await;
    let bucket = b.settings().bucket.clone();
    let guard = lock(&b, "apply").await;
    assert_eq!(b.read().await.unwrap(), None);
    let theirs = serde_json::to_vec(&suite::doc("other", 4, 1)).unwrap();
    raw_put(&client, &bucket, b.state_key(), theirs.clone()).await;
    let err = guard.write(&suite::doc("l", 1, 1)).await.unwrap_err();
    assert!(matches!(err, StateError::Conflict(_)), "{err}");
    assert!(err.to_string().contains("created by someone else"), "{err}");
    assert_eq!(
        raw_get(&client, &bucket, b.state_key()).await.unwrap(),
        theirs
    );
    assert_eq!(raw_get(&client, &bucket, &b.history_key(1)).await, None);
    guard.unlock().await.unwrap();
}

#[tokio::test]
async fn lock_put_meeting_its_own_earlier_put_is_held_by_us() {
    let (b, client) = rig().await;
    let bucket = b.settings().bucket.clone();
    let info = LockInfo::for_this_process("apply");
    // The put that succeeded but whose response was lost: the SDK's retry
    // then meets it (412).
    raw_put(
        &client,
        &bucket,
        b.lock_key(),
        serde_json::to_vec_pretty(&info).unwrap(),
    )
    .await;
    let guard = b.lock(info.clone(), Duration::ZERO).await.unwrap();
    assert_eq!(*guard.info(), info);
    assert_eq!(b.lock_holder().await.unwrap(), Some(info.clone()));
    // Anyone else is refused, naming us.
    let err = b
        .lock(LockInfo::for_this_process("plan"), Duration::ZERO)
        .await
        .unwrap_err();
    let StateError::Locked { holder } = &err else {
        panic!("expected Locked, got {err}");
    };
    assert_eq!(**holder, info);
    // The lock works like any other: writes go through, unlock deletes it.
    guard.write(&suite::doc("l", 1, 1)).await.unwrap();
    guard.unlock().await.unwrap();
    assert_eq!(b.lock_holder().await.unwrap(), None);
    assert_eq!(raw_get(&client, &bucket, b.lock_key()).await, None);
}

/// A lock record left by a run on another machine that was killed.
fn ghost() -> LockInfo {
    LockInfo {
        id: uuid::Uuid::new_v4().to_string(),
        who: "ghost@elsewhere".into(),
        pid: 424_242,
        operation: "apply".into(),
        created: "2024-01-02T03:04:05Z".parse().unwrap(),
        version: "0.1.0".into(),
    }
}

#[tokio::test]
async fn stale_lock_is_reported_and_force_unlock_clears_it() {
    let (b, client) = rig().await;
    let bucket = b.settings().bucket.clone();
    let stale = ghost();
    raw_put(
        &client,
        &bucket,
        b.lock_key(),
        serde_json::to_vec(&stale).unwrap(),
    )
    .await;
    let err = b
        .lock(LockInfo::for_this_process("apply"), Duration::ZERO)
        .await
        .unwrap_err();
    let message = err.to_string();
    for part in [
        "state is locked by ghost@elsewhere (pid 424242) since 2024-01-02T03:04:05Z for `apply`",
        &format!("(lock id {})", stale.id),
        &format!("prov state force-unlock {}", stale.id),
    ] {
        assert!(message.contains(part), "`{part}` missing from: {message}");
    }
    let err = b.force_unlock("not-it").await.unwrap_err();
    assert!(matches!(err, StateError::LockMismatch { .. }), "{err}");
    assert_eq!(b.lock_holder().await.unwrap(), Some(stale.clone()));
    b.force_unlock(&stale.id).await.unwrap();
    assert_eq!(b.lock_holder().await.unwrap(), None);
    // Unlocking what is not locked is fine.
    b.force_unlock(&stale.id).await.unwrap();
    let guard = lock(&b, "apply").await;
    guard.unlock().await.unwrap();
}

#[tokio::test]
async fn unlock_never_deletes_someone_elses_lock() {
    let (b, client) = rig().await;
    let bucket = b.settings().bucket.clone();
    let guard = lock(&b, "apply").await;
    // Our lock is force-unlocked, and someone else takes the lock.
    b.force_unlock(&guard.info().id).await.unwrap();
    let other = ghost();
    raw_put(
        &client,
        &bucket,
        b.lock_key(),
        serde_json::to_vec(&other).unwrap(),
    )
    .await;
    let err = guard.unlock().await.unwrap_err();
    assert!(matches!(err, StateError::LockLost { .. }), "{err}");
    assert!(err.to_string().contains(&other.id), "{err}");
    assert_eq!(b.lock_holder().await.unwrap(), Some(other));
}

#[tokio::test]
async fn unreadable_lock_object_is_locked_unknown() {
    let (b, client) = rig().await;
    let bucket = b.settings().bucket.clone();
    raw_put(&client, &bucket, b.lock_key(), b"not json".to_vec()).await;
    let err = b
        .lock(LockInfo::for_this_process("apply"), Duration::ZERO)
        .await
        .unwrap_err();
    assert!(matches!(err, StateError::LockedUnknown { .. }), "{err}");
    assert!(err.to_string().contains(b.lock_key()), "{err}");
    assert!(b.lock_holder().await.is_err());
}

#[tokio::test]
async fn two_backends_on_one_state_contend() {
    let (a, _) = rig().await;
    let b = backend(a.settings().clone()).await;
    let guard = lock(&a, "apply").await;
    let err = b
        .lock(LockInfo::for_this_process("plan"), Duration::ZERO)
        .await
        .unwrap_err();
    assert!(matches!(err, StateError::Locked { .. }), "{err}");
    guard.write(&suite::doc("l", 1, 1)).await.unwrap();
    guard.unlock().await.unwrap();
    let guard = lock(&b, "apply").await;
    assert_eq!(b.read().await.unwrap().map(|d| d.serial), Some(1));
    guard.write(&suite::doc("l", 2, 1)).await.unwrap();
    guard.unlock().await.unwrap();
    assert_eq!(a.read().await.unwrap().map(|d| d.serial), Some(2));
}

#[tokio::test]
async fn lock_timeout_waits_then_fails() {
    let (a, _) = rig().await;
    let b = backend(a.settings().clone()).await;
    let guard = lock(&a, "apply").await;
    let started = Instant::now();
    let err = b
        .lock(
            LockInfo::for_this_process("plan"),
            Duration::from_millis(1200),
        )
        .await
        .unwrap_err();
    let waited = started.elapsed();
    assert!(matches!(err, StateError::Locked { .. }), "{err}");
    assert!(
        waited >= Duration::from_millis(1100),
        "waited only {waited:?}"
    );
    assert!(waited < Duration::from_secs(10), "waited {waited:?}");
    guard.unlock().await.unwrap();
}

#[tokio::test]
async fn lock_timeout_succeeds_when_released_meanwhile() {
    let (a, _) = rig().await;
    let a = std::sync::Arc::new(a);
    let b = backend(a.settings().clone()).await;
    let guard = lock(&a, "apply").await;
    let releaser = {
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(700)).await;
            guard.unlock().await.unwrap();
        })
    };
    let guard = b
        .lock(LockInfo::for_this_process("plan"), Duration::from_secs(20))
        .await
        .unwrap();
    releaser.await.unwrap();
    guard.unlock().await.unwrap();
}

#[tokio::test]
async fn dropping_a_guard_releases_the_lock_in_the_background() {
    let (b, _) = rig().await;
    let guard = lock(&b, "apply").await;
    drop(guard);
    let deadline = Instant::now() + Duration::from_secs(10);
    while b.lock_holder().await.unwrap().is_some() {
        assert!(
            Instant::now() < deadline,
            "the dropped lock was not released"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_guard_on_a_multi_threaded_runtime_releases_at_once() {
    let (b, _) = rig().await;
    let guard = lock(&b, "apply").await;
    drop(guard);
    assert_eq!(b.lock_holder().await.unwrap(), None);
}

#[tokio::test]
async fn state_put_meeting_its_own_earlier_put_succeeds() {
    let (b, client) = rig().await;
    let bucket = b.settings().bucket.clone();
    let guard = lock(&b, "apply").await;
    guard.write(&suite::doc("l", 1, 1)).await.unwrap();
    // Our put of serial 2 landed but its response was lost; the SDK's retry
    // (If-Match on the old ETag) then meets it.
    let second = suite::doc("l", 2, 2);
    raw_put(
        &client,
        &bucket,
        b.state_key(),
        serde_json::to_vec(&second).unwrap(),
    )
    .await;
    guard.write(&second).await.unwrap();
    assert_eq!(b.read().await.unwrap(), Some(second.clone()));
    assert_eq!(b.read_serial(2).await.unwrap(), Some(second));
    // And the next write chains on from it.
    guard.write(&suite::doc("l", 3, 0)).await.unwrap();
    guard.unlock().await.unwrap();
    assert_eq!(b.history().await.unwrap().len(), 3);
}

#[tokio::test]
async fn history_and_read_serial_work_as_on_the_embedded_backend() {
    let (b, client) = rig().await;
    let bucket = b.settings().bucket.clone();
    let docs: Vec<StateDocument> = (1..=25)
        .map(|s| suite::doc("l", s, s as usize % 4))
        .collect();
    let guard = lock(&b, "apply").await;
    for d in &docs {
        guard.write(d).await.unwrap();
    }
    guard.unlock().await.unwrap();
    let history = b.history().await.unwrap();
    assert_eq!(
        history
            .iter()
            .map(|h| (h.serial, h.resources))
            .collect::<Vec<_>>(),
        docs.iter()
            .map(|d| (d.serial, d.resources.len()))
            .collect::<Vec<_>>()
    );
    let who = LockInfo::for_this_process("x").who;
    assert!(history
        .iter()
        .all(|h| h.written_by == format!("{who} (apply)")));
    for d in &docs {
        assert_eq!(b.read_serial(d.serial).await.unwrap().as_ref(), Some(d));
    }
    assert_eq!(b.read_serial(0).await.unwrap(), None);
    assert_eq!(b.read_serial(26).await.unwrap(), None);

    // A version above the current serial (a write killed between its history
    // put and its state put) is not listed, and the next write replaces it.
    let orphan = suite::doc("l", 26, 9);
    raw_put(
        &client,
        &bucket,
        &b.history_key(26),
        serde_json::to_vec(&orphan).unwrap(),
    )
    .await;
    assert_eq!(b.history().await.unwrap().len(), 25);
    assert_eq!(b.read_serial(26).await.unwrap(), None);
    let guard = lock(&b, "apply").await;
    let next = suite::doc("l", 26, 1);
    guard.write(&next).await.unwrap();
    guard.unlock().await.unwrap();
    assert_eq!(b.read_serial(26).await.unwrap(), Some(next));
    let last = b.history().await.unwrap().pop().unwrap();
    assert_eq!((last.serial, last.resources), (26, 1));

    // A version written by something else than prov (no metadata) is listed
    // with what can be derived.
    let mut foreign = docs[0].clone();
    foreign.outputs.clear();
    raw_put(
        &client,
        &bucket,
        &b.history_key(1),
        serde_json::to_vec(&foreign).unwrap(),
    )
    .await;
    let first = b.history().await.unwrap().remove(0);
    assert_eq!(first.serial, 1);
    assert_eq!(first.resources, foreign.resources.len());
    assert!(first.written_by.contains("unknown"), "{first:?}");
}

#[tokio::test]
async fn copied_versions_keep_their_history_entries() {
    let (b, _) = rig().await;
    let guard = lock(&b, "state migrate").await;
    let entry = prov_state::HistoryEntry {
        serial: 3,
        written_at: "2024-05-06T07:08:09Z".parse().unwrap(),
        written_by: "jörg@büro (apply)".into(),
        resources: 99,
    };
    let d = suite::doc("l", 3, 2);
    guard.write_copy(&d, &entry).await.unwrap();
    guard.unlock().await.unwrap();
    let history = b.history().await.unwrap();
    assert_eq!(
        history,
        [prov_state::HistoryEntry {
            resources: 2,
            ..entry
        }]
    );
    assert_eq!(b.read_serial(3).await.unwrap(), Some(d));
}

#[tokio::test]
async fn workspaces_are_separate_states() {
    let (b, client) = rig().await;
    let bucket = b.settings().bucket.clone();
    let mut staging = b.settings().clone();
    staging.workspace = Some("staging".into());
    let s = backend(staging).await;
    assert_eq!(s.state_key(), "workspaces/staging/demo/state.json");
    let g1 = lock(&b, "apply").await;
    let g2 = lock(&s, "apply").await;
    g1.write(&suite::doc("prod", 1, 1)).await.unwrap();
    g2.write(&suite::doc("stage", 7, 2)).await.unwrap();
    g1.unlock().await.unwrap();
    g2.unlock().await.unwrap();
    assert_eq!(b.read().await.unwrap().unwrap().lineage, "prod");
    assert_eq!(s.read().await.unwrap().unwrap().lineage, "stage");
    assert!(
        raw_get(&client, &bucket, "workspaces/staging/demo/state.json")
            .await
            .is_some()
    );
}

#[tokio::test]
async fn corrupt_and_newer_documents_are_refused() {
    let (b, client) = rig().await;
    let bucket = b.settings().bucket.clone();
    raw_put(&client, &bucket, b.state_key(), b"{not json".to_vec()).await;
    let err = b.read().await.unwrap_err();
    assert!(matches!(err, StateError::Corrupt(_)), "{err}");
    raw_put(
        &client,
        &bucket,
        b.state_key(),
        br#"{"format_version": 99, "lineage": "x", "serial": 1}"#.to_vec(),
    )
    .await;
    let err = b.read().await.unwrap_err();
    assert!(matches!(err, StateError::Format { found: 99, .. }), "{err}");
}

#[tokio::test]
async fn missing_bucket_is_explained() {
    let _ = raw_client().await;
    let b = backend(settings("prov-no-such-bucket")).await;
    let err = b.read().await.unwrap_err();
    let message = err.to_string();
    assert!(message.contains("NoSuchBucket"), "{message}");
    assert!(
        message.contains("prov does not create buckets"),
        "{message}"
    );
    let err = b
        .lock(LockInfo::for_this_process("apply"), Duration::ZERO)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("NoSuchBucket"), "{err}");
}

#[tokio::test]
async fn unreachable_endpoint_is_explained() {
    let mut s = S3Settings::new("bucket", "k");
    s.endpoint = Some("http://127.0.0.1:9".into());
    s.region = Some("us-east-1".into());
    let b = S3Backend::from_sdk_config(s, &sdk_config().await).unwrap();
    let err = b.read().await.unwrap_err();
    assert!(
        err.to_string()
            .contains("could not reach the S3 endpoint http://127.0.0.1:9"),
        "{err}"
    );
}

/// Real S3 creates an object with `If-None-Match: *` atomically, and the lock
/// relies on it: of many lockers racing for a free lock, exactly one holds
/// it. (moto 5.2's check-then-put is not atomic across its threads; the
/// test peer `scripts/lib/moto-server` makes it so, as S3 is.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixteen_lockers_at_once_exactly_one_holds_thirty_rounds() {
    const LOCKERS: usize = 16;
    const ROUNDS: usize = 30;
    let (first, _) = rig().await;
    let mut backends = vec![first];
    for _ in 1..LOCKERS {
        backends.push(backend(backends[0].settings().clone()).await);
    }
    let backends = std::sync::Arc::new(backends);
    for round in 0..ROUNDS {
        let tasks: Vec<_> = (0..LOCKERS)
            .map(|i| {
                let backends = std::sync::Arc::clone(&backends);
                tokio::spawn(async move {
                    let result = backends[i]
                        .lock(LockInfo::for_this_process("apply"), Duration::ZERO)
                        .await;
                    (i, result)
                })
            })
            .collect();
        let mut held = Vec::new();
        for task in tasks {
            let (i, result) = task.await.unwrap();
            match result {
                Ok(guard) => held.push((i, guard)),
                Err(StateError::Locked { .. }) => {}
                Err(other) => panic!("round {round}, locker {i}: {other}"),
            }
        }
        let holders: Vec<usize> = held.iter().map(|(i, _)| *i).collect();
        assert_eq!(holders.len(), 1, "round {round}: holders {holders:?}");
        for (_, guard) in held {
            guard.unlock().await.unwrap();
        }
    }
}

/// state-hardening 10: nothing checked that the endpoint honours
/// conditional writes; on one that ignores them two runs both "hold" the
/// lock. The first lock now probes, and refuses such an endpoint, naming
/// it, leaving no lock behind.
#[tokio::test]
async fn an_endpoint_that_ignores_conditional_writes_is_refused_at_the_first_lock() {
    let lax = spawn_moto("--ignore-conditions");
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_s3::config::Credentials::new(
            "testing", "testing", None, None, "moto",
        ))
        .endpoint_url(&lax.endpoint)
        .load()
        .await;
    let client = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&config)
            .force_path_style(true)
            .build(),
    );
    let bucket = new_bucket(&client).await;
    let mut lax_settings = S3Settings::new(&bucket, "demo/state.json");
    lax_settings.endpoint = Some(lax.endpoint.clone());
    lax_settings.region = Some("us-east-1".to_owned());
    let b = S3Backend::from_sdk_config(lax_settings, &config).unwrap();
    let err = b
        .lock(LockInfo::for_this_process("apply"), Duration::ZERO)
        .await
        .unwrap_err();
    assert!(
        matches!(err, StateError::NoConditionalWrites { .. }),
        "{err}"
    );
    assert!(err.to_string().contains(&lax.endpoint), "{err}");
    assert!(
        raw_get(&client, &bucket, "demo/state.json.lock")
            .await
            .is_none(),
        "the lock was released"
    );

    // The same probe passes on an endpoint that keeps S3's promise.
    let (good, _) = rig().await;
    let guard = lock(&good, "apply").await;
    guard.unlock().await.unwrap();
}

/// state-hardening 10: a holder whose lock was force-unlocked went on
/// writing. Every write and lock check now looks at the lock object first.
#[tokio::test]
async fn a_holder_whose_lock_was_force_unlocked_stops_before_writing() {
    let (a, _client) = rig().await;
    let guard = lock(&a, "apply").await;
    let mut doc = StateDocument::new("demo");
    doc.serial = 1;
    guard.write(&doc).await.unwrap();
    guard.check().await.unwrap();

    let b = backend(a.settings().clone()).await;
    b.force_unlock(&guard.info().id).await.unwrap();
    doc.serial = 2;
    let err = guard.write(&doc).await.unwrap_err();
    assert!(matches!(err, StateError::LockGone { .. }), "{err}");
    assert!(err.to_string().contains("nobody holds it"), "{err}");
    let err = guard.check().await.unwrap_err();
    assert!(matches!(err, StateError::LockGone { .. }), "{err}");

    let theirs = lock(&b, "apply").await;
    let err = guard.write(&doc).await.unwrap_err();
    assert!(err.to_string().contains("now locked by"), "{err}");
    assert_eq!(
        b.read().await.unwrap().unwrap().serial,
        1,
        "nothing of A's landed"
    );
    theirs.unlock().await.unwrap();
}

/// Bytes of every object in `bucket`.
async fn bucket_bytes(client: &aws_sdk_s3::Client, bucket: &str) -> u64 {
    let mut total = 0;
    let mut token = None;
    for _ in 0..1000 {
        let page = client
            .list_objects_v2()
            .bucket(bucket)
            .set_continuation_token(token)
            .send()
            .await
            .unwrap();
        total += page
            .contents()
            .iter()
            .map(|o| o.size().unwrap_or(0) as u64)
            .sum::<u64>();
        token = page.next_continuation_token().map(str::to_owned);
        if token.is_none() {
            return total;
        }
    }
    panic!("more than 1000 pages");
}

/// state-hardening 7 on S3: 300 saves of a deployment applied one resource
/// at a time take less than ten times the final document in the bucket
/// (every version stored whole took over 100 times).
#[tokio::test]
async fn history_storage_grows_with_the_changes_not_with_the_document() {
    let (b, client) = rig().await;
    let bucket = b.settings().bucket.clone();
    let docs = suite::applied_one_by_one(&StateDocument::new("s").lineage, 300);
    let guard = lock(&b, "apply").await;
    for d in &docs {
        guard.write(d).await.unwrap();
    }
    guard.unlock().await.unwrap();
    let last = serde_json::to_vec(docs.last().unwrap()).unwrap().len() as u64;
    let stored = bucket_bytes(&client, &bucket).await;
    eprintln!(
        "300 versions: final document {last} B, in the bucket {stored} B ({:.1}x the document)",
        stored as f64 / last as f64
    );
    assert!(
        stored < 10 * last,
        "{stored} B stored for a {last} B document"
    );
    assert_eq!(b.read_serial(150).await.unwrap().as_ref(), Some(&docs[149]));
}
