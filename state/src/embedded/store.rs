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
//! A write inserts into all four in one transaction, then flushes
//! ([`write()`]); a version is encoded for it in [`version`].

mod version;
mod write;

use std::path::Path;
use std::time::{Duration, Instant};

use fs4::fs_std::FileExt;
use serde::Deserialize;

use super::packed;
use crate::delta;
use crate::{HistoryEntry, StateDocument, StateError, FORMAT_VERSION};

pub(super) use version::NewVersion;
pub(super) use write::{prune, write};

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

/// How long to wait for another handle in this process to finish closing
/// the database before opening it.
const OPEN_WAIT: Duration = Duration::from_secs(2);
/// The file in the database directory that sled locks while it is open.
const SLED_LOCKED_FILE: &str = "db";

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

/// Wraps a sled error with the database path.
fn db_err(path: &Path) -> impl Fn(sled::Error) -> StateError + '_ {
    move |source| StateError::Database {
        path: path.display().to_string(),
        source,
    }
}

/// Opens (creating) the database at `path`, once no other handle has it open.
pub(super) fn open(path: &Path) -> Result<sled::Db, StateError> {
    wait_until_closed(path)?;
    sled::Config::new().path(path).open().map_err(db_err(path))
}

/// Waits (at most [`OPEN_WAIT`]) until nothing holds sled's own `flock` on
/// `path/db`.
///
/// The database is opened only under the state lock, so no other process
/// holds it; but a handle this process dropped a moment ago is closed by
/// sled's background threads, which keep the file (and its `flock`) a little
/// longer, and sled refuses to open a locked file. Probing the `flock`
/// ourselves tells that case apart without reading sled's error text.
/// Should it still be held after the wait, sled's open fails and says so.
fn wait_until_closed(path: &Path) -> Result<(), StateError> {
    let locked_file = path.join(SLED_LOCKED_FILE);
    let file = match fs_err::File::open(&locked_file) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    let started = Instant::now();
    loop {
        if FileExt::try_lock_exclusive(file.file())? {
            FileExt::unlock(file.file())?;
            return Ok(());
        }
        if started.elapsed() >= OPEN_WAIT {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::LockInfo;

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
            let new = NewVersion::new(&doc, &crate::writing::entry_now(&doc, &lock)).unwrap();
            write(&db, Path::new("t"), &new, &mut Cache::default()).unwrap();
        }
        let serials: Vec<u64> = history(&db, Path::new("t"))
            .unwrap()
            .iter()
            .map(|h| h.serial)
            .collect();
        assert_eq!(serials, [255, 256, 257]);
    }

    #[test]
    fn opening_waits_for_a_handle_being_closed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let closing = open(&path).unwrap();
        let closer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            drop(closing);
        });
        let started = Instant::now();
        let db = open(&path).unwrap();
        assert!(started.elapsed() >= Duration::from_millis(250));
        drop(db);
        closer.join().unwrap();
    }

    #[test]
    fn a_database_open_elsewhere_fails_as_a_database_error_after_waiting() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let _held = open(&path).unwrap();
        let started = Instant::now();
        let err = open(&path).unwrap_err();
        assert!(started.elapsed() >= OPEN_WAIT, "{:?}", started.elapsed());
        assert!(
            matches!(
                err,
                StateError::Database {
                    source: sled::Error::Io(_),
                    ..
                }
            ),
            "{err}"
        );
    }
}
