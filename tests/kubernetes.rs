//! Kubernetes on local hosts, end to end: examples/kubernetes.toml applied
//! with the stand-in systems of examples/kubernetes.nix, which run REAL etcd
//! with the certificates prov delivered, a TLS stand-in for the apiserver
//! (`openssl s_server -WWW`: prov's apiserver certificate, clients of prov's
//! CA only) and a kubelet stand-in. Chains are checked with openssl, the
//! admin kubeconfig with kubectl against the stand-in: TLS and kubeconfig
//! only, no real apiserver, kubelet or k3s can be installed here.
//!
//! Each test has loopback addresses of its own (127.0.0.130 and up), so its
//! etcd and apiserver stand-in do not meet another test's.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use chrono::{DateTime, Duration, SecondsFormat, Utc};

use crate::harness::{repo, Run, Workspace};
use crate::secrets::{files_matching, ok_with, prov_with};

/// The example's deployment name.
const DEPLOYMENT: &str = "kubernetes";
/// Where the NixOS module keeps the cluster's files on a host.
const SECRETS: &str = "/var/lib/kubernetes/secrets";
/// The k3s token's path (`services.k3s.tokenFile`).
const K3S_TOKEN: &str = "/var/lib/rancher/k3s/prov-token";

/// What a worker receives, exactly: file, mode, owner, group.
const WORKER_FILES: &[(&str, &str, &str, &str)] = &[
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
const CONTROL_PLANE_FILES: &[(&str, &str, &str, &str)] = &[
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
const CONTROL_PLANE_CHAINS: &[(&str, &str, &[&str])] = &[
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
struct Cluster {
    ws: Workspace,
    /// The addresses of cp, w1 and w2.
    addresses: [String; 3],
    /// Every control-plane address the test used (their stand-ins' files).
    api_addresses: Vec<String>,
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
fn standin_dir(address: &str) -> PathBuf {
    PathBuf::from(format!("/run/prov-standin/apiserver-{address}-6443"))
}

impl Cluster {
    /// examples/kubernetes.toml as `prov.toml` with cp, w1 and w2 at
    /// 127.0.0.FIRST and the next two addresses, changed by `edit`.
    fn new(first: u8, edit: impl FnOnce(String) -> String) -> Self {
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
    fn spec(&self) -> String {
        std::fs::read_to_string(self.ws.path().join("prov.toml")).unwrap()
    }

    /// The directory of host `name`.
    fn host(&self, name: &str) -> PathBuf {
        self.ws.host_dir(DEPLOYMENT, name)
    }

    /// Where `path` (absolute, on host `name`) lies on this machine: in the
    /// host's own layer of `/var` (or its `/nix`).
    fn on_host(&self, name: &str, path: &str) -> PathBuf {
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
    fn files(&self, name: &str) -> BTreeMap<String, Vec<u8>> {
        read_dir_files(&self.on_host(name, SECRETS))
    }

    /// `stat` of host `name`'s cluster files as the host sees them (its own
    /// /etc names the users the activation made): name → (mode, owner,
    /// group).
    fn modes(&self, name: &str, dir: &str) -> BTreeMap<String, (String, String, String)> {
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
    fn address_of(&self, name: &str) -> String {
        self.ws.state()["resources"][name]["attributes"]["ssh_host"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// The activations the stand-in recorded on host `name`: (time, goal).
    fn activations(&self, name: &str) -> Vec<(f64, String)> {
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
    fn module(&self, name: &str) -> String {
        let state = self.ws.state();
        let system = state["hosts"][name]["system"].as_str().unwrap().to_owned();
        let on_host = self.on_host(name, &format!("{system}/prov-kubernetes.nix"));
        std::fs::read_to_string(&on_host).unwrap()
    }

    /// Every file of the cluster's material beside the spec: path → bytes.
    fn pki(&self) -> BTreeMap<String, Vec<u8>> {
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
    fn ok(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        ok_with(&self.ws, args, b"", env)
    }

    /// `prov plan --json` with extra environment.
    fn plan_json(&self, env: &[(&str, &str)]) -> serde_json::Value {
        serde_json::from_str(&self.ok(&["plan", "--json"], env).stdout).unwrap()
    }

    /// Asserts the next plan is empty.
    fn assert_converged(&self, env: &[(&str, &str)]) {
        let plan = prov_with(&self.ws, &["plan", "--detailed-exitcode"], b"", env);
        assert_eq!(plan.code, 0, "the next plan is not empty:\n{plan}");
    }
}

/// Calls `each` with every regular file under `dir`, recursively.
fn walk(dir: &Path, each: &mut dyn FnMut(&Path)) {
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
fn read_dir_files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
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
fn changed(a: &BTreeMap<String, Vec<u8>>, b: &BTreeMap<String, Vec<u8>>) -> BTreeSet<String> {
    a.keys()
        .chain(b.keys())
        .filter(|k| a.get(*k) != b.get(*k))
        .cloned()
        .collect()
}

/// The golden module of `flavor`-`node` (src/kube/nixos/snapshots: the
/// fixture's cluster cp, w1, w2 at 192.0.2.10-12) with this test's
/// addresses.
fn golden(flavor: &str, node: &str, addresses: &[String; 3]) -> String {
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
fn openssl(args: &[&str]) -> (bool, String) {
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
fn verifies(dir: &Path, cert: &str, ca: &str, purpose: &str, at: Option<i64>) -> bool {
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
fn names(cert: &Path, check: &str, value: &str) -> bool {
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
fn gates_passed(stderr: &str) -> Vec<(f64, String, String)> {
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
fn days_from_now(days: i64) -> String {
    (Utc::now() + Duration::days(days)).to_rfc3339_opts(SecondsFormat::Secs, true)
}

#[test]
fn the_example_comes_up_control_plane_first_with_exactly_the_files_each_role_needs() {
    let cluster = Cluster::new(130, |spec| spec);
    let [cp, w1, w2] = cluster.addresses.clone();
    let applied = cluster.ok(
        &["apply", "--auto-approve"],
        &[("PROV_LOG", "prov::deploy::gates=info")],
    );
    assert!(applied.stdout.contains("3 hosts deployed"), "{applied}");
    for gate in [
        "cp: waiting for gate: etcd healthy (client-certificate TLS)",
        "cp: waiting for gate: apiserver /readyz",
        "w1: waiting for gate: node w1 Ready",
    ] {
        assert!(applied.stdout.contains(gate), "{applied}");
    }

    // Exactly the files each role needs, with the module's modes and owners.
    let expected = |tables: &[&[(&str, &str, &str, &str)]]| {
        tables
            .iter()
            .flat_map(|t| t.iter())
            .map(|(n, m, o, g)| (n.to_string(), (m.to_string(), o.to_string(), g.to_string())))
            .collect::<BTreeMap<_, _>>()
    };
    assert_eq!(
        cluster.modes("cp", SECRETS),
        expected(&[WORKER_FILES, CONTROL_PLANE_FILES])
    );
    for worker in ["w1", "w2"] {
        assert_eq!(cluster.modes(worker, SECRETS), expected(&[WORKER_FILES]));
    }

    // Every chain verifies for its purpose; a client certificate is no
    // server's, and the three CAs are separate.
    let dir = cluster.on_host("cp", SECRETS);
    for (cert, ca, purposes) in CONTROL_PLANE_CHAINS {
        for purpose in *purposes {
            assert!(
                verifies(&dir, cert, ca, purpose, None),
                "{cert} for {purpose}"
            );
        }
        if purposes == &["sslclient"] {
            assert!(!verifies(&dir, cert, ca, "sslserver", None), "{cert}");
        }
    }
    assert!(!verifies(
        &dir,
        "cluster-admin.pem",
        "etcd-ca.pem",
        "sslclient",
        None
    ));
    assert!(!verifies(
        &dir,
        "kube-apiserver-etcd-client.pem",
        "ca.pem",
        "sslclient",
        None
    ));
    for (worker, address) in [("w1", &w1), ("w2", &w2)] {
        let dir = cluster.on_host(worker, SECRETS);
        assert!(verifies(&dir, "kubelet.pem", "ca.pem", "sslserver", None));
        for client in [
            "kubelet-client.pem",
            "kube-proxy-client.pem",
            "flannel-client.pem",
        ] {
            assert!(
                verifies(&dir, client, "ca.pem", "sslclient", None),
                "{worker} {client}"
            );
        }
        let kubelet = dir.join("kubelet.pem");
        assert!(names(&kubelet, "-checkhost", worker));
        assert!(names(&kubelet, "-checkip", address));
        assert!(!names(&kubelet, "-checkip", &cp));
    }
    // The apiserver's names: the host's, the service's, loopback.
    let apiserver = dir.join("kube-apiserver.pem");
    for host in [
        "cp",
        "localhost",
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
        "kubernetes.default.svc.cluster.local",
    ] {
        assert!(names(&apiserver, "-checkhost", host), "{host}");
    }
    assert!(!names(&apiserver, "-checkhost", "w1"));
    for ip in [cp.as_str(), "10.0.0.1", "127.0.0.1"] {
        assert!(names(&apiserver, "-checkip", ip), "{ip}");
    }
    assert!(!names(&apiserver, "-checkip", &w1));
    let etcd = dir.join("etcd.pem");
    assert!(names(&etcd, "-checkip", &cp) && names(&etcd, "-checkhost", "cp"));

    // The next plan is empty.
    cluster.assert_converged(&[]);

    // Ordering: the control plane's gates passed, in order, before any
    // worker was activated; each worker's gates after its activation.
    let passed = gates_passed(&applied.stderr);
    let at = |host: &str, gate: &str| {
        passed
            .iter()
            .find(|(_, h, g)| h == host && g == gate)
            .unwrap_or_else(|| panic!("no `{gate}` passed on {host}:\n{}", applied.stderr))
            .0
    };
    let cp_activated = cluster.activations("cp")[0].0;
    let etcd_up = at("cp", "etcd healthy (client-certificate TLS)");
    let live = at("cp", "apiserver /livez");
    let ready = at("cp", "apiserver /readyz");
    assert!(cp_activated < etcd_up && etcd_up <= live && live <= ready);
    for worker in ["w1", "w2"] {
        let activations = cluster.activations(worker);
        assert_eq!(activations.len(), 1, "{worker}: {activations:?}");
        let activated = activations[0].0;
        assert!(
            activated > ready,
            "{worker} activated at {activated}, before the control plane was ready at {ready}"
        );
        assert!(activated < at(worker, "kubelet /healthz"));
        assert!(at(worker, "kubelet /healthz") <= at(worker, &format!("node {worker} Ready")));
    }

    // The generated modules reached the builds, as the golden files say.
    for (node, address) in [("cp", &cp), ("w1", &w1), ("w2", &w2)] {
        assert_eq!(
            cluster.module(node).trim_end(),
            golden("nixos", node, &cluster.addresses).trim_end(),
            "{node} at {address}"
        );
    }

    // The admin kubeconfig: 0600, parsed by kubectl, and it reaches the
    // apiserver stand-in over mutual TLS.
    let printed = cluster.ok(&["kubeconfig", "dev"], &[]).stdout;
    cluster.ok(&["kubeconfig", "dev", "-o", "admin.kubeconfig"], &[]);
    let file = cluster.ws.path().join("admin.kubeconfig");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), printed);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let kubectl = |args: &[&str]| {
        let out = Command::new("timeout")
            .args(["20", "kubectl", "--kubeconfig"])
            .arg(&file)
            .args(args)
            .env("HOME", cluster.ws.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "kubectl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let view: serde_json::Value =
        serde_json::from_str(&kubectl(&["config", "view", "--raw", "-o", "json"])).unwrap();
    assert_eq!(
        view["clusters"][0]["cluster"]["server"],
        format!("https://{cp}:6443")
    );
    assert!(view["users"][0]["user"]["client-key-data"].is_string());
    assert_eq!(kubectl(&["get", "--raw", "/readyz"]).trim(), "ok");
}

#[test]
fn a_control_plane_that_never_gets_ready_is_rolled_back_and_no_worker_is_touched() {
    let cluster = Cluster::new(133, |spec| {
        spec.replacen("attr = \"node\"", "attr = \"nodeWithoutReadyz\"", 1)
            .replace("gate_timeout_seconds = 120", "gate_timeout_seconds = 6")
    });
    let failed = prov_with(&cluster.ws, &["apply", "--auto-approve"], b"", &[]);
    assert_ne!(failed.code, 0, "{failed}");
    assert!(
        failed
            .stderr
            .contains("gate `apiserver /readyz` did not pass within 6s"),
        "{failed}"
    );
    assert!(failed.stderr.contains("cp ROLLED BACK"), "{failed}");
    assert!(
        failed
            .stderr
            .contains("not started (on_failure = \"stop\"): w1, w2"),
        "{failed}"
    );
    assert!(failed
        .stdout
        .contains("cp: waiting for gate: apiserver /readyz"));
    // The control plane went back: its only system was removed.
    assert_eq!(cluster.activations("cp").len(), 1);
    assert!(crate::deploy::profile(&cluster.host("cp")).is_none());
    let state = cluster.ws.state();
    assert!(state["hosts"]["cp"]["system"].is_null(), "{state:#}");
    // No worker was touched: nothing copied, uploaded or activated.
    for worker in ["w1", "w2"] {
        assert!(cluster.activations(worker).is_empty(), "{worker}");
        assert!(
            !cluster.host(worker).join("nix/var/prov").exists(),
            "{worker}"
        );
        assert!(!cluster.on_host(worker, SECRETS).exists(), "{worker}");
        assert!(
            state["hosts"][worker]["secrets"].is_null(),
            "{worker}: {state:#}"
        );
        assert!(
            state["hosts"][worker]["system"].is_null(),
            "{worker}: {state:#}"
        );
    }

    // A control plane that gets ready: the same apply goes through.
    cluster.ws.write(
        "prov.toml",
        &cluster.spec().replace("nodeWithoutReadyz", "node"),
    );
    let applied = cluster.ok(&["apply", "--auto-approve"], &[]);
    assert!(applied.stdout.contains("3 hosts deployed"), "{applied}");
    cluster.assert_converged(&[]);
}

#[test]
fn adding_a_worker_issues_only_its_certificates_and_touches_no_other_host() {
    let cluster = Cluster::new(136, |spec| spec);
    cluster.ok(&["apply", "--auto-approve"], &[]);
    let pki = cluster.pki();
    let hosts = ["cp", "w1", "w2"];
    let files: Vec<_> = hosts.iter().map(|h| cluster.files(h)).collect();
    let activations: Vec<_> = hosts.iter().map(|h| cluster.activations(h)).collect();
    let uploads = |host: &str| {
        cluster.ws.state()["hosts"][host]["secrets"]
            .as_object()
            .unwrap()
            .clone()
    };
    let recorded: Vec<_> = hosts.iter().map(|h| uploads(h)).collect();

    let w3 = "127.0.0.139";
    let spec = format!(
        "{}\n[hosts.w3]\ntarget = \"local\"\naddress = \"{w3}\"\nnix = {{ file = \"kubernetes.nix\", attr = \"node\" }}\n\n[hosts.w3.kubernetes]\ncluster = \"dev\"\nroles = [\"worker\"]\n",
        cluster.spec()
    );
    cluster.ws.write("prov.toml", &spec);
    let plan = cluster.plan_json(&[]);
    let items: BTreeSet<(String, String)> = plan["certificates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["item"].as_str().unwrap().to_owned(),
                c["action"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let new = |item: &str| (format!("{item} (w3)"), "new".to_owned());
    assert_eq!(
        items,
        BTreeSet::from([
            new("kubelet"),
            new("kubelet-client"),
            new("kube-proxy-client"),
            new("flannel-client")
        ]),
        "{plan:#}"
    );
    let addresses = |list: &str| {
        plan[list]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|c| c["address"].as_str().unwrap().to_owned())
                    .collect::<BTreeSet<_>>()
            })
            .unwrap_or_default()
    };
    let only_w3 = BTreeSet::from(["w3".to_owned()]);
    assert_eq!(addresses("deploys"), only_w3, "{plan:#}");
    assert_eq!(addresses("secrets"), only_w3, "{plan:#}");
    assert_eq!(addresses("changes"), only_w3, "{plan:#}");

    let applied = cluster.ok(&["apply", "--auto-approve"], &[]);
    assert!(applied.stdout.contains("1 host deployed"), "{applied}");
    for (i, host) in hosts.iter().enumerate() {
        assert!(!applied.stdout.contains(&format!("{host}:")), "{applied}");
        assert_eq!(cluster.files(host), files[i], "{host}'s files changed");
        assert_eq!(
            cluster.activations(host),
            activations[i],
            "{host} activated"
        );
        assert_eq!(uploads(host), recorded[i], "{host}'s secrets in state");
    }
    let after = cluster.pki();
    let differ = changed(&pki, &after);
    assert!(
        differ.iter().all(|f| f.starts_with("pki/dev/nodes/w3/")),
        "{differ:?}"
    );
    assert_eq!(differ.len(), 8, "{differ:?}");
    assert_eq!(cluster.modes("w3", SECRETS).len(), WORKER_FILES.len());
    cluster.assert_converged(&[]);
}

#[test]
fn moving_the_control_plane_reissues_exactly_the_certificates_naming_its_address() {
    let mut cluster = Cluster::new(140, |spec| spec);
    cluster.ok(&["apply", "--auto-approve"], &[]);
    let before = cluster.pki();
    let (old, new) = (cluster.addresses[0].clone(), "127.0.0.143".to_owned());
    cluster.api_addresses.push(new.clone());
    let spec = cluster
        .spec()
        .replace(&format!("\"{old}\""), &format!("\"{new}\""));
    cluster.ws.write("prov.toml", &spec);

    let plan = cluster.plan_json(&[]);
    let reissued: BTreeMap<String, String> = plan["certificates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            assert_eq!(c["action"], "reissue", "{c}");
            (
                c["item"].as_str().unwrap().to_owned(),
                c["reason"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let expected: BTreeSet<&str> = [
        "kube-apiserver (cp)",
        "etcd (cp)",
        "etcd-peer (cp)",
        "kubelet (cp)",
    ]
    .into();
    assert_eq!(
        reissued.keys().map(String::as_str).collect::<BTreeSet<_>>(),
        expected
    );
    for reason in reissued.values() {
        assert_eq!(reason, &format!("SANs changed: +{new} -{old}"));
    }

    let applied = cluster.ok(&["apply", "--auto-approve"], &[]);
    assert!(applied.stdout.contains("1 replaced"), "{applied}");
    let after = cluster.pki();
    let expected_files: BTreeSet<String> = ["kube-apiserver", "etcd", "etcd-peer", "kubelet"]
        .iter()
        .flat_map(|stem| {
            [
                format!("pki/dev/nodes/cp/{stem}.pem"),
                format!("pki/dev/nodes/cp/{stem}-key.pem.age"),
            ]
        })
        .collect();
    assert_eq!(changed(&before, &after), expected_files);
    let apiserver = cluster.on_host("cp", &format!("{SECRETS}/kube-apiserver.pem"));
    assert!(names(&apiserver, "-checkip", &new));
    assert!(!names(&apiserver, "-checkip", &old));
    // The workers follow: their modules and kubeconfigs name the new address.
    for worker in ["w1", "w2"] {
        assert!(cluster
            .module(worker)
            .contains(&format!("apiserverAddress = \"https://{new}:6443\";")));
        let kubeconfig = &cluster.files(worker)["flannel.kubeconfig"];
        assert!(String::from_utf8_lossy(kubeconfig).contains(&format!("https://{new}:6443")));
    }
    cluster.assert_converged(&[]);
}

#[test]
fn a_certificate_inside_renew_before_is_renewed_and_nothing_else_changes() {
    // A control plane and one worker.
    let cluster = Cluster::new(144, |spec| {
        spec[..spec.find("[hosts.w2]").unwrap()].to_owned()
    });
    // Issued 200 days ago (leaves expire in 165 days)...
    let past = days_from_now(-200);
    cluster.ok(&["apply", "--auto-approve"], &[("PROV_NOW", &past)]);
    // ...and every leaf but w1's kubelet certificate issued again now (a
    // deleted certificate is reissued), so that one expires first.
    let keep = "pki/dev/nodes/w1/kubelet.pem";
    let authorities = [
        "kubernetes-ca.pem",
        "etcd-ca.pem",
        "front-proxy-ca.pem",
        "service-account.pem",
    ];
    for (path, _) in cluster.pki() {
        let name = Path::new(&path).file_name().unwrap().to_str().unwrap();
        if path.ends_with(".pem") && path != keep && !authorities.contains(&name) {
            std::fs::remove_file(cluster.ws.path().join(&path)).unwrap();
        }
    }
    cluster.ok(&["apply", "--auto-approve"], &[]);
    cluster.assert_converged(&[]);
    let pki = cluster.pki();
    let files = [cluster.files("cp"), cluster.files("w1")];

    // 150 days on: only that certificate is within renew_before (30 days).
    let later = days_from_now(150);
    let env = [("PROV_NOW", later.as_str())];
    let plan = cluster.plan_json(&env);
    let certificates = plan["certificates"].as_array().unwrap();
    assert_eq!(certificates.len(), 1, "{plan:#}");
    assert_eq!(certificates[0]["item"], "kubelet (w1)");
    assert_eq!(certificates[0]["action"], "reissue");
    let reason = certificates[0]["reason"].as_str().unwrap();
    assert!(reason.contains("within renew_before 30d"), "{reason}");
    let text = cluster.ok(&["plan"], &env).stdout;
    assert!(
        text.contains("kubelet (w1) of cluster dev will be reissued (expires"),
        "{text}"
    );

    cluster.ok(&["apply", "--auto-approve"], &env);
    let renewed = cluster.pki();
    assert_eq!(
        changed(&pki, &renewed),
        BTreeSet::from([
            keep.to_owned(),
            "pki/dev/nodes/w1/kubelet-key.pem.age".to_owned()
        ])
    );
    // On the hosts: the worker's kubelet pair replaced, every other file
    // byte-identical.
    assert!(changed(&files[0], &cluster.files("cp")).is_empty());
    let w1 = cluster.files("w1");
    assert_eq!(
        changed(&files[1], &w1),
        BTreeSet::from(["kubelet.pem".to_owned(), "kubelet-key.pem".to_owned()])
    );
    assert_eq!(w1["kubelet.pem"], renewed[keep]);
    // Valid from then, for a year, signed by the same CA.
    let then = DateTime::parse_from_rfc3339(&later).unwrap().timestamp();
    let dir = cluster.on_host("w1", SECRETS);
    assert!(verifies(
        &dir,
        "kubelet.pem",
        "ca.pem",
        "sslserver",
        Some(then + 60)
    ));
    assert!(!verifies(
        &dir,
        "kubelet.pem",
        "ca.pem",
        "sslserver",
        Some(then + 366 * 86400)
    ));
    cluster.assert_converged(&env);
}

#[test]
fn k3s_members_share_one_root_only_token_and_workers_join_the_server() {
    let cluster = Cluster::new(147, |spec| {
        spec.replace("flavor = \"nixos\"", "flavor = \"k3s\"")
    });
    let applied = cluster.ok(&["apply", "--auto-approve"], &[("PROV_LOG", "trace")]);
    assert!(
        applied.stdout.contains("cp: waiting for gate: k3s /readyz"),
        "{applied}"
    );
    let [cp, ..] = cluster.addresses.clone();
    let mut tokens = BTreeSet::new();
    for node in ["cp", "w1", "w2"] {
        let token = std::fs::read(cluster.on_host(node, K3S_TOKEN)).unwrap();
        assert!(token.len() >= 32, "{node}: a {} byte token", token.len());
        tokens.insert(token);
        let modes = cluster.modes(node, "/var/lib/rancher/k3s");
        assert_eq!(
            modes,
            BTreeMap::from([(
                "prov-token".to_owned(),
                ("400".to_owned(), "root".to_owned(), "root".to_owned())
            )]),
            "{node}"
        );
        // Nothing of the nixos flavour's PKI.
        assert!(!cluster.on_host(node, SECRETS).exists(), "{node}");
        assert_eq!(
            cluster.module(node).trim_end(),
            golden("k3s", node, &cluster.addresses).trim_end(),
            "{node}"
        );
    }
    assert_eq!(tokens.len(), 1, "one token for every member");
    for worker in ["w1", "w2"] {
        assert!(cluster
            .module(worker)
            .contains(&format!("serverAddr = \"https://{cp}:6443\";")));
    }
    assert!(cluster.module("cp").contains("clusterInit = true;"));
    // The token appears nowhere prov writes or prints.
    let token = String::from_utf8(tokens.into_iter().next().unwrap()).unwrap();
    let token = token.trim();
    let state = cluster.ok(&["state", "pull"], &[]).stdout;
    let plan = cluster.ok(&["plan", "--json"], &[("PROV_LOG", "trace")]);
    for text in [
        &applied.stdout,
        &applied.stderr,
        &state,
        &plan.stdout,
        &plan.stderr,
    ] {
        assert!(!text.contains(token), "the k3s token leaked");
    }
    for bytes in cluster.pki().values() {
        assert!(
            !String::from_utf8_lossy(bytes).contains(token),
            "the token is in pki/"
        );
    }
    cluster.assert_converged(&[]);
}

/// How many characters of a key or secret [`Needles`] look for.
const NEEDLE: usize = 24;

/// Stretches of private keys and secrets to look for, each [`NEEDLE`]
/// base64 characters long, found in one pass over what is searched (a
/// search per needle through megabytes of trace output is too slow for a
/// test binary built without optimisation).
struct Needles(HashSet<Vec<u8>>);

impl Needles {
    /// The distinctive parts of every private key and secret among `host`'s
    /// cluster files: the end of each line of a key's PEM body, a stretch
    /// of the PEM in base64 (as a kubeconfig embeds it), the encryption key.
    ///
    /// A private key's PEM holds its public key too (PKCS#8 carries it for
    /// EC keys), and the certificates hold that in the open: a stretch that
    /// also appears in a certificate or public key (as is, or base64 again
    /// as a kubeconfig embeds it) is public and is not looked for.
    fn add_host(&mut self, cluster: &Cluster, host: &str) {
        use base64::Engine as _;
        let files = cluster.files(host);
        let mut public = HashSet::new();
        for (name, bytes) in &files {
            if name.ends_with(".pem") && !name.ends_with("-key.pem") {
                let encoded = base64::engine::general_purpose::STANDARD.encode(bytes);
                for text in [bytes.as_slice(), encoded.as_bytes()] {
                    public.extend(text.windows(NEEDLE).map(<[u8]>::to_vec));
                }
            }
        }
        let before = self.0.clone();
        for (name, bytes) in files {
            let text = String::from_utf8(bytes).unwrap();
            if name.ends_with("-key.pem") {
                // The end of each line: their starts are the same DER
                // header in every key.
                for line in text.lines().filter(|l| !l.starts_with("-----")) {
                    if line.len() >= NEEDLE {
                        self.0
                            .insert(line.as_bytes()[line.len() - NEEDLE..].to_vec());
                    }
                }
                let encoded = base64::engine::general_purpose::STANDARD.encode(text.as_bytes());
                let middle = encoded.len() / 2;
                self.0
                    .insert(encoded.as_bytes()[middle..middle + NEEDLE].to_vec());
            }
            if name == "encryption-config.json" {
                let config: serde_json::Value = serde_json::from_str(&text).unwrap();
                let key = &config["resources"][0]["providers"][0]["aescbc"]["keys"][0]["secret"];
                self.0
                    .insert(key.as_str().unwrap().as_bytes()[..NEEDLE].to_vec());
            }
        }
        self.0
            .retain(|needle| before.contains(needle) || !public.contains(needle));
    }

    /// Whether `haystack` holds one of them: every window of every run of
    /// base64 characters long enough is looked up.
    fn found_in(&self, haystack: &[u8]) -> bool {
        let base64 = |b: &u8| b.is_ascii_alphanumeric() || *b == b'+' || *b == b'/';
        haystack
            .split(|b| !base64(b))
            .filter(|run| run.len() >= NEEDLE)
            .any(|run| run.windows(NEEDLE).any(|w| self.0.contains(w)))
    }
}

#[test]
fn no_private_key_or_secret_in_state_plans_logs_or_temp_files() {
    let started = std::time::SystemTime::now();
    let cluster = Cluster::new(150, |spec| spec);
    let trace = [("PROV_LOG", "trace")];
    let mut seen = Vec::new();
    let record = |seen: &mut Vec<u8>, run: &Run| {
        seen.extend_from_slice(run.stdout.as_bytes());
        seen.extend_from_slice(run.stderr.as_bytes());
    };
    record(&mut seen, &cluster.ok(&["apply", "--auto-approve"], &trace));
    // The keys as the first apply delivered them (the renewal below
    // replaces every leaf's: both generations are looked for).
    let mut needles = Needles(HashSet::new());
    for host in ["cp", "w1", "w2"] {
        needles.add_host(&cluster, host);
    }
    record(&mut seen, &cluster.ok(&["plan"], &trace));
    record(&mut seen, &cluster.ok(&["state", "pull"], &[]));
    // Every leaf due for renewal: plans that upload every file again.
    let later = days_from_now(340);
    let renew = [("PROV_LOG", "trace"), ("PROV_NOW", later.as_str())];
    let json = cluster.ok(&["plan", "--json"], &renew);
    assert!(json.stdout.contains("within renew_before"), "{json}");
    record(&mut seen, &json);
    record(&mut seen, &cluster.ok(&["plan"], &renew));
    record(
        &mut seen,
        &cluster.ok(&["plan", "--out", "renew.plan"], &renew),
    );
    seen.extend(std::fs::read(cluster.ws.path().join("renew.plan")).unwrap());
    let applied = cluster.ok(&["apply", "renew.plan"], &renew);
    assert!(applied.stdout.contains("uploaded secret"), "{applied}");
    record(&mut seen, &applied);
    record(&mut seen, &cluster.ok(&["state", "pull"], &[]));
    cluster.assert_converged(&[("PROV_NOW", later.as_str())]);

    let first = needles.0.len();
    for host in ["cp", "w1", "w2"] {
        needles.add_host(&cluster, host);
    }
    assert!(needles.0.len() > first, "the renewal made new keys");
    // 42 keys (21 per generation), each with private stretches of its own.
    assert!(needles.0.len() > 100, "{} needles", needles.0.len());
    // The search finds what it looks for: every key on the hosts.
    for host in ["cp", "w1", "w2"] {
        for (name, bytes) in cluster.files(host) {
            if name.ends_with("-key.pem") {
                assert!(
                    needles.found_in(&bytes),
                    "{host}'s {name} is not looked for"
                );
            }
        }
    }
    assert!(
        !needles.found_in(&seen),
        "a private key or secret leaked into prov's output, state or plan"
    );
    // Nor in any file written since the test started, but the hosts' own
    // cluster files (where they belong) and etcd's data (large, and it holds
    // no key).
    let skip = |path: &Path| {
        let path = path.to_string_lossy();
        path.ends_with("/lib/kubernetes/secrets") || path.ends_with("/lib/etcd")
    };
    let mut hits = Vec::new();
    let mut dirs = vec![PathBuf::from("/tmp"), PathBuf::from("/dev/shm")];
    if let Some(runtime) = std::env::var_os("XDG_RUNTIME_DIR") {
        dirs.push(PathBuf::from(runtime));
    }
    dirs.push(cluster.ws.path().to_owned());
    for dir in dirs {
        files_matching(
            &dir,
            started,
            &|bytes| needles.found_in(bytes),
            &skip,
            &mut hits,
        );
    }
    hits.sort();
    hits.dedup();
    assert!(hits.is_empty(), "private keys or secrets found in {hits:?}");
}
