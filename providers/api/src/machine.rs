//! Helpers for machine-like resources (VMs, local hosts): the SSH host key a
//! provider hands to a new machine, so prov can pin it before the first
//! connection, waiting for the machine's sshd, its forwarded port, and the
//! steps every machine provider's create and update share.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use crate::{Address, AttributeChange, Attributes, Observed, ProviderError};
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

    /// Runs `clean_up` (the removal of a failed create), then gives `port`
    /// back when the create had one; answers with what `clean_up` did.
    ///
    /// # Errors
    /// The error of `clean_up` (the port is given back all the same).
    pub async fn release_after(
        &self,
        port: Option<u16>,
        clean_up: impl Future<Output = Result<(), ProviderError>>,
    ) -> Result<(), ProviderError> {
        let removed = clean_up.await;
        if let Some(port) = port {
            self.release(port).await;
        }
        removed
    }
}

/// A TCP port on 127.0.0.1 that is free now (the kernel picks it).
pub fn free_port() -> Result<u16, ProviderError> {
    std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| ProviderError::api_caused_by("allocate SSH port", "binding 127.0.0.1:0", e))
}

/// The guest's host name before cleaning: `web-0` for `web[0]`.
#[must_use]
pub fn host_name(address: &Address) -> String {
    address.machine_name()
}

/// The forwarded SSH port a machine's attributes hold (`ssh_port`), if any.
#[must_use]
pub fn ssh_port(attributes: &Attributes) -> Option<u16> {
    attributes
        .get("ssh_port")
        .and_then(serde_json::Value::as_u64)
        .and_then(|p| u16::try_from(p).ok())
}

/// How many machines [`read_each`] observes at once.
const READ_AT_ONCE: usize = 16;

/// Reads machines for [`crate::Provider::read`], [`READ_AT_ONCE`] at a
/// time: `observe` each of `ids` (`None` for one that is gone, which is
/// drift, not an error), keyed by id. A fleet's refresh costs its slowest
/// machines, not the sum of all.
///
/// # Errors
/// The first error of `observe`.
pub async fn read_each<'a, F, Fut>(
    ids: impl IntoIterator<Item = &'a String>,
    observe: F,
) -> Result<BTreeMap<String, Observed>, ProviderError>
where
    F: FnMut(&'a str) -> Fut,
    Fut: Future<Output = Result<Option<Observed>, ProviderError>>,
{
    use futures_util::StreamExt as _;
    let mut observe = observe;
    let reads: Vec<_> = ids.into_iter().map(|id| tagged(id, observe(id))).collect();
    let mut reads = futures_util::stream::iter(reads).buffer_unordered(READ_AT_ONCE);
    let mut found = BTreeMap::new();
    while let Some((id, observed)) = reads.next().await {
        if let Some(observed) = observed? {
            found.insert(id.clone(), observed);
        }
    }
    Ok(found)
}

/// `observing` with the id it observes.
async fn tagged<Fut: Future>(id: &String, observing: Fut) -> (&String, Fut::Output) {
    (id, observing.await)
}

/// Refuses an update carrying a change that `in_place` says cannot be made
/// in place (the plan replaces the machine instead; this guards against a
/// caller that did not ask the diff). `operation` and `machine` word the
/// error: `update VM`, `a VM`.
///
/// # Errors
/// [`ProviderError::Api`] naming the first such change.
pub fn check_in_place(
    changes: &[AttributeChange],
    in_place: impl Fn(&str) -> bool,
    operation: &str,
    machine: &str,
) -> Result<(), ProviderError> {
    match changes.iter().find(|c| !in_place(&c.name)) {
        Some(change) => Err(ProviderError::api(
            operation,
            format!("`{}` of {machine} cannot change in place", change.name),
        )),
        None => Ok(()),
    }
}

/// Runs `build`, the steps of a create after its checks. When they fail,
/// runs `clean_up` (which removes what they made, so nothing is left
/// half-created) and returns the create's error; a failed clean-up is
/// logged, not returned, so it never hides that error. `machine` and `id`
/// name what is made in the log (`VM`, `prov-dev-web-0`), `started` is when
/// the create began.
///
/// # Errors
/// The error of `build`.
pub async fn build_or_clean_up<T>(
    machine: &str,
    id: &str,
    started: Instant,
    build: impl Future<Output = Result<T, ProviderError>>,
    clean_up: impl Future<Output = Result<(), ProviderError>>,
) -> Result<T, ProviderError> {
    match build.await {
        Ok(made) => {
            tracing::debug!(id, elapsed = ?started.elapsed(), "{machine} created");
            Ok(made)
        }
        Err(error) => {
            if let Err(cleanup) = clean_up.await {
                tracing::warn!(id, %cleanup, "cannot remove the {machine} of a failed create");
            }
            Err(error)
        }
    }
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
    async fn a_released_port_can_be_handed_out_again() {
        let ports = Ports::default();
        assert_eq!(ports.allocate(Some(40022)).await.unwrap(), 40022);
        let removed = ports
            .release_after(Some(40022), async {
                Err(ProviderError::api("remove", "x"))
            })
            .await;
        assert!(removed.is_err());
        assert!(!ports.0.lock().await.contains(&40022));
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

    #[test]
    fn names_ports_and_in_place_changes() {
        assert_eq!(host_name(&Address::host("web", Some(0))), "web-0");
        assert_eq!(host_name(&Address::host("db", None)), "db");
        let attributes: Attributes =
            serde_json::from_value(serde_json::json!({"ssh_port": 40022})).unwrap();
        assert_eq!(ssh_port(&attributes), Some(40022));
        assert_eq!(ssh_port(&Attributes::new()), None);
        let change = |name: &str| AttributeChange {
            name: name.to_owned(),
            before: None,
            after: None,
            after_unknown: false,
            forces_replacement: false,
        };
        let changes = [change("cpus"), change("base")];
        check_in_place(&changes[..1], |n| n == "cpus", "update VM", "a VM").unwrap();
        let error = check_in_place(&changes, |n| n == "cpus", "update VM", "a VM").unwrap_err();
        assert_eq!(
            error.to_string(),
            "update VM failed: `base` of a VM cannot change in place"
        );
    }

    #[tokio::test]
    async fn reads_what_is_there_and_stops_at_an_error() {
        let ids = ["a".to_owned(), "gone".to_owned()];
        let found = read_each(&ids, |id| async move {
            Ok((id != "gone").then(|| Observed {
                id: id.to_owned(),
                attributes: Attributes::new(),
            }))
        })
        .await
        .unwrap();
        assert_eq!(found.keys().collect::<Vec<_>>(), ["a"]);
        let failed = read_each(&ids, |_| async { Err(ProviderError::api("read", "down")) }).await;
        assert!(failed.is_err());
    }

    #[tokio::test]
    async fn machines_are_read_at_once_not_one_after_another() {
        // Each read waits until all four have started: one at a time never
        // gets past the first.
        let ids: Vec<String> = (0..4).map(|i| i.to_string()).collect();
        let all_started = tokio::sync::Barrier::new(ids.len());
        let reading = read_each(&ids, |id| {
            let all_started = &all_started;
            async move {
                all_started.wait().await;
                Ok(Some(Observed {
                    id: id.to_owned(),
                    attributes: Attributes::new(),
                }))
            }
        });
        let found = tokio::time::timeout(std::time::Duration::from_secs(5), reading)
            .await
            .expect("the reads ran at once")
            .unwrap();
        assert_eq!(found.len(), 4);
    }

    #[tokio::test]
    async fn a_failed_build_is_cleaned_up_and_keeps_its_error() {
        let cleaned = std::sync::atomic::AtomicBool::new(false);
        let clean_up = || async {
            cleaned.store(true, std::sync::atomic::Ordering::SeqCst);
            Err(ProviderError::api("remove", "also failed"))
        };
        let made = build_or_clean_up("VM", "v", Instant::now(), async { Ok(1) }, clean_up()).await;
        assert_eq!(made.unwrap(), 1);
        assert!(!cleaned.load(std::sync::atomic::Ordering::SeqCst));
        let failed = build_or_clean_up(
            "VM",
            "v",
            Instant::now(),
            async { Err::<(), _>(ProviderError::api("build", "broke")) },
            clean_up(),
        )
        .await;
        assert_eq!(failed.unwrap_err().to_string(), "build failed: broke");
        assert!(cleaned.load(std::sync::atomic::Ordering::SeqCst));
    }
}
