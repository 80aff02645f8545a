//! The trait every state backend implements.

use std::time::Duration;

use async_trait::async_trait;

use crate::{HistoryEntry, LockGuard, LockInfo, StateDocument, StateError};

/// Where state lives. Implementations: [`crate::EmbeddedBackend`] (sled under
/// `.prov/`), and [`crate::S3Backend`].
///
/// Protocol: take the lock, read, write any number of times (each write must
/// carry `serial = previous + 1` and the same lineage, else
/// [`StateError::Conflict`]), release the lock.
#[async_trait]
pub trait StateBackend: Send + Sync + std::fmt::Debug {
    /// A short description for messages (`embedded state at .prov`).
    fn describe(&self) -> String;

    /// Takes the lock for `info.operation`, waiting up to `timeout` (zero: try
    /// once). Fails with [`StateError::Locked`] naming the holder.
    async fn lock(&self, info: LockInfo, timeout: Duration) -> Result<LockGuard, StateError>;

    /// Releases a lock taken with [`StateBackend::lock`].
    async fn unlock(&self, guard: LockGuard) -> Result<(), StateError>;

    /// Who holds the lock now, if anyone.
    async fn lock_holder(&self) -> Result<Option<LockInfo>, StateError>;

    /// Checks that `guard` still holds the lock. A lock that can be broken
    /// while held (S3's `force-unlock`) is checked against the store; the
    /// default is for locks that cannot (the embedded `flock`).
    async fn check_lock(&self, guard: &LockGuard) -> Result<(), StateError> {
        let _ = guard;
        Ok(())
    }

    /// Removes a lock left by a run that is gone; `id` must match the holder's.
    async fn force_unlock(&self, id: &str) -> Result<(), StateError>;

    /// The latest document, or `None` when nothing was ever written.
    async fn read(&self) -> Result<Option<StateDocument>, StateError>;

    /// Writes a new version atomically. `doc.serial` must be exactly one more
    /// than the latest stored serial (or any serial when the state is empty) and
    /// the lineage must match; the caller must hold `guard`.
    async fn write(&self, guard: &LockGuard, doc: &StateDocument) -> Result<(), StateError>;

    /// Writes like [`StateBackend::write`], but records `written_at` and
    /// `written_by` from `entry` in history instead of now and the guard's
    /// holder: for copying versions between backends (`prov state migrate`).
    /// The default keeps the usual history entry.
    async fn write_copy(
        &self,
        guard: &LockGuard,
        doc: &StateDocument,
        entry: &HistoryEntry,
    ) -> Result<(), StateError> {
        let _ = entry;
        self.write(guard, doc).await
    }

    /// Every stored version, oldest first.
    async fn history(&self) -> Result<Vec<HistoryEntry>, StateError>;

    /// The document as it was at `serial`.
    async fn read_serial(&self, serial: u64) -> Result<Option<StateDocument>, StateError>;

    /// Removes every version older than the newest `keep` (at least the
    /// latest is kept); every kept one still reads with
    /// [`StateBackend::read_serial`]. Returns how many were removed. The
    /// caller must hold `guard`.
    async fn prune(&self, guard: &LockGuard, keep: u64) -> Result<u64, StateError>;
}
