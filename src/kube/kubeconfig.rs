//! kubeconfig documents, written as JSON (valid YAML; kubectl and every
//! client-go reader take it): the admin's with its certificates embedded,
//! and component ones that name files on the host.

use base64::Engine as _;
use serde_json::json;

use super::model::Cluster;
use super::pki::issue::Material;
use super::pki::{ItemId, Kind};
use super::secret::Secret;

/// The admin kubeconfig cannot be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KubeconfigError {
    /// The material lacks an item it needs.
    #[error("the material has no {0}")]
    Missing(ItemId),
    /// The cluster's flavour keeps its own PKI (k3s).
    #[error(
        "cluster {0}: k3s makes its own admin kubeconfig (/etc/rancher/k3s/k3s.yaml on a server)"
    )]
    NotOurs(String),
}

/// The admin kubeconfig of `cluster`: server = the API endpoint, the
/// kubernetes CA, `cluster-admin`'s certificate and key, all embedded.
/// A secret: it holds a private key.
///
/// # Errors
/// For a k3s cluster, or material without the CA or the admin identity.
pub fn admin(cluster: &Cluster, material: &Material) -> Result<Secret, KubeconfigError> {
    if cluster.flavor == super::model::Flavor::K3s {
        return Err(KubeconfigError::NotOurs(cluster.name.clone()));
    }
    let public = |kind| {
        material
            .get(None, kind)
            .and_then(|item| item.public.as_deref())
            .ok_or_else(|| KubeconfigError::Missing(ItemId::cluster(kind)))
    };
    let authority = public(Kind::KubernetesCa)?;
    let certificate = public(Kind::ClusterAdmin)?;
    let key = material
        .get(None, Kind::ClusterAdmin)
        .map(|item| &item.secret)
        .ok_or_else(|| KubeconfigError::Missing(ItemId::cluster(Kind::ClusterAdmin)))?;
    let encode = |text: &str| base64::engine::general_purpose::STANDARD.encode(text);
    let user = format!("{}-admin", cluster.name);
    let document = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{
            "name": cluster.name,
            "cluster": {
                "server": cluster.api_endpoint.url(),
                "certificate-authority-data": encode(authority),
            },
        }],
        "users": [{
            "name": user,
            "user": {
                "client-certificate-data": encode(certificate),
                "client-key-data": encode(key.expose()),
            },
        }],
        "contexts": [{
            "name": cluster.name,
            "context": { "cluster": cluster.name, "user": user },
        }],
        "current-context": cluster.name,
        "preferences": {},
    });
    Ok(Secret::new(pretty(&document)))
}

/// Files on a host a component kubeconfig names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostCredentials<'a> {
    /// The CA certificate file.
    pub ca_file: &'a str,
    /// The client certificate file.
    pub certificate_file: &'a str,
    /// The client key file.
    pub key_file: &'a str,
}

/// A kubeconfig for `user` that reaches `server` with the files named in
/// `credentials` (no secret in it: only paths).
#[must_use]
pub fn with_files(
    cluster_name: &str,
    server: &str,
    user: &str,
    credentials: HostCredentials<'_>,
) -> String {
    let document = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{
            "name": cluster_name,
            "cluster": { "server": server, "certificate-authority": credentials.ca_file },
        }],
        "users": [{
            "name": user,
            "user": {
                "client-certificate": credentials.certificate_file,
                "client-key": credentials.key_file,
            },
        }],
        "contexts": [{
            "name": cluster_name,
            "context": { "cluster": cluster_name, "user": user },
        }],
        "current-context": cluster_name,
    });
    pretty(&document)
}

/// Indented JSON with a final newline.
fn pretty(document: &serde_json::Value) -> String {
    let mut text = serde_json::to_string_pretty(document).unwrap_or_default();
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kube::model::Flavor;
    use crate::kube::testing::{cluster, issued};

    #[test]
    fn admin_embeds_the_ca_and_the_admin_identity() {
        let cluster = cluster(Flavor::Nixos);
        let material = issued(&cluster);
        let text = admin(&cluster, &material).unwrap();
        let document: serde_json::Value = serde_json::from_str(text.expose()).unwrap();
        assert_eq!(
            document["clusters"][0]["cluster"]["server"],
            "https://192.0.2.10:6443"
        );
        assert_eq!(document["current-context"], "dev");
        let decode = |value: &serde_json::Value| {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(value.as_str().unwrap())
                .unwrap();
            String::from_utf8(bytes).unwrap()
        };
        let user = &document["users"][0]["user"];
        assert_eq!(
            decode(&user["client-certificate-data"]),
            material
                .get(None, Kind::ClusterAdmin)
                .unwrap()
                .public
                .clone()
                .unwrap()
        );
        assert!(decode(&user["client-key-data"]).contains("PRIVATE KEY"));
        assert!(!format!("{text:?}").contains("client-key-data"));
    }

    #[test]
    fn k3s_and_missing_material_are_refused() {
        let k3s = cluster(Flavor::K3s);
        assert!(matches!(
            admin(&k3s, &Material::default()),
            Err(KubeconfigError::NotOurs(_))
        ));
        let nixos = cluster(Flavor::Nixos);
        assert_eq!(
            admin(&nixos, &Material::default()).unwrap_err(),
            KubeconfigError::Missing(ItemId::cluster(Kind::KubernetesCa))
        );
    }

    #[test]
    fn component_kubeconfigs_name_files() {
        let text = with_files(
            "dev",
            "https://cp:6443",
            "flannel",
            HostCredentials {
                ca_file: "/s/ca.pem",
                certificate_file: "/s/flannel-client.pem",
                key_file: "/s/flannel-client-key.pem",
            },
        );
        insta::assert_snapshot!(text);
    }
}
