//! Team-shared state in an S3 bucket.
//!
//! Objects, for the state key `KEY` (under `workspaces/NAME/` with a
//! workspace):
//! - `KEY`: the latest document (JSON). Every write is a compare-and-swap:
//!   `If-Match` on the ETag this backend last read or wrote (`If-None-Match: *`
//!   when the object did not exist), so a change made behind prov's back is a
//!   [`StateError::Conflict`], never silently overwritten.
//! - `KEY.history/SERIAL.json` (serial zero-padded to 20 digits): every
//!   version, written *before* the state object, so history never lacks the
//!   current version. Versions above the current serial (left by a write
//!   whose compare-and-swap failed, or by a run killed between the two puts)
//!   are not listed and are replaced by the next write of that serial.
//! - `KEY.lock`: the lock, created with `If-None-Match: *`; its body is the
//!   holder's [`LockInfo`]. A 412 whose stored lock id is our own counts as
//!   acquired (an SDK retry of a put that had in fact succeeded). Unlocking
//!   deletes the lock only when it is still ours, with `If-Match` on its ETag.
//!   A killed run leaves its lock behind: the message names it and
//!   `prov state force-unlock ID` removes it.
//!
//! An environment `NAME` (`prov env`) of that deployment keeps the same
//! three under `KEY.envs/NAME/state.json`; listing `KEY.envs/` with
//! delimiter `/` names every environment in one call per thousand.
//!
//! Each version also carries its history entry as user metadata
//! (`x-amz-meta-prov-serial`, `-written-at`, `-written-by`, `-resources`,
//! `-lineage`), so `history` reads headers only.
//!
//! The code by concern: [`lock`] (the lock object and the held lock every
//! write goes through), [`mod@write`] (compare-and-swap writes), [`history`]
//! (listing, rebuilding and pruning versions), `store` (the S3 calls and
//! what their failures mean), `meta` (the metadata), `settings`.

mod history;
mod lock;
mod meta;
mod objects;
mod settings;
mod store;
mod write;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;

use crate::stored::{decode_doc, decode_header, Header};
use crate::{HistoryEntry, LockInfo, StateBackend, StateDocument, StateError, StateLock};
pub use objects::ObjectPrefix;
pub use settings::S3Settings;
use store::Store;
use write::Seen;

/// State in an S3 bucket: locked with a conditional put, written with
/// compare-and-swap, every version kept.
pub struct S3Backend {
    inner: Arc<Inner>,
}

/// What the backend and its locks share.
struct Inner {
    /// Where the state lives.
    settings: S3Settings,
    /// The state object's key (workspace prefix included).
    key: String,
    /// `KEY.lock`.
    lock_key: String,
    /// `KEY.history/`.
    history_prefix: String,
    /// The client, built on first use.
    store: tokio::sync::OnceCell<Store>,
    /// The state object as this backend last read or wrote it.
    seen: Mutex<Option<Seen>>,
    /// Set once the endpoint was seen to honour conditional writes.
    probed: tokio::sync::OnceCell<()>,
}

impl Inner {
    /// The client, connecting on first use.
    async fn store(&self) -> Result<&Store, StateError> {
        self.store
            .get_or_try_init(|| Store::connect(&self.settings))
            .await
    }

    /// `s3://BUCKET/KEY`.
    fn url(&self, key: &str) -> String {
        format!("s3://{}/{key}", self.settings.bucket)
    }

    /// The key of version `serial` in history.
    fn history_key(&self, serial: u64) -> String {
        format!("{}{serial:020}.json", self.history_prefix)
    }

    /// The serial of a history key, if it is one.
    fn serial_of(&self, key: &str) -> Option<u64> {
        let digits = key
            .strip_prefix(&self.history_prefix)?
            .strip_suffix(".json")?;
        if digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()) {
            digits.parse().ok()
        } else {
            None
        }
    }
}

impl S3Backend {
    /// A backend on `settings`, connected now (the AWS configuration is loaded
    /// from the standard chain).
    ///
    /// # Errors
    /// Invalid settings, or no AWS region.
    pub async fn new(settings: S3Settings) -> Result<Self, StateError> {
        let backend = Self::lazy(settings)?;
        backend.inner.store().await?;
        Ok(backend)
    }

    /// A backend on `settings` that connects on first use (for callers that
    /// are not async).
    ///
    /// # Errors
    /// Invalid settings (bucket name, key, workspace).
    pub fn lazy(settings: S3Settings) -> Result<Self, StateError> {
        settings.validate().map_err(|message| StateError::S3 {
            operation: "configuration",
            target: format!("s3://{}/{}", settings.bucket, settings.key),
            message,
        })?;
        let key = settings.object_key();
        Ok(Self {
            inner: Arc::new(Inner {
                lock_key: format!("{key}.lock"),
                history_prefix: format!("{key}.history/"),
                key,
                settings,
                store: tokio::sync::OnceCell::new(),
                seen: Mutex::new(None),
                probed: tokio::sync::OnceCell::new(),
            }),
        })
    }

    /// The settings.
    #[must_use]
    pub fn settings(&self) -> &S3Settings {
        &self.inner.settings
    }

    /// The key of the state object.
    #[must_use]
    pub fn state_key(&self) -> &str {
        &self.inner.key
    }

    /// The key of the lock object (`KEY.lock`).
    #[must_use]
    pub fn lock_key(&self) -> &str {
        &self.inner.lock_key
    }

    /// The key of version `serial` in history (`KEY.history/000…SERIAL.json`).
    #[must_use]
    pub fn history_key(&self, serial: u64) -> String {
        self.inner.history_key(serial)
    }

    /// A backend on `settings` using an already loaded AWS configuration
    /// (credentials, region, endpoint); an endpoint in `settings` overrides
    /// the configuration's.
    ///
    /// # Errors
    /// Invalid settings, or no region in `config`.
    pub fn from_sdk_config(
        settings: S3Settings,
        config: &aws_config::SdkConfig,
    ) -> Result<Self, StateError> {
        let store = Store::from_sdk_config(&settings, config)?;
        let backend = Self::lazy(settings)?;
        backend
            .inner
            .store
            .set(store)
            .map_err(|_| std::io::Error::other("the S3 client was already set"))?;
        Ok(backend)
    }
}

impl std::fmt::Debug for S3Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Backend")
            .field("url", &self.inner.url(&self.inner.key))
            .field("endpoint", &self.inner.settings.endpoint)
            .field("region", &self.inner.settings.region)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl StateBackend for S3Backend {
    fn describe(&self) -> String {
        format!("S3 state at {}", self.inner.url(&self.inner.key))
    }

    async fn lock(
        &self,
        info: LockInfo,
        timeout: Duration,
    ) -> Result<Box<dyn StateLock>, StateError> {
        Ok(Box::new(self.inner.acquire(info, timeout).await?))
    }

    async fn lock_holder(&self) -> Result<Option<LockInfo>, StateError> {
        self.inner.holder().await
    }

    async fn force_unlock(&self, id: &str) -> Result<(), StateError> {
        self.inner.force_unlock(id).await
    }

    async fn read(&self) -> Result<Option<StateDocument>, StateError> {
        self.inner.read().await
    }

    async fn history(&self) -> Result<Vec<HistoryEntry>, StateError> {
        self.inner.history().await
    }

    async fn read_serial(&self, serial: u64) -> Result<Option<StateDocument>, StateError> {
        self.inner.read_serial(serial).await
    }

    async fn environments(&self) -> Result<Vec<String>, StateError> {
        let prefix = self.inner.settings.environments_prefix();
        let mut names = self.inner.store().await?.list_names(&prefix).await?;
        names.retain(|name| crate::environment::check_name(name).is_ok());
        names.sort();
        Ok(names)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn history_keys_sort_by_serial_and_parse_back() {
        let b = S3Backend::lazy(S3Settings::new("bucket", "d/state.json")).unwrap();
        assert_eq!(b.state_key(), "d/state.json");
        assert_eq!(b.lock_key(), "d/state.json.lock");
        let k9 = b.history_key(9);
        let k10 = b.history_key(10);
        assert_eq!(k10, "d/state.json.history/00000000000000000010.json");
        assert!(k9 < k10);
        assert_eq!(b.inner.serial_of(&k10), Some(10));
        assert_eq!(b.inner.serial_of(&b.history_key(u64::MAX)), Some(u64::MAX));
        assert_eq!(b.inner.serial_of("d/state.json.history/12.json"), None);
        assert_eq!(b.inner.serial_of("d/state.json"), None);
        assert_eq!(b.describe(), "S3 state at s3://bucket/d/state.json");
    }

    #[test]
    fn invalid_settings_are_refused() {
        let err = S3Backend::lazy(S3Settings::new("B", "k")).unwrap_err();
        assert!(err.to_string().contains("bucket name"), "{err}");
    }
}
