//! The TOML document as written, with spans, before any semantic check.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

use super::raw_deploy::{RawDeploy, RawHealth, RawLocal, RawNix, RawSsh};
use crate::providers::Target;

/// A string with its span (names, references, values we may complain about).
pub(crate) type Str = Spanned<String>;

/// A list of strings, spanned as a whole and per entry.
pub(crate) type StrList = Spanned<Vec<Str>>;

/// Tags by key; keys spanned so reserved keys can be pointed at.
pub(crate) type Tags = BTreeMap<Str, String>;

/// The whole document.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSpec {
    /// `deployment = "…"`.
    pub deployment: Str,
    /// `[state]`.
    #[serde(default)]
    pub state: Option<RawState>,
    /// `[providers]`.
    #[serde(default)]
    pub providers: RawProviders,
    /// `[key_pairs.NAME]`.
    #[serde(default)]
    pub key_pairs: BTreeMap<Str, RawKeyPair>,
    /// `[security_groups.NAME]`.
    #[serde(default)]
    pub security_groups: BTreeMap<Str, RawSecurityGroup>,
    /// `[hosts.NAME]`.
    #[serde(default)]
    pub hosts: BTreeMap<Str, RawHost>,
    /// `[outputs]`: NAME = "ADDRESS.ATTRIBUTE".
    #[serde(default)]
    pub outputs: BTreeMap<Str, Str>,
    /// `[deploy]`.
    #[serde(default)]
    pub deploy: RawDeploy,
    /// `[secrets.NAME]`.
    #[serde(default)]
    pub secrets: BTreeMap<Str, super::raw_secrets::RawSecret>,
    /// `[kubernetes.NAME]`.
    #[serde(default)]
    pub kubernetes: BTreeMap<Str, Spanned<super::raw_kube::RawCluster>>,
    /// `[[moved]]`: addresses renamed, objects kept.
    #[serde(default)]
    pub moved: Vec<super::moved::RawMoved>,
    /// `[environments]`.
    #[serde(default)]
    pub environments: Option<super::environments::RawEnvironments>,
    /// `[cache]`.
    #[serde(default)]
    pub cache: Option<super::cache::RawCache>,
}

/// `[state]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawState {
    /// `embedded` (default) or `s3`.
    pub backend: Option<Str>,
    /// Directory of the embedded state.
    pub path: Option<Str>,
    /// S3: the bucket.
    pub bucket: Option<Str>,
    /// S3: the state object's key (default `DEPLOYMENT/state.json`).
    pub key: Option<Str>,
    /// S3: AWS region.
    pub region: Option<Str>,
    /// S3: endpoint URL.
    pub endpoint: Option<Str>,
    /// S3: AWS profile.
    pub profile: Option<Str>,
    /// S3: workspace (key prefix `workspaces/NAME/`).
    pub workspace: Option<Str>,
    /// Encrypt the whole state document to these age recipients.
    pub encrypt_to: Option<StrList>,
    /// Keep only the newest this many versions in history.
    pub keep_versions: Option<Spanned<i64>>,
}

/// `[providers]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawProviders {
    /// `[providers.ec2]`.
    pub ec2: Option<RawEc2>,
    /// `[providers.local]`.
    pub local: Option<RawLocal>,
    /// `[providers.virtualbox]`.
    pub virtualbox: Option<super::check_virtualbox::RawVirtualBox>,
    /// `[providers.libvirt]`.
    pub libvirt: Option<super::check_libvirt::RawLibvirt>,
}

/// `[providers.ec2]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawEc2 {
    /// AWS region.
    pub region: Option<Str>,
    /// Endpoint URL.
    pub endpoint: Option<Str>,
    /// AWS profile.
    pub profile: Option<Str>,
}

/// `[key_pairs.NAME]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawKeyPair {
    /// The OpenSSH public key text.
    pub public_key: Option<Str>,
    /// A file holding the public key, relative to the spec's directory.
    pub public_key_file: Option<Str>,
    /// User tags.
    #[serde(default)]
    pub tags: Tags,
}

/// `[security_groups.NAME]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSecurityGroup {
    /// Group description.
    pub description: Option<Str>,
    /// VPC to create the group in.
    pub vpc_id: Option<Str>,
    /// User tags.
    #[serde(default)]
    pub tags: Tags,
    /// `[[security_groups.NAME.ingress]]` rules.
    #[serde(default)]
    pub ingress: Vec<Spanned<RawIngress>>,
}

/// One ingress rule.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawIngress {
    /// `tcp`, `udp`, `icmp` or `all`.
    pub protocol: Str,
    /// First port (ICMP type); not needed for `all`.
    pub from_port: Option<Spanned<i64>>,
    /// Last port (ICMP code); not needed for `all`.
    pub to_port: Option<Spanned<i64>>,
    /// Source IPv4 CIDR blocks.
    pub cidr_blocks: StrList,
}

/// `[hosts.NAME]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHost {
    /// Where the host runs: a [`Target`]'s name.
    pub target: Str,
    /// Number of instances; absent means one, unindexed.
    pub count: Option<Spanned<i64>>,
    /// EC2 image id.
    pub ami: Option<Str>,
    /// EC2 instance type.
    pub instance_type: Option<Str>,
    /// EC2 subnet id.
    pub subnet: Option<Str>,
    /// Names of `[security_groups.*]`.
    pub security_groups: Option<StrList>,
    /// Name of a `[key_pairs.*]`.
    pub key_pair: Option<Str>,
    /// User tags.
    #[serde(default)]
    pub tags: Tags,
    /// Inline user data.
    pub user_data: Option<Str>,
    /// User data file, relative to the spec's directory.
    pub user_data_file: Option<Str>,
    /// Names of other hosts to wait for.
    pub depends_on: Option<StrList>,
    /// Fixed loopback address of a `local` host.
    pub address: Option<Str>,
    /// `virtualbox`: the appliance (`.ova`) to import or the VM to clone;
    /// `libvirt`: the base image (a volume, or a file to upload).
    pub base: Option<Str>,
    /// `virtualbox`, `libvirt`: virtual CPUs.
    pub cpus: Option<Spanned<i64>>,
    /// `virtualbox`, `libvirt`: memory in MiB.
    pub memory: Option<Spanned<i64>>,
    /// `[hosts.NAME.libvirt]`: the rest of a libvirt VM.
    pub libvirt: Option<Spanned<super::check_libvirt::RawHostLibvirt>>,
    /// The system as a store path.
    pub system: Option<Str>,
    /// The system built from a Nix file.
    pub nix: Option<Spanned<RawNix>>,
    /// The system built from a flake reference.
    pub flake: Option<Str>,
    /// `switch` (default), `boot`, `test` or `dry-activate`.
    pub goal: Option<Str>,
    /// `local` (default) or `target`.
    pub build_on: Option<Str>,
    /// Let the host substitute before copying.
    pub substitute_on_destination: Option<bool>,
    /// Seconds to wait for confirmation before the host rolls back (0: no rollback).
    pub confirm_timeout: Option<Spanned<i64>>,
    /// Pinned SSH host key.
    pub host_key: Option<Str>,
    /// `[hosts.NAME.ssh]` overrides.
    pub ssh: Option<RawSsh>,
    /// `[hosts.NAME.health]`.
    pub health: Option<RawHealth>,
    /// `[hosts.NAME.kubernetes]`.
    pub kubernetes: Option<Spanned<super::raw_kube::RawHostKube>>,
}

impl RawHost {
    /// The target `target` names; `None` for a name no target has.
    pub fn target(&self) -> Option<Target> {
        Target::from_name(self.target.get_ref())
    }
}
