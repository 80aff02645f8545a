//! The validated deployment spec: what every front end (TOML, Nix) produces.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use prov_provider::{Address, ResourceConfig};

use super::host::{DeploySettings, DeploySpec, HealthSpec, SshSpec};
pub use crate::providers::{ProviderSettings, Target};

/// A whole deployment, validated: names unique, references resolved to
/// addresses, no cycles.
#[derive(Debug, Clone, PartialEq)]
pub struct Spec {
    /// The file the spec was read from.
    pub source: PathBuf,
    /// The deployment name (`deployment = "…"`), used in tags and object names.
    pub deployment: String,
    /// SHA-256 (hex) of the spec file's bytes; a saved plan records it.
    pub source_hash: String,
    /// Provider settings.
    pub providers: ProviderSettings,
    /// Where state lives.
    pub state: StateSettings,
    /// Every resource, hosts expanded by `count`, sorted by address.
    pub resources: Vec<ResourceConfig>,
    /// Host metadata used for selection (`--on`), by host address; the
    /// hosts of one group (`count`) share theirs.
    pub hosts: BTreeMap<Address, Arc<HostInfo>>,
    /// Outputs by name.
    pub outputs: BTreeMap<String, OutputSpec>,
    /// `[deploy]`: deployment-wide settings for system deploys.
    pub deploy: DeploySettings,
    /// `[secrets.NAME]` by name.
    pub secrets: BTreeMap<String, super::secrets::SecretSpec>,
    /// `[kubernetes.NAME]` by name.
    pub kubernetes: BTreeMap<String, super::kubernetes::ClusterSpec>,
    /// `[[moved]]`: old addresses and the new ones of their objects, in
    /// order.
    pub moved: Vec<super::moved::Move>,
    /// `[environments]`.
    pub environments: super::environments::EnvironmentSettings,
    /// `[cache]`: the binary cache hosts substitute from.
    pub cache: Option<super::cache::CacheSettings>,
    /// The environment this spec is applied as (`prov env up NAME`), if
    /// any: names and tags carry it ([`Spec::in_environment`]).
    pub environment: Option<prov_state::EnvironmentRecord>,
    /// Tag values that name the environment (`${env}`), as written.
    pub env_templates: Vec<crate::environments::Template>,
}

impl Spec {
    /// A spec made in code rather than read from a file: `resources` (sorted
    /// here) of `deployment`, state in `.prov`, every other setting at its
    /// default, no hosts, outputs or secrets.
    #[must_use]
    pub fn of_resources(deployment: &str, mut resources: Vec<ResourceConfig>) -> Self {
        resources.sort_by(|a, b| a.address.cmp(&b.address));
        Self {
            source: PathBuf::from("prov.toml"),
            deployment: deployment.to_owned(),
            source_hash: "0".repeat(64),
            providers: ProviderSettings::default(),
            state: StateSettings {
                path: PathBuf::from(".prov"),
                backend: StateBackendSettings::default(),
                encrypt_to: Vec::new(),
                keep_versions: None,
            },
            resources,
            hosts: BTreeMap::new(),
            outputs: BTreeMap::new(),
            deploy: DeploySettings::default(),
            secrets: BTreeMap::new(),
            kubernetes: BTreeMap::new(),
            moved: Vec::new(),
            environments: super::environments::EnvironmentSettings::default(),
            cache: None,
            environment: None,
            env_templates: Vec::new(),
        }
    }
}

/// `[state]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateSettings {
    /// Directory of the embedded state, resolved against the spec's directory
    /// (default `.prov` next to the spec); used when `backend` is
    /// [`StateBackendSettings::Embedded`].
    pub path: PathBuf,
    /// Which backend keeps the state.
    pub backend: StateBackendSettings,
    /// `encrypt_to`: age recipients the whole state document is encrypted
    /// to (empty: state is stored as plain JSON).
    pub encrypt_to: Vec<String>,
    /// `keep_versions`: history keeps the newest this many versions, older
    /// ones are pruned after each command that writes state (`None`: every
    /// version is kept).
    pub keep_versions: Option<u64>,
}

pub use prov_state::S3Settings;

/// `[state] backend = …`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum StateBackendSettings {
    /// `embedded` (the default): a database in [`StateSettings::path`].
    #[default]
    Embedded,
    /// `s3`: team-shared state in an S3 bucket.
    S3(S3Settings),
}

/// What selection needs to know about one host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostInfo {
    /// The host's name without index (`web` for `web[2]`).
    pub name: String,
    /// The host's user tags (`tags = { role = "web" }`).
    pub tags: BTreeMap<String, String>,
    /// Where it runs: a provider's machine, or an existing one reached over
    /// SSH.
    pub target: Target,
    /// The NixOS system to deploy, if any.
    pub deploy: Option<DeploySpec>,
    /// SSH overrides.
    pub ssh: SshSpec,
    /// The pinned SSH host key from the spec, if given.
    pub host_key: Option<String>,
    /// Health checks after activation.
    pub health: Option<HealthSpec>,
    /// Its part in a Kubernetes cluster, if any.
    pub kubernetes: Option<super::kubernetes::HostKube>,
}

/// One output: `ADDRESS.ATTRIBUTE`, where ADDRESS may use `[*]` to collect a
/// list over every index of a counted resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputSpec {
    /// The resource address pattern (`web[*]`, `web[0]`, `security_group.web`).
    pub address: String,
    /// The attribute to read (`public_ip`, `id`).
    pub attribute: String,
}
