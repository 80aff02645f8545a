//! A version ready to be stored: the document and its history entry,
//! encoded.

use crate::{HistoryEntry, LockInfo, StateDocument, StateError};

/// A document ready to be stored.
#[derive(Debug)]
pub(in crate::embedded) struct NewVersion {
    /// Its serial.
    pub(super) serial: u64,
    /// Its lineage.
    pub(super) lineage: String,
    /// The document.
    pub(super) value: serde_json::Value,
    /// The document JSON.
    pub(super) json: Vec<u8>,
    /// The history entry JSON.
    pub(super) entry: Vec<u8>,
}

impl NewVersion {
    /// Encodes `doc`, written by the holder of `lock`.
    pub(in crate::embedded) fn new(
        doc: &StateDocument,
        lock: &LockInfo,
    ) -> Result<Self, StateError> {
        let entry = HistoryEntry {
            serial: doc.serial,
            written_at: crate::timestamp::now(),
            written_by: format!("{} ({})", lock.who, lock.operation),
            resources: doc.resources.len(),
        };
        Self::with_entry(doc, &entry)
    }

    /// Encodes `doc` copied from another backend, keeping when and by whom
    /// `entry` says it was written.
    pub(in crate::embedded) fn copied(
        doc: &StateDocument,
        entry: &HistoryEntry,
    ) -> Result<Self, StateError> {
        let entry = HistoryEntry {
            serial: doc.serial,
            written_at: entry.written_at,
            written_by: entry.written_by.clone(),
            resources: doc.resources.len(),
        };
        Self::with_entry(doc, &entry)
    }

    /// Encodes `doc` rebuilt from the copy beside a damaged database by the
    /// holder of `lock`.
    pub(in crate::embedded) fn recovered(
        doc: &StateDocument,
        lock: &LockInfo,
    ) -> Result<Self, StateError> {
        let entry = HistoryEntry {
            serial: doc.serial,
            written_at: crate::timestamp::now(),
            written_by: format!("{} (state recover)", lock.who),
            resources: doc.resources.len(),
        };
        Self::with_entry(doc, &entry)
    }

    /// The stored document's JSON (what the copy beside the database holds).
    pub(in crate::embedded) fn json(&self) -> &[u8] {
        &self.json
    }

    /// Its serial.
    pub(in crate::embedded) fn serial(&self) -> u64 {
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
