//! The PKI of a `nixos`-flavour cluster, as kubeadm's table and the NixOS
//! module name it: three CAs (kubernetes, etcd, front-proxy; 10 years), a
//! service-account key pair, one-year leaves with the subjects, SANs and
//! key usages each component needs, and the encryption-at-rest key; for
//! `k3s`, only the shared join token.
//!
//! [`desired`] says what a cluster needs, [`renewal::plan`] compares it with
//! what exists (public parts only, nothing decrypted), [`issue::issue`]
//! makes what the plan asks for. Keys are ECDSA P-256, made by rcgen on
//! aws-lc-rs: the backend russh and rustls already build, so no second
//! crypto library enters the binary (ring 0.17 is in Cargo.lock only as an
//! optional dependency nothing enables).

pub mod inspect;
pub mod issue;
pub mod renewal;

use std::collections::BTreeSet;
use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use super::model::{Cluster, Flavor, Member};

/// Lifetime of the CAs: 10 years.
pub const CA_LIFETIME: Duration = Duration::from_secs(3650 * 24 * 3600);
/// Lifetime of leaf certificates: 1 year.
pub const LEAF_LIFETIME: Duration = Duration::from_secs(365 * 24 * 3600);
/// How far `notBefore` is set back from now, for clocks slightly behind.
pub const BACKDATE: Duration = Duration::from_secs(5 * 60);
/// The cluster DNS domain the apiserver's SANs name.
pub const CLUSTER_DOMAIN: &str = "cluster.local";

/// One kind of item in a cluster's PKI material.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// The cluster CA: apiserver, kubelets and every client identity.
    KubernetesCa,
    /// etcd's own CA (separate, so no kubernetes identity reaches etcd).
    EtcdCa,
    /// The CA of the aggregation layer's front proxy.
    FrontProxyCa,
    /// The key pair signing service-account tokens (no certificate).
    ServiceAccount,
    /// The 32-byte aescbc key of the encryption-at-rest config.
    EncryptionKey,
    /// k3s: the token every server and agent joins with.
    K3sToken,
    /// `cluster-admin`, O=system:masters: `prov kubeconfig` and the addon
    /// bootstrap.
    ClusterAdmin,
    /// The apiserver's serving certificate.
    ApiServer,
    /// The apiserver's client identity towards kubelets.
    ApiServerKubeletClient,
    /// The apiserver's client identity towards etcd.
    ApiServerEtcdClient,
    /// The apiserver's front-proxy client identity (front-proxy CA).
    ApiServerProxyClient,
    /// etcd's serving certificate.
    Etcd,
    /// etcd's peer certificate.
    EtcdPeer,
    /// The controller manager's serving certificate.
    ControllerManager,
    /// The controller manager's client identity.
    ControllerManagerClient,
    /// The scheduler's client identity.
    SchedulerClient,
    /// The addon manager's client identity.
    AddonManager,
    /// The kubelet's serving certificate.
    Kubelet,
    /// The kubelet's client identity `system:node:NAME`.
    KubeletClient,
    /// kube-proxy's client identity.
    KubeProxyClient,
    /// flannel's client identity.
    FlannelClient,
}

impl Kind {
    /// Every kind, CAs first.
    pub const ALL: [Kind; 21] = [
        Self::KubernetesCa,
        Self::EtcdCa,
        Self::FrontProxyCa,
        Self::ServiceAccount,
        Self::EncryptionKey,
        Self::K3sToken,
        Self::ClusterAdmin,
        Self::ApiServer,
        Self::ApiServerKubeletClient,
        Self::ApiServerEtcdClient,
        Self::ApiServerProxyClient,
        Self::Etcd,
        Self::EtcdPeer,
        Self::ControllerManager,
        Self::ControllerManagerClient,
        Self::SchedulerClient,
        Self::AddonManager,
        Self::Kubelet,
        Self::KubeletClient,
        Self::KubeProxyClient,
        Self::FlannelClient,
    ];

    /// The kind whose [`Kind::stem`] is `stem`.
    #[must_use]
    pub fn from_stem(stem: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.stem() == stem)
    }

    /// Whether the item is a random secret with no public part.
    #[must_use]
    pub fn is_random(self) -> bool {
        matches!(self, Self::EncryptionKey | Self::K3sToken)
    }

    /// The file stem (`kube-apiserver`), as the NixOS module names the
    /// files; the CAs keep their kubeadm names.
    #[must_use]
    pub fn stem(self) -> &'static str {
        match self {
            Self::KubernetesCa => "kubernetes-ca",
            Self::EtcdCa => "etcd-ca",
            Self::FrontProxyCa => "front-proxy-ca",
            Self::ServiceAccount => "service-account",
            Self::EncryptionKey => "encryption-key",
            Self::K3sToken => "k3s-token",
            Self::ClusterAdmin => "cluster-admin",
            Self::ApiServer => "kube-apiserver",
            Self::ApiServerKubeletClient => "kube-apiserver-kubelet-client",
            Self::ApiServerEtcdClient => "kube-apiserver-etcd-client",
            Self::ApiServerProxyClient => "kube-apiserver-proxy-client",
            Self::Etcd => "etcd",
            Self::EtcdPeer => "etcd-peer",
            Self::ControllerManager => "kube-controller-manager",
            Self::ControllerManagerClient => "kube-controller-manager-client",
            Self::SchedulerClient => "kube-scheduler-client",
            Self::AddonManager => "kube-addon-manager",
            Self::Kubelet => "kubelet",
            Self::KubeletClient => "kubelet-client",
            Self::KubeProxyClient => "kube-proxy-client",
            Self::FlannelClient => "flannel-client",
        }
    }

    /// Whether this is one of the three CAs.
    #[must_use]
    pub fn is_ca(self) -> bool {
        matches!(self, Self::KubernetesCa | Self::EtcdCa | Self::FrontProxyCa)
    }
}

/// One item of the material: a kind, and the node it belongs to (`None`
/// for the cluster-wide ones).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ItemId {
    /// The node name of the member it belongs to.
    pub node: Option<String>,
    /// What it is.
    pub kind: Kind,
}

impl ItemId {
    /// A cluster-wide item.
    #[must_use]
    pub fn cluster(kind: Kind) -> Self {
        Self { node: None, kind }
    }

    /// An item of node `node`.
    #[must_use]
    pub fn node(node: &str, kind: Kind) -> Self {
        Self {
            node: Some(node.to_owned()),
            kind,
        }
    }
}

impl fmt::Display for ItemId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.node {
            Some(node) => write!(f, "{} ({node})", self.kind.stem()),
            None => f.write_str(self.kind.stem()),
        }
    }
}

/// What a certificate may be used for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Usage {
    /// A CA: certificate and CRL signing.
    Authority,
    /// A TLS server: digital signature, key encipherment, serverAuth.
    Server,
    /// A TLS client: digital signature, key encipherment, clientAuth.
    Client,
    /// Both (etcd's server and peer certificates, as kubeadm makes them).
    ServerAndClient,
}

/// Everything a certificate must say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateSpec {
    /// The subject's CN.
    pub common_name: String,
    /// The subject's O (a group for Kubernetes' authenticator), if any.
    pub organization: Option<String>,
    /// DNS SANs.
    pub dns_names: BTreeSet<String>,
    /// IP SANs.
    pub ips: BTreeSet<IpAddr>,
    /// Key usages.
    pub usage: Usage,
    /// The CA that signs it (`None`: self-signed, a CA).
    pub issuer: Option<Kind>,
}

/// What one item must be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Form {
    /// A certificate and its key.
    Certificate(CertificateSpec),
    /// A key pair without certificate (service accounts).
    KeyPair,
    /// A random secret (encryption key, k3s token).
    Random,
}

/// One item the cluster needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Desired {
    /// Which item.
    pub id: ItemId,
    /// What it must be.
    pub form: Form,
}

/// Everything `cluster` needs, CAs first (so whatever issues in this order
/// finds its CA already made).
#[must_use]
pub fn desired(cluster: &Cluster) -> Vec<Desired> {
    if cluster.flavor == Flavor::K3s {
        return vec![Desired {
            id: ItemId::cluster(Kind::K3sToken),
            form: Form::Random,
        }];
    }
    let mut out = vec![
        authority(Kind::KubernetesCa),
        authority(Kind::EtcdCa),
        authority(Kind::FrontProxyCa),
        Desired {
            id: ItemId::cluster(Kind::ServiceAccount),
            form: Form::KeyPair,
        },
        Desired {
            id: ItemId::cluster(Kind::EncryptionKey),
            form: Form::Random,
        },
        Desired {
            id: ItemId::cluster(Kind::ClusterAdmin),
            form: client(Kind::KubernetesCa, "cluster-admin", Some("system:masters")),
        },
    ];
    for member in &cluster.members {
        let node = |kind, form| Desired {
            id: ItemId::node(&member.node_name, kind),
            form,
        };
        if member.is_control_plane() {
            let local = Names::new(["localhost"], ["127.0.0.1".parse().ok()]);
            out.extend([
                node(Kind::ApiServer, apiserver(cluster, member)),
                node(
                    Kind::ApiServerKubeletClient,
                    client(Kind::KubernetesCa, "system:kube-apiserver", None),
                ),
                node(
                    Kind::ApiServerEtcdClient,
                    client(Kind::EtcdCa, "kube-apiserver-etcd-client", None),
                ),
                node(
                    Kind::ApiServerProxyClient,
                    client(Kind::FrontProxyCa, "front-proxy-client", None),
                ),
                node(Kind::Etcd, etcd(member)),
                node(Kind::EtcdPeer, etcd(member)),
                node(
                    Kind::ControllerManager,
                    server(Kind::KubernetesCa, "kube-controller-manager", local),
                ),
                node(
                    Kind::ControllerManagerClient,
                    client(Kind::KubernetesCa, "system:kube-controller-manager", None),
                ),
                node(
                    Kind::SchedulerClient,
                    client(Kind::KubernetesCa, "system:kube-scheduler", None),
                ),
                node(
                    Kind::AddonManager,
                    client(Kind::KubernetesCa, "system:kube-addon-manager", None),
                ),
            ]);
        }
        // The NixOS module runs a kubelet, kube-proxy and flannel on every
        // member, control planes included.
        out.extend([
            node(
                Kind::Kubelet,
                server(Kind::KubernetesCa, &member.node_name, host_names(member)),
            ),
            node(
                Kind::KubeletClient,
                client(
                    Kind::KubernetesCa,
                    &format!("system:node:{}", member.node_name),
                    Some("system:nodes"),
                ),
            ),
            node(
                Kind::KubeProxyClient,
                client(Kind::KubernetesCa, "system:kube-proxy", None),
            ),
            node(
                Kind::FlannelClient,
                client(Kind::KubernetesCa, "flannel-client", None),
            ),
        ]);
    }
    out
}

/// DNS and IP SANs being gathered.
struct Names {
    dns: BTreeSet<String>,
    ips: BTreeSet<IpAddr>,
}

impl Names {
    fn new<'a>(
        dns: impl IntoIterator<Item = &'a str>,
        ips: impl IntoIterator<Item = Option<IpAddr>>,
    ) -> Self {
        Self {
            dns: dns.into_iter().map(str::to_owned).collect(),
            ips: ips.into_iter().flatten().collect(),
        }
    }

    /// Adds `host` as an IP SAN if it is an address, else as a DNS SAN.
    fn add_host(&mut self, host: &str) {
        match host.parse::<IpAddr>() {
            Ok(ip) => {
                self.ips.insert(ip);
            }
            Err(_) => {
                self.dns.insert(host.to_owned());
            }
        }
    }
}

/// The member's node name, DNS names and addresses.
fn host_names(member: &Member) -> Names {
    let mut names = Names::new([], member.ips.iter().copied().map(Some));
    names.add_host(&member.node_name);
    for name in &member.dns_names {
        names.add_host(name);
    }
    names
}

/// A self-signed CA named after its kind.
fn authority(kind: Kind) -> Desired {
    Desired {
        id: ItemId::cluster(kind),
        form: Form::Certificate(CertificateSpec {
            common_name: kind.stem().to_owned(),
            organization: None,
            dns_names: BTreeSet::new(),
            ips: BTreeSet::new(),
            usage: Usage::Authority,
            issuer: None,
        }),
    }
}

/// A client certificate (no SANs).
fn client(issuer: Kind, common_name: &str, organization: Option<&str>) -> Form {
    Form::Certificate(CertificateSpec {
        common_name: common_name.to_owned(),
        organization: organization.map(str::to_owned),
        dns_names: BTreeSet::new(),
        ips: BTreeSet::new(),
        usage: Usage::Client,
        issuer: Some(issuer),
    })
}

/// A server certificate for `names`.
fn server(issuer: Kind, common_name: &str, names: Names) -> Form {
    Form::Certificate(CertificateSpec {
        common_name: common_name.to_owned(),
        organization: None,
        dns_names: names.dns,
        ips: names.ips,
        usage: Usage::Server,
        issuer: Some(issuer),
    })
}

/// The apiserver's serving certificate: the host's names and addresses,
/// the API endpoint, the `kubernetes` service's IP and names, and loopback.
fn apiserver(cluster: &Cluster, member: &Member) -> Form {
    let mut names = host_names(member);
    names.add_host(&cluster.api_endpoint.host);
    names.ips.extend(cluster.service_cidr.first_service_ip());
    names.add_host("127.0.0.1");
    names.add_host("localhost");
    for name in [
        "kubernetes".to_owned(),
        "kubernetes.default".to_owned(),
        "kubernetes.default.svc".to_owned(),
        format!("kubernetes.default.svc.{CLUSTER_DOMAIN}"),
    ] {
        names.dns.insert(name);
    }
    server(Kind::KubernetesCa, "kube-apiserver", names)
}

/// etcd's serving or peer certificate (kubeadm: CN the node, SANs the host
/// and loopback, serverAuth and clientAuth).
fn etcd(member: &Member) -> Form {
    let mut names = host_names(member);
    names.add_host("localhost");
    names.add_host("127.0.0.1");
    Form::Certificate(CertificateSpec {
        common_name: member.node_name.clone(),
        organization: None,
        dns_names: names.dns,
        ips: names.ips,
        usage: Usage::ServerAndClient,
        issuer: Some(Kind::EtcdCa),
    })
}

#[cfg(test)]
mod tests;
