//! The deployer's SSH key: the spec's `[deploy] identity_file`, or a key prov
//! generates once under `.prov/ssh/` next to the spec (its public half is
//! what local hosts authorize).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::spec::Spec;

/// The deployer's key: what prov logs in to hosts with, and what the
/// machines it creates authorize.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deployer {
    /// The private key file.
    pub private: PathBuf,
    /// The public key line (`ssh-ed25519 AAAA…`), or [`PENDING_KEY`] for a
    /// key prov has not generated yet.
    pub public: String,
}

impl Deployer {
    /// The deployer's key, generated when the spec names none and none
    /// exists yet (apply, before it plans).
    ///
    /// # Errors
    /// When the key cannot be read or generated.
    pub fn ensure(spec: &Spec) -> Result<Self> {
        deployer_identity(spec).map(|(private, public)| Self { private, public })
    }

    /// The deployer's key without generating anything: a generated key that
    /// does not exist yet is [`PENDING_KEY`] (plan writes nothing).
    ///
    /// # Errors
    /// When the spec's `identity_file` cannot be read.
    pub fn existing(spec: &Spec) -> Result<Self> {
        existing_deployer_identity(spec).map(|(private, public)| Self { private, public })
    }
}

/// The deployer's private key file and its public key line, generating the
/// key when the spec names none and none exists yet.
fn deployer_identity(spec: &Spec) -> Result<(PathBuf, String)> {
    let private = match &spec.deploy.identity_file {
        Some(path) => path.clone(),
        None => {
            let key = generated_key_path(spec);
            if !key.exists() {
                if let Some(dir) = key.parent() {
                    generate_once(dir, &key)?;
                }
            }
            key
        }
    };
    read_public(private)
}

/// What a plan shows for the deployer's key before apply generates it.
pub const PENDING_KEY: &str = "(the deployer key, generated at apply)";

/// [`deployer_identity`] without generating anything: a generated key that
/// does not exist yet is [`PENDING_KEY`].
fn existing_deployer_identity(spec: &Spec) -> Result<(PathBuf, String)> {
    if spec.deploy.identity_file.is_none() {
        let key = generated_key_path(spec);
        if !key.exists() {
            return Ok((key, PENDING_KEY.to_owned()));
        }
    }
    deployer_identity(spec)
}

/// `.prov/ssh/id_ed25519` next to the spec.
fn generated_key_path(spec: &Spec) -> PathBuf {
    spec.source
        .parent()
        .unwrap_or_else(|| Path::new("."))
        .join(".prov")
        .join("ssh")
        .join("id_ed25519")
}

fn read_public(private: PathBuf) -> Result<(PathBuf, String)> {
    let public_path = PathBuf::from(format!("{}.pub", private.display()));
    let public = fs_err::read_to_string(&public_path).with_context(|| {
        format!(
            "the deployer's public key {} is needed next to its private key",
            public_path.display()
        )
    })?;
    let public = public
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ");
    Ok((private, public))
}

/// Generates the key unless another run did meanwhile: runs in one
/// directory at once (`prov env up a` and `b`) take turns on a lock file
/// beside the key, and the second finds the first's key, both files
/// written.
fn generate_once(dir: &Path, key: &Path) -> Result<()> {
    once_in_private_dir(dir, || key.exists(), || generate(dir, key))
}

/// Runs `make` in `dir` (made `0700`) unless `done()` says it is done, holding
/// a lock file there: runs in one directory at once take turns, and the
/// second finds the first's work whole. Shared by the deployer key and the
/// cache's signing key.
pub(super) fn once_in_private_dir(
    dir: &Path,
    done: impl Fn() -> bool,
    make: impl FnOnce() -> Result<()>,
) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs_err::create_dir_all(dir)?;
    fs_err::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    let lock_path = dir.join(".generate.lock");
    let lock = fs_err::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)?;
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive)
        .with_context(|| format!("locking {}", lock_path.display()))?;
    let made = if done() { Ok(()) } else { make() };
    drop(lock);
    made
}

/// Generates the deployer key in-process, in the files `ssh-keygen -t
/// ed25519 -C prov-deployer` would write, in a directory only its owner
/// can enter.
fn generate(dir: &Path, key: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs_err::create_dir_all(dir)?;
    fs_err::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    prov_provider::keys::generate_files(key, "prov-deployer")
        .with_context(|| format!("creating the deployer key {}", key.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two `prov env up` in one directory at once both make the deployer
    /// key when there is none (found by the environments test: the second
    /// failed with "File exists"). Every one of them must end with the same
    /// key.
    #[test]
    fn runs_at_once_all_get_the_one_generated_key() {
        let tmp = tempfile::tempdir().unwrap();
        let mut spec = Spec::of_resources("d", Vec::new());
        spec.source = tmp.path().join("prov.toml");
        let spec = std::sync::Arc::new(spec);
        for _ in 0..5 {
            let _ = std::fs::remove_dir_all(tmp.path().join(".prov"));
            let start = std::sync::Arc::new(std::sync::Barrier::new(8));
            let runs: Vec<_> = (0..8)
                .map(|_| {
                    let (spec, start) = (spec.clone(), start.clone());
                    std::thread::spawn(move || {
                        start.wait();
                        deployer_identity(&spec).map(|(_, public)| public)
                    })
                })
                .collect();
            let keys: Vec<String> = runs
                .into_iter()
                .map(|r| r.join().unwrap().unwrap())
                .collect();
            assert!(keys.iter().all(|k| k == &keys[0]), "{keys:?}");
        }
    }

    #[test]
    fn generated_key_is_private_and_read_back_without_comment() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join(".prov").join("ssh");
        let key = dir.join("id_ed25519");
        generate(&dir, &key).unwrap();
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        let pub_line = std::fs::read_to_string(dir.join("id_ed25519.pub")).unwrap();
        assert!(pub_line.ends_with(" prov-deployer\n"), "{pub_line}");
        let (private, public) = read_public(key.clone()).unwrap();
        assert_eq!(private, key);
        assert!(public.starts_with("ssh-ed25519 AAAA"), "{public}");
        assert_eq!(public.split(' ').count(), 2);
        // The key russh loads to log in with.
        assert!(russh::keys::load_secret_key(&key, None).is_ok());
    }
}
