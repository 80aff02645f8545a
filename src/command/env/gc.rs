//! `prov gc`: destroys environments past their expiry plus the grace, and
//! doomed ones; with `--orphans`, also deletes objects tagged with this
//! deployment whose environment (or incarnation) is gone from state. A dry
//! run unless `--yes`, and what a dry run lists is exactly what `--yes`
//! destroys.

use std::collections::BTreeSet;

use anyhow::{bail, Result};
use chrono::{DateTime, Utc};
use prov_provider::Marked;
use prov_state::LockInfo;
use serde::Serialize;

use super::location::Base;
use super::{list, teardown, Listed, Teardown};
use crate::cli::Cli;
use crate::cli_env::GcArgs;
use crate::command::apply::Sink;
use crate::command::EXIT_OK;
use crate::environments::{TAG_ENV, TAG_ENV_ID, TAG_EXPIRES_AT};
use crate::providers::{Providers, Target};

/// An object tagged with this deployment whose environment is gone.
#[derive(Debug, Clone, Serialize)]
struct Orphan {
    /// The provider that made it.
    provider: String,
    /// Its kind.
    kind: String,
    /// Its provider id.
    id: String,
    /// The environment its tags name.
    env: String,
    /// The incarnation its tags name.
    env_id: Option<String>,
    /// Its `prov:expires-at`, when it has one.
    expires_at: Option<String>,
    /// When it was made, when the provider knows.
    created: Option<String>,
    /// Why it is an orphan.
    reason: String,
    /// What `--yes` did: `deleted`, or the error.
    #[serde(skip_serializing_if = "Option::is_none")]
    result: Option<String>,
}

/// One environment gc destroys (or would).
#[derive(Debug, Serialize)]
struct Collected {
    #[serde(flatten)]
    env: Listed,
    /// What `--yes` did: `destroyed`, `skipped: …`, or the error.
    #[serde(skip_serializing_if = "Option::is_none")]
    result: Option<String>,
}

/// What gc reports.
#[derive(Debug, Serialize)]
struct Report {
    dry_run: bool,
    environments: Vec<Collected>,
    orphans: Vec<Orphan>,
    /// Providers that cannot search by tags (their orphans are not looked for).
    not_searched: Vec<String>,
    /// Set when `--max-deletions` stopped the run.
    #[serde(skip_serializing_if = "Option::is_none")]
    stopped: Option<String>,
}

/// Runs `prov gc`.
pub async fn run(cli: &Cli, args: &GcArgs) -> Result<u8> {
    let base = Base::load(cli, &args.location)?;
    let now = crate::clock::now()?;
    let listed = list(&base, now).await?;
    // The providers searched for orphans are the ones that delete them.
    let providers = if args.orphans {
        if !base.from_file {
            bail!("`prov gc --orphans` needs the spec (its deployment and providers): run it where {} is", cli.file.display());
        }
        orphan_providers(&base).await?
    } else {
        Providers::default()
    };
    let (orphans, not_searched) = if args.orphans {
        orphans(&base, &providers, &listed, now, args.min_age).await?
    } else {
        (Vec::new(), Vec::new())
    };
    let mut report = Report {
        dry_run: !args.yes,
        environments: listed
            .into_iter()
            .filter(|l| l.collectable)
            .map(|env| Collected { env, result: None })
            .collect(),
        orphans,
        not_searched,
        stopped: None,
    };
    let mut failed = false;
    if args.yes {
        let mut budget = args.max_deletions.unwrap_or(usize::MAX);
        for collected in &mut report.environments {
            if crate::interrupt::requested() {
                break;
            }
            if budget == 0 {
                report.stopped = Some("--max-deletions reached".to_owned());
                break;
            }
            budget -= 1;
            let sink = if args.json {
                Sink::Stderr
            } else {
                Sink::Stdout
            };
            let outcome = collect(cli, &base, &collected.env, args.parallelism, sink).await;
            collected.result = Some(match outcome {
                Ok(text) => text,
                Err(error) => {
                    failed = true;
                    format!("failed: {error:#}")
                }
            });
        }
        if !report.orphans.is_empty() && report.stopped.is_none() {
            for orphan in &mut report.orphans {
                if budget == 0 {
                    report.stopped = Some("--max-deletions reached".to_owned());
                    break;
                }
                budget -= 1;
                let deleted = match providers.get(&orphan.provider) {
                    Ok(p) => p
                        .delete(&orphan.kind, &orphan.id)
                        .await
                        .map_err(anyhow::Error::from),
                    Err(e) => Err(e),
                };
                orphan.result = Some(match deleted {
                    Ok(()) => "deleted".to_owned(),
                    Err(error) => {
                        failed = true;
                        format!("failed: {error:#}")
                    }
                });
            }
        }
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_report(&report);
    }
    if failed {
        bail!("gc did not finish: see the failures above (run it again, or `prov env down NAME`)");
    }
    Ok(EXIT_OK)
}

/// Destroys one environment, first removing a lock whose holder is
/// provably gone (a process of this machine that no longer runs).
async fn collect(
    cli: &Cli,
    base: &Base,
    env: &Listed,
    parallelism: u16,
    sink: Sink,
) -> Result<String> {
    let backend = base.environment_backend(&env.name)?;
    if let Some(holder) = backend.lock_holder().await? {
        if !holder_is_gone(&holder) {
            return Ok(format!(
                "skipped: locked by {holder}, not provably gone (`prov --env {} state force-unlock ID` once it is)",
                env.name
            ));
        }
        tracing::info!(lock = %holder, "taking over the lock of a run that is gone");
        backend.force_unlock(&holder.id).await?;
    }
    match teardown(
        cli,
        base,
        &env.name,
        backend,
        parallelism,
        &format!("gc {}", env.name),
        sink,
    )
    .await?
    {
        Teardown::Gone => Ok("destroyed".to_owned()),
        Teardown::Absent => Ok("already gone".to_owned()),
    }
}

/// Whether the lock's holder provably no longer runs: it was a process of
/// this machine (same `user@host`) and no process has its pid now. A
/// holder elsewhere is never presumed gone.
fn holder_is_gone(holder: &LockInfo) -> bool {
    if holder.who != LockInfo::for_this_process("gc").who {
        return false;
    }
    let Some(pid) = i32::try_from(holder.pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    else {
        return false;
    };
    matches!(
        rustix::process::test_kill_process(pid),
        Err(rustix::io::Errno::SRCH)
    )
}

/// The providers searched for orphans: every provider the spec uses or
/// configures.
async fn orphan_providers(base: &Base) -> Result<Providers> {
    let spec = &base.spec;
    let mut needed: BTreeSet<String> = spec.resources.iter().map(|r| r.provider.clone()).collect();
    if spec.providers.ec2.is_some() {
        needed.insert(Target::Ec2.name().to_owned());
    }
    Providers::for_spec(spec, &needed).await
}

/// The orphans among the objects tagged with this deployment, and the
/// providers that cannot search.
async fn orphans(
    base: &Base,
    providers: &Providers,
    listed: &[Listed],
    now: DateTime<Utc>,
    min_age: std::time::Duration,
) -> Result<(Vec<Orphan>, Vec<String>)> {
    let mut found = Vec::new();
    let mut not_searched = Vec::new();
    for name in providers.names() {
        let provider = providers.get(&name)?;
        match provider.find_marked(&base.spec.deployment).await? {
            None => not_searched.push(name.clone()),
            Some(marked) => {
                found.extend(
                    marked
                        .into_iter()
                        .filter_map(|m| orphan(&name, m, listed, now, min_age)),
                );
            }
        }
    }
    Ok((found, not_searched))
}

/// `marked` as an orphan, when its environment or incarnation is gone and
/// it is expired or older than `min_age`.
fn orphan(
    provider: &str,
    marked: Marked,
    listed: &[Listed],
    now: DateTime<Utc>,
    min_age: std::time::Duration,
) -> Option<Orphan> {
    // Objects of the deployment itself (no environment) are its state's.
    let env = marked.marks.get(TAG_ENV)?.clone();
    let env_id = marked.marks.get(TAG_ENV_ID).cloned();
    let reason = match listed.iter().find(|l| l.name == env) {
        // Being created under a live lock: never touched.
        Some(live) if live.id.is_none() => return None,
        Some(live) if live.id == env_id => return None,
        Some(live) => format!(
            "incarnation {} of environment {env} is gone (it is {} now)",
            env_id.as_deref().unwrap_or("?"),
            live.id.as_deref().unwrap_or("?")
        ),
        None => format!("environment {env} is gone"),
    };
    let parse = |t: &String| prov_state::timestamp::parse(t).ok();
    let expires = marked.marks.get(TAG_EXPIRES_AT).and_then(parse);
    let created = marked.created.as_ref().and_then(parse);
    let min_age = chrono::Duration::from_std(min_age).unwrap_or(chrono::Duration::MAX);
    let old = created.is_some_and(|c| c.checked_add_signed(min_age).is_some_and(|t| t <= now));
    if !(expires.is_some_and(|e| e <= now) || old) {
        return None;
    }
    Some(Orphan {
        provider: provider.to_owned(),
        kind: marked.kind,
        id: marked.id,
        env,
        env_id,
        expires_at: marked.marks.get(TAG_EXPIRES_AT).cloned(),
        created: marked.created,
        reason,
        result: None,
    })
}

fn print_report(report: &Report) {
    if report.environments.is_empty() && report.orphans.is_empty() {
        println!("Nothing to collect.");
    }
    if !report.environments.is_empty() {
        println!("Environments to destroy ({}):", report.environments.len());
        for c in &report.environments {
            let expires = c.env.expires.as_ref().map_or_else(String::new, |e| {
                format!(", expired {}", prov_state::timestamp::format(e))
            });
            let result = c
                .result
                .as_ref()
                .map_or_else(String::new, |r| format!(": {r}"));
            println!(
                "  {} ({}, {} resource(s){expires}){result}",
                c.env.name, c.env.status, c.env.resources
            );
        }
    }
    if !report.orphans.is_empty() {
        println!("Orphans to delete ({}):", report.orphans.len());
        for o in &report.orphans {
            let result = o
                .result
                .as_ref()
                .map_or_else(String::new, |r| format!(": {r}"));
            println!(
                "  {} {} {} ({}){result}",
                o.provider, o.kind, o.id, o.reason
            );
        }
    }
    if !report.not_searched.is_empty() {
        println!(
            "Not searched for orphans (these providers cannot find objects by tags): {}",
            report.not_searched.join(", ")
        );
    }
    if let Some(stopped) = &report.stopped {
        println!("Stopped: {stopped}.");
    }
    if report.dry_run && !(report.environments.is_empty() && report.orphans.is_empty()) {
        println!("Dry run: nothing was destroyed. `prov gc --yes` destroys exactly these.");
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn live(name: &str, id: Option<&str>) -> Listed {
        Listed {
            name: name.into(),
            id: id.map(Into::into),
            owner: None,
            created: None,
            expires: None,
            status: "active".into(),
            resources: 1,
            locked_by: None,
            collectable: false,
        }
    }

    fn marked(env: Option<&str>, id: &str, expires: Option<&str>, created: Option<&str>) -> Marked {
        let mut marks = std::collections::BTreeMap::new();
        marks.insert("prov:deployment".to_owned(), "d".to_owned());
        if let Some(env) = env {
            marks.insert(TAG_ENV.to_owned(), env.to_owned());
            marks.insert(TAG_ENV_ID.to_owned(), id.to_owned());
        }
        if let Some(e) = expires {
            marks.insert(TAG_EXPIRES_AT.to_owned(), e.to_owned());
        }
        Marked {
            kind: "instance".into(),
            id: "i-1".into(),
            marks,
            created: created.map(Into::into),
        }
    }

    #[test]
    fn only_expired_or_old_objects_of_gone_environments_are_orphans() {
        let now = prov_state::timestamp::parse("2026-01-01T12:00:00Z").unwrap();
        let hour = std::time::Duration::from_secs(3600);
        let envs = [live("a", Some("id-a")), live("b", None)];
        let past = Some("2026-01-01T11:00:00Z");
        let future = Some("2026-01-01T13:00:00Z");
        let is = |m: Marked| orphan("ec2", m, &envs, now, hour).is_some();
        // The deployment's own objects, live incarnations, and an
        // environment being created are never orphans.
        assert!(!is(marked(None, "", past, past)));
        assert!(!is(marked(Some("a"), "id-a", past, past)));
        assert!(!is(marked(Some("b"), "x", past, past)));
        // Gone environment or incarnation: expired, or older than min age.
        assert!(is(marked(Some("gone"), "x", past, None)));
        assert!(is(marked(Some("a"), "old-id", past, None)));
        assert!(is(marked(
            Some("gone"),
            "x",
            None,
            Some("2026-01-01T10:00:00Z")
        )));
        assert!(!is(marked(
            Some("gone"),
            "x",
            future,
            Some("2026-01-01T11:30:00Z")
        )));
        assert!(!is(marked(Some("gone"), "x", None, None)));
    }
}
