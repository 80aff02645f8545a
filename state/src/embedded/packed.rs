//! How versions and patches sit in sled: deflated.
//!
//! State is JSON, which deflate shrinks several times over, and sled keeps
//! old copies of what it stores until it reclaims a segment: what it holds
//! on disk is a multiple of what it stores, so storing less is what keeps
//! history small. (sled's own `use_compression` cannot be turned on for a
//! database that exists, and needs zstd's C library.)
//!
//! A packed value is [`TAG`] then the deflated JSON. JSON never starts with
//! that byte, so values written before packing (plain JSON) still read.

use std::borrow::Cow;
use std::io::{Read, Write};

use flate2::read::DeflateDecoder;
use flate2::write::DeflateEncoder;
use flate2::Compression;

use crate::StateError;

/// First byte of a packed value.
const TAG: u8 = 0x01;

/// Packs JSON for storing.
pub(super) fn pack(json: &[u8]) -> Result<Vec<u8>, StateError> {
    let mut out = Vec::with_capacity(json.len() / 4 + 16);
    out.push(TAG);
    let mut encoder = DeflateEncoder::new(out, Compression::default());
    encoder.write_all(json)?;
    Ok(encoder.finish()?)
}

/// The JSON of a stored value (`what` names it in errors).
pub(super) fn unpack<'a>(
    what: &dyn Fn() -> String,
    stored: &'a [u8],
) -> Result<Cow<'a, [u8]>, StateError> {
    let Some((&TAG, deflated)) = stored.split_first() else {
        return Ok(Cow::Borrowed(stored));
    };
    let mut json = Vec::with_capacity(deflated.len() * 4);
    DeflateDecoder::new(deflated)
        .read_to_end(&mut json)
        .map_err(|e| StateError::Corrupt(format!("{} does not inflate: {e}", what())))?;
    Ok(Cow::Owned(json))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn name() -> String {
        "version 1".to_owned()
    }

    #[test]
    fn packed_json_unpacks_and_is_smaller() {
        let json = serde_json::to_vec(&serde_json::json!({
            "resources": (0..100).map(|i| format!("web[{i}]")).collect::<Vec<_>>()
        }))
        .unwrap();
        let packed = pack(&json).unwrap();
        assert!(
            packed.len() * 3 < json.len(),
            "{} vs {}",
            packed.len(),
            json.len()
        );
        assert_eq!(unpack(&name, &packed).unwrap().as_ref(), json.as_slice());
    }

    #[test]
    fn plain_json_from_before_packing_reads_as_is() {
        for json in [&b"{\"serial\":1}"[..], b"[]", b" {}", b""] {
            assert!(matches!(unpack(&name, json).unwrap(), Cow::Borrowed(j) if j == json));
        }
    }

    #[test]
    fn a_damaged_packed_value_is_corrupt_and_named() {
        let mut packed = pack(b"{\"serial\":1,\"lineage\":\"x\"}").unwrap();
        packed.truncate(4);
        let err = unpack(&name, &packed).unwrap_err();
        assert!(matches!(err, StateError::Corrupt(_)), "{err}");
        assert!(err.to_string().contains("version 1"), "{err}");
    }
}
