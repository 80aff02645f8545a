//! `prov state list | show | rm | pull | push | history | force-unlock |
//! migrate | encrypt | recover`.

use std::io::Read;

use anyhow::{bail, Context as _, Result};
use prov_state::{EmbeddedBackend, LockInfo, StateDocument};

use crate::cli::{Cli, StateCommand};
use crate::command::{Context, EXIT_OK};
use crate::session::StateSession;
mod migrate;
use migrate::migrate;

/// Runs one state subcommand.
pub async fn run(cli: &Cli, command: &StateCommand) -> Result<u8> {
    let ctx = Context::load(cli).await?;
    match command {
        StateCommand::List { json: true } => {
            let doc = latest(&ctx).await?;
            let list: Vec<serde_json::Value> = doc
                .resources
                .iter()
                .map(|(address, record)| {
                    serde_json::json!({
                        "address": address,
                        "provider": record.provider,
                        "kind": record.kind,
                        "id": record.id,
                        "status": record.status,
                    })
                })
                .collect();
            println!("{}", serde_json::to_string_pretty(&list)?);
        }
        StateCommand::List { json: false } => {
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
        StateCommand::History { prune, keep, json } => {
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
            let history = ctx.backend.history().await?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&history)?);
                return Ok(EXIT_OK);
            }
            println!("SERIAL\tWRITTEN\tBY\tRESOURCES");
            for entry in history {
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
        StateCommand::Mv { from, to } => {
            let from: prov_provider::Address = from.parse()?;
            let to: prov_provider::Address = to.parse()?;
            let moved = ctx
                .with_session(cli, "state mv", async |session| {
                    let mut session = session.lock().await;
                    let moved = session.doc.move_address(&from, &to)?;
                    session.save().await?;
                    anyhow::Ok(moved)
                })
                .await?;
            for (from, to) in moved {
                println!("Moved {from} to {to} (the real object is untouched).");
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
        spec: std::sync::Arc::new(spec.clone()),
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
