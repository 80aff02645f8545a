//! The cluster phase of planning: for each Kubernetes cluster, which
//! certificates and keys are new, reissued or removed (and why), and the
//! files each member would receive. Reads the cluster's material beside the
//! spec and decrypts it in memory; writes nothing (what apply issues is made
//! again, for real, by `crate::deploy::clusters`).

use std::collections::BTreeMap;
use std::net::IpAddr;

use anyhow::{Context as _, Result};
use chrono::{DateTime, Utc};
use prov_provider::Address;
use prov_state::StateDocument;
use serde::{Deserialize, Serialize};

use super::resources::{BuildOptions, ResourceDiff};
use crate::deploy::DeployContext;
use crate::kube::files::{host_files, HostFile};
use crate::kube::material::Store;
use crate::kube::model::Cluster;
use crate::kube::pki::issue::{issue, Material};
use crate::kube::pki::renewal::{self, Action};
use crate::secrets::Identities;
use crate::spec::kubernetes::ClusterSpec;
use crate::spec::Spec;

/// A certificate, key or secret of a cluster that changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertificateChange {
    /// The cluster.
    pub cluster: String,
    /// The item, as `kube-apiserver (cp)` or `kubernetes-ca`.
    pub item: String,
    /// `new`, `reissue` or `remove`.
    pub action: CertificateAction,
    /// Why, in words (`SANs changed: +10.0.0.5`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// What happens to a cluster's item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CertificateAction {
    /// Issued for the first time.
    New,
    /// Issued again.
    Reissue,
    /// No longer needed: deleted beside the spec.
    Remove,
}

/// One cluster as planned.
#[derive(Debug, Clone)]
pub struct ClusterPlan {
    /// The cluster, its members' addresses as state knows them now.
    pub cluster: Cluster,
    /// What happens to each of its items (kept ones included).
    pub changes: Vec<renewal::Change>,
    /// The files each member receives, by member: with the content they
    /// would have, and whether that content is the one there is now (false:
    /// it is issued at apply, so its exact bytes are not known yet).
    pub files: BTreeMap<Address, Vec<(HostFile, bool)>>,
}

impl ClusterPlan {
    /// The changes other than keeping, for the plan.
    #[must_use]
    pub fn certificate_changes(&self) -> Vec<CertificateChange> {
        self.changes
            .iter()
            .filter_map(|change| {
                let (action, reason) = match &change.action {
                    Action::Keep => return None,
                    Action::Issue => (CertificateAction::New, None),
                    Action::Remove => (CertificateAction::Remove, None),
                    Action::Reissue(_) => (
                        CertificateAction::Reissue,
                        Some(
                            change
                                .action
                                .to_string()
                                .trim_start_matches("reissue: ")
                                .to_owned(),
                        ),
                    ),
                };
                Some(CertificateChange {
                    cluster: self.cluster.name.clone(),
                    item: change.id.to_string(),
                    action,
                    reason,
                })
            })
            .collect()
    }
}

/// The IP addresses known for host `address`: the SSH override when it is
/// one, then its private, local and public addresses (the first is the node
/// IP). Each comes from the spec when the spec sets it (a host whose address
/// the spec changes is replaced with that address), else from what its
/// provider reported to state, unless `fresh` says the host is about to be
/// created or replaced (its new addresses are not known before it exists).
#[must_use]
pub fn host_ips(
    spec: &Spec,
    doc: &StateDocument,
    address: &Address,
    fresh: Option<&ResourceDiff>,
) -> Vec<IpAddr> {
    let mut ips: Vec<IpAddr> = Vec::new();
    let override_ip = spec
        .hosts
        .get(address)
        .and_then(|h| h.ssh.address.as_deref())
        .and_then(|a| a.parse().ok());
    let configured = spec
        .resources
        .iter()
        .find(|r| &r.address == address)
        .map(|r| &r.attributes);
    let recorded = doc
        .resources
        .get(address)
        .filter(|_| !fresh.is_some_and(|diff| diff.is_new(address)))
        .map(|r| &r.attributes);
    let ip = |attributes: Option<&prov_provider::Attributes>, name: &str| {
        attributes
            .and_then(|a| a.get(name))
            .and_then(serde_json::Value::as_str)
            .and_then(|v| v.parse::<IpAddr>().ok())
    };
    let attribute = |name: &str| ip(configured, name).or_else(|| ip(recorded, name));
    for ip in [
        override_ip,
        attribute("private_ip"),
        attribute("address"),
        attribute("public_ip"),
    ]
    .into_iter()
    .flatten()
    {
        if !ips.contains(&ip) {
            ips.push(ip);
        }
    }
    ips
}

/// The model of `spec`'s cluster as its members' addresses are known now
/// (`fresh`: the resource changes of a plan, whose new hosts' recorded
/// addresses are stale; `None` once they exist).
#[must_use]
pub fn model(
    spec: &Spec,
    cluster: &ClusterSpec,
    doc: &StateDocument,
    fresh: Option<&ResourceDiff>,
) -> Cluster {
    cluster.model(&spec.hosts, |address| host_ips(spec, doc, address, fresh))
}

/// The material store of `cluster`, beside the spec.
#[must_use]
pub fn store(spec: &Spec, cluster: &str) -> Store {
    let dir = spec
        .source
        .parent()
        .unwrap_or_else(|| std::path::Path::new("."));
    Store::new(dir, cluster)
}

/// Plans every cluster of the spec (none when destroying).
///
/// # Errors
/// When the material cannot be read or decrypted, or issuing in memory
/// fails.
pub fn plan(
    ctx: &DeployContext,
    doc: &StateDocument,
    resources: &ResourceDiff,
    options: &BuildOptions,
    now: DateTime<Utc>,
) -> Result<Vec<ClusterPlan>> {
    let spec: &crate::spec::Spec = &ctx.spec;
    if options.destroy || spec.kubernetes.is_empty() {
        return Ok(Vec::new());
    }
    let identities = Identities::load(&[], Some(ctx.identity()))?;
    let mut plans = Vec::new();
    for cluster_spec in spec.kubernetes.values() {
        let cluster = model(spec, cluster_spec, doc, Some(resources));
        let store = store(spec, &cluster.name);
        let existing = store
            .existing()
            .with_context(|| format!("reading cluster {}'s material", cluster.name))?;
        let changes = renewal::plan(&cluster, &existing, now);
        let material = if existing.public.is_empty() && existing.secrets.is_empty() {
            Material::default()
        } else {
            store.load(&identities).with_context(|| {
                format!(
                    "decrypting cluster {}'s material in {}",
                    cluster.name,
                    store.dir().display()
                )
            })?
        };
        // What apply would issue, made here in memory only to know each
        // file's shape; its new bytes are made again at apply.
        let tentative = issue(&cluster, &changes, material.clone(), now)
            .with_context(|| format!("issuing cluster {}'s material", cluster.name))?;
        // Every file as the material makes it now: a planned file equal to
        // one of them is known (a new member's CA certificate and
        // kubeconfigs are the other members').
        let now_files: Vec<HostFile> = cluster
            .members
            .iter()
            .filter_map(|member| host_files(&cluster, member, &material).ok())
            .flatten()
            .collect();
        let mut files = BTreeMap::new();
        for member in &cluster.members {
            let planned = host_files(&cluster, member, &tentative)
                .with_context(|| format!("the files of {} in {}", member.address, cluster.name))?
                .into_iter()
                .map(|file| {
                    let known = now_files.contains(&file);
                    (file, known)
                })
                .collect();
            files.insert(member.address.clone(), planned);
        }
        plans.push(ClusterPlan {
            cluster,
            changes,
            files,
        });
    }
    Ok(plans)
}
