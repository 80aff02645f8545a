//! State encrypted at rest (`[state] encrypt_to`): a wrapper around any
//! backend that stores each version as an envelope document whose only
//! content is the age-encrypted JSON of the real one. Lineage, serial and
//! deployment name stay in the clear (locking and compare-and-swap need them).
//! The backend's lock is wrapped too, so every write through it is sealed.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use prov_state::{HistoryEntry, LockInfo, StateBackend, StateDocument, StateError, StateLock};
use zeroize::Zeroizing;

use super::{encrypt, short, Identities, IDENTITY_ENV};

/// A backend whose documents are encrypted to `recipients`.
#[derive(Debug)]
pub struct EncryptedBackend {
    inner: Arc<dyn StateBackend>,
    recipients: Vec<String>,
    deployer: Option<PathBuf>,
    allow_plaintext: bool,
}

impl EncryptedBackend {
    /// Wraps `inner`. `deployer` is the deployer's SSH key, tried as an
    /// identity when `PROV_AGE_IDENTITY` is not set. With `allow_plaintext`,
    /// plaintext versions are read (for `prov state encrypt`); otherwise they
    /// are refused.
    #[must_use]
    pub fn new(
        inner: Arc<dyn StateBackend>,
        recipients: Vec<String>,
        deployer: Option<PathBuf>,
        allow_plaintext: bool,
    ) -> Self {
        Self {
            inner,
            recipients,
            deployer,
            allow_plaintext,
        }
    }

    fn open(&self, doc: StateDocument) -> Result<StateDocument, StateError> {
        let Some(sealed) = &doc.encrypted else {
            let empty = doc.resources.is_empty() && doc.hosts.is_empty() && doc.outputs.is_empty();
            if empty || self.allow_plaintext {
                return Ok(doc);
            }
            return Err(StateError::Encryption(format!(
                "{} holds plaintext state (serial {}), but [state] encrypt_to is set: prov refuses to read it.\nTo encrypt it now, run: prov state encrypt\n(or remove `encrypt_to` to keep it in plaintext)",
                self.inner.describe(),
                doc.serial
            )));
        };
        let identities = Identities::load(&[], self.deployer.as_deref())
            .map_err(|e| StateError::Encryption(format!("{e:#}")))?;
        open_envelope(&doc, sealed, &identities, &self.recipients)
    }
}

/// The envelope of `doc`: its identity in the clear, its JSON encrypted to
/// `recipients`.
fn seal(recipients: &[String], doc: &StateDocument) -> Result<StateDocument, StateError> {
    let json =
        Zeroizing::new(serde_json::to_vec(doc).map_err(|e| StateError::Encryption(e.to_string()))?);
    let sealed = encrypt(recipients, &json)
        .map_err(|e| StateError::Encryption(format!("encrypting state: {e:#}")))?;
    Ok(doc.envelope(String::from_utf8_lossy(&sealed).into_owned()))
}

/// The document sealed (`sealed`, armored age) in `envelope`, opened with
/// `identities`; `recipients` are named when none of them fits.
///
/// # Errors
/// [`StateError::Encryption`] when it cannot be decrypted,
/// [`StateError::Corrupt`] when what it holds is not the envelope's document.
pub fn open_envelope(
    envelope: &StateDocument,
    sealed: &str,
    identities: &Identities,
    recipients: &[String],
) -> Result<StateDocument, StateError> {
    let json = identities.decrypt(sealed.as_bytes()).map_err(|e| {
        StateError::Encryption(format!(
            "cannot decrypt the state (serial {}): {e}; it is encrypted to: {}; identities tried: {}. Set {IDENTITY_ENV}=PATH",
            envelope.serial,
            recipients.iter().map(|r| short(r)).collect::<Vec<_>>().join(", "),
            identities.describe()
        ))
    })?;
    let inner: StateDocument = serde_json::from_slice(&json)
        .map_err(|e| StateError::Corrupt(format!("decrypted state is not a document: {e}")))?;
    if inner.lineage != envelope.lineage || inner.serial != envelope.serial {
        return Err(StateError::Corrupt(format!(
            "the encrypted state says lineage {} serial {}, but its envelope says lineage {} serial {}",
            inner.lineage, inner.serial, envelope.lineage, envelope.serial
        )));
    }
    Ok(inner)
}

#[async_trait]
impl StateBackend for EncryptedBackend {
    fn describe(&self) -> String {
        format!("{} (encrypted)", self.inner.describe())
    }

    async fn lock(
        &self,
        info: LockInfo,
        timeout: Duration,
    ) -> Result<Box<dyn StateLock>, StateError> {
        let inner = self.inner.lock(info, timeout).await?;
        Ok(Box::new(EncryptedLock {
            inner,
            recipients: self.recipients.clone(),
        }))
    }

    async fn lock_holder(&self) -> Result<Option<LockInfo>, StateError> {
        self.inner.lock_holder().await
    }

    async fn force_unlock(&self, id: &str) -> Result<(), StateError> {
        self.inner.force_unlock(id).await
    }

    async fn read(&self) -> Result<Option<StateDocument>, StateError> {
        match self.inner.read().await? {
            Some(doc) => self.open(doc).map(Some),
            None => Ok(None),
        }
    }

    async fn exists(&self) -> Result<bool, StateError> {
        self.inner.exists().await
    }

    async fn history(&self) -> Result<Vec<HistoryEntry>, StateError> {
        self.inner.history().await
    }

    async fn read_serial(&self, serial: u64) -> Result<Option<StateDocument>, StateError> {
        match self.inner.read_serial(serial).await? {
            Some(doc) => self.open(doc).map(Some),
            None => Ok(None),
        }
    }

    async fn environments(&self) -> Result<Vec<String>, StateError> {
        self.inner.environments().await
    }
}

/// The lock of an [`EncryptedBackend`]: the wrapped backend's lock, sealing
/// every document before it is written.
#[derive(Debug)]
struct EncryptedLock {
    inner: Box<dyn StateLock>,
    recipients: Vec<String>,
}

#[async_trait]
impl StateLock for EncryptedLock {
    fn info(&self) -> &LockInfo {
        self.inner.info()
    }

    async fn check(&self) -> Result<(), StateError> {
        self.inner.check().await
    }

    async fn write(&self, doc: &StateDocument) -> Result<(), StateError> {
        let envelope = seal(&self.recipients, doc)?;
        self.inner.write(&envelope).await
    }

    async fn write_copy(
        &self,
        doc: &StateDocument,
        entry: &HistoryEntry,
    ) -> Result<(), StateError> {
        let envelope = seal(&self.recipients, doc)?;
        self.inner.write_copy(&envelope, entry).await
    }

    async fn prune(&self, keep: u64) -> Result<u64, StateError> {
        self.inner.prune(keep).await
    }

    async fn unlock(self: Box<Self>) -> Result<(), StateError> {
        self.inner.unlock().await
    }

    async fn remove(self: Box<Self>) -> Result<(), StateError> {
        self.inner.remove().await
    }
}

/// The backend of a spec without `[state] encrypt_to`: refuses to read an
/// encrypted document instead of taking its empty envelope for a state
/// with no resources (which would plan to create everything again).
#[derive(Debug)]
pub struct PlaintextBackend {
    inner: Arc<dyn StateBackend>,
}

impl PlaintextBackend {
    /// Wraps `inner`.
    #[must_use]
    pub fn new(inner: Arc<dyn StateBackend>) -> Self {
        Self { inner }
    }

    fn check(&self, doc: StateDocument) -> Result<StateDocument, StateError> {
        if doc.encrypted.is_none() {
            return Ok(doc);
        }
        Err(StateError::Encryption(format!(
            "{} holds encrypted state (serial {}), but the spec has no `[state] encrypt_to`: prov refuses to read it as if it were empty.\n\
             Add under [state]: encrypt_to = [\"age1…\"] (the recipients it is encrypted to), and have an identity that can decrypt it ({IDENTITY_ENV}=PATH or the deployer's key).\n\
             To keep it in plaintext from now on: with encrypt_to still set, `prov state pull > state.json`; then remove encrypt_to and `prov state push --force state.json`.",
            self.inner.describe(),
            doc.serial
        )))
    }
}

#[async_trait]
impl StateBackend for PlaintextBackend {
    fn describe(&self) -> String {
        self.inner.describe()
    }

    /// The wrapped backend's lock: documents are written as they are.
    async fn lock(
        &self,
        info: LockInfo,
        timeout: Duration,
    ) -> Result<Box<dyn StateLock>, StateError> {
        self.inner.lock(info, timeout).await
    }

    async fn lock_holder(&self) -> Result<Option<LockInfo>, StateError> {
        self.inner.lock_holder().await
    }

    async fn force_unlock(&self, id: &str) -> Result<(), StateError> {
        self.inner.force_unlock(id).await
    }

    async fn read(&self) -> Result<Option<StateDocument>, StateError> {
        self.inner.read().await?.map(|d| self.check(d)).transpose()
    }

    async fn exists(&self) -> Result<bool, StateError> {
        self.inner.exists().await
    }

    async fn history(&self) -> Result<Vec<HistoryEntry>, StateError> {
        self.inner.history().await
    }

    async fn read_serial(&self, serial: u64) -> Result<Option<StateDocument>, StateError> {
        self.inner
            .read_serial(serial)
            .await?
            .map(|d| self.check(d))
            .transpose()
    }

    async fn environments(&self) -> Result<Vec<String>, StateError> {
        self.inner.environments().await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::path::PathBuf;

    use age::secrecy::ExposeSecret;
    use prov_state::EmbeddedBackend;

    use super::*;

    /// An age identity in a file under `dir`, and its recipient.
    fn identity(dir: &std::path::Path) -> (PathBuf, String) {
        let key = age::x25519::Identity::generate();
        let path = dir.join("key.txt");
        fs_err::write(&path, key.to_string().expose_secret()).unwrap();
        (path, key.to_public().to_string())
    }

    fn doc(serial: u64) -> StateDocument {
        let mut doc = StateDocument::new("d");
        doc.lineage = "l".to_owned();
        doc.set_serial(serial);
        doc.set_outputs([("secret".to_owned(), "s3cr3t".into())]);
        doc
    }

    /// The lock of an encrypted backend seals what is written through it,
    /// copies included; the wrapped backend stores only the envelope.
    #[tokio::test]
    async fn writes_through_the_encrypted_lock_are_sealed() {
        let tmp = tempfile::tempdir().unwrap();
        let (key, recipient) = identity(tmp.path());
        let plain: Arc<dyn StateBackend> = Arc::new(EmbeddedBackend::new(tmp.path().join("s")));
        let encrypted = EncryptedBackend::new(
            Arc::clone(&plain),
            vec![recipient.clone()],
            Some(key.clone()),
            false,
        );
        let lock = encrypted
            .lock(LockInfo::for_this_process("test"), Duration::ZERO)
            .await
            .unwrap();
        lock.check().await.unwrap();
        lock.write(&doc(1)).await.unwrap();
        let entry = HistoryEntry {
            serial: 2,
            written_at: "2024-05-06T07:08:09Z".parse().unwrap(),
            written_by: "someone (apply)".to_owned(),
            resources: 0,
        };
        lock.write_copy(&doc(2), &entry).await.unwrap();
        lock.unlock().await.unwrap();

        let identities = Identities::load(&[key], None).unwrap();
        for serial in [1, 2] {
            let stored = plain.read_serial(serial).await.unwrap().unwrap();
            assert!(stored.outputs.is_empty(), "{stored:?}");
            let sealed = stored.encrypted.clone().unwrap();
            assert!(!sealed.contains("s3cr3t"));
            let opened = open_envelope(
                &stored,
                &sealed,
                &identities,
                std::slice::from_ref(&recipient),
            )
            .unwrap();
            assert_eq!(opened, doc(serial));
        }
        let history = plain.history().await.unwrap();
        assert_eq!(history[1].written_by, "someone (apply)");
    }
}
