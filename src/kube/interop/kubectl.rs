//! kubectl with prov's admin kubeconfig against a TLS stand-in for the
//! apiserver (`openssl s_server -WWW` presenting prov's apiserver
//! certificate and requiring a client certificate from prov's CA): TLS and
//! kubeconfig only, no real apiserver behind it.

use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use super::{free_port, install, on_host, output, wait_until, Running};
use crate::kube::files::{certificate_path, host_files, key_path};
use crate::kube::kubeconfig::admin;
use crate::kube::model::{ApiEndpoint, Flavor};
use crate::kube::pki::Kind;
use crate::kube::testing::{cluster, have_tool, issued};

/// `kubectl --kubeconfig FILE get --raw /readyz` (HOME in `dir`, so no
/// cache lands in the real one): success and stdout, or stderr.
fn readyz(dir: &Path, kubeconfig: &str) -> Result<String, String> {
    let path = dir.join(format!("kubeconfig-{}", kubeconfig.len()));
    fs_err::write(&path, kubeconfig).unwrap();
    let out = output(
        // Bounded by coreutils' timeout: kubectl's own --request-timeout
        // would add a query string the stand-in takes for a file name.
        Command::new("timeout")
            .args(["20", "kubectl"])
            .env("HOME", dir)
            .arg(format!("--kubeconfig={}", path.display()))
            .args(["get", "--raw", "/readyz"]),
    );
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

#[test]
fn kubectl_reaches_the_stand_in_with_the_admin_kubeconfig_only() {
    if !have_tool("openssl", "scripts/setup.sh test installs it")
        || !have_tool(
            "kubectl",
            "the machine's kubectl, or Debian's kubernetes-client",
        )
    {
        return;
    }
    let port = free_port();
    let mut cluster = cluster(Flavor::Nixos);
    cluster.api_endpoint = ApiEndpoint {
        host: "127.0.0.1".into(),
        port,
    };
    let material = issued(&cluster);
    let root = tempfile::tempdir().unwrap();
    install(
        root.path(),
        &host_files(&cluster, &cluster.members[0], &material).unwrap(),
    );
    let www = root.path().join("www");
    fs_err::create_dir_all(&www).unwrap();
    fs_err::write(www.join("readyz"), "ok").unwrap();
    let host = |path: String| on_host(root.path(), &path).display().to_string();
    let _server = Running(
        Command::new("openssl")
            .current_dir(&www)
            .args(["s_server", "-accept", &format!("127.0.0.1:{port}")])
            .args(["-cert", &host(certificate_path(Kind::ApiServer))])
            .args(["-key", &host(key_path(Kind::ApiServer))])
            .args(["-CAfile", &host(certificate_path(Kind::KubernetesCa))])
            .args(["-Verify", "1", "-verify_return_error", "-WWW", "-quiet"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    assert!(
        wait_until(Duration::from_secs(20), || TcpStream::connect((
            "127.0.0.1",
            port
        ))
        .is_ok()),
        "openssl s_server did not listen"
    );
    let kubeconfig = admin(&cluster, &material).unwrap();
    assert_eq!(
        readyz(root.path(), kubeconfig.expose()).unwrap().trim(),
        "ok"
    );

    // The same kubeconfig with a client identity from another cluster's CA.
    let foreign = issued(&cluster);
    let foreign_kubeconfig = admin(&cluster, &foreign).unwrap();
    let mut document: serde_json::Value = serde_json::from_str(kubeconfig.expose()).unwrap();
    let other: serde_json::Value = serde_json::from_str(foreign_kubeconfig.expose()).unwrap();
    document["users"][0]["user"] = other["users"][0]["user"].clone();
    let refused = readyz(root.path(), &document.to_string()).unwrap_err();
    assert!(
        refused.contains("remote error: tls: unknown certificate authority"),
        "{refused}"
    );
    // And the foreign CA cannot vouch for prov's apiserver either.
    let distrusting = readyz(root.path(), foreign_kubeconfig.expose()).unwrap_err();
    assert!(
        distrusting.contains("certificate signed by unknown authority"),
        "{distrusting}"
    );
}
