//! Writing a file so that readers see the old content or the new, never a
//! mix, and a crash loses neither: the one place prov does it.
//!
//! The temporary file comes from `tempfile` (a random name opened with
//! `O_EXCL`, mode 0600, so nothing planted under a guessable name is ever
//! followed); it is fsynced, renamed over the target, and the directory is
//! fsynced so the rename itself survives a crash.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};

/// Writes `bytes` to `path` atomically, mode 0600, creating the directory
/// when missing.
///
/// # Errors
/// When any step fails (the message names the path).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or_else(|| Path::new("."));
    let name = path
        .file_name()
        .with_context(|| format!("{} is not a file path", path.display()))?;
    fs_err::create_dir_all(dir)?;
    let mut file = tempfile::Builder::new()
        .prefix(&format!(".{}.", name.to_string_lossy()))
        .suffix(".tmp")
        .tempfile_in(dir)
        .with_context(|| format!("creating a temporary file next to {}", path.display()))?;
    file.write_all(bytes)
        .and_then(|()| file.as_file().sync_all())
        .with_context(|| format!("writing {}", file.path().display()))?;
    // The temporary file is removed if this fails (NamedTempFile's drop).
    file.persist(path)
        .with_context(|| format!("renaming into {}", path.display()))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("syncing the directory {}", dir.display()))?;
    Ok(())
}
