//! Kind `instance`: one EC2 instance. Its id is `i-…`.

use aws_sdk_ec2::primitives::{Blob, DateTime};
use aws_sdk_ec2::types::{
    AttributeValue, Filter, Instance, InstanceType, ResourceType, SecureBlobAttributeValue, Tag,
};
use aws_smithy_types::base64;
use prov_provider::{
    sha256_hex, AttributeChange, Attributes, CreateRequest, Observed, ProviderError, UpdateRequest,
};
use serde_json::Value;

use crate::attrs::{opt_str, req_str, str_array, str_or_null, str_set, with_unreported};
use crate::client::{filter, paginate, Ec2Api};
use crate::error::config_error;
pub(crate) use crate::kinds::INSTANCE as KIND;
use crate::object::{self, Ec2Object};
use crate::tags;
use crate::wait::WaitPolicy;

/// What a reviewer is told about an in-place change that restarts the instance.
pub(crate) const RESTART_EFFECT: &str = "the instance is stopped and started";

/// What a reviewer is told when a stopped instance is to run again.
pub(crate) const START_EFFECT: &str = "the instance is started";

/// Attributes whose in-place change needs the instance stopped.
const NEEDS_RESTART: &[&str] = &["instance_type", "user_data_sha256"];

/// States in which an instance no longer counts as existing.
const GONE: &[&str] = &["shutting-down", "terminated"];

/// States in which an instance still counts as existing.
const LIVE: &[&str] = &["pending", "running", "stopping", "stopped"];

fn state(instance: &Instance) -> &str {
    instance
        .state()
        .and_then(|s| s.name())
        .map_or("unknown", |n| n.as_str())
}

/// Starts a stopped instance and observes it once it runs (`digest` is the
/// user data's, which EC2 does not report).
async fn start(
    api: &Ec2Api,
    wait: &WaitPolicy,
    id: &str,
    digest: Value,
) -> Result<Observed, ProviderError> {
    api.call(
        "StartInstances",
        api.client().start_instances().instance_ids(id).send(),
    )
    .await?;
    let instance = wait_for(api, wait, id, "running").await?;
    let observed = instance
        .observe()
        .ok_or_else(|| ProviderError::not_found(KIND, id))?;
    Ok(with_digest(observed, digest))
}

impl Ec2Object for Instance {
    const KIND: &'static str = KIND;
    const ID_FILTER: &'static str = "instance-id";

    /// Sorted by id, so that `find_by_token` picks the same instance of
    /// several every time.
    async fn describe(api: &Ec2Api, filters: Vec<Filter>) -> Result<Vec<Self>, ProviderError> {
        let mut instances = paginate(|next_token| async {
            let out = api
                .call(
                    "DescribeInstances",
                    api.client()
                        .describe_instances()
                        .set_filters(Some(filters.clone()))
                        .max_results(1000)
                        .set_next_token(next_token)
                        .send(),
                )
                .await?;
            let instances = out
                .reservations()
                .iter()
                .flat_map(|r| r.instances().iter().cloned())
                .collect();
            Ok((instances, out.next_token().map(str::to_owned)))
        })
        .await?;
        instances.sort_by(|a, b| a.instance_id().cmp(&b.instance_id()));
        Ok(instances)
    }

    fn id(&self) -> Option<&str> {
        self.instance_id()
    }

    fn tags(&self) -> &[Tag] {
        self.tags()
    }

    fn observe(&self) -> Option<Observed> {
        let id = self.instance_id()?;
        let groups = self.security_groups().iter().filter_map(|g| g.group_id());
        let attributes: Attributes = [
            ("ami".to_owned(), str_or_null(self.image_id())),
            ("subnet_id".to_owned(), str_or_null(self.subnet_id())),
            ("key_name".to_owned(), str_or_null(self.key_name())),
            (
                "instance_type".to_owned(),
                str_or_null(self.instance_type().map(InstanceType::as_str)),
            ),
            ("security_group_ids".to_owned(), str_array(groups)),
            ("tags".to_owned(), tags::observed(self.tags())),
            ("state".to_owned(), Value::String(state(self).to_owned())),
            (
                "running".to_owned(),
                Value::Bool(matches!(state(self), "pending" | "running")),
            ),
            (
                "private_ip".to_owned(),
                str_or_null(self.private_ip_address()),
            ),
            (
                "public_ip".to_owned(),
                str_or_null(self.public_ip_address()),
            ),
            ("public_dns".to_owned(), str_or_null(self.public_dns_name())),
            (
                "availability_zone".to_owned(),
                str_or_null(self.placement().and_then(|p| p.availability_zone())),
            ),
        ]
        .into();
        Some(Observed {
            id: id.to_owned(),
            attributes,
        })
    }

    /// Terminated and terminating instances no longer count.
    fn exists(&self) -> bool {
        !GONE.contains(&state(self))
    }

    /// LaunchTime. EC2 moves it to the last start, so an instance that was
    /// stopped and started again reports a time later than its creation.
    fn created(&self) -> Option<&DateTime> {
        self.launch_time()
    }

    /// Only live instances are found (by token, by marks).
    fn live_filters() -> Vec<Filter> {
        vec![filter("instance-state-name", LIVE.iter().copied())]
    }
}

/// Waits until instance `id` is in state `target`. Fails early when it ends
/// up terminated instead.
async fn wait_for(
    api: &Ec2Api,
    wait: &WaitPolicy,
    id: &str,
    target: &'static str,
) -> Result<Instance, ProviderError> {
    wait.until(&format!("instance {id} to be {target}"), || async move {
        let Some(instance) = object::describe_one::<Instance>(api, id).await? else {
            return Ok(None);
        };
        let now = state(&instance);
        if now == target {
            return Ok(Some(instance));
        }
        if !instance.exists() {
            let reason = instance
                .state_reason()
                .and_then(|r| r.message())
                .unwrap_or("no reason given");
            return Err(ProviderError::api(
                "DescribeInstances",
                format!("instance {id} is {now} instead of becoming {target}: {reason}"),
            ));
        }
        Ok(None)
    })
    .await
}

/// The user data to send (plain text) and the digest to report.
fn user_data(attributes: &Attributes) -> Result<(Option<&str>, Value), ProviderError> {
    let text = opt_str(attributes, KIND, "user_data")?;
    let digest = match text {
        Some(text) => Value::String(sha256_hex(text.as_bytes())),
        None => attributes
            .get("user_data_sha256")
            .cloned()
            .unwrap_or(Value::Null),
    };
    Ok((text, digest))
}

/// `observed` with the user data's `digest`, which EC2 does not report.
fn with_digest(observed: Observed, digest: Value) -> Observed {
    with_unreported(observed, "user_data_sha256", Some(digest))
}

/// Launches one instance (ClientToken = the request token, tagged with the
/// request's tags and `prov:token`) and waits until it runs.
pub(crate) async fn create(
    api: &Ec2Api,
    wait: &WaitPolicy,
    request: CreateRequest<'_>,
) -> Result<Observed, ProviderError> {
    let attributes = request.attributes;
    let ami = req_str(attributes, KIND, "ami")?;
    let instance_type = opt_str(attributes, KIND, "instance_type")?;
    let subnet_id = opt_str(attributes, KIND, "subnet_id")?;
    let key_name = opt_str(attributes, KIND, "key_name")?;
    let groups = str_set(attributes, KIND, "security_group_ids")?;
    let tags = tags::desired(attributes, KIND)?;
    let (user_data, digest) = user_data(attributes)?;
    let out = api
        .call(
            "RunInstances",
            api.client()
                .run_instances()
                .image_id(ami)
                .min_count(1)
                .max_count(1)
                .client_token(request.token)
                .set_instance_type(instance_type.map(InstanceType::from))
                .set_subnet_id(subnet_id.map(str::to_owned))
                .set_key_name(key_name.map(str::to_owned))
                .set_security_group_ids((!groups.is_empty()).then_some(groups))
                .set_user_data(user_data.map(|u| base64::encode(u.as_bytes())))
                .tag_specifications(tags::specification(
                    ResourceType::Instance,
                    &tags,
                    Some(request.token),
                ))
                .send(),
        )
        .await?;
    let id = out
        .instances()
        .first()
        .and_then(Instance::instance_id)
        .ok_or_else(|| ProviderError::api("RunInstances", "the response named no instance"))?;
    tracing::debug!(instance = id, token = request.token, "instance launched");
    let instance = wait_for(api, wait, id, "running").await?;
    let observed = instance
        .observe()
        .ok_or_else(|| ProviderError::api("DescribeInstances", "instance without an id"))?;
    Ok(with_digest(observed, digest))
}

/// Replaces the user data of a stopped instance.
///
/// The SDK base64-encodes the blob on the wire and EC2 decodes it once, so
/// the blob holds the plain text. moto (5.x) instead expects the decoded blob
/// to be base64 text again and answers `InvalidUserData.Malformed`; only
/// then is the call repeated with base64 text, so EC2 never sees it.
async fn set_user_data(api: &Ec2Api, id: &str, text: &str) -> Result<(), ProviderError> {
    let send = |bytes: Vec<u8>| {
        api.client()
            .modify_instance_attribute()
            .instance_id(id)
            .user_data(
                SecureBlobAttributeValue::builder()
                    .value(Blob::new(bytes))
                    .build(),
            )
            .send()
    };
    match api
        .call("ModifyInstanceAttribute", send(text.as_bytes().to_vec()))
        .await
    {
        Ok(_) => Ok(()),
        Err(f) if f.has_code("InvalidUserData.Malformed") => {
            tracing::debug!(
                instance = id,
                "endpoint wants base64 user data inside the blob"
            );
            let encoded = base64::encode(text.as_bytes()).into_bytes();
            api.call("ModifyInstanceAttribute", send(encoded)).await?;
            Ok(())
        }
        Err(f) => Err(f.into()),
    }
}

fn changed(changes: &[AttributeChange], name: &str) -> bool {
    changes.iter().any(|c| c.name == name)
}

/// Applies in-place changes: tags and security groups directly; instance
/// type and user data by stopping, modifying and starting the instance.
pub(crate) async fn update(
    api: &Ec2Api,
    wait: &WaitPolicy,
    request: UpdateRequest<'_>,
) -> Result<Observed, ProviderError> {
    let id = request.id;
    let attributes = request.attributes;
    let changes = request.changes;
    if let Some(c) = changes.iter().find(|c| c.forces_replacement) {
        return Err(ProviderError::Unsupported {
            provider: crate::PROVIDER_NAME.to_owned(),
            operation: format!("changing `{}` of an instance in place", c.name),
        });
    }
    let current = object::existing::<Instance>(api, id).await?;
    let (user_data, digest) = user_data(attributes)?;

    if changed(changes, "tags") {
        tags::update(api, KIND, id, current.tags(), attributes).await?;
    }
    if changed(changes, "security_group_ids") {
        let groups = str_set(attributes, KIND, "security_group_ids")?;
        if groups.is_empty() {
            return Err(config_error(
                "an instance needs at least one security group; remove `security_group_ids` to keep the current ones",
            ));
        }
        api.call(
            "ModifyInstanceAttribute",
            api.client()
                .modify_instance_attribute()
                .instance_id(id)
                .set_groups(Some(groups))
                .send(),
        )
        .await?;
    }
    if NEEDS_RESTART.iter().any(|n| changed(changes, n)) {
        let mut now = state(&current).to_owned();
        if now == "pending" {
            now = state(&wait_for(api, wait, id, "running").await?).to_owned();
        }
        if now == "running" {
            api.call(
                "StopInstances",
                api.client().stop_instances().instance_ids(id).send(),
            )
            .await?;
        }
        wait_for(api, wait, id, "stopped").await?;
        if changed(changes, "instance_type") {
            let instance_type = req_str(attributes, KIND, "instance_type")?;
            api.call(
                "ModifyInstanceAttribute",
                api.client()
                    .modify_instance_attribute()
                    .instance_id(id)
                    .instance_type(AttributeValue::builder().value(instance_type).build())
                    .send(),
            )
            .await?;
        }
        if changed(changes, "user_data_sha256") {
            if user_data.is_none() && !digest.is_null() {
                return Err(config_error(
                    "`user_data_sha256` changed but the request carries no `user_data`",
                ));
            }
            set_user_data(api, id, user_data.unwrap_or("")).await?;
        }
        prov_provider::crashpoint::reached("ec2-stopped").await;
        return start(api, wait, id, digest).await;
    }
    if changed(changes, "running") && !matches!(state(&current), "pending" | "running") {
        if state(&current) == "stopping" {
            wait_for(api, wait, id, "stopped").await?;
        }
        return start(api, wait, id, digest).await;
    }
    let observed = object::observe_existing::<Instance>(api, id).await?;
    Ok(with_digest(observed, digest))
}

/// Whether `changes` start a stopped instance (and restart nothing).
pub(crate) fn starts(changes: &[AttributeChange]) -> bool {
    changed(changes, "running") && !restarts(changes)
}

/// Terminates the instance and waits until it is gone; an instance that is
/// already gone counts as deleted.
pub(crate) async fn delete(api: &Ec2Api, wait: &WaitPolicy, id: &str) -> Result<(), ProviderError> {
    match api
        .call(
            "TerminateInstances",
            api.client().terminate_instances().instance_ids(id).send(),
        )
        .await
    {
        Ok(_) => {}
        Err(f) if f.has_code("InvalidInstanceID.NotFound") => return Ok(()),
        Err(f) => return Err(f.into()),
    }
    wait.until(&format!("instance {id} to be terminated"), || async move {
        Ok(match object::describe_one::<Instance>(api, id).await? {
            None => Some(()),
            Some(i) if state(&i) == "terminated" => Some(()),
            Some(_) => None,
        })
    })
    .await
}

/// Whether `changes` restart the instance.
pub(crate) fn restarts(changes: &[AttributeChange]) -> bool {
    NEEDS_RESTART.iter().any(|n| changed(changes, n))
}

/// Fills in what the spec may leave to EC2 (subnet, security groups,
/// instance type), sorts `security_group_ids` and derives
/// `user_data_sha256` from `user_data`, so that an unchanged instance diffs
/// empty.
pub(crate) fn normalize_desired(desired: &mut Attributes, current: &Attributes) {
    // An instance should run. Only compared where prov has seen the state
    // (a record written before `running` existed, read without refresh,
    // plans nothing).
    if current.contains_key("running") {
        desired.insert("running".to_owned(), Value::Bool(true));
    }
    prov_provider::keep_current(
        desired,
        current,
        &["subnet_id", "security_group_ids", "instance_type"],
    );
    if let Some(Value::Array(items)) = desired.get("security_group_ids") {
        if let Some(ids) = items.iter().map(Value::as_str).collect::<Option<Vec<_>>>() {
            let sorted = str_array(ids);
            desired.insert("security_group_ids".to_owned(), sorted);
        }
    }
    if prov_provider::is_unset(desired, "user_data_sha256") {
        if let Some(Value::String(text)) = desired.get("user_data") {
            let digest = sha256_hex(text.as_bytes());
            desired.insert("user_data_sha256".to_owned(), Value::String(digest));
        }
    }
}
