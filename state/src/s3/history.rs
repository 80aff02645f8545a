//! S3 history: `KEY.history/SERIAL.json`, one object per version (whole,
//! or a patch from the version before), listed, rebuilt and pruned.

use super::meta;
use super::store::{Cond, Store};
use super::write;
use super::{decode_doc, decode_header, Inner};
use crate::delta;
use crate::{HistoryEntry, StateDocument, StateError};

/// How many `HeadObject` calls `history` runs at once.
const HISTORY_CONCURRENCY: usize = 16;

impl Inner {
    /// Every version listed in history up to the current serial, oldest
    /// first, with its entry from the version's metadata.
    pub(super) async fn history(&self) -> Result<Vec<HistoryEntry>, StateError> {
        let Some((_, current)) = self.current().await? else {
            return Ok(Vec::new());
        };
        let store = self.store().await?;
        let mut serials: Vec<u64> = self
            .listed_serials(store)
            .await?
            .into_iter()
            .filter(|serial| *serial <= current.serial)
            .collect();
        serials.sort_unstable();
        serials.dedup();
        let mut entries = each_serial(&serials, "reading history", |serial| {
            Self::entry(store.clone(), self.history_key(serial), serial)
        })
        .await?;
        entries.sort_by_key(|e| e.serial);
        Ok(entries)
    }

    /// The serials of the versions stored in history, in listing order.
    async fn listed_serials(&self, store: &Store) -> Result<Vec<u64>, StateError> {
        Ok(store
            .list(&self.history_prefix)
            .await?
            .iter()
            .filter_map(|key| self.serial_of(key))
            .collect())
    }

    /// The document at `serial`: the current one, or rebuilt from history.
    pub(super) async fn read_serial(
        &self,
        serial: u64,
    ) -> Result<Option<StateDocument>, StateError> {
        match self.current().await? {
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

    /// Removes every version older than the newest `keep` from history
    /// (the oldest one kept is first stored whole); the caller holds the
    /// lock and has checked it.
    pub(super) async fn prune(&self, keep: u64) -> Result<u64, StateError> {
        let Some((_, current)) = self.current().await? else {
            return Ok(0);
        };
        let Some(first) = current.serial.checked_sub(keep.max(1) - 1) else {
            return Ok(0);
        };
        let store = self.store().await?;
        let old: Vec<u64> = self
            .listed_serials(store)
            .await?
            .into_iter()
            .filter(|s| *s < first)
            .collect();
        if old.is_empty() {
            return Ok(0);
        }
        // The oldest version kept is stored whole before anything goes.
        let key = self.history_key(first);
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
            let metadata = meta::with_chain(meta::carried(&object.metadata), write::whole(first));
            if store
                .put(&key, whole, &metadata, Cond::Matches(&object.etag))
                .await?
                .is_err()
            {
                return Err(StateError::Conflict(format!(
                    "{} changed while pruning; nothing was pruned",
                    self.url(&key)
                )));
            }
        }
        let deleted = each_serial(&old, "pruning", |s| {
            let store = store.clone();
            let key = self.history_key(s);
            async move { store.delete(&key, None).await }
        })
        .await?;
        for _ in deleted.iter().filter(|refused| refused.is_err()) {
            tracing::warn!(
                "a pruned history version could not be deleted; the next prune tries again"
            );
        }
        Ok(u64::try_from(old.len()).unwrap_or(u64::MAX))
    }

    /// The JSON of version `serial` from history: stored whole, or rebuilt
    /// from the whole version its chain starts at and the patches after it.
    async fn history_bytes(&self, serial: u64) -> Result<Option<Vec<u8>>, StateError> {
        let store = self.store().await?;
        let Some(object) = store.get(&self.history_key(serial)).await? else {
            return Ok(None);
        };
        if !delta::is_patch(&object.bytes) {
            return Ok(Some(object.bytes));
        }
        // A prune keeps the oldest version it keeps whole: a chain that
        // started before it starts there now.
        let mut base = meta::chain(serial, &object.metadata).base;
        if base == serial || store.head(&self.history_key(base)).await?.is_none() {
            let oldest = self
                .listed_serials(store)
                .await?
                .into_iter()
                .filter(|s| *s < serial)
                .min();
            base = oldest.ok_or_else(|| {
                StateError::Corrupt(format!(
                    "version {serial} is a patch with no version before it"
                ))
            })?;
        }
        let serials: Vec<u64> = (base..serial).collect();
        let mut objects = each_serial(&serials, "reading history", |s| {
            let store = store.clone();
            let key = self.history_key(s);
            async move { store.get(&key).await.map(|got| (s, got)) }
        })
        .await?;
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

/// Runs `task` for each of `serials`, [`HISTORY_CONCURRENCY`] at a time,
/// and collects what they return (in the order they finish). The first error
/// stops it (the tasks of its batch still running are dropped); a panicking
/// task goes on panicking; `what` names the work in the error should the
/// runtime cancel a task.
async fn each_serial<T, F, Fut>(serials: &[u64], what: &str, task: F) -> Result<Vec<T>, StateError>
where
    F: Fn(u64) -> Fut,
    Fut: std::future::Future<Output = Result<T, StateError>> + Send + 'static,
    T: Send + 'static,
{
    let mut done = Vec::with_capacity(serials.len());
    for batch in serials.chunks(HISTORY_CONCURRENCY) {
        let mut tasks = tokio::task::JoinSet::new();
        for &serial in batch {
            tasks.spawn(task(serial));
        }
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok(value) => done.push(value?),
                Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                Err(e) => {
                    return Err(std::io::Error::other(format!("{what} was cancelled: {e}")).into())
                }
            }
        }
    }
    Ok(done)
}
