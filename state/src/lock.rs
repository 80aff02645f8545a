//! The state lock: who holds it ([`LockInfo`]), and what holding it allows
//! ([`StateLock`]: every write goes through the held lock).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::{HistoryEntry, StateDocument, StateError};

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
    /// When the lock was taken (stored as RFC 3339, to the second).
    #[serde(with = "crate::timestamp")]
    pub created: DateTime<Utc>,
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
            created: crate::timestamp::now(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
        }
    }
}

impl std::fmt::Display for LockInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} (pid {}) since {} for `{}` (lock id {})",
            self.who,
            self.pid,
            crate::timestamp::format(&self.created),
            self.operation,
            self.id
        )
    }
}

/// A held state lock, from [`crate::StateBackend::lock`]: the only way to
/// change stored state. Each backend has its own (an open file under
/// `flock`, an S3 lock object), so a lock always writes to the state it
/// was taken on.
///
/// Dropping it without [`StateLock::unlock`] still releases it: an
/// embedded lock at once (and the kernel releases its `flock` when the
/// process dies), an S3 lock on a best-effort basis (a killed run leaves it
/// for `prov state force-unlock`).
#[async_trait]
pub trait StateLock: Send + Sync + std::fmt::Debug {
    /// The holder record the lock was taken with.
    fn info(&self) -> &LockInfo;

    /// Checks that the lock is still held. A lock that can be broken while
    /// held (S3's `force-unlock`) is checked against the store
    /// ([`StateError::LockGone`], [`StateError::LockLost`]); an embedded
    /// `flock` cannot be broken, so its check always passes.
    async fn check(&self) -> Result<(), StateError>;

    /// Writes a new version atomically. `doc.serial` must be exactly one more
    /// than the latest stored serial (or any serial when the state is empty)
    /// and the lineage must match, else [`StateError::Conflict`].
    async fn write(&self, doc: &StateDocument) -> Result<(), StateError>;

    /// Writes like [`StateLock::write`], but records `written_at` and
    /// `written_by` from `entry` in history instead of now and this lock's
    /// holder: for copying versions between backends (`prov state migrate`).
    async fn write_copy(&self, doc: &StateDocument, entry: &HistoryEntry)
        -> Result<(), StateError>;

    /// Removes every version older than the newest `keep` (at least the
    /// latest is kept); every kept one still reads with
    /// [`crate::StateBackend::read_serial`]. Returns how many were removed.
    async fn prune(&self, keep: u64) -> Result<u64, StateError>;

    /// Releases the lock.
    async fn unlock(self: Box<Self>) -> Result<(), StateError>;

    /// Removes the state this lock guards, every version of it, and then
    /// the lock itself: what `prov env down` does last, so that an
    /// environment leaves nothing behind.
    async fn remove(self: Box<Self>) -> Result<(), StateError>;
}
