//! Changes to a running cluster: a new worker, a moved control plane, a
//! renewal; and the k3s flavour.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use chrono::DateTime;

use super::cluster::*;

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
