//! `prov rollback HOST [--generation N]`.

use anyhow::Result;
use prov_provider::Address;

use crate::cli::{Cli, RollbackArgs};
use crate::command::{Context, EXIT_OK};

/// Switches a host back to an earlier generation and records it.
pub async fn run(cli: &Cli, args: &RollbackArgs) -> Result<u8> {
    let ctx = Context::load(cli).await?;
    let address: Address = args.host.parse()?;
    let deploy = crate::deploy::DeployContext::new(&ctx.spec, true, cli.accept_new_host_keys)?;
    let now = ctx
        .with_session(cli, "rollback", async |session| {
            crate::deploy::rollback_host(&deploy, session, &address, args.generation).await
        })
        .await?;
    println!("{address} now runs {now}.");
    Ok(EXIT_OK)
}
