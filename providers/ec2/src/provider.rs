//! [`Ec2Provider`]: the [`Provider`] implementation.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_ec2::types::{Instance, KeyPairInfo, SecurityGroup};
use prov_provider::{
    AttributeChange, AttributeSchema, Attributes, CreateRequest, Marked, Observed, Provider,
    ProviderError, UpdateRequest,
};

use crate::client::Ec2Api;
use crate::error::config_error;
use crate::kinds::Kind;
use crate::wait::WaitPolicy;
use crate::{instance, key_pair, object, security_group, tags, Ec2Settings, PROVIDER_NAME};

/// The EC2 provider: key pairs, security groups and instances.
#[derive(Debug)]
pub struct Ec2Provider {
    api: Ec2Api,
    wait: WaitPolicy,
}

impl Ec2Provider {
    /// The kinds this provider manages.
    pub const KINDS: &'static [&'static str] = Kind::NAMES;

    /// The attributes of `kind`, known without a provider (spec checks).
    #[must_use]
    pub fn kind_schema(kind: &str) -> Option<&'static [AttributeSchema]> {
        crate::kind_schema(kind)
    }

    /// Builds a provider from `settings` and the standard AWS chain
    /// (environment, profile files, instance metadata; `AWS_ENDPOINT_URL`
    /// when no endpoint is given).
    ///
    /// # Errors
    /// [`ProviderError::Config`] when no region can be found.
    pub async fn new(settings: &Ec2Settings) -> Result<Self, ProviderError> {
        let mut loader = aws_config::defaults(BehaviorVersion::latest());
        if let Some(profile) = &settings.profile {
            loader = loader.profile_name(profile);
        }
        if let Some(region) = &settings.region {
            loader = loader.region(Region::new(region.clone()));
        }
        if let Some(endpoint) = &settings.endpoint {
            loader = loader.endpoint_url(endpoint);
        }
        Self::from_sdk_config(&loader.load().await)
    }

    /// Builds a provider from an already loaded SDK configuration.
    ///
    /// # Errors
    /// [`ProviderError::Config`] when the configuration has no region.
    pub fn from_sdk_config(config: &SdkConfig) -> Result<Self, ProviderError> {
        let Some(region) = config.region() else {
            return Err(config_error(
                "no AWS region is configured: set `region` in [providers.ec2] or the AWS_REGION environment variable",
            ));
        };
        let target = match config.endpoint_url() {
            Some(url) => url.to_owned(),
            None => format!("of region {region}"),
        };
        tracing::debug!(%region, endpoint = %target, "EC2 provider configured");
        Ok(Self {
            api: Ec2Api::new(aws_sdk_ec2::Client::new(config), target),
            wait: WaitPolicy::default(),
        })
    }

    /// Sets how long to wait for an instance to reach a state (default 300 s).
    #[must_use]
    pub fn with_wait_timeout(mut self, timeout: Duration) -> Self {
        self.wait.timeout = timeout;
        self
    }

    /// Sets the pause between two looks while waiting (default 2 s).
    #[must_use]
    pub fn with_poll_interval(mut self, interval: Duration) -> Self {
        self.wait.interval = interval;
        self
    }

    /// How many EC2 API calls this provider has made.
    #[must_use]
    pub fn api_calls(&self) -> u64 {
        self.api.calls()
    }

    /// The raw SDK client (for tests and diagnostics; calls made through it
    /// are not counted).
    #[must_use]
    pub fn sdk_client(&self) -> &aws_sdk_ec2::Client {
        self.api.client()
    }
}

#[async_trait]
impl Provider for Ec2Provider {
    fn name(&self) -> &str {
        PROVIDER_NAME
    }

    fn schema(&self, kind: &str) -> Result<&'static [AttributeSchema], ProviderError> {
        Ok(Kind::parse(kind)?.schema())
    }

    /// The desired attributes in the form the provider reports them.
    fn normalize_desired(&self, kind: &str, desired: &mut Attributes, current: &Attributes) {
        if let Some(t) = desired.get("tags").map(tags::normalize_value) {
            desired.insert("tags".to_owned(), t);
        }
        match Kind::parse(kind) {
            Ok(Kind::SecurityGroup) => security_group::normalize_desired(desired, current),
            Ok(Kind::Instance) => instance::normalize_desired(desired, current),
            Ok(Kind::KeyPair) | Err(_) => {}
        }
    }

    fn update_effects(&self, kind: &str, changes: &[AttributeChange]) -> Vec<String> {
        if kind == instance::KIND && instance::restarts(changes) {
            vec![instance::RESTART_EFFECT.to_owned()]
        } else if kind == instance::KIND && instance::starts(changes) {
            vec![instance::START_EFFECT.to_owned()]
        } else {
            Vec::new()
        }
    }

    async fn read(
        &self,
        kind: &str,
        ids: &[String],
    ) -> Result<BTreeMap<String, Observed>, ProviderError> {
        match Kind::parse(kind)? {
            Kind::KeyPair => object::read::<KeyPairInfo>(&self.api, ids).await,
            Kind::SecurityGroup => object::read::<SecurityGroup>(&self.api, ids).await,
            Kind::Instance => object::read::<Instance>(&self.api, ids).await,
        }
    }

    async fn find_by_token(
        &self,
        kind: &str,
        tokens: &[String],
    ) -> Result<BTreeMap<String, Observed>, ProviderError> {
        match Kind::parse(kind)? {
            Kind::KeyPair => object::find_by_token::<KeyPairInfo>(&self.api, tokens).await,
            Kind::SecurityGroup => object::find_by_token::<SecurityGroup>(&self.api, tokens).await,
            Kind::Instance => object::find_by_token::<Instance>(&self.api, tokens).await,
        }
    }

    /// One Describe call per kind (more where the API pages), filtered on
    /// the server by `tag:prov:deployment` and checked again here.
    async fn find_marked(&self, deployment: &str) -> Result<Option<Vec<Marked>>, ProviderError> {
        if deployment.is_empty() {
            return Err(config_error(
                "finding objects by their marks needs a deployment name",
            ));
        }
        let mut found = object::find_marked::<KeyPairInfo>(&self.api, deployment).await?;
        found.extend(object::find_marked::<SecurityGroup>(&self.api, deployment).await?);
        found.extend(object::find_marked::<Instance>(&self.api, deployment).await?);
        found.sort_by(|a, b| (&a.kind, &a.id).cmp(&(&b.kind, &b.id)));
        Ok(Some(found))
    }

    async fn create(&self, request: CreateRequest<'_>) -> Result<Observed, ProviderError> {
        tracing::debug!(address = %request.address, kind = request.kind, "creating");
        match Kind::parse(request.kind)? {
            Kind::KeyPair => key_pair::create(&self.api, &self.wait, request).await,
            Kind::SecurityGroup => security_group::create(&self.api, &self.wait, request).await,
            Kind::Instance => instance::create(&self.api, &self.wait, request).await,
        }
    }

    async fn update(&self, request: UpdateRequest<'_>) -> Result<Observed, ProviderError> {
        tracing::debug!(address = %request.address, id = request.id, "updating");
        match Kind::parse(request.kind)? {
            Kind::KeyPair => key_pair::update(&self.api, request).await,
            Kind::SecurityGroup => security_group::update(&self.api, request).await,
            Kind::Instance => instance::update(&self.api, &self.wait, request).await,
        }
    }

    async fn delete(&self, kind: &str, id: &str) -> Result<(), ProviderError> {
        tracing::debug!(kind, id, "deleting");
        match Kind::parse(kind)? {
            Kind::KeyPair => key_pair::delete(&self.api, id).await,
            Kind::SecurityGroup => security_group::delete(&self.api, id).await,
            Kind::Instance => instance::delete(&self.api, &self.wait, id).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prov_provider::Desired;
    use serde_json::json;

    fn attrs(v: serde_json::Value) -> Attributes {
        serde_json::from_value(v).unwrap()
    }

    async fn provider() -> Ec2Provider {
        let config = aws_config::SdkConfig::builder()
            .region(Region::new("us-east-1"))
            .behavior_version(BehaviorVersion::latest())
            .build();
        Ec2Provider::from_sdk_config(&config).unwrap()
    }

    #[tokio::test]
    async fn unchanged_security_group_diffs_empty() {
        let p = provider().await;
        let current = attrs(json!({
            "group_name": "ssh", "description": "managed by prov", "vpc_id": "vpc-1",
            "ingress": [{"protocol": "tcp", "from_port": 22, "to_port": 22, "cidr_blocks": ["0.0.0.0/0", "10.0.0.0/8"]}],
            "tags": {"prov:deployment": "d"}, "owner_id": "123",
        }));
        let desired = Desired {
            attributes: attrs(json!({
                "group_name": "ssh",
                "ingress": [
                    {"protocol": "tcp", "from_port": 22, "to_port": 22, "cidr_blocks": ["10.0.0.0/8"]},
                    {"protocol": "6", "from_port": 22, "cidr_blocks": ["0.0.0.0/0"]},
                ],
                "tags": {"prov:deployment": "d"},
            })),
            unknown: Default::default(),
        };
        assert_eq!(
            p.diff("security_group", &desired, &current).unwrap(),
            vec![]
        );
    }

    #[tokio::test]
    async fn instance_defaults_and_effects() {
        let p = provider().await;
        let current = attrs(json!({
            "ami": "ami-1", "subnet_id": "subnet-1", "instance_type": "t3.micro",
            "security_group_ids": ["sg-a", "sg-b"], "tags": {}, "state": "running",
            "user_data_sha256": prov_provider::sha256_hex(b"hello"),
        }));
        let mut desired = Desired {
            attributes: attrs(json!({
                "ami": "ami-1", "security_group_ids": ["sg-b", "sg-a"], "user_data": "hello",
            })),
            unknown: Default::default(),
        };
        assert_eq!(p.diff("instance", &desired, &current).unwrap(), vec![]);
        desired
            .attributes
            .insert("instance_type".into(), json!("t3.large"));
        desired.attributes.insert("user_data".into(), json!("bye"));
        let changes = p.diff("instance", &desired, &current).unwrap();
        let names: Vec<&str> = changes.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["instance_type", "user_data_sha256"]);
        assert_eq!(
            p.update_effects("instance", &changes),
            ["the instance is stopped and started"]
        );
        assert!(p.update_effects("instance", &changes[..0]).is_empty());

        let mut stopped = current.clone();
        stopped.insert("running".into(), json!(false));
        desired
            .attributes
            .insert("instance_type".into(), json!("t3.micro"));
        desired
            .attributes
            .insert("user_data".into(), json!("hello"));
        let changes = p.diff("instance", &desired, &stopped).unwrap();
        let names: Vec<&str> = changes.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["running"]);
        assert!(!changes[0].forces_replacement);
        assert_eq!(
            p.update_effects("instance", &changes),
            ["the instance is started"]
        );
    }

    #[tokio::test]
    async fn find_marked_needs_a_deployment_name() {
        let p = provider().await;
        let err = p.find_marked("").await.unwrap_err();
        assert!(matches!(err, ProviderError::Config { .. }), "{err:?}");
        assert_eq!(p.api_calls(), 0);
    }

    #[tokio::test]
    async fn unknown_kind_and_missing_region() {
        let p = provider().await;
        assert!(matches!(
            p.schema("bucket"),
            Err(ProviderError::UnknownKind { .. })
        ));
        let config = aws_config::SdkConfig::builder()
            .behavior_version(BehaviorVersion::latest())
            .build();
        let err = Ec2Provider::from_sdk_config(&config)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("AWS_REGION") && err.contains("[providers.ec2]"),
            "{err}"
        );
    }
}
