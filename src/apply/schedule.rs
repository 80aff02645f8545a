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
use tokio::task::JoinSet;

use super::node;
use super::{ApplyOptions, ApplyReport, StateSession};
use crate::interrupt;
use crate::plan::file::PlanFile;
use crate::providers::Providers;

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
    let mut running = JoinSet::new();
    let mut in_flight: BTreeMap<tokio::task::Id, (Address, Change)> = BTreeMap::new();
    let mut failed = false;
    let mut abandoned = false;
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
                let handle = running.spawn(async move {
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
                in_flight.insert(handle.id(), (address, action));
            }
        }
        let joined = tokio::select! {
            joined = running.join_next_with_id() => joined,
            // Stop starting work: loop round to wait for what runs.
            () = interrupt::stopping(), if report.interrupted.is_none() => {
                report.interrupted = Some(Vec::new());
                continue;
            }
            () = interrupt::abandoning(), if !abandoned && !running.is_empty() => {
                // Abandon calls in flight. Their records stay as they were
                // saved before the call (a create stays `creating` with its
                // token), which the next run settles.
                abandoned = true;
                running.abort_all();
                continue;
            }
        };
        let Some(joined) = joined else {
            break;
        };
        let (id, outcome) = match joined {
            Ok((id, outcome)) => (id, Ok(outcome)),
            Err(error) => (error.id(), Err(error)),
        };
        let Some((address, action)) = in_flight.remove(&id) else {
            continue;
        };
        match outcome {
            Ok((Ok(id), elapsed)) => {
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
            Ok((Err(error), _)) => {
                on_event(&Event::Failed {
                    address: address.clone(),
                    action,
                    error: format!("{error:#}"),
                });
                report.failed.push((address, error));
                failed = true;
            }
            Err(cancelled) if cancelled.is_cancelled() => {
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
            Err(panic) => {
                let error = anyhow::anyhow!(
                    "internal error: the {} of {address} panicked: {}",
                    verb(action),
                    panic_message(panic)
                );
                on_event(&Event::Failed {
                    address: address.clone(),
                    action,
                    error: format!("{error:#}"),
                });
                report.failed.push((address, error));
                failed = true;
            }
        }
    }
    report.skipped = waiting.into_keys().collect();
    Ok(report)
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

/// What a panicked task said, when it said it in words.
fn panic_message(error: tokio::task::JoinError) -> String {
    match error.try_into_panic() {
        Ok(payload) => payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "(no message)".to_owned()),
        Err(error) => error.to_string(),
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
