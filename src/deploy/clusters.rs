//! Apply's part for Kubernetes clusters: issue what the cluster's material
//! lacks or must renew (the hosts exist now, so their addresses are known),
//! save it age-encrypted beside the spec, and hand each member's files to
//! the secrets path, which uploads them like any secret.

use std::collections::BTreeMap;

use anyhow::{bail, Context as _, Result};
use chrono::{DateTime, Utc};
use prov_provider::Address;
use prov_state::StateDocument;

use super::gates::ClusterGates;
use super::DeployContext;
use crate::kube::files::{host_files, HostFile};
use crate::kube::model::Member;
use crate::kube::pki::issue::{issue, Material};
use crate::kube::pki::renewal::{self, Action};
use crate::plan::clusters::{model, store};
use crate::plan::secrets::cluster_file_name;
use crate::secrets::Identities;
use crate::spec::kubernetes::ClusterSpec;

/// The content of every cluster file, by host and name
/// (`kubernetes/CLUSTER/FILE`).
pub type ClusterFiles = BTreeMap<(Address, String), HostFile>;

/// The clusters of a run: every member's files, and each cluster's gates.
#[derive(Debug, Default)]
pub struct Clusters {
    /// Every member's files.
    pub files: ClusterFiles,
    /// Each cluster as its bring-up gates see it, by name.
    pub gates: BTreeMap<String, ClusterGates>,
}

impl Clusters {
    /// The cluster `address` is a member of, and the member.
    #[must_use]
    pub fn member(&self, address: &Address) -> Option<(&ClusterGates, &Member)> {
        self.gates
            .values()
            .find_map(|g| g.cluster.member_at(address).map(|m| (g, m)))
    }

    /// Whether `address` must wait for others: a worker (and no control
    /// plane) of a cluster whose control planes are among `hosts`.
    #[must_use]
    pub fn waits_for<'a>(
        &'a self,
        address: &Address,
        hosts: impl Iterator<Item = &'a Address> + Clone,
    ) -> Vec<Address> {
        let Some((gates, member)) = self.member(address) else {
            return Vec::new();
        };
        if member.is_control_plane() {
            return Vec::new();
        }
        gates
            .cluster
            .control_planes()
            .map(|m| &m.address)
            .filter(|a| hosts.clone().any(|h| h == *a))
            .cloned()
            .collect()
    }
}

/// Issues and saves each cluster's material as state knows the hosts now,
/// and returns every member's files and each cluster's gates.
///
/// # Errors
/// When the material cannot be read, decrypted, issued or saved.
pub fn prepare(ctx: &DeployContext, doc: &StateDocument, now: DateTime<Utc>) -> Result<Clusters> {
    let spec: &crate::spec::Spec = &ctx.spec;
    let mut out = Clusters::default();
    if spec.kubernetes.is_empty() {
        return Ok(out);
    }
    let identities = Identities::load(&[], Some(ctx.identity()))?;
    for cluster_spec in spec.kubernetes.values() {
        let cluster = model(spec, cluster_spec, doc, None);
        let store = store(spec, &cluster.name);
        let existing = store.existing()?;
        let changes = renewal::plan(&cluster, &existing, now);
        let material = if existing.public.is_empty() && existing.secrets.is_empty() {
            Material::default()
        } else {
            store
                .load(&identities)
                .with_context(|| format!("decrypting cluster {}'s material", cluster.name))?
        };
        let issued = issue(&cluster, &changes, material, now)
            .with_context(|| format!("issuing cluster {}'s material", cluster.name))?;
        if changes.iter().any(|c| c.action != Action::Keep) {
            let recipients = recipients(ctx, cluster_spec)?;
            store
                .save(&changes, &issued, &recipients)
                .with_context(|| format!("saving cluster {}'s material", cluster.name))?;
            tracing::info!(cluster = %cluster.name, dir = %store.dir().display(), "cluster material saved");
        }
        for member in &cluster.members {
            for file in host_files(&cluster, member, &issued)? {
                let name = cluster_file_name(&cluster.name, &file.path);
                out.files.insert((member.address.clone(), name), file);
            }
        }
        out.gates.insert(
            cluster.name.clone(),
            ClusterGates {
                cluster,
                material: issued,
                timeout: cluster_spec.gate_timeout,
            },
        );
    }
    Ok(out)
}

/// Who the cluster's private keys are encrypted to: the cluster's
/// `recipients`, else `[state] encrypt_to`, else the deployer's key (which
/// then decrypts them).
fn recipients(ctx: &DeployContext, cluster: &ClusterSpec) -> Result<Vec<String>> {
    if !cluster.recipients.is_empty() {
        return Ok(cluster.recipients.clone());
    }
    if !ctx.spec.state.encrypt_to.is_empty() {
        return Ok(ctx.spec.state.encrypt_to.clone());
    }
    match ctx.deployer_key() {
        Some(key) if key != super::PENDING_KEY => Ok(vec![key.to_owned()]),
        _ => bail!(
            "cluster {} has no one to encrypt its keys to: give [kubernetes.{}] recipients, or [state] encrypt_to",
            cluster.name,
            cluster.name
        ),
    }
}

/// The store directory of the modules prov generates for host `address`
/// (`kubernetes.nix`, its part in a cluster), as state knows the cluster
/// now; `None` for a host in no cluster. A configuration imports it as
/// `<prov/kubernetes.nix>`. `fresh`: a plan's resource changes (see
/// [`model`]).
///
/// # Errors
/// When Nix cannot add the directory to the store.
pub async fn modules(
    spec: &crate::spec::Spec,
    doc: &StateDocument,
    address: &Address,
    fresh: Option<&crate::plan::resources::ResourceDiff>,
) -> Result<Option<String>> {
    let Some(kube) = spec.hosts.get(address).and_then(|h| h.kubernetes.as_ref()) else {
        return Ok(None);
    };
    let Some(cluster_spec) = spec.kubernetes.get(&kube.cluster) else {
        return Ok(None);
    };
    let cluster = model(spec, cluster_spec, doc, fresh);
    let Some(member) = cluster.member_at(address) else {
        return Ok(None);
    };
    let module = crate::kube::nixos::module(&cluster, member);
    let name = format!("prov-modules-{}", member.node_name);
    super::nix::add_directory(&name, &[("kubernetes.nix", &module)])
        .await
        .map(Some)
        .with_context(|| format!("adding {address}'s Kubernetes module to the store"))
}
