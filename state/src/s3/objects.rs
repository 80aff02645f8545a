//! Plain objects under a prefix of a bucket, for what prov keeps in S3
//! besides state (the binary cache of `[cache]`): list, put (optionally
//! readable by anyone, for a cache hosts fetch over plain HTTP), delete.
//! The client is built as the state's is ([`S3Settings`]: region,
//! endpoint, profile, the standard AWS chain).

use super::store::Store;
use crate::{S3Settings, StateError};

/// A bucket and a key prefix (`KEY` of the settings, without trailing `/`).
#[derive(Debug, Clone)]
pub struct ObjectPrefix {
    store: Store,
    prefix: String,
    url: String,
}

impl ObjectPrefix {
    /// Connects to `settings.bucket`, with `settings.key` as the prefix.
    ///
    /// # Errors
    /// Invalid settings, or no AWS region.
    pub async fn connect(settings: &S3Settings) -> Result<Self, StateError> {
        settings.validate().map_err(|message| StateError::S3 {
            operation: "configuration",
            target: settings.url(),
            message,
        })?;
        Ok(Self {
            store: Store::connect(settings).await?,
            prefix: settings.key.trim_end_matches('/').to_owned(),
            url: format!("s3://{}/{}", settings.bucket, settings.key),
        })
    }

    /// `s3://BUCKET/PREFIX`.
    #[must_use]
    pub fn url(&self) -> &str {
        &self.url
    }

    fn key(&self, name: &str) -> String {
        format!("{}/{name}", self.prefix)
    }

    /// The names (keys without the prefix) of every object directly under
    /// the prefix whose name ends with `suffix` (`.narinfo`).
    ///
    /// # Errors
    /// When S3 refuses the listing.
    pub async fn names_ending(&self, suffix: &str) -> Result<Vec<String>, StateError> {
        let under = format!("{}/", self.prefix);
        Ok(self
            .store
            .list(&under)
            .await?
            .into_iter()
            .filter_map(|key| key.strip_prefix(&under).map(str::to_owned))
            .filter(|name| !name.contains('/') && name.ends_with(suffix))
            .collect())
    }

    /// Writes `name` (replacing it), readable by anyone when `public`.
    ///
    /// # Errors
    /// When S3 refuses the write.
    pub async fn put(&self, name: &str, body: Vec<u8>, public: bool) -> Result<(), StateError> {
        let key = self.key(name);
        match self.store.put_plain(&key, body, public).await? {
            Ok(()) => Ok(()),
            Err(refusal) => Err(self.store.unexpected("PutObject", &key, refusal)),
        }
    }

    /// Deletes `name` (nothing when it is gone).
    ///
    /// # Errors
    /// When S3 refuses the delete.
    pub async fn delete(&self, name: &str) -> Result<(), StateError> {
        let key = self.key(name);
        match self.store.delete(&key, None).await? {
            Ok(()) => Ok(()),
            Err(refusal) => Err(self.store.unexpected("DeleteObject", &key, refusal)),
        }
    }
}
