//! Tags: the `tags` attribute, TagSpecifications, and in-place tag changes.

use std::collections::BTreeMap;

use aws_sdk_ec2::types::{ResourceType, Tag, TagSpecification};
use prov_provider::{Attributes, ProviderError};
use serde_json::Value;

use crate::client::Ec2Api;
use crate::error::config_error;
use crate::TOKEN_TAG;

/// Tag keys to values.
pub(crate) type TagMap = BTreeMap<String, String>;

/// The tag naming the deployment an object was made for.
pub(crate) const DEPLOYMENT_TAG: &str = "prov:deployment";

/// Keys starting with this are prov's marks.
const MARK_PREFIX: &str = "prov:";

/// The one tag outside `prov:` that marks report too.
const NAME_TAG: &str = "Name";

/// The desired `tags` attribute as a map; non-string values are written as
/// their JSON text. `prov:token` is never taken from the attribute.
pub(crate) fn desired(attributes: &Attributes, kind: &str) -> Result<TagMap, ProviderError> {
    match attributes.get("tags") {
        None | Some(Value::Null) => Ok(TagMap::new()),
        Some(Value::Object(map)) => Ok(map
            .iter()
            .filter(|(k, _)| k.as_str() != TOKEN_TAG)
            .map(|(k, v)| (k.clone(), value_text(v)))
            .collect()),
        Some(other) => Err(config_error(format!(
            "{kind} attribute `tags` must be a map of strings, not {other}"
        ))),
    }
}

/// The `tags` attribute normalized the way observed tags look (string
/// values, no `prov:token`); anything that is not a map is left alone.
pub(crate) fn normalize_value(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(k, _)| k.as_str() != TOKEN_TAG)
                .map(|(k, v)| (k.clone(), Value::String(value_text(v))))
                .collect(),
        ),
        other => other.clone(),
    }
}

fn value_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The tags EC2 reports, as a map including `prov:token`.
fn from_ec2(tags: &[Tag]) -> TagMap {
    tags.iter()
        .filter_map(|t| Some((t.key()?.to_owned(), t.value().unwrap_or("").to_owned())))
        .collect()
}

/// The value of the `prov:token` tag, if any.
pub(crate) fn token_of(tags: &[Tag]) -> Option<&str> {
    tags.iter()
        .find(|t| t.key() == Some(TOKEN_TAG))
        .and_then(Tag::value)
}

/// The value of the `prov:deployment` tag, if any.
pub(crate) fn deployment_of(tags: &[Tag]) -> Option<&str> {
    tags.iter()
        .find(|t| t.key() == Some(DEPLOYMENT_TAG))
        .and_then(Tag::value)
}

/// prov's marks among `tags`: every tag whose key starts with `prov:`
/// (`prov:token` included), plus `Name`.
pub(crate) fn marks(tags: &[Tag]) -> TagMap {
    from_ec2(tags)
        .into_iter()
        .filter(|(k, _)| k.starts_with(MARK_PREFIX) || k == NAME_TAG)
        .collect()
}

/// The observed `tags` attribute: every tag but `prov:token`.
pub(crate) fn observed(tags: &[Tag]) -> Value {
    Value::Object(
        from_ec2(tags)
            .into_iter()
            .filter(|(k, _)| k != TOKEN_TAG)
            .map(|(k, v)| (k, Value::String(v)))
            .collect(),
    )
}

/// A TagSpecification with `tags` plus, when given, the `prov:token` tag.
pub(crate) fn specification(
    resource_type: ResourceType,
    tags: &TagMap,
    token: Option<&str>,
) -> TagSpecification {
    let mut all: Vec<Tag> = tags
        .iter()
        .filter(|(k, _)| k.as_str() != TOKEN_TAG)
        .map(|(k, v)| Tag::builder().key(k).value(v).build())
        .collect();
    if let Some(token) = token {
        all.push(Tag::builder().key(TOKEN_TAG).value(token).build());
    }
    TagSpecification::builder()
        .resource_type(resource_type)
        .set_tags(Some(all))
        .build()
}

/// Brings the tags of `resource_id`, now `current`, to the `tags`
/// attribute of `attributes` (of a `kind`).
pub(crate) async fn update(
    api: &Ec2Api,
    kind: &str,
    resource_id: &str,
    current: &[Tag],
    attributes: &Attributes,
) -> Result<(), ProviderError> {
    let desired = desired(attributes, kind)?;
    sync(api, resource_id, &from_ec2(current), &desired).await
}

/// Brings the tags of `resource_id` from `current` to `desired` with at most
/// one CreateTags and one DeleteTags call. `prov:token` is left alone.
async fn sync(
    api: &Ec2Api,
    resource_id: &str,
    current: &TagMap,
    desired: &TagMap,
) -> Result<(), ProviderError> {
    let to_set: Vec<Tag> = desired
        .iter()
        .filter(|(k, v)| k.as_str() != TOKEN_TAG && current.get(*k) != Some(*v))
        .map(|(k, v)| Tag::builder().key(k).value(v).build())
        .collect();
    let to_delete: Vec<Tag> = current
        .keys()
        .filter(|k| k.as_str() != TOKEN_TAG && !desired.contains_key(*k))
        .map(|k| Tag::builder().key(k).build())
        .collect();
    if !to_delete.is_empty() {
        api.call(
            "DeleteTags",
            api.client()
                .delete_tags()
                .resources(resource_id)
                .set_tags(Some(to_delete))
                .send(),
        )
        .await?;
    }
    if !to_set.is_empty() {
        api.call(
            "CreateTags",
            api.client()
                .create_tags()
                .resources(resource_id)
                .set_tags(Some(to_set))
                .send(),
        )
        .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn observed_hides_the_token() {
        let tags = [
            Tag::builder().key("Name").value("web").build(),
            Tag::builder().key(TOKEN_TAG).value("t-1").build(),
        ];
        assert_eq!(observed(&tags), json!({"Name": "web"}));
        assert_eq!(token_of(&tags), Some("t-1"));
    }

    #[test]
    fn marks_are_prov_tags_and_name() {
        let tags = [
            Tag::builder().key("Name").value("web").build(),
            Tag::builder().key("team").value("ops").build(),
            Tag::builder().key("prov").value("not a mark").build(),
            Tag::builder().key(DEPLOYMENT_TAG).value("d").build(),
            Tag::builder().key("prov:env").value("e1").build(),
            Tag::builder().key(TOKEN_TAG).value("t-1").build(),
        ];
        let marks = marks(&tags);
        assert_eq!(
            marks.keys().map(String::as_str).collect::<Vec<_>>(),
            ["Name", DEPLOYMENT_TAG, "prov:env", TOKEN_TAG]
        );
        assert_eq!(deployment_of(&tags), Some("d"));
        assert_eq!(deployment_of(&tags[..3]), None);
    }

    #[test]
    fn desired_stringifies() {
        let attrs: Attributes = [("tags".to_owned(), json!({"n": 3, "s": "x"}))].into();
        let map = desired(&attrs, "instance").unwrap();
        assert_eq!(map["n"], "3");
        assert_eq!(normalize_value(&attrs["tags"]), json!({"n": "3", "s": "x"}));
    }
}
