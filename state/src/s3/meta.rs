//! What a state version carries as S3 user metadata (`x-amz-meta-prov-*`), so
//! `history` needs one `HeadObject` per version instead of reading documents.

use std::collections::HashMap;

use crate::{timestamp, HistoryEntry, StateDocument};

/// `x-amz-meta-prov-serial`.
const SERIAL: &str = "prov-serial";
/// `x-amz-meta-prov-lineage`.
const LINEAGE: &str = "prov-lineage";
/// `x-amz-meta-prov-written-at`.
const WRITTEN_AT: &str = "prov-written-at";
/// `x-amz-meta-prov-written-by`.
const WRITTEN_BY: &str = "prov-written-by";
/// `x-amz-meta-prov-resources`.
const RESOURCES: &str = "prov-resources";
/// `x-amz-meta-prov-chain-base`: the serial of the last version stored whole.
const CHAIN_BASE: &str = "prov-chain-base";
/// `x-amz-meta-prov-chain-bytes`: bytes of patches stored since then.
const CHAIN_BYTES: &str = "prov-chain-bytes";

/// Where a version stands in its chain of patches (see [`crate::delta`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Chain {
    /// The serial of the last version stored whole, at or before it.
    pub(super) base: u64,
    /// Bytes of patches stored after `base`, up to and including it.
    pub(super) bytes: u64,
}

/// The chain of version `serial` from its metadata. A version written
/// before patches (every version whole) is its own base.
pub(super) fn chain(serial: u64, metadata: &HashMap<String, String>) -> Chain {
    let base = metadata.get(CHAIN_BASE).and_then(|v| v.parse().ok());
    let bytes = metadata.get(CHAIN_BYTES).and_then(|v| v.parse().ok());
    match (base, bytes) {
        (Some(base), Some(bytes)) if base <= serial => Chain { base, bytes },
        _ => Chain {
            base: serial,
            bytes: 0,
        },
    }
}

/// `metadata` with `chain` recorded.
pub(super) fn with_chain(
    mut metadata: Vec<(&'static str, String)>,
    chain: Chain,
) -> Vec<(&'static str, String)> {
    metadata.retain(|(k, _)| *k != CHAIN_BASE && *k != CHAIN_BYTES);
    metadata.push((CHAIN_BASE, chain.base.to_string()));
    metadata.push((CHAIN_BYTES, chain.bytes.to_string()));
    metadata
}

/// The metadata of `doc` with its history `entry`.
pub(super) fn of_entry(doc: &StateDocument, entry: &HistoryEntry) -> Vec<(&'static str, String)> {
    vec![
        (SERIAL, doc.serial.to_string()),
        (LINEAGE, encode(&doc.lineage)),
        (WRITTEN_AT, timestamp::format(&entry.written_at)),
        (WRITTEN_BY, encode(&entry.written_by)),
        (RESOURCES, entry.resources.to_string()),
    ]
}

/// Metadata as read back, to write it again unchanged.
pub(super) fn carried(metadata: &HashMap<String, String>) -> Vec<(&'static str, String)> {
    [
        SERIAL,
        LINEAGE,
        WRITTEN_AT,
        WRITTEN_BY,
        RESOURCES,
        CHAIN_BASE,
        CHAIN_BYTES,
    ]
    .into_iter()
    .filter_map(|k| metadata.get(k).map(|v| (k, v.clone())))
    .collect()
}

/// The history entry of version `serial` from its metadata, when complete
/// (and its time readable).
pub(super) fn entry(serial: u64, metadata: &HashMap<String, String>) -> Option<HistoryEntry> {
    Some(HistoryEntry {
        serial,
        written_at: timestamp::parse(&decode(metadata.get(WRITTEN_AT)?)).ok()?,
        written_by: decode(metadata.get(WRITTEN_BY)?),
        resources: metadata.get(RESOURCES)?.parse().ok()?,
    })
}

/// Whether `b` may appear unescaped in an HTTP header value.
fn plain(b: u8) -> bool {
    b.is_ascii_graphic() && b != b'%' || b == b' '
}

/// Percent-encodes what cannot go into a header value (non-ASCII, controls).
pub(super) fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if plain(b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Reverses [`encode`] (invalid escapes are kept as they are).
pub(super) fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| bytes.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match escaped {
            Some(b) => {
                out.push(b);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::LockInfo;

    #[test]
    fn encoding_round_trips() {
        for s in [
            "alice@host (apply)",
            "jörg@hôst (state rm)",
            "100% sure",
            "a\nb",
        ] {
            let e = encode(s);
            assert!(e.bytes().all(plain) || e.contains('%'), "{e}");
            assert!(e.bytes().all(|b| b.is_ascii() && !b.is_ascii_control()));
            assert_eq!(decode(&e), s);
        }
        assert_eq!(decode("50%zz"), "50%zz");
    }

    #[test]
    fn entry_needs_every_field() {
        let doc = StateDocument::new("d");
        let lock = LockInfo::for_this_process("apply");
        let metadata: HashMap<String, String> =
            of_entry(&doc, &crate::writing::entry_now(&doc, &lock))
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect();
        let e = entry(0, &metadata).unwrap();
        assert_eq!(e.written_by, format!("{} (apply)", lock.who));
        assert_eq!(e.resources, 0);
        let mut partial = metadata;
        partial.remove(RESOURCES);
        assert_eq!(entry(0, &partial), None);
    }
}
