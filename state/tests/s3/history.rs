//! History: listing, reading old versions, copies keeping their entries,
//! and storage growing with the changes.

use prov_state::{LockInfo, StateBackend, StateDocument};

use crate::moto::*;
use crate::suite;

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
    foreign.set_outputs([]);
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
