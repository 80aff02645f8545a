//! The typed input of the Kubernetes core: one cluster, its flavour, its
//! networks and its members, as the spec layer hands them over. Plain data;
//! [`super::check`] says what is wrong with it.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use prov_provider::Address;

use super::cidr::Cidr;

/// The apiserver's port when the spec names none.
pub const DEFAULT_API_PORT: u16 = 6443;

/// How long before expiry a certificate is renewed when the spec says
/// nothing: 30 days.
pub const DEFAULT_RENEW_BEFORE: Duration = Duration::from_secs(30 * 24 * 3600);

/// Which NixOS module runs the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Flavor {
    /// `services.kubernetes` with `easyCerts = false`: prov makes the PKI.
    Nixos,
    /// `services.k3s`: k3s makes its own PKI; prov hands out one token.
    K3s,
}

impl Flavor {
    /// `nixos` or `k3s`, as the spec writes it.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Nixos => "nixos",
            Self::K3s => "k3s",
        }
    }

    /// How many control planes the flavour's NixOS module can run: the
    /// NixOS module one (its manual: HA is not supported), k3s any number
    /// (embedded etcd, `clusterInit` on the first).
    #[must_use]
    pub fn max_control_planes(self) -> Option<usize> {
        match self {
            Self::Nixos => Some(1),
            Self::K3s => None,
        }
    }
}

impl fmt::Display for Flavor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a member runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// apiserver, etcd, controller-manager, scheduler (and, with the NixOS
    /// module, a kubelet tainted NoSchedule unless the host is a worker too).
    ControlPlane,
    /// kubelet and kube-proxy: runs workloads.
    Worker,
}

impl Role {
    /// `control-plane` or `worker`, as the spec writes it.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ControlPlane => "control-plane",
            Self::Worker => "worker",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where clients reach the apiserver: a host name or IP address, and a port.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ApiEndpoint {
    /// A DNS name or an IP address (it goes into the apiserver's SANs).
    pub host: String,
    /// The apiserver's secure port.
    pub port: u16,
}

impl ApiEndpoint {
    /// `host` on the default port 6443.
    #[must_use]
    pub fn new(host: &str) -> Self {
        Self {
            host: host.to_owned(),
            port: DEFAULT_API_PORT,
        }
    }

    /// The host as an IP address, when it is one.
    #[must_use]
    pub fn ip(&self) -> Option<IpAddr> {
        self.host.parse().ok()
    }

    /// `https://HOST:PORT` (IPv6 addresses in brackets).
    #[must_use]
    pub fn url(&self) -> String {
        format!("https://{}", host_port(&self.host, self.port))
    }
}

/// `host:port`, with an IPv6 address in brackets.
#[must_use]
pub fn host_port(host: &str, port: u16) -> String {
    match host.parse::<IpAddr>() {
        Ok(IpAddr::V6(v6)) => format!("[{v6}]:{port}"),
        _ => format!("{host}:{port}"),
    }
}

/// One Kubernetes cluster of a deployment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cluster {
    /// The name in `[kubernetes.NAME]`.
    pub name: String,
    /// Which NixOS module runs it.
    pub flavor: Flavor,
    /// Where clients and nodes reach the apiserver.
    pub api_endpoint: ApiEndpoint,
    /// The range service IPs come from (the first is the `kubernetes`
    /// service).
    pub service_cidr: Cidr,
    /// The range pod IPs come from (flannel's network).
    pub pod_cidr: Cidr,
    /// Certificates expiring within this are renewed.
    pub renew_before: Duration,
    /// The hosts of the cluster, in the spec's order (the first control
    /// plane is the one k3s initialises the cluster on).
    pub members: Vec<Member>,
}

impl Cluster {
    /// The members with the control-plane role, in order.
    pub fn control_planes(&self) -> impl Iterator<Item = &Member> {
        self.members.iter().filter(|m| m.is_control_plane())
    }

    /// The member that registers as `node_name`.
    #[must_use]
    pub fn member(&self, node_name: &str) -> Option<&Member> {
        self.members.iter().find(|m| m.node_name == node_name)
    }

    /// The member at `address`.
    #[must_use]
    pub fn member_at(&self, address: &Address) -> Option<&Member> {
        self.members.iter().find(|m| &m.address == address)
    }

    /// Whether `member` is the first control plane (k3s: `clusterInit`).
    #[must_use]
    pub fn is_first_control_plane(&self, member: &Member) -> bool {
        self.control_planes().next().map(|m| &m.node_name) == Some(&member.node_name)
    }
}

/// One host of a cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// The host's address in the deployment.
    pub address: Address,
    /// The name the node registers as (the host's hostname): the kubelet's
    /// identity `system:node:NAME` must match it exactly.
    pub node_name: String,
    /// What it runs (at least one).
    pub roles: BTreeSet<Role>,
    /// Node labels (`--node-labels`, k3s `nodeLabel`).
    pub labels: BTreeMap<String, String>,
    /// The host's IP addresses (the first is the node IP), for SANs.
    pub ips: Vec<IpAddr>,
    /// Further DNS names of the host, for SANs.
    pub dns_names: Vec<String>,
}

impl Member {
    /// Whether it has the control-plane role.
    #[must_use]
    pub fn is_control_plane(&self) -> bool {
        self.roles.contains(&Role::ControlPlane)
    }

    /// Whether it has the worker role.
    #[must_use]
    pub fn is_worker(&self) -> bool {
        self.roles.contains(&Role::Worker)
    }

    /// Its labels as `NAME=VALUE`, sorted by name.
    #[must_use]
    pub fn label_pairs(&self) -> Vec<String> {
        self.labels
            .iter()
            .map(|(name, value)| format!("{name}={value}"))
            .collect()
    }

    /// The address other members reach it at: its first IP, else its node
    /// name.
    #[must_use]
    pub fn reachable_host(&self) -> String {
        self.ips
            .first()
            .map_or_else(|| self.node_name.clone(), ToString::to_string)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_urls() {
        assert_eq!(ApiEndpoint::new("cp").url(), "https://cp:6443");
        let v6 = ApiEndpoint {
            host: "fd00::1".into(),
            port: 443,
        };
        assert_eq!(v6.url(), "https://[fd00::1]:443");
        assert_eq!(v6.ip(), Some("fd00::1".parse().unwrap()));
        assert_eq!(ApiEndpoint::new("cp").ip(), None);
    }

    #[test]
    fn flavour_limits() {
        assert_eq!(Flavor::Nixos.max_control_planes(), Some(1));
        assert_eq!(Flavor::K3s.max_control_planes(), None);
        assert_eq!(Role::ControlPlane.to_string(), "control-plane");
    }
}
