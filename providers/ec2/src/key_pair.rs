//! Kind `key_pair`: an imported OpenSSH public key. Its id is the key name.

use aws_sdk_ec2::primitives::{Blob, DateTime};
use aws_sdk_ec2::types::{Filter, KeyPairInfo, ResourceType, Tag};
use prov_provider::{Attributes, CreateRequest, Observed, ProviderError, UpdateRequest};
use serde_json::Value;

use crate::attrs::{req_str, str_or_null, with_unreported};
use crate::client::Ec2Api;
pub(crate) use crate::kinds::KEY_PAIR as KIND;
use crate::object::{self, Ec2Object};
use crate::tags;
use crate::wait::WaitPolicy;

impl Ec2Object for KeyPairInfo {
    const KIND: &'static str = KIND;
    const ID_FILTER: &'static str = "key-name";

    async fn describe(api: &Ec2Api, filters: Vec<Filter>) -> Result<Vec<Self>, ProviderError> {
        let out = api
            .call(
                "DescribeKeyPairs",
                api.client()
                    .describe_key_pairs()
                    .set_filters(Some(filters))
                    .send(),
            )
            .await?;
        Ok(out.key_pairs().to_vec())
    }

    fn id(&self) -> Option<&str> {
        self.key_name()
    }

    fn tags(&self) -> &[Tag] {
        self.tags()
    }

    fn created(&self) -> Option<&DateTime> {
        self.create_time()
    }

    fn observe(&self) -> Option<Observed> {
        let name = self.key_name()?;
        let attributes: Attributes = [
            ("key_name".to_owned(), Value::String(name.to_owned())),
            (
                "fingerprint".to_owned(),
                str_or_null(self.key_fingerprint()),
            ),
            ("key_pair_id".to_owned(), str_or_null(self.key_pair_id())),
            ("tags".to_owned(), tags::observed(self.tags())),
        ]
        .into();
        Some(Observed {
            id: name.to_owned(),
            attributes,
        })
    }
}

/// `observed` with the requested public key, which EC2 does not report.
fn with_public_key(observed: Observed, attributes: &Attributes) -> Observed {
    let key = attributes.get("public_key").cloned();
    with_unreported(observed, "public_key", key)
}

/// Imports the public key, tagged with the request's tags and token.
pub(crate) async fn create(
    api: &Ec2Api,
    wait: &WaitPolicy,
    request: CreateRequest<'_>,
) -> Result<Observed, ProviderError> {
    let attributes = request.attributes;
    let name = req_str(attributes, KIND, "key_name")?;
    let public_key = req_str(attributes, KIND, "public_key")?;
    let tags = tags::desired(attributes, KIND)?;
    let imported = api
        .call(
            "ImportKeyPair",
            api.client()
                .import_key_pair()
                .key_name(name)
                .public_key_material(Blob::new(public_key.as_bytes()))
                .tag_specifications(tags::specification(
                    ResourceType::KeyPair,
                    &tags,
                    Some(request.token),
                ))
                .send(),
        )
        .await;
    match imported {
        Ok(_) => {}
        // Sent again after its answer was lost: the key pair is this
        // request's own if it carries the token.
        Err(failure)
            if failure.has_code("InvalidKeyPair.Duplicate")
                && object::made_with::<KeyPairInfo>(api, request.token)
                    .await?
                    .is_some_and(|ours| ours.id == name) => {}
        Err(failure) => return Err(failure.into()),
    }
    let made =
        object::visible::<KeyPairInfo>(api, wait, name, &format!("key pair `{name}`")).await?;
    Ok(with_public_key(made, attributes))
}

/// Changes the tags of a key pair (the only in-place attribute).
pub(crate) async fn update(
    api: &Ec2Api,
    request: UpdateRequest<'_>,
) -> Result<Observed, ProviderError> {
    let current = object::existing::<KeyPairInfo>(api, request.id).await?;
    if request.changes.iter().any(|c| c.name == "tags") {
        let key_pair_id = current.key_pair_id().ok_or_else(|| {
            ProviderError::api("DescribeKeyPairs", "the key pair has no key-pair id")
        })?;
        tags::update(api, KIND, key_pair_id, current.tags(), request.attributes).await?;
    }
    let after = object::observe_existing::<KeyPairInfo>(api, request.id).await?;
    Ok(with_public_key(after, request.attributes))
}

/// Deletes the key pair; a missing one counts as deleted.
pub(crate) async fn delete(api: &Ec2Api, id: &str) -> Result<(), ProviderError> {
    match api
        .call(
            "DeleteKeyPair",
            api.client().delete_key_pair().key_name(id).send(),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(failure) if failure.code_ends_with(".NotFound") => Ok(()),
        Err(failure) => Err(failure.into()),
    }
}
