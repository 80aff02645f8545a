//! The trait every state backend implements.

use std::time::Duration;

use async_trait::async_trait;

use crate::{HistoryEntry, LockInfo, StateDocument, StateError, StateLock};

/// Where state lives. Implementations: [`crate::EmbeddedBackend`] (sled under
/// `.prov/`), and [`crate::S3Backend`].
///
/// Protocol: take the lock ([`StateBackend::lock`]), read, write through the
/// lock any number of times (each write must carry `serial = previous + 1`
/// and the same lineage, else [`StateError::Conflict`]), release the lock.
/// Reading needs no lock; writing needs nothing else.
#[async_trait]
pub trait StateBackend: Send + Sync + std::fmt::Debug {
    /// A short description for messages (`embedded state at .prov`).
    fn describe(&self) -> String;

    /// Takes the lock for `info.operation`, waiting up to `timeout` (zero: try
    /// once). Fails with [`StateError::Locked`] naming the holder.
    async fn lock(
        &self,
        info: LockInfo,
        timeout: Duration,
    ) -> Result<Box<dyn StateLock>, StateError>;

    /// Who holds the lock now, if anyone.
    async fn lock_holder(&self) -> Result<Option<LockInfo>, StateError>;

    /// Removes a lock left by a run that is gone; `id` must match the holder's.
    async fn force_unlock(&self, id: &str) -> Result<(), StateError>;

    /// The latest document, or `None` when nothing was ever written.
    async fn read(&self) -> Result<Option<StateDocument>, StateError>;

    /// Whether anything was ever written: whether [`StateBackend::read`]
    /// would find a document, told without decoding it where the backend
    /// can (a document that then does not read fails the read, not this).
    async fn exists(&self) -> Result<bool, StateError> {
        Ok(self.read().await?.is_some())
    }

    /// Every stored version, oldest first.
    async fn history(&self) -> Result<Vec<HistoryEntry>, StateError>;

    /// The document as it was at `serial`.
    async fn read_serial(&self, serial: u64) -> Result<Option<StateDocument>, StateError>;

    /// The names of the environments kept beside this state (`prov env`),
    /// sorted: each has a state of its own, at the place the backend's
    /// settings give for it. One listing, however many there are.
    async fn environments(&self) -> Result<Vec<String>, StateError>;
}
