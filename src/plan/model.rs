//! The plan value: everything apply will do, in the layout `--json` prints
//! (docs/plan-json.md) and saved plans hold.

use prov_provider::{Address, AttributeChange, Change};
use prov_state::Goal;

use crate::spec::UploadWhen;
use serde::{Deserialize, Serialize};

/// The version of the JSON plan layout (`format_version` in `--json`).
pub const PLAN_FORMAT_VERSION: u32 = 1;

/// Everything apply will do, in address order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// Layout version ([`PLAN_FORMAT_VERSION`]).
    pub format_version: u32,
    /// The prov version that made the plan.
    pub prov_version: String,
    /// Deployment name.
    pub deployment: String,
    /// Lineage of the state planned against (absent for a new deployment).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lineage: Option<String>,
    /// Serial of the state planned against (0 for a new deployment).
    pub serial: u64,
    /// SHA-256 of the spec file planned.
    pub spec_hash: String,
    /// Whether this plan destroys the deployment.
    #[serde(default)]
    pub destroy: bool,
    /// Objects that changed outside prov since the last apply.
    #[serde(default)]
    pub drift: Vec<Drift>,
    /// One entry per resource that changes.
    pub changes: Vec<ResourceChange>,
    /// One entry per host whose NixOS system is deployed.
    #[serde(default)]
    pub deploys: Vec<DeployChange>,
    /// Secrets to upload to or delete from hosts, by host then name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<SecretChange>,
    /// Kubernetes certificates, keys and secrets issued, reissued or
    /// removed, by cluster then item (never their content).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub certificates: Vec<super::clusters::CertificateChange>,
    /// Records that move to another address (`[[moved]]`), objects kept.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub moved: Vec<super::moves::Moved>,
    /// Counts by action.
    pub summary: Summary,
}

/// A host that gets a new NixOS system (copy, then activation).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeployChange {
    /// The host.
    pub address: Address,
    /// The activation goal (`switch`, `boot`, `test`, `dry-activate`).
    pub goal: Goal,
    /// The system active now (absent on a new host).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current: Option<String>,
    /// The system to deploy.
    pub desired: String,
    /// Store paths to copy (all of the closure when the host could not be
    /// asked: see `exact`).
    pub paths: usize,
    /// Bytes (NAR size) to copy.
    pub bytes: u64,
    /// Whether `paths` and `bytes` come from asking the host (otherwise they
    /// are the whole closure, an upper bound).
    pub exact: bool,
    /// The derivation built on the host, for `build_on = "target"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub derivation: Option<String>,
    /// Why, in words (`new host`, `changed outside prov`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The modules prov generated for the host (its Kubernetes role), as
    /// the store directory the system was built with (`<prov/…>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modules: Option<String>,
    /// The binary cache (`[cache]`, `s3://BUCKET/PREFIX`) the host
    /// substitutes the paths from; absent: they go over SSH.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub via_cache: Option<String>,
    /// What planning learnt (the closure, the paths the host lacks), for
    /// the apply that follows in the same run not to ask again. Never in a
    /// saved plan: applying one asks the host afresh.
    #[serde(skip)]
    pub known: Option<std::sync::Arc<Known>>,
}

/// The closure planning computed for a host and the paths it lacked then.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Known {
    /// The closure copied (the system's, or its derivation's).
    pub closure: crate::deploy::nix::Closure,
    /// The paths of it the host lacked when asked.
    pub missing: Vec<String>,
    /// The host's `nix-store --serve` that answered, open for the copy.
    pub session: crate::deploy::copy::Kept,
}

/// What happens to one secret on one host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretChange {
    /// The host.
    pub address: Address,
    /// The secret's name (`[secrets.NAME]`).
    pub name: String,
    /// Upload or delete.
    pub action: SecretAction,
    /// The file on the host.
    pub destination: String,
    /// For an upload: the keyed hash (HMAC-SHA256 with the state's key) of
    /// the plaintext and its destination, owner, group and mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hmac: Option<String>,
    /// For an upload in a saved plan (which holds no HMAC): SHA-256 of the
    /// secret's encrypted file, checked again by apply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_sha256: Option<String>,
    /// For an upload: `before` or `after` activation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upload: Option<UploadWhen>,
    /// Why, in words (`new`, `changed`, `not in the spec`).
    pub reason: String,
    /// For an upload whose destination changed: the old file, removed once
    /// the new one is written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replaces: Option<String>,
    /// For a file of a Kubernetes cluster's material (certificates, keys,
    /// kubeconfigs, the token): the cluster. Its content is made by prov,
    /// not read from a `[secrets.NAME]` file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    /// For an upload: the file's owner, group and mode (`0400`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// See `owner`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// See `owner`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
}

/// What happens to a secret on a host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SecretAction {
    /// Write it (new or changed).
    Upload,
    /// Remove it from the host.
    Delete,
}

/// What happens to one resource.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResourceChange {
    /// The resource's address.
    pub address: Address,
    /// Provider name.
    pub provider: String,
    /// Provider kind.
    pub kind: String,
    /// Create, update, replace or delete.
    pub action: Change,
    /// The object's current provider id, when it exists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Why, in words (`ami forces replacement`, `tainted by a failed create`,
    /// `not in the spec`, `deleted outside prov`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Attribute by attribute (for a create: every attribute set).
    #[serde(default)]
    pub attributes: Vec<AttributeChange>,
    /// Side effects of an in-place update (`the instance is stopped and started`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub effects: Vec<String>,
}

/// An object that differs from what state recorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Drift {
    /// The resource's address.
    pub address: Address,
    /// `changed` or `deleted`.
    pub kind: DriftKind,
    /// Attributes that changed (empty when deleted).
    #[serde(default)]
    pub attributes: Vec<AttributeChange>,
}

/// How an object drifted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DriftKind {
    /// Attributes differ from the recorded ones.
    Changed,
    /// The object no longer exists.
    Deleted,
}

/// Counts of changes by action.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    /// Objects to create.
    pub create: usize,
    /// Objects to change in place.
    pub update: usize,
    /// Objects to destroy and create again.
    pub replace: usize,
    /// Objects to destroy.
    pub delete: usize,
    /// Hosts to deploy a system to.
    #[serde(default)]
    pub deploy: usize,
    /// Secret uploads and deletions.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub secrets: usize,
    /// Kubernetes certificates, keys and secrets issued, reissued or
    /// removed.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub certificates: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

impl Plan {
    /// Whether apply would do nothing.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
            && self.deploys.is_empty()
            && self.secrets.is_empty()
            && self.certificates.is_empty()
            && self.moved.is_empty()
    }

    /// The change for `address`, if any.
    #[must_use]
    pub fn change(&self, address: &Address) -> Option<&ResourceChange> {
        self.changes.iter().find(|c| &c.address == address)
    }
}

impl Summary {
    /// Counts the changes, deploys and secret changes of a plan.
    #[must_use]
    pub fn of(
        changes: &[ResourceChange],
        deploys: &[DeployChange],
        secrets: &[SecretChange],
        certificates: usize,
    ) -> Self {
        let mut summary = Self {
            deploy: deploys.len(),
            secrets: secrets.len(),
            certificates,
            ..Self::default()
        };
        for change in changes {
            match change.action {
                Change::Create => summary.create += 1,
                Change::Update => summary.update += 1,
                Change::Replace => summary.replace += 1,
                Change::Delete => summary.delete += 1,
                Change::NoOp => {}
            }
        }
        summary
    }
}
