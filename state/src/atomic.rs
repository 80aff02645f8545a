//! Writing a file so that readers see the old content or the new, never a
//! mix, and a crash loses neither: the one place prov does it (the CLI
//! re-exports it).
//!
//! The temporary file comes from `tempfile` (a random name opened with
//! `O_EXCL`, mode 0600, so nothing planted under a guessable name is ever
//! followed); it is fsynced, renamed over the target, and the directory is
//! fsynced so the rename itself survives a crash.

use std::io::{self, Write};
use std::path::Path;

/// The prefix of the temporary file `write_atomic` makes next to `name`.
#[must_use]
pub fn temp_prefix(name: &str) -> String {
    format!(".{name}.")
}

/// Writes `bytes` to `path` atomically, mode 0600, creating the directory
/// when missing.
///
/// # Errors
/// When any step fails (the message names the path).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or_else(|| Path::new("."));
    let Some(name) = path.file_name() else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} is not a file path", path.display()),
        ));
    };
    let named = |what: &str, p: &Path, e: io::Error| {
        io::Error::new(e.kind(), format!("{what} {}: {e}", p.display()))
    };
    fs_err::create_dir_all(dir)?;
    let mut file = tempfile::Builder::new()
        .prefix(&temp_prefix(&name.to_string_lossy()))
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(|e| named("creating a temporary file next to", path, e))?;
    file.write_all(bytes)
        .and_then(|()| file.as_file().sync_all())
        .map_err(|e| named("writing", file.path(), e))?;
    // The temporary file is removed if this fails (NamedTempFile's drop).
    file.persist(path)
        .map_err(|e| named("renaming into", path, e.error))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| named("syncing the directory", dir, e))?;
    Ok(())
}
