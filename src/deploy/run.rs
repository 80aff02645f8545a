//! Carrying out deploys: per host, in parallel (bounded), connect, copy what
//! is missing, activate, confirm, check health, record in state.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::tasks::{Joined, Tasks};
use anyhow::{anyhow, bail, Context, Result};
use prov_provider::Address;
use tokio::sync::Mutex;

use super::activate::{self, Outcome, Started};
use super::clusters::Clusters;
use super::nix;
use super::secrets::{self as host_secrets, HostSecrets, Stage};
use super::target::{host_endpoint, recorded_endpoint, Endpoint};
use super::{copy, gates, health, DeployContext, Progress};
use crate::interrupt;
use crate::plan::{DeployChange, SecretChange};
use crate::session::StateSession;
use crate::spec::{Goal, OnFailure};
use crate::ssh::{Connection, SshError};

/// How long to keep trying to reach a host that was just created.
const REACH_LIMIT: Duration = Duration::from_secs(120);

/// What the deploys did.
#[derive(Debug, Default)]
pub struct DeployReport {
    /// Hosts now running their new system.
    pub deployed: Vec<Address>,
    /// Hosts that failed, with why (rollbacks included).
    pub failed: Vec<(Address, anyhow::Error)>,
    /// Hosts not started because an earlier one failed (`on_failure = "stop"`).
    pub skipped: Vec<Address>,
    /// Secrets uploaded or deleted.
    pub secrets: usize,
    /// Set when the run was interrupted: the hosts abandoned mid-deploy
    /// (an activation that prov no longer confirms rolls itself back).
    pub interrupted: Option<Vec<Address>>,
}

/// One host's work: a system deploy (with its secrets), or secrets only.
#[derive(Debug, Clone)]
enum Job {
    Deploy(DeployChange),
    Secrets(Address),
}

impl Job {
    fn address(&self) -> &Address {
        match self {
            Self::Deploy(change) => &change.address,
            Self::Secrets(address) => address,
        }
    }
}

/// Deploys every change of `deploys` and carries out the secret changes of
/// `secrets` (with the host's deploy, or on their own for hosts whose
/// system does not change), at most `parallelism` hosts at once.
pub async fn apply(
    ctx: &DeployContext,
    deploys: &[DeployChange],
    secrets: &[SecretChange],
    clusters: &Arc<Clusters>,
    session: &Arc<Mutex<StateSession>>,
    parallelism: usize,
    progress: &Arc<Progress>,
) -> DeployReport {
    let mut report = DeployReport::default();
    let mut queue: std::collections::VecDeque<Job> =
        deploys.iter().cloned().map(Job::Deploy).collect();
    let mut secret_hosts: Vec<Address> = secrets
        .iter()
        .map(|c| c.address.clone())
        .filter(|a| !deploys.iter().any(|d| &d.address == a))
        .collect();
    secret_hosts.dedup();
    queue.extend(secret_hosts.into_iter().map(Job::Secrets));
    // Decrypt everything first: a secret that cannot be decrypted stops the
    // run before anything is sent to any host.
    let values = match host_secrets::decrypt(ctx, secrets, session, &clusters.files).await {
        Ok(values) => Arc::new(values),
        Err(error) => {
            let mut hosts = queue.into_iter().map(|j| j.address().clone());
            if let Some(first) = hosts.next() {
                report.failed.push((first, error));
            }
            report.skipped = hosts.collect();
            progress.finish();
            return report;
        }
    };
    let secrets: Arc<[SecretChange]> = secrets.into();
    // Fill the cache once, before any host asks it; if that fails, every
    // host gets its paths over SSH as without a cache.
    let filled;
    let ctx = match fill_cache(ctx, deploys, progress).await {
        Ok(()) => ctx,
        Err(error) => {
            progress.note(&format!(
                "the cache could not be filled ({error:#}); copying over SSH instead"
            ));
            filled = DeployContext {
                cache: None,
                ..ctx.clone()
            };
            &filled
        }
    };
    // A Kubernetes worker starts once its cluster's control planes of this
    // run are up, gates passed; if one fails, it never starts.
    let deploying: Vec<Address> = deploys.iter().map(|d| d.address.clone()).collect();
    let mut waits: std::collections::BTreeMap<Address, Vec<Address>> = deploying
        .iter()
        .map(|a| (a.clone(), clusters.waits_for(a, deploying.iter())))
        .collect();
    let mut running = Tasks::default();
    let mut stopped = false;
    loop {
        while !stopped && !interrupt::requested() && running.len() < parallelism.max(1) {
            let ready = queue
                .iter()
                .position(|job| waits.get(job.address()).is_none_or(Vec::is_empty));
            let Some(job) = ready.and_then(|i| queue.remove(i)) else {
                break;
            };
            let clusters = Arc::clone(clusters);
            let ctx = ctx.clone();
            let session = Arc::clone(session);
            let progress = Arc::clone(progress);
            let values = Arc::clone(&values);
            let secrets = Arc::clone(&secrets);
            let address = job.address().clone();
            running.spawn(address, async move {
                let host = HostSecrets {
                    changes: &secrets,
                    values: &values,
                };
                match &job {
                    Job::Deploy(change) => {
                        deploy_one(&ctx, change, &host, &clusters, &session, &progress)
                            .await
                            .map(|n| (true, n))
                    }
                    Job::Secrets(address) => {
                        secrets_only(&ctx, address, &host, &session, &progress)
                            .await
                            .map(|n| (false, n))
                    }
                }
            });
        }
        let Some(joined) = running.next().await else {
            break;
        };
        match joined {
            Joined::Stopping => {
                report.interrupted.get_or_insert_with(Vec::new);
            }
            Joined::Done(address, Ok((deployed, secrets))) => {
                report.secrets += secrets;
                for waiting in waits.values_mut() {
                    waiting.retain(|a| a != &address);
                }
                if deployed {
                    report.deployed.push(address);
                }
            }
            Joined::Done(address, Err(error)) => {
                progress.phase(&address, &format!("FAILED: {error:#}"));
                report.failed.push((address, error));
                stopped = ctx.spec.deploy.on_failure == OnFailure::Stop;
            }
            Joined::Abandoned(address) => {
                progress.phase(&address, "abandoned after the interruption");
                report
                    .interrupted
                    .get_or_insert_with(Vec::new)
                    .push(address);
            }
            Joined::Panicked(address, panic) => {
                let error = anyhow!("internal error: the deploy of {address} panicked: {panic}");
                report.failed.push((address, error));
                stopped = true;
            }
        }
    }
    report.skipped = queue.into_iter().map(|j| j.address().clone()).collect();
    progress.finish();
    report
}

/// Uploads to the cache every path of the deploys' closures it lacks.
async fn fill_cache(
    ctx: &DeployContext,
    deploys: &[DeployChange],
    progress: &Progress,
) -> Result<()> {
    let Some((cache, key)) = &ctx.cache else {
        return Ok(());
    };
    if deploys.is_empty() {
        return Ok(());
    }
    let started = Instant::now();
    let mut paths = std::collections::BTreeSet::new();
    for change in deploys {
        let top = change.derivation.as_ref().unwrap_or(&change.desired);
        paths.extend(nix::closure(top).await?.paths);
    }
    let paths: Vec<String> = paths.into_iter().collect();
    let published = super::cache::publish(cache, key, &paths).await?;
    progress.note(&format!(
        "cache {}: uploaded {} of {} paths ({}) in {:.1}s",
        cache.url(),
        published.uploaded,
        published.paths,
        copy::human_bytes(published.bytes),
        started.elapsed().as_secs_f64()
    ));
    tracing::info!(
        uploaded = published.uploaded,
        bytes = published.bytes,
        "cache filled"
    );
    Ok(())
}

/// Uploads and deletes the secrets of a host whose system does not change.
async fn secrets_only(
    ctx: &DeployContext,
    address: &Address,
    secrets: &HostSecrets<'_>,
    session: &Arc<Mutex<StateSession>>,
    progress: &Progress,
) -> Result<usize> {
    let in_spec = ctx.spec.hosts.contains_key(address);
    let endpoint = if in_spec {
        host_endpoint(ctx, session, address).await?.1
    } else {
        recorded_endpoint(ctx, session, address).await?
    };
    progress.phase(address, &format!("connecting to {}", endpoint.describe()));
    let connection = reach(ctx, &endpoint).await?;
    record_keys(session, address, &endpoint, &connection).await?;
    let done =
        host_secrets::sync_host(&connection, address, secrets, Stage::All, session, progress)
            .await?;
    if !in_spec {
        // A host that left the spec, now cleaned: state forgets it.
        let mut s = session.lock().await;
        if s.doc
            .hosts
            .get(address)
            .is_some_and(|h| h.secrets.is_empty())
        {
            s.doc.forget_host(address);
            s.save().await?;
        }
    }
    Ok(done)
}

/// Deploys one host; returns how many secrets it uploaded or deleted.
async fn deploy_one(
    ctx: &DeployContext,
    change: &DeployChange,
    secrets: &HostSecrets<'_>,
    clusters: &Clusters,
    session: &Arc<Mutex<StateSession>>,
    progress: &Progress,
) -> Result<usize> {
    let address = &change.address;
    let (info, endpoint) = host_endpoint(ctx, session, address).await?;
    let deploy = info
        .deploy
        .as_ref()
        .with_context(|| format!("{address} has no system to deploy"))?;
    let goal = deploy.goal;
    let rebuilt = rebuild_with_cluster(ctx, change, deploy, session, progress).await?;
    let change = rebuilt.as_ref().unwrap_or(change);

    progress.phase(address, &format!("connecting to {}", endpoint.describe()));
    let connection = reach(ctx, &endpoint).await?;
    record_keys(session, address, &endpoint, &connection).await?;

    // Copy what the host lacks (the derivations, when it builds itself).
    let to_copy = change
        .derivation
        .clone()
        .unwrap_or_else(|| change.desired.clone());
    // What planning learnt, when this run planned it and nothing was
    // rebuilt since; else asked now.
    let planned = change
        .known
        .as_ref()
        .filter(|known| rebuilt.is_none() && known.closure.system == to_copy);
    // The plan's serve session, when this run planned it and it is still
    // the closure to copy.
    let kept = planned.and_then(|known| known.session.take());
    let (closure, mut missing) = match planned {
        Some(known) => (known.closure.clone(), known.missing.clone()),
        None => {
            let closure = nix::closure(&to_copy).await?;
            let missing = copy::missing(&connection, &closure).await?;
            (closure, missing)
        }
    };
    if deploy.substitute_on_destination && !missing.is_empty() {
        progress.phase(
            address,
            &format!("substituting {} paths on the host", missing.len()),
        );
        copy::substitute(&connection, &missing).await;
        missing = copy::missing(&connection, &closure).await?;
    }
    if let Some((cache, key)) = ctx.cache.as_ref().filter(|_| !missing.is_empty()) {
        let wanted = missing.len();
        progress.phase(
            address,
            &format!("substituting {wanted} paths from the cache {}", cache.url()),
        );
        copy::substitute_from(&connection, &missing, &cache.substituter, &key.public).await;
        missing = copy::missing(&connection, &closure).await?;
        if missing.is_empty() {
            progress.phase(
                address,
                &format!("substituted {wanted} paths from the cache"),
            );
        } else {
            tracing::warn!(host = %address, paths = missing.len(), "paths the cache did not give the host go over SSH");
            progress.phase(
                address,
                &format!(
                    "substituted {} paths from the cache; {} it lacks go over SSH",
                    wanted - missing.len(),
                    missing.len()
                ),
            );
        }
    }
    let total = closure.bytes_of(&missing);
    progress.phase(
        address,
        &format!(
            "copying {} paths ({})",
            missing.len(),
            copy::human_bytes(total)
        ),
    );
    let started = Instant::now();
    let count = missing.len();
    let tick = |sent: u64| {
        progress.tick(
            address,
            &format!(
                "copying {} paths: {} of {}",
                count,
                copy::human_bytes(sent),
                copy::human_bytes(total)
            ),
        );
    };
    let copied = copy::send(&connection, &ctx.exports, &closure, &missing, kept, &tick)
        .await
        .with_context(|| {
            if planned.is_some() {
                // The plan's answer was used: the host may have lost paths
                // since (a garbage collection); the next run asks again.
                format!(
                    "copying the closure to {address} (the {} paths the plan found missing; \
                     the next run asks the host again)",
                    count
                )
            } else {
                format!("copying the closure to {address}")
            }
        })?;
    progress.phase(
        address,
        &format!(
            "copied {} paths, {} in {:.1}s",
            copied.paths,
            copy::human_bytes(copied.bytes),
            started.elapsed().as_secs_f64()
        ),
    );
    tracing::info!(host = %address, paths = copied.paths, bytes = copied.bytes, "copied");

    if let Some(derivation) = &change.derivation {
        progress.phase(address, "building on the host");
        realise_on_host(&connection, derivation, &change.desired).await?;
    }

    // Secrets services need when they start go before activation.
    let mut uploaded = host_secrets::sync_host(
        &connection,
        address,
        secrets,
        Stage::Before,
        session,
        progress,
    )
    .await?;

    // Activate, unless the host already runs it (the helper looks).
    let started =
        activate::start(&connection, &change.desired, goal, deploy.confirm_timeout).await?;
    let activated = match started {
        Started::AlreadyActive => {
            progress.phase(address, "already active; nothing to activate");
            None
        }
        Started::Running(activation) => {
            progress.phase(address, &format!("activating ({})", goal.as_str()));
            match activate::finish(&connection, &endpoint, &activation).await? {
                Outcome::Confirmed { generation } => Some((activation, generation)),
                Outcome::RolledBack { reason, previous } => {
                    ctx.pool.drop_connection(address).await;
                    bail!("{address} {}: {reason}", rolled_back(previous.as_deref()));
                }
            }
        }
    };

    uploaded += host_secrets::sync_host(
        &connection,
        address,
        secrets,
        Stage::After,
        session,
        progress,
    )
    .await?;
    let Some((activation, generation)) = activated else {
        record_deployed(session, address, change, goal, None).await?;
        return Ok(uploaded);
    };

    let checked = async {
        if let Some(spec) = &info.health {
            progress.phase(address, "checking health");
            health::check(&connection, spec, &endpoint.target.host)
                .await
                .context("unhealthy")?;
        }
        if let Some((cluster, member)) = clusters.member(address) {
            for gate in gates::gates(&cluster.cluster, member) {
                progress.phase(address, &format!("waiting for gate: {gate}"));
                gates::pass(cluster, member, &gate, &connection).await?;
            }
        }
        anyhow::Ok(())
    };
    if let Err(error) = checked.await {
        if deploy.confirm_timeout.is_zero() {
            return Err(error.context(format!(
                "{address} failed its checks (rollback is off: confirm_timeout = 0)"
            )));
        }
        progress.phase(address, "checks failed; rolling back");
        let previous = activate::rollback(&connection, &activation).await?;
        bail!("{address} {}: {error:#}", rolled_back(previous.as_deref()));
    }
    record_deployed(session, address, change, goal, generation).await?;
    progress.phase(
        address,
        &format!("deployed {} ({})", change.desired, goal.as_str()),
    );
    Ok(uploaded)
}

/// The deploy of a host in a Kubernetes cluster whose generated module
/// changed since the plan (the hosts created since have addresses now):
/// the system built again with it. `None` when nothing changed.
async fn rebuild_with_cluster(
    ctx: &DeployContext,
    change: &DeployChange,
    deploy: &crate::spec::DeploySpec,
    session: &Arc<Mutex<StateSession>>,
    progress: &Progress,
) -> Result<Option<DeployChange>> {
    let Some(planned) = &change.modules else {
        return Ok(None);
    };
    let address = &change.address;
    let doc = session.lock().await.doc.clone();
    let now = super::clusters::modules(&ctx.spec, &doc, address, None).await?;
    if now.as_ref() == Some(planned) {
        return Ok(None);
    }
    progress.phase(
        address,
        "building again: the cluster's addresses are known now",
    );
    let super::build::Built {
        system, derivation, ..
    } = super::build::build_one(deploy, now.as_deref()).await?;
    tracing::info!(host = %address, planned = %change.desired, %system, "rebuilt with the cluster's module as it is now");
    Ok(Some(DeployChange {
        desired: system,
        derivation,
        modules: now,
        ..change.clone()
    }))
}

/// How a rollback ended, for the error: the system the host went back to,
/// or, after a failed first deploy, that there was none.
fn rolled_back(previous: Option<&str>) -> String {
    match previous {
        Some(previous) => format!("ROLLED BACK to {previous}"),
        None => "ROLLED BACK: no previous system to return to (the new generation was removed)"
            .to_owned(),
    }
}

/// Connects, retrying for a while if the host was only just created.
async fn reach(ctx: &DeployContext, endpoint: &Endpoint) -> Result<Arc<Connection>> {
    let started = Instant::now();
    loop {
        match ctx.pool.get(endpoint).await {
            Ok(connection) => return Ok(connection),
            Err(error) => {
                let refused_key =
                    SshError::find_in(&error).is_some_and(SshError::is_host_key_refusal);
                if refused_key || started.elapsed() > REACH_LIMIT {
                    return Err(error);
                }
                tracing::debug!("{} not reachable yet: {error:#}", endpoint.address);
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
    }
}

async fn realise_on_host(connection: &Connection, derivation: &str, expected: &str) -> Result<()> {
    let command = connection.privileged(&format!(
        "nix-store --realise {}",
        crate::ssh::shell_quote(derivation)
    ));
    let output = connection.exec(&command).await?;
    if !output.success() {
        bail!(
            "building {derivation} on the host failed:\n{}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    let built = String::from_utf8_lossy(&output.stdout);
    if !built.lines().any(|l| l.trim() == expected) {
        bail!("the host built {} instead of {expected}", built.trim());
    }
    Ok(())
}

/// Pins the keys this connection checked or accepted (the host's and its
/// jump host's) and records where the host was reached.
async fn record_keys(
    session: &Arc<Mutex<StateSession>>,
    address: &Address,
    endpoint: &Endpoint,
    connection: &Connection,
) -> Result<()> {
    let mut s = session.lock().await;
    s.doc.record_reached(
        address,
        super::target::reach_record(endpoint),
        connection.host_key(),
        connection.jump_host_key(),
    );
    s.save().await
}

async fn record_deployed(
    session: &Arc<Mutex<StateSession>>,
    address: &Address,
    change: &DeployChange,
    goal: Goal,
    generation: Option<u64>,
) -> Result<()> {
    let mut s = session.lock().await;
    s.doc.record_deployed(
        address,
        prov_state::Deployed {
            system: change.desired.clone(),
            goal,
            generation,
            at: prov_state::timestamp::now(),
        },
    );
    s.save().await
}
