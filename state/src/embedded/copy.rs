//! The copy of the latest version kept beside the database (`latest.json`).
//!
//! Every version lives in one sled file; a damaged file must not take the
//! state with it. After each write the stored document (the encrypted
//! envelope when `[state] encrypt_to` is set: the same bytes as in the
//! database) is also written here, atomically. It is written *after* the
//! database, so the database is never behind it unless the database lost
//! versions: sled, finding a damaged log, recovers to the last good point
//! without an error, and would otherwise show an older or empty state.

use std::io;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::{StateDocument, StateError};

/// Its file name in the state directory.
pub(super) const NAME: &str = "latest.json";

/// `DIR/latest.json`.
pub(super) fn path(dir: &Path) -> PathBuf {
    dir.join(NAME)
}

/// What is compared with the database.
#[derive(Debug, Deserialize)]
pub(super) struct Header {
    /// Deployment identity.
    pub(super) lineage: String,
    /// The version's serial.
    pub(super) serial: u64,
}

/// Writes the copy.
pub(super) fn write(dir: &Path, json: &[u8]) -> io::Result<()> {
    crate::write_atomic(&path(dir), json)
}

/// The copy's lineage and serial, if there is a readable copy.
pub(super) fn header(dir: &Path) -> Option<Header> {
    let bytes = fs_err::read(path(dir)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// The copied document.
pub(super) fn read(dir: &Path) -> Result<StateDocument, StateError> {
    let file = path(dir);
    let bytes = match fs_err::read(&file) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(StateError::Corrupt(format!(
                "there is no copy of the latest version at {}: nothing to recover from",
                file.display()
            )))
        }
        Err(e) => return Err(e.into()),
    };
    serde_json::from_slice(&bytes)
        .map_err(|e| StateError::Corrupt(format!("{} does not decode: {e}", file.display())))
}

/// The error for a database that is behind its copy (or does not open):
/// `found` says what the database holds.
pub(super) fn damaged(dir: &Path, found: String) -> StateError {
    StateError::Damaged {
        database: dir.join("state.db").display().to_string(),
        copy: path(dir).display().to_string(),
        found,
    }
}

/// Checks the database's latest version (`latest`: lineage and serial)
/// against the copy: a database behind its copy has lost versions.
pub(super) fn check(dir: &Path, latest: Option<(&str, u64)>) -> Result<(), StateError> {
    let Some(copy) = header(dir) else {
        return Ok(());
    };
    match latest {
        None => Err(damaged(
            dir,
            format!(
                "no version at all, but its copy holds serial {}",
                copy.serial
            ),
        )),
        Some((lineage, _)) if lineage != copy.lineage => Err(damaged(
            dir,
            format!(
                "lineage {lineage}, but its copy holds lineage {}",
                copy.lineage
            ),
        )),
        Some((_, serial)) if serial < copy.serial => Err(damaged(
            dir,
            format!(
                "serial {serial} as its latest, but its copy holds serial {}",
                copy.serial
            ),
        )),
        Some(_) => Ok(()),
    }
}

/// `e` from opening or reading the database, as [`StateError::Damaged`] when
/// it says the data does not read and a copy exists to recover from.
pub(super) fn explain(dir: &Path, e: StateError) -> StateError {
    let why = match &e {
        StateError::Corrupt(why) => why.clone(),
        StateError::Database {
            source: source @ sled::Error::Corruption { .. },
            ..
        } => source.to_string(),
        _ => return e,
    };
    if header(dir).is_some() {
        damaged(dir, format!("data that does not read ({why})"))
    } else {
        e
    }
}
