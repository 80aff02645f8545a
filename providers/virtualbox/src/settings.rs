//! Settings of `[providers.virtualbox]` and where VBoxManage is found.

use std::path::{Path, PathBuf};

/// Environment variable naming the VBoxManage program; it wins over the spec
/// (tests point it at a stand-in).
pub const ENV_VBOXMANAGE: &str = "PROV_VBOXMANAGE";

/// The program looked up on `PATH` when nothing else is configured.
pub const DEFAULT_PROGRAM: &str = "VBoxManage";

/// Settings of the `[providers.virtualbox]` section; the spec holds this
/// type. The default takes VBoxManage from `PATH`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VirtualBoxSettings {
    /// `vboxmanage = "/path/VBoxManage"` (a relative path with a `/` is
    /// resolved against the spec's directory); `VBoxManage` on `PATH` when
    /// unset.
    pub vboxmanage: Option<PathBuf>,
}

impl VirtualBoxSettings {
    /// The program to run: `PROV_VBOXMANAGE`, else `vboxmanage`, else
    /// `VBoxManage` found on `PATH` (`None` when it is not there).
    #[must_use]
    pub fn program(&self, env: Option<PathBuf>, path: Option<&std::ffi::OsStr>) -> Option<PathBuf> {
        if let Some(p) = env.filter(|p| !p.as_os_str().is_empty()) {
            return Some(p);
        }
        if let Some(p) = &self.vboxmanage {
            return Some(p.clone());
        }
        let path = path?;
        std::env::split_paths(path)
            .map(|dir| dir.join(DEFAULT_PROGRAM))
            .find(|candidate| is_executable(candidate))
    }
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_wins_then_spec_then_path() {
        let tmp = tempfile::tempdir().unwrap();
        let mut s = VirtualBoxSettings::default();
        assert_eq!(s.program(None, Some(tmp.path().as_os_str())), None);
        let exe = tmp.path().join(DEFAULT_PROGRAM);
        std::fs::write(&exe, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&exe, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        assert_eq!(s.program(None, Some(tmp.path().as_os_str())), Some(exe));
        s.vboxmanage = Some("/opt/vb".into());
        assert_eq!(s.program(None, None), Some("/opt/vb".into()));
        assert_eq!(
            s.program(Some("/x/VBoxManage".into()), None),
            Some("/x/VBoxManage".into())
        );
        assert_eq!(s.program(Some("".into()), None), Some("/opt/vb".into()));
    }
}
