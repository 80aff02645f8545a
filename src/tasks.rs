//! Tasks running at once, each keyed by what it works on (a resource, a
//! host), joined with Ctrl-C handling: the one loop the resource scheduler
//! and the deploy runner share.
//!
//! After the first signal, [`Tasks::next`] says so once
//! ([`Joined::Stopping`]) so the caller starts nothing new; after the grace
//! period it abandons whatever still runs, and each abandoned task comes
//! back as [`Joined::Abandoned`]. A task that panics comes back as
//! [`Joined::Panicked`] with its key: it never takes the others down.

use std::collections::BTreeMap;
use std::future::Future;

use tokio::task::{Id, JoinError, JoinSet};

use crate::interrupt;

/// Tasks keyed by `K`, each producing a `T`.
#[derive(Debug)]
pub struct Tasks<K, T> {
    running: JoinSet<T>,
    keys: BTreeMap<Id, K>,
    stopping_said: bool,
    abandoned: bool,
}

/// What [`Tasks::next`] found.
#[derive(Debug)]
pub enum Joined<K, T> {
    /// The task for `K` finished with `T`.
    Done(K, T),
    /// The task for `K` panicked, saying this.
    Panicked(K, String),
    /// The task for `K` was abandoned after an interruption.
    Abandoned(K),
    /// A signal was received: start nothing new (said once).
    Stopping,
}

impl<K, T: Send + 'static> Default for Tasks<K, T> {
    fn default() -> Self {
        Self {
            running: JoinSet::new(),
            keys: BTreeMap::new(),
            stopping_said: false,
            abandoned: false,
        }
    }
}

impl<K, T: Send + 'static> Tasks<K, T> {
    /// Starts `task` for `key`.
    pub fn spawn(&mut self, key: K, task: impl Future<Output = T> + Send + 'static) {
        let handle = self.running.spawn(task);
        self.keys.insert(handle.id(), key);
    }

    /// How many tasks run.
    #[must_use]
    pub fn len(&self) -> usize {
        self.running.len()
    }

    /// Whether no task runs.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.running.is_empty()
    }

    /// The next task to end (or [`Joined::Stopping`] once after a signal);
    /// `None` when none runs.
    pub async fn next(&mut self) -> Option<Joined<K, T>> {
        loop {
            let joined = tokio::select! {
                joined = self.running.join_next_with_id() => joined?,
                () = interrupt::stopping(), if !self.stopping_said => {
                    self.stopping_said = true;
                    return Some(Joined::Stopping);
                }
                () = interrupt::abandoning(), if !self.abandoned && !self.running.is_empty() => {
                    // Abandon the calls in flight. What they recorded before
                    // their call stays (a create stays `creating` with its
                    // token), which the next run settles.
                    self.abandoned = true;
                    self.running.abort_all();
                    continue;
                }
            };
            let (id, outcome) = match joined {
                Ok((id, value)) => (id, Ok(value)),
                Err(error) => (error.id(), Err(error)),
            };
            let Some(key) = self.keys.remove(&id) else {
                continue;
            };
            return Some(match outcome {
                Ok(value) => Joined::Done(key, value),
                Err(error) if error.is_cancelled() => Joined::Abandoned(key),
                Err(error) => Joined::Panicked(key, panic_message(error)),
            });
        }
    }
}

/// What a panicked task said, when it said it in words.
fn panic_message(error: JoinError) -> String {
    match error.try_into_panic() {
        Ok(payload) => payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "(no message)".to_owned()),
        Err(error) => error.to_string(),
    }
}
