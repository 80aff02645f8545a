//! `prov rollback HOST [--generation N]`: switch a host back to an earlier
//! generation of its system profile.

use std::sync::Arc;

use anyhow::{bail, Context, Result};
use prov_provider::Address;
use tokio::sync::Mutex;

use super::profile::{current_system, PROFILE};
use super::target::host_endpoint;
use super::DeployContext;
use crate::session::StateSession;
use crate::spec::Goal;
use crate::ssh::shell_quote;

/// Rolls `address` back to the previous generation, or to `generation`, and
/// activates it with the host's goal; returns the system now active.
///
/// # Errors
/// When the host cannot be reached or the generation does not exist.
pub async fn rollback_host(
    ctx: &DeployContext,
    session: &Arc<Mutex<StateSession>>,
    address: &Address,
    generation: Option<u64>,
) -> Result<String> {
    let (info, endpoint) = host_endpoint(ctx, session, address).await?;
    let connection = ctx.pool.get(&endpoint).await?;
    let profile = shell_quote(PROFILE);
    let switch = match generation {
        Some(n) => format!("nix-env -p {profile} --switch-generation {n}"),
        None => format!("nix-env -p {profile} --rollback"),
    };
    // A rollback makes the profile's generation the running system: a
    // host deployed with `test` or `dry-activate` is switched.
    let goal = match info.deploy.as_ref().map(|d| d.goal) {
        Some(goal) if goal.sets_profile() => goal,
        _ => Goal::Switch,
    };
    let command = connection.privileged(&format!(
        "set -e; {switch}; \"$(readlink -f {profile})/bin/switch-to-configuration\" {goal}"
    ));
    let output = connection.exec(&command).await?;
    if !output.success() {
        bail!(
            "rolling back {address} failed ({}): {}",
            super::copy::status_text(&output),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    let now = current_system(&connection)
        .await?
        .with_context(|| format!("{address} has no system profile after the rollback"))?;
    let link = connection
        .exec(&connection.privileged(&format!("readlink {profile}")))
        .await?;
    let generation = String::from_utf8_lossy(&link.stdout)
        .trim()
        .strip_prefix("system-")
        .and_then(|s| s.strip_suffix("-link"))
        .and_then(|n| n.parse().ok());
    let mut s = session.lock().await;
    s.doc.record_rolled_back(
        address,
        prov_state::Deployed {
            system: now.clone(),
            goal,
            generation,
            at: prov_state::timestamp::now(),
        },
    );
    s.save().await?;
    Ok(now)
}
