//! The gates of a Kubernetes bring-up: after a member is activated, what
//! must answer before prov goes on. A control plane: etcd healthy over
//! client-certificate TLS, then the apiserver's `/livez` and `/readyz` with
//! the admin certificate. A worker: the kubelet's `/healthz` on the host,
//! then its node Ready through the API. Each gate is retried until it
//! passes or its time is up; a gate that does not pass rolls the host back
//! and starts nothing further (`deploy/run.rs`).

use std::fmt;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use hyper::{Request, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::kube::model::{Cluster, Flavor, Member};
use crate::kube::pki::issue::{Item, Material};
use crate::kube::pki::Kind;
use crate::ssh::Connection;

/// The kubelet's health endpoint on its host (`healthzBindAddress`,
/// `healthzPort`: the kubelet's defaults).
const KUBELET_HEALTHZ: (&str, u16) = ("127.0.0.1", 10248);
/// etcd's client port.
const ETCD_CLIENT_PORT: u16 = 2379;
/// Pause between two tries of a gate.
const INTERVAL: Duration = Duration::from_secs(2);
/// The limit of one try.
const ATTEMPT_LIMIT: Duration = Duration::from_secs(10);

/// One thing that must answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gate {
    /// etcd on the control plane answers `/health` healthy to the
    /// apiserver's etcd client certificate.
    EtcdHealthy,
    /// The apiserver's `/livez` is 200 to the admin certificate.
    ApiLive,
    /// The apiserver's `/readyz` is 200 to the admin certificate.
    ApiReady,
    /// The kubelet's `/healthz` on the host answers ok.
    KubeletHealthy,
    /// The node is Ready through the API.
    NodeReady(String),
    /// k3s: its own kubectl on the server answers `/readyz`.
    K3sReady,
}

impl fmt::Display for Gate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::EtcdHealthy => f.write_str("etcd healthy (client-certificate TLS)"),
            Self::ApiLive => f.write_str("apiserver /livez"),
            Self::ApiReady => f.write_str("apiserver /readyz"),
            Self::KubeletHealthy => f.write_str("kubelet /healthz"),
            Self::NodeReady(node) => write!(f, "node {node} Ready"),
            Self::K3sReady => f.write_str("k3s /readyz"),
        }
    }
}

/// A cluster as the bring-up sees it.
#[derive(Debug, Clone)]
pub struct ClusterGates {
    /// The cluster, its members' addresses known.
    pub cluster: Cluster,
    /// The cluster's material: what the gates authenticate with (the
    /// nixos flavour; k3s makes its own PKI).
    pub material: Material,
    /// How long one gate may take to pass.
    pub timeout: Duration,
}

/// The gates of `member`, in order.
#[must_use]
pub fn gates(cluster: &Cluster, member: &Member) -> Vec<Gate> {
    let mut gates = Vec::new();
    match cluster.flavor {
        Flavor::Nixos => {
            if member.is_control_plane() {
                gates.extend([Gate::EtcdHealthy, Gate::ApiLive, Gate::ApiReady]);
            }
            if member.is_worker() {
                gates.extend([
                    Gate::KubeletHealthy,
                    Gate::NodeReady(member.node_name.clone()),
                ]);
            }
        }
        Flavor::K3s => {
            if member.is_control_plane() {
                gates.push(Gate::K3sReady);
            }
            if member.is_worker() {
                gates.push(Gate::KubeletHealthy);
            }
        }
    }
    gates
}

/// Waits until `gate` passes for `member`, trying every few seconds for at
/// most the cluster's gate timeout.
///
/// # Errors
/// When it has not passed in time: the last failure, naming the gate.
pub async fn pass(
    gates: &ClusterGates,
    member: &Member,
    gate: &Gate,
    connection: &Connection,
) -> Result<()> {
    let started = Instant::now();
    let mut attempts = 0_u32;
    loop {
        attempts += 1;
        let outcome = tokio::time::timeout(ATTEMPT_LIMIT, once(gates, member, gate, connection))
            .await
            .unwrap_or_else(|_| Err(anyhow::anyhow!("no answer within {ATTEMPT_LIMIT:?}")));
        match outcome {
            Ok(()) => {
                tracing::info!(host = %member.address, %gate, attempts, "gate passed");
                return Ok(());
            }
            Err(error) if started.elapsed() + INTERVAL >= gates.timeout => {
                bail!(
                    "gate `{gate}` did not pass within {}s ({attempts} attempts): {error:#}",
                    gates.timeout.as_secs()
                );
            }
            Err(error) => {
                tracing::debug!(%gate, attempts, "gate not passed yet: {error:#}");
                tokio::time::sleep(INTERVAL).await;
            }
        }
    }
}

/// One try of `gate`.
async fn once(
    gates: &ClusterGates,
    member: &Member,
    gate: &Gate,
    connection: &Connection,
) -> Result<()> {
    let cluster = &gates.cluster;
    let item = |node: Option<&str>, kind: Kind| {
        gates
            .material
            .get(node, kind)
            .with_context(|| format!("the cluster's material has no {kind:?}"))
    };
    let public = |item: &Item| item.public.clone().unwrap_or_default();
    match gate {
        Gate::EtcdHealthy => {
            let ca = item(None, Kind::EtcdCa)?;
            let client = item(Some(&member.node_name), Kind::ApiServerEtcdClient)?;
            let url = format!(
                "https://{}/health",
                crate::kube::model::host_port(&member.reachable_host(), ETCD_CLIENT_PORT)
            );
            let body = get(&url, &public(ca), &public(client), client.secret.expose()).await?;
            let health: serde_json::Value = serde_json::from_str(&body)
                .with_context(|| format!("{url} answered {:?}", excerpt(&body)))?;
            if health["health"] != "true" {
                bail!("{url} answered {:?}", excerpt(&body));
            }
            Ok(())
        }
        Gate::ApiLive | Gate::ApiReady => {
            let (ca, admin) = (
                item(None, Kind::KubernetesCa)?,
                item(None, Kind::ClusterAdmin)?,
            );
            let path = if *gate == Gate::ApiLive {
                "livez"
            } else {
                "readyz"
            };
            let url = format!("{}/{path}", cluster.api_endpoint.url());
            let body = get(&url, &public(ca), &public(admin), admin.secret.expose()).await?;
            // A ready apiserver says exactly `ok`; a 2xx with anything else
            // (a proxy's page, a server that answers every path) is not it.
            if body.trim() != "ok" {
                bail!("{url} answered {:?}, not ok", excerpt(&body));
            }
            Ok(())
        }
        Gate::NodeReady(node) => {
            let (ca, admin) = (
                item(None, Kind::KubernetesCa)?,
                item(None, Kind::ClusterAdmin)?,
            );
            let url = format!("{}/api/v1/nodes/{node}", cluster.api_endpoint.url());
            let body = get(&url, &public(ca), &public(admin), admin.secret.expose()).await?;
            let object: serde_json::Value = serde_json::from_str(&body)
                .with_context(|| format!("{url} answered {:?}", excerpt(&body)))?;
            let ready = object["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["type"] == "Ready" && c["status"] == "True");
            if !ready {
                bail!("node {node} is not Ready yet");
            }
            Ok(())
        }
        Gate::KubeletHealthy => {
            let (host, port) = KUBELET_HEALTHZ;
            // bash's /dev/tcp: no curl needed on the host.
            let script = format!(
                "exec 3<>/dev/tcp/{host}/{port} && printf 'GET /healthz HTTP/1.0\\r\\n\\r\\n' >&3 && cat <&3"
            );
            let command = format!("bash -c {}", crate::ssh::shell_quote(&script));
            let output = connection.exec(&command).await?;
            let answer = String::from_utf8_lossy(&output.stdout);
            if !output.success() || !answer.starts_with("HTTP/1.") || !answer.contains(" 200 ") {
                bail!(
                    "http://{host}:{port}/healthz on the host answered {:?}",
                    answer.lines().next().unwrap_or("nothing")
                );
            }
            Ok(())
        }
        Gate::K3sReady => {
            let command = connection.privileged("k3s kubectl get --raw=/readyz");
            let output = connection.exec(&command).await?;
            if !output.success() {
                bail!(
                    "`k3s kubectl get --raw=/readyz` failed: {}",
                    String::from_utf8_lossy(&output.stderr).trim()
                );
            }
            Ok(())
        }
    }
}

/// GETs `url` over TLS, trusting `ca` only and presenting `cert` and `key`;
/// returns the body of a 2xx answer.
async fn get(url: &str, ca: &str, cert: &str, key: &str) -> Result<String> {
    use http_body_util::BodyExt as _;
    let uri: Uri = url.parse().with_context(|| format!("{url} is not a URL"))?;
    let mut roots = rustls::RootCertStore::empty();
    for certificate in CertificateDer::pem_slice_iter(ca.as_bytes()) {
        roots.add(certificate.context("reading the CA certificate")?)?;
    }
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert.as_bytes())
        .collect::<Result<_, _>>()
        .context("reading the client certificate")?;
    let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).context("reading the client key")?;
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_client_auth_cert(chain, key)?;
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(config)
        .https_only()
        .enable_http1()
        .build();
    let client: Client<_, String> = Client::builder(TokioExecutor::new()).build(connector);
    let request = Request::get(uri)
        .header(hyper::header::USER_AGENT, "prov")
        .body(String::new())?;
    let response = client
        .request(request)
        .await
        .with_context(|| format!("GET {url}"))?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .with_context(|| format!("reading the answer of {url}"))?
        .to_bytes();
    let body = String::from_utf8_lossy(&body).into_owned();
    if !status.is_success() {
        bail!("GET {url} answered {status}: {:?}", excerpt(&body));
    }
    Ok(body)
}

/// The start of an answer, for an error message: its first line, at most
/// 120 characters.
fn excerpt(body: &str) -> String {
    let line = body.trim().lines().next().unwrap_or_default();
    match line.char_indices().nth(120) {
        Some((end, _)) => format!("{}…", &line[..end]),
        None => line.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::excerpt;

    #[test]
    fn excerpts_keep_the_first_line_only() {
        assert_eq!(excerpt("ok\n"), "ok");
        assert_eq!(
            excerpt("Error opening 'readyz'\r\nmore\n"),
            "Error opening 'readyz'"
        );
        assert_eq!(excerpt(&"x".repeat(200)).chars().count(), 121);
    }
}
