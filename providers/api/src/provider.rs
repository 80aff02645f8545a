//! The trait every provider implements.

use std::collections::BTreeMap;
use std::fmt;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::{
    diff_attributes, Address, AttributeChange, AttributeSchema, Attributes, Desired, ProviderError,
};

/// A real object as the provider sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Observed {
    /// The provider's id for the object (`i-0abc…`, `sg-…`, a key pair name).
    pub id: String,
    /// Its attributes, in the same vocabulary as the desired configuration,
    /// plus computed ones (addresses, state).
    pub attributes: Attributes,
}

/// An object found by the marks prov puts on what it makes (EC2 tags), not
/// through state: what [`Provider::find_marked`] answers with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Marked {
    /// The provider's kind name (`instance`, `key_pair`, `security_group`).
    pub kind: String,
    /// The provider id (what `Provider::delete(kind, id)` takes).
    pub id: String,
    /// Its `prov:*` marks and `Name`: `prov:deployment`, `prov:address`,
    /// `prov:env`, `prov:env-id`, `prov:expires-at`, `prov:owner`, …
    /// (every tag whose key starts with `prov:`, plus `Name`).
    pub marks: BTreeMap<String, String>,
    /// When it was made, RFC 3339 UTC, when the provider knows (EC2:
    /// instance LaunchTime, key pair CreateTime; security groups have none
    /// → `None`).
    pub created: Option<String>,
}

/// Everything a provider needs to create one object.
#[derive(Debug, Clone, Copy)]
pub struct CreateRequest<'a> {
    /// The resource's address (providers tag objects with it).
    pub address: &'a Address,
    /// The provider's kind name.
    pub kind: &'a str,
    /// Idempotency token, recorded in state before this call. The provider
    /// passes it to the API (EC2 ClientToken) and makes the object findable by
    /// it, so that [`Provider::find_by_token`] can settle an interrupted create.
    pub token: &'a str,
    /// Desired attributes with every reference resolved.
    pub attributes: &'a Attributes,
}

/// Everything a provider needs to change one object in place.
#[derive(Debug, Clone, Copy)]
pub struct UpdateRequest<'a> {
    /// The resource's address.
    pub address: &'a Address,
    /// The provider's kind name.
    pub kind: &'a str,
    /// The object's provider id.
    pub id: &'a str,
    /// Desired attributes with every reference resolved.
    pub attributes: &'a Attributes,
    /// The attributes that differ, as the diff computed them.
    pub changes: &'a [AttributeChange],
}

/// One infrastructure target: EC2, libvirt, VirtualBox, local containers, …
///
/// `schema` and `diff` are pure; everything else does I/O. Waiting for objects
/// to settle (eventual consistency, instances starting) stays inside the
/// provider: `create` and `update` return when the object is usable.
#[async_trait]
pub trait Provider: Send + Sync + fmt::Debug {
    /// The provider's name as the spec writes it (`ec2`).
    fn name(&self) -> &str;

    /// The attributes of `kind` and how changes to each are applied.
    ///
    /// # Errors
    /// [`ProviderError::UnknownKind`] for a kind this provider does not manage.
    fn schema(&self, kind: &str) -> Result<&'static [AttributeSchema], ProviderError>;

    /// Brings desired attributes into the form `read` reports them in
    /// (defaults filled in, values chosen at create kept), so that they
    /// compare equal when nothing is to change. Pure; the default does
    /// nothing.
    fn normalize_desired(&self, _kind: &str, _desired: &mut Attributes, _current: &Attributes) {}

    /// The changes needed to bring `current` to `desired`, after
    /// [`Provider::normalize_desired`]. Pure.
    ///
    /// # Errors
    /// [`ProviderError::UnknownKind`] for a kind this provider does not manage.
    fn diff(
        &self,
        kind: &str,
        desired: &Desired,
        current: &Attributes,
    ) -> Result<Vec<AttributeChange>, ProviderError> {
        let schema = self.schema(kind)?;
        let mut desired = desired.clone();
        self.normalize_desired(kind, &mut desired.attributes, current);
        Ok(diff_attributes(schema, &desired, current))
    }

    /// Side effects of an in-place update a reviewer should know about, such as
    /// "the instance is stopped and started". Pure.
    fn update_effects(&self, _kind: &str, _changes: &[AttributeChange]) -> Vec<String> {
        Vec::new()
    }

    /// Reads many objects of one kind at once. Ids that no longer exist are
    /// absent from the result (that is drift, not an error).
    ///
    /// # Errors
    /// When the API cannot be reached or refuses the call.
    async fn read(
        &self,
        kind: &str,
        ids: &[String],
    ) -> Result<BTreeMap<String, Observed>, ProviderError>;

    /// Finds objects created with the given idempotency tokens, keyed by token.
    ///
    /// # Errors
    /// When the API cannot be reached or refuses the call.
    async fn find_by_token(
        &self,
        kind: &str,
        tokens: &[String],
    ) -> Result<BTreeMap<String, Observed>, ProviderError>;

    /// The live objects marked as made for `deployment` (`prov:deployment` =
    /// `deployment`), whatever state says; `None` when this provider cannot
    /// search by marks. Objects being deleted or gone (terminated
    /// instances) are not listed. Sorted by (kind, id), so output is stable.
    ///
    /// # Errors
    /// When the API cannot be reached or refuses the call.
    async fn find_marked(&self, deployment: &str) -> Result<Option<Vec<Marked>>, ProviderError> {
        let _ = deployment;
        Ok(None)
    }

    /// Creates one object and waits until it is usable.
    ///
    /// # Errors
    /// When the API refuses or the object never becomes usable.
    async fn create(&self, request: CreateRequest<'_>) -> Result<Observed, ProviderError>;

    /// Changes one object in place and waits until it is usable again.
    ///
    /// # Errors
    /// When the API refuses or the object never becomes usable again.
    async fn update(&self, request: UpdateRequest<'_>) -> Result<Observed, ProviderError>;

    /// Destroys one object and waits until it is gone. Deleting an object that
    /// is already gone succeeds.
    ///
    /// # Errors
    /// When the API refuses or the object does not go away.
    async fn delete(&self, kind: &str, id: &str) -> Result<(), ProviderError>;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake::FakeProvider;

    #[tokio::test]
    async fn providers_without_marks_answer_none() {
        let provider = FakeProvider::new();
        assert_eq!(provider.find_marked("d").await.unwrap(), None);
    }

    #[test]
    fn marked_round_trips_through_json() {
        let marked = Marked {
            kind: "instance".to_owned(),
            id: "i-1".to_owned(),
            marks: [("prov:deployment".to_owned(), "d".to_owned())].into(),
            created: None,
        };
        let text = serde_json::to_string(&marked).unwrap();
        assert_eq!(
            text,
            r#"{"kind":"instance","id":"i-1","marks":{"prov:deployment":"d"},"created":null}"#
        );
        assert_eq!(serde_json::from_str::<Marked>(&text).unwrap(), marked);
    }
}
