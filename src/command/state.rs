//! `prov state list | show | rm | pull | push | history | force-unlock |
//! migrate | encrypt | recover`.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context as _, Result};
use prov_state::{EmbeddedBackend, LockInfo, S3Settings, StateBackend, StateDocument, StateLock};

use crate::apply::StateSession;
use crate::cli::{Cli, StateCommand};
use crate::command::{Context, EXIT_OK};
use crate::spec::model::StateBackendSettings;

/// Runs one state subcommand.
pub async fn run(cli: &Cli, command: &StateCommand) -> Result<u8> {
    let ctx = Context::load(cli)?;
    match command {
        StateCommand::List => {
            for (address, record) in &latest(&ctx).await?.resources {
                let id = record.id.as_deref().unwrap_or("-");
                let status = serde_json::to_value(record.status)?;
                println!("{address}\t{id}\t{}", status.as_str().unwrap_or_default());
            }
        }
        StateCommand::Show { address, serial } => {
            let doc = match serial {
                Some(serial) => at_serial(&ctx, *serial).await?,
                None => latest(&ctx).await?,
            };
            match address {
                Some(address) => {
                    let record = doc
                        .resources
                        .get(&parse_address(address)?)
                        .with_context(|| format!("{address} is not in state"))?;
                    println!("{}", serde_json::to_string_pretty(record)?);
                }
                None if serial.is_some() => println!("{}", serde_json::to_string_pretty(&doc)?),
                None => bail!("name an address, or pass --serial N to show a whole version"),
            }
        }
        StateCommand::Pull { serial } => {
            let doc = match serial {
                Some(serial) => at_serial(&ctx, *serial).await?,
                None => latest(&ctx).await?,
            };
            println!("{}", serde_json::to_string_pretty(&doc)?);
        }
        StateCommand::History { prune, keep } => {
            if *prune {
                let keep = keep.or(ctx.spec.state.keep_versions).context(
                    "--prune needs --keep N, or `keep_versions = N` under [state] in the spec",
                )?;
                let pruned = ctx
                    .with_lock(cli, "state history --prune", async |lock| {
                        lock.prune(keep)
                            .await
                            .with_context(|| format!("pruning {}", ctx.backend.describe()))
                    })
                    .await?;
                eprintln!("Pruned {pruned} version(s); history keeps the newest {keep}.");
            }
            println!("SERIAL\tWRITTEN\tBY\tRESOURCES");
            for entry in ctx.backend.history().await? {
                println!(
                    "{}\t{}\t{}\t{}",
                    entry.serial,
                    prov_state::timestamp::format(&entry.written_at),
                    entry.written_by,
                    entry.resources
                );
            }
        }
        StateCommand::Rm { addresses } => {
            ctx.with_session(cli, "state rm", async |session| {
                let mut session = session.lock().await;
                for address in addresses {
                    // The host record (pinned key, system, secrets) goes too:
                    // a later resource at this address is another machine.
                    let forgotten = session.doc.forget(&parse_address(address)?);
                    if !forgotten.resource && !forgotten.host {
                        bail!("{address} is not in state (nothing was removed)");
                    }
                }
                session.save().await
            })
            .await?;
            for address in addresses {
                println!("Removed {address} from state (the real object is untouched).");
            }
        }
        StateCommand::Push { document, force } => {
            ctx.with_session(cli, "state push", async |session| {
                push(&mut *session.lock().await, document, *force).await
            })
            .await?;
        }
        StateCommand::ForceUnlock { id } => {
            ctx.backend.force_unlock(id).await?;
            println!("Released lock {id}.");
        }
        StateCommand::Migrate { to } => migrate(&ctx, cli, to).await?,
        StateCommand::Encrypt => encrypt_state(cli, &ctx.spec).await?,
        StateCommand::Recover => recover(cli, &ctx.spec).await?,
    }
    Ok(EXIT_OK)
}

/// An address given on the command line.
fn parse_address(address: &str) -> Result<prov_provider::Address> {
    address
        .parse()
        .with_context(|| format!("{address} is not in state"))
}

/// `prov state recover`: rebuilds a damaged embedded database from its copy.
async fn recover(cli: &Cli, spec: &crate::spec::Spec) -> Result<()> {
    let Some(dir) = super::context::embedded_dir(spec, cli.state_dir.as_deref()) else {
        bail!("`prov state recover` rebuilds an embedded state database; this spec's state is in S3, which keeps every version as its own object");
    };
    let backend = EmbeddedBackend::new(&dir);
    let recovered = backend
        .recover(LockInfo::for_this_process("state recover"))
        .await
        .with_context(|| format!("recovering the state in {}", dir.display()))?;
    println!(
        "Rebuilt {} from its copy: the state is at serial {} again. The damaged database is kept at {} (older versions are only there; delete it when you no longer need them).",
        dir.join("state.db").display(),
        recovered.serial,
        recovered.kept.display()
    );
    Ok(())
}

/// `prov state encrypt`: reads plaintext state and writes it back
/// encrypted to `[state] encrypt_to`, as a new serial.
async fn encrypt_state(cli: &Cli, spec: &crate::spec::Spec) -> Result<()> {
    if spec.state.encrypt_to.is_empty() {
        bail!("[state] has no `encrypt_to`: list the age recipients to encrypt state to first");
    }
    let backend = super::context::open_backend_encrypted(spec, cli.state_dir.as_deref(), true)?;
    let ctx = Context {
        spec: spec.clone(),
        backend,
    };
    let serial = ctx
        .with_lock(cli, "state encrypt", async |lock| {
            let mut doc = ctx.read_state().await?.with_context(|| {
                format!(
                    "no state yet in {}; nothing to encrypt",
                    ctx.backend.describe()
                )
            })?;
            let serial = doc
                .serial
                .checked_add(1)
                .context("the serial cannot grow past 18446744073709551615")?;
            doc.set_serial(serial);
            lock.write(&doc).await?;
            anyhow::Ok(doc.serial)
        })
        .await?;
    println!(
        "State serial {serial} is stored encrypted to {} recipient(s). Earlier versions in history stay as they were written; to keep no plaintext copy, `prov state migrate` to a new location and delete the old one.",
        spec.state.encrypt_to.len()
    );
    Ok(())
}

async fn latest(ctx: &Context) -> Result<StateDocument> {
    ctx.read_state()
        .await?
        .with_context(|| format!("no state yet in {}", ctx.backend.describe()))
}

async fn at_serial(ctx: &Context, serial: u64) -> Result<StateDocument> {
    ctx.backend.read_serial(serial).await?.with_context(|| {
        format!("no state version with serial {serial} (see `prov state history`)")
    })
}

/// Replaces state with the document in `file`: same lineage, and a serial not
/// older than the current one, unless `force`.
async fn push(session: &mut StateSession, file: &std::path::Path, force: bool) -> Result<()> {
    let text = if file.as_os_str() == "-" {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text)?;
        text
    } else {
        fs_err::read_to_string(file)?
    };
    let pushed: StateDocument = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a state document", file.display()))?;
    if pushed.serial >= u64::MAX - 1 {
        bail!(
            "{} has serial {}, too large to write another version after it; fix its `serial`",
            file.display(),
            pushed.serial
        );
    }
    if pushed.encrypted.is_some() {
        bail!(
            "{} is an encrypted envelope, not a state document; push the output of `prov state pull` (which decrypts)",
            file.display()
        );
    }
    let current = &session.doc;
    if !pushed.deployment.is_empty() && pushed.deployment != current.deployment && !force {
        bail!(
            "{} is the state of deployment `{}`, but the spec is for `{}`; pass --force to push it anyway",
            file.display(),
            pushed.deployment,
            current.deployment
        );
    }
    let has_state = current.serial > 0;
    if has_state && !force {
        if pushed.lineage != current.lineage {
            bail!(
                "lineage {} of the pushed document does not match the state's lineage {}; pass --force to replace it anyway",
                pushed.lineage,
                current.lineage
            );
        }
        if pushed.serial < current.serial {
            bail!(
                "the pushed document has serial {}, older than the state's serial {}; pass --force to replace it anyway",
                pushed.serial,
                current.serial
            );
        }
    }
    let lineage = if has_state {
        current.lineage.clone()
    } else {
        pushed.lineage.clone()
    };
    let serial = if has_state {
        current.serial
    } else {
        pushed.serial
    };
    // A pushed document never lowers the create counter: tokens stay unique.
    let creates = if has_state {
        pushed.creates.max(current.creates)
    } else {
        pushed.creates
    };
    session.doc = StateDocument {
        lineage,
        serial,
        creates,
        ..pushed
    };
    session.save().await?;
    println!(
        "Pushed {} as serial {}.",
        file.display(),
        session.doc.serial
    );
    Ok(())
}

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
            Self::S3(settings) => super::s3_backend::open(settings)?,
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
async fn migrate(ctx: &Context, cli: &Cli, to: &str) -> Result<()> {
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
            super::session::held(&*backend, target, async |target| {
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
