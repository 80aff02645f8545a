//! Health checks after activation: a command on the host and/or an HTTP GET
//! from the deployer, retried within a bound (as morph does: every few
//! seconds, each attempt time-limited).
//!
//! The GET is hyper's client (`hyper-util`) with rustls (`hyper-rustls`,
//! the system's CA certificates, no OpenSSL) for `https://`. That is the
//! stack the AWS SDK already builds for the EC2 provider and the S3 state
//! backend, so it adds no crate to the build; reqwest would add itself and
//! its own dependencies on top of the same hyper for redirects and cookies
//! a health check does not want (a redirect is not a healthy answer).

use anyhow::{bail, Context, Result};
use hyper::{Request, Uri};
use hyper_util::client::legacy::connect::{Connect, HttpConnector};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::spec::HealthSpec;
use crate::ssh::Connection;

/// Runs the checks of `spec` until they pass or the retries are used up.
///
/// # Errors
/// The last failure, after the last attempt.
pub async fn check(connection: &Connection, spec: &HealthSpec, host_address: &str) -> Result<()> {
    let mut last = String::new();
    for attempt in 1..=spec.retries.max(1) {
        match once(connection, spec, host_address).await {
            Ok(()) => return Ok(()),
            Err(error) => {
                last = format!("{error:#}");
                tracing::debug!(attempt, "health check failed: {last}");
            }
        }
        if attempt < spec.retries {
            tokio::time::sleep(spec.interval).await;
        }
    }
    bail!(
        "health check failed after {} attempts: {last}",
        spec.retries.max(1)
    )
}

async fn once(connection: &Connection, spec: &HealthSpec, host_address: &str) -> Result<()> {
    if let Some(command) = &spec.command {
        let output = tokio::time::timeout(spec.timeout, connection.exec(command))
            .await
            .with_context(|| {
                format!("`{command}` took longer than {}s", spec.timeout.as_secs())
            })??;
        if !output.success() {
            bail!(
                "`{command}` failed ({}): {}",
                super::copy::status_text(&output),
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
    }
    if let Some(url) = &spec.http {
        let url = url.replace("{address}", host_address);
        tokio::time::timeout(spec.timeout, http_get(&url))
            .await
            .with_context(|| format!("GET {url} took longer than {}s", spec.timeout.as_secs()))??;
    }
    Ok(())
}

/// GET `url`; success is a 2xx status. `https://` is verified against the
/// system's CA certificates.
async fn http_get(url: &str) -> Result<()> {
    let uri: Uri = url
        .parse()
        .with_context(|| format!("GET {url}: not a URL"))?;
    let status = match uri.scheme_str() {
        Some("http") => get(HttpConnector::new(), uri).await,
        Some("https") => {
            let connector = hyper_rustls::HttpsConnectorBuilder::new()
                .with_provider_and_native_roots(rustls::crypto::aws_lc_rs::default_provider())
                .context("https health checks need the system's CA certificates (ca-certificates)")?
                .https_only()
                .enable_http1()
                .build();
            get(connector, uri).await
        }
        _ => bail!("GET {url}: only http:// and https:// URLs can be checked"),
    }
    .with_context(|| format!("GET {url}"))?;
    if !status.is_success() {
        bail!("GET {url} answered {status}");
    }
    Ok(())
}

/// The status of a GET of `uri` through `connector`.
async fn get<C>(connector: C, uri: Uri) -> Result<hyper::StatusCode>
where
    C: Connect + Clone + Send + Sync + 'static,
{
    let client: Client<C, String> = Client::builder(TokioExecutor::new()).build(connector);
    let request = Request::get(uri)
        .header(hyper::header::USER_AGENT, "prov")
        .body(String::new())?;
    let response = client.request(request).await?;
    Ok(response.status())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn http_get_checks_status() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            for answer in ["HTTP/1.0 200 OK\r\n\r\nfine", "HTTP/1.0 503 Busy\r\n\r\n"] {
                let (mut socket, _) = listener.accept().await.unwrap();
                let mut buf = [0_u8; 512];
                let _ = socket.read(&mut buf).await.unwrap();
                socket.write_all(answer.as_bytes()).await.unwrap();
            }
        });
        http_get(&format!("http://127.0.0.1:{port}/health"))
            .await
            .unwrap();
        let error = http_get(&format!("http://127.0.0.1:{port}/health"))
            .await
            .unwrap_err();
        assert!(error.to_string().contains("503"));
    }

    #[tokio::test]
    async fn https_is_spoken_in_process() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let first_byte = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut byte = [0_u8; 1];
            socket.read_exact(&mut byte).await.unwrap();
            byte[0]
        });
        let error = http_get(&format!("https://127.0.0.1:{port}/health"))
            .await
            .unwrap_err();
        // A TLS handshake record (a ClientHello) opened the connection.
        assert_eq!(first_byte.await.unwrap(), 0x16);
        assert!(
            format!("{error:#}").contains("GET https://127.0.0.1:"),
            "{error:#}"
        );
    }

    #[tokio::test]
    async fn other_schemes_are_refused() {
        let error = http_get("ftp://example.invalid/").await.unwrap_err();
        assert!(
            error.to_string().contains("only http:// and https://"),
            "{error}"
        );
    }
}
