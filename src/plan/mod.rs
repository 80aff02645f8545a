//! Planning: what apply will do, computed from the spec and state without
//! changing either, and rendered for people (text) and machines (JSON,
//! docs/plan-json.md).
//!
//! One pipeline ([`plan`]), five phases, each returning its part of one
//! [`Plan`]:
//!
//! 1. [`refresh()`]: read the real objects behind state (drift, objects gone,
//!    interrupted creates settled by token); then the spec's `[[moved]]`
//!    entries move records to their new addresses, on a copy ([`moves`]:
//!    apply records them once the plan is confirmed);
//! 2. [`resources::diff`]: the resource changes that bring them to the spec;
//! 3. [`deploys::plan`]: the hosts that get a new NixOS system, and how much
//!    must travel;
//! 4. [`clusters::plan`]: each Kubernetes cluster's certificates and keys,
//!    and the files its members receive;
//! 5. [`secrets::plan`]: the secrets (and cluster files) to upload to or
//!    delete from hosts (the hosts are asked whether recorded files are
//!    still there: [`secrets_on_hosts`]).
//!
//! Planning writes nothing: not state, not the spec, not the disk. What apply
//! needs before it can plan (the deployer's key, the state's secret key) is
//! made by the command and handed in as [`Inputs`].

pub mod clusters;
pub mod deploys;
pub mod file;
pub mod graph;
mod model;
pub mod moves;
pub mod refresh;
mod render;
pub mod resources;
pub mod secrets;
pub mod secrets_on_hosts;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use anyhow::{Context as _, Result};
use prov_state::StateDocument;

pub use model::{
    DeployChange, Drift, DriftKind, Plan, ResourceChange, SecretAction, SecretChange, Summary,
    PLAN_FORMAT_VERSION,
};
pub use refresh::{refresh, Refreshed};
pub use render::render_text;
pub use resources::{build, BuildOptions};

use crate::deploy::DeployContext;
use crate::providers::Providers;
use file::PlanFile;

/// What planning reads.
#[derive(Debug, Clone, Copy)]
pub struct Inputs<'a> {
    /// State as stored (a new document when there is none), shared with
    /// the refreshed state until refresh changes it.
    pub doc: &'a Arc<StateDocument>,
    /// The providers of the spec's resources and of state's records.
    pub providers: &'a Providers,
    /// The spec (in `deploy.spec`), the deployer's key, the SSH pool.
    pub deploy: &'a DeployContext,
    /// Which resources, and whether to destroy.
    pub options: &'a BuildOptions,
    /// Read every recorded object (`--refresh`, the default); without it only
    /// interrupted creates are looked up.
    pub refresh: bool,
    /// The state's key for the secrets' keyed hashes (the stored one, or the
    /// one apply will store).
    pub secret_key: &'a str,
    /// The time certificates are judged at (`crate::clock::now`).
    pub now: chrono::DateTime<chrono::Utc>,
}

/// A plan and the refreshed state it was computed against.
#[derive(Debug)]
pub struct Planned {
    /// State after refresh: what apply starts from.
    pub refreshed: Refreshed,
    /// The plan, with the configuration of everything it creates or updates.
    pub plan: PlanFile,
}

/// Runs the five phases and assembles the plan.
///
/// # Errors
/// When a provider cannot be read, a system cannot be built, a host that
/// should exist cannot be asked, or a secret cannot be decrypted.
pub async fn plan(inputs: Inputs<'_>) -> Result<Planned> {
    let Inputs {
        doc,
        providers,
        deploy,
        options,
        refresh: full,
        secret_key,
        now,
    } = inputs;
    let spec: &crate::spec::Spec = &deploy.spec;
    let refreshed = if full {
        refresh(doc, providers, |_| true)
            .await
            .context("refreshing state")?
    } else {
        // Whatever --refresh says, an interrupted or failed create (a record
        // with a token and no id) is looked up by its token: else destroy
        // would forget an object that exists.
        let pending = |address: &prov_provider::Address| {
            doc.resources
                .get(address)
                .is_some_and(|r| r.id.is_none() && r.token.is_some())
        };
        refresh(doc, providers, pending)
            .await
            .context("looking up interrupted creates")?
    };
    // Phases 2 to 4 see the records at the addresses `[[moved]]` gives
    // them; apply records the moves once the plan is confirmed.
    let (moved_state, moved) = moves::apply(&spec.moved, &refreshed)?;
    let desired = resources::desired(spec, deploy.deployer_key());
    let resources = resources::diff(spec, &desired, &moved_state, providers, options)?;
    let systems = deploys::plan(deploy, &moved_state.doc, &resources, options, full)
        .await
        .context("planning system deploys")?;
    let presence = if full && !options.destroy {
        secrets_on_hosts::ask(deploy, &moved_state.doc, &resources, options).await
    } else {
        secrets_on_hosts::Presence::Trusted
    };
    let clusters = clusters::plan(deploy, &moved_state.doc, &resources, options, now)
        .context("planning Kubernetes certificates")?;
    let secrets = secrets::plan(
        deploy,
        &moved_state.doc,
        &resources,
        options,
        secret_key,
        &presence,
        &clusters,
    )?;
    providers.log_api_calls();
    let certificates = clusters
        .iter()
        .flat_map(clusters::ClusterPlan::certificate_changes)
        .collect();
    let mut plan = resources::assemble(
        spec,
        &moved_state,
        options,
        resources,
        systems,
        secrets,
        certificates,
    );
    plan.plan.moved = moved;
    Ok(Planned { refreshed, plan })
}
