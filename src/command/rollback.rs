//! `prov rollback HOST [--generation N]`.

use std::sync::Arc;

use anyhow::Result;
use prov_provider::Address;
use tokio::sync::Mutex;

use crate::cli::{Cli, RollbackArgs};
use crate::command::{Context, EXIT_OK};

/// Switches a host back to an earlier generation and records it.
pub async fn run(cli: &Cli, args: &RollbackArgs) -> Result<u8> {
    let ctx = Context::load(cli)?;
    let address: Address = args.host.parse()?;
    let deploy = crate::deploy::DeployContext::new(&ctx.spec, true, cli.accept_new_host_keys)?;
    let session = Arc::new(Mutex::new(ctx.session(cli, "rollback").await?));
    let result = crate::deploy::rollback_host(&deploy, &session, &address, args.generation).await;
    let session = Arc::try_unwrap(session)
        .map_err(|_| anyhow::anyhow!("internal error: the rollback still holds the state"))?
        .into_inner();
    session.close().await?;
    let now = result?;
    println!("{address} now runs {now}.");
    Ok(EXIT_OK)
}
