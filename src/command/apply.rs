//! `prov apply` and `prov destroy`.

use std::io::Write;
use std::sync::Arc;

use tokio::sync::Mutex;

use anyhow::{bail, Result};
use prov_provider::{Address, Change, ProviderError};
use prov_state::StateDocument;

use crate::apply::{self, ApplyOptions, Event};
use crate::cli::{ApplyArgs, ChangeArgs, Cli, DestroyArgs};
use crate::command::plan::{prepare, Prepared};
use crate::command::{Context, EXIT_OK};
use crate::deploy::DeployContext;
use crate::plan::file::PlanFile;
use crate::plan::{self, Refreshed};
use crate::session::StateSession;
use crate::ssh::shell_quote;
use crate::ui::{self, Painter};

/// Converges the deployment (or carries out a saved plan).
pub async fn run(cli: &Cli, args: &ApplyArgs) -> Result<u8> {
    let ctx = Context::load(cli).await?;
    if args.plan_file.is_some() && !args.change.select.replace.is_empty() {
        bail!("a saved plan is carried out as it was made: plan again with --replace");
    }
    let saved = match &args.plan_file {
        Some(path) => Some((
            path.as_path(),
            load_plan(super::context::state_identity(&ctx.spec).as_deref(), path)?,
        )),
        None => None,
    };
    change(&ctx, cli, &args.change, saved, false).await
}

/// Destroys the deployment (or the selected resources).
pub async fn destroy(cli: &Cli, args: &DestroyArgs) -> Result<u8> {
    let ctx = Context::load(cli).await?;
    change(&ctx, cli, &args.change, None, true).await
}

/// Plans (or takes the `saved` plan), asks, and applies, under the lock:
/// apply converges, `destroy` destroys.
async fn change(
    ctx: &Context,
    cli: &Cli,
    args: &ChangeArgs,
    saved: Option<(&std::path::Path, PlanFile)>,
    destroy: bool,
) -> Result<u8> {
    let deploy = DeployContext::new(&ctx.spec, true, cli.accept_new_host_keys)?;
    // A saved plan was approved when it was made.
    let confirm = saved.is_none() && !args.auto_approve;
    let operation = if destroy { "destroy" } else { "apply" };
    ctx.with_session(cli, operation, async |session| {
        let stored = stored(session).await;
        let prepared = match saved {
            Some((path, plan)) => from_file(ctx, cli, path, plan, deploy, stored).await?,
            None => prepare(ctx, &args.select, destroy, deploy, stored).await?,
        };
        let parallelism = args.parallelism.into();
        execute(
            ctx,
            cli,
            prepared,
            session,
            confirm,
            parallelism,
            Sink::Stdout,
        )
        .await
    })
    .await
}

/// Plans and applies (or, with `destroy`, destroys) without asking, in a
/// session the caller holds: what `prov env up` and `prov env down` do
/// once they have the environment's lock.
pub(super) async fn converge_in(
    ctx: &Context,
    cli: &Cli,
    args: &ChangeArgs,
    destroy: bool,
    deploy: DeployContext,
    session: &Arc<Mutex<StateSession>>,
    sink: Sink,
) -> Result<u8> {
    let stored = stored(session).await;
    let prepared = prepare(ctx, &args.select, destroy, deploy, stored).await?;
    execute(
        ctx,
        cli,
        prepared,
        session,
        false,
        args.parallelism.into(),
        sink,
    )
    .await
}

/// State as the session read it, when any was stored (a stored version has
/// a serial of at least 1).
async fn stored(session: &Mutex<StateSession>) -> Option<StateDocument> {
    let s = session.lock().await;
    (s.doc.serial > 0).then(|| s.doc.clone())
}

/// Reads a saved plan, opening an encrypted one with `PROV_AGE_IDENTITY` or
/// the `deployer`'s key.
pub(super) fn load_plan(
    deployer: Option<&std::path::Path>,
    path: &std::path::Path,
) -> Result<PlanFile> {
    PlanFile::load(path, |sealed| {
        let identities = crate::secrets::Identities::load(&[], deployer)?;
        identities
            .decrypt(sealed)
            .map(|plaintext| zeroize::Zeroizing::new(plaintext.to_vec()))
            .map_err(|e| anyhow::anyhow!("{e}; identities tried: {}", identities.describe()))
    })
}

/// Checks a saved plan against the current state and makes it ready to
/// apply.
async fn from_file(
    ctx: &Context,
    cli: &Cli,
    path: &std::path::Path,
    mut plan: PlanFile,
    deploy: DeployContext,
    stored: Option<StateDocument>,
) -> Result<Prepared> {
    if plan.plan.spec_hash != ctx.spec.source_hash {
        bail!(
            "{} changed since the plan was made; run `prov plan --out {}` again",
            cli.file.display(),
            path.display()
        );
    }
    plan.check_against(stored.as_ref())?;
    plan.verify(stored.as_ref())?;
    // Start from the state the plan saw (refreshed then), not the stored
    // one; the state's key is the stored one (a plan file holds none).
    // Checked, the plan's copy is taken, not copied again.
    let mut doc = plan
        .prior
        .take()
        .or_else(|| stored.clone())
        .unwrap_or_else(|| StateDocument::new(&ctx.spec.deployment));
    doc.set_secret_key(stored.as_ref().and_then(|s| s.secret_hmac_key.clone()));
    let secret_key = match &doc.secret_hmac_key {
        Some(key) => key.clone(),
        None => crate::secrets::new_hmac_key()?,
    };
    let providers = ctx.providers(&doc).await?;
    Ok(Prepared {
        stored: stored.map(Arc::new),
        refreshed: Refreshed::unrefreshed(doc),
        plan,
        providers,
        deploy,
        secret_key,
    })
}

/// Shows the plan, asks, applies and saves outputs, with the state in
/// `session` (the lock is released by the caller).
async fn execute(
    ctx: &Context,
    cli: &Cli,
    prepared: Prepared,
    session: &Arc<Mutex<StateSession>>,
    confirm: bool,
    parallelism: usize,
    sink: Sink,
) -> Result<u8> {
    let Prepared {
        stored,
        refreshed,
        plan,
        providers,
        deploy,
        secret_key,
    } = prepared;
    // The stored document may share the refreshed one: let it go first, so
    // the session takes the refreshed document without copying it.
    drop(stored);
    {
        let mut s = session.lock().await;
        s.doc = Arc::unwrap_or_clone(refreshed.doc);
        // Every state applied to has a key: the secrets' keyed hashes and
        // the MACs that bind saved plans to it use it (the plan hashed with
        // it).
        s.doc.ensure_secret_key(secret_key);
    }
    let run = Run {
        plan: &plan,
        providers: &providers,
        deploy: &deploy,
        session,
        parallelism,
        sink,
    };
    apply_confirmed(ctx, cli, &run, confirm).await
}

/// Everything one apply works with.
struct Run<'a> {
    plan: &'a PlanFile,
    providers: &'a crate::providers::Providers,
    deploy: &'a crate::deploy::DeployContext,
    session: &'a Arc<Mutex<StateSession>>,
    parallelism: usize,
    /// Where the plan and progress go.
    sink: Sink,
}

/// Where an apply prints its plan and progress: standard output, or
/// standard error when standard output is a machine's (`prov gc --json`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sink {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

impl Sink {
    /// A writer to it.
    fn out(self) -> Box<dyn Write> {
        match self {
            Self::Stdout => Box::new(std::io::stdout()),
            Self::Stderr => Box::new(std::io::stderr()),
        }
    }
}

async fn apply_confirmed(ctx: &Context, cli: &Cli, run: &Run<'_>, confirm: bool) -> Result<u8> {
    let Run {
        plan,
        providers,
        deploy,
        session,
        parallelism,
        sink,
    } = *run;
    let paint = Painter::for_stdout(cli.color);
    let _ = write!(sink.out(), "{}", plan::render_text(&plan.plan, paint));
    // Keep what refresh learned (settled creates, objects gone) even when
    // there is nothing else to do.
    session.lock().await.save().await?;
    if plan.plan.is_empty() {
        finish_outputs(ctx, &mut *session.lock().await).await?;
        return Ok(EXIT_OK);
    }
    if confirm {
        if !ui::interactive() {
            bail!("refusing to change anything without confirmation: stdin is not a terminal; pass --auto-approve");
        }
        if !ui::confirm("Do you want to perform these actions?").await? {
            bail!("apply cancelled");
        }
    }
    if !plan.plan.moved.is_empty() {
        let mut s = session.lock().await;
        plan::moves::record(&mut s.doc, &plan.plan.moved)?;
        s.save().await?;
    }
    let _ = writeln!(sink.out());
    let options = ApplyOptions { parallelism };
    let report = apply::apply(plan, providers, session, options, move |event| {
        print_event(event, paint, sink);
    })
    .await?;
    finish_outputs(ctx, &mut *session.lock().await).await?;
    if let Some(abandoned) = &report.interrupted {
        return Err(interrupted(&report.summary(), abandoned, &report.skipped));
    }
    let deployed = if report.failed.is_empty()
        && !(plan.plan.deploys.is_empty() && plan.plan.secrets.is_empty())
    {
        let _ = writeln!(sink.out());
        let live = ui::Style::detect(cli.color).live_progress;
        let progress = Arc::new(crate::deploy::Progress::new(live));
        // The hosts exist now: the clusters' certificates can name them.
        let clusters = if plan.plan.certificates.is_empty()
            && plan.plan.secrets.iter().all(|s| s.cluster.is_none())
            && plan.plan.deploys.iter().all(|d| {
                deploy
                    .spec
                    .hosts
                    .get(&d.address)
                    .is_none_or(|h| h.kubernetes.is_none())
            }) {
            Arc::new(crate::deploy::clusters::Clusters::default())
        } else {
            let doc = session.lock().await.doc.clone();
            Arc::new(crate::deploy::clusters::prepare(
                deploy,
                &doc,
                crate::clock::now()?,
            )?)
        };
        let deploys = crate::deploy::apply(
            deploy,
            &plan.plan.deploys,
            &plan.plan.secrets,
            &clusters,
            session,
            parallelism,
            &progress,
        )
        .await;
        Some(deploys)
    } else {
        None
    };
    let deploy_summary = deployed.as_ref().map_or_else(String::new, |d| {
        let secrets = if d.secrets > 0 {
            format!(
                ", {} secret{} uploaded or deleted",
                d.secrets,
                if d.secrets == 1 { "" } else { "s" }
            )
        } else {
            String::new()
        };
        format!(
            ", {} host{} deployed{secrets}",
            d.deployed.len(),
            if d.deployed.len() == 1 { "" } else { "s" }
        )
    });
    let _ = writeln!(
        sink.out(),
        "\n{} {}{deploy_summary}.",
        paint.bold("Apply finished:"),
        report.summary()
    );
    if let Some(deploys) = &deployed {
        if let Some(abandoned) = &deploys.interrupted {
            let done = format!("{} host(s) deployed", deploys.deployed.len());
            return Err(interrupted(&done, abandoned, &deploys.skipped));
        }
        if !deploys.failed.is_empty() {
            let lines: Vec<String> = deploys
                .failed
                .iter()
                .map(|(a, e)| format!("  {a}: {e:#}"))
                .collect();
            let skipped = if deploys.skipped.is_empty() {
                String::new()
            } else {
                let names: Vec<String> = deploys.skipped.iter().map(ToString::to_string).collect();
                format!(
                    "\nnot started (on_failure = \"stop\"): {}",
                    names.join(", ")
                )
            };
            bail!(
                "{} host(s) failed to deploy:\n{}{skipped}",
                deploys.failed.len(),
                lines.join("\n")
            );
        }
    }
    if !report.failed.is_empty() {
        let names: Vec<String> = report.failed.iter().map(|(a, _)| a.to_string()).collect();
        let first = report
            .failed
            .first()
            .map(|(address, e)| match taken_hint(cli, address, e) {
                Some(hint) => format!("{e:#}\n{hint}"),
                None => format!("{e:#}"),
            })
            .unwrap_or_default();
        bail!(
            "{} resource(s) failed: {}; {} not attempted\nfirst error: {first}",
            names.len(),
            names.join(", "),
            report.skipped.len()
        );
    }
    Ok(EXIT_OK)
}

/// The error of an interrupted apply: what was done, what was abandoned in
/// flight, what never started.
fn interrupted(done: &str, abandoned: &[Address], skipped: &[Address]) -> anyhow::Error {
    let names = |list: &[Address]| {
        list.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut message = format!("apply interrupted: {done}; state is saved and the lock released");
    if !abandoned.is_empty() {
        message.push_str(&format!(
            "\nabandoned in flight (the next apply settles them): {}",
            names(abandoned)
        ));
    }
    if !skipped.is_empty() {
        message.push_str(&format!("\nnot started: {}", names(skipped)));
    }
    anyhow::Error::new(crate::interrupt::Interrupted).context(message)
}

/// When `error` is an object another state made (a local host directory
/// left by another checkout, say), exactly what to run about it: adopt it
/// into this state and destroy it, or only adopt it.
fn taken_hint(cli: &Cli, address: &Address, error: &anyhow::Error) -> Option<String> {
    let id = error.chain().find_map(|cause| match cause.downcast_ref() {
        Some(ProviderError::Taken { id, .. }) => Some(id.clone()),
        _ => None,
    })?;
    let mut prov = format!("prov -f {}", shell_quote(&cli.file.to_string_lossy()));
    if let Some(dir) = &cli.state_dir {
        prov.push_str(&format!(
            " --state-dir {}",
            shell_quote(&dir.to_string_lossy())
        ));
    }
    let address = shell_quote(&address.to_string());
    let id = shell_quote(&id);
    Some(format!(
        "No resource in this state owns it. To remove it, run:\n    \
         {prov} import {address} {id} && {prov} destroy --on {address} --auto-approve\n\
         or, to keep it and manage it from this state instead:\n    {prov} import {address} {id}"
    ))
}

async fn finish_outputs(ctx: &Context, session: &mut StateSession) -> Result<()> {
    let outputs = crate::outputs::compute(&ctx.spec.outputs, &session.doc);
    session.doc.set_outputs(outputs);
    session.save().await
}

fn print_event(event: &Event, paint: Painter, sink: Sink) {
    let verb = |action: Change, done: bool| match (action, done) {
        (Change::Create, false) => "creating…",
        (Change::Create, true) => "created",
        (Change::Update, false) => "updating…",
        (Change::Update, true) => "updated",
        (Change::Replace, false) => "replacing…",
        (Change::Replace, true) => "replaced",
        (Change::Delete, false) => "destroying…",
        (Change::Delete, true) => "destroyed",
        (Change::NoOp, _) => "unchanged",
    };
    let mut out = sink.out();
    let _ = match event {
        Event::Started { address, action } => writeln!(out, "{address}: {}", verb(*action, false)),
        Event::Finished {
            address,
            action,
            id,
            elapsed,
        } => {
            let id = id.as_ref().map(|i| format!(" ({i})")).unwrap_or_default();
            writeln!(
                out,
                "{address}: {}{id} [{:.1}s]",
                paint.green(verb(*action, true)),
                elapsed.as_secs_f64()
            )
        }
        Event::Failed {
            address,
            action,
            error,
        } => writeln!(
            out,
            "{address}: {} {} — {error}",
            paint.red("failed"),
            verb(*action, false).trim_end_matches('…')
        ),
    };
}
