//! A version ready to be stored: the document and its history entry,
//! encoded.

use crate::writing::encode_err;
use crate::{HistoryEntry, StateDocument, StateError};

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
    /// Encodes `doc` with its history `entry`.
    pub(in crate::embedded) fn new(
        doc: &StateDocument,
        entry: &HistoryEntry,
    ) -> Result<Self, StateError> {
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

    /// The stored document's JSON (what the copy beside the database holds).
    pub(in crate::embedded) fn json(&self) -> &[u8] {
        &self.json
    }

    /// Its serial.
    pub(in crate::embedded) fn serial(&self) -> u64 {
        self.serial
    }
}
