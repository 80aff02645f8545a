//! What the objects of every kind share: described by filters, 200 values
//! at a time, sorted into the maps `read` and `find_by_token` answer with,
//! looked up one by one, and waited for until EC2 shows them.

use std::collections::BTreeMap;
use std::future::Future;

use aws_sdk_ec2::types::{Filter, Tag};
use prov_provider::{Observed, ProviderError};

use crate::client::{filter, Ec2Api, MAX_FILTER_VALUES};
use crate::wait::WaitPolicy;
use crate::{tags, TOKEN_TAG};

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

    /// Filters `find_by_token` adds to the token's.
    fn token_filters() -> Vec<Filter> {
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
        filters.extend(T::token_filters());
        let mut objects = T::describe(api, filters).await?;
        objects.retain(T::exists);
        by_token(&mut found, &objects, chunk, T::tags, T::observe);
    }
    Ok(found)
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
