//! The example's bring-up: files, chains, ordering, the kubeconfig, and a
//! control plane that never gets ready.

use std::collections::BTreeMap;
use std::process::Command;

use super::cluster::*;
use crate::secrets::prov_with;

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
