//! Resource selection for `--on`: `NAME`, `GLOB`, `ADDRESS`, `@TAG`,
//! `@KEY=VALUE` (as Colmena's `--on name,glob*,@tag`).

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use globset::{Glob, GlobMatcher};
use prov_provider::Address;

/// One `--on` pattern.
#[derive(Debug, Clone)]
enum Pattern {
    /// An exact address, or a host name matching every index.
    Exact(Address),
    /// A glob over addresses and host names.
    Glob(GlobMatcher),
    /// A tag key, and optionally its value.
    Tag(String, Option<String>),
}

/// Which resources a command works on.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// Each pattern with the text it was given as.
    patterns: Vec<(String, Pattern)>,
}

impl Selection {
    /// Everything.
    #[must_use]
    pub fn all() -> Self {
        Self::default()
    }

    /// Parses `--on` values.
    ///
    /// # Errors
    /// When a pattern is an invalid glob or an empty tag.
    pub fn parse(values: &[String]) -> Result<Self> {
        let mut patterns = Vec::new();
        for value in values.iter().map(|v| v.trim()).filter(|v| !v.is_empty()) {
            let pattern = if let Some(tag) = value.strip_prefix('@') {
                let (key, val) = match tag.split_once('=') {
                    Some((k, v)) => (k, Some(v.to_owned())),
                    None => (tag, None),
                };
                anyhow::ensure!(!key.is_empty(), "`--on {value}`: a tag needs a name");
                Pattern::Tag(key.to_owned(), val)
            } else if let Ok(address) = value.parse::<Address>() {
                Pattern::Exact(address)
            } else {
                let glob = Glob::new(value).with_context(|| {
                    format!("`--on {value}` is not a valid name, address or glob")
                })?;
                Pattern::Glob(glob.compile_matcher())
            };
            patterns.push((value.to_owned(), pattern));
        }
        Ok(Self { patterns })
    }

    /// Whether nothing was narrowed.
    #[must_use]
    pub fn is_all(&self) -> bool {
        self.patterns.is_empty()
    }

    /// Whether the resource at `address`, with user `tags`, is selected.
    #[must_use]
    pub fn matches(&self, address: &Address, tags: &BTreeMap<String, String>) -> bool {
        if self.is_all() {
            return true;
        }
        self.patterns
            .iter()
            .any(|(_, pattern)| pattern.matches(address, tags))
    }

    /// The patterns (as given) that match none of `candidates`: a typo in
    /// `--on` is an error, not an empty plan.
    #[must_use]
    pub fn unmatched(&self, candidates: &[(&Address, BTreeMap<String, String>)]) -> Vec<String> {
        self.patterns
            .iter()
            .filter(|(_, p)| !candidates.iter().any(|(a, tags)| p.matches(a, tags)))
            .map(|(text, _)| text.clone())
            .collect()
    }
}

impl Pattern {
    fn matches(&self, address: &Address, tags: &BTreeMap<String, String>) -> bool {
        let text = address.to_string();
        match self {
            Pattern::Exact(exact) => {
                exact == address
                    || (exact.index.is_none()
                        && exact.kind == address.kind
                        && exact.name == address.name)
            }
            Pattern::Glob(glob) => glob.is_match(&text) || glob.is_match(&address.name),
            Pattern::Tag(key, value) => match (tags.get(key), value) {
                (Some(_), None) => true,
                (Some(found), Some(wanted)) => found == wanted,
                (None, _) => false,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sel(v: &[&str]) -> Selection {
        Selection::parse(&v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn names_globs_addresses_tags() {
        let web1 = Address::host("web", Some(1));
        let db = Address::host("db", None);
        let kp: Address = "key_pair.deploy".parse().unwrap();
        let tags: BTreeMap<String, String> = [("role".to_owned(), "web".to_owned())].into();
        let none = BTreeMap::new();
        assert!(sel(&["web"]).matches(&web1, &none));
        assert!(sel(&["web[1]"]).matches(&web1, &none));
        assert!(!sel(&["web[0]"]).matches(&web1, &none));
        assert!(sel(&["w*"]).matches(&web1, &none));
        assert!(!sel(&["w*"]).matches(&db, &none));
        assert!(sel(&["@role"]).matches(&web1, &tags));
        assert!(sel(&["@role=web"]).matches(&web1, &tags));
        assert!(!sel(&["@role=db"]).matches(&web1, &tags));
        assert!(sel(&["key_pair.*"]).matches(&kp, &none));
        assert!(sel(&["db", "@role"]).matches(&db, &none));
        assert!(Selection::all().matches(&db, &none));
        let candidates = [(&web1, tags.clone()), (&db, none.clone())];
        assert_eq!(
            sel(&["db", "wbe", "@role=db"]).unmatched(&candidates),
            ["wbe", "@role=db"]
        );
        assert!(sel(&["web", "@role"]).unmatched(&candidates).is_empty());
    }
}
