//! What most commands share: the spec, the state backend, the providers,
//! and holding the state lock for the length of a command, in one place:
//! [`Context::with_session`] (the lock and the latest document, saved
//! through a [`StateSession`]) and [`Context::with_lock`] / [`held`] (the
//! lock alone). Each runs its body, always releases the lock, and reports
//! the body's error before any error releasing the lock.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use anyhow::{anyhow, bail, Context as _, Result};
use prov_state::{EmbeddedBackend, LockInfo, StateBackend, StateDocument, StateLock};
use tokio::sync::Mutex;

use crate::cli::Cli;
use crate::providers::Providers;
use crate::session::StateSession;
use crate::spec::model::StateBackendSettings;
use crate::spec::{self, Spec};

/// The spec and its state backend.
#[derive(Debug)]
pub struct Context {
    /// The validated spec, shared with the run's [`crate::deploy::DeployContext`].
    pub spec: Arc<Spec>,
    /// Where its state lives.
    pub backend: Arc<dyn StateBackend>,
}

impl Context {
    /// Loads the spec named on the command line and opens its backend.
    ///
    /// # Errors
    /// When the spec is invalid.
    /// With `--env NAME`, the spec applied as that environment, on its
    /// state.
    ///
    /// # Errors
    /// When the spec is invalid, or `--env` names no environment.
    pub async fn load(cli: &Cli) -> Result<Self> {
        let spec = spec::load(&cli.file)?;
        let Some(name) = &cli.env else {
            let backend = open_backend(&spec, cli.state_dir.as_deref())?;
            return Ok(Self {
                spec: Arc::new(spec),
                backend,
            });
        };
        let backend = open_environment_backend(&spec, cli.state_dir.as_deref(), name)?;
        let record = backend
            .read()
            .await
            .with_context(|| format!("reading {}", backend.describe()))?
            .and_then(|doc| doc.environment)
            .with_context(|| {
                format!(
                    "there is no environment `{name}` ({} holds none); bring it up with `prov env up {name}`",
                    backend.describe()
                )
            })?;
        Ok(Self {
            spec: Arc::new(spec.in_environment(record)),
            backend,
        })
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

    /// Whether any state was written, without reading it (see
    /// [`StateBackend::exists`]): whose it is, [`Context::read_state`]
    /// checks.
    ///
    /// # Errors
    /// When state cannot be read.
    pub async fn state_exists(&self) -> Result<bool> {
        self.backend
            .exists()
            .await
            .with_context(|| format!("reading {}", self.backend.describe()))
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

    /// Takes the lock for `operation`, reads the latest state (a new
    /// document when there is none) into a session and runs `body` with it;
    /// then closes the session, which releases the lock, whatever `body`
    /// returned. The session is shared (`Arc<Mutex<…>>`) so that `body` can
    /// hand it to concurrent tasks; they must be done with it when `body`
    /// returns.
    ///
    /// # Errors
    /// When the lock is held elsewhere or state cannot be read; else the
    /// error of `body`, or else of closing the session.
    pub async fn with_session<T>(
        &self,
        cli: &Cli,
        operation: &str,
        body: impl AsyncFnOnce(&Arc<Mutex<StateSession>>) -> Result<T>,
    ) -> Result<T> {
        let lock = self.lock(cli, operation).await?;
        let stored = match self.read_state().await {
            Ok(stored) => stored,
            Err(error) => {
                let released = lock.unlock().await;
                return settle(
                    Err(error),
                    released.map_err(anyhow::Error::from),
                    &self.backend.describe(),
                );
            }
        };
        let doc = stored
            .clone()
            .unwrap_or_else(|| StateDocument::new(&self.spec.deployment));
        let session = Arc::new(Mutex::new(
            StateSession::new(Arc::clone(&self.backend), lock, doc, stored)
                .keeping(self.spec.state.keep_versions),
        ));
        let outcome = body(&session).await;
        let closed = match Arc::try_unwrap(session) {
            Ok(session) => session.into_inner().close().await,
            // The writer releases the lock once the last handle is gone.
            Err(_) => Err(anyhow!(
                "internal error: tasks of `{operation}` still hold the state session"
            )),
        };
        settle(outcome, closed, &self.backend.describe())
    }

    /// Takes the lock for `operation`, runs `body` with it and releases it,
    /// whatever `body` returned (see [`held`]).
    ///
    /// # Errors
    /// When the lock is held elsewhere; else the error of `body`, or else of
    /// releasing the lock.
    pub async fn with_lock<T>(
        &self,
        cli: &Cli,
        operation: &str,
        body: impl AsyncFnOnce(&dyn StateLock) -> Result<T>,
    ) -> Result<T> {
        held(&*self.backend, self.lock(cli, operation).await?, body).await
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
    let backend = open_plain_backend(spec, state_dir, None)?;
    wrap(spec, backend, allow_plaintext)
}

/// The backend of the environment `name`'s state, beside the deployment's
/// (`DIR/envs/NAME`, `KEY.envs/NAME/state.json`), encrypted like it.
///
/// # Errors
/// An invalid environment name; as [`open_backend`].
pub fn open_environment_backend(
    spec: &Spec,
    state_dir: Option<&Path>,
    name: &str,
) -> Result<Arc<dyn StateBackend>> {
    prov_state::environment::check_name(name).map_err(anyhow::Error::msg)?;
    let backend = open_plain_backend(spec, state_dir, Some(name))?;
    wrap(spec, backend, false)
}

/// `backend` in encryption when `[state] encrypt_to` is set, else in the
/// check that refuses encrypted documents.
fn wrap(
    spec: &Spec,
    backend: Arc<dyn StateBackend>,
    allow_plaintext: bool,
) -> Result<Arc<dyn StateBackend>> {
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

fn open_plain_backend(
    spec: &Spec,
    state_dir: Option<&Path>,
    environment: Option<&str>,
) -> Result<Arc<dyn StateBackend>> {
    match &spec.state.backend {
        StateBackendSettings::Embedded => {
            let dir = state_dir.map_or_else(|| spec.state.path.clone(), Path::to_path_buf);
            let dir = match environment {
                Some(name) => EmbeddedBackend::environment_dir(&dir, name),
                None => dir,
            };
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
            match environment {
                Some(name) => super::s3_backend::open(&settings.for_environment(name)),
                None => super::s3_backend::open(settings),
            }
        }
    }
}

/// Runs `body` with `lock`, taken on `backend`, then releases it whatever
/// `body` returned.
///
/// # Errors
/// The error of `body`; else the error of releasing the lock.
pub async fn held<T>(
    backend: &dyn StateBackend,
    lock: Box<dyn StateLock>,
    body: impl AsyncFnOnce(&dyn StateLock) -> Result<T>,
) -> Result<T> {
    let outcome = body(&*lock).await;
    let released = lock.unlock().await;
    settle(
        outcome,
        released.map_err(anyhow::Error::from),
        &backend.describe(),
    )
}

/// What a body run under the lock on `state` comes to, given how
/// releasing the lock went: the body's error first (a release failing after
/// it is logged, never put in its place), else the release's.
fn settle<T>(outcome: Result<T>, released: Result<()>, state: &str) -> Result<T> {
    match (outcome, released) {
        (outcome, Ok(())) => outcome,
        (Ok(_), Err(error)) => Err(error.context(format!("releasing the lock on {state}"))),
        (Err(error), Err(release)) => {
            tracing::warn!("releasing the lock on {state} after an error: {release:#}");
            Err(error)
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn the_body_error_comes_first_and_a_release_error_never_hides_it() {
        let body = || Err::<(), _>(anyhow!("the body failed"));
        let release = || Err(anyhow!("the lock is gone"));
        let error = settle(body(), release(), "nowhere").unwrap_err();
        assert_eq!(format!("{error:#}"), "the body failed");
        let error = settle(body(), Ok(()), "nowhere").unwrap_err();
        assert_eq!(format!("{error:#}"), "the body failed");
        let error = settle(Ok(()), release(), "nowhere").unwrap_err();
        assert_eq!(
            format!("{error:#}"),
            "releasing the lock on nowhere: the lock is gone"
        );
        assert_eq!(settle(Ok(7), Ok(()), "nowhere").unwrap(), 7);
    }
}
