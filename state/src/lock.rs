//! Lock owner information.

use serde::{Deserialize, Serialize};

/// Who holds (or asks for) a state lock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockInfo {
    /// A UUID naming this lock; `force-unlock` takes it.
    pub id: String,
    /// `user@host`.
    pub who: String,
    /// Process id of the holder.
    pub pid: u32,
    /// What the holder is doing: `apply`, `plan`, `state rm`, …
    pub operation: String,
    /// When the lock was taken (RFC 3339).
    pub created: String,
    /// prov version of the holder.
    pub version: String,
}

impl LockInfo {
    /// Lock info for this process doing `operation`.
    #[must_use]
    pub fn for_this_process(operation: &str) -> Self {
        let user = std::env::var("USER")
            .or_else(|_| std::env::var("LOGNAME"))
            .unwrap_or_else(|_| format!("uid{}", rustix::process::getuid().as_raw()));
        let host = rustix::system::uname()
            .nodename()
            .to_string_lossy()
            .into_owned();
        Self {
            id: uuid::Uuid::new_v4().to_string(),
            who: format!("{user}@{host}"),
            pid: std::process::id(),
            operation: operation.to_owned(),
            created: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            version: env!("CARGO_PKG_VERSION").to_owned(),
        }
    }
}

impl std::fmt::Display for LockInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} (pid {}) since {} for `{}` (lock id {})",
            self.who, self.pid, self.created, self.operation, self.id
        )
    }
}

/// Proof that a lock is held; the backend releases it when the guard is
/// dropped or [`crate::StateBackend::unlock`] is called.
#[derive(Debug)]
pub struct LockGuard {
    /// The lock's owner record.
    pub info: LockInfo,
    /// Backend-specific handle (an open lock file, an S3 ETag).
    pub(crate) handle: LockHandle,
}

/// What keeps a lock held.
#[derive(Debug)]
pub(crate) enum LockHandle {
    /// An open file with an exclusive `flock`; closing it releases the lock,
    /// also when the process is killed.
    File {
        /// The held lock file and the backend whose database it guards.
        held: crate::embedded::HeldFlock,
    },
    /// A lock object in S3 (`KEY.lock`); it stays until deleted, also when
    /// its process is killed (then `force-unlock` removes it).
    #[cfg(feature = "s3")]
    S3 {
        /// The lock object and the backend it belongs to.
        held: crate::s3::HeldLock,
    },
}
