//! `prov plan`, and the planning steps apply and destroy share.

use std::sync::Arc;

use anyhow::Result;
use prov_state::StateDocument;

use crate::cli::{Cli, PlanArgs, SelectArgs};
use crate::command::{Context, EXIT_CHANGES, EXIT_OK};
use crate::deploy::DeployContext;
use crate::plan::file::PlanFile;
use crate::plan::{self, BuildOptions, Refreshed};
use crate::providers::Providers;
use crate::select::Selection;
use crate::ui::Painter;

/// A plan ready to show or apply.
#[derive(Debug)]
pub(super) struct Prepared {
    /// State as stored before this run (shared with `refreshed` until
    /// refresh changes it).
    pub stored: Option<Arc<StateDocument>>,
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

/// Refreshes `stored` (read under the lock the caller holds) and plans.
pub(super) async fn prepare(
    ctx: &Context,
    select: &SelectArgs,
    destroy: bool,
    deploy: DeployContext,
    stored: Option<StateDocument>,
) -> Result<Prepared> {
    let stored = stored.map(Arc::new);
    let replace = select
        .replace
        .iter()
        .map(|a| a.parse())
        .collect::<Result<_, _>>()?;
    let options = BuildOptions {
        selection: Selection::parse(&select.on)?,
        destroy,
        replace,
    };
    let planning = async {
        let doc = stored
            .clone()
            .unwrap_or_else(|| Arc::new(StateDocument::new(&ctx.spec.deployment)));
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
            now: crate::clock::now()?,
        })
        .await?;
        anyhow::Ok((planned, providers, secret_key))
    };
    // Planning only reads, so Ctrl-C may drop it anywhere; the caller then
    // releases the lock like after any other failure.
    let (planned, providers, secret_key) = crate::interrupt::unless_stopping(planning).await??;
    Ok(Prepared {
        stored,
        refreshed: planned.refreshed,
        plan: planned.plan,
        providers,
        deploy,
        secret_key,
    })
}

/// Shows what apply would do. Unless the plan is saved to a file, nothing
/// is created: no deployer key (the plan says apply makes it) and, while no
/// state exists, no state directory or lock.
pub async fn run(cli: &Cli, args: &PlanArgs) -> Result<u8> {
    let ctx = Context::load(cli).await?;
    let writes = args.out.is_some();
    let deploy = DeployContext::new(&ctx.spec, writes, cli.accept_new_host_keys)?;
    let plan_stored = async |deploy| {
        let stored = ctx.read_state().await?;
        prepare(&ctx, &args.select, args.destroy, deploy, stored).await
    };
    // Whether state exists decides whether to lock; it is read (and whose
    // it is checked) once, under the lock.
    let mut prepared = if writes || ctx.state_exists().await? {
        ctx.with_lock(cli, "plan", async |_| plan_stored(deploy).await)
            .await?
    } else {
        plan_stored(deploy).await?
    };
    let changes = !prepared.plan.plan.is_empty();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&prepared.plan.plan)?);
    } else {
        print!(
            "{}",
            plan::render_text(&prepared.plan.plan, Painter::for_stdout(cli.color))
        );
    }
    if let Some(out) = &args.out {
        // Shown, the plan is made into the file as it is, not copied.
        let saved = &mut prepared.plan;
        crate::deploy::secrets::record_sources(&ctx.spec, &mut saved.plan.secrets)?;
        saved.seal(&prepared.refreshed.doc, prepared.stored.as_deref())?;
        saved.save(out, &ctx.spec.state.encrypt_to)?;
        if !args.json {
            println!(
                "\nSaved the plan to {}. To carry it out exactly: prov apply {}",
                out.display(),
                out.display()
            );
        }
    }
    Ok(if args.detailed_exitcode && changes {
        EXIT_CHANGES
    } else {
        EXIT_OK
    })
}
