//! A map that other crates can read but not change: the state document's
//! resources, hosts and outputs change only through the document's methods
//! (`changes.rs`).

use std::collections::BTreeMap;
use std::ops::Deref;

use serde::{Deserialize, Serialize};

/// A [`BTreeMap`] readable through [`Deref`]; only this crate inserts,
/// removes or changes entries.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(transparent)]
pub struct Records<K: Ord, V>(BTreeMap<K, V>);

/// Read as a map is, but built in one go: a map built by inserting the
/// (sorted) entries one by one has half-empty nodes, which at fleet scale
/// is tens of MiB of a document. Of entries with the same key the last
/// one counts, as with inserting.
impl<'de, K, V> Deserialize<'de> for Records<K, V>
where
    K: Ord + Deserialize<'de>,
    V: Deserialize<'de>,
{
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(EntriesVisitor(std::marker::PhantomData))
    }
}

/// Collects a map's entries, then builds the map from them.
struct EntriesVisitor<K, V>(std::marker::PhantomData<(K, V)>);

impl<'de, K, V> serde::de::Visitor<'de> for EntriesVisitor<K, V>
where
    K: Ord + Deserialize<'de>,
    V: Deserialize<'de>,
{
    type Value = Records<K, V>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a map")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        // A size hint from the input is not trusted beyond a little.
        let mut entries = Vec::with_capacity(map.size_hint().unwrap_or(0).min(4096));
        while let Some(entry) = map.next_entry()? {
            entries.push(entry);
        }
        Ok(Records(entries.into_iter().collect()))
    }
}

impl<K: Ord, V> Default for Records<K, V> {
    fn default() -> Self {
        Self(BTreeMap::new())
    }
}

impl<K: Ord, V> Deref for Records<K, V> {
    type Target = BTreeMap<K, V>;

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl<K: Ord, V> Records<K, V> {
    /// The map, to change (this crate only).
    pub(crate) fn map_mut(&mut self) -> &mut BTreeMap<K, V> {
        &mut self.0
    }
}

impl<'a, K: Ord, V> IntoIterator for &'a Records<K, V> {
    type Item = (&'a K, &'a V);
    type IntoIter = std::collections::btree_map::Iter<'a, K, V>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

/// `records["web[0]"]`: the record at an address written as text. Panics
/// when the text is not an address or nothing is recorded there, as
/// indexing a map does.
impl<V> std::ops::Index<&str> for Records<prov_provider::Address, V> {
    type Output = V;

    fn index(&self, address: &str) -> &V {
        match address.parse::<prov_provider::Address>() {
            Ok(address) => &self.0[&address],
            Err(error) => panic!("{error}"),
        }
    }
}

impl<K: Ord, V> std::ops::Index<&K> for Records<K, V> {
    type Output = V;

    fn index(&self, key: &K) -> &V {
        &self.0[key]
    }
}
