//! A map that other crates can read but not change: the state document's
//! resources, hosts and outputs change only through the document's methods
//! (`changes.rs`).

use std::collections::BTreeMap;
use std::ops::Deref;

use serde::{Deserialize, Serialize};

/// A [`BTreeMap`] readable through [`Deref`]; only this crate inserts,
/// removes or changes entries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Records<K: Ord, V>(BTreeMap<K, V>);

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
