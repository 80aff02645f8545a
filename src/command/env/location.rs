//! Which deployment an environment command works on: the spec's, or,
//! when the spec is gone, the state location `--state` gives (what
//! `prov env down` and `prov gc` need is recorded in state).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context as _, Result};
use prov_state::{EnvironmentRecord, S3Settings, StateBackend, StateDocument};

use crate::cli::Cli;
use crate::cli_env::StateLocationArgs;
use crate::command::context::{open_backend, open_environment_backend};
use crate::command::Context;
use crate::spec::model::StateBackendSettings;
use crate::spec::Spec;

/// The deployment an environment command works on.
#[derive(Debug, Clone)]
pub(super) struct Base {
    /// The spec, or one made from `--state` (no resources; the deployment
    /// name is learnt from state).
    pub spec: Spec,
    /// Whether `spec` was read from a file.
    pub from_file: bool,
    /// `--state-dir`, for the embedded state.
    state_dir: Option<PathBuf>,
}

impl Base {
    /// The spec named by `-f` when it exists and `--state` is not given;
    /// else a spec with only the state location (`--state`, or `.prov`).
    ///
    /// # Errors
    /// An invalid spec or location.
    pub fn load(cli: &Cli, location: &StateLocationArgs) -> Result<Self> {
        let state_dir = cli.state_dir.clone();
        if location.state.is_none() && cli.file.exists() {
            return Ok(Self {
                spec: crate::spec::load(&cli.file)?,
                from_file: true,
                state_dir,
            });
        }
        let mut spec = Spec::of_resources("", Vec::new());
        spec.source = std::env::current_dir()
            .context("reading the current directory")?
            .join("prov.toml");
        match location.state.as_deref() {
            None => {}
            Some(text) if text.starts_with("s3://") => {
                let settings = S3Settings::from_url(text).map_err(anyhow::Error::msg)?;
                spec.state.backend = StateBackendSettings::S3(settings);
            }
            Some(text) => {
                let path = text.strip_prefix("embedded:").unwrap_or(text);
                if path.is_empty() || path.contains("://") {
                    bail!("`{text}` is not a state location: use s3://BUCKET/KEY, embedded:PATH or a directory path");
                }
                spec.state.path = PathBuf::from(path);
            }
        }
        Ok(Self {
            spec,
            from_file: false,
            state_dir,
        })
    }

    /// The deployment's own state.
    ///
    /// # Errors
    /// As [`open_backend`].
    pub fn backend(&self) -> Result<Arc<dyn StateBackend>> {
        open_backend(&self.spec, self.state_dir.as_deref())
    }

    /// The state of the environment `name`.
    ///
    /// # Errors
    /// An invalid name; as [`open_backend`].
    pub fn environment_backend(&self, name: &str) -> Result<Arc<dyn StateBackend>> {
        open_environment_backend(&self.spec, self.state_dir.as_deref(), name)
    }

    /// The directory or URL the deployment's state is at, for messages.
    pub fn describe_state(&self) -> String {
        match &self.spec.state.backend {
            StateBackendSettings::S3(s3) => s3.url(),
            StateBackendSettings::Embedded => self
                .state_dir
                .as_deref()
                .unwrap_or(Path::new(&self.spec.state.path))
                .display()
                .to_string(),
        }
    }

    /// What tearing down the environment in `doc` works with: no
    /// resources (everything in its state goes), the providers' settings it
    /// recorded, and its names; on its state `backend`.
    ///
    /// # Errors
    /// When `doc` is not an environment's state, or its record does not
    /// read.
    pub fn teardown_context(
        &self,
        doc: &StateDocument,
        backend: Arc<dyn StateBackend>,
    ) -> Result<(Context, EnvironmentRecord)> {
        let record = doc.environment.clone().with_context(|| {
            format!(
                "{} is not an environment's state (it has no environment record)",
                backend.describe()
            )
        })?;
        let mut spec = Spec::of_resources(&doc.deployment, Vec::new());
        spec.source.clone_from(&self.spec.source);
        spec.state = self.spec.state.clone();
        spec.environments = self.spec.environments;
        spec.providers = crate::environments::recorded::restore(&record.settings)?;
        let spec = spec.in_environment(record.clone());
        Ok((
            Context {
                spec: Arc::new(spec),
                backend,
            },
            record,
        ))
    }
}
