//! The PKI read back: subjects, SANs, usages, chains, lifetimes, and what
//! the renewal plan decides as the cluster and the clock move.

use std::collections::BTreeSet;

use chrono::Duration as ChronoDuration;

use super::inspect::{inspect, is_signed_by};
use super::issue::{issue, Material};
use super::renewal::{plan, Action, Change};
use super::*;
use crate::kube::model::Role;
use crate::kube::testing::{cluster, issued, member, now, APISERVER_DNS};

fn actions(changes: &[Change]) -> Vec<(String, String)> {
    changes
        .iter()
        .filter(|c| c.action != Action::Keep)
        .map(|c| (c.id.to_string(), c.action.to_string()))
        .collect()
}

fn certificate<'a>(material: &'a Material, node: Option<&str>, kind: Kind) -> &'a str {
    material.get(node, kind).unwrap().public.as_deref().unwrap()
}

#[test]
fn k3s_needs_only_the_token() {
    let ids: Vec<String> = desired(&cluster(Flavor::K3s))
        .iter()
        .map(|d| d.id.to_string())
        .collect();
    assert_eq!(ids, ["k3s-token"]);
}

#[test]
fn every_certificate_says_what_its_spec_says() {
    let cluster = cluster(Flavor::Nixos);
    let material = issued(&cluster);
    let desired = desired(&cluster);
    // 6 cluster-wide, 10 per control plane, 4 per member.
    assert_eq!(desired.len(), 6 + 10 + 4 * 3);
    for item in &desired {
        let made = &material.items[&item.id];
        assert!(!made.secret.expose().is_empty());
        let Form::Certificate(spec) = &item.form else {
            continue;
        };
        let pem = made.public.as_deref().unwrap();
        let info = inspect(pem).unwrap();
        assert_eq!(
            info.common_name.as_deref(),
            Some(spec.common_name.as_str()),
            "{}",
            item.id
        );
        assert_eq!(info.organization, spec.organization, "{}", item.id);
        assert_eq!(info.dns_names, spec.dns_names, "{}", item.id);
        assert_eq!(info.ips, spec.ips, "{}", item.id);
        assert_eq!(info.usage, Some(spec.usage), "{}", item.id);
        let lifetime = info.not_after - info.not_before;
        let authority = spec.issuer.map(ItemId::cluster).unwrap_or(item.id.clone());
        assert!(is_signed_by(pem, material.items[&authority].public.as_deref().unwrap()).unwrap());
        if spec.usage == Usage::Authority {
            assert_eq!(
                lifetime,
                ChronoDuration::days(3650) + ChronoDuration::minutes(5)
            );
        } else {
            assert_eq!(
                lifetime,
                ChronoDuration::days(365) + ChronoDuration::minutes(5)
            );
            // ECDSA P-256 keys.
            let key = rcgen::KeyPair::from_pem(made.secret.expose()).unwrap();
            assert!(
                key.is_compatible(&rcgen::PKCS_ECDSA_P256_SHA256),
                "{}",
                item.id
            );
        }
    }
    // The CAs are separate: a kubernetes leaf does not verify against etcd's.
    let etcd_ca = certificate(&material, None, Kind::EtcdCa);
    let admin = certificate(&material, None, Kind::ClusterAdmin);
    assert!(!is_signed_by(admin, etcd_ca).unwrap());
}

#[test]
fn identities_and_names_follow_kubeadm_and_the_nixos_module() {
    let cluster = cluster(Flavor::Nixos);
    let material = issued(&cluster);
    let info = |node, kind| inspect(certificate(&material, node, kind)).unwrap();
    let kubelet_client = info(Some("w1"), Kind::KubeletClient);
    assert_eq!(
        kubelet_client.common_name.as_deref(),
        Some("system:node:w1")
    );
    assert_eq!(kubelet_client.organization.as_deref(), Some("system:nodes"));
    let admin = info(None, Kind::ClusterAdmin);
    assert_eq!(admin.organization.as_deref(), Some("system:masters"));
    let apiserver = info(Some("cp"), Kind::ApiServer);
    let dns: Vec<&str> = apiserver.dns_names.iter().map(String::as_str).collect();
    assert_eq!(dns, APISERVER_DNS);
    let ips: Vec<String> = apiserver.ips.iter().map(ToString::to_string).collect();
    assert_eq!(ips, ["10.0.0.1", "127.0.0.1", "192.0.2.10"]);
    assert_eq!(
        info(Some("cp"), Kind::Etcd).issuer_common_name.as_deref(),
        Some("etcd-ca")
    );
    assert_eq!(
        info(Some("cp"), Kind::ApiServerProxyClient)
            .issuer_common_name
            .as_deref(),
        Some("front-proxy-ca")
    );
    // Workers get no control-plane certificates.
    assert!(material.get(Some("w1"), Kind::ApiServer).is_none());
    assert!(material.get(Some("w1"), Kind::Kubelet).is_some());
}

#[test]
fn an_unchanged_cluster_keeps_everything_byte_for_byte() {
    let cluster = cluster(Flavor::Nixos);
    let material = issued(&cluster);
    let changes = plan(
        &cluster,
        &material.existing(),
        now() + ChronoDuration::days(100),
    );
    assert_eq!(actions(&changes), Vec::<(String, String)>::new());
    let again = issue(&cluster, &changes, material.clone(), now()).unwrap();
    assert_eq!(again, material);
}

#[test]
fn a_new_address_reissues_exactly_the_certificates_naming_the_host() {
    let mut cluster = cluster(Flavor::Nixos);
    let material = issued(&cluster);
    cluster.members[0].ips.push("192.0.2.50".parse().unwrap());
    let changes = plan(&cluster, &material.existing(), now());
    let reason = "reissue: SANs changed: +192.0.2.50";
    assert_eq!(
        actions(&changes),
        [
            ("kube-apiserver (cp)".into(), reason.into()),
            ("etcd (cp)".into(), reason.into()),
            ("etcd-peer (cp)".into(), reason.into()),
            ("kubelet (cp)".into(), reason.into()),
        ]
    );
    let after = issue(&cluster, &changes, material.clone(), now()).unwrap();
    let reissued: BTreeSet<&ItemId> = changes
        .iter()
        .filter(|c| c.action != Action::Keep)
        .map(|c| &c.id)
        .collect();
    for (id, item) in &material.items {
        if reissued.contains(id) {
            assert_ne!(after.items[id], *item);
        } else {
            assert_eq!(after.items[id], *item, "{id} changed");
        }
    }
    assert_eq!(
        actions(&plan(&cluster, &after.existing(), now())),
        Vec::<(String, String)>::new()
    );
}

#[test]
fn a_new_worker_issues_only_its_own_items_and_a_gone_one_is_removed() {
    let mut cluster = cluster(Flavor::Nixos);
    let material = issued(&cluster);
    cluster.members.push(member("w3", 13, &[Role::Worker]));
    let new: Vec<(String, String)> = [
        "kubelet",
        "kubelet-client",
        "kube-proxy-client",
        "flannel-client",
    ]
    .iter()
    .map(|kind| (format!("{kind} (w3)"), "new".to_owned()))
    .collect();
    assert_eq!(actions(&plan(&cluster, &material.existing(), now())), new);
    cluster
        .members
        .retain(|m| m.node_name != "w2" && m.node_name != "w3");
    let removed = actions(&plan(&cluster, &material.existing(), now()));
    assert_eq!(removed.len(), 4);
    assert!(removed
        .iter()
        .all(|(id, action)| id.ends_with("(w2)") && action == "remove"));
}

#[test]
fn leaves_within_renew_before_are_renewed_and_cas_stay() {
    let cluster = cluster(Flavor::Nixos);
    let material = issued(&cluster);
    // 340 days on: the leaves (1 year) are within 30 days of expiry.
    let later = now() + ChronoDuration::days(340);
    let changes = plan(&cluster, &material.existing(), later);
    for change in &changes {
        let expected_renewal = matches!(
            desired(&cluster)
                .iter()
                .find(|d| d.id == change.id)
                .unwrap()
                .form,
            Form::Certificate(CertificateSpec {
                issuer: Some(_),
                ..
            })
        );
        assert_eq!(
            change.action != Action::Keep,
            expected_renewal,
            "{}",
            change.id
        );
    }
    let admin = changes
        .iter()
        .find(|c| c.id.kind == Kind::ClusterAdmin)
        .unwrap();
    assert_eq!(
        admin.action.to_string(),
        "reissue: expires 2027-01-01, within renew_before 30d"
    );
    let renewed = issue(&cluster, &changes, material.clone(), later).unwrap();
    assert_eq!(
        renewed.items[&ItemId::cluster(Kind::KubernetesCa)],
        material.items[&ItemId::cluster(Kind::KubernetesCa)]
    );
    assert_eq!(
        actions(&plan(&cluster, &renewed.existing(), later)),
        Vec::<(String, String)>::new()
    );
    // Past the end: said so.
    let expired = plan(
        &cluster,
        &material.existing(),
        now() + ChronoDuration::days(400),
    );
    let admin = expired
        .iter()
        .find(|c| c.id.kind == Kind::ClusterAdmin)
        .unwrap();
    assert_eq!(admin.action.to_string(), "reissue: expired 2027-01-01");
}

#[test]
fn a_new_ca_reissues_its_leaves_only() {
    let cluster = cluster(Flavor::Nixos);
    let material = issued(&cluster);
    let mut existing = material.existing();
    existing.secrets.remove(&ItemId::cluster(Kind::EtcdCa));
    let changes = plan(&cluster, &existing, now());
    let changed = actions(&changes);
    assert_eq!(
        changed,
        [
            (
                "etcd-ca".into(),
                "reissue: its private key is missing".into()
            ),
            (
                "kube-apiserver-etcd-client (cp)".into(),
                "reissue: the CA changed".into()
            ),
            ("etcd (cp)".into(), "reissue: the CA changed".into()),
            ("etcd-peer (cp)".into(), "reissue: the CA changed".into()),
        ]
    );
    // A leaf signed by some other CA than the one there is.
    let foreign = issued(&cluster);
    let mut existing = material.existing();
    existing.public.insert(
        ItemId::node("w1", Kind::KubeletClient),
        foreign
            .get(Some("w1"), Kind::KubeletClient)
            .unwrap()
            .public
            .clone()
            .unwrap(),
    );
    assert_eq!(
        actions(&plan(&cluster, &existing, now())),
        [(
            "kubelet-client (w1)".into(),
            "reissue: the CA changed".into()
        )]
    );
}

#[test]
fn subject_and_unreadable_reasons() {
    let mut cluster = cluster(Flavor::Nixos);
    let material = issued(&cluster);
    let mut existing = material.existing();
    existing
        .public
        .insert(ItemId::node("w2", Kind::FlannelClient), "garbage".into());
    let w2_identity = certificate(&material, Some("w2"), Kind::KubeletClient).to_owned();
    existing
        .public
        .insert(ItemId::node("w1", Kind::KubeletClient), w2_identity);
    let changed = actions(&plan(&cluster, &existing, now()));
    assert_eq!(changed.len(), 2, "{changed:?}");
    assert_eq!(
        changed[0],
        (
            "kubelet-client (w1)".into(),
            "reissue: subject changed: CN=system:node:w2,O=system:nodes → CN=system:node:w1,O=system:nodes".into()
        )
    );
    assert!(
        changed[1]
            .1
            .starts_with("reissue: unreadable (not a PEM certificate"),
        "{changed:?}"
    );
    // Renaming a node makes new items under the new name, removes the old.
    cluster.members[1].node_name = "web1".into();
    let changed = actions(&plan(&cluster, &material.existing(), now()));
    assert!(changed.contains(&("kubelet-client (web1)".into(), "new".into())));
    assert!(changed.contains(&("kubelet-client (w1)".into(), "remove".into())));
}

#[test]
fn secrets_stay_out_of_debug_output() {
    let material = issued(&cluster(Flavor::Nixos));
    let debug = format!("{material:?}");
    assert!(!debug.contains("PRIVATE KEY"));
    let key = material
        .get(None, Kind::EncryptionKey)
        .unwrap()
        .secret
        .expose();
    assert!(!debug.contains(key));
}

#[test]
fn durations_read_like_the_spec() {
    use std::time::Duration;
    assert_eq!(
        renewal::human_duration(Duration::from_secs(30 * 86_400)),
        "30d"
    );
    assert_eq!(
        renewal::human_duration(Duration::from_secs(36 * 3600)),
        "36h"
    );
    assert_eq!(renewal::human_duration(Duration::from_secs(90)), "90s");
}

#[test]
fn stems_name_each_kind_once() {
    for kind in Kind::ALL {
        assert_eq!(Kind::from_stem(kind.stem()), Some(kind));
    }
    assert_eq!(Kind::from_stem("nope"), None);
}
