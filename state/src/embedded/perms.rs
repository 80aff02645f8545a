//! Keeps the state directory private: directories `0700`, files `0600`.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Mode of every directory under the state directory (and itself).
const DIR_MODE: u32 = 0o700;
/// Mode of every file under the state directory.
const FILE_MODE: u32 = 0o600;

/// Creates the state directory if needed and makes it `0700`.
pub(super) fn ensure_dir(dir: &Path) -> io::Result<()> {
    if !dir.is_dir() {
        fs_err::create_dir_all(dir)?;
    }
    set_mode(dir, DIR_MODE)
}

/// Sets `path`'s permission bits to `mode` unless they already are.
fn set_mode(path: &Path, mode: u32) -> io::Result<()> {
    let meta = fs_err::metadata(path)?;
    if meta.permissions().mode() & 0o7777 != mode {
        fs_err::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    }
    Ok(())
}

/// Makes `dir` and everything under it private (sled creates its files with
/// the default umask). Symbolic links are left alone.
pub(super) fn harden(dir: &Path) -> io::Result<()> {
    set_mode(dir, DIR_MODE)?;
    for entry in fs_err::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        let kind = entry.file_type()?;
        if kind.is_dir() {
            harden(&path)?;
        } else if kind.is_file() {
            set_mode(&path, FILE_MODE)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn harden_makes_everything_private() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("state");
        ensure_dir(&dir).unwrap();
        fs_err::create_dir(dir.join("sub")).unwrap();
        fs_err::write(dir.join("sub/f"), "x").unwrap();
        fs_err::set_permissions(dir.join("sub"), std::fs::Permissions::from_mode(0o755)).unwrap();
        fs_err::write(dir.join("g"), "y").unwrap();
        fs_err::set_permissions(dir.join("g"), std::fs::Permissions::from_mode(0o644)).unwrap();
        harden(&dir).unwrap();
        let mode = |p: &str| fs_err::metadata(dir.join(p)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(""), 0o700);
        assert_eq!(mode("sub"), 0o700);
        assert_eq!(mode("sub/f"), 0o600);
        assert_eq!(mode("g"), 0o600);
    }
}
