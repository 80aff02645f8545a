//! What every backend checks and records when it writes a version: the
//! layout version, the successor rule (same lineage, serial one more), and
//! the history entry.

use crate::{HistoryEntry, LockInfo, StateDocument, StateError, FORMAT_VERSION};

/// Refuses a document of another layout than this build writes.
pub(crate) fn check_format(doc: &StateDocument) -> Result<(), StateError> {
    if doc.format_version == FORMAT_VERSION {
        Ok(())
    } else {
        Err(StateError::Format {
            found: doc.format_version,
            supported: FORMAT_VERSION,
        })
    }
}

/// Checks that a version of `lineage` at `serial` may follow the stored
/// latest version, of lineage `stored_lineage` at serial `latest`: the same
/// lineage, the next serial.
pub(crate) fn check_successor(
    stored_lineage: &str,
    latest: u64,
    lineage: &str,
    serial: u64,
) -> Result<(), StateError> {
    if stored_lineage != lineage {
        return Err(StateError::Conflict(format!(
            "lineage mismatch: the stored state has lineage {stored_lineage}, the document has \
             lineage {lineage} (it belongs to another deployment)"
        )));
    }
    if Some(serial) != latest.checked_add(1) {
        return Err(StateError::Conflict(format!(
            "expected serial {}, got {serial} (the stored state is at serial {latest}; \
             re-read the state and try again)",
            latest.saturating_add(1)
        )));
    }
    Ok(())
}

/// The history entry of `doc` written now by the holder of `lock`.
pub(crate) fn entry_now(doc: &StateDocument, lock: &LockInfo) -> HistoryEntry {
    HistoryEntry {
        serial: doc.serial,
        written_at: crate::timestamp::now(),
        written_by: format!("{} ({})", lock.who, lock.operation),
        resources: doc.resources.len(),
    }
}

/// The history entry of `doc` copied from another backend, keeping when and
/// by whom `entry` says it was written.
pub(crate) fn entry_copied(doc: &StateDocument, entry: &HistoryEntry) -> HistoryEntry {
    HistoryEntry {
        serial: doc.serial,
        written_at: entry.written_at,
        written_by: entry.written_by.clone(),
        resources: doc.resources.len(),
    }
}

/// An encoding failure (cannot happen for these types, but is not unwrapped).
pub(crate) fn encode_err(e: serde_json::Error) -> StateError {
    std::io::Error::other(format!("encoding state: {e}")).into()
}
