//! Environments: independent copies of a deployment, each with its own
//! state, names and tags, living until they expire (`prov env`, `prov gc`).
//!
//! An environment `NAME` of deployment `D` is the spec applied with the
//! names prov derives from addresses made from `D-NAME` instead of `D`
//! (EC2 key pair and group names, `Name` tags, VM and local host
//! directories), so two environments never collide, and with
//! `prov:env`, `prov:env-id`, `prov:expires-at` and `prov:owner` on every
//! tagged object, so `prov gc --orphans` can tell what is whose. Its state
//! lives beside the deployment's (`.prov/envs/NAME/`,
//! `KEY.envs/NAME/state.json`) and carries an
//! [`prov_state::EnvironmentRecord`]: owner, expiry, and the providers'
//! settings, so it can be torn down without the spec.

pub mod name;
pub mod recorded;

use chrono::{DateTime, Utc};
use prov_provider::Address;
use prov_state::EnvironmentRecord;
use serde_json::Value;

use crate::spec::Spec;

/// What `${env}` stands for outside any environment (as Terraform's
/// `terraform.workspace`).
pub const DEFAULT_NAME: &str = "default";
/// The tag naming an object's environment.
pub const TAG_ENV: &str = "prov:env";
/// The tag naming an object's environment incarnation.
pub const TAG_ENV_ID: &str = "prov:env-id";
/// The tag saying when an object's environment expires.
pub const TAG_EXPIRES_AT: &str = "prov:expires-at";
/// The tag naming who brought an object's environment up.
pub const TAG_OWNER: &str = "prov:owner";
/// The tag naming an object's deployment.
pub const TAG_DEPLOYMENT: &str = "prov:deployment";

/// What spec text writes for the environment's name.
const PLACEHOLDER: &str = "${env}";

/// A user tag value that names the environment, as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    /// The resource or host whose tag it is.
    pub address: Address,
    /// The tag's key.
    pub key: String,
    /// The value as written, with `${env}`.
    pub text: String,
}

/// Whether `text` names the environment.
#[must_use]
pub fn names_env(text: &str) -> bool {
    text.contains(PLACEHOLDER)
}

/// `text` with `${env}` replaced by `env`.
#[must_use]
pub fn render(text: &str, env: &str) -> String {
    text.replace(PLACEHOLDER, env)
}

/// Who is bringing an environment up: `PROV_OWNER`, else the CI's actor
/// (`GITHUB_ACTOR`, `GITLAB_USER_LOGIN`), else `user@host`.
#[must_use]
pub fn owner() -> String {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    if let Some(owner) = var("PROV_OWNER") {
        return owner;
    }
    if let Some(actor) = var("GITHUB_ACTOR") {
        return format!("github:{actor}");
    }
    if let Some(actor) = var("GITLAB_USER_LOGIN") {
        return format!("gitlab:{actor}");
    }
    prov_state::LockInfo::for_this_process("owner").who
}

/// The status `prov env ls` and `prov gc` give an environment at `now`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Living.
    Active,
    /// Past its expiry, within the grace `prov gc` gives.
    Expired,
    /// Past its expiry and the grace: `prov gc` destroys it.
    Due,
    /// Given up on (a cancelled `env run`): `prov gc` destroys it.
    Doomed,
}

impl Status {
    /// The status of `record` at `now`, `grace` after expiry.
    #[must_use]
    pub fn of(record: &EnvironmentRecord, now: DateTime<Utc>, grace: std::time::Duration) -> Self {
        let grace = chrono::Duration::from_std(grace).unwrap_or(chrono::Duration::MAX);
        if record.doomed {
            Self::Doomed
        } else if now < record.expires {
            Self::Active
        } else if record
            .expires
            .checked_add_signed(grace)
            .is_some_and(|end| now < end)
        {
            Self::Expired
        } else {
            Self::Due
        }
    }

    /// Whether `prov gc` destroys an environment in this status.
    #[must_use]
    pub fn collectable(self) -> bool {
        matches!(self, Self::Due | Self::Doomed)
    }

    /// The word `prov env ls` prints.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Expired => "expired",
            Self::Due => "due",
            Self::Doomed => "doomed",
        }
    }
}

impl Spec {
    /// The deployment name prov makes object names from: the deployment's,
    /// or `DEPLOYMENT-ENV` in an environment.
    #[must_use]
    pub fn naming(&self) -> String {
        match &self.environment {
            Some(env) => format!("{}-{}", self.deployment, env.name),
            None => self.deployment.clone(),
        }
    }

    /// This spec applied as the environment `record`: every name prov
    /// derives from an address made from `DEPLOYMENT-ENV`, `${env}` in tag
    /// values replaced by its name, and the environment's tags on every
    /// tagged object.
    #[must_use]
    pub fn in_environment(mut self, record: EnvironmentRecord) -> Self {
        let naming = format!("{}-{}", self.deployment, record.name);
        let env_tags = [
            (TAG_ENV, record.name.clone()),
            (TAG_ENV_ID, record.id.clone()),
            (
                TAG_EXPIRES_AT,
                prov_state::timestamp::format(&record.expires),
            ),
            (TAG_OWNER, record.owner.clone()),
        ];
        for resource in &mut self.resources {
            for name in &resource.names {
                name.set(&mut resource.attributes, &naming, &resource.address);
            }
            if let Some(Value::Object(tags)) = resource.attributes.get_mut("tags") {
                for template in self
                    .env_templates
                    .iter()
                    .filter(|t| t.address == resource.address)
                {
                    if tags.contains_key(&template.key) {
                        tags.insert(
                            template.key.clone(),
                            render(&template.text, &record.name).into(),
                        );
                    }
                }
                for (key, value) in &env_tags {
                    tags.insert((*key).to_owned(), value.clone().into());
                }
            }
        }
        for template in &self.env_templates {
            if let Some(host) = self.hosts.get_mut(&template.address) {
                if host.tags.contains_key(&template.key) {
                    // The host's own copy (its group shared one).
                    std::sync::Arc::make_mut(host)
                        .tags
                        .insert(template.key.clone(), render(&template.text, &record.name));
                }
            }
        }
        self.environment = Some(record);
        self
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use std::path::Path;

    fn record(name: &str) -> EnvironmentRecord {
        EnvironmentRecord {
            name: name.to_owned(),
            id: "11111111-2222-3333-4444-555555555555".to_owned(),
            owner: "ci".to_owned(),
            created: prov_state::timestamp::parse("2026-01-01T00:00:00Z").unwrap(),
            expires: prov_state::timestamp::parse("2026-01-01T02:00:00Z").unwrap(),
            doomed: false,
            settings: Value::Null,
        }
    }

    const SPEC: &str = r#"
deployment = "shop"
[providers.ec2]
region = "us-east-1"
[key_pairs.deploy]
public_key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl deploy"
[security_groups.web]
ingress = [{ protocol = "tcp", from_port = 22, to_port = 22, cidr_blocks = ["0.0.0.0/0"] }]
[hosts.web]
target = "ec2"
count = 2
ami = "ami-12345678"
instance_type = "t3.micro"
key_pair = "deploy"
security_groups = ["web"]
tags = { stage = "${env}", role = "web" }
[hosts.box]
target = "local"
"#;

    #[test]
    fn an_environment_renames_what_prov_names_and_tags_every_object() {
        let spec = crate::spec::parse_toml(SPEC, Path::new("prov.toml")).unwrap();
        let web0 = Address::host("web", Some(0));
        let attr = |spec: &Spec, address: &Address, name: &str| {
            spec.resources
                .iter()
                .find(|r| &r.address == address)
                .unwrap()
                .attributes
                .get(name)
                .cloned()
                .unwrap()
        };
        let tags = attr(&spec, &web0, "tags");
        assert_eq!(tags["stage"], "default");
        assert_eq!(tags["Name"], "shop-web[0]");
        assert!(tags.get(TAG_ENV).is_none());
        assert_eq!(spec.hosts[&web0].tags["stage"], "default");

        let spec = spec.in_environment(record("pr-7"));
        assert_eq!(spec.naming(), "shop-pr-7");
        let tags = attr(&spec, &web0, "tags");
        assert_eq!(tags["stage"], "pr-7");
        assert_eq!(tags["role"], "web");
        assert_eq!(tags["Name"], "shop-pr-7-web[0]");
        assert_eq!(tags[TAG_DEPLOYMENT], "shop");
        assert_eq!(tags[TAG_ENV], "pr-7");
        assert_eq!(tags[TAG_ENV_ID], "11111111-2222-3333-4444-555555555555");
        assert_eq!(tags[TAG_EXPIRES_AT], "2026-01-01T02:00:00Z");
        assert_eq!(tags[TAG_OWNER], "ci");
        assert_eq!(spec.hosts[&web0].tags["stage"], "pr-7");
        let kp = Address::new("key_pair", "deploy", None);
        assert_eq!(attr(&spec, &kp, "key_name"), "shop-pr-7-deploy");
        assert_eq!(attr(&spec, &kp, "tags")[TAG_ENV], "pr-7");
        let sg = Address::new("security_group", "web", None);
        assert_eq!(attr(&spec, &sg, "group_name"), "shop-pr-7-web");
        // A local host's hostname is its machine name in every environment;
        // its directory is the provider's, under the environment's naming.
        assert_eq!(attr(&spec, &Address::host("box", None), "hostname"), "box");
    }

    #[test]
    fn status_follows_expiry_grace_and_doom() {
        let mut r = record("e");
        let at = |t: &str| prov_state::timestamp::parse(t).unwrap();
        let grace = std::time::Duration::from_secs(600);
        assert_eq!(
            Status::of(&r, at("2026-01-01T01:00:00Z"), grace),
            Status::Active
        );
        assert_eq!(
            Status::of(&r, at("2026-01-01T02:05:00Z"), grace),
            Status::Expired
        );
        assert_eq!(
            Status::of(&r, at("2026-01-01T02:10:00Z"), grace),
            Status::Due
        );
        r.doomed = true;
        assert_eq!(
            Status::of(&r, at("2026-01-01T01:00:00Z"), grace),
            Status::Doomed
        );
        assert!(Status::Doomed.collectable() && Status::Due.collectable());
        assert!(!Status::Expired.collectable() && !Status::Active.collectable());
    }
}
