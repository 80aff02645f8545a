//! Resource addresses: `web[0]`, `db`, `key_pair.deploy`, `security_group.ssh`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The kind name used for hosts; hosts are addressed by their bare name.
pub const HOST_KIND: &str = "host";

/// Where a resource lives in a deployment: its kind, its name and, for resources
/// declared with `count`, its index.
///
/// Hosts print as `NAME` or `NAME[INDEX]`; every other kind as `KIND.NAME[INDEX]`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Address {
    /// `host`, `key_pair`, `security_group`, …
    pub kind: String,
    /// The name the spec gives the resource.
    pub name: String,
    /// The position within `count`, if the resource has one.
    pub index: Option<u32>,
}

impl Address {
    /// A host address.
    #[must_use]
    pub fn host(name: &str, index: Option<u32>) -> Self {
        Self::new(HOST_KIND, name, index)
    }

    /// Any address.
    #[must_use]
    pub fn new(kind: &str, name: &str, index: Option<u32>) -> Self {
        Self {
            kind: kind.to_owned(),
            name: name.to_owned(),
            index,
        }
    }

    /// Whether this addresses a host.
    #[must_use]
    pub fn is_host(&self) -> bool {
        self.kind == HOST_KIND
    }

    /// The machine name: `web-0` for `web[0]`, `db` for `db`.
    #[must_use]
    pub fn machine_name(&self) -> String {
        match self.index {
            Some(index) => format!("{}-{index}", self.name),
            None => self.name.clone(),
        }
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.is_host() {
            write!(f, "{}.", self.kind)?;
        }
        f.write_str(&self.name)?;
        if let Some(index) = self.index {
            write!(f, "[{index}]")?;
        }
        Ok(())
    }
}

/// An address string that does not parse.
#[derive(Debug, thiserror::Error)]
#[error("`{0}` is not a resource address (expected NAME, NAME[INDEX] or KIND.NAME[INDEX])")]
pub struct AddressParseError(pub String);

/// Whether `s` is a valid resource or kind name: ASCII letters, digits, `-`, `_`,
/// starting with a letter.
#[must_use]
pub fn is_valid_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

impl FromStr for Address {
    type Err = AddressParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || AddressParseError(s.to_owned());
        let (kind, rest) = match s.split_once('.') {
            Some((kind, rest)) => (kind, rest),
            None => (HOST_KIND, s),
        };
        let (name, index) = match rest.split_once('[') {
            Some((name, idx)) => {
                let idx = idx.strip_suffix(']').ok_or_else(bad)?;
                (name, Some(idx.parse::<u32>().map_err(|_| bad())?))
            }
            None => (rest, None),
        };
        if !is_valid_name(kind) || !is_valid_name(name) {
            return Err(bad());
        }
        Ok(Self::new(kind, name, index))
    }
}

impl Serialize for Address {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Address {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        for s in [
            "web[0]",
            "db",
            "key_pair.deploy",
            "security_group.ssh-in[12]",
        ] {
            let a: Address = s.parse().unwrap();
            assert_eq!(a.to_string(), s);
        }
        assert!(Address::host("web", Some(3)).is_host());
    }

    #[test]
    fn rejects_garbage() {
        for s in ["", "web[", "web[x]", "1web", "a.b.c", ".x", "web[0]x"] {
            assert!(s.parse::<Address>().is_err(), "{s}");
        }
    }

    #[test]
    fn orders_by_kind_then_name_then_index() {
        let mut v: Vec<Address> = ["web[1]", "key_pair.k", "web[0]", "db"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        v.sort();
        let s: Vec<String> = v.iter().map(ToString::to_string).collect();
        assert_eq!(s, ["db", "web[0]", "web[1]", "key_pair.k"]);
    }
}
