//! Holding the state lock for the length of a command, in one place:
//! [`Context::with_session`] (the lock and the latest document, saved
//! through a [`StateSession`]) and [`Context::with_lock`] / [`held`] (the
//! lock alone). Each runs its body, always releases the lock, and reports
//! the body's error before any error releasing the lock.

use std::sync::Arc;

use anyhow::{anyhow, Result};
use prov_state::{StateBackend, StateDocument, StateLock};
use tokio::sync::Mutex;

use crate::apply::StateSession;
use crate::cli::Cli;
use crate::command::Context;

impl Context {
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
