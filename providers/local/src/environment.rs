//! What the machine must offer before the provider can start hosts.

use std::path::{Path, PathBuf};

use prov_provider::ProviderError;

use crate::error::config_error;

/// Absolute paths of the programs a local host is made of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tools {
    /// `unshare` (util-linux).
    pub unshare: PathBuf,
    /// `setsid` (util-linux).
    pub setsid: PathBuf,
    /// `mount` (util-linux).
    pub mount: PathBuf,
    /// The OpenSSH server, `/usr/sbin/sshd` on Debian.
    pub sshd: PathBuf,
}

/// Program name and the package that provides it, in [`Tools`] order.
const PROGRAMS: [(&str, &str); 4] = [
    ("unshare", "util-linux"),
    ("setsid", "util-linux"),
    ("mount", "util-linux (Debian: mount)"),
    ("sshd", "openssh-server"),
];

/// Directories searched after `PATH`: sshd lives in sbin, which a non-login
/// `PATH` often lacks.
const EXTRA_DIRS: [&str; 4] = ["/usr/sbin", "/usr/bin", "/sbin", "/bin"];

/// Finds an executable file called `name` on `PATH` or in the standard
/// system directories.
#[must_use]
pub fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(EXTRA_DIRS.iter().map(PathBuf::from))
        .filter(|dir| dir.is_absolute())
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Checks that local hosts can run here: `os` must be `linux`, the effective
/// user root, and `find` must locate every program (returning absolute paths).
///
/// # Errors
/// [`ProviderError::Config`] naming what is wrong and, for missing programs,
/// which packages to install.
pub fn check_environment(
    os: &str,
    is_root: bool,
    find: impl Fn(&str) -> Option<PathBuf>,
) -> Result<Tools, ProviderError> {
    if os != "linux" {
        return Err(config_error(format!(
            "local hosts are Linux namespace containers; this machine runs {os}"
        )));
    }
    if !is_root {
        return Err(config_error(
            "local hosts need root (mount, PID and UTS namespaces need CAP_SYS_ADMIN); run prov as root",
        ));
    }
    let found: Vec<Option<PathBuf>> = PROGRAMS.iter().map(|(name, _)| find(name)).collect();
    let missing: Vec<String> = PROGRAMS
        .iter()
        .zip(&found)
        .filter(|(_, path)| path.is_none())
        .map(|((name, package), _)| format!("`{name}` (install {package})"))
        .collect();
    if !missing.is_empty() {
        return Err(config_error(format!(
            "local hosts need programs that are not installed: {}",
            missing.join(", ")
        )));
    }
    let mut paths = found.into_iter().flatten();
    let mut next = || paths.next().unwrap_or_default();
    Ok(Tools {
        unshare: next(),
        setsid: next(),
        mount: next(),
        sshd: next(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn everything(name: &str) -> Option<PathBuf> {
        Some(PathBuf::from("/usr/bin").join(name))
    }

    #[test]
    fn finds_all_tools_in_order() {
        let tools = check_environment("linux", true, everything).unwrap();
        assert_eq!(tools.sshd, Path::new("/usr/bin/sshd"));
        assert_eq!(tools.unshare, Path::new("/usr/bin/unshare"));
    }

    #[test]
    fn names_missing_packages() {
        let err = check_environment("linux", true, |name| {
            (name != "sshd" && name != "unshare").then(|| everything(name))?
        })
        .unwrap_err()
        .to_string();
        assert!(err.contains("`unshare` (install util-linux)"), "{err}");
        assert!(err.contains("`sshd` (install openssh-server)"), "{err}");
        assert!(!err.contains("setsid"), "{err}");
    }

    #[test]
    fn refuses_other_systems() {
        let err = check_environment("macos", true, everything).unwrap_err();
        assert!(err.to_string().contains("macos"), "{err}");
    }
}
