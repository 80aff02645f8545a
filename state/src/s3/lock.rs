//! The S3 lock: the lock object `KEY.lock`, created with `If-None-Match: *`
//! and deleted with `If-Match` on its ETag, and [`S3Lock`], the held lock
//! every write goes through (each checks the lock object first).

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::store::{Cond, Refusal};
use super::{meta, Inner};
use crate::writing::{self, encode_err};
use crate::{HistoryEntry, LockInfo, StateDocument, StateError, StateLock};

/// How long to sleep between attempts while waiting for a held lock.
const RETRY_INTERVAL: Duration = Duration::from_millis(500);
/// How often a lock attempt may meet a transient state (the lock vanishing
/// between our put and our read, a 409 from a concurrent put) before it
/// counts as one failed attempt.
const TRANSIENT_RETRIES: u32 = 10;
/// How many times unlock re-reads a lock object that changed under it.
const UNLOCK_ATTEMPTS: u32 = 3;

/// The lock object as read.
enum LockRead {
    /// There is none.
    Free,
    /// A lock with a readable owner record.
    Held {
        /// The holder.
        info: LockInfo,
        /// The lock object's ETag.
        etag: String,
    },
    /// A lock object whose body is not an owner record.
    Unreadable,
}

/// The outcome of one attempt to take the lock.
enum Attempt {
    /// We hold it (the ETag of the lock object).
    Held,
    /// Someone else does.
    Busy(StateError),
    /// Try again at once (the lock vanished between our put and our read, or
    /// a concurrent put was in flight).
    Again,
}

impl Inner {
    /// Reads the lock object.
    async fn read_lock(&self) -> Result<LockRead, StateError> {
        let store = self.store().await?;
        let Some(object) = store.get(&self.lock_key).await? else {
            return Ok(LockRead::Free);
        };
        Ok(match serde_json::from_slice::<LockInfo>(&object.bytes) {
            Ok(info) => LockRead::Held {
                info,
                etag: object.etag,
            },
            Err(e) => {
                tracing::warn!(
                    "the lock object {} holds no owner record: {e}",
                    self.url(&self.lock_key)
                );
                LockRead::Unreadable
            }
        })
    }

    /// The error for a lock object without an owner record.
    fn locked_unknown(&self) -> StateError {
        StateError::LockedUnknown {
            path: self.url(&self.lock_key),
        }
    }

    /// One attempt to create the lock object holding `info`.
    async fn try_lock(&self, info: &LockInfo, body: &[u8]) -> Result<Attempt, StateError> {
        let store = self.store().await?;
        match store
            .put(&self.lock_key, body.to_vec(), &[], Cond::Absent)
            .await?
        {
            Ok(_) => return Ok(Attempt::Held),
            Err(Refusal::Contention | Refusal::Missing) => return Ok(Attempt::Again),
            Err(Refusal::Precondition) => {}
        }
        // The lock exists. It may be our own: the SDK retries a put whose
        // response was lost, and the retry then meets the put that succeeded.
        Ok(match self.read_lock().await? {
            LockRead::Free => Attempt::Again,
            LockRead::Held { info: holder, .. } if holder.id == info.id => {
                tracing::info!(
                    "the lock put met our own earlier put of lock {} (a retried request); \
                     we hold the lock",
                    info.id
                );
                Attempt::Held
            }
            LockRead::Held { info: holder, .. } => Attempt::Busy(StateError::Locked {
                holder: Box::new(holder),
            }),
            LockRead::Unreadable => Attempt::Busy(self.locked_unknown()),
        })
    }

    /// Checks, with the lock object we just created (holding `body`), that
    /// the endpoint refuses conditional writes that must fail: a put with
    /// `If-None-Match: *` and one with `If-Match` of another ETag. A store
    /// that ignores them would let two runs hold the lock at once. Should it
    /// accept them, the lock object is rewritten with the same bytes.
    async fn probe_conditions(&self, body: &[u8]) -> Result<(), StateError> {
        let store = self.store().await?;
        let honoured = |r: &Result<String, Refusal>| {
            matches!(r, Err(Refusal::Precondition | Refusal::Contention))
        };
        let absent = store
            .put(&self.lock_key, body.to_vec(), &[], Cond::Absent)
            .await?;
        if !honoured(&absent) {
            return Err(self.no_conditions(
                "a PutObject with If-None-Match: * on an existing object was accepted",
            ));
        }
        let stale = store
            .put(
                &self.lock_key,
                body.to_vec(),
                &[],
                Cond::Matches("\"prov-probe-no-such-etag\""),
            )
            .await?;
        if !honoured(&stale) {
            return Err(self.no_conditions(
                "a PutObject with If-Match of an ETag the object does not have was accepted",
            ));
        }
        Ok(())
    }

    fn no_conditions(&self, what: &str) -> StateError {
        StateError::NoConditionalWrites {
            endpoint: self
                .settings
                .endpoint
                .clone()
                .unwrap_or_else(|| "of AWS S3".to_owned()),
            what: what.to_owned(),
        }
    }

    /// Checks that the lock object is still lock `id`.
    pub(super) async fn check_held(&self, id: &str) -> Result<(), StateError> {
        let gone = |now: String| StateError::LockGone {
            ours: id.to_owned(),
            target: self.url(&self.lock_key),
            now,
        };
        match self.read_lock().await? {
            LockRead::Held { info, .. } if info.id == id => Ok(()),
            LockRead::Held { info, .. } => Err(gone(format!("the state is now locked by {info}"))),
            LockRead::Free => Err(gone("nobody holds it now".to_owned())),
            LockRead::Unreadable => Err(self.locked_unknown()),
        }
    }

    /// Deletes the lock `id` if it is still the lock object.
    async fn release(&self, id: &str) -> Result<(), StateError> {
        let store = self.store().await?;
        for _ in 0..UNLOCK_ATTEMPTS {
            match self.read_lock().await? {
                LockRead::Free => {
                    tracing::warn!(
                        "the lock {id} on {} was already gone (force-unlocked while held?)",
                        self.url(&self.key)
                    );
                    return Ok(());
                }
                LockRead::Held { info, etag } if info.id == id => {
                    match store.delete(&self.lock_key, Some(&etag)).await? {
                        Ok(()) | Err(Refusal::Missing) => return Ok(()),
                        // Replaced between our read and our delete: look again.
                        Err(Refusal::Precondition | Refusal::Contention) => {}
                    }
                }
                LockRead::Held { info, .. } => {
                    return Err(StateError::LockLost {
                        ours: id.to_owned(),
                        holder: Box::new(info),
                    })
                }
                LockRead::Unreadable => return Err(self.locked_unknown()),
            }
        }
        Err(StateError::S3 {
            operation: "DeleteObject",
            target: self.url(&self.lock_key),
            message: "the lock object kept changing while releasing it; nothing was deleted"
                .to_owned(),
        })
    }
}

impl Inner {
    /// Takes the lock for `info`, waiting up to `timeout`; the first lock
    /// this backend takes also probes that the endpoint honours conditional
    /// writes.
    pub(super) async fn acquire(
        self: &Arc<Self>,
        info: LockInfo,
        timeout: Duration,
    ) -> Result<S3Lock, StateError> {
        let body = serde_json::to_vec_pretty(&info).map_err(encode_err)?;
        let deadline = Instant::now() + timeout;
        let mut transient = 0;
        loop {
            let busy = match self.try_lock(&info, &body).await? {
                Attempt::Held => {
                    if self.probed.get().is_none() {
                        if let Err(error) = self.probe_conditions(&body).await {
                            if let Err(e) = self.release(&info.id).await {
                                tracing::warn!("releasing the lock after the probe: {e}");
                            }
                            return Err(error);
                        }
                        let _ = self.probed.set(());
                    }
                    return Ok(S3Lock {
                        inner: Arc::clone(self),
                        info,
                        released: false,
                    });
                }
                Attempt::Again if transient < TRANSIENT_RETRIES => {
                    transient += 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
                Attempt::Again => self.locked_unknown(),
                Attempt::Busy(err) => err,
            };
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(busy);
            }
            transient = 0;
            tokio::time::sleep(left.min(RETRY_INTERVAL)).await;
        }
    }

    /// Who holds the lock now, if anyone.
    pub(super) async fn holder(&self) -> Result<Option<LockInfo>, StateError> {
        match self.read_lock().await? {
            LockRead::Free => Ok(None),
            LockRead::Held { info, .. } => Ok(Some(info)),
            LockRead::Unreadable => Err(self.locked_unknown()),
        }
    }

    /// Deletes the lock object when it is lock `id` (`prov state
    /// force-unlock`).
    pub(super) async fn force_unlock(&self, id: &str) -> Result<(), StateError> {
        let store = self.store().await?;
        for _ in 0..UNLOCK_ATTEMPTS {
            match self.read_lock().await? {
                LockRead::Free => {
                    tracing::info!("no lock on {}; nothing to unlock", self.url(&self.key));
                    return Ok(());
                }
                LockRead::Held { info, etag } if info.id == id => {
                    match store.delete(&self.lock_key, Some(&etag)).await? {
                        Ok(()) | Err(Refusal::Missing) => {
                            tracing::info!("removed the lock of {info}");
                            return Ok(());
                        }
                        Err(Refusal::Precondition | Refusal::Contention) => {}
                    }
                }
                LockRead::Held { info, .. } => {
                    return Err(StateError::LockMismatch {
                        given: id.to_owned(),
                        holder: Some(Box::new(info)),
                    })
                }
                LockRead::Unreadable => return Err(self.locked_unknown()),
            }
        }
        Err(StateError::S3 {
            operation: "DeleteObject",
            target: self.url(&self.lock_key),
            message: "the lock object kept changing; nothing was deleted".to_owned(),
        })
    }
}

/// A lock object held by this process. Every write and prune checks first
/// that the lock object is still this lock ([`StateError::LockGone`] once it
/// was force-unlocked). Dropping it without [`StateLock::unlock`] releases
/// it (best effort); a killed run leaves it for `prov state force-unlock`.
pub(super) struct S3Lock {
    /// The backend it belongs to.
    inner: Arc<Inner>,
    /// The holder record (its id is the lock's).
    info: LockInfo,
    /// Whether it was released (or handed to a background release).
    released: bool,
}

impl std::fmt::Debug for S3Lock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Lock")
            .field("lock", &self.inner.url(&self.inner.lock_key))
            .field("id", &self.info.id)
            .field("released", &self.released)
            .finish()
    }
}

impl Drop for S3Lock {
    fn drop(&mut self) {
        if self.released {
            return;
        }
        self.released = true;
        let url = self.inner.url(&self.inner.lock_key);
        let id = self.info.id.clone();
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::warn!(
                "the lock {id} on {url} was dropped outside a runtime and stays until \
                 `prov state force-unlock {id}`"
            );
            return;
        };
        let inner = Arc::clone(&self.inner);
        let release = async move {
            if let Err(e) = inner.release(&id).await {
                tracing::warn!("releasing the lock {id} on {url}: {e}");
            }
        };
        // On prov's multi-threaded runtime, release before going on (the
        // process may exit right after); elsewhere in the background.
        match runtime.runtime_flavor() {
            tokio::runtime::RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(|| runtime.block_on(release));
            }
            _ => drop(runtime.spawn(release)),
        }
    }
}

#[async_trait]
impl StateLock for S3Lock {
    fn info(&self) -> &LockInfo {
        &self.info
    }

    async fn check(&self) -> Result<(), StateError> {
        self.inner.check_held(&self.info.id).await
    }

    async fn write(&self, doc: &StateDocument) -> Result<(), StateError> {
        self.inner
            .write_version(
                &self.info.id,
                doc,
                meta::of_entry(doc, &writing::entry_now(doc, &self.info)),
            )
            .await
    }

    async fn write_copy(
        &self,
        doc: &StateDocument,
        entry: &HistoryEntry,
    ) -> Result<(), StateError> {
        self.inner
            .write_version(
                &self.info.id,
                doc,
                meta::of_entry(doc, &writing::entry_copied(doc, entry)),
            )
            .await
    }

    async fn prune(&self, keep: u64) -> Result<u64, StateError> {
        self.inner.check_held(&self.info.id).await?;
        self.inner.prune(keep).await
    }

    async fn unlock(self: Box<Self>) -> Result<(), StateError> {
        let mut this = self;
        this.released = true;
        this.inner.release(&this.info.id).await
    }

    async fn remove(self: Box<Self>) -> Result<(), StateError> {
        let mut this = self;
        this.inner.remove_versions(&this.info.id).await?;
        this.released = true;
        this.inner.release(&this.info.id).await
    }
}

impl Inner {
    /// Deletes every version (history first, then the state object) while
    /// the lock `id` is held; the lock itself stays for the caller to
    /// release.
    async fn remove_versions(&self, id: &str) -> Result<(), StateError> {
        self.check_held(id).await?;
        let store = self.store().await?;
        let mut keys = store.list(&self.history_prefix).await?;
        keys.push(self.key.clone());
        for key in keys {
            if let Err(refusal) = store.delete(&key, None).await? {
                return Err(store.unexpected("DeleteObject", &key, refusal));
            }
        }
        *self
            .seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = None;
        Ok(())
    }
}
