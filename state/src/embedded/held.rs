//! The embedded lock as its holder has it: every write and prune goes
//! through it, on the database opened under its `flock`.

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;

use super::lockfile::HeldFlock;
use super::{blocking, copy, perms, store, Inner, OpenDb};
use crate::{writing, HistoryEntry, LockInfo, StateDocument, StateError, StateLock};

/// A held embedded lock: the `flock` on `DIR/lock` and the database opened
/// under it. Dropped, it releases both (see [`HeldFlock`]); the kernel
/// releases the `flock` when the process dies.
#[derive(Debug)]
pub(super) struct EmbeddedLock {
    /// The holder record.
    info: LockInfo,
    /// The `flock` and the backend whose database it guards.
    held: HeldFlock,
}

impl EmbeddedLock {
    /// The lock `info`, held by `held`.
    pub(super) fn new(info: LockInfo, held: HeldFlock) -> Self {
        Self { info, held }
    }

    /// Stores `doc` with its history `entry` on the database held by this
    /// lock.
    async fn store(&self, doc: &StateDocument, entry: &HistoryEntry) -> Result<(), StateError> {
        writing::check_format(doc)?;
        let version = store::NewVersion::new(doc, entry)?;
        let inner = Arc::clone(self.held.inner());
        let lock_id = self.info.id.clone();
        blocking(move || write_blocking(&inner, &lock_id, &version)).await
    }
}

#[async_trait]
impl StateLock for EmbeddedLock {
    fn info(&self) -> &LockInfo {
        &self.info
    }

    async fn check(&self) -> Result<(), StateError> {
        // A kernel `flock` cannot be taken away from its holder.
        Ok(())
    }

    async fn write(&self, doc: &StateDocument) -> Result<(), StateError> {
        self.store(doc, &writing::entry_now(doc, &self.info)).await
    }

    async fn write_copy(
        &self,
        doc: &StateDocument,
        entry: &HistoryEntry,
    ) -> Result<(), StateError> {
        self.store(doc, &writing::entry_copied(doc, entry)).await
    }

    async fn prune(&self, keep: u64) -> Result<u64, StateError> {
        let inner = Arc::clone(self.held.inner());
        let lock_id = self.info.id.clone();
        blocking(move || {
            with_held_db(&inner, &lock_id, "prune", |open, path| {
                store::prune(&open.db, path, keep)
            })
        })
        .await
    }

    async fn unlock(self: Box<Self>) -> Result<(), StateError> {
        let Self { mut held, .. } = *self;
        blocking(move || held.release()).await
    }

    async fn remove(self: Box<Self>) -> Result<(), StateError> {
        let Self { mut held, .. } = *self;
        blocking(move || held.remove()).await
    }
}

/// Runs `f` on the database opened under the lock `lock_id`, then hardens
/// the modes of what it wrote. (A lock always finds its own database open:
/// the check guards against a slot taken over by anything else.)
fn with_held_db<T>(
    inner: &Arc<Inner>,
    lock_id: &str,
    what: &str,
    f: impl FnOnce(&mut OpenDb, &Path) -> Result<T, StateError>,
) -> Result<T, StateError> {
    let value = {
        let mut slot = inner.slot();
        match slot.as_mut() {
            Some(open) if open.lock_id == lock_id => f(open, &inner.db_path())?,
            _ => {
                return Err(StateError::Conflict(format!(
                    "{what} without holding the lock on {}",
                    inner.dir.display()
                )))
            }
        }
    };
    perms::harden(&inner.dir)?;
    Ok(value)
}

/// Stores `version` as the latest, checking its serial, then updates the
/// copy beside the database.
fn write_blocking(
    inner: &Arc<Inner>,
    lock_id: &str,
    version: &store::NewVersion,
) -> Result<(), StateError> {
    with_held_db(inner, lock_id, "write", |open, path| {
        store::write(&open.db, path, version, &mut open.cache)?;
        // The write has landed: a failure here only leaves the copy one
        // version behind (never a reason to report it failed).
        if let Err(e) = copy::write(&inner.dir, version.json()) {
            tracing::warn!(
                serial = version.serial(),
                "the copy of the latest state version in {} was not updated: {e}",
                inner.dir.display()
            );
        }
        Ok(())
    })
}
