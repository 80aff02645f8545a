//! `prov plan`, and the planning steps apply and destroy share.

use anyhow::{Context as _, Result};
use prov_state::{StateDocument, StateLock};

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
    pub guard: Option<Box<dyn StateLock>>,
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
}

/// Locks state, refreshes it and plans. Unless `writes` (apply, destroy, a
/// plan saved to a file), nothing is created: no deployer key (the plan says
/// apply makes it) and, while no state exists, no state directory or lock.
pub(super) async fn prepare(
    ctx: &mut Context,
    cli: &Cli,
    select: &SelectArgs,
    destroy: bool,
    operation: &str,
    writes: bool,
) -> Result<Prepared> {
    let selection = Selection::parse(&select.on)?;
    let deploy = ctx.deploy_context(cli, writes)?;
    let ctx = &*ctx;
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
        let providers = ctx.providers(&doc).await?;
        let mut refreshed = if select.refresh {
            plan::refresh(&doc, &providers, |_| true)
                .await
                .context("refreshing state")?
        } else {
            // Whatever --refresh says, an interrupted or failed create (a
            // record with a token and no id) is looked up by its token:
            // else destroy would forget an object that exists.
            let pending = |address: &str| {
                doc.resources
                    .get(address)
                    .is_some_and(|r| r.id.is_none() && r.token.is_some())
            };
            plan::refresh(&doc, &providers, pending)
                .await
                .context("looking up interrupted creates")?
        };
        let options = BuildOptions { selection, destroy };
        let mut plan = plan::build(&ctx.spec, &refreshed, &providers, &options)?;
        crate::deploy::plan(
            &deploy,
            &refreshed.doc,
            &mut plan.plan,
            &options.selection,
            select.refresh,
        )
        .await
        .context("planning system deploys")?;
        crate::deploy::plan_secrets(
            &deploy,
            &mut refreshed.doc,
            &mut plan.plan,
            &options.selection,
        )?;
        providers.log_api_calls();
        anyhow::Ok((stored, refreshed, plan, providers))
    };
    // Planning only reads, so Ctrl-C may drop it anywhere; then the lock is
    // released below like after any other failure.
    let result = match crate::interrupt::unless_stopping(result).await {
        Ok(result) => result,
        Err(interrupted) => Err(interrupted.into()),
    };
    match result {
        Ok((stored, refreshed, plan, providers)) => Ok(Prepared {
            guard,
            stored,
            refreshed,
            plan,
            providers,
            deploy,
        }),
        Err(error) => {
            if let Some(guard) = guard {
                guard.unlock().await?;
            }
            Err(error)
        }
    }
}

/// Shows what apply would do.
pub async fn run(cli: &Cli, args: &PlanArgs) -> Result<u8> {
    let mut ctx = Context::load(cli)?;
    let prepared = prepare(
        &mut ctx,
        cli,
        &args.select,
        args.destroy,
        "plan",
        args.out.is_some(),
    )
    .await?;
    if let Some(guard) = prepared.guard {
        guard.unlock().await?;
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
