//! Writing the S3 state: each version goes to history first, then replaces
//! the state object by compare-and-swap against the ETag last seen
//! ([`Seen`]), so a change made behind prov's back is a conflict, never
//! overwritten.

use std::sync::{Arc, PoisonError};

use super::meta::{self, Chain};
use super::store::{Cond, Object, Refusal};
use super::{decode_doc, decode_header, Header, Inner};
use crate::delta::{self, Step};
use crate::writing::{self, encode_err};
use crate::{StateDocument, StateError};

/// The state object as last seen: what the next write's condition is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Seen {
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
    pub(super) fn of(object: Object, header: &Header) -> Self {
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

impl Inner {
    /// What the last read or write saw.
    pub(super) fn seen(&self) -> Option<Seen> {
        self.seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Remembers (or forgets) what the state object is now.
    pub(super) fn remember(&self, seen: Option<Seen>) {
        *self.seen.lock().unwrap_or_else(PoisonError::into_inner) = seen;
    }

    /// The latest document, remembering its ETag for the next write's
    /// compare-and-swap.
    pub(super) async fn read(&self) -> Result<Option<StateDocument>, StateError> {
        let store = self.store().await?;
        let Some(object) = store.get(&self.key).await? else {
            self.remember(Some(Seen::Absent));
            return Ok(None);
        };
        let doc = decode_doc("the current version", &object.bytes)?;
        let header = Header {
            format_version: doc.format_version,
            lineage: doc.lineage.clone(),
            serial: doc.serial,
        };
        self.remember(Some(Seen::of(object, &header)));
        Ok(Some(doc))
    }

    /// Reads the state object and decodes its header.
    pub(super) async fn current(&self) -> Result<Option<(Object, Header)>, StateError> {
        let store = self.store().await?;
        let Some(object) = store.get(&self.key).await? else {
            return Ok(None);
        };
        let header = decode_header("the current version", &object.bytes)?;
        Ok(Some((object, header)))
    }

    /// What the state object is now.
    pub(super) async fn fetch_seen(&self) -> Result<Seen, StateError> {
        Ok(match self.current().await? {
            None => Seen::Absent,
            Some((object, header)) => Seen::of(object, &header),
        })
    }

    /// The message of a failed compare-and-swap against `seen`.
    pub(super) fn changed(&self, seen: &Seen) -> String {
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
    pub(super) async fn put_history(
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
    pub(super) async fn undo_history(&self, serial: u64, ours: &str) {
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

    /// Writes `doc` as the next version carrying `metadata` (its history
    /// entry), under the lock `lock_id` (checked first): the history object
    /// first, then the state object by compare-and-swap.
    pub(super) async fn write_version(
        &self,
        lock_id: &str,
        doc: &StateDocument,
        metadata: Vec<(&'static str, String)>,
    ) -> Result<(), StateError> {
        writing::check_format(doc)?;
        self.check_held(lock_id).await?;
        let seen = match self.seen() {
            Some(seen) => seen,
            None => self.fetch_seen().await?,
        };
        if let Seen::Present {
            serial: latest,
            lineage,
            ..
        } = &seen
        {
            writing::check_successor(lineage, *latest, &doc.lineage, doc.serial)?;
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
            .put_history(doc.serial, &stored, &metadata, &seen)
            .await?;
        let store = self.store().await?;
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
        match store.put(&self.key, json.clone(), &metadata, cond).await? {
            Ok(etag) => {
                self.remember(Some(now(etag)));
                Ok(())
            }
            Err(refusal) => {
                // An SDK retry of a put that had in fact succeeded meets our
                // own write: the object holds exactly our bytes.
                if refusal == Refusal::Precondition {
                    if let Some(current) = store.get(&self.key).await? {
                        if current.bytes == json {
                            self.remember(Some(now(current.etag)));
                            return Ok(());
                        }
                    }
                }
                self.remember(None);
                self.undo_history(doc.serial, &ours).await;
                Err(StateError::Conflict(self.changed(&seen)))
            }
        }
    }
}

/// The chain of a version stored whole.
pub(super) fn whole(serial: u64) -> Chain {
    Chain {
        base: serial,
        bytes: 0,
    }
}
