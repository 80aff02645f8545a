//! `prov upload-secrets [--on SEL]`: write the selected hosts' secrets
//! again (Colmena's `upload-keys`), for example after a reboot emptied
//! `/run/keys`; no resource is touched and no system deployed.

use std::sync::Arc;

use anyhow::{bail, Result};
use prov_state::StateDocument;

use crate::cli::Cli;
use crate::cli_everyday::UploadSecretsArgs;
use crate::command::{Context, EXIT_OK};
use crate::deploy::DeployContext;
use crate::plan::resources::{BuildOptions, ResourceDiff};
use crate::plan::secrets_on_hosts::Presence;
use crate::plan::{self, SecretAction, SecretChange};
use crate::select::Selection;
use crate::ui::{self, Painter};

/// Uploads every secret of the selected hosts that exist, under the lock,
/// recording each in state.
pub async fn run(cli: &Cli, args: &UploadSecretsArgs) -> Result<u8> {
    let ctx = Context::load(cli).await?;
    // A pattern that matches no host is a typo, not an empty run.
    super::hosts::selected(&ctx.spec, &args.select.on)?;
    if ctx.spec.secrets.is_empty() {
        bail!("the spec has no [secrets]");
    }
    let deploy = DeployContext::new(&ctx.spec, true, cli.accept_new_host_keys)?;
    let options = BuildOptions {
        selection: Selection::parse(&args.select.on)?,
        ..BuildOptions::default()
    };
    let paint = Painter::for_stdout(cli.color);
    ctx.with_session(cli, "upload-secrets", async |session| {
        let changes = {
            let mut s = session.lock().await;
            if s.doc.secret_hmac_key.is_none() {
                s.doc.ensure_secret_key(crate::secrets::new_hmac_key()?);
            }
            let key = s.doc.secret_hmac_key.clone().unwrap_or_default();
            let planned = plan::secrets::plan(
                &deploy,
                &s.doc,
                &ResourceDiff::default(),
                &options,
                &key,
                &Presence::Reupload,
                // `[secrets]` only: a cluster's files are apply's.
                &[],
            )?;
            uploads_to_existing_hosts(&deploy, &s.doc, planned)
        };
        if changes.is_empty() {
            println!("No selected host that exists has a secret to upload.");
            return Ok(EXIT_OK);
        }
        let hosts = {
            let mut hosts: Vec<_> = changes.iter().map(|c| &c.address).collect();
            hosts.dedup();
            hosts.len()
        };
        let live = ui::Style::detect(cli.color).live_progress;
        let progress = Arc::new(crate::deploy::Progress::new(live));
        let parallelism = usize::from(args.parallelism);
        let clusters = Arc::default();
        let report = crate::deploy::apply(
            &deploy,
            &[],
            &changes,
            &clusters,
            session,
            parallelism,
            &progress,
        )
        .await;
        println!(
            "\n{} {} secret{} uploaded to {hosts} host{}.",
            paint.bold("Upload finished:"),
            report.secrets,
            if report.secrets == 1 { "" } else { "s" },
            if hosts == 1 { "" } else { "s" },
        );
        if report.interrupted.is_some() {
            return Err(anyhow::Error::new(crate::interrupt::Interrupted)
                .context("upload-secrets interrupted; state is saved and the lock released"));
        }
        if !report.failed.is_empty() {
            let lines: Vec<String> = report
                .failed
                .iter()
                .map(|(a, e)| format!("  {a}: {e:#}"))
                .collect();
            bail!(
                "{} host(s) failed:\n{}",
                report.failed.len(),
                lines.join("\n")
            );
        }
        Ok(EXIT_OK)
    })
    .await
}

/// The uploads of `planned` (deletions wait for `prov apply`) to hosts that
/// exist: a machine prov has not created yet gets its secrets when apply
/// creates it.
fn uploads_to_existing_hosts(
    deploy: &DeployContext,
    doc: &StateDocument,
    planned: Vec<SecretChange>,
) -> Vec<SecretChange> {
    let mut missing = std::collections::BTreeSet::new();
    let uploads = planned
        .into_iter()
        .filter(|change| change.action == SecretAction::Upload)
        .filter(|change| {
            let exists = deploy.spec.hosts.get(&change.address).is_some_and(|info| {
                !info.target.has_provider() || doc.resources.contains_key(&change.address)
            });
            if !exists {
                missing.insert(change.address.clone());
            }
            exists
        })
        .collect();
    for address in missing {
        eprintln!("{address}: not created yet; `prov apply` creates it with its secrets");
    }
    uploads
}
