//! The generated modules: golden files, and real Nix parsing them.

use std::process::Command;

use super::*;
use crate::kube::model::Role;
use crate::kube::testing::{cluster, have_tool, member};

/// A k3s cluster with two servers (one also a worker) and a worker.
fn k3s_cluster() -> Cluster {
    let mut cluster = cluster(Flavor::K3s);
    let mut second = member("cp2", 20, &[Role::ControlPlane, Role::Worker]);
    second.labels.insert("zone".into(), "b".into());
    cluster.members.insert(1, second);
    cluster
}

/// Every module of both fixture clusters, by a name for messages.
fn all_modules() -> Vec<(String, String)> {
    let mut modules = Vec::new();
    for cluster in [cluster(Flavor::Nixos), k3s_cluster()] {
        for member in &cluster.members {
            modules.push((
                format!("{}-{}", cluster.flavor, member.node_name),
                module(&cluster, member),
            ));
        }
    }
    modules
}

#[test]
fn golden_modules() {
    for (name, text) in all_modules() {
        insta::assert_snapshot!(name, text);
    }
}

#[test]
fn real_nix_parses_every_module() {
    if !have_tool("nix-instantiate", "scripts/setup.sh installs nix-bin") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in all_modules() {
        let path = dir.path().join(format!("{name}.nix"));
        fs_err::write(&path, &text).unwrap();
        let out = Command::new("nix-instantiate")
            .arg("--parse")
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{name}: {}\n{text}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn strings_survive_real_nix_evaluation() {
    let nasty = "a \"quoted\" ${not.interpolated} \\ back\nslash $ $$ {x}\ttab";
    assert_eq!(
        nix_string(nasty),
        r#""a \"quoted\" \${not.interpolated} \\ back\nslash $ $$ {x}\ttab""#
    );
    assert_eq!(nix_list::<&str>(&[]), "[ ]");
    if !have_tool("nix-instantiate", "scripts/setup.sh installs nix-bin") {
        return;
    }
    let out = Command::new("nix-instantiate")
        .args(["--eval", "--json", "--expr"])
        .arg(nix_list(&[nasty, "b"]))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let back: Vec<String> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(back, [nasty, "b"]);
}

#[test]
fn the_dns_address_follows_the_dns_addon() {
    let dns = |cidr: &str| dns_service_ip(&cidr.parse().unwrap()).map(|ip| ip.to_string());
    assert_eq!(dns("10.0.0.0/24").as_deref(), Some("10.0.0.254"));
    assert_eq!(dns("10.96.0.0/12").as_deref(), Some("10.96.0.254"));
    assert_eq!(dns("10.0.0.0/25").as_deref(), Some("10.0.0.10"));
    assert_eq!(dns("fd00::/108").as_deref(), Some("fd00::a"));
    assert_eq!(dns("10.0.0.0/29"), None);
}

#[test]
fn roles_map_to_the_modules_roles() {
    let cluster = cluster(Flavor::Nixos);
    let cp = module(&cluster, &cluster.members[0]);
    assert!(cp.contains("roles = [ \"master\" ];"));
    assert!(cp.contains("easyCerts = false;"));
    assert!(cp.contains("networking.firewall.allowedTCPPorts = [ 6443 2379 2380 10250 ];"));
    let worker = module(&cluster, &cluster.members[1]);
    assert!(worker.contains("roles = [ \"node\" ];"));
    assert!(!worker.contains("apiserver = {"));
    assert!(!worker.contains("services.etcd"));
    assert!(worker.contains("extraOpts = \"--node-labels=tier=web\";"));
    let k3s = k3s_cluster();
    let first = module(&k3s, &k3s.members[0]);
    assert!(first.contains("clusterInit = true;") && !first.contains("serverAddr"));
    let second = module(&k3s, &k3s.members[1]);
    assert!(second.contains("role = \"server\";"));
    assert!(second.contains("serverAddr = \"https://192.0.2.10:6443\";"));
    assert!(!second.contains("clusterInit") && !second.contains("nodeTaint"));
    let agent = module(&k3s, &k3s.members[2]);
    assert!(agent.contains("role = \"agent\";") && !agent.contains("extraFlags"));
}
