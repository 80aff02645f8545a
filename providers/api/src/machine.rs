//! Helpers for machine-like resources (VMs): the SSH host key a provider
//! hands to a new machine, so prov can pin it before the first connection,
//! and waiting for the machine's sshd.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use crate::ProviderError;
use tokio::io::AsyncReadExt;

/// A machine's SSH host key (a key pair without comment).
pub use crate::keys::KeyPair as HostKey;

/// Generates an ed25519 host key in-process ([`crate::keys`]).
///
/// # Errors
/// When the system has no random bytes or encoding fails.
pub fn generate_host_key() -> Result<HostKey, ProviderError> {
    Ok(crate::keys::generate("")?)
}

/// Connects to `target` and reads the SSH identification line; `Some` (the
/// line) when it starts with `SSH-2.0`.
pub async fn probe(target: SocketAddr, timeout: Duration) -> Option<String> {
    let attempt = async {
        let mut stream = tokio::net::TcpStream::connect(target).await.ok()?;
        let mut buffer = Vec::with_capacity(256);
        let mut chunk = [0_u8; 256];
        while !buffer.contains(&b'\n') && buffer.len() < 1024 {
            let n = stream.read(&mut chunk).await.ok()?;
            if n == 0 {
                break;
            }
            buffer.extend_from_slice(chunk.get(..n)?);
        }
        let text = String::from_utf8_lossy(&buffer);
        let line = text.lines().next()?.trim_end().to_owned();
        line.starts_with("SSH-2.0").then_some(line)
    };
    tokio::time::timeout(timeout, attempt).await.ok().flatten()
}

/// The ed25519 host key the sshd at `target` presents (`ssh-ed25519 AAAA…`),
/// read with `ssh-keyscan` (OpenSSH, which prov needs anyway); `None` when
/// nothing answers within `timeout` or ssh-keyscan is missing.
pub async fn scan_host_key(target: SocketAddr, timeout: Duration) -> Option<String> {
    let seconds = timeout.as_secs().max(1).to_string();
    let run = tokio::process::Command::new("ssh-keyscan")
        .args(["-T", &seconds, "-t", "ed25519", "-p"])
        .arg(target.port().to_string())
        .arg(target.ip().to_string())
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(timeout + Duration::from_secs(1), run)
        .await
        .ok()?
        .ok()?;
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            let mut words = l.split_whitespace().skip(1);
            match (words.next(), words.next()) {
                (Some(kind), Some(key)) => Some(format!("{kind} {key}")),
                _ => None,
            }
        })
}

/// Ports on 127.0.0.1 handed out by one provider in this process, so two
/// creates running at once never pick the same one.
#[derive(Debug, Default)]
pub struct Ports(tokio::sync::Mutex<std::collections::BTreeSet<u16>>);

impl Ports {
    /// `fixed` when given (and remembered), else a port free now that this
    /// process has not handed out before.
    ///
    /// # Errors
    /// When no free port is found.
    pub async fn allocate(&self, fixed: Option<u16>) -> Result<u16, ProviderError> {
        let mut ports = self.0.lock().await;
        if let Some(port) = fixed {
            ports.insert(port);
            return Ok(port);
        }
        for _ in 0..20 {
            let port = free_port()?;
            if ports.insert(port) {
                return Ok(port);
            }
        }
        Err(ProviderError::api(
            "allocate SSH port",
            "no free port on 127.0.0.1",
        ))
    }

    /// Gives `port` back (its create failed).
    pub async fn release(&self, port: u16) {
        self.0.lock().await.remove(&port);
    }
}

/// A TCP port on 127.0.0.1 that is free now (the kernel picks it).
pub fn free_port() -> Result<u16, ProviderError> {
    std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| ProviderError::api_caused_by("allocate SSH port", "binding 127.0.0.1:0", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generates_keys() {
        let key = generate_host_key().unwrap();
        assert!(key.public.starts_with("ssh-ed25519 AAAA"), "{}", key.public);
        assert_eq!(key.public.split(' ').count(), 2);
        assert!(key.private.contains("OPENSSH PRIVATE KEY"));
        assert!(!format!("{key:?}").contains("PRIVATE"));
    }

    #[tokio::test]
    async fn probe_of_a_closed_port_is_none() {
        let port = free_port().unwrap();
        assert_eq!(
            probe(
                SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
                Duration::from_millis(300)
            )
            .await,
            None
        );
    }
}
