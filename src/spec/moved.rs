//! `[[moved]]`: an address the spec no longer uses, and the one its real
//! object is known by now (Terraform's `moved` blocks), so that renaming a
//! host or changing its `count` keeps the machines. Read here, checked
//! against the spec's declarations with located errors; planning moves the
//! records (`plan/moves.rs`).

use std::collections::BTreeMap;

use prov_provider::{Address, HOST_KIND};
use serde::Deserialize;

use super::check::{KEY_PAIR, SECURITY_GROUP};
use super::error::{Diagnostic, ErrorKind};
use super::raw::{RawSpec, Str};

/// `[[moved]]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawMoved {
    /// The old address (`web`, `web[1]`, `key_pair.old`).
    pub from: Str,
    /// The new address.
    pub to: Str,
}

/// One checked `[[moved]]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Move {
    /// The old address; without index when `count` is not set on it, or to
    /// move every index.
    pub from: Address,
    /// The new address.
    pub to: Address,
}

/// Checks every `[[moved]]` entry: both addresses parse, are of one kind
/// and differ; `from` is no longer declared and `to` is.
pub(crate) fn check(raw: &RawSpec, diags: &mut Vec<Diagnostic>) -> Vec<Move> {
    let mut moves = Vec::new();
    let mut sources: BTreeMap<Address, ()> = BTreeMap::new();
    for entry in &raw.moved {
        let (Some(from), Some(to)) = (address(&entry.from, diags), address(&entry.to, diags))
        else {
            continue;
        };
        let mut problem = |value: &Str, message: String, help: &str| {
            diags.push(Diagnostic::new(ErrorKind::InvalidValue, message, value.span()).help(help));
        };
        if from.kind != to.kind {
            problem(
                &entry.to,
                format!("`{from}` and `{to}` are different kinds of resource"),
                "a record moves only to an address of its own kind",
            );
            continue;
        }
        if from == to {
            problem(
                &entry.to,
                format!("`{to}` moves to itself"),
                "remove this entry",
            );
            continue;
        }
        let renamed = from.name != to.name;
        let still_there = if renamed {
            declaration(raw, &from).is_some()
        } else {
            declared_exactly(raw, &from)
        };
        if still_there {
            problem(
                &entry.from,
                format!("`{from}` is still declared in the spec"),
                "a move's source is an address the spec no longer has; remove it from the spec, or this entry",
            );
            continue;
        }
        if !destination(raw, &to) {
            problem(
                &entry.to,
                format!("nothing in the spec is at `{to}`"),
                "a move's destination is an address the spec declares (`NAME`, `NAME[INDEX]` within its `count`, `key_pair.NAME`, `security_group.NAME`)",
            );
            continue;
        }
        if sources.insert(from.clone(), ()).is_some() {
            diags.push(
                Diagnostic::new(
                    ErrorKind::DuplicateEntry,
                    format!("`{from}` is moved twice"),
                    entry.from.span(),
                )
                .help("keep one `[[moved]]` entry per source address"),
            );
            continue;
        }
        moves.push(Move { from, to });
    }
    moves
}

/// `value` as an address, or a diagnostic at it.
fn address(value: &Str, diags: &mut Vec<Diagnostic>) -> Option<Address> {
    super::check::parse_at(value, diags)
}

/// Whether the spec declares `address`'s kind and name: `Some(count)`
/// (`None` inside without `count`) when it does.
fn declaration(raw: &RawSpec, address: &Address) -> Option<Option<i64>> {
    match address.kind.as_str() {
        HOST_KIND => raw
            .hosts
            .get(address.name.as_str())
            .map(|host| host.count.as_ref().map(|c| *c.get_ref())),
        KEY_PAIR if raw.key_pairs.contains_key(address.name.as_str()) => Some(None),
        SECURITY_GROUP if raw.security_groups.contains_key(address.name.as_str()) => Some(None),
        _ => None,
    }
}

/// Whether the spec has a resource at exactly `address` (an index within
/// `count`, or no index without `count`).
fn declared_exactly(raw: &RawSpec, address: &Address) -> bool {
    match (declaration(raw, address), address.index) {
        (Some(None), None) => true,
        (Some(Some(count)), Some(index)) => i64::from(index) < count,
        _ => false,
    }
}

/// Whether `address` is somewhere a move may lead: a resource of the spec,
/// or the name of a counted host (every index moves there).
fn destination(raw: &RawSpec, address: &Address) -> bool {
    declared_exactly(raw, address)
        || (address.index.is_none() && matches!(declaration(raw, address), Some(Some(_))))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::path::Path;

    use crate::spec::{parse_toml, ErrorKind};

    const HOSTS: &str = "deployment = \"d\"\n[hosts.app]\ntarget = \"local\"\ncount = 2\n[hosts.db]\ntarget = \"local\"\n";

    fn with(moved: &str) -> Result<crate::spec::Spec, crate::spec::SpecError> {
        parse_toml(&format!("{HOSTS}{moved}"), Path::new("prov.toml"))
    }

    #[test]
    fn renames_and_count_changes_are_read_in_order() {
        let spec = with(
            "[[moved]]\nfrom = \"web\"\nto = \"app\"\n[[moved]]\nfrom = \"db[0]\"\nto = \"db\"\n[[moved]]\nfrom = \"solo\"\nto = \"app[1]\"\n",
        )
        .unwrap();
        let moves: Vec<String> = spec
            .moved
            .iter()
            .map(|m| format!("{} -> {}", m.from, m.to))
            .collect();
        assert_eq!(moves, ["web -> app", "db[0] -> db", "solo -> app[1]"]);
    }

    #[test]
    fn each_mistake_is_located_at_its_value() {
        for (moved, kind, message, line) in [
            (
                "from = \"web\"\nto = \"nope\"",
                ErrorKind::InvalidValue,
                "nothing in the spec is at `nope`",
                9,
            ),
            (
                "from = \"db\"\nto = \"app\"",
                ErrorKind::InvalidValue,
                "`db` is still declared in the spec",
                8,
            ),
            (
                "from = \"app[5]\"\nto = \"app[2]\"",
                ErrorKind::InvalidValue,
                "nothing in the spec is at `app[2]`",
                9,
            ),
            (
                "from = \"web\"\nto = \"key_pair.app\"",
                ErrorKind::InvalidValue,
                "different kinds",
                9,
            ),
            (
                "from = \"web[\"\nto = \"app\"",
                ErrorKind::InvalidValue,
                "not a resource address",
                8,
            ),
        ] {
            let error = with(&format!("[[moved]]\n{moved}\n")).unwrap_err();
            let first = &error.diagnostics()[0];
            assert_eq!(first.kind, kind, "{moved}");
            assert!(
                first.message.contains(message),
                "{moved}: {}",
                first.message
            );
            assert_eq!(first.line, line, "{moved}");
        }
        let twice = with(
            "[[moved]]\nfrom = \"web\"\nto = \"app\"\n[[moved]]\nfrom = \"web\"\nto = \"db\"\n",
        )
        .unwrap_err();
        assert_eq!(twice.diagnostics()[0].kind, ErrorKind::DuplicateEntry);
    }
}
