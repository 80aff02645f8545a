//! Team-shared state in an S3 bucket.
//!
//! Objects, for the state key `KEY` (under `workspaces/NAME/` with a
//! workspace):
//! - `KEY`: the latest document (JSON). Every write is a compare-and-swap:
//!   `If-Match` on the ETag this backend last read or wrote (`If-None-Match: *`
//!   when the object did not exist), so a change made behind prov's back is a
//!   [`StateError::Conflict`], never silently overwritten.
//! - `KEY.history/SERIAL.json` (serial zero-padded to 20 digits): every
//!   version, written *before* the state object, so history never lacks the
//!   current version. Versions above the current serial (left by a write
//!   whose compare-and-swap failed, or by a run killed between the two puts)
//!   are not listed and are replaced by the next write of that serial.
//! - `KEY.lock`: the lock, created with `If-None-Match: *`; its body is the
//!   holder's [`LockInfo`]. A 412 whose stored lock id is our own counts as
//!   acquired (an SDK retry of a put that had in fact succeeded). Unlocking
//!   deletes the lock only when it is still ours, with `If-Match` on its ETag.
//!   A killed run leaves its lock behind: the message names it and
//!   `prov state force-unlock ID` removes it.
//!
//! Each version also carries its history entry as user metadata
//! (`x-amz-meta-prov-serial`, `-written-at`, `-written-by`, `-resources`,
//! `-lineage`), so `history` reads headers only.

mod meta;
mod settings;
mod store;

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde::Deserialize;

use crate::lock::LockHandle;
use crate::{
    HistoryEntry, LockGuard, LockInfo, StateBackend, StateDocument, StateError, FORMAT_VERSION,
};
use meta::Chain;
pub use settings::S3Settings;
use store::{Cond, Object, Refusal, Store};

use crate::delta::{self, Step};

/// How long to sleep between attempts while waiting for a held lock.
const RETRY_INTERVAL: Duration = Duration::from_millis(500);
/// How often a lock attempt may meet a transient state (the lock vanishing
/// between our put and our read, a 409 from a concurrent put) before it
/// counts as one failed attempt.
const TRANSIENT_RETRIES: u32 = 10;
/// How many `HeadObject` calls `history` runs at once.
const HISTORY_CONCURRENCY: usize = 16;
/// How many times unlock re-reads a lock object that changed under it.
const UNLOCK_ATTEMPTS: u32 = 3;

/// State in an S3 bucket: locked with a conditional put, written with
/// compare-and-swap, every version kept.
pub struct S3Backend {
    inner: Arc<Inner>,
}

/// What the backend and its lock guards share.
struct Inner {
    /// Where the state lives.
    settings: S3Settings,
    /// The state object's key (workspace prefix included).
    key: String,
    /// `KEY.lock`.
    lock_key: String,
    /// `KEY.history/`.
    history_prefix: String,
    /// The client, built on first use.
    store: tokio::sync::OnceCell<Store>,
    /// The state object as this backend last read or wrote it.
    seen: Mutex<Option<Seen>>,
    /// Set once the endpoint was seen to honour conditional writes.
    probed: tokio::sync::OnceCell<()>,
}

/// The state object as last seen: what the next write's condition is.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seen {
    /// It did not exist.
    Absent,
    /// It existed with this ETag, holding this serial and lineage.
    Present {
        /// Its ETag.
        etag: String,
        /// The serial of the document in it.
        serial: u64,
        /// The lineage of the document in it.
        lineage: String,
        /// The document (what the next version is a patch from).
        doc: Arc<serde_json::Value>,
        /// Its place in the chain of patches.
        chain: Chain,
    },
}

impl Seen {
    /// What `object`, a stored document with `header`, is.
    fn of(object: Object, header: &Header) -> Self {
        Self::Present {
            chain: meta::chain(header.serial, &object.metadata),
            etag: object.etag,
            serial: header.serial,
            lineage: header.lineage.clone(),
            // Unreadable bytes fail the header first; a `null` would only
            // make the next version whole.
            doc: Arc::new(serde_json::from_slice(&object.bytes).unwrap_or_default()),
        }
    }
}

/// The fields checked before (and whatever the rest of) a stored document.
#[derive(Deserialize)]
struct Header {
    /// Layout version.
    format_version: u32,
    /// Deployment identity.
    lineage: String,
    /// Version number.
    serial: u64,
}

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
    /// The client, connecting on first use.
    async fn store(&self) -> Result<&Store, StateError> {
        self.store
            .get_or_try_init(|| Store::connect(&self.settings))
            .await
    }

    /// `s3://BUCKET/KEY`.
    fn url(&self, key: &str) -> String {
        format!("s3://{}/{key}", self.settings.bucket)
    }

    /// The key of version `serial` in history.
    fn history_key(&self, serial: u64) -> String {
        format!("{}{serial:020}.json", self.history_prefix)
    }

    /// The serial of a history key, if it is one.
    fn serial_of(&self, key: &str) -> Option<u64> {
        let digits = key
            .strip_prefix(&self.history_prefix)?
            .strip_suffix(".json")?;
        if digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()) {
            digits.parse().ok()
        } else {
            None
        }
    }

    /// What the last read or write saw.
    fn seen(&self) -> Option<Seen> {
        self.seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Remembers (or forgets) what the state object is now.
    fn remember(&self, seen: Option<Seen>) {
        *self.seen.lock().unwrap_or_else(PoisonError::into_inner) = seen;
    }

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
    async fn check_held(&self, id: &str) -> Result<(), StateError> {
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

    /// Reads the state object and decodes its header.
    async fn current(&self) -> Result<Option<(Object, Header)>, StateError> {
        let store = self.store().await?;
        let Some(object) = store.get(&self.key).await? else {
            return Ok(None);
        };
        let header = decode_header("the current version", &object.bytes)?;
        Ok(Some((object, header)))
    }

    /// What the state object is now.
    async fn fetch_seen(&self) -> Result<Seen, StateError> {
        Ok(match self.current().await? {
            None => Seen::Absent,
            Some((object, header)) => Seen::of(object, &header),
        })
    }

    /// The message of a failed compare-and-swap against `seen`.
    fn changed(&self, seen: &Seen) -> String {
        let url = self.url(&self.key);
        let what = match seen {
            Seen::Present { etag, .. } => {
                format!("the state object {url} changed since it was read (expected ETag {etag})")
            }
            Seen::Absent => format!(
                "the state object {url} was created by someone else since it was read as absent"
            ),
        };
        format!(
            "{what}; nothing was overwritten. Someone wrote it without holding the lock (or \
             the lock was force-unlocked while this run held it): run again to plan against \
             the current state, and see `prov state history`"
        )
    }

    /// Stores version `serial` in history before the state object is
    /// swapped; returns its ETag.
    async fn put_history(
        &self,
        serial: u64,
        json: &[u8],
        metadata: &[(&str, String)],
        seen: &Seen,
    ) -> Result<String, StateError> {
        let store = self.store().await?;
        let key = self.history_key(serial);
        match store
            .put(&key, json.to_vec(), metadata, Cond::Absent)
            .await?
        {
            Ok(etag) => return Ok(etag),
            Err(Refusal::Precondition) => {}
            Err(Refusal::Contention | Refusal::Missing) => {
                return Err(StateError::Conflict(format!(
                    "another write of version {serial} to {} is in progress",
                    self.url(&key)
                )))
            }
        }
        // Version `serial` is in history but is not the current state (that
        // is what `seen` says, if it still holds): a leftover of a write that
        // failed or was killed between its two puts. Replace it, but only
        // while the state object is still the one we read.
        if self.fetch_seen().await? != *seen {
            return Err(StateError::Conflict(self.changed(seen)));
        }
        let stale = store.head(&key).await?;
        let cond = match &stale {
            Some(head) => Cond::Matches(&head.etag),
            None => Cond::Absent,
        };
        tracing::info!(
            "replacing {} left by a write that never became current",
            self.url(&key)
        );
        match store.put(&key, json.to_vec(), metadata, cond).await? {
            Ok(etag) => Ok(etag),
            Err(_) => Err(StateError::Conflict(format!(
                "{} changed while replacing it; another writer is active",
                self.url(&key)
            ))),
        }
    }

    /// After a failed compare-and-swap of version `serial`: makes history
    /// agree with the state object again (best effort: the history entry
    /// above the current serial is ignored anyway).
    async fn undo_history(&self, serial: u64, ours: &str) {
        let key = self.history_key(serial);
        let result = async {
            let store = self.store().await?;
            match store.get(&self.key).await? {
                // Someone else made `serial` current: history must hold theirs.
                Some(current)
                    if decode_header("the current version", &current.bytes)
                        .is_ok_and(|h| h.serial == serial) =>
                {
                    let metadata = meta::carried(&current.metadata);
                    let _ = store
                        .put(&key, current.bytes, &metadata, Cond::Matches(ours))
                        .await?;
                }
                _ => {
                    let _ = store.delete(&key, Some(ours)).await?;
                }
            }
            Ok::<(), StateError>(())
        }
        .await;
        if let Err(e) = result {
            tracing::warn!("cleaning up {}: {e}", self.url(&key));
        }
    }
}

/// The chain of a version stored whole.
fn whole(serial: u64) -> Chain {
    Chain {
        base: serial,
        bytes: 0,
    }
}

/// Decodes the header of a stored document (`what` names it in errors).
fn decode_header(what: &str, bytes: &[u8]) -> Result<Header, StateError> {
    let header: Header = serde_json::from_slice(bytes)
        .map_err(|e| StateError::Corrupt(format!("{what} does not decode: {e}")))?;
    if header.format_version > FORMAT_VERSION {
        return Err(StateError::Format {
            found: header.format_version,
            supported: FORMAT_VERSION,
        });
    }
    Ok(header)
}

/// Decodes a stored document (`what` names it in errors).
pub(crate) fn decode_doc(what: &str, bytes: &[u8]) -> Result<StateDocument, StateError> {
    decode_header(what, bytes)?;
    serde_json::from_slice(bytes)
        .map_err(|e| StateError::Corrupt(format!("{what} does not decode: {e}")))
}

/// An encoding failure (cannot happen for these types, but is not unwrapped).
fn encode_err(e: serde_json::Error) -> StateError {
    std::io::Error::other(format!("encoding state: {e}")).into()
}

/// A lock object held by this process; dropping it without
/// [`StateBackend::unlock`] releases it in the background (best effort).
pub(crate) struct HeldLock {
    /// The backend it belongs to.
    inner: Arc<Inner>,
    /// The lock id.
    id: String,
    /// Whether it was released (or handed to a background release).
    released: bool,
}

impl std::fmt::Debug for HeldLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeldLock")
            .field("lock", &self.inner.url(&self.inner.lock_key))
            .field("id", &self.id)
            .field("released", &self.released)
            .finish()
    }
}

impl Drop for HeldLock {
    fn drop(&mut self) {
        if self.released {
            return;
        }
        self.released = true;
        let url = self.inner.url(&self.inner.lock_key);
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::warn!(
                "the lock {} on {url} was dropped outside a runtime and stays until \
                 `prov state force-unlock {}`",
                self.id,
                self.id
            );
            return;
        };
        let inner = Arc::clone(&self.inner);
        let id = self.id.clone();
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

impl S3Backend {
    /// A backend on `settings`, connected now (the AWS configuration is loaded
    /// from the standard chain).
    ///
    /// # Errors
    /// Invalid settings, or no AWS region.
    pub async fn new(settings: S3Settings) -> Result<Self, StateError> {
        let backend = Self::lazy(settings)?;
        backend.inner.store().await?;
        Ok(backend)
    }

    /// A backend on `settings` that connects on first use (for callers that
    /// are not async).
    ///
    /// # Errors
    /// Invalid settings (bucket name, key, workspace).
    pub fn lazy(settings: S3Settings) -> Result<Self, StateError> {
        settings.validate().map_err(|message| StateError::S3 {
            operation: "configuration",
            target: format!("s3://{}/{}", settings.bucket, settings.key),
            message,
        })?;
        let key = settings.object_key();
        Ok(Self {
            inner: Arc::new(Inner {
                lock_key: format!("{key}.lock"),
                history_prefix: format!("{key}.history/"),
                key,
                settings,
                store: tokio::sync::OnceCell::new(),
                seen: Mutex::new(None),
                probed: tokio::sync::OnceCell::new(),
            }),
        })
    }

    /// The settings.
    #[must_use]
    pub fn settings(&self) -> &S3Settings {
        &self.inner.settings
    }

    /// The key of the state object.
    #[must_use]
    pub fn state_key(&self) -> &str {
        &self.inner.key
    }

    /// The key of the lock object (`KEY.lock`).
    #[must_use]
    pub fn lock_key(&self) -> &str {
        &self.inner.lock_key
    }

    /// The key of version `serial` in history (`KEY.history/000…SERIAL.json`).
    #[must_use]
    pub fn history_key(&self, serial: u64) -> String {
        self.inner.history_key(serial)
    }

    /// A backend on `settings` using an already loaded AWS configuration
    /// (credentials, region, endpoint); an endpoint in `settings` overrides
    /// the configuration's.
    ///
    /// # Errors
    /// Invalid settings, or no region in `config`.
    pub fn from_sdk_config(
        settings: S3Settings,
        config: &aws_config::SdkConfig,
    ) -> Result<Self, StateError> {
        let store = Store::from_sdk_config(&settings, config)?;
        let backend = Self::lazy(settings)?;
        backend
            .inner
            .store
            .set(store)
            .map_err(|_| std::io::Error::other("the S3 client was already set"))?;
        Ok(backend)
    }

    /// Writes `doc` as the next version carrying `metadata` (its history
    /// entry): the history object first, then the state object by
    /// compare-and-swap.
    async fn write_version(
        &self,
        guard: &LockGuard,
        doc: &StateDocument,
        metadata: Vec<(&'static str, String)>,
    ) -> Result<(), StateError> {
        if doc.format_version != FORMAT_VERSION {
            return Err(StateError::Format {
                found: doc.format_version,
                supported: FORMAT_VERSION,
            });
        }
        if !self.owns(guard) {
            return Err(self.not_ours("write"));
        }
        self.inner.check_held(&guard.info.id).await?;
        let seen = match self.inner.seen() {
            Some(seen) => seen,
            None => self.inner.fetch_seen().await?,
        };
        if let Seen::Present {
            serial: latest,
            lineage,
            ..
        } = &seen
        {
            if *lineage != doc.lineage {
                return Err(StateError::Conflict(format!(
                    "lineage mismatch: the stored state has lineage {lineage}, the document has \
                     lineage {} (it belongs to another deployment)",
                    doc.lineage
                )));
            }
            if doc.serial != latest + 1 {
                return Err(StateError::Conflict(format!(
                    "expected serial {}, got {} (the stored state is at serial {latest}; \
                     re-read the state and try again)",
                    latest + 1,
                    doc.serial
                )));
            }
        }
        let value = serde_json::to_value(doc).map_err(encode_err)?;
        let json = serde_json::to_vec(doc).map_err(encode_err)?;
        // Stored in history whole, or as a patch from the version before.
        let (stored, chain) = match &seen {
            Seen::Present {
                doc: prev, chain, ..
            } => match delta::step((**prev).clone(), &value, json.len(), chain.bytes) {
                Step::Patch { ops, chain: bytes } => (
                    ops,
                    Chain {
                        base: chain.base,
                        bytes,
                    },
                ),
                Step::Whole => (json.clone(), whole(doc.serial)),
            },
            Seen::Absent => (json.clone(), whole(doc.serial)),
        };
        let metadata = meta::with_chain(metadata, chain);
        let ours = self
            .inner
            .put_history(doc.serial, &stored, &metadata, &seen)
            .await?;
        let store = self.inner.store().await?;
        let cond = match &seen {
            Seen::Absent => Cond::Absent,
            Seen::Present { etag, .. } => Cond::Matches(etag),
        };
        let value = Arc::new(value);
        let now = |etag| Seen::Present {
            etag,
            serial: doc.serial,
            lineage: doc.lineage.clone(),
            doc: Arc::clone(&value),
            chain,
        };
        match store
            .put(&self.inner.key, json.clone(), &metadata, cond)
            .await?
        {
            Ok(etag) => {
                self.inner.remember(Some(now(etag)));
                Ok(())
            }
            Err(refusal) => {
                // An SDK retry of a put that had in fact succeeded meets our
                // own write: the object holds exactly our bytes.
                if refusal == Refusal::Precondition {
                    if let Some(current) = store.get(&self.inner.key).await? {
                        if current.bytes == json {
                            self.inner.remember(Some(now(current.etag)));
                            return Ok(());
                        }
                    }
                }
                self.inner.remember(None);
                self.inner.undo_history(doc.serial, &ours).await;
                Err(StateError::Conflict(self.inner.changed(&seen)))
            }
        }
    }

    /// The JSON of version `serial` from history: stored whole, or rebuilt
    /// from the whole version its chain starts at and the patches after it.
    async fn history_bytes(&self, serial: u64) -> Result<Option<Vec<u8>>, StateError> {
        let store = self.inner.store().await?;
        let Some(object) = store.get(&self.inner.history_key(serial)).await? else {
            return Ok(None);
        };
        if !delta::is_patch(&object.bytes) {
            return Ok(Some(object.bytes));
        }
        // A prune keeps the oldest version it keeps whole: a chain that
        // started before it starts there now.
        let mut base = meta::chain(serial, &object.metadata).base;
        if base == serial || store.head(&self.inner.history_key(base)).await?.is_none() {
            let oldest = store
                .list(&self.inner.history_prefix)
                .await?
                .iter()
                .filter_map(|key| self.inner.serial_of(key))
                .filter(|s| *s < serial)
                .min();
            base = oldest.ok_or_else(|| {
                StateError::Corrupt(format!(
                    "version {serial} is a patch with no version before it"
                ))
            })?;
        }
        let mut objects = Vec::new();
        let serials: Vec<u64> = (base..serial).collect();
        for chunk in serials.chunks(HISTORY_CONCURRENCY) {
            let mut tasks = tokio::task::JoinSet::new();
            for &s in chunk {
                let store = store.clone();
                let key = self.inner.history_key(s);
                tasks.spawn(async move { (s, store.get(&key).await) });
            }
            while let Some(joined) = tasks.join_next().await {
                match joined {
                    Ok((s, got)) => objects.push((s, got?)),
                    Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                    Err(e) => {
                        return Err(std::io::Error::other(format!(
                            "reading history was cancelled: {e}"
                        ))
                        .into())
                    }
                }
            }
        }
        objects.sort_by_key(|(s, _)| *s);
        objects.push((serial, Some(object)));
        let mut doc: Option<serde_json::Value> = None;
        for (s, object) in objects {
            let object = object.ok_or_else(|| {
                StateError::Corrupt(format!(
                    "version {s} is missing from history, and version {serial} is rebuilt through it"
                ))
            })?;
            if delta::is_patch(&object.bytes) {
                let doc = doc.as_mut().ok_or_else(|| {
                    StateError::Corrupt(format!(
                        "version {s} is a patch with no whole version before it"
                    ))
                })?;
                delta::apply(doc, s, &object.bytes)?;
            } else {
                doc = Some(delta::parse(s, &object.bytes)?);
            }
        }
        let bytes = doc.as_ref().map(delta::encode).transpose()?;
        if let Some(bytes) = &bytes {
            if decode_header(&format!("version {serial}"), bytes)?.serial != serial {
                return Err(StateError::Corrupt(format!(
                    "version {serial} rebuilt from version {base} and its patches says another serial"
                )));
            }
        }
        Ok(bytes)
    }

    /// Whether `guard` is a lock on this backend's state object.
    fn owns(&self, guard: &LockGuard) -> bool {
        match &guard.handle {
            LockHandle::S3 { held } => {
                Arc::ptr_eq(&held.inner, &self.inner)
                    || (held.inner.settings.endpoint == self.inner.settings.endpoint
                        && held.inner.settings.bucket == self.inner.settings.bucket
                        && held.inner.lock_key == self.inner.lock_key)
            }
            LockHandle::File { .. } => false,
        }
    }

    /// The error for a guard that is not this state's lock.
    fn not_ours(&self, what: &str) -> StateError {
        StateError::Conflict(format!(
            "{what} without holding the lock on {}",
            self.describe()
        ))
    }

    /// The entry of version `serial`, from its metadata or else its content.
    async fn entry(store: Store, key: String, serial: u64) -> Result<HistoryEntry, StateError> {
        if let Some(head) = store.head(&key).await? {
            if let Some(entry) = meta::entry(serial, &head.metadata) {
                return Ok(entry);
            }
        }
        // Written by something else than prov: derive what we can.
        let object = store.get(&key).await?.ok_or_else(|| {
            StateError::Corrupt(format!("history version {serial} vanished while listing"))
        })?;
        let doc = decode_doc(&format!("version {serial}"), &object.bytes)?;
        Ok(HistoryEntry {
            serial,
            written_at: object.last_modified.unwrap_or_default(),
            written_by: "unknown (no prov metadata)".to_owned(),
            resources: doc.resources.len(),
        })
    }
}

impl std::fmt::Debug for S3Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Backend")
            .field("url", &self.inner.url(&self.inner.key))
            .field("endpoint", &self.inner.settings.endpoint)
            .field("region", &self.inner.settings.region)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl StateBackend for S3Backend {
    fn describe(&self) -> String {
        format!("S3 state at {}", self.inner.url(&self.inner.key))
    }

    async fn lock(&self, info: LockInfo, timeout: Duration) -> Result<LockGuard, StateError> {
        let body = serde_json::to_vec_pretty(&info).map_err(encode_err)?;
        let deadline = Instant::now() + timeout;
        let mut transient = 0;
        loop {
            let busy = match self.inner.try_lock(&info, &body).await? {
                Attempt::Held => {
                    if self.inner.probed.get().is_none() {
                        if let Err(error) = self.inner.probe_conditions(&body).await {
                            if let Err(e) = self.inner.release(&info.id).await {
                                tracing::warn!("releasing the lock after the probe: {e}");
                            }
                            return Err(error);
                        }
                        let _ = self.inner.probed.set(());
                    }
                    return Ok(LockGuard {
                        handle: LockHandle::S3 {
                            held: HeldLock {
                                inner: Arc::clone(&self.inner),
                                id: info.id.clone(),
                                released: false,
                            },
                        },
                        info,
                    });
                }
                Attempt::Again if transient < TRANSIENT_RETRIES => {
                    transient += 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
                Attempt::Again => self.inner.locked_unknown(),
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

    async fn unlock(&self, guard: LockGuard) -> Result<(), StateError> {
        if !self.owns(&guard) {
            return Err(self.not_ours("unlock"));
        }
        let LockHandle::S3 { mut held } = guard.handle else {
            return Err(self.not_ours("unlock"));
        };
        held.released = true;
        self.inner.release(&held.id).await
    }

    async fn check_lock(&self, guard: &LockGuard) -> Result<(), StateError> {
        if !self.owns(guard) {
            return Err(self.not_ours("lock check"));
        }
        self.inner.check_held(&guard.info.id).await
    }

    async fn lock_holder(&self) -> Result<Option<LockInfo>, StateError> {
        match self.inner.read_lock().await? {
            LockRead::Free => Ok(None),
            LockRead::Held { info, .. } => Ok(Some(info)),
            LockRead::Unreadable => Err(self.inner.locked_unknown()),
        }
    }

    async fn force_unlock(&self, id: &str) -> Result<(), StateError> {
        let store = self.inner.store().await?;
        for _ in 0..UNLOCK_ATTEMPTS {
            match self.inner.read_lock().await? {
                LockRead::Free => {
                    tracing::info!(
                        "no lock on {}; nothing to unlock",
                        self.inner.url(&self.inner.key)
                    );
                    return Ok(());
                }
                LockRead::Held { info, etag } if info.id == id => {
                    match store.delete(&self.inner.lock_key, Some(&etag)).await? {
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
                LockRead::Unreadable => return Err(self.inner.locked_unknown()),
            }
        }
        Err(StateError::S3 {
            operation: "DeleteObject",
            target: self.inner.url(&self.inner.lock_key),
            message: "the lock object kept changing; nothing was deleted".to_owned(),
        })
    }

    async fn read(&self) -> Result<Option<StateDocument>, StateError> {
        let store = self.inner.store().await?;
        let Some(object) = store.get(&self.inner.key).await? else {
            self.inner.remember(Some(Seen::Absent));
            return Ok(None);
        };
        let doc = decode_doc("the current version", &object.bytes)?;
        let header = Header {
            format_version: doc.format_version,
            lineage: doc.lineage.clone(),
            serial: doc.serial,
        };
        self.inner.remember(Some(Seen::of(object, &header)));
        Ok(Some(doc))
    }

    async fn write(&self, guard: &LockGuard, doc: &StateDocument) -> Result<(), StateError> {
        self.write_version(guard, doc, meta::for_version(doc, &guard.info))
            .await
    }

    async fn write_copy(
        &self,
        guard: &LockGuard,
        doc: &StateDocument,
        entry: &HistoryEntry,
    ) -> Result<(), StateError> {
        self.write_version(guard, doc, meta::copied(doc, entry))
            .await
    }

    async fn history(&self) -> Result<Vec<HistoryEntry>, StateError> {
        let Some((_, current)) = self.inner.current().await? else {
            return Ok(Vec::new());
        };
        let store = self.inner.store().await?;
        let mut serials: Vec<u64> = store
            .list(&self.inner.history_prefix)
            .await?
            .iter()
            .filter_map(|key| self.inner.serial_of(key))
            .filter(|serial| *serial <= current.serial)
            .collect();
        serials.sort_unstable();
        serials.dedup();
        let mut entries = Vec::with_capacity(serials.len());
        for chunk in serials.chunks(HISTORY_CONCURRENCY) {
            let mut tasks = tokio::task::JoinSet::new();
            for &serial in chunk {
                let key = self.inner.history_key(serial);
                tasks.spawn(Self::entry(store.clone(), key, serial));
            }
            while let Some(joined) = tasks.join_next().await {
                match joined {
                    Ok(entry) => entries.push(entry?),
                    Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                    Err(e) => {
                        return Err(std::io::Error::other(format!(
                            "reading history was cancelled: {e}"
                        ))
                        .into())
                    }
                }
            }
        }
        entries.sort_by_key(|e| e.serial);
        Ok(entries)
    }

    async fn read_serial(&self, serial: u64) -> Result<Option<StateDocument>, StateError> {
        match self.inner.current().await? {
            Some((object, current)) if serial == current.serial => {
                return decode_doc("the current version", &object.bytes).map(Some);
            }
            Some((_, current)) if serial < current.serial => {}
            _ => return Ok(None),
        }
        self.history_bytes(serial)
            .await?
            .map(|bytes| decode_doc(&format!("version {serial}"), &bytes))
            .transpose()
    }

    async fn prune(&self, guard: &LockGuard, keep: u64) -> Result<u64, StateError> {
        if !self.owns(guard) {
            return Err(self.not_ours("prune"));
        }
        self.inner.check_held(&guard.info.id).await?;
        let Some((_, current)) = self.inner.current().await? else {
            return Ok(0);
        };
        let Some(first) = current.serial.checked_sub(keep.max(1) - 1) else {
            return Ok(0);
        };
        let store = self.inner.store().await?;
        let old: Vec<u64> = store
            .list(&self.inner.history_prefix)
            .await?
            .iter()
            .filter_map(|key| self.inner.serial_of(key))
            .filter(|s| *s < first)
            .collect();
        if old.is_empty() {
            return Ok(0);
        }
        // The oldest version kept is stored whole before anything goes.
        let key = self.inner.history_key(first);
        let object = store.get(&key).await?.ok_or_else(|| {
            StateError::Corrupt(format!(
                "version {first} is missing from history; nothing was pruned"
            ))
        })?;
        if delta::is_patch(&object.bytes) {
            let whole = self.history_bytes(first).await?.ok_or_else(|| {
                StateError::Corrupt(format!(
                    "version {first} cannot be rebuilt; nothing was pruned"
                ))
            })?;
            let metadata = meta::with_chain(meta::carried(&object.metadata), self::whole(first));
            if store
                .put(&key, whole, &metadata, Cond::Matches(&object.etag))
                .await?
                .is_err()
            {
                return Err(StateError::Conflict(format!(
                    "{} changed while pruning; nothing was pruned",
                    self.inner.url(&key)
                )));
            }
        }
        for chunk in old.chunks(HISTORY_CONCURRENCY) {
            let mut tasks = tokio::task::JoinSet::new();
            for &s in chunk {
                let store = store.clone();
                let key = self.inner.history_key(s);
                tasks.spawn(async move { store.delete(&key, None).await });
            }
            while let Some(joined) = tasks.join_next().await {
                match joined {
                    Ok(done) => {
                        if done?.is_err() {
                            tracing::warn!("a pruned history version could not be deleted; the next prune tries again");
                        }
                    }
                    Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                    Err(e) => {
                        return Err(
                            std::io::Error::other(format!("pruning was cancelled: {e}")).into()
                        )
                    }
                }
            }
        }
        Ok(u64::try_from(old.len()).unwrap_or(u64::MAX))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn history_keys_sort_by_serial_and_parse_back() {
        let b = S3Backend::lazy(S3Settings::new("bucket", "d/state.json")).unwrap();
        assert_eq!(b.state_key(), "d/state.json");
        assert_eq!(b.lock_key(), "d/state.json.lock");
        let k9 = b.history_key(9);
        let k10 = b.history_key(10);
        assert_eq!(k10, "d/state.json.history/00000000000000000010.json");
        assert!(k9 < k10);
        assert_eq!(b.inner.serial_of(&k10), Some(10));
        assert_eq!(b.inner.serial_of(&b.history_key(u64::MAX)), Some(u64::MAX));
        assert_eq!(b.inner.serial_of("d/state.json.history/12.json"), None);
        assert_eq!(b.inner.serial_of("d/state.json"), None);
        assert_eq!(b.describe(), "S3 state at s3://bucket/d/state.json");
    }

    #[test]
    fn invalid_settings_are_refused() {
        let err = S3Backend::lazy(S3Settings::new("B", "k")).unwrap_err();
        assert!(err.to_string().contains("bucket name"), "{err}");
    }
}
