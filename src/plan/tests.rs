//! Planner and apply engine against the in-memory fake provider and a real
//! embedded state backend.

use std::collections::BTreeMap;
use std::sync::Arc;

use prov_provider::fake::FakeProvider;
use prov_provider::{Address, Change, Reference, ResourceConfig};
use prov_state::{EmbeddedBackend, LockInfo, ResourceStatus, StateBackend, StateDocument};
use serde_json::json;
use tokio::sync::Mutex;

use crate::apply::{self, ApplyOptions};
use crate::plan::{self, BuildOptions, Refreshed};
use crate::providers::Providers;
use crate::select::Selection;
use crate::session::StateSession;
use crate::spec::Spec;

fn thing(address: &str, image: &str, size: u32, deps: &[&str]) -> ResourceConfig {
    let mut attributes: BTreeMap<String, serde_json::Value> = [
        ("image".to_owned(), json!(image)),
        ("size".to_owned(), json!(size)),
    ]
    .into();
    let mut references = BTreeMap::new();
    if !deps.is_empty() {
        attributes.insert("peers".into(), json!(deps));
        references.insert(
            "peers".to_owned(),
            Reference {
                targets: deps.iter().map(|d| d.parse().unwrap()).collect(),
                field: "id".into(),
                list: true,
            },
        );
    }
    ResourceConfig {
        address: address.parse().unwrap(),
        provider: "fake".into(),
        kind: "thing".into(),
        attributes,
        references,
        depends_on: deps.iter().map(|d| d.parse().unwrap()).collect(),
        names: Vec::new(),
    }
}

fn spec(resources: Vec<ResourceConfig>) -> Spec {
    Spec::of_resources("test", resources)
}

struct Rig {
    fake: Arc<FakeProvider>,
    providers: Providers,
    backend: Arc<dyn StateBackend>,
    _dir: tempfile::TempDir,
}

impl Rig {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let fake = Arc::new(FakeProvider::new());
        Self {
            providers: Providers::single(fake.clone()),
            fake,
            backend: Arc::new(EmbeddedBackend::new(dir.path().join(".prov"))),
            _dir: dir,
        }
    }

    async fn plan(
        &self,
        spec: &Spec,
        options: &BuildOptions,
    ) -> (plan::file::PlanFile, Refreshed, Option<StateDocument>) {
        let guard = self
            .backend
            .lock(LockInfo::for_this_process("plan"), Default::default())
            .await
            .unwrap();
        let stored = self.backend.read().await.unwrap();
        guard.unlock().await.unwrap();
        let doc = Arc::new(stored.clone().unwrap_or_else(|| StateDocument::new("test")));
        let refreshed = plan::refresh(&doc, &self.providers, |_| true)
            .await
            .unwrap();
        (
            plan::build(spec, &refreshed, &self.providers, options).unwrap(),
            refreshed,
            stored,
        )
    }

    async fn apply(&self, spec: &Spec, options: &BuildOptions) -> apply::ApplyReport {
        self.apply_watching(spec, options, Arc::default()).await
    }

    /// [`Rig::apply`], keeping every event the scheduler reports.
    async fn apply_watching(
        &self,
        spec: &Spec,
        options: &BuildOptions,
        events: Arc<std::sync::Mutex<Vec<apply::Event>>>,
    ) -> apply::ApplyReport {
        let (plan, refreshed, stored) = self.plan(spec, options).await;
        let guard = self
            .backend
            .lock(LockInfo::for_this_process("apply"), Default::default())
            .await
            .unwrap();
        let session = Arc::new(Mutex::new(StateSession::new(
            self.backend.clone(),
            guard,
            Arc::unwrap_or_clone(refreshed.doc),
            stored,
        )));
        session.lock().await.save().await.unwrap();
        let report = apply::apply(
            &plan,
            &self.providers,
            &session,
            ApplyOptions { parallelism: 4 },
            move |event| events.lock().unwrap().push(event.clone()),
        )
        .await
        .unwrap();
        let session = Arc::try_unwrap(session).unwrap().into_inner();
        session.close().await.unwrap();
        report
    }

    async fn state(&self) -> StateDocument {
        let guard = self
            .backend
            .lock(LockInfo::for_this_process("read"), Default::default())
            .await
            .unwrap();
        let doc = self.backend.read().await.unwrap().unwrap();
        guard.unlock().await.unwrap();
        doc
    }
}

fn actions(plan: &plan::file::PlanFile) -> Vec<(String, Change)> {
    plan.plan
        .changes
        .iter()
        .map(|c| (c.address.to_string(), c.action))
        .collect()
}

#[tokio::test]
async fn creates_then_nothing_to_do() {
    let rig = Rig::new();
    let spec = spec(vec![
        thing("a", "img1", 1, &[]),
        thing("b", "img1", 1, &["a"]),
    ]);
    let (plan, _, _) = rig.plan(&spec, &BuildOptions::default()).await;
    assert_eq!(
        actions(&plan),
        [("a".into(), Change::Create), ("b".into(), Change::Create)]
    );
    let peers = plan.plan.changes[1]
        .attributes
        .iter()
        .find(|a| a.name == "peers")
        .unwrap();
    assert!(
        peers.after_unknown,
        "b's reference to a is known only after apply"
    );

    let report = rig.apply(&spec, &BuildOptions::default()).await;
    assert!(report.failed.is_empty());
    assert_eq!(rig.fake.len(), 2);
    let state = rig.state().await;
    let a_id = state.resources["a"].id.clone().unwrap();
    assert_eq!(state.resources["b"].attributes["peers"], json!([a_id]));
    assert!(state
        .resources
        .values()
        .all(|r| r.status == ResourceStatus::Ready));

    let (again, _, _) = rig.plan(&spec, &BuildOptions::default()).await;
    assert!(again.plan.is_empty(), "{:?}", again.plan.changes);
}

#[tokio::test]
async fn update_replace_delete() {
    let rig = Rig::new();
    rig.apply(
        &spec(vec![
            thing("a", "img1", 1, &[]),
            thing("b", "img1", 1, &[]),
            thing("c", "img1", 1, &[]),
        ]),
        &BuildOptions::default(),
    )
    .await;
    let changed = spec(vec![thing("a", "img1", 2, &[]), thing("b", "img2", 1, &[])]);
    let (plan, _, _) = rig.plan(&changed, &BuildOptions::default()).await;
    assert_eq!(
        actions(&plan),
        [
            ("a".into(), Change::Update),
            ("b".into(), Change::Replace),
            ("c".into(), Change::Delete)
        ]
    );
    assert_eq!(
        plan.plan.changes[1].reason.as_deref(),
        Some("image forces replacement")
    );
    let old_b = rig.state().await.resources["b"].id.clone();
    let report = rig.apply(&changed, &BuildOptions::default()).await;
    assert_eq!(
        report.summary(),
        "0 created, 1 updated, 1 replaced, 1 destroyed"
    );
    let state = rig.state().await;
    assert_ne!(state.resources["b"].id, old_b);
    assert_eq!(state.resources["b"].generation, 2);
    assert!(!state.resources.contains_key(&Address::host("c", None)));
    assert_eq!(rig.fake.len(), 2);
    let (again, _, _) = rig.plan(&changed, &BuildOptions::default()).await;
    assert!(again.plan.is_empty());
}

#[tokio::test]
async fn failed_create_taints_and_skips_dependents() {
    let rig = Rig::new();
    rig.fake.fail_creates_of("broken");
    let spec1 = spec(vec![
        thing("a", "broken", 1, &[]),
        thing("b", "img", 1, &["a"]),
    ]);
    let report = rig.apply(&spec1, &BuildOptions::default()).await;
    assert_eq!(report.failed.len(), 1);
    assert_eq!(report.skipped, vec![Address::host("b", None)]);
    let state = rig.state().await;
    assert_eq!(state.resources["a"].status, ResourceStatus::Tainted);
    let fixed = spec(vec![
        thing("a", "fine", 1, &[]),
        thing("b", "img", 1, &["a"]),
    ]);
    let (plan, _, _) = rig.plan(&fixed, &BuildOptions::default()).await;
    assert_eq!(
        actions(&plan),
        [("a".into(), Change::Replace), ("b".into(), Change::Create)]
    );
    assert!(plan.plan.changes[0]
        .reason
        .as_deref()
        .unwrap()
        .contains("tainted"));
}

#[tokio::test]
async fn interrupted_create_is_adopted_by_token() {
    let rig = Rig::new();
    let spec1 = spec(vec![thing("a", "img", 1, &[])]);
    rig.apply(&spec1, &BuildOptions::default()).await;
    // Simulate a crash after the create call: the record says `creating`
    // without an id, the object exists under the record's token.
    let guard = rig
        .backend
        .lock(LockInfo::for_this_process("test"), Default::default())
        .await
        .unwrap();
    let doc = rig.backend.read().await.unwrap().unwrap();
    let id = doc.resources["a"].id.clone().unwrap();
    let mut json = serde_json::to_value(&doc).unwrap();
    let record = &mut json["resources"]["a"];
    record.as_object_mut().unwrap().remove("id");
    record["status"] = json!("creating");
    json["serial"] = json!(doc.serial + 1);
    let doc: StateDocument = serde_json::from_value(json).unwrap();
    guard.write(&doc).await.unwrap();
    guard.unlock().await.unwrap();

    let (plan, refreshed, _) = rig.plan(&spec1, &BuildOptions::default()).await;
    assert_eq!(
        refreshed.doc.resources["a"].id.as_deref(),
        Some(id.as_str())
    );
    assert!(plan.plan.is_empty());
    rig.apply(&spec1, &BuildOptions::default()).await;
    assert_eq!(rig.fake.len(), 1);
    assert_eq!(
        rig.state().await.resources["a"].status,
        ResourceStatus::Ready
    );
}

#[tokio::test]
async fn selection_includes_dependencies_and_destroy_takes_dependents() {
    let rig = Rig::new();
    let all = spec(vec![
        thing("a", "img", 1, &[]),
        thing("b", "img", 1, &["a"]),
        thing("c", "img", 1, &[]),
    ]);
    let only_b = BuildOptions {
        selection: Selection::parse(&["b".to_owned()]).unwrap(),
        destroy: false,
        ..BuildOptions::default()
    };
    let (plan, _, _) = rig.plan(&all, &only_b).await;
    assert_eq!(
        actions(&plan),
        [("a".into(), Change::Create), ("b".into(), Change::Create)]
    );
    rig.apply(&all, &BuildOptions::default()).await;
    let destroy_a = BuildOptions {
        selection: Selection::parse(&["a".to_owned()]).unwrap(),
        destroy: true,
        ..BuildOptions::default()
    };
    let (plan, _, _) = rig.plan(&all, &destroy_a).await;
    assert_eq!(
        actions(&plan),
        [("a".into(), Change::Delete), ("b".into(), Change::Delete)]
    );
    let report = rig.apply(&all, &destroy_a).await;
    assert!(report.failed.is_empty());
    assert_eq!(rig.fake.len(), 1);
}

#[tokio::test]
async fn drift_is_reported_and_deleted_objects_recreated() {
    let rig = Rig::new();
    let spec1 = spec(vec![thing("a", "img", 1, &[]), thing("b", "img", 1, &[])]);
    rig.apply(&spec1, &BuildOptions::default()).await;
    let state = rig.state().await;
    let b = state.resources["b"].id.clone().unwrap();
    prov_provider::Provider::delete(rig.fake.as_ref(), "thing", &b)
        .await
        .unwrap();
    let (plan, refreshed, _) = rig.plan(&spec1, &BuildOptions::default()).await;
    assert!(refreshed.gone.contains(&Address::host("b", None)));
    assert_eq!(plan.plan.drift.len(), 1);
    assert_eq!(actions(&plan), [("b".into(), Change::Create)]);
    assert_eq!(
        plan.plan.changes[0].reason.as_deref(),
        Some("deleted outside prov")
    );
}

/// architecture 5: a failure does not abandon the calls in flight. While
/// `b` and `c` are being created, `a` fails; `b` and `c` finish and are
/// recorded, and only what waits for `a` is skipped.
#[tokio::test]
async fn a_failure_lets_the_calls_in_flight_finish_and_records_them() {
    let rig = Rig::new();
    rig.fake.fail_creates_of("broken");
    rig.fake
        .slow_creates_of("slow", std::time::Duration::from_millis(300));
    let spec = spec(vec![
        thing("a", "broken", 1, &[]),
        thing("b", "slow", 1, &[]),
        thing("c", "slow", 1, &[]),
        thing("d", "img", 1, &["a"]),
    ]);
    let report = rig.apply(&spec, &BuildOptions::default()).await;
    let failed: Vec<String> = report.failed.iter().map(|(a, _)| a.to_string()).collect();
    assert_eq!(failed, ["a"]);
    assert_eq!(report.done.get(&Change::Create), Some(&2));
    assert_eq!(report.skipped, vec![Address::host("d", None)]);
    let state = rig.state().await;
    for address in ["b", "c"] {
        let record = &state.resources[address];
        assert_eq!(record.status, ResourceStatus::Ready, "{address}");
        assert!(record.id.is_some(), "{address} has no id in state");
    }
    assert_eq!(state.resources["a"].status, ResourceStatus::Tainted);
    assert_eq!(rig.fake.len(), 2);
}

/// architecture 5: a provider call that panics is a failure of its
/// resource, reported with its address; the rest of the run goes on and is
/// recorded (on 9855646 the panic ended the whole apply with an error).
#[tokio::test]
async fn a_panicking_provider_call_is_reported_with_its_address() {
    let rig = Rig::new();
    rig.fake.panic_on_creates_of("buggy");
    rig.fake
        .slow_creates_of("slow", std::time::Duration::from_millis(200));
    let spec = spec(vec![
        thing("p", "buggy", 1, &[]),
        thing("q", "slow", 1, &[]),
    ]);
    let events = Arc::new(std::sync::Mutex::new(Vec::new()));
    let report = rig
        .apply_watching(&spec, &BuildOptions::default(), Arc::clone(&events))
        .await;
    assert_eq!(report.failed.len(), 1);
    let (address, error) = &report.failed[0];
    assert_eq!(address, &Address::host("p", None));
    let message = format!("{error:#}");
    assert!(message.contains("panicked"), "{message}");
    assert!(message.contains('p'), "{message}");
    let failed_events: Vec<String> = events
        .lock()
        .unwrap()
        .iter()
        .filter_map(|e| match e {
            apply::Event::Failed { address, .. } => Some(address.to_string()),
            _ => None,
        })
        .collect();
    assert_eq!(failed_events, ["p"]);
    let state = rig.state().await;
    assert_eq!(state.resources["q"].status, ResourceStatus::Ready);
    // The intent recorded before the call stays, for the next run to settle.
    assert_eq!(state.resources["p"].status, ResourceStatus::Creating);
}

#[tokio::test]
async fn replace_requested_replaces_exactly_the_named_resource() {
    let rig = Rig::new();
    let all = spec(vec![thing("a", "img", 1, &[]), thing("b", "img", 1, &[])]);
    rig.apply(&all, &BuildOptions::default()).await;
    let replace_a = BuildOptions {
        replace: ["a".parse().unwrap()].into(),
        ..BuildOptions::default()
    };
    let (plan, _, _) = rig.plan(&all, &replace_a).await;
    assert_eq!(actions(&plan), [("a".into(), Change::Replace)]);
    assert_eq!(
        plan.plan.changes[0].reason.as_deref(),
        Some(crate::plan::resources::REQUESTED)
    );
    let before = rig.state().await.resources["a"].id.clone();
    rig.apply(&all, &replace_a).await;
    let after = rig.state().await;
    assert_ne!(after.resources["a"].id, before, "a new object");
    let (again, _, _) = rig.plan(&all, &BuildOptions::default()).await;
    assert!(again.plan.is_empty(), "{:?}", again.plan.changes);
}

#[tokio::test]
async fn replace_of_an_address_the_spec_lacks_is_an_error() {
    let rig = Rig::new();
    let all = spec(vec![thing("a", "img", 1, &[])]);
    let doc = Arc::new(StateDocument::new("test"));
    let refreshed = plan::refresh(&doc, &rig.providers, |_| true).await.unwrap();
    let options = |replace: &str, destroy: bool| BuildOptions {
        replace: [replace.parse().unwrap()].into(),
        destroy,
        ..BuildOptions::default()
    };
    let error = plan::build(&all, &refreshed, &rig.providers, &options("nope", false))
        .unwrap_err()
        .to_string();
    assert!(error.contains("no resource of the spec"), "{error}");
    let error = plan::build(&all, &refreshed, &rig.providers, &options("a", true))
        .unwrap_err()
        .to_string();
    assert!(error.contains("--destroy"), "{error}");
}
