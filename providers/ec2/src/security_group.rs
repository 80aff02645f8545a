//! Kind `security_group`: a group with IPv4 ingress rules. Its id is `sg-…`.

use std::time::Duration;

use aws_sdk_ec2::types::{Filter, ResourceType, SecurityGroup, Tag};
use prov_provider::{Attributes, CreateRequest, Observed, ProviderError, UpdateRequest};
use serde_json::Value;

use crate::attrs::{opt_str, req_str, str_or_null};
use crate::client::{paginate, Ec2Api};
use crate::error::config_error;
pub(crate) use crate::kinds::{DEFAULT_DESCRIPTION, SECURITY_GROUP as KIND};
use crate::object::{self, Ec2Object};
use crate::wait::WaitPolicy;
use crate::{ingress, tags};

/// How long delete retries while instances still hold the group.
pub(crate) const DEPENDENCY_WAIT: WaitPolicy = WaitPolicy {
    timeout: Duration::from_secs(60),
    interval: Duration::from_secs(2),
};

impl Ec2Object for SecurityGroup {
    const KIND: &'static str = KIND;
    const ID_FILTER: &'static str = "group-id";

    async fn describe(api: &Ec2Api, filters: Vec<Filter>) -> Result<Vec<Self>, ProviderError> {
        paginate(|next_token| async {
            let out = api
                .call(
                    "DescribeSecurityGroups",
                    api.client()
                        .describe_security_groups()
                        .set_filters(Some(filters.clone()))
                        .set_next_token(next_token)
                        .send(),
                )
                .await?;
            let next = out.next_token().map(str::to_owned);
            Ok((out.security_groups().to_vec(), next))
        })
        .await
    }

    fn id(&self) -> Option<&str> {
        self.group_id()
    }

    fn tags(&self) -> &[Tag] {
        self.tags()
    }

    fn observe(&self) -> Option<Observed> {
        let id = self.group_id()?;
        let attributes: Attributes = [
            ("group_name".to_owned(), str_or_null(self.group_name())),
            ("description".to_owned(), str_or_null(self.description())),
            ("vpc_id".to_owned(), str_or_null(self.vpc_id())),
            (
                "ingress".to_owned(),
                ingress::to_value(&ingress::from_permissions(self.ip_permissions())),
            ),
            ("tags".to_owned(), tags::observed(self.tags())),
            ("owner_id".to_owned(), str_or_null(self.owner_id())),
        ]
        .into();
        Some(Observed {
            id: id.to_owned(),
            attributes,
        })
    }
}

fn desired_rules(attributes: &Attributes) -> Result<ingress::RuleSet, ProviderError> {
    ingress::parse(attributes.get("ingress"))
        .map_err(|e| config_error(format!("security_group: {e}")))
}

/// Which way [`change_rules`] changes a group's ingress.
#[derive(Debug, Clone, Copy)]
enum RuleChange {
    Authorize,
    Revoke,
}

impl RuleChange {
    fn operation(self) -> &'static str {
        match self {
            Self::Authorize => "AuthorizeSecurityGroupIngress",
            Self::Revoke => "RevokeSecurityGroupIngress",
        }
    }

    /// The code AWS refuses a request with when some of its rules are (for
    /// authorize) or are not (for revoke) there already.
    fn done_already(self) -> &'static str {
        match self {
            Self::Authorize => "InvalidPermission.Duplicate",
            Self::Revoke => "InvalidPermission.NotFound",
        }
    }

    /// Of `rules`, what is still to do with the group's `present` rules.
    fn left(self, rules: &ingress::RuleSet, present: &ingress::RuleSet) -> ingress::RuleSet {
        match self {
            Self::Authorize => ingress::minus(rules, present),
            Self::Revoke => ingress::minus(rules, &ingress::minus(rules, present)),
        }
    }
}

async fn authorize(api: &Ec2Api, id: &str, rules: &ingress::RuleSet) -> Result<(), ProviderError> {
    change_rules(api, id, rules, RuleChange::Authorize).await
}

async fn revoke(api: &Ec2Api, id: &str, rules: &ingress::RuleSet) -> Result<(), ProviderError> {
    change_rules(api, id, rules, RuleChange::Revoke).await
}

/// Authorizes or revokes `rules` on group `id`.
///
/// The SDK sends a request again when its answer is lost (a connection
/// closed, a timeout), and AWS may have applied the first one: the second
/// is then refused as a whole (`InvalidPermission.Duplicate` or
/// `.NotFound`) and changes nothing. Then the group is read and what is
/// still to do is sent.
async fn change_rules(
    api: &Ec2Api,
    id: &str,
    rules: &ingress::RuleSet,
    change: RuleChange,
) -> Result<(), ProviderError> {
    let mut rules = rules.clone();
    // Bounded: each refusal means a rule was done meanwhile.
    for _ in 0..3 {
        if rules.is_empty() {
            return Ok(());
        }
        let permissions = Some(ingress::to_permissions(&rules));
        let sent = match change {
            RuleChange::Authorize => {
                let request = api
                    .client()
                    .authorize_security_group_ingress()
                    .group_id(id)
                    .set_ip_permissions(permissions);
                api.call(change.operation(), request.send()).await.map(drop)
            }
            RuleChange::Revoke => {
                let request = api
                    .client()
                    .revoke_security_group_ingress()
                    .group_id(id)
                    .set_ip_permissions(permissions);
                api.call(change.operation(), request.send()).await.map(drop)
            }
        };
        match sent {
            Ok(()) => return Ok(()),
            Err(failure) if failure.has_code(change.done_already()) => {
                tracing::debug!(
                    id,
                    ?change,
                    "some rules were done already; sending the rest"
                );
                let current = object::existing::<SecurityGroup>(api, id).await?;
                let present = ingress::from_permissions(current.ip_permissions());
                rules = change.left(&rules, &present);
            }
            Err(failure) => return Err(failure.into()),
        }
    }
    Err(ProviderError::api(
        change.operation(),
        format!(
            "security group {id}: AWS keeps refusing rules that the group does not show as done"
        ),
    ))
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
        .await;
    let id = match out {
        Ok(out) => out
            .group_id()
            .ok_or_else(|| {
                ProviderError::api("CreateSecurityGroup", "the response named no group id")
            })?
            .to_owned(),
        // Sent again after its answer was lost: the group is this request's
        // own if it carries the token.
        Err(failure) if failure.has_code("InvalidGroup.Duplicate") => {
            match object::made_with::<SecurityGroup>(api, request.token).await? {
                Some(ours) => ours.id,
                None => return Err(failure.into()),
            }
        }
        Err(failure) => return Err(failure.into()),
    };
    authorize(api, &id, &rules).await?;
    object::visible::<SecurityGroup>(api, wait, &id, &format!("security group {id}")).await
}

/// Changes ingress rules (revoking what is gone, authorizing what is new)
/// and tags.
pub(crate) async fn update(
    api: &Ec2Api,
    request: UpdateRequest<'_>,
) -> Result<Observed, ProviderError> {
    let id = request.id;
    let current = object::existing::<SecurityGroup>(api, id).await?;
    let changed = |name: &str| request.changes.iter().any(|c| c.name == name);
    if changed("ingress") {
        let desired = desired_rules(request.attributes)?;
        let present = ingress::from_permissions(current.ip_permissions());
        revoke(api, id, &ingress::minus(&present, &desired)).await?;
        authorize(api, id, &ingress::minus(&desired, &present)).await?;
    }
    if changed("tags") {
        tags::update(api, KIND, id, current.tags(), request.attributes).await?;
    }
    object::observe_existing::<SecurityGroup>(api, id).await
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
    prov_provider::set_default(
        desired,
        "description",
        Value::String(DEFAULT_DESCRIPTION.to_owned()),
    );
    prov_provider::keep_current(desired, current, &["vpc_id"]);
}
