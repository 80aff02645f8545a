//! A stored state document's bytes (an S3 object, a history version):
//! its header checked first, then the whole document decoded. In every
//! build, so that the fuzz targets read them without the AWS SDK.

use serde::Deserialize;

use crate::{StateDocument, StateError, FORMAT_VERSION};

/// The fields checked before (and whatever the rest of) a stored document.
#[derive(Deserialize)]
pub(crate) struct Header {
    /// Layout version.
    pub(crate) format_version: u32,
    /// Deployment identity.
    pub(crate) lineage: String,
    /// Version number.
    pub(crate) serial: u64,
}

/// Decodes the header of a stored document (`what` names it in errors).
pub(crate) fn decode_header(what: &str, bytes: &[u8]) -> Result<Header, StateError> {
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
