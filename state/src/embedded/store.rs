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

/// Decodes the document stored at `serial`, consuming `value` (its strings
/// move into the document, its maps are freed as they are read).
fn decode_doc(serial: u64, value: serde_json::Value) -> Result<StateDocument, StateError> {
    decode_header(serial, &value)?;
    serde_json::from_value(value)
        .map_err(|e| StateError::Corrupt(format!("version {serial} does not decode: {e}")))
}

/// Decodes the document stored whole at `serial` from its JSON, with no
/// [`serde_json::Value`] in between (which at fleet scale is several times
/// the JSON's size, on top of the document decoded from it).
fn decode_doc_json(serial: u64, json: &[u8]) -> Result<StateDocument, StateError> {
    decode_header_json(serial, json)?;
    serde_json::from_slice(json)
        .map_err(|e| StateError::Corrupt(format!("version {serial} does not decode: {e}")))
}

/// Decodes the header of the document stored whole at `serial` from its
/// JSON (the rest is read past, not kept).
fn decode_header_json(serial: u64, json: &[u8]) -> Result<Header, StateError> {
    let fields: HeaderFields = delta::parse_as(serial, json)?;
    decode_header(serial, &fields.into_value())
}

/// The header fields of a stored document, as they are (absent ones
/// absent, so that a patch finds what it would in the whole document).
#[derive(Deserialize)]
struct HeaderFields {
    #[serde(default, deserialize_with = "present")]
    format_version: Option<serde_json::Value>,
    #[serde(default, deserialize_with = "present")]
    lineage: Option<serde_json::Value>,
    #[serde(default, deserialize_with = "present")]
    serial: Option<serde_json::Value>,
}

/// A field that is there, `null` included.
fn present<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<serde_json::Value>, D::Error> {
    serde_json::Value::deserialize(deserializer).map(Some)
}

impl HeaderFields {
    /// An object of the fields present.
    fn into_value(self) -> serde_json::Value {
        let fields = [
            ("format_version", self.format_version),
            ("lineage", self.lineage),
            ("serial", self.serial),
        ];
        serde_json::Value::Object(
            fields
                .into_iter()
                .filter_map(|(name, value)| Some((name.to_owned(), value?)))
                .collect(),
        )
    }
}

/// The header paths of a document, as JSON pointers.
const HEADER_PATHS: [&str; 3] = ["/format_version", "/lineage", "/serial"];

/// Whether a patch operation on `path` can change the header.
fn touches_header(path: &str) -> bool {
    path.is_empty()
        || HEADER_PATHS.iter().any(|h| {
            path.strip_prefix(h)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
        })
}

/// The versions `serial` is made of: the whole one at or before it (its
/// serial and JSON) and the patches after it, in order (`None` when there
/// is no whole version at or before it).
struct Parts {
    base: u64,
    whole: Vec<u8>,
    patches: Vec<(u64, Vec<u8>)>,
}

fn parts(db: &sled::Db, path: &Path, serial: u64) -> Result<Option<Parts>, StateError> {
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
    let whole = packed::unpack(&|| format!("version {base}"), &whole)?.into_owned();
    let tree = db.open_tree(PATCHES).map_err(db_err(path))?;
    let mut patches = Vec::new();
    for item in tree.range((base + 1).to_be_bytes()..=serial.to_be_bytes()) {
        let (key, ops) = item.map_err(db_err(path))?;
        let serial = decode_serial(&key)?;
        let ops = packed::unpack(&|| format!("the patch of version {serial}"), &ops)?;
        patches.push((serial, ops.into_owned()));
    }
    Ok(Some(Parts {
        base,
        whole,
        patches,
    }))
}

impl Parts {
    /// The document as a [`serde_json::Value`]: the whole version with the
    /// patches applied.
    fn value(self) -> Result<serde_json::Value, StateError> {
        let mut doc = delta::parse(self.base, &self.whole)?;
        drop(self.whole);
        for (serial, ops) in &self.patches {
            delta::apply(&mut doc, *serial, ops)?;
        }
        Ok(doc)
    }

    /// The document at `serial`, decoded straight from the JSON when it is
    /// stored whole.
    fn doc(self, serial: u64) -> Result<StateDocument, StateError> {
        if self.patches.is_empty() {
            return decode_doc_json(serial, &self.whole);
        }
        decode_doc(serial, self.value()?)
    }

    /// The header of the document at `serial`: the whole version's, with
    /// the patches' operations on it applied (reading past the rest). Only
    /// when a patch does something else to it (moves, copies or tests, which
    /// prov's patches never do, or an operation that does not apply) is the
    /// whole document rebuilt, to decode it or fail exactly as that does.
    fn header(self, serial: u64) -> Result<Header, StateError> {
        match self.patched_header()? {
            Some(header) => decode_header(serial, &header),
            None => decode_header(serial, &self.value()?),
        }
    }

    /// The whole version's header fields with the patches' operations on
    /// them applied; `None` when a patch does anything else to them.
    fn patched_header(&self) -> Result<Option<serde_json::Value>, StateError> {
        let mut header = delta::parse_as::<HeaderFields>(self.base, &self.whole)?.into_value();
        for (serial, ops) in &self.patches {
            let mut kept = Vec::new();
            for op in delta::decode_patch(*serial, ops)?.0 {
                match op {
                    json_patch::PatchOperation::Move(_)
                    | json_patch::PatchOperation::Copy(_)
                    | json_patch::PatchOperation::Test(_) => return Ok(None),
                    op if touches_header(op.path().as_str()) => kept.push(op),
                    _ => {}
                }
            }
            if json_patch::patch(&mut header, &kept).is_err() {
                return Ok(None);
            }
        }
        Ok(Some(header))
    }
}

/// The latest serial, if any.
pub(super) fn latest_serial(db: &sled::Db, path: &Path) -> Result<Option<u64>, StateError> {
    let meta = db.open_tree(META).map_err(db_err(path))?;
    meta.get(LATEST)
        .map_err(db_err(path))?
        .map(|v| decode_serial(&v))
        .transpose()
}

/// The latest serial and the versions it is made of, if any.
fn latest_parts(db: &sled::Db, path: &Path) -> Result<Option<(u64, Parts)>, StateError> {
    let Some(serial) = latest_serial(db, path)? else {
        return Ok(None);
    };
    match parts(db, path, serial)? {
        Some(parts) => Ok(Some((serial, parts))),
        None => Err(StateError::Corrupt(format!(
            "the latest version {serial} is missing"
        ))),
    }
}

/// The latest serial and document, if any.
fn latest_value(
    db: &sled::Db,
    path: &Path,
) -> Result<Option<(u64, serde_json::Value)>, StateError> {
    latest_parts(db, path)?
        .map(|(serial, parts)| Ok((serial, parts.value()?)))
        .transpose()
}

/// The lineage and serial of the latest version, if any: what opening the
/// database checks against its copy, without decoding the whole document
/// (reading it does; see [`Parts::header`]).
pub(super) fn latest_header(
    db: &sled::Db,
    path: &Path,
) -> Result<Option<(String, u64)>, StateError> {
    let Some((serial, parts)) = latest_parts(db, path)? else {
        return Ok(None);
    };
    Ok(Some((parts.header(serial)?.lineage, serial)))
}

/// The latest document, if any.
pub(super) fn read_latest(db: &sled::Db, path: &Path) -> Result<Option<StateDocument>, StateError> {
    latest_parts(db, path)?
        .map(|(serial, parts)| parts.doc(serial))
        .transpose()
}

/// The document at `serial`: the whole version at or before it, with the
/// patches after that applied (`None` when there is none).
fn rebuild(
    db: &sled::Db,
    path: &Path,
    serial: u64,
) -> Result<Option<serde_json::Value>, StateError> {
    parts(db, path, serial)?.map(Parts::value).transpose()
}

/// The document stored at `serial`, if any.
pub(super) fn read_serial(
    db: &sled::Db,
    path: &Path,
    serial: u64,
) -> Result<Option<StateDocument>, StateError> {
    match latest_serial(db, path)? {
        Some(latest) if serial <= latest => parts(db, path, serial)?
            .map(|parts| parts.doc(serial))
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

    /// Versions 1 to 3 of a document whose outputs change a little, each
    /// written as prov writes them (2 and 3 as patches).
    fn patched_db() -> (sled::Db, StateDocument) {
        let db = temp_db();
        let lock = LockInfo::for_this_process("test");
        let mut doc = StateDocument::new("d");
        let mut cache = Cache::default();
        for serial in 1..=3u64 {
            doc.serial = serial;
            doc.set_outputs((0..20u64).map(|i| {
                let value = if i == 0 { serial } else { i };
                (format!("output{i}"), value.into())
            }));
            let new = NewVersion::new(&doc, &crate::writing::entry_now(&doc, &lock)).unwrap();
            write(&db, Path::new("t"), &new, &mut cache).unwrap();
        }
        assert_eq!(
            db.open_tree(PATCHES).unwrap().len(),
            2,
            "versions 2 and 3 are patches"
        );
        (db, doc)
    }

    fn put_patch(db: &sled::Db, serial: u64, ops: &str) {
        db.open_tree(PATCHES)
            .unwrap()
            .insert(serial.to_be_bytes(), ops.as_bytes())
            .unwrap();
        db.open_tree(META)
            .unwrap()
            .insert(LATEST, &serial.to_be_bytes())
            .unwrap();
    }

    #[test]
    fn the_header_of_a_patched_version_comes_from_its_patches() {
        let (db, doc) = patched_db();
        let path = Path::new("t");
        assert_eq!(
            latest_header(&db, path).unwrap(),
            Some((doc.lineage.clone(), 3))
        );
        assert_eq!(read_latest(&db, path).unwrap(), Some(doc.clone()));
        // A patch that changes the lineage (prov's never do) is followed.
        put_patch(
            &db,
            4,
            r#"[{"op":"replace","path":"/serial","value":4},{"op":"replace","path":"/lineage","value":"other"}]"#,
        );
        assert_eq!(
            latest_header(&db, path).unwrap(),
            Some(("other".to_owned(), 4))
        );
        // One that leaves the serial behind says a patch is missing, as
        // rebuilding the whole document does.
        put_patch(&db, 5, r#"[{"op":"add","path":"/outputs/x","value":1}]"#);
        let err = latest_header(&db, path).unwrap_err();
        assert!(err.to_string().contains("says it is version 4"), "{err}");
    }

    #[test]
    fn a_patch_that_does_not_apply_is_found_by_reading_and_a_move_by_either() {
        let (db, _) = patched_db();
        let path = Path::new("t");
        put_patch(
            &db,
            4,
            r#"[{"op":"replace","path":"/serial","value":4},{"op":"remove","path":"/resources/nowhere"}]"#,
        );
        assert_eq!(latest_header(&db, path).unwrap().map(|(_, s)| s), Some(4));
        let err = read_latest(&db, path).unwrap_err();
        assert!(matches!(err, StateError::Corrupt(_)), "{err}");
        assert!(err.to_string().contains("version 4"), "{err}");
        // A move is rebuilt whole to read the header: the same error.
        put_patch(
            &db,
            4,
            r#"[{"op":"replace","path":"/serial","value":4},{"op":"move","from":"/nowhere","path":"/lineage"}]"#,
        );
        let err = latest_header(&db, path).unwrap_err();
        assert!(matches!(err, StateError::Corrupt(_)), "{err}");
        assert!(err.to_string().contains("version 4"), "{err}");
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
