//! Sorting what one batched Describe call returned into the maps `read` and
//! `find_by_token` answer with; the same for every kind.

use std::collections::BTreeMap;

use aws_sdk_ec2::types::Tag;
use prov_provider::Observed;

use crate::tags;

/// Adds to `found` (keyed by id) every object of `objects` whose id was asked
/// for in `ids`.
pub(crate) fn by_id<T>(
    found: &mut BTreeMap<String, Observed>,
    objects: &[T],
    ids: &[String],
    observe: impl Fn(&T) -> Option<Observed>,
) {
    for observed in objects.iter().filter_map(observe) {
        if ids.contains(&observed.id) {
            found.insert(observed.id.clone(), observed);
        }
    }
}

/// Adds to `found` (keyed by token) every object of `objects` tagged with one
/// of `tokens`. The first object per token wins; a second one is logged.
pub(crate) fn by_token<T>(
    found: &mut BTreeMap<String, Observed>,
    objects: &[T],
    tokens: &[String],
    tags_of: impl Fn(&T) -> &[Tag],
    observe: impl Fn(&T) -> Option<Observed>,
) {
    for object in objects {
        let (Some(token), Some(observed)) = (tags::token_of(tags_of(object)), observe(object))
        else {
            continue;
        };
        if !tokens.iter().any(|t| t == token) {
            continue;
        }
        if found.contains_key(token) {
            tracing::warn!(token, id = observed.id, "several objects carry one token");
            continue;
        }
        found.insert(token.to_owned(), observed);
    }
}
