//! What the objects of every kind share: described by filters, 200 values
//! at a time, sorted into the maps `read` and `find_by_token` answer with,
//! found by their `prov:deployment` mark (`find_marked`), looked up one by
//! one, and waited for until EC2 shows them.

use std::collections::BTreeMap;
use std::future::Future;

use aws_sdk_ec2::primitives::{DateTime, DateTimeFormat};
use aws_sdk_ec2::types::{Filter, Tag};
use prov_provider::{Marked, Observed, ProviderError};

use crate::client::{filter, Ec2Api, MAX_FILTER_VALUES};
use crate::tags::{self, DEPLOYMENT_TAG};
use crate::wait::WaitPolicy;
use crate::TOKEN_TAG;

/// An EC2 object of one of the kinds (the SDK's type for it).
pub(crate) trait Ec2Object: Sized + Send + Sync {
    /// The kind's name, for errors.
    const KIND: &'static str;
    /// The Describe filter that names objects by their id.
    const ID_FILTER: &'static str;

    /// Every object matching `filters`, following pagination.
    fn describe(
        api: &Ec2Api,
        filters: Vec<Filter>,
    ) -> impl Future<Output = Result<Vec<Self>, ProviderError>> + Send;

    /// The object's provider id.
    fn id(&self) -> Option<&str>;

    /// The object's tags.
    fn tags(&self) -> &[Tag];

    /// The object in prov's attributes; `None` when EC2 reported no id.
    fn observe(&self) -> Option<Observed>;

    /// Whether the object still counts as existing (a terminated instance
    /// does not).
    fn exists(&self) -> bool {
        true
    }

    /// When the object was made, if EC2 reports it.
    fn created(&self) -> Option<&DateTime> {
        None
    }

    /// Filters that leave out, on the server, what [`Ec2Object::exists`]
    /// would (`find_by_token` and `find_marked` add them to theirs).
    fn live_filters() -> Vec<Filter> {
        Vec::new()
    }
}

/// Object `id` as EC2 reports it now, existing or not.
pub(crate) async fn describe_one<T: Ec2Object>(
    api: &Ec2Api,
    id: &str,
) -> Result<Option<T>, ProviderError> {
    Ok(T::describe(api, vec![filter(T::ID_FILTER, [id])])
        .await?
        .into_iter()
        .find(|o| o.id() == Some(id)))
}

/// Object `id`, which must exist (an update starts here).
///
/// # Errors
/// [`ProviderError::NotFound`] when it does not.
pub(crate) async fn existing<T: Ec2Object>(api: &Ec2Api, id: &str) -> Result<T, ProviderError> {
    describe_one::<T>(api, id)
        .await?
        .filter(T::exists)
        .ok_or_else(|| ProviderError::not_found(T::KIND, id))
}

/// Object `id` observed now, which must exist (an update ends here).
///
/// # Errors
/// [`ProviderError::NotFound`] when it does not.
pub(crate) async fn observe_existing<T: Ec2Object>(
    api: &Ec2Api,
    id: &str,
) -> Result<Observed, ProviderError> {
    describe_one::<T>(api, id)
        .await?
        .filter(T::exists)
        .as_ref()
        .and_then(T::observe)
        .ok_or_else(|| ProviderError::not_found(T::KIND, id))
}

/// Waits until EC2 shows object `id` (`what` names it in a timeout) and
/// observes it.
pub(crate) async fn visible<T: Ec2Object>(
    api: &Ec2Api,
    wait: &WaitPolicy,
    id: &str,
    what: &str,
) -> Result<Observed, ProviderError> {
    wait.until(&format!("{what} to be visible"), || async move {
        Ok(describe_one::<T>(api, id)
            .await?
            .as_ref()
            .and_then(T::observe))
    })
    .await
}

/// Reads objects by id, one call per 200 ids; objects that no longer exist
/// are absent.
pub(crate) async fn read<T: Ec2Object>(
    api: &Ec2Api,
    ids: &[String],
) -> Result<BTreeMap<String, Observed>, ProviderError> {
    let mut found = BTreeMap::new();
    for chunk in ids.chunks(MAX_FILTER_VALUES) {
        let filters = vec![filter(T::ID_FILTER, chunk.iter().cloned())];
        let mut objects = T::describe(api, filters).await?;
        objects.retain(T::exists);
        by_id(&mut found, &objects, chunk, T::observe);
    }
    Ok(found)
}

/// Finds existing objects by their `prov:token` tag, one call per 200
/// tokens.
pub(crate) async fn find_by_token<T: Ec2Object>(
    api: &Ec2Api,
    tokens: &[String],
) -> Result<BTreeMap<String, Observed>, ProviderError> {
    let mut found = BTreeMap::new();
    for chunk in tokens.chunks(MAX_FILTER_VALUES) {
        let mut filters = vec![filter(&format!("tag:{TOKEN_TAG}"), chunk.iter().cloned())];
        filters.extend(T::live_filters());
        let mut objects = T::describe(api, filters).await?;
        objects.retain(T::exists);
        by_token(&mut found, &objects, chunk, T::tags, T::observe);
    }
    Ok(found)
}

/// The existing objects whose `prov:deployment` tag is `deployment`: one
/// Describe call, and more where the API pages.
///
/// The server filters by the tag, and every object it returns is checked
/// again here: a server that ignores the filter, or reads the value as a
/// pattern (EC2 filters take `*` and `?` wildcards), must not make objects
/// of another deployment look like ours, since the caller may delete them.
pub(crate) async fn find_marked<T: Ec2Object>(
    api: &Ec2Api,
    deployment: &str,
) -> Result<Vec<Marked>, ProviderError> {
    let mut filters = vec![filter(&format!("tag:{DEPLOYMENT_TAG}"), [deployment])];
    filters.extend(T::live_filters());
    let objects = T::describe(api, filters).await?;
    Ok(marked(&objects, deployment))
}

/// Of `objects`, those that exist and are marked as made for `deployment`,
/// with their marks.
fn marked<T: Ec2Object>(objects: &[T], deployment: &str) -> Vec<Marked> {
    objects
        .iter()
        .filter(|o| o.exists() && tags::deployment_of(o.tags()) == Some(deployment))
        .filter_map(|o| {
            Some(Marked {
                kind: T::KIND.to_owned(),
                id: o.id()?.to_owned(),
                marks: tags::marks(o.tags()),
                created: o.created().and_then(rfc3339),
            })
        })
        .collect()
}

/// `time` as RFC 3339 UTC (`2024-05-01T12:00:00Z`); `None` out of range.
fn rfc3339(time: &DateTime) -> Option<String> {
    time.fmt(DateTimeFormat::DateTime).ok()
}

/// The object carrying the create token `token`, if any: the one the
/// create request holding that token made.
///
/// # Errors
/// When the objects cannot be described.
pub(crate) async fn made_with<T: Ec2Object>(
    api: &Ec2Api,
    token: &str,
) -> Result<Option<Observed>, ProviderError> {
    let found = find_by_token::<T>(api, &[token.to_owned()]).await?;
    Ok(found.into_values().next())
}

/// Adds to `found` (keyed by id) every object of `objects` whose id was asked
/// for in `ids`.
fn by_id<T>(
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
fn by_token<T>(
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

#[cfg(test)]
mod tests {
    use aws_sdk_ec2::types::{Instance, InstanceState, InstanceStateName, KeyPairInfo};

    use super::*;

    fn tag(key: &str, value: &str) -> Tag {
        Tag::builder().key(key).value(value).build()
    }

    fn instance(id: &str, state: InstanceStateName, deployment: Option<&str>) -> Instance {
        let mut builder = Instance::builder()
            .instance_id(id)
            .state(InstanceState::builder().name(state).build())
            .launch_time(DateTime::from_secs(1_714_564_800))
            .tags(tag("Name", id))
            .tags(tag("team", "ops"));
        if let Some(d) = deployment {
            builder = builder.tags(tag(DEPLOYMENT_TAG, d));
        }
        builder.build()
    }

    /// What a server that ignores the tag filter (or reads `?` as a
    /// wildcard) would return: only the objects of the deployment asked
    /// for, and only live ones, are listed.
    #[test]
    fn marked_checks_the_deployment_itself() {
        let instances = [
            instance("i-1", InstanceStateName::Running, Some("d")),
            instance("i-2", InstanceStateName::Running, Some("other")),
            instance("i-3", InstanceStateName::Running, None),
            instance("i-4", InstanceStateName::Terminated, Some("d")),
            instance("i-5", InstanceStateName::ShuttingDown, Some("d")),
            instance("i-6", InstanceStateName::Stopped, Some("d")),
            instance("i-7", InstanceStateName::Running, Some("D")),
        ];
        let found = marked(&instances, "d");
        let ids: Vec<&str> = found.iter().map(|m| m.id.as_str()).collect();
        assert_eq!(ids, ["i-1", "i-6"]);
        assert_eq!(found[0].kind, "instance");
        assert_eq!(
            found[0].marks,
            [
                ("Name".to_owned(), "i-1".to_owned()),
                (DEPLOYMENT_TAG.to_owned(), "d".to_owned()),
            ]
            .into()
        );
        assert_eq!(found[0].created.as_deref(), Some("2024-05-01T12:00:00Z"));
        assert!(marked(&instances, "?").is_empty());
        assert!(marked(&instances, "*").is_empty());
    }

    #[test]
    fn marked_key_pairs_have_a_creation_time_when_reported() {
        let key_pairs = [
            KeyPairInfo::builder()
                .key_name("k")
                .tags(tag(DEPLOYMENT_TAG, "d"))
                .build(),
            KeyPairInfo::builder()
                .key_name("other")
                .create_time(DateTime::from_secs(0))
                .tags(tag(DEPLOYMENT_TAG, "d2"))
                .build(),
        ];
        let found = marked(&key_pairs, "d");
        assert_eq!(found.len(), 1);
        assert_eq!(
            (found[0].kind.as_str(), found[0].id.as_str()),
            ("key_pair", "k")
        );
        assert_eq!(found[0].created, None);
    }
}
