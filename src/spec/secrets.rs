//! `[secrets.NAME]` in the model: age-encrypted files delivered to hosts.

use std::collections::BTreeMap;
use std::path::PathBuf;

use prov_provider::Address;

use super::model::HostInfo;
use crate::select::Selection;

/// The recipient word that stands for each receiving host's pinned host key.
pub const HOSTS_RECIPIENT: &str = "@hosts";

/// When a secret is uploaded relative to activation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UploadWhen {
    /// Before activation (the default), so services find it when they start.
    #[default]
    Before,
    /// After the new system is confirmed.
    After,
}

impl UploadWhen {
    /// `before` or `after`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Before => "before",
            Self::After => "after",
        }
    }
}

/// One secret, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretSpec {
    /// The age-encrypted file (resolved against the spec's directory).
    pub file: PathBuf,
    /// The path on the hosts.
    pub destination: String,
    /// Owner on the hosts.
    pub owner: String,
    /// Group on the hosts.
    pub group: String,
    /// Permission bits (at most 0o777).
    pub mode: u32,
    /// Host patterns as written (names, globs, `@tag`, `@key=value`).
    pub hosts: Vec<String>,
    /// When to upload.
    pub upload: UploadWhen,
    /// Recipients as written (`age1…`, `ssh-… …`, `@hosts`).
    pub recipients: Vec<String>,
}

/// Where and how a secret's file lands on a host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// The file's path.
    pub destination: String,
    /// Its owner.
    pub owner: String,
    /// Its group.
    pub group: String,
    /// Its permission bits.
    pub mode: u32,
}

impl Placement {
    /// The mode as four octal digits (`0400`).
    #[must_use]
    pub fn mode_string(&self) -> String {
        format!("{:04o}", self.mode)
    }
}

impl SecretSpec {
    /// The mode as four octal digits (`0400`).
    #[must_use]
    pub fn mode_string(&self) -> String {
        self.placement().mode_string()
    }

    /// Where and how it lands on its hosts.
    #[must_use]
    pub fn placement(&self) -> Placement {
        Placement {
            destination: self.destination.clone(),
            owner: self.owner.clone(),
            group: self.group.clone(),
            mode: self.mode,
        }
    }

    /// The hosts of `hosts` this secret goes to.
    #[must_use]
    pub fn targets<'a>(
        &self,
        hosts: &'a BTreeMap<Address, std::sync::Arc<HostInfo>>,
    ) -> Vec<&'a Address> {
        let Ok(selection) = Selection::parse(&self.hosts) else {
            return Vec::new();
        };
        if selection.is_all() {
            return Vec::new();
        }
        hosts
            .iter()
            .filter(|(address, info)| selection.matches(address, &info.tags))
            .map(|(address, _)| address)
            .collect()
    }
}
