//! The tests' cluster: the example in a workspace of its own, on loopback
//! addresses of its own, and what the tests read on its hosts.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use chrono::{DateTime, Duration, SecondsFormat, Utc};

use crate::harness::{repo, Run, Workspace};
use crate::secrets::{ok_with, prov_with};

/// The example's deployment name.
pub(super) const DEPLOYMENT: &str = "kubernetes";
/// Where the NixOS module keeps the cluster's files on a host.
pub(super) const SECRETS: &str = "/var/lib/kubernetes/secrets";
/// The k3s token's path (`services.k3s.tokenFile`).
pub(super) const K3S_TOKEN: &str = "/var/lib/rancher/k3s/prov-token";

/// What a worker receives, exactly: file, mode, owner, group.
pub(super) const WORKER_FILES: &[(&str, &str, &str, &str)] = &[
    ("ca.pem", "644", "root", "root"),
    ("flannel-client-key.pem", "600", "kubernetes", "kubernetes"),
    ("flannel-client.pem", "644", "root", "root"),
    ("flannel.kubeconfig", "644", "root", "root"),
    (
        "kube-proxy-client-key.pem",
        "600",
        "kubernetes",
        "kubernetes",
    ),
    ("kube-proxy-client.pem", "644", "root", "root"),
    ("kubelet-client-key.pem", "600", "kubernetes", "kubernetes"),
    ("kubelet-client.pem", "644", "root", "root"),
    ("kubelet-key.pem", "600", "kubernetes", "kubernetes"),
    ("kubelet.pem", "644", "root", "root"),
];

/// What a control plane receives on top of a worker's files (the NixOS
/// module runs a kubelet, kube-proxy and flannel there too).
pub(super) const CONTROL_PLANE_FILES: &[(&str, &str, &str, &str)] = &[
    ("cluster-admin-key.pem", "600", "root", "kubernetes"),
    ("cluster-admin.kubeconfig", "644", "root", "root"),
    ("cluster-admin.pem", "644", "root", "root"),
    ("encryption-config.json", "600", "kubernetes", "kubernetes"),
    ("etcd-ca.pem", "644", "root", "root"),
    ("etcd-key.pem", "600", "etcd", "kubernetes"),
    ("etcd-peer-key.pem", "600", "etcd", "kubernetes"),
    ("etcd-peer.pem", "644", "root", "root"),
    ("etcd.pem", "644", "root", "root"),
    ("front-proxy-ca.pem", "644", "root", "root"),
    (
        "kube-addon-manager-key.pem",
        "600",
        "kubernetes",
        "kubernetes",
    ),
    ("kube-addon-manager.kubeconfig", "644", "root", "root"),
    ("kube-addon-manager.pem", "644", "root", "root"),
    (
        "kube-apiserver-etcd-client-key.pem",
        "600",
        "kubernetes",
        "kubernetes",
    ),
    ("kube-apiserver-etcd-client.pem", "644", "root", "root"),
    ("kube-apiserver-key.pem", "600", "kubernetes", "kubernetes"),
    (
        "kube-apiserver-kubelet-client-key.pem",
        "600",
        "kubernetes",
        "kubernetes",
    ),
    ("kube-apiserver-kubelet-client.pem", "644", "root", "root"),
    (
        "kube-apiserver-proxy-client-key.pem",
        "600",
        "kubernetes",
        "kubernetes",
    ),
    ("kube-apiserver-proxy-client.pem", "644", "root", "root"),
    ("kube-apiserver.pem", "644", "root", "root"),
    (
        "kube-controller-manager-client-key.pem",
        "600",
        "kubernetes",
        "kubernetes",
    ),
    ("kube-controller-manager-client.pem", "644", "root", "root"),
    (
        "kube-controller-manager-key.pem",
        "600",
        "kubernetes",
        "kubernetes",
    ),
    ("kube-controller-manager.pem", "644", "root", "root"),
    (
        "kube-scheduler-client-key.pem",
        "600",
        "kubernetes",
        "kubernetes",
    ),
    ("kube-scheduler-client.pem", "644", "root", "root"),
    ("service-account-key.pem", "600", "kubernetes", "kubernetes"),
    ("service-account.pem", "644", "root", "root"),
];

/// Every certificate on a control plane, its CA there, and the purposes it
/// must verify for (`openssl verify -purpose`).
pub(super) const CONTROL_PLANE_CHAINS: &[(&str, &str, &[&str])] = &[
    ("kube-apiserver.pem", "ca.pem", &["sslserver"]),
    ("kube-controller-manager.pem", "ca.pem", &["sslserver"]),
    ("kubelet.pem", "ca.pem", &["sslserver"]),
    ("cluster-admin.pem", "ca.pem", &["sslclient"]),
    (
        "kube-apiserver-kubelet-client.pem",
        "ca.pem",
        &["sslclient"],
    ),
    (
        "kube-controller-manager-client.pem",
        "ca.pem",
        &["sslclient"],
    ),
    ("kube-scheduler-client.pem", "ca.pem", &["sslclient"]),
    ("kube-addon-manager.pem", "ca.pem", &["sslclient"]),
    ("kubelet-client.pem", "ca.pem", &["sslclient"]),
    ("kube-proxy-client.pem", "ca.pem", &["sslclient"]),
    ("flannel-client.pem", "ca.pem", &["sslclient"]),
    ("etcd.pem", "etcd-ca.pem", &["sslserver", "sslclient"]),
    ("etcd-peer.pem", "etcd-ca.pem", &["sslserver", "sslclient"]),
    (
        "kube-apiserver-etcd-client.pem",
        "etcd-ca.pem",
        &["sslclient"],
    ),
    (
        "kube-apiserver-proxy-client.pem",
        "front-proxy-ca.pem",
        &["sslclient"],
    ),
];

/// One test's cluster: the example in a workspace of its own, its hosts
/// moved to loopback addresses of the test's own. Dropping it removes the
/// apiserver stand-ins' directories (the hosts go with the workspace).
pub(super) struct Cluster {
    pub(super) ws: Workspace,
    /// The addresses of cp, w1 and w2.
    pub(super) addresses: [String; 3],
    /// Every control-plane address the test used (their stand-ins' files).
    pub(super) api_addresses: Vec<String>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for address in &self.api_addresses {
            let _ = std::fs::remove_dir_all(standin_dir(address));
        }
        let _ = std::fs::remove_dir("/run/prov-standin");
    }
}

/// The directory the apiserver stand-in at `address` serves.
pub(super) fn standin_dir(address: &str) -> PathBuf {
    PathBuf::from(format!("/run/prov-standin/apiserver-{address}-6443"))
}

impl Cluster {
    /// examples/kubernetes.toml as `prov.toml` with cp, w1 and w2 at
    /// 127.0.0.FIRST and the next two addresses, changed by `edit`.
    pub(super) fn new(first: u8, edit: impl FnOnce(String) -> String) -> Self {
        let ws = Workspace::new();
        ws.copy_example("kubernetes.nix");
        let addresses = [0, 1, 2].map(|i| format!("127.0.0.{}", first + i));
        let mut spec = std::fs::read_to_string(repo().join("examples/kubernetes.toml")).unwrap();
        for (i, address) in addresses.iter().enumerate() {
            spec = spec.replace(&format!("\"127.0.0.1{i}\""), &format!("\"{address}\""));
        }
        ws.write("prov.toml", &edit(spec));
        Self {
            ws,
            api_addresses: vec![addresses[0].clone()],
            addresses,
        }
    }

    /// The spec as it is now.
    pub(super) fn spec(&self) -> String {
        std::fs::read_to_string(self.ws.path().join("prov.toml")).unwrap()
    }

    /// The directory of host `name`.
    pub(super) fn host(&self, name: &str) -> PathBuf {
        self.ws.host_dir(DEPLOYMENT, name)
    }

    /// Where `path` (absolute, on host `name`) lies on this machine: in the
    /// host's own layer of `/var` (or its `/nix`).
    pub(super) fn on_host(&self, name: &str, path: &str) -> PathBuf {
        let relative = path.trim_start_matches('/');
        match relative.split_once('/') {
            Some(("nix", rest)) => self.host(name).join("nix").join(rest),
            Some((top, rest)) => self
                .host(name)
                .join("layers")
                .join(top)
                .join("upper")
                .join(rest),
            None => panic!("{path} is not under a top-level directory"),
        }
    }

    /// Host `name`'s cluster files: name → bytes.
    pub(super) fn files(&self, name: &str) -> BTreeMap<String, Vec<u8>> {
        read_dir_files(&self.on_host(name, SECRETS))
    }

    /// `stat` of host `name`'s cluster files as the host sees them (its own
    /// /etc names the users the activation made): name → (mode, owner,
    /// group).
    pub(super) fn modes(
        &self,
        name: &str,
        dir: &str,
    ) -> BTreeMap<String, (String, String, String)> {
        let out = crate::deploy::ssh(
            &self.ws,
            &self.address_of(name),
            &format!("cd {dir} && stat -c '%n %a %U %G' *"),
        );
        out.lines()
            .map(|line| {
                let words: Vec<&str> = line.split_whitespace().collect();
                assert_eq!(words.len(), 4, "{line}");
                (
                    words[0].to_owned(),
                    (
                        words[1].to_owned(),
                        words[2].to_owned(),
                        words[3].to_owned(),
                    ),
                )
            })
            .collect()
    }

    /// The address of host `name` as state records it.
    pub(super) fn address_of(&self, name: &str) -> String {
        self.ws.state()["resources"][name]["attributes"]["ssh_host"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// The activations the stand-in recorded on host `name`: (time, goal).
    pub(super) fn activations(&self, name: &str) -> Vec<(f64, String)> {
        std::fs::read_to_string(self.host(name).join("nix/var/prov-standin/activations"))
            .unwrap_or_default()
            .lines()
            .map(|line| {
                let mut words = line.split_whitespace();
                let time = words.next().unwrap().parse().unwrap();
                (time, words.next().unwrap().to_owned())
            })
            .collect()
    }

    /// The module prov generated for host `name`, as it reached the build
    /// of the system the host runs (the stand-in keeps a copy).
    pub(super) fn module(&self, name: &str) -> String {
        let state = self.ws.state();
        let system = state["hosts"][name]["system"].as_str().unwrap().to_owned();
        let on_host = self.on_host(name, &format!("{system}/prov-kubernetes.nix"));
        std::fs::read_to_string(&on_host).unwrap()
    }

    /// Every file of the cluster's material beside the spec: path → bytes.
    pub(super) fn pki(&self) -> BTreeMap<String, Vec<u8>> {
        let mut files = BTreeMap::new();
        walk(&self.ws.path().join("pki"), &mut |path| {
            let name = path.strip_prefix(self.ws.path()).unwrap();
            files.insert(
                name.to_string_lossy().into_owned(),
                std::fs::read(path).unwrap(),
            );
        });
        files
    }

    /// `prov ARGS` with extra environment, asserting it exits 0.
    pub(super) fn ok(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        ok_with(&self.ws, args, b"", env)
    }

    /// `prov plan --json` with extra environment.
    pub(super) fn plan_json(&self, env: &[(&str, &str)]) -> serde_json::Value {
        serde_json::from_str(&self.ok(&["plan", "--json"], env).stdout).unwrap()
    }

    /// Asserts the next plan is empty.
    pub(super) fn assert_converged(&self, env: &[(&str, &str)]) {
        let plan = prov_with(&self.ws, &["plan", "--detailed-exitcode"], b"", env);
        assert_eq!(plan.code, 0, "the next plan is not empty:\n{plan}");
    }
}

/// Calls `each` with every regular file under `dir`, recursively.
pub(super) fn walk(dir: &Path, each: &mut dyn FnMut(&Path)) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if entry.file_type().unwrap().is_dir() {
            walk(&path, each);
        } else {
            each(&path);
        }
    }
}

/// The files directly in `dir` (no temp files of an upload): name → bytes.
pub(super) fn read_dir_files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| {
                    (
                        e.file_name().to_string_lossy().into_owned(),
                        std::fs::read(e.path()).unwrap(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The names of the map's entries whose bytes differ between `a` and `b`
/// (or that one of them lacks).
pub(super) fn changed(
    a: &BTreeMap<String, Vec<u8>>,
    b: &BTreeMap<String, Vec<u8>>,
) -> BTreeSet<String> {
    a.keys()
        .chain(b.keys())
        .filter(|k| a.get(*k) != b.get(*k))
        .cloned()
        .collect()
}

/// The golden module of `flavor`-`node` (src/kube/nixos/snapshots: the
/// fixture's cluster cp, w1, w2 at 192.0.2.10-12) with this test's
/// addresses.
pub(super) fn golden(flavor: &str, node: &str, addresses: &[String; 3]) -> String {
    let path = repo().join(format!(
        "src/kube/nixos/snapshots/prov__kube__nixos__tests__{flavor}-{node}.snap"
    ));
    let text = std::fs::read_to_string(&path).unwrap();
    // insta's header: `---`, metadata, `---`.
    let body = text.splitn(3, "---\n").nth(2).unwrap();
    let mut body = body.to_owned();
    for (i, address) in addresses.iter().enumerate() {
        body = body.replace(&format!("192.0.2.1{i}"), address);
    }
    body
}

/// `openssl ARGS`: success and what it printed.
pub(super) fn openssl(args: &[&str]) -> (bool, String) {
    let out = Command::new("openssl").args(args).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Whether `openssl verify -purpose PURPOSE -CAfile CA CERT` passes
/// (at `at`, seconds since the epoch, when given).
pub(super) fn verifies(dir: &Path, cert: &str, ca: &str, purpose: &str, at: Option<i64>) -> bool {
    let (cert, ca) = (dir.join(cert), dir.join(ca));
    let at = at.map(|t| t.to_string());
    let mut args = vec!["verify", "-purpose", purpose];
    if let Some(at) = &at {
        args.extend(["-attime", at.as_str()]);
    }
    args.extend(["-CAfile", ca.to_str().unwrap(), cert.to_str().unwrap()]);
    let (ok, text) = openssl(&args);
    ok && text.contains(": OK")
}

/// Whether the certificate `cert` names `value` (`-checkhost` or
/// `-checkip`).
pub(super) fn names(cert: &Path, check: &str, value: &str) -> bool {
    let (ok, text) = openssl(&[
        "x509",
        "-in",
        cert.to_str().unwrap(),
        "-noout",
        check,
        value,
    ]);
    assert!(ok, "{text}");
    text.contains("does match")
}

/// The gates prov logged as passed (`PROV_LOG=…=info`), in order: (time,
/// host, gate).
pub(super) fn gates_passed(stderr: &str) -> Vec<(f64, String, String)> {
    stderr
        .lines()
        .filter(|line| line.contains("gate passed"))
        .map(|line| {
            let time = DateTime::parse_from_rfc3339(line.split_whitespace().next().unwrap())
                .unwrap_or_else(|e| panic!("{line}: {e}"));
            let field = |name: &str, end: &str| {
                let start = line.find(&format!("{name}=")).unwrap() + name.len() + 1;
                let rest = &line[start..];
                rest[..rest.find(end).unwrap_or(rest.len())].to_owned()
            };
            (
                time.timestamp_micros() as f64 / 1e6,
                field("host", " "),
                field("gate", " attempts="),
            )
        })
        .collect()
}

/// `PROV_NOW` for `days` from now.
pub(super) fn days_from_now(days: i64) -> String {
    (Utc::now() + Duration::days(days)).to_rfc3339_opts(SecondsFormat::Secs, true)
}
