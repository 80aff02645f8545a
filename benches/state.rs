//! State storage benchmark. Prints figures; asserts nothing.
//!
//! `cargo bench --bench state` applies 1,000 resources with the apply engine
//! to the in-memory fake provider, one at a time (parallelism 1: every
//! resource is its own saves), on the embedded state backend, then prints:
//! the number of versions, the final document's size, what the state
//! directory holds on disk, and what storing every version whole (as prov
//! did before history was stored as patches) would hold: the sum of every
//! version's size, read back from history.

// A benchmark is a test program: a failed setup step should stop it loudly.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use prov::apply::{self, ApplyOptions};
use prov::plan::{self, BuildOptions};
use prov::providers::Providers;
use prov::select::Selection;
use prov::session::StateSession;
use prov::spec::Spec;
use prov_provider::fake::FakeProvider;
use prov_provider::ResourceConfig;
use prov_state::{EmbeddedBackend, LockInfo, StateBackend, StateDocument};
use serde_json::json;

/// A `thing` of the fake provider with a few hundred bytes of attributes,
/// about what an EC2 instance records.
fn thing(i: usize) -> ResourceConfig {
    let attributes: BTreeMap<String, serde_json::Value> = [
        ("image".to_owned(), json!(format!("ami-{i:017x}"))),
        ("size".to_owned(), json!(2)),
        (
            "tags".to_owned(),
            json!({
                "Name": format!("web-{i}"),
                "prov:deployment": "bench",
                "prov:address": format!("web[{i}]"),
                "role": "web",
                "team": "platform",
                "cost-center": "1234-5678",
            }),
        ),
    ]
    .into();
    ResourceConfig {
        address: format!("web[{i}]").parse().unwrap(),
        provider: "fake".into(),
        kind: "thing".into(),
        attributes,
        references: BTreeMap::new(),
        depends_on: std::collections::BTreeSet::new(),
        names: Vec::new(),
    }
}

fn spec(count: usize) -> Spec {
    Spec::of_resources("bench", (0..count).map(thing).collect())
}

/// Bytes of every file under `dir`.
fn disk_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| {
            let entry = entry.unwrap();
            let meta = entry.metadata().unwrap();
            if meta.is_dir() {
                disk_bytes(&entry.path())
            } else {
                meta.len()
            }
        })
        .sum()
}

/// Bytes under each entry of `dir` and of its `state.db` (by name, sorted).
fn breakdown(dir: &Path) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().to_string_lossy().into_owned();
        if entry.metadata().unwrap().is_dir() {
            if name == "state.db" {
                for (inner, bytes) in breakdown(&entry.path()) {
                    out.push((format!("{name}/{inner}"), bytes));
                }
            } else {
                out.push((format!("{name}/"), disk_bytes(&entry.path())));
            }
        } else {
            out.push((name, entry.metadata().unwrap().len()));
        }
    }
    out.sort();
    out
}

fn mib(bytes: u64) -> String {
    format!("{:.2} MiB", bytes as f64 / (1024.0 * 1024.0))
}

async fn apply_one_by_one(count: usize) {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join(".prov");
    let backend: Arc<dyn StateBackend> = Arc::new(EmbeddedBackend::new(&state));
    let providers = Providers::single(Arc::new(FakeProvider::new()));
    let spec = spec(count);
    let started = Instant::now();
    let guard = backend
        .lock(LockInfo::for_this_process("apply"), Default::default())
        .await
        .unwrap();
    let doc = Arc::new(StateDocument::new("bench"));
    let refreshed = plan::refresh(&doc, &providers, |_| true).await.unwrap();
    let options = BuildOptions {
        selection: Selection::default(),
        destroy: false,
        ..BuildOptions::default()
    };
    let plan = plan::build(&spec, &refreshed, &providers, &options).unwrap();
    let session = Arc::new(tokio::sync::Mutex::new(StateSession::new(
        Arc::clone(&backend),
        guard,
        Arc::unwrap_or_clone(refreshed.doc),
        None,
    )));
    let report = apply::apply(
        &plan,
        &providers,
        &session,
        ApplyOptions { parallelism: 1 },
        |_| {},
    )
    .await
    .unwrap();
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    Arc::try_unwrap(session)
        .unwrap()
        .into_inner()
        .close()
        .await
        .unwrap();
    let elapsed = started.elapsed();

    let history = backend.history().await.unwrap();
    let last = serde_json::to_vec(&backend.read().await.unwrap().unwrap())
        .unwrap()
        .len() as u64;
    let read_started = Instant::now();
    let mut whole = 0;
    for entry in &history {
        let doc = backend.read_serial(entry.serial).await.unwrap().unwrap();
        whole += serde_json::to_vec(&doc).unwrap().len() as u64;
    }
    let read_each = read_started.elapsed() / u32::try_from(history.len()).unwrap();
    let stored = disk_bytes(&state);
    println!(
        "state storage, {count} resources applied one at a time (fake provider, embedded state):"
    );
    println!(
        "  {} versions in {:.2} s; final document {}",
        history.len(),
        elapsed.as_secs_f64(),
        mib(last)
    );
    println!(
        "  on disk: {} ({:.1}x the final document)",
        mib(stored),
        stored as f64 / last as f64
    );
    for (path, bytes) in breakdown(&state) {
        println!("    {path}: {}", mib(bytes));
    }
    println!(
        "  every version stored whole would be: {} ({:.1}x)",
        mib(whole),
        whole as f64 / last as f64
    );
    println!(
        "  reading a version from history: {:.1} ms on average",
        read_each.as_secs_f64() * 1000.0
    );
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(apply_one_by_one(1_000));
}
