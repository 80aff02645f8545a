//! Carrying out a plan: walk the dependency graph with bounded parallelism and
//! save state after every resource.
//!
//! Crash safety rests on one rule: before any create call, the resource is
//! recorded as `creating` together with an idempotency token derived from
//! lineage, address and generation, and that record is saved. The provider
//! passes the token to the API and tags the object with it, so after a crash
//! the next run finds the object by its token instead of creating a second one.

mod node;
mod schedule;

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::Result;
use prov_provider::{Address, Change};

use crate::plan::file::PlanFile;
use crate::providers::Providers;
pub use schedule::Event;

/// How to apply.
#[derive(Debug, Clone, Copy)]
pub struct ApplyOptions {
    /// At most this many resources at once.
    pub parallelism: usize,
}

/// What apply did.
#[derive(Debug, Default)]
pub struct ApplyReport {
    /// Completed changes by action.
    pub done: BTreeMap<Change, usize>,
    /// Resources that failed, with the error.
    pub failed: Vec<(Address, anyhow::Error)>,
    /// Resources not attempted because something they wait for failed, or
    /// because the run was interrupted.
    pub skipped: Vec<Address>,
    /// Set when the run was interrupted: the resources whose calls were
    /// abandoned in flight.
    pub interrupted: Option<Vec<Address>>,
}

impl ApplyReport {
    /// `3 created, 1 updated, 0 replaced, 2 destroyed`.
    #[must_use]
    pub fn summary(&self) -> String {
        let n = |c| self.done.get(&c).copied().unwrap_or(0);
        format!(
            "{} created, {} updated, {} replaced, {} destroyed",
            n(Change::Create),
            n(Change::Update),
            n(Change::Replace),
            n(Change::Delete)
        )
    }
}

/// Carries out `plan` against the state held by `session`.
///
/// # Errors
/// Only when state cannot be saved; failures of single resources are in the
/// report.
pub async fn apply(
    plan: &PlanFile,
    providers: &Providers,
    session: &Arc<tokio::sync::Mutex<crate::session::StateSession>>,
    options: ApplyOptions,
    on_event: impl Fn(&Event) + Send + Sync + 'static,
) -> Result<ApplyReport> {
    schedule::run(
        plan,
        providers,
        Arc::clone(session),
        options,
        Arc::new(on_event),
    )
    .await
}
