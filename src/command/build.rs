//! `prov build [--on SEL]`: build every selected host's system, as the next
//! apply would, and say where it is and how big; no host is asked, and state
//! is only read (for a Kubernetes member's generated module, which names its
//! cluster's addresses).

use std::collections::BTreeMap;

use anyhow::{bail, Result};
use prov_provider::Address;
use serde::Serialize;

use crate::cli::Cli;
use crate::cli_everyday::BuildArgs;
use crate::command::EXIT_OK;
use crate::deploy::build::{self, Built};

/// One built system and the hosts that run it.
#[derive(Debug, Serialize)]
struct Report {
    /// The hosts that get this system.
    hosts: Vec<Address>,
    /// The system's store path.
    system: String,
    /// With `build_on = "target"`: the derivation the hosts build.
    #[serde(skip_serializing_if = "Option::is_none")]
    derivation: Option<String>,
    /// Store paths in the closure (of the derivation, when the hosts build).
    paths: usize,
    /// NAR size of the closure, in bytes.
    bytes: u64,
}

/// Builds the selected systems and prints their store paths and closure
/// sizes.
pub async fn run(cli: &Cli, args: &BuildArgs) -> Result<u8> {
    let spec = crate::spec::load(&cli.file)?;
    let hosts: Vec<_> = super::hosts::selected(&spec, &args.select.on)?
        .into_iter()
        .filter_map(|(address, info)| info.deploy.as_ref().map(|d| (address, d)))
        .collect();
    if hosts.is_empty() {
        bail!("no selected host has a system to build (set `nix`, `flake` or `system` on a host)");
    }
    let mut modules: BTreeMap<Address, Option<String>> = BTreeMap::new();
    if !spec.kubernetes.is_empty() {
        let backend = crate::command::context::open_backend(&spec, cli.state_dir.as_deref())?;
        let doc = backend
            .read()
            .await?
            .unwrap_or_else(|| prov_state::StateDocument::new(&spec.deployment));
        for (address, _) in &hosts {
            let generated = crate::deploy::clusters::modules(&spec, &doc, address, None).await?;
            modules.insert((*address).clone(), generated);
        }
    }
    let generated = |address: &Address| modules.get(address).and_then(|m| m.as_deref());
    let built = build::build_each(
        hosts
            .iter()
            .map(|(address, deploy)| (*deploy, generated(address))),
    )
    .await?;
    let mut by_key: BTreeMap<String, Vec<Address>> = BTreeMap::new();
    for (address, deploy) in &hosts {
        by_key
            .entry(build::key(deploy, generated(address)))
            .or_default()
            .push((*address).clone());
    }
    let mut reports: Vec<Report> = by_key
        .into_iter()
        .filter_map(|(key, hosts)| built.get(&key).map(|b| report(hosts, b)))
        .collect();
    reports.sort_by(|a, b| a.hosts.cmp(&b.hosts));
    if args.json {
        println!("{}", serde_json::to_string_pretty(&reports)?);
        return Ok(EXIT_OK);
    }
    for report in &reports {
        let hosts: Vec<String> = report.hosts.iter().map(ToString::to_string).collect();
        let size = crate::deploy::human_bytes(report.bytes);
        match &report.derivation {
            None => println!(
                "{}: {} ({} paths, {size})",
                hosts.join(", "),
                report.system,
                report.paths
            ),
            Some(derivation) => println!(
                "{}: {} (built on the host from {derivation}; {} paths to copy, {size})",
                hosts.join(", "),
                report.system,
                report.paths
            ),
        }
    }
    Ok(EXIT_OK)
}

fn report(hosts: Vec<Address>, built: &Built) -> Report {
    Report {
        hosts,
        system: built.system.clone(),
        derivation: built.derivation.clone(),
        paths: built.closure.paths.len(),
        bytes: built.closure.bytes(),
    }
}
