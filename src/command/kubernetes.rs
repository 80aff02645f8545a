//! `prov kubeconfig CLUSTER` and `prov k8s certs CLUSTER`: a cluster's admin
//! kubeconfig, and what its certificates say. Both read the material beside
//! the spec and the latest state (for the members' addresses); neither
//! changes anything.

use std::io::Write as _;

use anyhow::{bail, Context as _, Result};
use prov_state::StateDocument;
use serde_json::json;

use crate::cli::{Cli, K8sCommand, KubeconfigArgs};
use crate::command::{Context, EXIT_OK};
use crate::kube::model::Cluster;
use crate::kube::pki::inspect::inspect;
use crate::plan::clusters::{model, store};
use crate::secrets::Identities;

/// `prov kubeconfig CLUSTER [-o FILE]`.
pub async fn kubeconfig(cli: &Cli, args: &KubeconfigArgs) -> Result<u8> {
    let ctx = Context::load(cli).await?;
    let cluster = cluster(&ctx, &args.cluster).await?;
    let store = store(&ctx.spec, &cluster.name);
    let deployer = crate::command::context::state_identity(&ctx.spec);
    let identities = Identities::load(&[], deployer.as_deref())?;
    let material = store.load(&identities).with_context(|| {
        format!(
            "reading cluster {}'s material in {}",
            cluster.name,
            store.dir().display()
        )
    })?;
    let config = crate::kube::kubeconfig::admin(&cluster, &material)?;
    match &args.output {
        Some(path) => {
            crate::atomic::write_atomic(path, config.expose().as_bytes())
                .with_context(|| format!("writing {}", path.display()))?;
            eprintln!(
                "Wrote the admin kubeconfig of cluster {} to {} (it holds a private key: keep it private).",
                cluster.name,
                path.display()
            );
        }
        None => std::io::stdout().write_all(config.expose().as_bytes())?,
    }
    Ok(EXIT_OK)
}

/// `prov k8s …`.
pub async fn run(cli: &Cli, command: &K8sCommand) -> Result<u8> {
    match command {
        K8sCommand::Certs { cluster, json } => certs(cli, cluster, *json).await,
    }
}

/// Each certificate of a cluster, read from the public files beside the
/// spec (no key is decrypted).
async fn certs(cli: &Cli, name: &str, as_json: bool) -> Result<u8> {
    let ctx = Context::load(cli).await?;
    let cluster = cluster(&ctx, name).await?;
    let existing = store(&ctx.spec, &cluster.name).existing()?;
    let mut rows = Vec::new();
    for (id, pem) in &existing.public {
        // Public keys (the service-account pair) are not certificates.
        let Ok(info) = inspect(pem) else {
            continue;
        };
        let mut sans: Vec<String> = info.dns_names.iter().cloned().collect();
        sans.extend(info.ips.iter().map(ToString::to_string));
        let host = id
            .node
            .as_deref()
            .and_then(|node| cluster.member(node))
            .map(|m| m.address.to_string());
        rows.push(json!({
            "item": id.to_string(),
            "host": host,
            "subject": subject(info.common_name.as_deref(), info.organization.as_deref()),
            "sans": sans,
            "issuer": info.issuer_common_name,
            "not_after": prov_state::timestamp::format(&info.not_after),
        }));
    }
    if as_json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(EXIT_OK);
    }
    if rows.is_empty() {
        println!(
            "Cluster {} has no certificates yet (`prov apply` issues them).",
            cluster.name
        );
        return Ok(EXIT_OK);
    }
    println!("ITEM\tHOST\tSUBJECT\tSANS\tISSUER\tEXPIRES");
    for row in &rows {
        let text = |field: &str| row[field].as_str().unwrap_or("-").to_owned();
        let sans: Vec<&str> = row["sans"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(serde_json::Value::as_str)
            .collect();
        println!(
            "{}\t{}\t{}\t{}\t{}\t{}",
            text("item"),
            text("host"),
            text("subject"),
            if sans.is_empty() {
                "-".to_owned()
            } else {
                sans.join(",")
            },
            text("issuer"),
            text("not_after")
        );
    }
    Ok(EXIT_OK)
}

/// `CN=…, O=…`.
fn subject(common_name: Option<&str>, organization: Option<&str>) -> String {
    let mut parts = Vec::new();
    if let Some(cn) = common_name {
        parts.push(format!("CN={cn}"));
    }
    if let Some(o) = organization {
        parts.push(format!("O={o}"));
    }
    parts.join(", ")
}

/// The spec's cluster `name`, its members' addresses as the latest state
/// knows them.
async fn cluster(ctx: &Context, name: &str) -> Result<Cluster> {
    let Some(spec) = ctx.spec.kubernetes.get(name) else {
        let known: Vec<&str> = ctx.spec.kubernetes.keys().map(String::as_str).collect();
        bail!(
            "the spec has no cluster `{name}`{}",
            if known.is_empty() {
                String::new()
            } else {
                format!(" (it has: {})", known.join(", "))
            }
        );
    };
    let doc = ctx
        .read_state()
        .await?
        .unwrap_or_else(|| StateDocument::new(&ctx.spec.deployment));
    Ok(model(&ctx.spec, spec, &doc, None))
}
