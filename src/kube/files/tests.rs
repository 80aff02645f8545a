//! Which files each member gets, with owners and modes, and what is in them.

use super::*;
use crate::kube::testing::{cluster, issued};

/// `MODE OWNER:GROUP PATH` per file.
fn listing(files: &[HostFile]) -> String {
    files
        .iter()
        .map(|f| format!("{:04o} {}:{} {}\n", f.mode, f.owner, f.group, f.path))
        .collect()
}

#[test]
fn the_control_plane_gets_its_certificates_and_the_cluster_secrets() {
    let cluster = cluster(Flavor::Nixos);
    let material = issued(&cluster);
    let files = host_files(&cluster, &cluster.members[0], &material).unwrap();
    insta::assert_snapshot!(listing(&files));
}

#[test]
fn a_worker_gets_only_what_kubelet_proxy_and_flannel_need() {
    let cluster = cluster(Flavor::Nixos);
    let material = issued(&cluster);
    let files = host_files(&cluster, &cluster.members[1], &material).unwrap();
    insta::assert_snapshot!(listing(&files));
    // Its own identity, nobody else's.
    let client = files
        .iter()
        .find(|f| f.path.ends_with("/kubelet-client.pem"))
        .unwrap();
    let w1 = material.get(Some("w1"), Kind::KubeletClient).unwrap();
    assert_eq!(client.content.expose(), w1.public.as_deref().unwrap());
    let key = files
        .iter()
        .find(|f| f.path.ends_with("/kubelet-client-key.pem"))
        .unwrap();
    assert_eq!(key.content, w1.secret);
    let everything = files.iter().map(|f| f.content.expose()).collect::<String>();
    for secret in [
        material.get(None, Kind::KubernetesCa).unwrap(),
        material.get(None, Kind::ClusterAdmin).unwrap(),
        material.get(None, Kind::EncryptionKey).unwrap(),
        material.get(Some("w2"), Kind::KubeletClient).unwrap(),
    ] {
        assert!(!everything.contains(secret.secret.expose()));
    }
}

#[test]
fn k3s_members_get_the_token_only() {
    let cluster = cluster(Flavor::K3s);
    let material = issued(&cluster);
    let token = &material.get(None, Kind::K3sToken).unwrap().secret;
    for member in &cluster.members {
        let files = host_files(&cluster, member, &material).unwrap();
        assert_eq!(
            listing(&files),
            "0400 root:root /var/lib/rancher/k3s/prov-token\n"
        );
        assert_eq!(&files[0].content, token);
    }
}

#[test]
fn the_encryption_config_holds_the_key_then_identity() {
    let cluster = cluster(Flavor::Nixos);
    let material = issued(&cluster);
    let files = host_files(&cluster, &cluster.members[0], &material).unwrap();
    let config = files
        .iter()
        .find(|f| f.path.ends_with(ENCRYPTION_CONFIG))
        .unwrap();
    let document: serde_json::Value = serde_json::from_str(config.content.expose()).unwrap();
    assert_eq!(document["kind"], "EncryptionConfiguration");
    assert_eq!(document["apiVersion"], "apiserver.config.k8s.io/v1");
    let providers = &document["resources"][0]["providers"];
    let key = providers[0]["aescbc"]["keys"][0]["secret"]
        .as_str()
        .unwrap();
    let bytes = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, key).unwrap();
    assert_eq!(bytes.len(), 32);
    assert_eq!(providers[1], serde_json::json!({ "identity": {} }));
    assert!(!format!("{config:?}").contains(key));
}

#[test]
fn flannels_kubeconfig_names_the_files_beside_it() {
    let cluster = cluster(Flavor::Nixos);
    let material = issued(&cluster);
    let files = host_files(&cluster, &cluster.members[2], &material).unwrap();
    let kubeconfig = files
        .iter()
        .find(|f| f.path.ends_with(FLANNEL_KUBECONFIG))
        .unwrap();
    let document: serde_json::Value = serde_json::from_str(kubeconfig.content.expose()).unwrap();
    let user = &document["users"][0]["user"];
    assert_eq!(
        user["client-certificate"],
        "/var/lib/kubernetes/secrets/flannel-client.pem"
    );
    assert_eq!(
        user["client-key"],
        "/var/lib/kubernetes/secrets/flannel-client-key.pem"
    );
    assert_eq!(
        document["clusters"][0]["cluster"]["certificate-authority"],
        "/var/lib/kubernetes/secrets/ca.pem"
    );
}

#[test]
fn missing_material_is_named() {
    let cluster = cluster(Flavor::Nixos);
    let error = host_files(&cluster, &cluster.members[1], &Material::default()).unwrap_err();
    assert_eq!(
        error,
        FilesError::Missing(ItemId::cluster(Kind::KubernetesCa))
    );
}
