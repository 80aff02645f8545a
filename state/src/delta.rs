//! History stored as changes, for every backend.
//!
//! A version is stored either *whole* (the document) or as a *patch*: an
//! RFC 6902 JSON Patch from the version before it. A version is stored whole
//! when the patches since the last whole version, its own included, add up
//! to at least its size; otherwise as a patch. So:
//! - storage per change is proportional to the change: its patch, plus at
//!   most as much again as its share of the next whole version;
//! - reading any version applies patches totalling less than one document
//!   to the whole version before it.
//!
//! Every patch is checked by applying it before it is stored; one that does
//! not reproduce the document exactly is not used (the version is stored
//! whole), so a diffing bug costs space, never state.

use serde_json::Value;

use crate::StateError;

/// How to store a new version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Step {
    /// Whole; the chain of patches starts again.
    Whole,
    /// As this patch (JSON); `chain` is the size of the patches since the
    /// last whole version, this one included.
    Patch {
        /// The RFC 6902 patch from the previous version, as JSON.
        ops: Vec<u8>,
        /// Bytes of patches since the last whole version.
        chain: u64,
    },
}

/// Decides how to store `next` (whose JSON is `next_len` bytes) after
/// `prev`, given the bytes of patches stored since the last whole version.
pub(crate) fn step(prev: Value, next: &Value, next_len: usize, chain: u64) -> Step {
    let patch = json_patch::diff(&prev, next);
    let Ok(ops) = serde_json::to_vec(&patch) else {
        return Step::Whole;
    };
    let chain = chain.saturating_add(len(&ops));
    if chain >= u64::try_from(next_len).unwrap_or(u64::MAX) {
        return Step::Whole;
    }
    let mut check = prev;
    if json_patch::patch(&mut check, &patch.0).is_err() || check != *next {
        tracing::warn!("a state patch did not reproduce its version; storing it whole");
        return Step::Whole;
    }
    Step::Patch { ops, chain }
}

/// Decodes the stored patch `ops` of version `serial`.
pub(crate) fn decode_patch(serial: u64, ops: &[u8]) -> Result<json_patch::Patch, StateError> {
    serde_json::from_slice(ops).map_err(|e| {
        StateError::Corrupt(format!(
            "the patch of version {serial} does not decode: {e}"
        ))
    })
}

/// Applies the stored patch `ops` of version `serial` to `doc`.
pub(crate) fn apply(doc: &mut Value, serial: u64, ops: &[u8]) -> Result<(), StateError> {
    let patch = decode_patch(serial, ops)?;
    json_patch::patch(doc, &patch.0).map_err(|e| {
        StateError::Corrupt(format!(
            "the patch of version {serial} does not apply to the version before it: {e}"
        ))
    })
}

/// Whether stored bytes are a patch (a JSON array) rather than a whole
/// document (a JSON object). Only S3 stores patches so far.
#[cfg(any(test, feature = "s3"))]
pub(crate) fn is_patch(bytes: &[u8]) -> bool {
    bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[')
}

/// Parses a whole version for patching.
pub(crate) fn parse(serial: u64, bytes: &[u8]) -> Result<Value, StateError> {
    parse_as(serial, bytes)
}

/// Parses a whole version as `T` (what a [`Value`] of it would decode
/// to, where `T` reads it whole).
pub(crate) fn parse_as<T: serde::de::DeserializeOwned>(
    serial: u64,
    bytes: &[u8],
) -> Result<T, StateError> {
    serde_json::from_slice(bytes)
        .map_err(|e| StateError::Corrupt(format!("version {serial} does not decode: {e}")))
}

/// Encodes a rebuilt version.
pub(crate) fn encode(doc: &Value) -> Result<Vec<u8>, StateError> {
    serde_json::to_vec(doc)
        .map_err(|e| std::io::Error::other(format!("encoding state: {e}")).into())
}

/// A length as `u64`.
fn len(bytes: &[u8]) -> u64 {
    u64::try_from(bytes.len()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use serde_json::json;

    use super::*;

    fn doc(n: usize) -> Value {
        let resources: serde_json::Map<String, Value> = (0..n)
            .map(|i| (format!("web[{i}]"), json!({"id": format!("i-{i:08}"), "status": "created", "attributes": {"ip": null, "tags": ["a", "b"]}})))
            .collect();
        json!({"format_version": 1, "lineage": "l", "serial": n, "resources": resources})
    }

    fn bytes(v: &Value) -> Vec<u8> {
        serde_json::to_vec(v).unwrap()
    }

    fn step_of(a: &Value, b: &Value, chain: u64) -> Step {
        step(a.clone(), b, bytes(b).len(), chain)
    }

    #[test]
    fn a_small_change_is_a_patch_that_rebuilds_the_version_exactly() {
        let (a, b) = (doc(40), doc(41));
        let Step::Patch { ops, chain } = step_of(&a, &b, 0) else {
            panic!("expected a patch");
        };
        assert!(is_patch(&ops));
        assert_eq!(chain, len(&ops));
        assert!(ops.len() * 10 < bytes(&b).len(), "{} bytes", ops.len());
        let mut rebuilt = a;
        apply(&mut rebuilt, 41, &ops).unwrap();
        assert_eq!(rebuilt, b, "nulls and arrays survive the round trip");
    }

    #[test]
    fn a_version_is_whole_once_the_chain_outgrows_it() {
        let (a, b) = (doc(40), doc(41));
        assert!(matches!(step_of(&a, &b, 0), Step::Patch { .. }));
        assert_eq!(step_of(&a, &b, len(&bytes(&b))), Step::Whole);
        assert_eq!(
            step_of(&doc(0), &b, 0),
            Step::Whole,
            "a patch as big as the document"
        );
        assert_eq!(step_of(&Value::Null, &b, 0), Step::Whole);
        assert!(!is_patch(&bytes(&b)));
    }

    #[test]
    fn a_patch_that_does_not_fit_is_corrupt_state() {
        let mut v = doc(1);
        let err = apply(&mut v, 7, br#"[{"op":"remove","path":"/nowhere"}]"#).unwrap_err();
        assert!(matches!(err, StateError::Corrupt(_)), "{err}");
        assert!(err.to_string().contains("version 7"), "{err}");
        let err = apply(&mut v, 7, b"[{").unwrap_err();
        assert!(matches!(err, StateError::Corrupt(_)), "{err}");
    }
}
