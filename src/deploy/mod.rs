//! The NixOS pipeline: build each host's system, copy only the store paths
//! the host lacks over SSH, activate with rollback, check health, record.

mod activate;
mod copy;
mod health;
mod identity;
pub mod nix;
mod plan;
mod rollback;
mod run;
pub mod secrets;
pub mod target;

pub use crate::ui::progress::Progress;
pub use copy::human_bytes;
pub use identity::{deployer_identity, existing_deployer_identity, PENDING_KEY};
pub use plan::plan;
pub use rollback::rollback_host;
pub use run::{apply, DeployReport};
pub use secrets::plan as plan_secrets;

use std::path::PathBuf;

use crate::spec::Spec;
use target::Pool;

/// What every deploy step of one run shares.
#[derive(Debug, Clone)]
pub struct DeployContext {
    /// The spec.
    pub spec: Spec,
    /// One SSH connection per host for the run.
    pub pool: Pool,
    /// The deployer's private key.
    pub identity: PathBuf,
    /// Record host keys seen for the first time (`--accept-new-host-keys`).
    pub accept_new_host_keys: bool,
}
