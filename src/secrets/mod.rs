//! Secrets encrypted with age: recipients, identities, encryption and
//! decryption, the keyed hash state keeps, and state encrypted at rest.
//!
//! Plaintext lives only in memory here ([`Plaintext`] zeroes itself on drop)
//! and is never logged.

pub mod state;

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use age::armor::{ArmoredReader, ArmoredWriter, Format};
use anyhow::{bail, Context, Result};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::spec::{Placement, SecretSpec, Spec, HOSTS_RECIPIENT};

/// Decrypted bytes, zeroed when dropped.
pub type Plaintext = Zeroizing<Vec<u8>>;

/// The environment variable naming identity files (`:`-separated).
pub const IDENTITY_ENV: &str = "PROV_AGE_IDENTITY";

/// Parses one recipient: an age X25519 key (`age1…`) or an SSH public key
/// (`ssh-ed25519 …`, `ssh-rsa …`).
///
/// # Errors
/// A message saying what is wrong with it.
pub fn parse_recipient(text: &str) -> Result<Box<dyn age::Recipient + Send>, String> {
    let text = text.trim();
    if text.starts_with("age1") {
        return text
            .parse::<age::x25519::Recipient>()
            .map(|r| Box::new(r) as Box<dyn age::Recipient + Send>)
            .map_err(|e| format!("`{}` is not a valid age X25519 recipient: {e}", short(text)));
    }
    if text.starts_with("ssh-") {
        return match text.parse::<age::ssh::Recipient>() {
            Ok(r) => Ok(Box::new(r)),
            Err(
                age::ssh::ParseRecipientKeyError::Ignore
                | age::ssh::ParseRecipientKeyError::Unsupported(_),
            ) => Err(format!(
                "`{}`: only ssh-ed25519 and ssh-rsa keys can be age recipients",
                short(text)
            )),
            Err(_) => Err(format!(
                "`{}` is not a valid ssh-ed25519 or ssh-rsa public key",
                short(text)
            )),
        };
    }
    Err(format!(
        "`{}` is not an age recipient (`age1…`) or an SSH public key (`ssh-ed25519 …`)",
        short(text)
    ))
}

/// A recipient shortened for messages (`ssh-ed25519 AAAAC3Nz…abcd`).
#[must_use]
pub fn short(text: &str) -> String {
    let text = text.trim();
    let mut parts = text.split_whitespace();
    match (parts.next(), parts.next()) {
        (Some(kind), Some(key)) if kind.starts_with("ssh-") && key.chars().count() > 20 => {
            // By characters, not bytes: a pasted key may hold anything.
            let head: String = key.chars().take(12).collect();
            let tail: String = key.chars().skip(key.chars().count() - 8).collect();
            format!("{kind} {head}…{tail}")
        }
        _ => text.to_owned(),
    }
}

/// The recipients of `secret` with `@hosts` replaced by the pinned host key
/// of each host it goes to (from the spec, else from state).
///
/// # Errors
/// When a host of an `@hosts` secret has no known host key yet.
pub fn resolve_recipients(
    spec: &Spec,
    name: &str,
    secret: &SecretSpec,
    doc: Option<&prov_state::StateDocument>,
) -> Result<Vec<String>> {
    let mut out: Vec<String> = Vec::new();
    for recipient in &secret.recipients {
        if recipient != HOSTS_RECIPIENT {
            if !out.contains(recipient) {
                out.push(recipient.clone());
            }
            continue;
        }
        for address in secret.targets(&spec.hosts) {
            let key = spec
                .hosts
                .get(address)
                .and_then(|h| h.host_key.clone())
                .or_else(|| {
                    doc.and_then(|d| d.hosts.get(address))
                        .and_then(|h| h.host_key.clone())
                })
                .with_context(|| {
                    format!("secret `{name}` is encrypted to @hosts, but no host key of {address} is known yet: apply once (prov pins it), or set `host_key` on the host")
                })?;
            let key = key.split_whitespace().take(2).collect::<Vec<_>>().join(" ");
            if !out.contains(&key) {
                out.push(key);
            }
        }
    }
    Ok(out)
}

/// Encrypts `plaintext` to `recipients`, ASCII-armored.
///
/// # Errors
/// When a recipient is invalid, or there is none.
pub fn encrypt(recipients: &[String], plaintext: &[u8]) -> Result<Vec<u8>> {
    let parsed = recipients
        .iter()
        .map(|r| parse_recipient(r).map_err(anyhow::Error::msg))
        .collect::<Result<Vec<_>>>()?;
    let encryptor =
        age::Encryptor::with_recipients(parsed.iter().map(|r| r.as_ref() as &dyn age::Recipient))
            .map_err(|e| anyhow::anyhow!("cannot encrypt: {e}"))?;
    let mut out = Vec::new();
    let armor = ArmoredWriter::wrap_output(&mut out, Format::AsciiArmor)?;
    let mut writer = encryptor.wrap_output(armor)?;
    writer.write_all(plaintext)?;
    writer.finish()?.finish()?;
    Ok(out)
}

/// Identities that can decrypt, with where they came from.
pub struct Identities {
    keys: Vec<Box<dyn age::Identity>>,
    /// Files read (for messages).
    pub sources: Vec<PathBuf>,
}

impl std::fmt::Debug for Identities {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identities")
            .field("sources", &self.sources)
            .finish_non_exhaustive()
    }
}

impl Identities {
    /// Identities from `explicit` (`--identity`), else from
    /// `PROV_AGE_IDENTITY` (`:`-separated paths), else the deployer's SSH key
    /// and `~/.ssh/id_ed25519`, `~/.ssh/id_rsa` where they exist.
    ///
    /// # Errors
    /// When a named file cannot be read or holds no usable identity.
    pub fn load(explicit: &[PathBuf], deployer: Option<&Path>) -> Result<Self> {
        let named: Vec<PathBuf> = if !explicit.is_empty() {
            explicit.to_vec()
        } else if let Some(value) = std::env::var_os(IDENTITY_ENV).filter(|v| !v.is_empty()) {
            std::env::split_paths(&value).collect()
        } else {
            Vec::new()
        };
        let mut identities = Self {
            keys: Vec::new(),
            sources: Vec::new(),
        };
        if !named.is_empty() {
            for path in &named {
                identities
                    .add_file(path)
                    .with_context(|| format!("reading the age identity {}", path.display()))?;
            }
            return Ok(identities);
        }
        let mut defaults: Vec<PathBuf> = deployer.map(Path::to_path_buf).into_iter().collect();
        if let Some(home) = std::env::var_os("HOME") {
            let ssh = PathBuf::from(home).join(".ssh");
            defaults.push(ssh.join("id_ed25519"));
            defaults.push(ssh.join("id_rsa"));
        }
        for path in defaults.iter().filter(|p| p.is_file()) {
            if let Err(error) = identities.add_file(path) {
                tracing::debug!("skipping {} as an age identity: {error:#}", path.display());
            }
        }
        Ok(identities)
    }

    /// Reads one identity file: age identities (`AGE-SECRET-KEY-1…`) or an
    /// unencrypted SSH private key.
    fn add_file(&mut self, path: &Path) -> Result<()> {
        let text = Zeroizing::new(fs_err::read_to_string(path)?);
        if text.contains("AGE-SECRET-KEY-") {
            let file = age::IdentityFile::from_buffer(text.as_bytes())
                .context("not a valid age identity file")?;
            let keys = file
                .into_identities()
                .map_err(|e| anyhow::anyhow!("not a valid age identity file: {e}"))?;
            self.keys.extend(keys);
        } else {
            let key =
                age::ssh::Identity::from_buffer(text.as_bytes(), Some(path.display().to_string()))
                    .context("neither an age identity file nor an SSH private key")?;
            match key {
                age::ssh::Identity::Unencrypted(_) => self.keys.push(Box::new(key)),
                age::ssh::Identity::Encrypted(_) => {
                    bail!("the SSH key is passphrase-protected; prov needs an unencrypted key or an age identity")
                }
                age::ssh::Identity::Unsupported(_) => {
                    bail!("this kind of SSH key cannot decrypt age files (use ssh-ed25519 or ssh-rsa)")
                }
            }
        }
        self.sources.push(path.to_owned());
        Ok(())
    }

    /// Whether no identity was found.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Decrypts an age file (armored or binary).
    ///
    /// # Errors
    /// When no identity matches or the file is damaged.
    pub fn decrypt(&self, ciphertext: &[u8]) -> Result<Plaintext, age::DecryptError> {
        let decryptor = age::Decryptor::new(ArmoredReader::new(ciphertext))?;
        let mut reader = decryptor.decrypt(self.keys.iter().map(|k| k.as_ref()))?;
        let mut out = Zeroizing::new(Vec::new());
        reader.read_to_end(&mut out)?;
        Ok(out)
    }

    /// The files read, for messages (`none` when there are none).
    #[must_use]
    pub fn describe(&self) -> String {
        if self.sources.is_empty() {
            return "none found".to_owned();
        }
        self.sources
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Decrypts the file of secret `name`, saying which recipients it is
/// encrypted to when no identity matches.
///
/// # Errors
/// When the file cannot be read or decrypted.
pub fn decrypt_secret(
    name: &str,
    secret: &SecretSpec,
    identities: &Identities,
) -> Result<Plaintext> {
    let ciphertext = fs_err::read(&secret.file)
        .with_context(|| format!("reading the encrypted file of secret `{name}`"))?;
    identities.decrypt(&ciphertext).map_err(|error| {
        let recipients = secret
            .recipients
            .iter()
            .map(|r| short(r))
            .collect::<Vec<_>>()
            .join(", ");
        let why = match error {
            age::DecryptError::NoMatchingKeys => "no identity matches".to_owned(),
            other => other.to_string(),
        };
        anyhow::anyhow!(
            "cannot decrypt secret `{name}` ({}): {why}; it is encrypted to: {recipients}; identities tried: {}. Set {IDENTITY_ENV}=PATH (an age identity file or SSH private key of one of those recipients)",
            secret.file.display(),
            identities.describe()
        )
    })
}

/// A new random key for the keyed hashes of one state (hex, 32 bytes).
///
/// # Errors
/// When the system has no randomness to give.
pub fn new_hmac_key() -> Result<String> {
    let mut key = Zeroizing::new([0u8; 32]);
    fs_err::File::open("/dev/urandom")?.read_exact(key.as_mut())?;
    Ok(hex::encode(key.as_ref()))
}

/// The keyed hash (HMAC-SHA256, hex) of a secret's plaintext and where and
/// how it is installed: what state keeps to detect change.
///
/// # Errors
/// When `key_hex` is not hex.
pub fn keyed_hash(key_hex: &str, plaintext: &[u8], secret: &Placement) -> Result<String> {
    let key =
        Zeroizing::new(hex::decode(key_hex).context("the state's secret_hmac_key is not hex")?);
    let mut mac = Hmac::<Sha256>::new_from_slice(&key)
        .map_err(|_| anyhow::anyhow!("invalid HMAC key length"))?;
    let mut meta = String::new();
    let _ = write!(
        meta,
        "\0{}\0{}\0{}\0{}",
        secret.destination,
        secret.owner,
        secret.group,
        secret.mode_string()
    );
    mac.update(&(plaintext.len() as u64).to_be_bytes());
    mac.update(plaintext);
    mac.update(meta.as_bytes());
    Ok(hex::encode(mac.finalize().into_bytes()))
}

pub use crate::atomic::write_atomic;
