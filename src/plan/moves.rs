//! The spec's `[[moved]]` entries, applied to a copy of the refreshed state
//! before the resource diff, so the diff sees each object at its new
//! address and keeps it; apply records the same moves once confirmed.

use std::borrow::Cow;
use std::sync::Arc;

use anyhow::{bail, Context as _, Result};
use prov_provider::Address;
use prov_state::{MoveError, StateDocument};
use serde::{Deserialize, Serialize};

use super::Refreshed;
use crate::spec::moved::Move;

/// One record the plan moves to another address (the same object).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Moved {
    /// The address in state now.
    pub from: Address,
    /// The address it will have.
    pub to: Address,
}

/// `refreshed` with `moves` applied in order (an entry whose source is not
/// in state is done already, or never was: it is skipped), and the records
/// moved. Drift and objects found gone follow their records. Without
/// `[[moved]]` entries the state is borrowed, not copied.
///
/// # Errors
/// When an entry would move a record onto another one.
pub fn apply<'a>(
    moves: &[Move],
    refreshed: &'a Refreshed,
) -> Result<(Cow<'a, Refreshed>, Vec<Moved>)> {
    if moves.is_empty() {
        return Ok((Cow::Borrowed(refreshed), Vec::new()));
    }
    let mut moved_state = refreshed.clone();
    let mut moved = Vec::new();
    for entry in moves {
        let pairs = match Arc::make_mut(&mut moved_state.doc).move_address(&entry.from, &entry.to) {
            Ok(pairs) => pairs,
            Err(MoveError::Missing(_)) => continue,
            Err(error) => {
                return Err(error).with_context(|| {
                    format!("[[moved]] from = \"{}\" to = \"{}\"", entry.from, entry.to)
                })
            }
        };
        for (from, to) in pairs {
            if moved_state.gone.remove(&from) {
                moved_state.gone.insert(to.clone());
            }
            for drift in moved_state.drift.iter_mut().filter(|d| d.address == from) {
                drift.address = to.clone();
            }
            moved.push(Moved { from, to });
        }
    }
    moved_state.drift.sort_by(|a, b| a.address.cmp(&b.address));
    Ok((Cow::Owned(moved_state), moved))
}

/// Records the moves of a confirmed plan in `doc` (the state it was planned
/// against).
///
/// # Errors
/// When a move no longer fits the state (it changed since the plan).
pub fn record(doc: &mut StateDocument, moved: &[Moved]) -> Result<()> {
    for Moved { from, to } in moved {
        let pairs = doc
            .move_address(from, to)
            .with_context(|| format!("moving {from} to {to}"))?;
        if pairs != [(from.clone(), to.clone())] {
            bail!("moving {from} to {to} moved {pairs:?}; plan again");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use prov_state::NewResource;

    fn address(text: &str) -> Address {
        text.parse().unwrap()
    }

    fn entry(from: &str, to: &str) -> Move {
        Move {
            from: address(from),
            to: address(to),
        }
    }

    fn state(addresses: &[&str]) -> Refreshed {
        let mut doc = StateDocument::new("d");
        for a in addresses {
            let new = NewResource {
                provider: "fake",
                kind: "thing",
                dependencies: &[],
            };
            doc.record_intent(&address(a), new);
            doc.record_created(&address(a), &format!("id-{a}"), Default::default());
        }
        Refreshed::unrefreshed(doc)
    }

    #[test]
    fn moves_in_order_skip_what_is_done_and_leave_the_original_alone() {
        let refreshed = state(&["web[0]", "web[1]"]);
        let moves = [
            entry("web", "app"),
            entry("app[1]", "db"),
            entry("gone", "here"),
        ];
        let (after, moved) = apply(&moves, &refreshed).unwrap();
        assert_eq!(
            moved,
            [
                Moved {
                    from: address("web[0]"),
                    to: address("app[0]")
                },
                Moved {
                    from: address("web[1]"),
                    to: address("app[1]")
                },
                Moved {
                    from: address("app[1]"),
                    to: address("db")
                },
            ]
        );
        assert_eq!(after.doc.resources["db"].id.as_deref(), Some("id-web[1]"));
        assert!(refreshed.doc.resources.contains_key(&address("web[0]")));
        let mut recorded = StateDocument::clone(&refreshed.doc);
        record(&mut recorded, &moved).unwrap();
        assert_eq!(recorded.resources, after.doc.resources);
    }

    #[test]
    fn a_move_onto_a_record_is_an_error_naming_the_entry() {
        let refreshed = state(&["web", "app"]);
        let error = apply(&[entry("web", "app")], &refreshed).unwrap_err();
        assert!(
            format!("{error:#}")
                .starts_with("[[moved]] from = \"web\" to = \"app\": app is already in state"),
            "{error:#}"
        );
    }
}
