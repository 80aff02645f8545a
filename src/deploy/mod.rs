//! The NixOS pipeline: build each host's system, copy only the store paths
//! the host lacks over SSH, activate with rollback, check health, record.

mod activate;
pub mod build;
pub mod cache;
pub mod clusters;
pub(crate) mod copy;
pub mod export;
pub mod gates;
mod health;
mod identity;
pub mod nix;
pub mod pathinfo;
mod profile;
mod rollback;
mod run;
pub mod secrets;
mod serve;
pub mod target;

pub use crate::ui::progress::Progress;
pub use copy::human_bytes;
pub use identity::{Deployer, PENDING_KEY};
pub use profile::{current_system, PROFILE};
pub use rollback::rollback_host;
pub use run::{apply, DeployReport};

use std::sync::Arc;

use crate::spec::Spec;
use target::Pool;

/// What every deploy step of one run shares.
#[derive(Debug, Clone)]
pub struct DeployContext {
    /// The spec: the command's own, shared, not copied (at fleet scale a
    /// spec is tens of MiB).
    pub spec: Arc<Spec>,
    /// One SSH connection per host for the run.
    pub pool: Pool,
    /// The deployer's key, when the run needs one (a host with a system or
    /// a machine prov creates, or a secret).
    pub deployer: Option<Deployer>,
    /// Record host keys seen for the first time (`--accept-new-host-keys`).
    pub accept_new_host_keys: bool,
    /// The binary cache hosts substitute from, with prov's signing key
    /// (apply only: a plan signs nothing).
    pub cache: Option<(crate::spec::cache::CacheSettings, cache::CacheKey)>,
    /// The run's exports, each streamed to every host that needs it.
    pub exports: std::sync::Arc<export::Exports>,
}

/// Whether deploying `spec` needs the deployer's key: a host with a system,
/// a machine prov creates (it authorizes the key), or a secret (secrets
/// travel over SSH, also to hosts with no system).
fn needs_deployer_key(spec: &Spec) -> bool {
    spec.hosts
        .values()
        .any(|h| h.deploy.is_some() || h.target.receives_deployer_key())
        || !spec.secrets.is_empty()
}

impl DeployContext {
    /// The context of a run that deploys `spec`. With `make_key`, a deployer
    /// key the spec leaves to prov is generated when it does not exist yet
    /// (apply); without, it shows as [`PENDING_KEY`] (plan writes nothing).
    ///
    /// # Errors
    /// When the deployer's key cannot be read or generated.
    pub fn new(
        spec: &Arc<Spec>,
        make_key: bool,
        accept_new_host_keys: bool,
    ) -> anyhow::Result<Self> {
        let deployer = if needs_deployer_key(spec) {
            Some(if make_key {
                Deployer::ensure(spec)?
            } else {
                Deployer::existing(spec)?
            })
        } else {
            None
        };
        let cache = match &spec.cache {
            Some(settings) if make_key => Some((settings.clone(), cache::CacheKey::ensure(spec)?)),
            _ => None,
        };
        Ok(Self {
            spec: Arc::clone(spec),
            pool: Pool::default(),
            deployer,
            accept_new_host_keys,
            cache,
            exports: std::sync::Arc::default(),
        })
    }

    /// The deployer's private key file (empty when the run needs none).
    #[must_use]
    pub fn identity(&self) -> &std::path::Path {
        self.deployer
            .as_ref()
            .map_or(std::path::Path::new(""), |d| d.private.as_path())
    }

    /// How to reach `address` (described by `info`) as `doc` records it,
    /// with the run's key and host-key policy (see [`target::endpoint`]).
    ///
    /// # Errors
    /// When the host has no address yet, or no key can be pinned.
    pub fn endpoint(
        &self,
        info: &crate::spec::HostInfo,
        address: &prov_provider::Address,
        doc: &prov_state::StateDocument,
    ) -> anyhow::Result<target::Endpoint> {
        target::endpoint(
            &self.spec,
            info,
            address,
            doc,
            self.identity(),
            self.accept_new_host_keys,
        )
    }

    /// The deployer's public key line, when the run has one.
    #[must_use]
    pub fn deployer_key(&self) -> Option<&str> {
        self.deployer.as_ref().map(|d| d.public.as_str())
    }
}
