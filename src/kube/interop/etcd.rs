//! Real etcd (Debian's etcd-server) on loopback with the files prov gives
//! the control plane, at the paths the NixOS module uses, client and peer
//! certificates required: the apiserver's etcd client certificate can put
//! and get; an identity from the kubernetes CA, and no certificate at all,
//! are refused.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use super::{free_port, install, on_host, output, wait_until, Running};
use crate::kube::files::{certificate_path, host_files, key_path};
use crate::kube::model::Flavor;
use crate::kube::pki::Kind;
use crate::kube::testing::{cluster, have_tool, issued};

/// `etcdctl` against `endpoint`, trusting the etcd CA, with the client
/// certificate and key of `identity` (host paths under `root`), if any.
fn etcdctl(root: &Path, endpoint: &str, identity: Option<Kind>, args: &[&str]) -> Output {
    let host = |path: String| on_host(root, &path).display().to_string();
    let mut command = Command::new("etcdctl");
    command
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoint}"))
        .arg(format!("--cacert={}", host(certificate_path(Kind::EtcdCa))))
        .args(["--dial-timeout=3s", "--command-timeout=5s"]);
    if let Some(kind) = identity {
        command
            .arg(format!("--cert={}", host(certificate_path(kind))))
            .arg(format!("--key={}", host(key_path(kind))));
    }
    output(command.args(args))
}

#[test]
fn etcd_serves_the_apiserver_client_and_refuses_other_cas() {
    if !have_tool("etcd", "scripts/setup.sh test installs etcd-server")
        || !have_tool("etcdctl", "scripts/setup.sh test installs etcd-client")
    {
        return;
    }
    let cluster = cluster(Flavor::Nixos);
    let material = issued(&cluster);
    let root = tempfile::tempdir().unwrap();
    install(
        root.path(),
        &host_files(&cluster, &cluster.members[0], &material).unwrap(),
    );
    // The control plane's etcd, as the generated module configures it, on
    // loopback ports of its own.
    let (client, peer) = (free_port(), free_port());
    let endpoint = format!("https://127.0.0.1:{client}");
    let peer_url = format!("https://127.0.0.1:{peer}");
    let host = |path: String| on_host(root.path(), &path).display().to_string();
    let log = fs_err::File::create(root.path().join("etcd.log")).unwrap();
    let _etcd = Running(
        Command::new("etcd")
            .arg("--name=cp")
            .arg(format!("--data-dir={}", root.path().join("data").display()))
            .arg(format!("--listen-client-urls={endpoint}"))
            .arg(format!("--advertise-client-urls={endpoint}"))
            .arg(format!("--listen-peer-urls={peer_url}"))
            .arg(format!("--initial-advertise-peer-urls={peer_url}"))
            .arg(format!("--initial-cluster=cp={peer_url}"))
            .arg(format!(
                "--cert-file={}",
                host(certificate_path(Kind::Etcd))
            ))
            .arg(format!("--key-file={}", host(key_path(Kind::Etcd))))
            .arg(format!(
                "--trusted-ca-file={}",
                host(certificate_path(Kind::EtcdCa))
            ))
            .arg("--client-cert-auth")
            .arg(format!(
                "--peer-cert-file={}",
                host(certificate_path(Kind::EtcdPeer))
            ))
            .arg(format!(
                "--peer-key-file={}",
                host(key_path(Kind::EtcdPeer))
            ))
            .arg(format!(
                "--peer-trusted-ca-file={}",
                host(certificate_path(Kind::EtcdCa))
            ))
            .arg("--peer-client-cert-auth")
            .stdout(Stdio::null())
            .stderr(log.into_parts().0)
            .spawn()
            .unwrap(),
    );
    let apiserver = Some(Kind::ApiServerEtcdClient);
    let healthy = wait_until(Duration::from_secs(60), || {
        etcdctl(root.path(), &endpoint, apiserver, &["endpoint", "health"])
            .status
            .success()
    });
    let etcd_log = || fs_err::read_to_string(root.path().join("etcd.log")).unwrap_or_default();
    assert!(healthy, "etcd did not become healthy:\n{}", etcd_log());

    let put = etcdctl(
        root.path(),
        &endpoint,
        apiserver,
        &["put", "/prov/probe", "hello"],
    );
    assert!(
        put.status.success(),
        "{}",
        String::from_utf8_lossy(&put.stderr)
    );
    let get = etcdctl(
        root.path(),
        &endpoint,
        apiserver,
        &["get", "--print-value-only", "/prov/probe"],
    );
    assert!(
        get.status.success(),
        "{}",
        String::from_utf8_lossy(&get.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&get.stdout).trim(), "hello");

    // The kubernetes CA's strongest identity is nobody to etcd.
    let admin = etcdctl(
        root.path(),
        &endpoint,
        Some(Kind::ClusterAdmin),
        &["get", "/prov/probe"],
    );
    assert!(!admin.status.success(), "cluster-admin reached etcd");
    let admin_error = String::from_utf8_lossy(&admin.stderr).to_lowercase();
    assert!(
        admin_error.contains("certificate")
            || admin_error.contains("deadline")
            || admin_error.contains("tls"),
        "{admin_error}"
    );
    // Neither does a client without a certificate.
    let anonymous = etcdctl(root.path(), &endpoint, None, &["get", "/prov/probe"]);
    assert!(
        !anonymous.status.success(),
        "a client without certificate reached etcd"
    );
    // etcd's log names the refusals: the handshakes failed, not a timeout.
    assert!(etcd_log().contains("rejected connection"), "{}", etcd_log());
}
