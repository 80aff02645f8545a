//! The files each member receives: exactly those its roles need, at the
//! paths, owners and modes the NixOS module expects (its `mkCert` in
//! nixos/modules/services/cluster/kubernetes/default.nix: certificates
//! under `/var/lib/kubernetes/secrets` as `NAME.pem`, keys as
//! `NAME-key.pem`, owner `kubernetes` (etcd's: `etcd`, cluster-admin's:
//! `root`), group `kubernetes`, mode 0600). For k3s, the shared token at
//! the `tokenFile` path, root-only.

use std::fmt;

use serde_json::json;

use super::kubeconfig::{with_files, HostCredentials};
use super::model::{Cluster, Flavor, Member};
use super::pki::issue::Material;
use super::pki::{ItemId, Kind};
use super::secret::Secret;

/// `services.kubernetes.secretsPath` (the module's default).
pub const SECRETS_DIR: &str = "/var/lib/kubernetes/secrets";
/// Where k3s members find the join token (`services.k3s.tokenFile`).
pub const K3S_TOKEN_PATH: &str = "/var/lib/rancher/k3s/prov-token";
/// The encryption-at-rest config (`--encryption-provider-config`).
pub const ENCRYPTION_CONFIG: &str = "encryption-config.json";
/// flannel's kubeconfig (`services.flannel.kubeconfig`).
pub const FLANNEL_KUBECONFIG: &str = "flannel.kubeconfig";
/// The addon manager's kubeconfig (its unit's `KUBECONFIG`).
pub const ADDON_MANAGER_KUBECONFIG: &str = "kube-addon-manager.kubeconfig";
/// cluster-admin's kubeconfig on the control plane (addon bootstrap).
pub const CLUSTER_ADMIN_KUBECONFIG: &str = "cluster-admin.kubeconfig";

/// The group of every private key (the module's `mkCert` default).
const KEY_GROUP: &str = "kubernetes";

/// One file for a host.
#[derive(Clone, PartialEq, Eq)]
pub struct HostFile {
    /// Absolute path on the host.
    pub path: String,
    /// Owning user.
    pub owner: String,
    /// Owning group.
    pub group: String,
    /// Permission bits.
    pub mode: u32,
    /// The content (kept as a secret whether or not it is one).
    pub content: Secret,
}

impl fmt::Debug for HostFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "HostFile({} {}:{} {:04o}, {} bytes)",
            self.path,
            self.owner,
            self.group,
            self.mode,
            self.content.expose().len()
        )
    }
}

/// A member's file cannot be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilesError {
    /// The material lacks an item.
    #[error("the material has no {0} (issue the cluster's material first)")]
    Missing(ItemId),
}

/// The path on the host of `kind`'s certificate (`ca.pem` for the
/// kubernetes CA, as the module names it).
#[must_use]
pub fn certificate_path(kind: Kind) -> String {
    format!("{SECRETS_DIR}/{}.pem", host_stem(kind))
}

/// The path on the host of `kind`'s private key.
#[must_use]
pub fn key_path(kind: Kind) -> String {
    format!("{SECRETS_DIR}/{}-key.pem", host_stem(kind))
}

/// A file under the secrets directory.
#[must_use]
pub fn secrets_file(name: &str) -> String {
    format!("{SECRETS_DIR}/{name}")
}

/// The stem of `kind`'s files on a host.
fn host_stem(kind: Kind) -> &'static str {
    match kind {
        Kind::KubernetesCa => "ca",
        other => other.stem(),
    }
}

/// Every file `member` of `cluster` needs, from `material`, sorted by path.
///
/// # Errors
/// When the material lacks an item the member needs.
pub fn host_files(
    cluster: &Cluster,
    member: &Member,
    material: &Material,
) -> Result<Vec<HostFile>, FilesError> {
    let mut files = Files {
        material,
        node: &member.node_name,
        out: Vec::new(),
    };
    if cluster.flavor == Flavor::K3s {
        let token = files.secret(None, Kind::K3sToken)?;
        files.push(K3S_TOKEN_PATH.to_owned(), ("root", "root"), 0o400, token);
        return Ok(files.out);
    }
    let server = cluster.api_endpoint.url();
    files.certificate(None, Kind::KubernetesCa)?;
    for kind in [
        Kind::Kubelet,
        Kind::KubeletClient,
        Kind::KubeProxyClient,
        Kind::FlannelClient,
    ] {
        files.pair(kind, "kubernetes")?;
    }
    files.kubeconfig(
        &cluster.name,
        &server,
        FLANNEL_KUBECONFIG,
        "flannel-client",
        Kind::FlannelClient,
    );
    if member.is_control_plane() {
        files.certificate(None, Kind::EtcdCa)?;
        files.certificate(None, Kind::FrontProxyCa)?;
        for kind in [
            Kind::ApiServer,
            Kind::ApiServerKubeletClient,
            Kind::ApiServerEtcdClient,
            Kind::ApiServerProxyClient,
            Kind::ControllerManager,
            Kind::ControllerManagerClient,
            Kind::SchedulerClient,
            Kind::AddonManager,
        ] {
            files.pair(kind, "kubernetes")?;
        }
        files.pair(Kind::Etcd, "etcd")?;
        files.pair(Kind::EtcdPeer, "etcd")?;
        files.cluster_pair(Kind::ServiceAccount, "kubernetes")?;
        files.cluster_pair(Kind::ClusterAdmin, "root")?;
        files.kubeconfig(
            &cluster.name,
            &server,
            ADDON_MANAGER_KUBECONFIG,
            "system:kube-addon-manager",
            Kind::AddonManager,
        );
        files.kubeconfig(
            &cluster.name,
            &server,
            CLUSTER_ADMIN_KUBECONFIG,
            "cluster-admin",
            Kind::ClusterAdmin,
        );
        let key = files.secret(None, Kind::EncryptionKey)?;
        files.push(
            secrets_file(ENCRYPTION_CONFIG),
            ("kubernetes", "kubernetes"),
            0o600,
            encryption_config(&key),
        );
    }
    files.out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(files.out)
}

/// The `EncryptionConfiguration` for `key`: Secrets encrypted with aescbc,
/// still readable when written before (identity last).
#[must_use]
pub fn encryption_config(key: &Secret) -> Secret {
    let document = json!({
        "apiVersion": "apiserver.config.k8s.io/v1",
        "kind": "EncryptionConfiguration",
        "resources": [{
            "resources": ["secrets"],
            "providers": [
                { "aescbc": { "keys": [{ "name": "key1", "secret": key.expose() }] } },
                { "identity": {} },
            ],
        }],
    });
    let mut text = serde_json::to_string_pretty(&document).unwrap_or_default();
    text.push('\n');
    Secret::new(text)
}

/// The files being gathered for one member.
struct Files<'a> {
    material: &'a Material,
    node: &'a str,
    out: Vec<HostFile>,
}

impl Files<'_> {
    fn push(&mut self, path: String, (owner, group): (&str, &str), mode: u32, content: Secret) {
        self.out.push(HostFile {
            path,
            owner: owner.to_owned(),
            group: group.to_owned(),
            mode,
            content,
        });
    }

    fn item(&self, node: Option<&str>, kind: Kind) -> Result<&super::pki::issue::Item, FilesError> {
        self.material.get(node, kind).ok_or_else(|| {
            FilesError::Missing(ItemId {
                node: node.map(str::to_owned),
                kind,
            })
        })
    }

    fn secret(&self, node: Option<&str>, kind: Kind) -> Result<Secret, FilesError> {
        Ok(self.item(node, kind)?.secret.clone())
    }

    /// A public certificate (or public key), world-readable.
    fn certificate(&mut self, node: Option<&str>, kind: Kind) -> Result<(), FilesError> {
        let public = self.item(node, kind)?.public.clone().ok_or_else(|| {
            FilesError::Missing(ItemId {
                node: node.map(str::to_owned),
                kind,
            })
        })?;
        self.out.push(HostFile {
            path: certificate_path(kind),
            owner: "root".to_owned(),
            group: "root".to_owned(),
            mode: 0o644,
            content: Secret::new(public),
        });
        Ok(())
    }

    /// The member's certificate and its key (owned by `owner`).
    fn pair(&mut self, kind: Kind, owner: &str) -> Result<(), FilesError> {
        let node = self.node;
        self.certificate(Some(node), kind)?;
        let key = self.secret(Some(node), kind)?;
        self.push(key_path(kind), (owner, KEY_GROUP), 0o600, key);
        Ok(())
    }

    /// A cluster-wide certificate and its key (owned by `owner`).
    fn cluster_pair(&mut self, kind: Kind, owner: &str) -> Result<(), FilesError> {
        self.certificate(None, kind)?;
        let key = self.secret(None, kind)?;
        self.push(key_path(kind), (owner, KEY_GROUP), 0o600, key);
        Ok(())
    }

    /// A kubeconfig for `user` naming `kind`'s files on the host.
    fn kubeconfig(&mut self, cluster: &str, server: &str, name: &str, user: &str, kind: Kind) {
        let text = with_files(
            cluster,
            server,
            user,
            HostCredentials {
                ca_file: &certificate_path(Kind::KubernetesCa),
                certificate_file: &certificate_path(kind),
                key_file: &key_path(kind),
            },
        );
        self.out.push(HostFile {
            path: secrets_file(name),
            owner: "root".to_owned(),
            group: "root".to_owned(),
            mode: 0o644,
            content: Secret::new(text),
        });
    }
}

#[cfg(test)]
mod tests;
