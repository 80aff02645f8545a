//! Loopback addresses for hosts: allocation, claims and the start lock.
//!
//! Loopback addresses are a machine-wide resource, so choosing one and
//! starting sshd on it happen under one machine-wide lock
//! ([`ADDRESS_LOCK`]), whatever the provider's root: otherwise two creates
//! (two prov processes, or two roots) could both see `127.0.0.N` free.

use std::collections::BTreeSet;
use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::{Duration, Instant};

use prov_provider::ProviderError;
use rustix::fs::{flock, FlockOperation};

use crate::error::{config_error, io_error};
use crate::host_dir;
use crate::SSH_PORT;

/// The machine-wide lock held from choosing an address until sshd listens.
pub(crate) const ADDRESS_LOCK: &str = "/run/lock/prov-local-addresses.lock";

/// The last octets [`allocate`] chooses from (127.0.0.1 is the machine's own).
const OCTETS: std::ops::RangeInclusive<u8> = 2..=254;

/// How long to wait for the lock before giving up.
const LOCK_TIMEOUT: Duration = Duration::from_secs(60);

/// A held [`ADDRESS_LOCK`]; released when dropped (closing the file).
#[derive(Debug)]
pub(crate) struct AddressLock {
    _file: File,
}

impl AddressLock {
    /// Takes the machine-wide lock, polling for at most a minute.
    pub(crate) async fn acquire() -> Result<Self, ProviderError> {
        let path = Path::new(ADDRESS_LOCK);
        if let Some(parent) = path.parent() {
            fs_err::create_dir_all(parent)
                .map_err(|e| io_error("create lock directory", parent, e))?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(|e| io_error("open address lock", path, e))?;
        let start = Instant::now();
        loop {
            match flock(&file, FlockOperation::NonBlockingLockExclusive) {
                Ok(()) => return Ok(Self { _file: file }),
                Err(rustix::io::Errno::WOULDBLOCK | rustix::io::Errno::INTR) => {}
                Err(e) => return Err(io_error("lock", path, e.into())),
            }
            if start.elapsed() >= LOCK_TIMEOUT {
                return Err(ProviderError::Timeout {
                    what: format!("the lock {ADDRESS_LOCK}"),
                    seconds: LOCK_TIMEOUT.as_secs(),
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Parses an `address` attribute: an IPv4 loopback address.
pub(crate) fn parse(value: &str) -> Result<Ipv4Addr, ProviderError> {
    match value.parse::<Ipv4Addr>() {
        Ok(address) if address.is_loopback() => Ok(address),
        _ => Err(config_error(format!(
            "`address` must be an IPv4 loopback address like 127.0.0.2, not `{value}`"
        ))),
    }
}

/// The addresses claimed by host directories under `root` (any deployment),
/// except the directory `except`.
fn claimed(root: &Path, except: &Path) -> BTreeSet<Ipv4Addr> {
    let dirs = |path: &Path| -> Vec<std::path::PathBuf> {
        std::fs::read_dir(path)
            .map(|entries| {
                entries
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.is_dir())
                    .collect()
            })
            .unwrap_or_default()
    };
    dirs(root)
        .iter()
        .flat_map(|deployment| dirs(deployment))
        .filter(|host| host != except)
        .filter_map(|host| std::fs::read_to_string(host.join(host_dir::ADDRESS)).ok())
        .filter_map(|text| text.trim().parse().ok())
        .collect()
}

/// Whether something accepts connections on `address:22`. A refused
/// connection is the answer "free"; anything else counts as in use.
async fn listens(address: Ipv4Addr) -> bool {
    let target = SocketAddr::from((address, SSH_PORT));
    let connect = tokio::net::TcpStream::connect(target);
    match tokio::time::timeout(Duration::from_millis(500), connect).await {
        Ok(Ok(_)) => true,
        Ok(Err(e)) => e.kind() != std::io::ErrorKind::ConnectionRefused,
        Err(_) => true,
    }
}

/// The lowest free `127.0.0.N` (N in 2..=254): claimed by no host directory
/// under `root` but `except`, and with nothing listening on port 22. Call
/// with the [`AddressLock`] held.
pub(crate) async fn allocate(root: &Path, except: &Path) -> Result<Ipv4Addr, ProviderError> {
    let taken = claimed(root, except);
    for octet in OCTETS {
        let candidate = Ipv4Addr::new(127, 0, 0, octet);
        if !taken.contains(&candidate) && !listens(candidate).await {
            return Ok(candidate);
        }
    }
    Err(ProviderError::api(
        "allocate address",
        "every address 127.0.0.2 to 127.0.0.254 is taken by a local host or has a listener on port 22",
    ))
}

/// Checks that a requested address is claimed by no other host directory under
/// `root` and has nothing listening on port 22. Call with the lock held.
pub(crate) async fn check_free(
    root: &Path,
    except: &Path,
    address: Ipv4Addr,
) -> Result<(), ProviderError> {
    if claimed(root, except).contains(&address) {
        return Err(config_error(format!(
            "address {address} is already used by another local host under {}",
            root.display()
        )));
    }
    if listens(address).await {
        return Err(config_error(format!(
            "address {address}: something already listens on port {SSH_PORT}"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_loopback_only() {
        assert_eq!(parse("127.0.0.9").unwrap(), Ipv4Addr::new(127, 0, 0, 9));
        assert!(parse("10.0.0.1").is_err());
        assert!(parse("web").is_err());
    }

    #[test]
    fn reads_claims_of_all_deployments() {
        let tmp = tempfile::tempdir().unwrap();
        for (path, address) in [("a/web-0", "127.0.0.2"), ("b/db", "127.0.0.3\n")] {
            let dir = tmp.path().join(path);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join(host_dir::ADDRESS), address).unwrap();
        }
        let all = claimed(tmp.path(), Path::new("/nowhere"));
        assert_eq!(all.len(), 2);
        let others = claimed(tmp.path(), &tmp.path().join("a/web-0"));
        assert_eq!(
            others.into_iter().collect::<Vec<_>>(),
            [Ipv4Addr::new(127, 0, 0, 3)]
        );
    }
}
