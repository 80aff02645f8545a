//! Entry points for the fuzz targets in `fuzz/`, compiled only by
//! `cargo fuzz` (`--cfg fuzzing`): the decoders of stored state.

use crate::{StateDocument, StateError};

/// Decodes a stored version (what S3 and `latest.json` hold).
///
/// # Errors
/// When it is not a state document this prov reads.
pub fn decode_version(bytes: &[u8]) -> Result<StateDocument, StateError> {
    crate::stored::decode_doc("the version", bytes)
}

/// Rebuilds a version from a whole one and the patches after it, as both
/// backends read history.
///
/// # Errors
/// When a part does not decode or a patch does not apply.
pub fn rebuild(whole: &[u8], patches: &[&[u8]]) -> Result<StateDocument, StateError> {
    let mut doc = crate::delta::parse(0, whole)?;
    for (i, ops) in patches.iter().enumerate() {
        crate::delta::apply(&mut doc, i as u64 + 1, ops)?;
    }
    crate::stored::decode_doc("the rebuilt version", &crate::delta::encode(&doc)?)
}
