//! `prov env …` (up, down, ls, extend, run, name) and `prov gc`: see
//! [`crate::environments`] for what an environment is.

mod gc;
mod location;
mod run;

use std::sync::Arc;

use anyhow::{bail, Context as _, Result};
use chrono::{DateTime, Utc};
use prov_state::{EnvironmentRecord, LockInfo, StateBackend, StateDocument};
use serde::Serialize;

use crate::cli::{ChangeArgs, Cli, SelectArgs};
use crate::cli_env::{EnvCommand, EnvDownArgs, EnvExtendArgs, EnvLsArgs};
use crate::command::apply::{self, Sink};
use crate::command::{Context, EXIT_OK};
use crate::deploy::DeployContext;
use crate::environments::{self, Status};
use crate::spec::Spec;
use location::Base;

pub use gc::run as gc;

/// How many environments' states `env ls` and `gc` read at once.
const READ_CONCURRENCY: usize = 32;

/// Runs `prov env …`.
pub async fn run(cli: &Cli, command: &EnvCommand) -> Result<u8> {
    match command {
        EnvCommand::Up(args) => {
            let spec = crate::spec::load(&cli.file)?;
            up(cli, &spec, &args.name, args.ttl, args.parallelism).await
        }
        EnvCommand::Down(args) => down(cli, args).await,
        EnvCommand::Ls(args) => ls(cli, args).await,
        EnvCommand::Extend(args) => extend(cli, args).await,
        EnvCommand::Run(args) => run::run(cli, args).await,
        EnvCommand::Name(args) => {
            println!("{}", environments::name::from_ref(&args.from_ref));
            Ok(EXIT_OK)
        }
    }
}

/// Change arguments for a run that asks nothing: everything, refreshed.
fn unattended(parallelism: u16) -> ChangeArgs {
    ChangeArgs {
        select: SelectArgs {
            refresh: true,
            ..SelectArgs::default()
        },
        auto_approve: true,
        parallelism,
    }
}

/// Brings the environment `name` of `spec` up (or converges it): records
/// it in its state first (owner, expiry, the providers' settings), then
/// applies the spec as it.
async fn up(
    cli: &Cli,
    spec: &Spec,
    name: &str,
    ttl: Option<std::time::Duration>,
    parallelism: u16,
) -> Result<u8> {
    let lifetime = spec.environments.ttl(ttl).map_err(anyhow::Error::msg)?;
    let backend =
        crate::command::context::open_environment_backend(spec, cli.state_dir.as_deref(), name)?;
    let settings =
        environments::recorded::record(&spec.providers, crate::providers::local_root_override())?;
    let now = crate::clock::now()?;
    let ctx = Context {
        spec: Arc::new(spec.clone()),
        backend: Arc::clone(&backend),
    };
    ctx.with_session(cli, &format!("env up {name}"), async |session| {
        let record = {
            let mut s = session.lock().await;
            let record = next_record(
                s.doc.environment.as_ref(),
                name,
                now,
                lifetime,
                ttl.is_some(),
                settings,
            )?;
            // Recorded before anything is created: whatever this run
            // makes, `env down` and `gc` know whose it is and how to reach it.
            s.doc.set_environment(Some(record.clone()));
            s.save().await?;
            record
        };
        println!(
            "Environment {name} (incarnation {}, owner {}), expires {}.",
            record.id,
            record.owner,
            prov_state::timestamp::format(&record.expires)
        );
        let env = Context {
            spec: Arc::new(spec.clone().in_environment(record)),
            backend: Arc::clone(&backend),
        };
        let deploy = DeployContext::new(&env.spec, true, cli.accept_new_host_keys)?;
        apply::converge_in(
            &env,
            cli,
            &unattended(parallelism),
            false,
            deploy,
            session,
            Sink::Stdout,
        )
        .await
    })
    .await
}

/// The record an `env up` at `now` writes, given the stored one.
fn next_record(
    stored: Option<&EnvironmentRecord>,
    name: &str,
    now: DateTime<Utc>,
    ttl: std::time::Duration,
    ttl_given: bool,
    settings: serde_json::Value,
) -> Result<EnvironmentRecord> {
    let until = |ttl| expiry(now, ttl);
    match stored {
        Some(record) if record.doomed => bail!(
            "environment `{name}` is being torn down (its `env run` was cancelled); \
             `prov gc --yes` or `prov env down {name}` finishes that, then bring it up again"
        ),
        Some(record) => {
            let expires = if ttl_given || record.expires <= now {
                until(ttl)?
            } else {
                record.expires
            };
            Ok(EnvironmentRecord {
                expires,
                settings,
                ..record.clone()
            })
        }
        None => Ok(EnvironmentRecord {
            name: name.to_owned(),
            id: uuid::Uuid::new_v4().to_string(),
            owner: environments::owner(),
            created: now,
            expires: until(ttl)?,
            doomed: false,
            settings,
        }),
    }
}

/// `now` plus `ttl`.
fn expiry(now: DateTime<Utc>, ttl: std::time::Duration) -> Result<DateTime<Utc>> {
    chrono::Duration::from_std(ttl)
        .ok()
        .and_then(|d| now.checked_add_signed(d))
        .context("the time to live is too long")
}

/// What tearing an environment down came to.
#[derive(Debug)]
enum Teardown {
    /// Everything destroyed and its state removed.
    Gone,
    /// There was no such environment.
    Absent,
}

/// Destroys everything the environment in `backend` made, from its state
/// alone, then removes its state; takes its lock (`take_over`: a lock whose
/// holder is provably gone is removed first).
async fn teardown(
    cli: &Cli,
    base: &Base,
    name: &str,
    backend: Arc<dyn StateBackend>,
    parallelism: u16,
    operation: &str,
    sink: Sink,
) -> Result<Teardown> {
    let Some(doc) = backend
        .read()
        .await
        .with_context(|| format!("reading {}", backend.describe()))?
    else {
        if let Some(holder) = backend.lock_holder().await? {
            bail!(
                "environment `{name}` has no state yet and its lock is held by {holder}: it is being brought up"
            );
        }
        return Ok(Teardown::Absent);
    };
    let (ctx, _) = base.teardown_context(&doc, Arc::clone(&backend))?;
    ctx.with_session(cli, operation, async |session| {
        let deploy = DeployContext::new(&ctx.spec, false, cli.accept_new_host_keys)?;
        apply::converge_in(
            &ctx,
            cli,
            &unattended(parallelism),
            true,
            deploy,
            session,
            sink,
        )
        .await?;
        let mut s = session.lock().await;
        if !s.doc.resources.is_empty() {
            bail!(
                "{} resource(s) of environment `{name}` are still in its state; it was kept",
                s.doc.resources.len()
            );
        }
        s.remove_when_closed();
        Ok(())
    })
    .await?;
    Ok(Teardown::Gone)
}

/// `prov env down NAME`.
async fn down(cli: &Cli, args: &EnvDownArgs) -> Result<u8> {
    let base = Base::load(cli, &args.location)?;
    let backend = base.environment_backend(&args.name)?;
    match teardown(
        cli,
        &base,
        &args.name,
        backend,
        args.parallelism,
        &format!("env down {}", args.name),
        Sink::Stdout,
    )
    .await?
    {
        Teardown::Gone => println!(
            "Environment {} is down: everything it made is destroyed and its state removed.",
            args.name
        ),
        Teardown::Absent => println!(
            "There is no environment {} in {}: nothing to do.",
            args.name,
            base.describe_state()
        ),
    }
    Ok(EXIT_OK)
}

/// `prov env extend NAME --ttl D`.
async fn extend(cli: &Cli, args: &EnvExtendArgs) -> Result<u8> {
    let base = Base::load(cli, &args.location)?;
    let ttl = base
        .spec
        .environments
        .ttl(Some(args.ttl))
        .map_err(anyhow::Error::msg)?;
    let backend = base.environment_backend(&args.name)?;
    let lock = backend
        .lock(
            LockInfo::for_this_process(&format!("env extend {}", args.name)),
            cli.lock_timeout,
        )
        .await?;
    crate::command::context::held(&*backend, lock, async |lock| {
        let mut doc = backend
            .read()
            .await?
            .with_context(|| format!("there is no environment `{}`", args.name))?;
        let mut record = doc
            .environment
            .clone()
            .with_context(|| format!("{} is not an environment's state", backend.describe()))?;
        if record.doomed {
            bail!("environment `{}` is being torn down", args.name);
        }
        let now = crate::clock::now()?;
        record.expires = expiry(now, ttl)?;
        let expires = record.expires;
        doc.set_environment(Some(record));
        doc.set_serial(doc.serial + 1);
        lock.write(&doc).await?;
        println!(
            "Environment {} now expires {} (its objects' prov:expires-at tags follow at the next `prov env up`).",
            args.name,
            prov_state::timestamp::format(&expires)
        );
        Ok(EXIT_OK)
    })
    .await
}

/// One environment as `env ls` and `gc` see it.
#[derive(Debug, Clone, Serialize)]
struct Listed {
    /// Its name.
    pub name: String,
    /// Its incarnation (`prov:env-id`).
    pub id: Option<String>,
    /// Who brought it up.
    pub owner: Option<String>,
    /// When.
    #[serde(with = "prov_state::timestamp::optional")]
    pub created: Option<DateTime<Utc>>,
    /// When it expires.
    #[serde(with = "prov_state::timestamp::optional")]
    pub expires: Option<DateTime<Utc>>,
    /// `active`, `expired`, `due`, `doomed`, or `creating` (no state yet,
    /// its lock held).
    pub status: String,
    /// How many resources its state holds.
    pub resources: usize,
    /// Who holds its lock, when someone does and it has no state yet.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub locked_by: Option<String>,
    /// Whether `gc` destroys it.
    #[serde(skip)]
    pub collectable: bool,
}

/// Every environment of `base`'s deployment, read at most
/// [`READ_CONCURRENCY`] at a time: one listing, then one read each.
async fn list(base: &Base, now: DateTime<Utc>) -> Result<Vec<Listed>> {
    let names = base.backend()?.environments().await?;
    let grace = base.spec.environments.gc_grace;
    let shared = Arc::new(base.clone());
    let permits = Arc::new(tokio::sync::Semaphore::new(READ_CONCURRENCY));
    let mut reads = tokio::task::JoinSet::new();
    for name in names {
        let base = Arc::clone(&shared);
        let permits = Arc::clone(&permits);
        reads.spawn(async move {
            let _permit = permits.acquire_owned().await?;
            let backend = base.environment_backend(&name)?;
            let doc = backend
                .read()
                .await
                .with_context(|| format!("reading {}", backend.describe()))?;
            listed_from(&*backend, name, doc.as_ref(), now, grace).await
        });
    }
    let mut listed = Vec::new();
    while let Some(read) = reads.join_next().await {
        if let Some(one) = read.context("reading an environment's state")?? {
            listed.push(one);
        }
    }
    listed.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(listed)
}

async fn listed_from(
    backend: &dyn StateBackend,
    name: String,
    doc: Option<&StateDocument>,
    now: DateTime<Utc>,
    grace: std::time::Duration,
) -> Result<Option<Listed>> {
    let Some(doc) = doc else {
        // No state: being created (its lock held), or removed a moment ago.
        return Ok(backend.lock_holder().await?.map(|holder| Listed {
            name,
            id: None,
            owner: None,
            created: None,
            expires: None,
            status: "creating".to_owned(),
            resources: 0,
            locked_by: Some(holder.to_string()),
            collectable: false,
        }));
    };
    let Some(record) = &doc.environment else {
        return Ok(None);
    };
    let status = Status::of(record, now, grace);
    Ok(Some(Listed {
        name,
        id: Some(record.id.clone()),
        owner: Some(record.owner.clone()),
        created: Some(record.created),
        expires: Some(record.expires),
        status: status.as_str().to_owned(),
        resources: doc.resources.len(),
        locked_by: None,
        collectable: status.collectable(),
    }))
}

/// `prov env ls`.
async fn ls(cli: &Cli, args: &EnvLsArgs) -> Result<u8> {
    let base = Base::load(cli, &args.location)?;
    let now = crate::clock::now()?;
    let listed = list(&base, now).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&listed)?);
        return Ok(EXIT_OK);
    }
    if listed.is_empty() {
        println!("No environments in {}.", base.describe_state());
        return Ok(EXIT_OK);
    }
    let time = |t: &Option<DateTime<Utc>>| {
        t.as_ref()
            .map_or_else(|| "-".to_owned(), prov_state::timestamp::format)
    };
    let rows: Vec<[String; 6]> = listed
        .iter()
        .map(|l| {
            [
                l.name.clone(),
                l.owner.clone().unwrap_or_else(|| "-".to_owned()),
                time(&l.created),
                time(&l.expires),
                l.status.clone(),
                l.resources.to_string(),
            ]
        })
        .collect();
    let header = ["NAME", "OWNER", "CREATED", "EXPIRES", "STATUS", "RESOURCES"];
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &[String]| {
        cells
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_owned()
    };
    println!("{}", line(&header.map(str::to_owned)));
    for row in &rows {
        println!("{}", line(row));
    }
    Ok(EXIT_OK)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_new_up_records_a_fresh_incarnation_and_a_later_one_keeps_it() {
        let now = prov_state::timestamp::parse("2026-01-01T00:00:00Z").unwrap();
        let hour = std::time::Duration::from_secs(3600);
        let first = next_record(None, "e", now, hour, false, serde_json::Value::Null).unwrap();
        assert_eq!(first.expires, now + chrono::Duration::hours(1));
        let later = now + chrono::Duration::minutes(10);
        let again = next_record(
            Some(&first),
            "e",
            later,
            2 * hour,
            false,
            serde_json::Value::Null,
        )
        .unwrap();
        assert_eq!(
            (again.id.as_str(), again.expires),
            (first.id.as_str(), first.expires)
        );
        let longer = next_record(
            Some(&first),
            "e",
            later,
            2 * hour,
            true,
            serde_json::Value::Null,
        )
        .unwrap();
        assert_eq!(longer.expires, later + chrono::Duration::hours(2));
        let other = next_record(None, "e", now, hour, false, serde_json::Value::Null).unwrap();
        assert_ne!(other.id, first.id);
        let doomed = EnvironmentRecord {
            doomed: true,
            ..first
        };
        assert!(next_record(
            Some(&doomed),
            "e",
            later,
            hour,
            true,
            serde_json::Value::Null
        )
        .is_err());
    }
}
