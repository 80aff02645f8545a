//! What most commands share: the spec, the state backend, the lock, the
//! providers.

use std::collections::BTreeSet;
use std::sync::Arc;

use anyhow::{bail, Context as _, Result};
use prov_state::{EmbeddedBackend, LockGuard, LockInfo, StateBackend, StateDocument};

use crate::cli::Cli;
use crate::providers::Providers;
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
        let dir = cli
            .state_dir
            .clone()
            .unwrap_or_else(|| spec.state.path.clone());
        let backend: Arc<dyn StateBackend> = Arc::new(EmbeddedBackend::new(dir));
        Ok(Self { spec, backend })
    }

    /// Takes the state lock for `operation`, waiting as long as
    /// `--lock-timeout` allows.
    ///
    /// # Errors
    /// When someone else holds it (the message names them).
    pub async fn lock(&self, cli: &Cli, operation: &str) -> Result<LockGuard> {
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
