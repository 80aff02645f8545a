//! Health checks after activation: a command on the host and/or an HTTP GET
//! from the deployer, retried within a bound (as morph does: every few
//! seconds, each attempt time-limited).

use anyhow::{bail, Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

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

/// GET `url`; success is a 2xx status. `http://` is spoken directly;
/// `https://` goes through curl.
async fn http_get(url: &str) -> Result<()> {
    let Some(rest) = url.strip_prefix("http://") else {
        let output = tokio::process::Command::new("curl")
            .args([
                "--fail",
                "--silent",
                "--show-error",
                "--output",
                "/dev/null",
                url,
            ])
            .output()
            .await
            .context("https health checks need curl on the deployer")?;
        if !output.status.success() {
            bail!(
                "GET {url}: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        return Ok(());
    };
    let (authority, path) = rest
        .split_once('/')
        .map_or((rest, "/".to_owned()), |(a, p)| (a, format!("/{p}")));
    let target = if authority.contains(':') {
        authority.to_owned()
    } else {
        format!("{authority}:80")
    };
    let mut stream = tokio::net::TcpStream::connect(&target)
        .await
        .with_context(|| format!("GET {url}: cannot connect to {target}"))?;
    let request = format!(
        "GET {path} HTTP/1.0\r\nHost: {authority}\r\nUser-Agent: prov\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await?;
    let mut head = vec![0_u8; 64];
    let n = stream.read(&mut head).await?;
    let line = String::from_utf8_lossy(&head[..n]);
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .with_context(|| format!("GET {url}: not an HTTP answer"))?;
    if !(200..300).contains(&status) {
        bail!("GET {url} answered {status}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
