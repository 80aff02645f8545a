//! The state document being applied, and saving it.
//!
//! Writes go through one writer task per session, which owns the lock
//! (every write goes through it) and the last saved version. That makes saving safe to cancel: a
//! caller abandoned mid-save (Ctrl-C, a task aborted) does not abandon the
//! write, and the next save still knows which version is stored. When the
//! session goes away without [`StateSession::close`] (its command was
//! dropped), the writer releases the lock itself; [`settle`] waits for that.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use prov_state::{StateBackend, StateDocument, StateError, StateLock};
use tokio::sync::{mpsc, oneshot, Notify};

/// The state of one run: the lock held on it (by its writer) and the
/// document as it is now. Saving writes a new serial only when the content
/// changed.
#[derive(Debug)]
pub struct StateSession {
    /// The document as it is now (saved or not).
    pub doc: StateDocument,
    writer: mpsc::Sender<Request>,
    describe: String,
    /// `[state] keep_versions`, applied when the session closes.
    keep_versions: Option<u64>,
    /// Remove the state instead of only releasing the lock on close.
    remove: bool,
}

enum Request {
    /// Write this document if it differs from the saved one; answers with
    /// the serial it is stored under.
    Save(Box<StateDocument>, oneshot::Sender<Result<u64, StateError>>),
    /// Check that the lock is still ours.
    Check(oneshot::Sender<Result<(), StateError>>),
    /// Prune history to the newest N versions (when given and this
    /// session wrote any), release the lock and stop.
    Close(Option<u64>, oneshot::Sender<Result<(), StateError>>),
    Remove(oneshot::Sender<Result<(), StateError>>),
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Save(doc, _) => write!(f, "Save(serial {})", doc.serial),
            Self::Check(_) => f.write_str("Check"),
            Self::Close(..) => f.write_str("Close"),
            Self::Remove(_) => f.write_str("Remove"),
        }
    }
}

impl StateSession {
    /// A session over `doc`, as last read from `backend` (`stored`), writing
    /// through `lock`, taken on `backend`.
    #[must_use]
    pub fn new(
        backend: Arc<dyn StateBackend>,
        lock: Box<dyn StateLock>,
        doc: StateDocument,
        stored: Option<StateDocument>,
    ) -> Self {
        let describe = backend.describe();
        let (tx, rx) = mpsc::channel(1);
        WRITERS.fetch_add(1, Ordering::SeqCst);
        tokio::spawn(async move {
            writer(lock, stored, rx).await;
            WRITERS.fetch_sub(1, Ordering::SeqCst);
            WRITERS_DONE.notify_waiters();
        });
        Self {
            doc,
            writer: tx,
            describe,
            keep_versions: None,
            remove: false,
        }
    }

    /// Prunes history to the newest `keep` versions when the session closes
    /// after writing (`[state] keep_versions`).
    #[must_use]
    pub fn keeping(mut self, keep: Option<u64>) -> Self {
        self.keep_versions = keep;
        self
    }

    /// Writes the document as a new version if its content changed.
    ///
    /// # Errors
    /// When the backend refuses the write.
    pub async fn save(&mut self) -> Result<()> {
        let doc = Box::new(self.doc.clone());
        let serial = ask(&self.writer, |tx| Request::Save(doc, tx))
            .await?
            .with_context(|| format!("saving state to {}", self.describe))?;
        self.doc.set_serial(serial);
        Ok(())
    }

    /// Checks that the lock is still this run's (an S3 lock can be
    /// force-unlocked while held): before starting more provider calls.
    ///
    /// # Errors
    /// When the lock was taken away, or cannot be read.
    pub async fn check_lock(&self) -> Result<()> {
        ask(&self.writer, Request::Check)
            .await?
            .with_context(|| format!("checking the lock on {}", self.describe))
    }

    /// Releases the lock.
    ///
    /// # Errors
    /// When the backend cannot release it.
    pub async fn close(self) -> Result<()> {
        if self.remove {
            ask(&self.writer, Request::Remove).await??;
            return Ok(());
        }
        let keep = self.keep_versions;
        ask(&self.writer, |reply| Request::Close(keep, reply)).await??;
        Ok(())
    }

    /// Makes [`StateSession::close`] remove the state, every version of it
    /// and then the lock (`prov env down`), instead of releasing the lock.
    pub fn remove_when_closed(&mut self) {
        self.remove = true;
    }
}

/// Sends the writer the request `make` builds around a reply channel, and
/// waits for the reply.
async fn ask<T>(
    writer: &mpsc::Sender<Request>,
    make: impl FnOnce(oneshot::Sender<T>) -> Request,
) -> Result<T> {
    let stopped = || anyhow!("internal error: the state writer stopped");
    let (tx, rx) = oneshot::channel();
    writer.send(make(tx)).await.map_err(|_| stopped())?;
    rx.await.map_err(|_| stopped())
}

static WRITERS: AtomicUsize = AtomicUsize::new(0);
static WRITERS_DONE: Notify = Notify::const_new();

/// Waits (at most `limit`) until every session's writer has finished its
/// last write and released its lock. For the exit path of a command that
/// was dropped before it could close its session.
pub async fn settle(limit: Duration) {
    let wait = async {
        loop {
            let done = WRITERS_DONE.notified();
            if WRITERS.load(Ordering::SeqCst) == 0 {
                return;
            }
            done.await;
        }
    };
    let _ = tokio::time::timeout(limit, wait).await;
}

async fn writer(
    lock: Box<dyn StateLock>,
    mut saved: Option<StateDocument>,
    mut requests: mpsc::Receiver<Request>,
) {
    let mut wrote = false;
    while let Some(request) = requests.recv().await {
        match request {
            Request::Save(mut doc, reply) => {
                let result = match &saved {
                    Some(saved) if saved.same_content(&doc) => Ok(saved.serial),
                    _ => match saved
                        .as_ref()
                        .map_or(Some(doc.serial.max(1)), |s| s.serial.checked_add(1))
                    {
                        None => Err(StateError::Corrupt(
                            "the serial cannot grow past 18446744073709551615".to_owned(),
                        )),
                        Some(serial) => {
                            doc.set_serial(serial);
                            match lock.write(&doc).await {
                                Ok(()) => {
                                    wrote = true;
                                    let serial = doc.serial;
                                    saved = Some(*doc);
                                    Ok(serial)
                                }
                                Err(error) => Err(error),
                            }
                        }
                    },
                };
                // The caller may be gone; the write counts all the same.
                let _ = reply.send(result);
            }
            Request::Check(reply) => {
                let _ = reply.send(lock.check().await);
            }
            Request::Close(keep, reply) => {
                if let Some(keep) = keep.filter(|_| wrote) {
                    // What was written stands; an old version left behind
                    // is pruned next time.
                    match lock.prune(keep).await {
                        Ok(0) => {}
                        Ok(n) => tracing::info!("pruned {n} old state version(s), keeping {keep}"),
                        Err(error) => {
                            tracing::warn!("pruning state history to {keep} versions: {error}")
                        }
                    }
                }
                let _ = reply.send(lock.unlock().await);
                return;
            }
            Request::Remove(reply) => {
                let _ = reply.send(lock.remove().await);
                return;
            }
        }
    }
    // Every handle was dropped without closing: release the lock anyway.
    if let Err(error) = lock.unlock().await {
        tracing::warn!("releasing the state lock of an abandoned session: {error}");
    }
}
