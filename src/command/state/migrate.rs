//! `prov state migrate --to TARGET`: every version copied to another
//! backend (lineage, serials, and who wrote each when, kept), under both
//! locks.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context as _, Result};
use prov_state::{EmbeddedBackend, LockInfo, S3Settings, StateBackend, StateDocument, StateLock};

use crate::cli::Cli;
use crate::command::Context;
use crate::spec::model::StateBackendSettings;

/// Where `prov state migrate --to` moves the state.
#[derive(Debug)]
enum Target {
    /// `embedded:PATH` or a plain path.
    Embedded(PathBuf),
    /// `s3://BUCKET/KEY`.
    S3(S3Settings),
}

impl Target {
    /// Parses `to`. An S3 target takes region, endpoint and profile from the
    /// spec's current S3 settings, if any, else from the standard AWS chain.
    fn parse(ctx: &Context, to: &str) -> Result<Self> {
        if to.starts_with("s3://") {
            let mut settings = S3Settings::from_url(to).map_err(anyhow::Error::msg)?;
            if let StateBackendSettings::S3(current) = &ctx.spec.state.backend {
                settings.region.clone_from(&current.region);
                settings.endpoint.clone_from(&current.endpoint);
                settings.profile.clone_from(&current.profile);
            }
            return Ok(Self::S3(settings));
        }
        let path = to.strip_prefix("embedded:").unwrap_or(to);
        if path.is_empty() || path.contains("://") {
            bail!("`{to}` is not a state location: use s3://BUCKET/KEY, embedded:PATH or a directory path");
        }
        Ok(Self::Embedded(PathBuf::from(path)))
    }

    /// A backend on it.
    fn open(&self) -> Result<Arc<dyn StateBackend>> {
        Ok(match self {
            Self::Embedded(path) => Arc::new(EmbeddedBackend::new(path)),
            Self::S3(settings) => crate::command::s3_backend::open(settings)?,
        })
    }

    /// The `[state]` table that points a spec in `spec_dir` at it.
    fn spec_table(&self, spec_dir: &Path) -> String {
        match self {
            Self::Embedded(path) => {
                let cwd = std::env::current_dir().unwrap_or_default();
                let shown =
                    if path.is_relative() && (spec_dir.as_os_str().is_empty() || spec_dir == cwd) {
                        path.clone()
                    } else {
                        std::path::absolute(path).unwrap_or_else(|_| path.clone())
                    };
                format!(
                    "[state]\npath = {}\n",
                    toml_str(&shown.display().to_string())
                )
            }
            Self::S3(s) => {
                let mut table = format!(
                    "[state]\nbackend = \"s3\"\nbucket = {}\nkey = {}\n",
                    toml_str(&s.bucket),
                    toml_str(&s.key)
                );
                for (name, value) in [
                    ("region", &s.region),
                    ("endpoint", &s.endpoint),
                    ("profile", &s.profile),
                ] {
                    if let Some(value) = value {
                        table.push_str(&format!("{name} = {}\n", toml_str(value)));
                    }
                }
                table
            }
        }
    }
}

/// `s` as a TOML basic string.
fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

/// What a migration copied.
#[derive(Debug)]
enum Copied {
    /// The target already holds exactly this state.
    UpToDate { serial: u64 },
    /// These serials were written to the target, oldest first.
    Versions(Vec<u64>),
}

/// `prov state migrate --to TARGET`: copies every version (lineage and
/// serials kept) under both locks, refusing a target with state of another
/// lineage or a newer serial.
pub(super) async fn migrate(ctx: &Context, cli: &Cli, to: &str) -> Result<()> {
    let target = Target::parse(ctx, to)?;
    let mut backend = target.open()?;
    if !ctx.spec.state.encrypt_to.is_empty() {
        // Encrypted state stays encrypted where it moves to.
        backend = Arc::new(crate::secrets::state::EncryptedBackend::new(
            backend,
            ctx.spec.state.encrypt_to.clone(),
            None,
            false,
        ));
    }
    if backend.describe() == ctx.backend.describe() {
        println!(
            "The state already lives at {}; nothing to do.",
            backend.describe()
        );
        return Ok(());
    }
    // Both states stay locked while copying: the source first.
    let (doc, copied) = ctx
        .with_lock(cli, "state migrate", async |_source| {
            let target = backend
                .lock(
                    LockInfo::for_this_process("state migrate"),
                    cli.lock_timeout,
                )
                .await
                .with_context(|| format!("locking {}", backend.describe()))?;
            crate::command::context::held(&*backend, target, async |target| {
                copy_versions(ctx, &*backend, target).await
            })
            .await
        })
        .await?;
    let from = ctx.backend.describe();
    let to = backend.describe();
    match copied {
        Copied::UpToDate { serial } => println!(
            "{to} already holds this state (lineage {}, serial {serial}); nothing was copied.",
            doc.lineage
        ),
        Copied::Versions(serials) => {
            let first = serials.first().copied().unwrap_or(doc.serial);
            println!(
                "Migrated {} version(s) of deployment `{}` (serials {first}..={}, lineage {})\n  from {from}\n  to   {to}",
                serials.len(),
                doc.deployment,
                doc.serial,
                doc.lineage
            );
        }
    }
    let spec_dir = ctx.spec.source.parent().unwrap_or_else(|| Path::new(""));
    println!(
        "\nThe old state was left as it was. Now point the spec ({}) at the new location, replacing its [state] table with:\n\n{}\nthen check with `prov state pull` and `prov plan`, and remove the old state when you are sure.",
        ctx.spec.source.display(),
        target.spec_table(spec_dir)
    );
    Ok(())
}

/// Writes the source's versions the target lacks, through `lock` (held on
/// `target`); returns the latest document and what was copied.
async fn copy_versions(
    ctx: &Context,
    target: &dyn StateBackend,
    lock: &dyn StateLock,
) -> Result<(StateDocument, Copied)> {
    let latest = ctx
        .read_state()
        .await?
        .with_context(|| format!("no state to migrate in {}", ctx.backend.describe()))?;
    let existing = target
        .read()
        .await
        .with_context(|| format!("reading {}", target.describe()))?;
    let after = match &existing {
        None => None,
        Some(there) => {
            if there.lineage != latest.lineage {
                bail!(
                    "{} already holds state of another lineage ({}, deployment `{}`) than {} ({}); refusing to overwrite it",
                    target.describe(),
                    there.lineage,
                    there.deployment,
                    ctx.backend.describe(),
                    latest.lineage
                );
            }
            if there.serial > latest.serial {
                bail!(
                    "{} holds a newer serial ({}) than {} ({}); refusing to replace newer state with older (migrate in the other direction?)",
                    target.describe(),
                    there.serial,
                    ctx.backend.describe(),
                    latest.serial
                );
            }
            if there.serial == latest.serial {
                if there == &latest {
                    return Ok((
                        latest.clone(),
                        Copied::UpToDate {
                            serial: there.serial,
                        },
                    ));
                }
                bail!(
                    "{} holds serial {} with other content than {}; refusing to overwrite it",
                    target.describe(),
                    there.serial,
                    ctx.backend.describe()
                );
            }
            Some(there.serial)
        }
    };
    // The versions to copy: every stored serial after `after`, as one
    // unbroken run ending at the latest (a target write must carry the
    // previous serial plus one).
    let entries: std::collections::BTreeMap<u64, prov_state::HistoryEntry> = ctx
        .backend
        .history()
        .await?
        .into_iter()
        .map(|e| (e.serial, e))
        .collect();
    let mut serials: Vec<u64> = entries
        .keys()
        .copied()
        .filter(|s| *s <= latest.serial && after.is_none_or(|a| *s > a))
        .collect();
    serials.sort_unstable();
    serials.dedup();
    if serials.last() != Some(&latest.serial) {
        serials.push(latest.serial);
    }
    let run_start = serials
        .windows(2)
        .rposition(|w| w[1] != w[0] + 1)
        .map_or(0, |i| i + 1);
    if let Some(after) = after {
        if serials.first() != Some(&(after + 1)) || run_start != 0 {
            bail!(
                "{} lacks some versions between serial {after} and {} in its history; cannot bring {} up to date",
                ctx.backend.describe(),
                latest.serial,
                target.describe()
            );
        }
    } else if run_start > 0 {
        tracing::warn!(
            "history has a gap before serial {}; older versions are not copied",
            serials[run_start]
        );
    }
    let serials = serials.split_off(run_start);
    for &serial in &serials {
        let doc = if serial == latest.serial {
            latest.clone()
        } else {
            ctx.backend.read_serial(serial).await?.with_context(|| {
                format!("version {serial} vanished from {}", ctx.backend.describe())
            })?
        };
        // Keep when and by whom each version was written.
        let written = match entries.get(&serial) {
            Some(entry) => lock.write_copy(&doc, entry).await,
            None => lock.write(&doc).await,
        };
        written.with_context(|| format!("writing serial {serial} to {}", target.describe()))?;
    }
    Ok((latest, Copied::Versions(serials)))
}
