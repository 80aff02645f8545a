//! The state document being applied, and saving it.

use std::sync::Arc;

use anyhow::{Context, Result};
use prov_state::{LockGuard, StateBackend, StateDocument};

/// The state of one run: the backend, the lock held on it, and the document as
/// it is now. Saving writes a new serial only when the content changed.
#[derive(Debug)]
pub struct StateSession {
    backend: Arc<dyn StateBackend>,
    guard: LockGuard,
    /// The document as it is now (saved or not).
    pub doc: StateDocument,
    saved: Option<StateDocument>,
}

impl StateSession {
    /// A session over `doc`, as last read from `backend` (`stored`), holding
    /// `guard`.
    #[must_use]
    pub fn new(
        backend: Arc<dyn StateBackend>,
        guard: LockGuard,
        doc: StateDocument,
        stored: Option<StateDocument>,
    ) -> Self {
        Self {
            backend,
            guard,
            doc,
            saved: stored,
        }
    }

    /// Writes the document as a new version if its content changed.
    ///
    /// # Errors
    /// When the backend refuses the write.
    pub async fn save(&mut self) -> Result<()> {
        if let Some(saved) = &self.saved {
            if saved.same_content(&self.doc) {
                return Ok(());
            }
            self.doc.serial = saved.serial + 1;
        } else {
            self.doc.serial = self.doc.serial.max(1);
        }
        self.backend
            .write(&self.guard, &self.doc)
            .await
            .with_context(|| format!("saving state to {}", self.backend.describe()))?;
        self.saved = Some(self.doc.clone());
        Ok(())
    }

    /// Releases the lock.
    ///
    /// # Errors
    /// When the backend cannot release it.
    pub async fn close(self) -> Result<()> {
        self.backend.unlock(self.guard).await?;
        Ok(())
    }
}
