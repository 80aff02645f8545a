//! Kind `key_pair`: an imported OpenSSH public key. Its id is the key name.

use std::collections::BTreeMap;

use aws_sdk_ec2::primitives::Blob;
use aws_sdk_ec2::types::{Filter, KeyPairInfo, ResourceType};
use prov_provider::{Attributes, CreateRequest, Observed, ProviderError, UpdateRequest};
use serde_json::Value;

use crate::attrs::{req_str, str_or_null};
use crate::client::{filter, Ec2Api, MAX_FILTER_VALUES};
use crate::collect;
pub(crate) use crate::kinds::KEY_PAIR as KIND;
use crate::tags;
use crate::wait::WaitPolicy;
use crate::TOKEN_TAG;

fn observe(info: &KeyPairInfo) -> Option<Observed> {
    let name = info.key_name()?;
    let attributes: Attributes = [
        ("key_name".to_owned(), Value::String(name.to_owned())),
        (
            "fingerprint".to_owned(),
            str_or_null(info.key_fingerprint()),
        ),
        ("key_pair_id".to_owned(), str_or_null(info.key_pair_id())),
        ("tags".to_owned(), tags::observed(info.tags())),
    ]
    .into();
    Some(Observed {
        id: name.to_owned(),
        attributes,
    })
}

async fn describe(api: &Ec2Api, filter: Filter) -> Result<Vec<KeyPairInfo>, ProviderError> {
    let out = api
        .call(
            "DescribeKeyPairs",
            api.client().describe_key_pairs().filters(filter).send(),
        )
        .await?;
    Ok(out.key_pairs().to_vec())
}

async fn describe_one(api: &Ec2Api, name: &str) -> Result<Option<KeyPairInfo>, ProviderError> {
    Ok(describe(api, filter("key-name", [name]))
        .await?
        .into_iter()
        .find(|k| k.key_name() == Some(name)))
}

/// Reads key pairs by name, one call per 200 names.
pub(crate) async fn read(
    api: &Ec2Api,
    ids: &[String],
) -> Result<BTreeMap<String, Observed>, ProviderError> {
    let mut found = BTreeMap::new();
    for chunk in ids.chunks(MAX_FILTER_VALUES) {
        let infos = describe(api, filter("key-name", chunk.iter().cloned())).await?;
        collect::by_id(&mut found, &infos, chunk, observe);
    }
    Ok(found)
}

/// Finds key pairs by their `prov:token` tag.
pub(crate) async fn find_by_token(
    api: &Ec2Api,
    tokens: &[String],
) -> Result<BTreeMap<String, Observed>, ProviderError> {
    let mut found = BTreeMap::new();
    for chunk in tokens.chunks(MAX_FILTER_VALUES) {
        let name = format!("tag:{TOKEN_TAG}");
        let infos = describe(api, filter(&name, chunk.iter().cloned())).await?;
        collect::by_token(&mut found, &infos, chunk, KeyPairInfo::tags, observe);
    }
    Ok(found)
}

fn with_public_key(mut observed: Observed, attributes: &Attributes) -> Observed {
    if let Some(key) = attributes.get("public_key") {
        observed
            .attributes
            .insert("public_key".to_owned(), key.clone());
    }
    observed
}

async fn settled(api: &Ec2Api, wait: &WaitPolicy, name: &str) -> Result<Observed, ProviderError> {
    wait.until(&format!("key pair `{name}` to be visible"), || async move {
        Ok(describe_one(api, name).await?.as_ref().and_then(observe))
    })
    .await
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
    api.call(
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
    .await?;
    Ok(with_public_key(settled(api, wait, name).await?, attributes))
}

/// Changes the tags of a key pair (the only in-place attribute).
pub(crate) async fn update(
    api: &Ec2Api,
    request: UpdateRequest<'_>,
) -> Result<Observed, ProviderError> {
    let not_found = || ProviderError::NotFound {
        kind: KIND.to_owned(),
        id: request.id.to_owned(),
    };
    let current = describe_one(api, request.id).await?.ok_or_else(not_found)?;
    if request.changes.iter().any(|c| c.name == "tags") {
        let key_pair_id = current.key_pair_id().ok_or_else(|| {
            ProviderError::api("DescribeKeyPairs", "the key pair has no key-pair id")
        })?;
        let desired = tags::desired(request.attributes, KIND)?;
        tags::sync(api, key_pair_id, &tags::from_ec2(current.tags()), &desired).await?;
    }
    let after = describe_one(api, request.id)
        .await?
        .as_ref()
        .and_then(observe)
        .ok_or_else(not_found)?;
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
