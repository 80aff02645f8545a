//! A host's directory, `ROOT/DEPLOYMENT/NAME`, and the files in it.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use prov_provider::{Address, ProviderError};

use crate::error::io_error;

/// The idempotency token of the create that made the host.
pub(crate) const TOKEN: &str = "token";
/// The resource address the host was created for (`web[0]`).
pub(crate) const RESOURCE: &str = "resource";
/// The hostname set in the host's UTS namespace.
pub(crate) const HOSTNAME: &str = "hostname";
/// The loopback address sshd listens on.
pub(crate) const ADDRESS: &str = "address";
/// The keys that may log in as root.
pub(crate) const AUTHORIZED_KEYS: &str = "authorized_keys";
/// The private host key; `.pub` is appended for the public one.
pub(crate) const HOST_KEY: &str = "ssh_host_ed25519_key";
/// sshd's configuration.
pub(crate) const SSHD_CONFIG: &str = "sshd_config";
/// sshd's log (`sshd -E`).
pub(crate) const SSHD_LOG: &str = "sshd.log";
/// Output of the start scripts (mount or exec failures).
pub(crate) const START_LOG: &str = "start.log";
/// The script `setsid` runs: records its pid, then execs `unshare`.
pub(crate) const RUN_SCRIPT: &str = "run.sh";
/// The script run as the PID namespace's init: mounts, hostname, exec sshd.
pub(crate) const INIT_SCRIPT: &str = "init.sh";
/// The pid of the outer process (`unshare`), as the machine sees it.
pub(crate) const PID: &str = "pid";
/// The pid of the namespace's init (sshd), as the machine sees it.
pub(crate) const INIT_PID: &str = "init.pid";
/// The host's private `/nix`.
pub(crate) const NIX: &str = "nix";
/// The empty directory mounted over `/root` inside the host.
pub(crate) const HOME: &str = "home";
/// The host's own layers over the machine's top-level directories:
/// `layers/DIR/upper` holds what the host wrote below `/DIR`.
pub(crate) const LAYERS: &str = "layers";

/// Makes a resource address usable as a directory name: every character other
/// than ASCII letters, digits, `-` and `_` becomes `-`, and dashes at the ends
/// are dropped (`web[0]` → `web-0`).
pub(crate) fn safe_name(address: &Address) -> String {
    let mapped: String = address
        .to_string()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    mapped.trim_matches('-').to_owned()
}

/// Whether `name` could have come from [`safe_name`] (so it names a directory
/// directly below the deployment directory and nothing else).
pub(crate) fn is_safe_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('-')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// One host's directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HostDir {
    path: PathBuf,
}

impl HostDir {
    /// The directory at `path` (which may not exist).
    pub(crate) fn new(path: PathBuf) -> Self {
        Self { path }
    }

    /// The directory itself.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// A file in the directory.
    pub(crate) fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// Whether the directory exists.
    pub(crate) fn exists(&self) -> bool {
        self.path.is_dir()
    }

    /// The trimmed contents of a file, or `None` when it cannot be read.
    pub(crate) fn read(&self, name: &str) -> Option<String> {
        std::fs::read_to_string(self.file(name))
            .ok()
            .map(|s| s.trim().to_owned())
    }

    /// A pid recorded in a file.
    pub(crate) fn read_pid(&self, name: &str) -> Option<i32> {
        self.read(name)?.parse().ok().filter(|pid| *pid > 0)
    }

    /// Replaces a file atomically (write a sibling, then rename) with `mode`.
    pub(crate) fn write(&self, name: &str, contents: &str, mode: u32) -> Result<(), ProviderError> {
        let path = self.file(name);
        let temporary = self.file(&format!(".{name}.tmp"));
        let result = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&temporary)
            .and_then(|mut f| {
                f.set_permissions(std::fs::Permissions::from_mode(mode))?;
                f.write_all(contents.as_bytes())?;
                f.sync_all()
            })
            .and_then(|()| std::fs::rename(&temporary, &path));
        result.map_err(|e| io_error("write host file", &path, e))
    }

    /// Creates a directory (and its parents) inside the host directory.
    pub(crate) fn create_subdir(&self, name: &str) -> Result<PathBuf, ProviderError> {
        let path = self.file(name);
        fs_err::create_dir_all(&path).map_err(|e| io_error("create host directory", &path, e))?;
        Ok(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn safe_names() {
        let name = |s: &str| safe_name(&s.parse().unwrap());
        assert_eq!(name("web[0]"), "web-0");
        assert_eq!(name("db"), "db");
        assert_eq!(name("build_box[12]"), "build_box-12");
        assert!(is_safe_name("web-0"));
        for bad in ["", "..", "a/b", "-x", "a b"] {
            assert!(!is_safe_name(bad), "{bad}");
        }
    }

    #[test]
    fn writes_atomically_with_mode() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = HostDir::new(tmp.path().to_owned());
        dir.write("k", "a\n", 0o600).unwrap();
        dir.write("k", "b\n", 0o600).unwrap();
        assert_eq!(dir.read("k").as_deref(), Some("b"));
        let mode = std::fs::metadata(dir.file("k"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(!dir.file(".k.tmp").exists());
        dir.write(PID, "42\n", 0o644).unwrap();
        assert_eq!(dir.read_pid(PID), Some(42));
        assert_eq!(dir.read_pid("missing"), None);
    }
}
