//! `prov import ADDRESS ID`.

use anyhow::{bail, Context as _, Result};
use prov_provider::Address;
use prov_state::{NewResource, ResourceRecord, ResourceStatus};

use crate::cli::{Cli, ImportArgs};
use crate::command::{Context, EXIT_OK};

/// Records an existing object under an address of the spec.
pub async fn run(cli: &Cli, args: &ImportArgs) -> Result<u8> {
    let ctx = Context::load(cli).await?;
    let address: Address = args.address.parse()?;
    let config = ctx
        .spec
        .resources
        .iter()
        .find(|c| c.address == address)
        .with_context(|| format!("{address} is not in the spec; add it before importing"))?;
    ctx.with_session(cli, "import", async |session| {
        let mut session = session.lock().await;
        let existing = session.doc.resources.get(&address);
        match existing {
            Some(ResourceRecord { id: Some(id), .. }) => bail!(
                "{address} is already managed (id {id}); `prov state rm {address}` first to import another object"
            ),
            Some(ResourceRecord {
                status: ResourceStatus::Creating,
                ..
            }) => bail!(
                "{address} has an interrupted create pending; run `prov apply` to finish it (or `prov state rm {address}`) before importing"
            ),
            // A create that failed made no object: importing one is fine.
            _ => {}
        }
        // One object, one address: importing what another address manages
        // would have two records (and two destroys) for one machine.
        if let Some((other, _)) = session.doc.resources.iter().find(|(key, r)| {
            **key != address
                && r.provider == config.provider
                && r.kind == config.kind
                && r.id.as_deref() == Some(args.id.as_str())
        }) {
            bail!(
                "{} {} `{}` is already managed as {other}; `prov state rm {other}` first to move it to {address}",
                config.provider,
                config.kind,
                args.id
            );
        }
        let providers = ctx.providers(&session.doc).await?;
        let provider = providers.get(&config.provider)?;
        let mut found = provider
            .read(&config.kind, std::slice::from_ref(&args.id))
            .await
            .with_context(|| format!("reading {} {}", config.kind, args.id))?;
        let observed = found
            .remove(&args.id)
            .with_context(|| format!("no {} {} `{}` exists", config.provider, config.kind, args.id))?;
        let dependencies: Vec<Address> = config.depends_on.iter().cloned().collect();
        session.doc.record_imported(
            &address,
            NewResource {
                provider: &config.provider,
                kind: &config.kind,
                dependencies: &dependencies,
            },
            &observed.id,
            observed.attributes,
        );
        session.save().await?;
        println!("Imported {address} ({}). Run `prov plan` to see how it differs from the spec.", observed.id);
        anyhow::Ok(())
    })
    .await?;
    Ok(EXIT_OK)
}
