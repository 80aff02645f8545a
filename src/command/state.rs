//! `prov state list | show | rm | pull | push | history | force-unlock`.

use std::io::Read;

use anyhow::{bail, Context as _, Result};
use prov_state::StateDocument;

use crate::apply::StateSession;
use crate::cli::{Cli, StateCommand};
use crate::command::{Context, EXIT_OK};

/// Runs one state subcommand.
pub async fn run(cli: &Cli, command: &StateCommand) -> Result<u8> {
    let ctx = Context::load(cli)?;
    match command {
        StateCommand::List => {
            for (address, record) in latest(&ctx).await?.resources {
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
                        .get(address)
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
        StateCommand::History => {
            println!("SERIAL\tWRITTEN\tBY\tRESOURCES");
            for entry in ctx.backend.history().await? {
                println!(
                    "{}\t{}\t{}\t{}",
                    entry.serial, entry.written_at, entry.written_by, entry.resources
                );
            }
        }
        StateCommand::Rm { addresses } => {
            let mut session = session(&ctx, cli, "state rm").await?;
            let result = async {
                for address in addresses {
                    if session.doc.resources.remove(address).is_none() {
                        bail!("{address} is not in state (nothing was removed)");
                    }
                }
                session.save().await
            }
            .await;
            session.close().await?;
            result?;
            for address in addresses {
                println!("Removed {address} from state (the real object is untouched).");
            }
        }
        StateCommand::Push { file, force } => {
            let mut session = session(&ctx, cli, "state push").await?;
            let result = push(&mut session, file, *force).await;
            session.close().await?;
            result?;
        }
        StateCommand::ForceUnlock { id } => {
            ctx.backend.force_unlock(id).await?;
            println!("Released lock {id}.");
        }
    }
    Ok(EXIT_OK)
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

async fn session(ctx: &Context, cli: &Cli, operation: &str) -> Result<StateSession> {
    let guard = ctx.lock(cli, operation).await?;
    let stored = match ctx.read_state().await {
        Ok(stored) => stored,
        Err(error) => {
            ctx.backend.unlock(guard).await?;
            return Err(error);
        }
    };
    let doc = stored
        .clone()
        .unwrap_or_else(|| StateDocument::new(&ctx.spec.deployment));
    Ok(StateSession::new(
        std::sync::Arc::clone(&ctx.backend),
        guard,
        doc,
        stored,
    ))
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
    let current = &session.doc;
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
    session.doc = StateDocument {
        lineage,
        serial,
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
