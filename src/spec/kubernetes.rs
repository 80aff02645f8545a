//! Kubernetes in the validated spec: each `[kubernetes.NAME]` cluster and
//! each host's part in one. Addresses and node IPs are not known here (a
//! host may not exist yet); [`ClusterSpec::model`] makes the cluster model
//! once they are.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::Duration;

use prov_provider::Address;

use super::model::HostInfo;
use crate::kube::cidr::Cidr;
use crate::kube::model::{ApiEndpoint, Cluster, Flavor, Member, Role};

/// One cluster, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterSpec {
    /// The name in `[kubernetes.NAME]`.
    pub name: String,
    /// Which NixOS module runs it.
    pub flavor: Flavor,
    /// Where clients reach the apiserver.
    pub api: ApiSpec,
    /// The services' range.
    pub service_cidr: Cidr,
    /// The pods' range.
    pub pod_cidr: Cidr,
    /// Renew certificates this long before they expire.
    pub renew_before: Duration,
    /// How long one bring-up gate may take to pass.
    pub gate_timeout: Duration,
    /// age recipients of the cluster's private keys beside the spec (empty:
    /// `[state] encrypt_to`, else the deployer's key).
    pub recipients: Vec<String>,
}

/// Where the apiserver is reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiSpec {
    /// At this control-plane host's address.
    Host(Address),
    /// At an explicit endpoint.
    Endpoint(ApiEndpoint),
}

/// A host's part in a cluster (`[hosts.NAME.kubernetes]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostKube {
    /// The cluster's name.
    pub cluster: String,
    /// What it runs.
    pub roles: BTreeSet<Role>,
    /// Node labels.
    pub labels: BTreeMap<String, String>,
}

/// The name a host registers as in its cluster: its own name, `-INDEX` for
/// a counted one (`node[1]` is `node-1`), as local hosts name themselves.
#[must_use]
pub fn node_name(address: &Address) -> String {
    address.machine_name()
}

impl ClusterSpec {
    /// The cluster model, with each member's IP addresses as `ips` knows
    /// them (a host not created yet has none: what depends on its address
    /// is made once it exists).
    #[must_use]
    pub fn model(
        &self,
        hosts: &BTreeMap<Address, std::sync::Arc<HostInfo>>,
        ips: impl Fn(&Address) -> Vec<IpAddr>,
    ) -> Cluster {
        let members: Vec<Member> = hosts
            .iter()
            .filter_map(|(address, info)| {
                let kube = info
                    .kubernetes
                    .as_ref()
                    .filter(|k| k.cluster == self.name)?;
                Some(Member {
                    address: address.clone(),
                    node_name: node_name(address),
                    roles: kube.roles.clone(),
                    labels: kube.labels.clone(),
                    ips: ips(address),
                    dns_names: Vec::new(),
                })
            })
            .collect();
        let api_endpoint = match &self.api {
            ApiSpec::Endpoint(endpoint) => endpoint.clone(),
            ApiSpec::Host(address) => {
                let host = members
                    .iter()
                    .find(|m| &m.address == address)
                    .map_or_else(|| node_name(address), Member::reachable_host);
                ApiEndpoint::new(&host)
            }
        };
        Cluster {
            name: self.name.clone(),
            flavor: self.flavor,
            api_endpoint,
            service_cidr: self.service_cidr,
            pod_cidr: self.pod_cidr,
            renew_before: self.renew_before,
            members,
        }
    }
}
