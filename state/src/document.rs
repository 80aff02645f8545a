//! The state document.

use std::collections::BTreeMap;

use prov_provider::Address;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::records::Records;

/// The version of the document layout this build reads and writes.
pub const FORMAT_VERSION: u32 = 1;

/// Everything prov knows about one deployment's real objects.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StateDocument {
    /// Layout version ([`FORMAT_VERSION`]).
    pub format_version: u32,
    /// A UUID fixed when the state is first written; a plan or a pushed document
    /// with another lineage belongs to another deployment.
    pub lineage: String,
    /// Increases by one with every write that changes content.
    pub serial: u64,
    /// The deployment name from the spec.
    #[serde(default)]
    pub deployment: String,
    /// Resource records by address (`web[0]`, `key_pair.deploy`); a key that
    /// is not an address is a decoding error.
    #[serde(default)]
    pub resources: Records<Address, ResourceRecord>,
    /// Output values by name.
    #[serde(default)]
    pub outputs: Records<String, Value>,
    /// What is deployed on each host (NixOS system, generation, pinned host
    /// key), by host address.
    #[serde(default, skip_serializing_if = "is_empty")]
    pub hosts: Records<Address, HostRecord>,
    /// The random key (hex) of the keyed hashes (HMAC-SHA256) kept for
    /// secrets, generated once per state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_hmac_key: Option<String>,
    /// When state is encrypted at rest: the whole document, age-encrypted
    /// (ASCII armor); the other content fields are then empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encrypted: Option<String>,
    /// How many creates this lineage has recorded an intent for. Part of
    /// every idempotency token, so a token never repeats in a lineage, also
    /// after `destroy` or `state rm` forgot an address's record.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub creates: u64,
    /// When this is the state of an environment (`prov env up NAME`): which
    /// one, whose, until when, and what tearing it down needs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<EnvironmentRecord>,
}

/// An environment: an independent copy of a deployment with its own state
/// (`prov env up NAME`), living until `expires`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvironmentRecord {
    /// Its name (`pr-42`).
    pub name: String,
    /// A UUID per incarnation: an environment brought down and up again
    /// under the same name is another one (objects carry it as
    /// `prov:env-id`).
    pub id: String,
    /// Who brought it up (`PROV_OWNER`, the CI actor, or `user@host`).
    pub owner: String,
    /// When it was first brought up.
    #[serde(with = "crate::timestamp")]
    pub created: chrono::DateTime<chrono::Utc>,
    /// When it expires: `prov gc` destroys it after this (plus the grace).
    #[serde(with = "crate::timestamp")]
    pub expires: chrono::DateTime<chrono::Utc>,
    /// Given up on (its `env run` was cancelled): `prov gc` destroys it at
    /// once, grace or not.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub doomed: bool,
    /// What destroying it needs besides state (the providers' settings), so
    /// that `prov env down` and `prov gc` work without the spec. Opaque to
    /// this crate.
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub settings: Value,
}

#[allow(clippy::trivially_copy_pass_by_ref)] // serde passes a reference
fn is_zero(n: &u64) -> bool {
    *n == 0
}

fn is_empty<K: Ord, V>(records: &Records<K, V>) -> bool {
    records.is_empty()
}

/// Deployment facts about one host.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostRecord {
    /// The host's SSH host public key (`ssh-ed25519 AAAA…`), pinned: a host
    /// presenting another key is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_key: Option<String>,
    /// The host key of the jump host this host is reached through (when the
    /// spec pins none), recorded on first contact and pinned like `host_key`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jump_host_key: Option<String>,
    /// The system store path last activated by prov.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<String>,
    /// The profile generation prov created for it (`switch` and `boot` goals).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<u64>,
    /// The goal it was activated with (`switch`, `boot`, `test`, `dry-activate`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub goal: Option<Goal>,
    /// When (stored as RFC 3339, to the second).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "crate::timestamp::optional"
    )]
    pub deployed_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Secrets uploaded to the host, by secret name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub secrets: BTreeMap<String, SecretRecord>,
    /// Where prov last reached the host over SSH. Kept so that a host that
    /// leaves the spec (an existing `target = "ssh"` machine prov does not
    /// destroy) can still be cleaned of the secrets prov put there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reach: Option<ReachRecord>,
}

/// An SSH endpoint prov reached: `user@host:port`, maybe through a jump host
/// (whose key is [`HostRecord::jump_host_key`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReachRecord {
    /// Host name or address.
    pub host: String,
    /// sshd's port.
    pub port: u16,
    /// The user prov logs in as.
    pub user: String,
    /// The jump host, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jump: Option<Box<ReachRecord>>,
}

impl std::fmt::Display for ReachRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}:{}", self.user, self.host, self.port)?;
        if let Some(jump) = &self.jump {
            write!(f, " (through {jump})")?;
        }
        Ok(())
    }
}

/// One secret on one host: only a keyed hash, never the value.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretRecord {
    /// HMAC-SHA256 (hex) of the plaintext, destination, owner, group and
    /// mode, keyed with [`StateDocument::secret_hmac_key`].
    pub hmac: String,
    /// Where it was written on the host.
    pub destination: String,
}

impl StateDocument {
    /// A new, empty document with a fresh lineage and serial 0.
    #[must_use]
    pub fn new(deployment: &str) -> Self {
        Self {
            format_version: FORMAT_VERSION,
            lineage: uuid::Uuid::new_v4().to_string(),
            serial: 0,
            deployment: deployment.to_owned(),
            resources: Records::default(),
            outputs: Records::default(),
            hosts: Records::default(),
            secret_hmac_key: None,
            encrypted: None,
            creates: 0,
            environment: None,
        }
    }

    /// Whether `other` holds the same content (ignoring serial).
    #[must_use]
    pub fn same_content(&self, other: &Self) -> bool {
        self.lineage == other.lineage
            && self.deployment == other.deployment
            && self.resources == other.resources
            && self.outputs == other.outputs
            && self.hosts == other.hosts
            && self.secret_hmac_key == other.secret_hmac_key
            && self.encrypted == other.encrypted
            && self.creates == other.creates
            && self.environment == other.environment
    }
}

/// Where a resource is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResourceStatus {
    /// A create call was (or was about to be) made with the record's token; the
    /// outcome is not known yet. The next run looks the token up.
    Creating,
    /// The object exists and matches the attributes recorded.
    Ready,
    /// A create or update failed part way; the next plan replaces it.
    Tainted,
}

/// One resource in state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResourceRecord {
    /// Provider name (`ec2`).
    pub provider: String,
    /// The provider's kind name (`instance`).
    pub kind: String,
    /// The provider's id for the object, once known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// See [`ResourceStatus`].
    pub status: ResourceStatus,
    /// Counts creations of this address; part of the idempotency token.
    #[serde(default)]
    pub generation: u64,
    /// Idempotency token of the latest create (lineage + address + generation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// Attributes as last observed. Sensitive values are kept only as hashes.
    #[serde(default)]
    pub attributes: BTreeMap<String, Value>,
    /// Addresses this resource depends on (destroyed after it).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dependencies: Vec<Address>,
    /// The address its object was created at, when it has moved since
    /// (`state mv`, `[[moved]]`): the names prov made from an address (an
    /// EC2 `Name` tag, a domain's or a local host's name) are that one's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub names_from: Option<Address>,
}

/// What `switch-to-configuration` is asked to do (as in Colmena and NixOps).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Goal {
    /// Make it the boot default and activate it now.
    Switch,
    /// Make it the boot default only.
    Boot,
    /// Activate it now, without making it the boot default.
    Test,
    /// Show what activation would do.
    DryActivate,
}

impl Goal {
    /// Every goal, in the order the spec documents them.
    pub const ALL: [Self; 4] = [Self::Switch, Self::Boot, Self::Test, Self::DryActivate];

    /// The word `switch-to-configuration` takes.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Switch => "switch",
            Self::Boot => "boot",
            Self::Test => "test",
            Self::DryActivate => "dry-activate",
        }
    }

    /// Parses the spec's word.
    #[must_use]
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|g| g.as_str() == s)
    }

    /// Whether this goal sets the system profile (a new generation).
    #[must_use]
    pub fn sets_profile(self) -> bool {
        matches!(self, Self::Switch | Self::Boot)
    }
}

impl std::fmt::Display for Goal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One version in a state's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// The serial of that version.
    pub serial: u64,
    /// When it was written (stored as RFC 3339, to the second).
    #[serde(with = "crate::timestamp")]
    pub written_at: chrono::DateTime<chrono::Utc>,
    /// Who wrote it and doing what (from the lock held at the time).
    pub written_by: String,
    /// How many resources it holds.
    pub resources: usize,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// Found by the `state_document` fuzz target: serde_json's default
    /// number parser is not correctly rounded, so a large number read from
    /// stored state wrote back as a different number (every save and read
    /// could change an attribute). Numbers now read back exactly.
    #[test]
    fn a_document_reads_back_exactly_as_it_was_written() {
        let big = "5555555555555555555555555555555555555555555555555555555555555555555555555555100555555555555555552";
        let json = format!(
            r#"{{"format_version":1,"lineage":"l","serial":7,"deployment":"d","resources":{{"web[0]":{{"provider":"ec2","kind":"instance","status":"ready","generation":0,"attributes":{{"n":{big},"f":0.30000000000000004}}}}}}}}"#
        );
        let doc: StateDocument = serde_json::from_str(&json).unwrap();
        let again = serde_json::to_vec(&doc).unwrap();
        let back: StateDocument = serde_json::from_slice(&again).unwrap();
        assert_eq!(back, doc);
        assert_eq!(serde_json::to_vec(&back).unwrap(), again);
    }
}
