//! The layout of state in sled.
//!
//! - tree `versions`: serial (u64 big-endian) → document JSON, for the
//!   versions stored whole;
//! - tree `patches`: serial → RFC 6902 patch JSON from the version before,
//!   for the others (see [`crate::delta`] for which is which);
//! - both deflated ([`super::packed`]; plain JSON from older databases reads);
//! - tree `history`: serial → [`HistoryEntry`] JSON;
//! - tree `meta`: `latest` → the latest serial (u64 big-endian), `chain` →
//!   bytes of patches since the last whole version (u64 big-endian).
//!
//! Each serial is in exactly one of `versions` and `patches` (databases
//! written before patches have every version in `versions`). The latest
//! version is rebuilt like any other: it is not stored whole a second time,
//! because sled rewrites a large value on every change and reclaims the old
//! copies only lazily (a whole head per write kept tens of copies on disk).
//!
//! A write inserts into all four in one transaction, then flushes.

use std::path::Path;
use std::time::{Duration, Instant};

use serde::Deserialize;
use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::Transactional;

use super::packed;
use crate::delta::{self, Step};
use crate::{HistoryEntry, LockInfo, StateDocument, StateError, FORMAT_VERSION};

/// Tree of document versions.
const VERSIONS: &str = "versions";
/// Tree of history entries.
const HISTORY: &str = "history";
/// Tree of bookkeeping keys.
const META: &str = "meta";
/// Tree of versions stored as patches.
const PATCHES: &str = "patches";
/// Key in [`META`] holding the latest serial.
const LATEST: &[u8] = b"latest";
/// Key in [`META`] holding the bytes of patches since the last whole version.
const CHAIN: &[u8] = b"chain";

/// How long to retry opening a database whose files another handle in this
/// process is still closing.
const OPEN_RETRY: Duration = Duration::from_secs(2);

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

/// A document ready to be stored.
#[derive(Debug)]
pub(super) struct NewVersion {
    /// Its serial.
    serial: u64,
    /// Its lineage.
    lineage: String,
    /// The document.
    value: serde_json::Value,
    /// The document JSON.
    json: Vec<u8>,
    /// The history entry JSON.
    entry: Vec<u8>,
}

impl NewVersion {
    /// Encodes `doc`, written by the holder of `lock`.
    pub(super) fn new(doc: &StateDocument, lock: &LockInfo) -> Result<Self, StateError> {
        let entry = HistoryEntry {
            serial: doc.serial,
            written_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            written_by: format!("{} ({})", lock.who, lock.operation),
            resources: doc.resources.len(),
        };
        Self::with_entry(doc, &entry)
    }

    /// Encodes `doc` copied from another backend, keeping when and by whom
    /// `entry` says it was written.
    pub(super) fn copied(doc: &StateDocument, entry: &HistoryEntry) -> Result<Self, StateError> {
        let entry = HistoryEntry {
            serial: doc.serial,
            written_at: entry.written_at.clone(),
            written_by: entry.written_by.clone(),
            resources: doc.resources.len(),
        };
        Self::with_entry(doc, &entry)
    }

    /// Encodes `doc` rebuilt from the copy beside a damaged database by the
    /// holder of `lock`.
    pub(super) fn recovered(doc: &StateDocument, lock: &LockInfo) -> Result<Self, StateError> {
        let entry = HistoryEntry {
            serial: doc.serial,
            written_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            written_by: format!("{} (state recover)", lock.who),
            resources: doc.resources.len(),
        };
        Self::with_entry(doc, &entry)
    }

    /// The stored document's JSON (what the copy beside the database holds).
    pub(super) fn json(&self) -> &[u8] {
        &self.json
    }

    /// Its serial.
    pub(super) fn serial(&self) -> u64 {
        self.serial
    }

    /// Encodes `doc` with its history entry.
    fn with_entry(doc: &StateDocument, entry: &HistoryEntry) -> Result<Self, StateError> {
        let value = serde_json::to_value(doc).map_err(encode_err)?;
        Ok(Self {
            serial: doc.serial,
            lineage: doc.lineage.clone(),
            // In the document's own field order (the Value's is sorted).
            json: serde_json::to_vec(doc).map_err(encode_err)?,
            value,
            entry: serde_json::to_vec(entry).map_err(encode_err)?,
        })
    }
}

/// An encoding failure (cannot happen for these types, but is not unwrapped).
fn encode_err(e: serde_json::Error) -> StateError {
    std::io::Error::other(format!("encoding state: {e}")).into()
}

/// Wraps a sled error with the database path.
fn db_err(path: &Path) -> impl Fn(sled::Error) -> StateError + '_ {
    move |source| StateError::Database {
        path: path.display().to_string(),
        source,
    }
}

/// Whether `e` is sled failing to lock its files.
fn is_sled_lock_error(e: &sled::Error) -> bool {
    matches!(e, sled::Error::Io(io) if io.to_string().contains("could not acquire lock"))
}

/// Opens (creating) the database at `path`.
pub(super) fn open(path: &Path) -> Result<sled::Db, StateError> {
    let started = Instant::now();
    loop {
        match sled::Config::new().path(path).open() {
            Err(e) if is_sled_lock_error(&e) && started.elapsed() < OPEN_RETRY => {
                std::thread::sleep(Duration::from_millis(50));
            }
            other => return other.map_err(db_err(path)),
        }
    }
}

/// Decodes a serial key or value.
fn decode_serial(bytes: &[u8]) -> Result<u64, StateError> {
    <[u8; 8]>::try_from(bytes)
        .map(u64::from_be_bytes)
        .map_err(|_| StateError::Corrupt(format!("invalid serial bytes {bytes:?}")))
}

/// The latest version as last written or read through this handle, so a
/// write need not rebuild it to patch from it.
#[derive(Debug, Default)]
pub(super) struct Cache {
    /// Its serial and document.
    latest: Option<(u64, serde_json::Value)>,
}

/// Decodes the header of the document stored at `serial`.
fn decode_header(serial: u64, value: &serde_json::Value) -> Result<Header, StateError> {
    let header = Header::deserialize(value)
        .map_err(|e| StateError::Corrupt(format!("version {serial} does not decode: {e}")))?;
    if header.format_version > FORMAT_VERSION {
        return Err(StateError::Format {
            found: header.format_version,
            supported: FORMAT_VERSION,
        });
    }
    if header.serial != serial {
        return Err(StateError::Corrupt(format!(
            "version {serial} says it is version {} (a patch is missing?)",
            header.serial
        )));
    }
    Ok(header)
}

/// Decodes the document stored at `serial`.
fn decode_doc(serial: u64, value: &serde_json::Value) -> Result<StateDocument, StateError> {
    decode_header(serial, value)?;
    StateDocument::deserialize(value)
        .map_err(|e| StateError::Corrupt(format!("version {serial} does not decode: {e}")))
}

/// The latest serial, if any.
fn latest_serial(db: &sled::Db, path: &Path) -> Result<Option<u64>, StateError> {
    let meta = db.open_tree(META).map_err(db_err(path))?;
    meta.get(LATEST)
        .map_err(db_err(path))?
        .map(|v| decode_serial(&v))
        .transpose()
}

/// The latest serial and document, if any.
fn latest_value(
    db: &sled::Db,
    path: &Path,
) -> Result<Option<(u64, serde_json::Value)>, StateError> {
    let Some(serial) = latest_serial(db, path)? else {
        return Ok(None);
    };
    match rebuild(db, path, serial)? {
        Some(value) => Ok(Some((serial, value))),
        None => Err(StateError::Corrupt(format!(
            "the latest version {serial} is missing"
        ))),
    }
}

/// The lineage and serial of the latest version, if any.
pub(super) fn latest_header(
    db: &sled::Db,
    path: &Path,
) -> Result<Option<(String, u64)>, StateError> {
    let Some((serial, value)) = latest_value(db, path)? else {
        return Ok(None);
    };
    Ok(Some((decode_header(serial, &value)?.lineage, serial)))
}

/// The latest document, if any.
pub(super) fn read_latest(db: &sled::Db, path: &Path) -> Result<Option<StateDocument>, StateError> {
    latest_value(db, path)?
        .map(|(serial, value)| decode_doc(serial, &value))
        .transpose()
}

/// The document at `serial`: the whole version at or before it, with the
/// patches after that applied (`None` when there is none).
fn rebuild(
    db: &sled::Db,
    path: &Path,
    serial: u64,
) -> Result<Option<serde_json::Value>, StateError> {
    let versions = db.open_tree(VERSIONS).map_err(db_err(path))?;
    let Some((key, whole)) = versions
        .range(..=serial.to_be_bytes())
        .next_back()
        .transpose()
        .map_err(db_err(path))?
    else {
        return Ok(None);
    };
    let base = decode_serial(&key)?;
    let whole = packed::unpack(&|| format!("version {base}"), &whole)?;
    let mut doc = delta::parse(base, &whole)?;
    let patches = db.open_tree(PATCHES).map_err(db_err(path))?;
    for item in patches.range((base + 1).to_be_bytes()..=serial.to_be_bytes()) {
        let (key, ops) = item.map_err(db_err(path))?;
        let serial = decode_serial(&key)?;
        let ops = packed::unpack(&|| format!("the patch of version {serial}"), &ops)?;
        delta::apply(&mut doc, serial, &ops)?;
    }
    Ok(Some(doc))
}

/// The document stored at `serial`, if any.
pub(super) fn read_serial(
    db: &sled::Db,
    path: &Path,
    serial: u64,
) -> Result<Option<StateDocument>, StateError> {
    match latest_serial(db, path)? {
        Some(latest) if serial <= latest => rebuild(db, path, serial)?
            .map(|value| decode_doc(serial, &value))
            .transpose(),
        _ => Ok(None),
    }
}

/// Every history entry, oldest first.
pub(super) fn history(db: &sled::Db, path: &Path) -> Result<Vec<HistoryEntry>, StateError> {
    let tree = db.open_tree(HISTORY).map_err(db_err(path))?;
    tree.iter()
        .map(|item| {
            let (key, value) = item.map_err(db_err(path))?;
            let serial = decode_serial(&key)?;
            serde_json::from_slice(&value).map_err(|e| {
                StateError::Corrupt(format!("history entry {serial} does not decode: {e}"))
            })
        })
        .collect()
}

/// Checks `new` against the stored latest version (`latest`, with `stored` bytes).
fn check_successor(
    latest: u64,
    stored: &serde_json::Value,
    new: &NewVersion,
) -> Result<(), StateError> {
    let header = decode_header(latest, stored)?;
    if header.lineage != new.lineage {
        return Err(StateError::Conflict(format!(
            "lineage mismatch: the stored state has lineage {}, the document has lineage {} \
             (it belongs to another deployment)",
            header.lineage, new.lineage
        )));
    }
    if new.serial != latest + 1 {
        return Err(StateError::Conflict(format!(
            "expected serial {}, got {} (the stored state is at serial {latest}; \
             re-read the state and try again)",
            latest + 1,
            new.serial
        )));
    }
    Ok(())
}

/// Stores `new` as the latest version (one transaction), then flushes: whole
/// or as a patch from the latest, as [`delta::step`] decides.
pub(super) fn write(
    db: &sled::Db,
    path: &Path,
    new: &NewVersion,
    cache: &mut Cache,
) -> Result<(), StateError> {
    let versions = db.open_tree(VERSIONS).map_err(db_err(path))?;
    let patches = db.open_tree(PATCHES).map_err(db_err(path))?;
    let history = db.open_tree(HISTORY).map_err(db_err(path))?;
    let meta = db.open_tree(META).map_err(db_err(path))?;
    let latest = latest_serial(db, path)?;
    let prev = match (cache.latest.take(), latest) {
        (Some((serial, value)), Some(latest)) if serial == latest => Some((serial, value)),
        (_, None) => None,
        (_, Some(_)) => latest_value(db, path)?,
    };
    let chain = meta
        .get(CHAIN)
        .map_err(db_err(path))?
        .map(|v| decode_serial(&v))
        .transpose()?
        .unwrap_or(0);
    let step = match prev {
        Some((latest, value)) => {
            check_successor(latest, &value, new)?;
            delta::step(value, &new.value, new.json.len(), chain)
        }
        None => Step::Whole,
    };
    let stored = match &step {
        Step::Whole => packed::pack(&new.json)?,
        Step::Patch { ops, .. } => packed::pack(ops)?,
    };
    let key = new.serial.to_be_bytes();
    let result = (&versions, &patches, &history, &meta).transaction(|(v, p, h, m)| {
        let now = m
            .get(LATEST)?
            .map(|l| decode_serial(&l))
            .transpose()
            .map_err(ConflictableTransactionError::Abort)?;
        if now != latest {
            return Err(ConflictableTransactionError::Abort(StateError::Conflict(
                format!(
                    "the stored state changed while writing version {} (another writer?)",
                    new.serial
                ),
            )));
        }
        let chain = match &step {
            Step::Whole => {
                v.insert(&key, stored.as_slice())?;
                0
            }
            Step::Patch { chain, .. } => {
                p.insert(&key, stored.as_slice())?;
                *chain
            }
        };
        h.insert(&key, new.entry.as_slice())?;
        m.insert(CHAIN, &chain.to_be_bytes())?;
        m.insert(LATEST, &key)?;
        Ok(())
    });
    match result {
        Ok(()) => {}
        Err(TransactionError::Abort(e)) => return Err(e),
        Err(TransactionError::Storage(e)) => return Err(db_err(path)(e)),
    }
    db.flush().map_err(db_err(path))?;
    cache.latest = Some((new.serial, new.value.clone()));
    Ok(())
}

/// Removes every version older than the newest `keep` (at least one is
/// kept), making the oldest one kept whole first. Returns how many versions
/// were removed.
pub(super) fn prune(db: &sled::Db, path: &Path, keep: u64) -> Result<u64, StateError> {
    let keep = keep.max(1);
    let Some(latest) = latest_serial(db, path)? else {
        return Ok(0);
    };
    let Some(first) = latest.checked_sub(keep - 1) else {
        return Ok(0);
    };
    let versions = db.open_tree(VERSIONS).map_err(db_err(path))?;
    let patches = db.open_tree(PATCHES).map_err(db_err(path))?;
    let history = db.open_tree(HISTORY).map_err(db_err(path))?;
    let below = |tree: &sled::Tree| -> Result<Vec<sled::IVec>, StateError> {
        tree.range(..first.to_be_bytes())
            .keys()
            .collect::<Result<_, _>>()
            .map_err(db_err(path))
    };
    let (old_versions, old_patches, old_history) =
        (below(&versions)?, below(&patches)?, below(&history)?);
    if old_history.is_empty() && old_versions.is_empty() && old_patches.is_empty() {
        return Ok(0);
    }
    let whole = match versions.get(first.to_be_bytes()).map_err(db_err(path))? {
        Some(_) => None,
        None => {
            let value = rebuild(db, path, first)?.ok_or_else(|| {
                StateError::Corrupt(format!(
                    "version {first} cannot be rebuilt to prune before it"
                ))
            })?;
            Some(packed::pack(&delta::encode(&value)?)?)
        }
    };
    let key = first.to_be_bytes();
    let result = (&versions, &patches, &history).transaction(|(v, p, h)| {
        if let Some(whole) = &whole {
            v.insert(&key, whole.as_slice())?;
            p.remove(&key)?;
        }
        for k in &old_versions {
            v.remove(k)?;
        }
        for k in &old_patches {
            p.remove(k)?;
        }
        for k in &old_history {
            h.remove(k)?;
        }
        Ok::<(), ConflictableTransactionError<StateError>>(())
    });
    match result {
        Ok(()) => {}
        Err(TransactionError::Abort(e)) => return Err(e),
        Err(TransactionError::Storage(e)) => return Err(db_err(path)(e)),
    }
    db.flush().map_err(db_err(path))?;
    Ok(u64::try_from(old_history.len()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn temp_db() -> sled::Db {
        sled::Config::new().temporary(true).open().unwrap()
    }

    fn put_raw(db: &sled::Db, serial: u64, json: &[u8]) {
        db.open_tree(VERSIONS)
            .unwrap()
            .insert(serial.to_be_bytes(), json)
            .unwrap();
        db.open_tree(META)
            .unwrap()
            .insert(LATEST, &serial.to_be_bytes())
            .unwrap();
    }

    #[test]
    fn newer_format_is_rejected() {
        let db = temp_db();
        put_raw(
            &db,
            1,
            br#"{"format_version": 99, "lineage": "x", "serial": 1, "new_field": {}}"#,
        );
        let err = read_latest(&db, Path::new("t")).unwrap_err();
        assert!(
            matches!(
                err,
                StateError::Format {
                    found: 99,
                    supported: FORMAT_VERSION
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn corrupt_json_is_corrupt() {
        let db = temp_db();
        put_raw(&db, 3, b"{not json");
        let err = read_latest(&db, Path::new("t")).unwrap_err();
        assert!(matches!(err, StateError::Corrupt(_)), "{err}");
        assert!(err.to_string().contains("version 3"), "{err}");
    }

    #[test]
    fn missing_latest_is_corrupt() {
        let db = temp_db();
        db.open_tree(META)
            .unwrap()
            .insert(LATEST, &7u64.to_be_bytes())
            .unwrap();
        let err = read_latest(&db, Path::new("t")).unwrap_err();
        assert!(matches!(err, StateError::Corrupt(_)), "{err}");
    }

    #[test]
    fn keys_are_big_endian_so_history_is_ordered() {
        let db = temp_db();
        let lock = LockInfo::for_this_process("test");
        let mut doc = StateDocument::new("d");
        for serial in [255u64, 256, 257] {
            doc.serial = serial;
            let new = NewVersion::new(&doc, &lock).unwrap();
            write(&db, Path::new("t"), &new, &mut Cache::default()).unwrap();
        }
        let serials: Vec<u64> = history(&db, Path::new("t"))
            .unwrap()
            .iter()
            .map(|h| h.serial)
            .collect();
        assert_eq!(serials, [255, 256, 257]);
    }
}
