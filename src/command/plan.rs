//! `prov plan`, and the planning steps apply and destroy share.

use anyhow::Result;
use prov_state::{LockGuard, StateDocument};

use crate::cli::{Cli, PlanArgs, SelectArgs};
use crate::command::{Context, EXIT_CHANGES, EXIT_OK};
use crate::deploy::DeployContext;
use crate::plan::file::PlanFile;
use crate::plan::{self, BuildOptions, Refreshed};
use crate::providers::Providers;
use crate::select::Selection;
use crate::ui::Painter;

/// A plan ready to show or apply, with the lock still held.
#[derive(Debug)]
pub(super) struct Prepared {
    /// The lock on state (none for a plan that writes nothing over a state
    /// that does not exist yet).
    pub guard: Option<LockGuard>,
    /// State as stored before this run.
    pub stored: Option<StateDocument>,
    /// State after refresh.
    pub refreshed: Refreshed,
    /// The plan.
    pub plan: PlanFile,
    /// The providers used.
    pub providers: Providers,
    /// What deploys share (connections, keys).
    pub deploy: DeployContext,
    /// The state's key for the secrets' keyed hashes: the stored one, or a
    /// new one apply stores with its first save.
    pub secret_key: String,
}

/// Locks state, refreshes it and plans. Unless `writes` (apply, destroy, a
/// plan saved to a file), nothing is created: no deployer key (the plan says
/// apply makes it) and, while no state exists, no state directory or lock.
pub(super) async fn prepare(
    ctx: &Context,
    cli: &Cli,
    select: &SelectArgs,
    destroy: bool,
    operation: &str,
    writes: bool,
) -> Result<Prepared> {
    let options = BuildOptions {
        selection: Selection::parse(&select.on)?,
        destroy,
    };
    let deploy = DeployContext::new(&ctx.spec, writes, cli.accept_new_host_keys)?;
    let guard = if writes || ctx.read_state().await?.is_some() {
        Some(ctx.lock(cli, operation).await?)
    } else {
        None
    };
    let result = async {
        let stored = ctx.read_state().await?;
        let doc = stored
            .clone()
            .unwrap_or_else(|| StateDocument::new(&ctx.spec.deployment));
        let secret_key = match &doc.secret_hmac_key {
            Some(key) => key.clone(),
            None => crate::secrets::new_hmac_key()?,
        };
        let providers = ctx.providers(&doc).await?;
        let planned = plan::plan(plan::Inputs {
            doc: &doc,
            providers: &providers,
            deploy: &deploy,
            options: &options,
            refresh: select.refresh,
            secret_key: &secret_key,
        })
        .await?;
        anyhow::Ok((stored, planned, providers, secret_key))
    };
    // Planning only reads, so Ctrl-C may drop it anywhere; then the lock is
    // released below like after any other failure.
    let result = match crate::interrupt::unless_stopping(result).await {
        Ok(result) => result,
        Err(interrupted) => Err(interrupted.into()),
    };
    match result {
        Ok((stored, planned, providers, secret_key)) => Ok(Prepared {
            guard,
            stored,
            refreshed: planned.refreshed,
            plan: planned.plan,
            providers,
            deploy,
            secret_key,
        }),
        Err(error) => {
            if let Some(guard) = guard {
                ctx.backend.unlock(guard).await?;
            }
            Err(error)
        }
    }
}

/// Shows what apply would do.
pub async fn run(cli: &Cli, args: &PlanArgs) -> Result<u8> {
    let ctx = Context::load(cli)?;
    let prepared = prepare(
        &ctx,
        cli,
        &args.select,
        args.destroy,
        "plan",
        args.out.is_some(),
    )
    .await?;
    if let Some(guard) = prepared.guard {
        ctx.backend.unlock(guard).await?;
    }
    let plan = &prepared.plan;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&plan.plan)?);
    } else {
        print!(
            "{}",
            plan::render_text(&plan.plan, Painter::for_stdout(cli.color))
        );
    }
    if let Some(out) = &args.out {
        let mut saved = plan.clone();
        crate::deploy::secrets::record_sources(&ctx.spec, &mut saved.plan.secrets)?;
        saved.seal(&prepared.refreshed.doc, prepared.stored.as_ref())?;
        saved.save(out, &ctx.spec.state.encrypt_to)?;
        if !args.json {
            println!(
                "\nSaved the plan to {}. To carry it out exactly: prov apply {}",
                out.display(),
                out.display()
            );
        }
    }
    Ok(if args.detailed_exitcode && !plan.plan.is_empty() {
        EXIT_CHANGES
    } else {
        EXIT_OK
    })
}
