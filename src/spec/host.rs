//! What the spec says about deploying NixOS systems to hosts: the system to
//! build, how to activate it, how to reach the host over SSH, how to check
//! its health.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Where a host's system closure comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SystemSource {
    /// An existing store path (`system = "/nix/store/…"`).
    StorePath(String),
    /// `nix-build FILE -A ATTR` (`nix = { file = "…", attr = "…" }`).
    Nix {
        /// The Nix file, resolved against the spec's directory.
        file: PathBuf,
        /// The attribute path, if any.
        attr: Option<String>,
    },
    /// `nix build REF` (`flake = ".#nixosConfigurations.web.config.system.build.toplevel"`).
    Flake(String),
}

pub use prov_state::Goal;

/// Where the closure is built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BuildOn {
    /// On the machine running prov; the closure is copied.
    Local,
    /// On the host: the derivations are copied and realised there.
    Target,
}

/// How one host's system is deployed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeploySpec {
    /// The system to deploy.
    pub system: SystemSource,
    /// The activation goal.
    pub goal: Goal,
    /// Where to build.
    pub build_on: BuildOn,
    /// Let the host fetch paths from its own substituters before copying.
    pub substitute_on_destination: bool,
    /// Roll back unless prov confirms over a new connection within this time;
    /// zero disables rollback.
    pub confirm_timeout: Duration,
}

/// How to reach a host over SSH; every field overrides what the provider
/// reports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SshSpec {
    /// Address to connect to.
    pub address: Option<String>,
    /// Port.
    pub port: Option<u16>,
    /// User (non-root users run privileged commands through `sudo -n`).
    pub user: Option<String>,
    /// Private key file.
    pub identity_file: Option<PathBuf>,
    /// A bastion to connect through.
    pub jump: Option<JumpSpec>,
}

/// A jump host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JumpSpec {
    /// Its address.
    pub address: String,
    /// Its port (22).
    pub port: u16,
    /// Its user (root).
    pub user: String,
    /// Its pinned host key.
    pub host_key: Option<String>,
}

/// Health checks run after activation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthSpec {
    /// A command run on the host; exit 0 is healthy.
    pub command: Option<String>,
    /// A URL fetched from the deployer; a 2xx answer is healthy. `{address}`
    /// is replaced by the host's SSH address.
    pub http: Option<String>,
    /// Attempts before giving up.
    pub retries: u32,
    /// Pause between attempts.
    pub interval: Duration,
    /// Limit of one attempt.
    pub timeout: Duration,
}

/// What to do with the remaining hosts when one fails.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum OnFailure {
    /// Start no further host (hosts already underway finish).
    #[default]
    Stop,
    /// Deploy every host that can be.
    Continue,
}

/// Deployment-wide settings (`[deploy]`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeploySettings {
    /// Policy when a host fails.
    pub on_failure: OnFailure,
    /// Default SSH user (root).
    pub user: Option<String>,
    /// Default private key; prov generates one under the state directory
    /// when none is given.
    pub identity_file: Option<PathBuf>,
    /// Try ssh-agent (SSH_AUTH_SOCK) too.
    pub use_agent: bool,
}
