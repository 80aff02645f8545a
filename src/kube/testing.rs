//! Fixtures shared by the Kubernetes tests: a small cluster and a fixed
//! clock.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use chrono::{DateTime, TimeZone, Utc};
use prov_provider::Address;

use super::model::{ApiEndpoint, Cluster, Flavor, Member, Role, DEFAULT_RENEW_BEFORE};
use super::pki::issue::{issue, Material};
use super::pki::renewal::{plan, Action, Existing};

/// The DNS SANs of the fixture's apiserver certificate, sorted.
pub const APISERVER_DNS: [&str; 7] = [
    "cp",
    "cp.example.test",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
    "localhost",
];

/// 2026-01-01T00:00:00Z.
pub fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap()
}

/// A member `name` with `roles`, address 192.0.2.N.
pub fn member(name: &str, n: u8, roles: &[Role]) -> Member {
    Member {
        address: Address::host(name, None),
        node_name: name.to_owned(),
        roles: roles.iter().copied().collect(),
        labels: BTreeMap::new(),
        ips: vec![format!("192.0.2.{n}").parse().unwrap()],
        dns_names: vec![format!("{name}.example.test")],
    }
}

/// Cluster `dev`: control plane `cp` (192.0.2.10, the API endpoint),
/// workers `w1` (labelled tier=web) and `w2`.
pub fn cluster(flavor: Flavor) -> Cluster {
    let mut w1 = member("w1", 11, &[Role::Worker]);
    w1.labels.insert("tier".into(), "web".into());
    Cluster {
        name: "dev".into(),
        flavor,
        api_endpoint: ApiEndpoint::new("192.0.2.10"),
        service_cidr: "10.0.0.0/24".parse().unwrap(),
        pod_cidr: "10.1.0.0/16".parse().unwrap(),
        renew_before: DEFAULT_RENEW_BEFORE,
        members: vec![
            member("cp", 10, &[Role::ControlPlane]),
            w1,
            member("w2", 12, &[Role::Worker]),
        ],
    }
}

/// The material of `cluster`, all issued at [`now`].
pub fn issued(cluster: &Cluster) -> Material {
    let changes = plan(cluster, &Existing::default(), now());
    assert!(changes.iter().all(|c| c.action == Action::Issue));
    issue(cluster, &changes, Material::default(), now()).unwrap()
}

/// An age identity in a file under `dir`, and its recipient.
pub fn identity(dir: &Path) -> (PathBuf, String) {
    use age::secrecy::ExposeSecret;
    let key = age::x25519::Identity::generate();
    let path = dir.join("identity.txt");
    fs_err::write(&path, key.to_string().expose_secret()).unwrap();
    (path, key.to_public().to_string())
}

/// Whether `tool` can be run; when it cannot, says so and the test skips
/// (fails instead when PROV_REQUIRE_TEST_TOOLS is set, as scripts/test.sh
/// does, so CI cannot pass by skipping).
pub fn have_tool(tool: &str, install_hint: &str) -> bool {
    match std::process::Command::new(tool)
        .arg("--version")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
    {
        Ok(_) => true,
        Err(e) if std::env::var_os("PROV_REQUIRE_TEST_TOOLS").is_some() => {
            panic!("cannot run {tool}: {e} ({install_hint})")
        }
        Err(e) => {
            eprintln!("skipping: cannot run {tool}: {e} ({install_hint})");
            false
        }
    }
}
