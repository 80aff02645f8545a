//! Which records a move takes where (`prov state mv`, the spec's
//! `[[moved]]`), and why one is refused. The move itself is
//! [`StateDocument::move_address`], with the other changes.

use prov_provider::Address;

use crate::StateDocument;

/// Why a move was refused (nothing was moved).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MoveError {
    /// Nothing is recorded at the source (or at any index of it).
    #[error("{0} is not in state")]
    Missing(Address),
    /// Something is recorded at a destination already.
    #[error("{to} is already in state: moving {from} there would lose one of them (remove one with `prov state rm` first)")]
    Occupied {
        /// The record that would move.
        from: Address,
        /// The address taken.
        to: Address,
    },
    /// Source and destination are different kinds of resource.
    #[error("{from} and {to} are different kinds of resource; a record moves only to an address of its own kind")]
    OtherKind {
        /// The source.
        from: Address,
        /// The destination.
        to: Address,
    },
    /// Every index of a counted resource moves only to another name, not to
    /// one index.
    #[error("{from} has instances {instances}; move them to a name without index (every index moves), or move one instance (`{from}[0]`)")]
    Indexed {
        /// The source.
        from: Address,
        /// Its recorded instances.
        instances: String,
    },
}

impl StateDocument {
    /// The records a move of `from` to `to` takes, as (from, to) pairs:
    /// the record at `from` when there is one; else, when `from` has no
    /// index and `to` another name, every recorded index of it, each to the
    /// same index of `to`.
    /// A resource record and a host record at one address move together.
    ///
    /// # Errors
    /// See [`MoveError`]; an error means nothing would move.
    pub fn move_pairs(
        &self,
        from: &Address,
        to: &Address,
    ) -> Result<Vec<(Address, Address)>, MoveError> {
        if from.kind != to.kind {
            return Err(MoveError::OtherKind {
                from: from.clone(),
                to: to.clone(),
            });
        }
        let recorded = |a: &Address| self.resources.contains_key(a) || self.hosts.contains_key(a);
        let pairs: Vec<(Address, Address)> = if recorded(from) {
            vec![(from.clone(), to.clone())]
        } else if from.index.is_none() && from.name != to.name {
            // Every index moves to another name; to its own name it would
            // stay where it is (`web` to `web[0]` moves the record `web`).
            let mut indexed: Vec<Address> = self
                .resources
                .keys()
                .chain(self.hosts.keys())
                .filter(|a| a.kind == from.kind && a.name == from.name && a.index.is_some())
                .cloned()
                .collect();
            indexed.sort();
            indexed.dedup();
            if !indexed.is_empty() && to.index.is_some() {
                let instances: Vec<String> = indexed.iter().map(ToString::to_string).collect();
                return Err(MoveError::Indexed {
                    from: from.clone(),
                    instances: instances.join(", "),
                });
            }
            indexed
                .into_iter()
                .map(|a| {
                    let target = Address::new(&to.kind, &to.name, a.index);
                    (a, target)
                })
                .collect()
        } else {
            Vec::new()
        };
        if pairs.is_empty() {
            return Err(MoveError::Missing(from.clone()));
        }
        if let Some((from, to)) = pairs
            .iter()
            .find(|(source, target)| source != target && recorded(target))
        {
            return Err(MoveError::Occupied {
                from: from.clone(),
                to: to.clone(),
            });
        }
        Ok(pairs)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::{NewResource, ReachRecord};

    fn address(text: &str) -> Address {
        text.parse().unwrap()
    }

    const NEW: NewResource<'static> = NewResource {
        provider: "ec2",
        kind: "instance",
        dependencies: &[],
    };

    /// web[0], web[1] (with host records) and a volume depending on web[1].
    fn recorded() -> StateDocument {
        let mut doc = StateDocument::new("d");
        for (i, name) in ["web[0]", "web[1]"].iter().enumerate() {
            doc.record_intent(&address(name), NEW);
            doc.record_created(&address(name), &format!("i-{i}"), Default::default());
            doc.record_reached(
                &address(name),
                ReachRecord::default(),
                "ssh-ed25519 K",
                None,
            );
        }
        let volume = address("volume.data");
        let dependencies = [address("web[1]")];
        doc.record_intent(
            &volume,
            NewResource {
                dependencies: &dependencies,
                ..NEW
            },
        );
        doc
    }

    #[test]
    fn a_name_moves_every_index_with_its_host_record_and_dependents() {
        let mut doc = recorded();
        let moved = doc.move_address(&address("web"), &address("app")).unwrap();
        assert_eq!(
            moved,
            [
                (address("web[0]"), address("app[0]")),
                (address("web[1]"), address("app[1]"))
            ]
        );
        assert_eq!(doc.resources["app[1]"].id.as_deref(), Some("i-1"));
        assert!(doc.hosts.contains_key(&address("app[0]")));
        assert!(!doc.resources.contains_key(&address("web[0]")));
        assert!(!doc.hosts.contains_key(&address("web[1]")));
        assert_eq!(
            doc.resources["volume.data"].dependencies,
            [address("app[1]")]
        );
    }

    #[test]
    fn one_instance_moves_to_a_name_and_back_to_an_index() {
        let mut doc = recorded();
        doc.move_address(&address("web[1]"), &address("solo"))
            .unwrap();
        assert_eq!(doc.resources["solo"].id.as_deref(), Some("i-1"));
        doc.move_address(&address("solo"), &address("solo[0]"))
            .unwrap();
        assert_eq!(doc.resources["solo[0]"].id.as_deref(), Some("i-1"));
    }

    #[test]
    fn a_moved_record_remembers_where_its_object_was_created() {
        let mut doc = recorded();
        assert_eq!(doc.resources["web[1]"].names_from, None);
        doc.move_address(&address("web[1]"), &address("solo"))
            .unwrap();
        doc.move_address(&address("solo"), &address("solo[0]"))
            .unwrap();
        assert_eq!(
            doc.resources["solo[0]"].names_from,
            Some(address("web[1]")),
            "the first address, through every move"
        );
        doc.move_address(&address("solo[0]"), &address("web[1]"))
            .unwrap();
        assert_eq!(doc.resources["web[1]"].names_from, None, "back home");
        doc.move_address(&address("web[0]"), &address("app"))
            .unwrap();
        doc.record_intent(&address("app"), NEW);
        assert_eq!(
            doc.resources["app"].names_from, None,
            "a new object at the address has its own names"
        );
    }

    #[test]
    fn a_move_that_would_lose_a_record_moves_nothing() {
        let mut doc = recorded();
        let before = doc.clone();
        assert!(matches!(
            doc.move_address(&address("web[0]"), &address("web[1]")),
            Err(MoveError::Occupied { .. })
        ));
        assert_eq!(
            doc.move_address(&address("db"), &address("app")),
            Err(MoveError::Missing(address("db")))
        );
        assert!(matches!(
            doc.move_address(&address("web"), &address("app[0]")),
            Err(MoveError::Indexed { .. })
        ));
        assert!(matches!(
            doc.move_address(&address("web[0]"), &address("key_pair.web")),
            Err(MoveError::OtherKind { .. })
        ));
        assert_eq!(doc, before);
    }
}
