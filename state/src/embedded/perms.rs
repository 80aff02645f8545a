//! Keeps the state directory private: directories `0700`, files `0600`, but
//! only what prov created. A state directory holding anything else (say
//! `[state] path = "."`, next to the spec and `.git`) is refused, and nothing
//! in it is touched.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Mode of every directory prov keeps state in.
const DIR_MODE: u32 = 0o700;
/// Mode of every file prov writes there.
const FILE_MODE: u32 = 0o600;

/// The name prefix of a damaged database moved aside by `state recover`.
pub(super) const DAMAGED_PREFIX: &str = "state.db.damaged-";

/// What prov creates in a state directory: the lock, the database, the copy
/// of the latest version (and its temporary file while it is written), a
/// damaged database kept aside, the deployer's generated SSH key (`ssh/`,
/// in the default `.prov`), the binary cache's signing key (`cache/`), and
/// the environments' states (`envs/`).
fn is_own(name: &str) -> bool {
    matches!(
        name,
        "lock" | "state.db" | "ssh" | "cache" | super::ENVIRONMENTS | super::copy::NAME
    ) || name.starts_with(DAMAGED_PREFIX)
        || name.starts_with(&crate::atomic::temp_prefix(super::copy::NAME))
}

/// Creates the state directory if needed and makes it `0700`; refuses a
/// directory that holds files prov did not create.
pub(super) fn ensure_dir(dir: &Path) -> io::Result<()> {
    if !dir.is_dir() {
        fs_err::create_dir_all(dir)?;
    } else {
        let mut foreign: Vec<String> = fs_err::read_dir(dir)?
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|name| !is_own(name))
            .collect();
        if !foreign.is_empty() {
            foreign.sort();
            let shown: Vec<String> = foreign.iter().take(5).cloned().collect();
            let more = if foreign.len() > shown.len() {
                ", …"
            } else {
                ""
            };
            return Err(io::Error::other(format!(
                "the state directory {} holds files prov did not create ({}{more}); give `[state] path` (or --state-dir) a directory of its own, such as .prov",
                dir.display(),
                shown.join(", ")
            )));
        }
    }
    set_mode(dir, DIR_MODE)
}

/// Sets `path`'s permission bits to `mode` unless they already are. A path
/// gone meanwhile (sled removes old blob files as it goes) is fine.
fn set_mode(path: &Path, mode: u32) -> io::Result<()> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if meta.permissions().mode() & 0o7777 != mode {
        match std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            other => other?,
        }
    }
    Ok(())
}

/// Makes what prov keeps in `dir` private (sled creates its files with the
/// default umask): `dir` itself, the lock and the database's tree. Anything
/// else, and symbolic links, are left alone.
pub(super) fn harden(dir: &Path) -> io::Result<()> {
    set_mode(dir, DIR_MODE)?;
    set_mode(&dir.join("lock"), FILE_MODE)?;
    set_mode(&super::copy::path(dir), FILE_MODE)?;
    harden_tree(&dir.join("state.db"))
}

fn harden_tree(dir: &Path) -> io::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    set_mode(dir, DIR_MODE)?;
    for entry in entries {
        let Ok(entry) = entry else { continue };
        let path = entry.path();
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_dir() {
            harden_tree(&path)?;
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
    fn harden_makes_prov_files_private_and_leaves_the_rest() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("state");
        ensure_dir(&dir).unwrap();
        fs_err::create_dir_all(dir.join("state.db/blobs")).unwrap();
        fs_err::write(dir.join("state.db/blobs/1"), "x").unwrap();
        fs_err::set_permissions(dir.join("state.db"), std::fs::Permissions::from_mode(0o755))
            .unwrap();
        fs_err::write(dir.join("lock"), "y").unwrap();
        fs_err::set_permissions(dir.join("lock"), std::fs::Permissions::from_mode(0o644)).unwrap();
        fs_err::create_dir(dir.join("ssh")).unwrap();
        fs_err::set_permissions(dir.join("ssh"), std::fs::Permissions::from_mode(0o750)).unwrap();
        harden(&dir).unwrap();
        let mode = |p: &str| fs_err::metadata(dir.join(p)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(""), 0o700);
        assert_eq!(mode("state.db"), 0o700);
        assert_eq!(mode("state.db/blobs/1"), 0o600);
        assert_eq!(mode("lock"), 0o600);
        assert_eq!(mode("ssh"), 0o750, "not the database's: left alone");
    }

    #[test]
    fn a_path_that_vanishes_while_hardening_is_fine() {
        let tmp = tempfile::tempdir().unwrap();
        assert!(set_mode(&tmp.path().join("gone"), FILE_MODE).is_ok());
        assert!(harden_tree(&tmp.path().join("gone-dir")).is_ok());
    }

    /// state-hardening 6, at a small size: sled removes old blob files
    /// while a write hardens the database's modes. Hardening reported the
    /// vanished file as an error, so a write that had landed was reported
    /// as failed (and every later save conflicted). Bounded: 3,000 files
    /// churned, at most 3,000 hardenings.
    #[test]
    fn hardening_while_files_vanish_under_it_never_fails() {
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::Arc;

        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("state");
        let blobs = dir.join("state.db/blobs");
        fs_err::create_dir_all(&blobs).unwrap();
        let done = Arc::new(AtomicBool::new(false));
        let churn = {
            let (blobs, done) = (blobs.clone(), Arc::clone(&done));
            std::thread::spawn(move || {
                for i in 0..3000u32 {
                    let path = blobs.join(i.to_string());
                    fs_err::write(&path, "blob").unwrap();
                    if i >= 8 {
                        let _ = std::fs::remove_file(blobs.join((i - 8).to_string()));
                    }
                }
                done.store(true, Ordering::SeqCst);
            })
        };
        let mut failures = Vec::new();
        for _ in 0..3000 {
            if done.load(Ordering::SeqCst) {
                break;
            }
            if let Err(e) = harden(&dir) {
                failures.push(e.to_string());
            }
        }
        churn.join().unwrap();
        assert!(
            failures.is_empty(),
            "{} failed hardenings, first: {}",
            failures.len(),
            failures[0]
        );
    }
}
