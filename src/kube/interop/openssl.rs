//! openssl checks every certificate prov issues: the chain to its own CA
//! with the right purpose, not to another CA, the apiserver's names and
//! addresses, and that every key is the certificate's.

use std::process::Command;

use super::output;
use crate::kube::model::Flavor;
use crate::kube::pki::issue::Material;
use crate::kube::pki::{desired, Form, ItemId, Kind, Usage};
use crate::kube::testing::{cluster, have_tool, issued, APISERVER_DNS};

/// Writes `text` to `dir/name`, returning the path as a string.
fn file(dir: &std::path::Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    fs_err::write(&path, text).unwrap();
    path.display().to_string()
}

/// `openssl verify -CAfile CA -purpose PURPOSE [extra] CERT`: whether it
/// says OK.
fn verifies(ca: &str, purpose: &str, certificate: &str, extra: &[&str]) -> bool {
    let out = output(
        Command::new("openssl")
            .args(["verify", "-CAfile", ca, "-purpose", purpose])
            .args(extra)
            .arg(certificate),
    );
    out.status.success()
        && String::from_utf8_lossy(&out.stdout)
            .trim_end()
            .ends_with(": OK")
}

/// The public key openssl derives from `args` (`x509 -pubkey` or `pkey -pubout`).
fn public_key(args: &[&str]) -> String {
    let out = output(Command::new("openssl").args(args));
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn pem<'a>(material: &'a Material, id: &ItemId) -> &'a str {
    material.items[id].public.as_deref().unwrap()
}

#[test]
fn every_chain_verifies_with_its_purpose_and_only_there() {
    if !have_tool("openssl", "scripts/setup.sh test installs it") {
        return;
    }
    let cluster = cluster(Flavor::Nixos);
    let material = issued(&cluster);
    let dir = tempfile::tempdir().unwrap();
    let cas: Vec<(Kind, String)> = [Kind::KubernetesCa, Kind::EtcdCa, Kind::FrontProxyCa]
        .into_iter()
        .map(|kind| {
            let id = ItemId::cluster(kind);
            (kind, file(dir.path(), kind.stem(), pem(&material, &id)))
        })
        .collect();
    let mut checked = 0;
    for item in desired(&cluster) {
        let name = item.id.to_string().replace([' ', '(', ')'], "_");
        let key = file(
            dir.path(),
            &format!("{name}-key"),
            material.items[&item.id].secret.expose(),
        );
        let Form::Certificate(spec) = &item.form else {
            if item.form == Form::KeyPair {
                let public = file(dir.path(), &name, pem(&material, &item.id));
                assert_eq!(
                    public_key(&["pkey", "-in", &key, "-pubout"]),
                    public_key(&["pkey", "-pubin", "-in", &public, "-pubout"]),
                    "{}",
                    item.id
                );
            }
            continue;
        };
        let certificate = file(dir.path(), &name, pem(&material, &item.id));
        // The key is the certificate's, and openssl reads both.
        assert_eq!(
            public_key(&["pkey", "-in", &key, "-pubout"]),
            public_key(&["x509", "-in", &certificate, "-pubkey", "-noout"]),
            "{}",
            item.id
        );
        let own = spec.issuer.unwrap_or(item.id.kind);
        for (kind, ca) in &cas {
            let (server, client) = match spec.usage {
                Usage::Authority => (true, true),
                Usage::Server => (true, false),
                Usage::Client => (false, true),
                Usage::ServerAndClient => (true, true),
            };
            let mine = *kind == own;
            assert_eq!(
                verifies(ca, "sslserver", &certificate, &[]),
                mine && server,
                "{} sslserver against {}",
                item.id,
                kind.stem()
            );
            assert_eq!(
                verifies(ca, "sslclient", &certificate, &[]),
                mine && client,
                "{} sslclient against {}",
                item.id,
                kind.stem()
            );
        }
        checked += 1;
    }
    assert_eq!(checked, 3 + 1 + 10 + 4 * 3);
}

#[test]
fn the_apiserver_certificate_names_every_way_to_reach_it() {
    if !have_tool("openssl", "scripts/setup.sh test installs it") {
        return;
    }
    let cluster = cluster(Flavor::Nixos);
    let material = issued(&cluster);
    let dir = tempfile::tempdir().unwrap();
    let ca = file(
        dir.path(),
        "ca.pem",
        pem(&material, &ItemId::cluster(Kind::KubernetesCa)),
    );
    let apiserver = file(
        dir.path(),
        "kube-apiserver.pem",
        pem(&material, &ItemId::node("cp", Kind::ApiServer)),
    );
    let x509_check = |flag: &str, value: &str| {
        let out = output(
            Command::new("openssl").args(["x509", "-noout", "-in", &apiserver, flag, value]),
        );
        String::from_utf8_lossy(&out.stdout).contains("does match certificate")
    };
    for name in APISERVER_DNS {
        assert!(x509_check("-checkhost", name), "{name}");
        assert!(
            verifies(&ca, "sslserver", &apiserver, &["-verify_hostname", name]),
            "{name}"
        );
    }
    // The API endpoint, the node's address, the `kubernetes` service, loopback.
    for ip in ["192.0.2.10", "10.0.0.1", "127.0.0.1"] {
        assert!(x509_check("-checkip", ip), "{ip}");
        assert!(
            verifies(&ca, "sslserver", &apiserver, &["-verify_ip", ip]),
            "{ip}"
        );
    }
    assert!(!x509_check("-checkhost", "w1"));
    assert!(!x509_check("-checkip", "192.0.2.11"));
    assert!(!verifies(
        &ca,
        "sslserver",
        &apiserver,
        &["-verify_hostname", "w1"]
    ));
    assert!(!verifies(
        &ca,
        "sslserver",
        &apiserver,
        &["-verify_ip", "10.0.0.2"]
    ));
    // A worker's kubelet serves its own names only.
    let kubelet = file(
        dir.path(),
        "kubelet.pem",
        pem(&material, &ItemId::node("w1", Kind::Kubelet)),
    );
    assert!(verifies(
        &ca,
        "sslserver",
        &kubelet,
        &["-verify_hostname", "w1"]
    ));
    assert!(verifies(
        &ca,
        "sslserver",
        &kubelet,
        &["-verify_ip", "192.0.2.11"]
    ));
    assert!(!verifies(
        &ca,
        "sslserver",
        &kubelet,
        &["-verify_hostname", "cp"]
    ));
}
