//! Kind `security_group`: a group with IPv4 ingress rules. Its id is `sg-…`.

use std::collections::BTreeMap;
use std::time::Duration;

use aws_sdk_ec2::types::{Filter, ResourceType, SecurityGroup};
use prov_provider::{Attributes, CreateRequest, Observed, ProviderError, UpdateRequest};
use serde_json::Value;

use crate::attrs::{opt_str, req_str, str_or_null};
use crate::client::{filter, Ec2Api, MAX_FILTER_VALUES};
use crate::collect;
use crate::error::config_error;
pub(crate) use crate::kinds::{DEFAULT_DESCRIPTION, SECURITY_GROUP as KIND};
use crate::wait::WaitPolicy;
use crate::{ingress, tags, TOKEN_TAG};

/// How long delete retries while instances still hold the group.
pub(crate) const DEPENDENCY_WAIT: WaitPolicy = WaitPolicy {
    timeout: Duration::from_secs(60),
    interval: Duration::from_secs(2),
};

fn observe(group: &SecurityGroup) -> Option<Observed> {
    let id = group.group_id()?;
    let attributes: Attributes = [
        ("group_name".to_owned(), str_or_null(group.group_name())),
        ("description".to_owned(), str_or_null(group.description())),
        ("vpc_id".to_owned(), str_or_null(group.vpc_id())),
        (
            "ingress".to_owned(),
            ingress::to_value(&ingress::from_permissions(group.ip_permissions())),
        ),
        ("tags".to_owned(), tags::observed(group.tags())),
        ("owner_id".to_owned(), str_or_null(group.owner_id())),
    ]
    .into();
    Some(Observed {
        id: id.to_owned(),
        attributes,
    })
}

async fn describe(api: &Ec2Api, filter: Filter) -> Result<Vec<SecurityGroup>, ProviderError> {
    let mut groups = Vec::new();
    let mut next_token: Option<String> = None;
    loop {
        let out = api
            .call(
                "DescribeSecurityGroups",
                api.client()
                    .describe_security_groups()
                    .filters(filter.clone())
                    .set_next_token(next_token.take())
                    .send(),
            )
            .await?;
        groups.extend(out.security_groups().iter().cloned());
        match out.next_token() {
            Some(t) if !t.is_empty() => next_token = Some(t.to_owned()),
            _ => return Ok(groups),
        }
    }
}

async fn describe_one(api: &Ec2Api, id: &str) -> Result<Option<SecurityGroup>, ProviderError> {
    Ok(describe(api, filter("group-id", [id]))
        .await?
        .into_iter()
        .find(|g| g.group_id() == Some(id)))
}

/// Reads groups by id, one call per 200 ids.
pub(crate) async fn read(
    api: &Ec2Api,
    ids: &[String],
) -> Result<BTreeMap<String, Observed>, ProviderError> {
    let mut found = BTreeMap::new();
    for chunk in ids.chunks(MAX_FILTER_VALUES) {
        let groups = describe(api, filter("group-id", chunk.iter().cloned())).await?;
        collect::by_id(&mut found, &groups, chunk, observe);
    }
    Ok(found)
}

/// Finds groups by their `prov:token` tag.
pub(crate) async fn find_by_token(
    api: &Ec2Api,
    tokens: &[String],
) -> Result<BTreeMap<String, Observed>, ProviderError> {
    let mut found = BTreeMap::new();
    for chunk in tokens.chunks(MAX_FILTER_VALUES) {
        let name = format!("tag:{TOKEN_TAG}");
        let groups = describe(api, filter(&name, chunk.iter().cloned())).await?;
        collect::by_token(&mut found, &groups, chunk, SecurityGroup::tags, observe);
    }
    Ok(found)
}

fn desired_rules(attributes: &Attributes) -> Result<ingress::RuleSet, ProviderError> {
    ingress::parse(attributes.get("ingress"))
        .map_err(|e| config_error(format!("security_group: {e}")))
}

async fn authorize(api: &Ec2Api, id: &str, rules: &ingress::RuleSet) -> Result<(), ProviderError> {
    if rules.is_empty() {
        return Ok(());
    }
    api.call(
        "AuthorizeSecurityGroupIngress",
        api.client()
            .authorize_security_group_ingress()
            .group_id(id)
            .set_ip_permissions(Some(ingress::to_permissions(rules)))
            .send(),
    )
    .await?;
    Ok(())
}

async fn revoke(api: &Ec2Api, id: &str, rules: &ingress::RuleSet) -> Result<(), ProviderError> {
    if rules.is_empty() {
        return Ok(());
    }
    api.call(
        "RevokeSecurityGroupIngress",
        api.client()
            .revoke_security_group_ingress()
            .group_id(id)
            .set_ip_permissions(Some(ingress::to_permissions(rules)))
            .send(),
    )
    .await?;
    Ok(())
}

async fn settled(api: &Ec2Api, wait: &WaitPolicy, id: &str) -> Result<Observed, ProviderError> {
    wait.until(
        &format!("security group {id} to be visible"),
        || async move { Ok(describe_one(api, id).await?.as_ref().and_then(observe)) },
    )
    .await
}

/// Creates the group, tagged with the request's tags and token, then
/// authorizes its ingress rules.
pub(crate) async fn create(
    api: &Ec2Api,
    wait: &WaitPolicy,
    request: CreateRequest<'_>,
) -> Result<Observed, ProviderError> {
    let attributes = request.attributes;
    let name = req_str(attributes, KIND, "group_name")?;
    let description = opt_str(attributes, KIND, "description")?.unwrap_or(DEFAULT_DESCRIPTION);
    let vpc_id = opt_str(attributes, KIND, "vpc_id")?;
    let rules = desired_rules(attributes)?;
    let tags = tags::desired(attributes, KIND)?;
    let out = api
        .call(
            "CreateSecurityGroup",
            api.client()
                .create_security_group()
                .group_name(name)
                .description(description)
                .set_vpc_id(vpc_id.map(str::to_owned))
                .tag_specifications(tags::specification(
                    ResourceType::SecurityGroup,
                    &tags,
                    Some(request.token),
                ))
                .send(),
        )
        .await?;
    let id = out.group_id().ok_or_else(|| {
        ProviderError::api("CreateSecurityGroup", "the response named no group id")
    })?;
    authorize(api, id, &rules).await?;
    settled(api, wait, id).await
}

/// Changes ingress rules (revoking what is gone, authorizing what is new)
/// and tags.
pub(crate) async fn update(
    api: &Ec2Api,
    request: UpdateRequest<'_>,
) -> Result<Observed, ProviderError> {
    let id = request.id;
    let not_found = || ProviderError::NotFound {
        kind: KIND.to_owned(),
        id: id.to_owned(),
    };
    let current = describe_one(api, id).await?.ok_or_else(not_found)?;
    let changed = |name: &str| request.changes.iter().any(|c| c.name == name);
    if changed("ingress") {
        let desired = desired_rules(request.attributes)?;
        let present = ingress::from_permissions(current.ip_permissions());
        revoke(api, id, &ingress::minus(&present, &desired)).await?;
        authorize(api, id, &ingress::minus(&desired, &present)).await?;
    }
    if changed("tags") {
        let desired = tags::desired(request.attributes, KIND)?;
        tags::sync(api, id, &tags::from_ec2(current.tags()), &desired).await?;
    }
    describe_one(api, id)
        .await?
        .as_ref()
        .and_then(observe)
        .ok_or_else(not_found)
}

/// Deletes the group, retrying while EC2 reports a dependency (instances
/// still terminating); a missing group counts as deleted.
pub(crate) async fn delete(api: &Ec2Api, id: &str) -> Result<(), ProviderError> {
    let what = format!("security group {id} to be free of dependent objects");
    DEPENDENCY_WAIT
        .until(&what, || async move {
            match api
                .call(
                    "DeleteSecurityGroup",
                    api.client().delete_security_group().group_id(id).send(),
                )
                .await
            {
                Ok(_) => Ok(Some(())),
                Err(f) if f.code_ends_with(".NotFound") => Ok(Some(())),
                Err(f) if f.has_code("DependencyViolation") => {
                    tracing::debug!(group = id, "security group still in use; retrying");
                    Ok(None)
                }
                Err(f) => Err(f.into()),
            }
        })
        .await
}

/// Fills in what the spec may leave out (description, default VPC) and puts
/// `ingress` in normal form, so that an unchanged group diffs empty.
pub(crate) fn normalize_desired(desired: &mut Attributes, current: &Attributes) {
    if let Some(rules) = desired.get("ingress").map(ingress::normalize_value) {
        desired.insert("ingress".to_owned(), rules);
    }
    if desired.get("description").is_none_or(Value::is_null) {
        desired.insert(
            "description".to_owned(),
            Value::String(DEFAULT_DESCRIPTION.to_owned()),
        );
    }
    if desired.get("vpc_id").is_none_or(Value::is_null) {
        if let Some(vpc) = current.get("vpc_id") {
            desired.insert("vpc_id".to_owned(), vpc.clone());
        }
    }
}
