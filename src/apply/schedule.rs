//! The scheduler: runs plan changes as a DAG, at most `parallelism` at once.
//!
//! Creates and updates wait for the resources they depend on; deletions run
//! after every create and update, dependents first. When a change fails,
//! nothing new starts; changes already running finish and are saved. After
//! Ctrl-C the same holds, and calls still running when the grace period ends
//! are abandoned (see [`crate::interrupt`]).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use prov_provider::{Address, Change};
use tokio::sync::Mutex;

use super::node;
use super::{ApplyOptions, ApplyReport};
use crate::interrupt;
use crate::plan::file::PlanFile;
use crate::providers::Providers;
use crate::session::StateSession;
use crate::tasks::{Joined, Tasks};

/// Progress of one resource, for the caller to show.
#[derive(Debug, Clone)]
pub enum Event {
    /// Work on a resource started.
    Started {
        /// The resource.
        address: Address,
        /// What is being done.
        action: Change,
    },
    /// Work on a resource finished.
    Finished {
        /// The resource.
        address: Address,
        /// What was done.
        action: Change,
        /// The provider id afterwards, if any.
        id: Option<String>,
        /// How long it took.
        elapsed: Duration,
    },
    /// Work on a resource failed.
    Failed {
        /// The resource.
        address: Address,
        /// What was attempted.
        action: Change,
        /// The error, in one line.
        error: String,
    },
}

/// What one change's task returns: the provider id afterwards, and how
/// long it took.
type Outcome = (Result<Option<String>>, Duration);

/// Runs every change of `plan`.
pub(super) async fn run(
    plan: &PlanFile,
    providers: &Providers,
    session: Arc<Mutex<StateSession>>,
    options: ApplyOptions,
    on_event: Arc<dyn Fn(&Event) + Send + Sync>,
) -> Result<ApplyReport> {
    let mut waiting = dependencies(plan, &*session.lock().await);
    let changes: BTreeMap<Address, Change> = plan
        .plan
        .changes
        .iter()
        .map(|c| (c.address.clone(), c.action))
        .collect();
    let mut report = ApplyReport::default();
    let mut running: Tasks<(Address, Change), Outcome> = Tasks::default();
    let mut failed = false;
    let parallelism = options.parallelism.max(1);

    loop {
        if !failed && !interrupt::requested() {
            let ready: Vec<Address> = waiting
                .iter()
                .filter(|(_, deps)| deps.is_empty())
                .map(|(a, _)| a.clone())
                .take(parallelism.saturating_sub(running.len()))
                .collect();
            // A lock broken while held (S3 force-unlock) stops the run
            // before another provider call.
            if let Some(first) = ready.first() {
                if let Err(error) = session.lock().await.check_lock().await {
                    on_event(&Event::Failed {
                        address: first.clone(),
                        action: changes.get(first).copied().unwrap_or(Change::NoOp),
                        error: format!("not started: {error:#}"),
                    });
                    report.failed.push((first.clone(), error));
                    failed = true;
                    continue;
                }
            }
            for address in ready {
                waiting.remove(&address);
                let Some(&action) = changes.get(&address) else {
                    continue;
                };
                let config = plan.configs.get(&address).cloned();
                let provider_name = plan
                    .plan
                    .change(&address)
                    .map(|c| c.provider.clone())
                    .unwrap_or_default();
                let provider = match providers.get(&provider_name) {
                    Ok(provider) => Arc::clone(provider),
                    Err(error) => {
                        report.failed.push((address, error));
                        failed = true;
                        continue;
                    }
                };
                let session = Arc::clone(&session);
                on_event(&Event::Started {
                    address: address.clone(),
                    action,
                });
                let task_address = address.clone();
                running.spawn((address, action), async move {
                    let started = Instant::now();
                    let result = node::run(
                        provider.as_ref(),
                        &session,
                        &task_address,
                        action,
                        config.as_ref(),
                    )
                    .await;
                    (result, started.elapsed())
                });
            }
        }
        let Some(joined) = running.next().await else {
            break;
        };
        match joined {
            // Stop starting work: loop round to wait for what runs.
            Joined::Stopping => {
                report.interrupted.get_or_insert_with(Vec::new);
            }
            Joined::Done((address, action), (Ok(id), elapsed)) => {
                on_event(&Event::Finished {
                    address: address.clone(),
                    action,
                    id,
                    elapsed,
                });
                *report.done.entry(action).or_default() += 1;
                for deps in waiting.values_mut() {
                    deps.remove(&address);
                }
            }
            Joined::Done((address, action), (Err(error), _)) => {
                fail(&mut report, &*on_event, address, action, error);
                failed = true;
            }
            Joined::Abandoned((address, action)) => {
                on_event(&Event::Failed {
                    address: address.clone(),
                    action,
                    error: "abandoned after the interruption; the next run settles it".to_owned(),
                });
                report
                    .interrupted
                    .get_or_insert_with(Vec::new)
                    .push(address);
            }
            Joined::Panicked((address, action), panic) => {
                let error = anyhow::anyhow!(
                    "internal error: the {} of {address} panicked: {panic}",
                    verb(action)
                );
                fail(&mut report, &*on_event, address, action, error);
                failed = true;
            }
        }
    }
    report.skipped = waiting.into_keys().collect();
    Ok(report)
}

/// Reports `action` on `address` failed with `error`, to the caller and in
/// the report.
fn fail(
    report: &mut ApplyReport,
    on_event: &(dyn Fn(&Event) + Send + Sync),
    address: Address,
    action: Change,
    error: anyhow::Error,
) {
    on_event(&Event::Failed {
        address: address.clone(),
        action,
        error: format!("{error:#}"),
    });
    report.failed.push((address, error));
}

/// The provider call behind `action`, in words.
fn verb(action: Change) -> &'static str {
    match action {
        Change::Create => "create",
        Change::Update => "update",
        Change::Replace => "replacement",
        Change::Delete => "delete",
        Change::NoOp => "no-op",
    }
}

/// For every change, the changes that must finish before it starts.
fn dependencies(plan: &PlanFile, session: &StateSession) -> BTreeMap<Address, BTreeSet<Address>> {
    let converging: BTreeSet<&Address> = plan
        .plan
        .changes
        .iter()
        .filter(|c| c.action != Change::Delete)
        .map(|c| &c.address)
        .collect();
    let deleting: BTreeSet<&Address> = plan
        .plan
        .changes
        .iter()
        .filter(|c| c.action == Change::Delete)
        .map(|c| &c.address)
        .collect();
    let mut deps = BTreeMap::new();
    for change in &plan.plan.changes {
        let address = &change.address;
        let before: BTreeSet<Address> = if change.action == Change::Delete {
            // Everything converging first, then whatever still depends on us.
            let dependents = session
                .doc
                .resources
                .iter()
                .filter(|(key, record)| {
                    deleting.contains(key) && record.dependencies.contains(address)
                })
                .map(|(key, _)| key.clone());
            converging
                .iter()
                .map(|a| (*a).clone())
                .chain(dependents)
                .collect()
        } else {
            plan.configs
                .get(address)
                .map(|config| {
                    config
                        .depends_on
                        .iter()
                        .filter(|d| converging.contains(d))
                        .cloned()
                        .collect()
                })
                .unwrap_or_default()
        };
        deps.insert(address.clone(), before);
    }
    deps
}
