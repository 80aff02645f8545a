//! Opening a state session: the lock, then the latest document.

use std::sync::Arc;

use anyhow::Result;
use prov_state::StateDocument;

use crate::apply::StateSession;
use crate::cli::Cli;
use crate::command::Context;

impl Context {
    /// Takes the lock for `operation` and reads the latest state (a new
    /// document when there is none); the lock is released again if reading
    /// fails.
    ///
    /// # Errors
    /// When the lock is held elsewhere or state cannot be read.
    pub async fn session(&self, cli: &Cli, operation: &str) -> Result<StateSession> {
        let guard = self.lock(cli, operation).await?;
        let stored = match self.read_state().await {
            Ok(stored) => stored,
            Err(error) => {
                guard.unlock().await?;
                return Err(error);
            }
        };
        let doc = stored
            .clone()
            .unwrap_or_else(|| StateDocument::new(&self.spec.deployment));
        Ok(
            StateSession::new(Arc::clone(&self.backend), guard, doc, stored)
                .keeping(self.spec.state.keep_versions),
        )
    }
}
