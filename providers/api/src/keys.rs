//! SSH key pairs made in-process with the `ssh-key` crate (the one russh
//! itself uses), in the encodings and files `ssh-keygen -t ed25519 -N ''`
//! writes: the deployer's key, a VM's host key, a local host's host key.
//! sshd, russh and the `age` CLI read them as they read ssh-keygen's.

use std::io::Write;
use std::path::{Path, PathBuf};

use ssh_key::private::{Ed25519Keypair, KeypairData};
use ssh_key::{LineEnding, PrivateKey};
use zeroize::Zeroizing;

use crate::ProviderError;

/// An ed25519 key pair in OpenSSH's encodings.
#[derive(Clone)]
pub struct KeyPair {
    /// The OpenSSH private key file's text (`-----BEGIN OPENSSH PRIVATE KEY-----`).
    pub private: String,
    /// `ssh-ed25519 AAAA…` without comment.
    pub public: String,
}

impl std::fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyPair")
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

/// Why a key pair could not be made or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The operating system gave no random bytes.
    #[error("no random bytes for a new SSH key")]
    Random(#[source] getrandom::Error),
    /// The key could not be encoded in OpenSSH's formats.
    #[error("encoding a new SSH key")]
    Encode(#[source] ssh_key::Error),
    /// A key file could not be written.
    #[error("writing the SSH key file {path}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

impl From<KeyError> for ProviderError {
    fn from(error: KeyError) -> Self {
        ProviderError::api_caused_by("generate an SSH key", "ed25519", error)
    }
}

/// A new ed25519 key pair; `comment` goes into the private key (and the
/// `.pub` line [`generate_files`] writes), as `ssh-keygen -C` puts it.
///
/// # Errors
/// When the system has no random bytes or encoding fails.
pub fn generate(comment: &str) -> Result<KeyPair, KeyError> {
    let mut seed = Zeroizing::new([0_u8; 32]);
    getrandom::fill(seed.as_mut_slice()).map_err(KeyError::Random)?;
    let keypair = Ed25519Keypair::from_seed(&seed);
    let private = PrivateKey::new(KeypairData::from(keypair), comment).map_err(KeyError::Encode)?;
    let text = private
        .to_openssh(LineEnding::LF)
        .map_err(KeyError::Encode)?;
    let bare = ssh_key::PublicKey::new(private.public_key().key_data().clone(), "");
    let public = bare.to_openssh().map_err(KeyError::Encode)?;
    Ok(KeyPair {
        private: text.as_str().to_owned(),
        public,
    })
}

/// [`generate`], written as ssh-keygen writes it: the private key at
/// `path` (mode 0600) and `PATH.pub` (mode 0644, `ssh-ed25519 AAAA…
/// COMMENT`). Both are written whole under temporary names first; the
/// private key is renamed into place only where no file is (an existing
/// key is never replaced, nor its `.pub`), then the `.pub`.
///
/// # Errors
/// When generating fails, or a file cannot be written (the private key
/// file exists already, say).
pub fn generate_files(path: &Path, comment: &str) -> Result<KeyPair, KeyError> {
    let key = generate(comment)?;
    let failed = |path: &Path| {
        let path = path.to_owned();
        move |source| KeyError::Write { path, source }
    };
    let public_path = PathBuf::from(format!("{}.pub", path.display()));
    let line = if comment.is_empty() {
        format!("{}\n", key.public)
    } else {
        format!("{} {comment}\n", key.public)
    };
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or_else(|| Path::new("."));
    let private = staged(dir, key.private.as_bytes(), 0o600).map_err(failed(path))?;
    let public = staged(dir, line.as_bytes(), 0o644).map_err(failed(&public_path))?;
    private
        .persist_noclobber(path)
        .map_err(|e| failed(path)(e.error))?;
    public
        .persist(&public_path)
        .map_err(|e| failed(&public_path)(e.error))?;
    Ok(key)
}

/// `bytes` in a new file of `dir` under a random name (created with
/// `O_EXCL`), synced, with `mode`.
fn staged(dir: &Path, bytes: &[u8], mode: u32) -> std::io::Result<tempfile::NamedTempFile> {
    use std::os::unix::fs::PermissionsExt;
    let mut file = tempfile::Builder::new()
        .prefix(".prov-key-")
        .permissions(std::fs::Permissions::from_mode(mode))
        .tempfile_in(dir)?;
    file.write_all(bytes)?;
    file.as_file().sync_all()?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generates_openssh_keys() {
        let key = generate("c").unwrap();
        assert!(key.public.starts_with("ssh-ed25519 AAAA"), "{}", key.public);
        assert_eq!(key.public.split(' ').count(), 2);
        let parsed = PrivateKey::from_openssh(&key.private).unwrap();
        assert_eq!(parsed.comment().as_bytes(), b"c");
        assert_eq!(
            parsed.public_key().to_openssh().unwrap(),
            format!("{} c", key.public)
        );
        assert_ne!(generate("c").unwrap().public, key.public);
    }

    #[test]
    fn writes_files_as_ssh_keygen_does() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("id_ed25519");
        let key = generate_files(&path, "prov-deployer").unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        let public_path = dir.path().join("id_ed25519.pub");
        assert_eq!(mode(&public_path), 0o644);
        assert_eq!(
            std::fs::read_to_string(&public_path).unwrap(),
            format!("{} prov-deployer\n", key.public)
        );
        assert_eq!(std::fs::read_to_string(&path).unwrap(), key.private);
        // Never over an existing key, nor its `.pub`; nothing left behind.
        assert!(matches!(
            generate_files(&path, "x"),
            Err(KeyError::Write { .. })
        ));
        assert_eq!(std::fs::read_to_string(&path).unwrap(), key.private);
        assert!(std::fs::read_to_string(&public_path)
            .unwrap()
            .starts_with(&key.public));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
    }

    /// ssh-keygen reads what [`generate_files`] wrote (when it is installed).
    #[test]
    fn ssh_keygen_reads_the_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        let key = generate_files(&path, "").unwrap();
        let Ok(output) = std::process::Command::new("ssh-keygen")
            .arg("-y")
            .arg("-f")
            .arg(&path)
            .output()
        else {
            return;
        };
        assert!(output.status.success(), "{output:?}");
        let derived = String::from_utf8_lossy(&output.stdout);
        assert_eq!(
            derived
                .split_whitespace()
                .take(2)
                .collect::<Vec<_>>()
                .join(" "),
            key.public
        );
    }

    /// The `age` CLI encrypts to the `.pub` line and decrypts with the
    /// private key file (when it is installed).
    #[test]
    fn age_reads_the_files() {
        use std::process::{Command, Stdio};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("id");
        generate_files(&path, "prov-deployer").unwrap();
        let sealed = dir.path().join("sealed");
        let Ok(mut encrypt) = Command::new("age")
            .arg("-R")
            .arg(dir.path().join("id.pub"))
            .arg("-o")
            .arg(&sealed)
            .stdin(Stdio::piped())
            .spawn()
        else {
            return;
        };
        encrypt.stdin.take().unwrap().write_all(b"secret").unwrap();
        assert!(encrypt.wait().unwrap().success());
        let output = Command::new("age")
            .arg("-d")
            .arg("-i")
            .arg(&path)
            .arg(&sealed)
            .output()
            .unwrap();
        assert!(output.status.success(), "{output:?}");
        assert_eq!(output.stdout, b"secret");
    }
}
