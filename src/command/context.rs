//! What most commands share: the spec, the state backend, the lock, the
//! providers.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context as _, Result};
use prov_state::{EmbeddedBackend, LockInfo, StateBackend, StateDocument, StateLock};

use crate::cli::Cli;
use crate::providers::Providers;
use crate::spec::model::StateBackendSettings;
use crate::spec::{self, Spec};

/// The spec and its state backend.
#[derive(Debug)]
pub struct Context {
    /// The validated spec.
    pub spec: Spec,
    /// Where its state lives.
    pub backend: Arc<dyn StateBackend>,
}

impl Context {
    /// Loads the spec named on the command line and opens its backend.
    ///
    /// # Errors
    /// When the spec is invalid.
    pub fn load(cli: &Cli) -> Result<Self> {
        let spec = spec::load(&cli.file)?;
        let backend = open_backend(&spec, cli.state_dir.as_deref())?;
        Ok(Self { spec, backend })
    }

    /// Takes the state lock for `operation`, waiting as long as
    /// `--lock-timeout` allows. Commands hold it through
    /// [`Context::with_session`] or [`Context::with_lock`], which release it
    /// however the work ends.
    ///
    /// # Errors
    /// When someone else holds it (the message names them).
    pub async fn lock(&self, cli: &Cli, operation: &str) -> Result<Box<dyn StateLock>> {
        Ok(self
            .backend
            .lock(LockInfo::for_this_process(operation), cli.lock_timeout)
            .await?)
    }

    /// Reads the latest state, checking that it belongs to this deployment.
    ///
    /// # Errors
    /// When state cannot be read or belongs to another deployment.
    pub async fn read_state(&self) -> Result<Option<StateDocument>> {
        let doc = self
            .backend
            .read()
            .await
            .with_context(|| format!("reading {}", self.backend.describe()))?;
        if let Some(doc) = &doc {
            if !doc.deployment.is_empty() && doc.deployment != self.spec.deployment {
                bail!(
                    "{} belongs to deployment `{}`, but the spec is for `{}`",
                    self.backend.describe(),
                    doc.deployment,
                    self.spec.deployment
                );
            }
        }
        Ok(doc)
    }

    /// The providers the spec's resources and `doc`'s records use.
    ///
    /// # Errors
    /// When a provider cannot be set up.
    pub async fn providers(&self, doc: &StateDocument) -> Result<Providers> {
        let needed: BTreeSet<String> = self
            .spec
            .resources
            .iter()
            .map(|r| r.provider.clone())
            .chain(doc.resources.values().map(|r| r.provider.clone()))
            .collect();
        Providers::for_spec(&self.spec, &needed).await
    }
}

/// The backend `[state]` of `spec` names: embedded (in `state_dir` when
/// given, else `[state] path`) or S3 (connected on first use).
///
/// # Errors
/// `state_dir` with an S3 backend, or invalid S3 settings.
pub fn open_backend(spec: &Spec, state_dir: Option<&Path>) -> Result<Arc<dyn StateBackend>> {
    open_backend_encrypted(spec, state_dir, false)
}

/// [`open_backend`], wrapped in encryption when `[state] encrypt_to` is set;
/// `allow_plaintext` lets plaintext versions be read (`prov state encrypt`).
///
/// # Errors
/// As [`open_backend`].
pub fn open_backend_encrypted(
    spec: &Spec,
    state_dir: Option<&Path>,
    allow_plaintext: bool,
) -> Result<Arc<dyn StateBackend>> {
    let backend = open_plain_backend(spec, state_dir)?;
    if spec.state.encrypt_to.is_empty() {
        return Ok(Arc::new(crate::secrets::state::PlaintextBackend::new(
            backend,
        )));
    }
    Ok(Arc::new(crate::secrets::state::EncryptedBackend::new(
        backend,
        spec.state.encrypt_to.clone(),
        state_identity(spec),
        allow_plaintext,
    )))
}

/// The deployer's key, tried as an age identity for encrypted state and
/// saved plans when `PROV_AGE_IDENTITY` is not set.
#[must_use]
pub fn state_identity(spec: &Spec) -> Option<std::path::PathBuf> {
    spec.deploy.identity_file.clone().or_else(|| {
        spec.source
            .parent()
            .map(|dir| dir.join(".prov").join("ssh").join("id_ed25519"))
    })
}

/// The directory of the embedded state (`state_dir` when given, else
/// `[state] path`); `None` when the state is in S3.
#[must_use]
pub fn embedded_dir(spec: &Spec, state_dir: Option<&Path>) -> Option<std::path::PathBuf> {
    match &spec.state.backend {
        StateBackendSettings::Embedded => {
            Some(state_dir.map_or_else(|| spec.state.path.clone(), Path::to_path_buf))
        }
        StateBackendSettings::S3(_) => None,
    }
}

fn open_plain_backend(spec: &Spec, state_dir: Option<&Path>) -> Result<Arc<dyn StateBackend>> {
    match &spec.state.backend {
        StateBackendSettings::Embedded => {
            let dir = state_dir.map_or_else(|| spec.state.path.clone(), Path::to_path_buf);
            Ok(Arc::new(EmbeddedBackend::new(dir)))
        }
        StateBackendSettings::S3(settings) => {
            if let Some(dir) = state_dir {
                bail!(
                    "--state-dir (or PROV_STATE_DIR) {} names an embedded state directory, but {} keeps its state in S3 ({}); unset it, or move the state with `prov state migrate --to embedded:{}`",
                    dir.display(),
                    spec.source.display(),
                    settings.url(),
                    dir.display()
                );
            }
            super::s3_backend::open(settings)
        }
    }
}
