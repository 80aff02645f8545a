//! Where things are in the bucket, and writes by compare-and-swap: conflicts
//! with changes made behind prov's back, retried puts, workspaces, refused
//! documents and unreachable stores.

use std::time::Duration;

use prov_state::{LockInfo, S3Backend, S3Settings, StateBackend, StateDocument, StateError};

use crate::moto::*;
use crate::suite;

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
    let mut outputs: std::collections::BTreeMap<String, serde_json::Value> = theirs
        .outputs
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    outputs.insert("by".into(), "someone else".into());
    theirs.set_outputs(outputs);
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
