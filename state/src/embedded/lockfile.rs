//! The lock file: an exclusive `flock` plus the holder's JSON record.

use std::io::{self, Seek, SeekFrom, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use fs4::fs_std::FileExt;
use fs_err::os::unix::fs::OpenOptionsExt;

use super::{copy, perms, store, Inner, OpenDb};
use crate::{LockInfo, StateError};

/// How often to re-read an empty holder record (the holder may be writing it).
const RECORD_ATTEMPTS: u32 = 3;

/// An exclusive `flock` on `DIR/lock`, held for the life of a lock.
///
/// Releasing it (explicitly or on drop) flushes and closes the database opened
/// under it, clears the holder record and releases the `flock`.
pub(super) struct HeldFlock {
    /// The open, locked lock file.
    file: fs_err::File,
    /// The backend whose database this lock guards.
    inner: Arc<Inner>,
    /// The lock's id.
    lock_id: String,
    /// Whether [`HeldFlock::release`] already ran.
    released: bool,
}

impl std::fmt::Debug for HeldFlock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeldFlock")
            .field("file", &self.file.path())
            .field("lock_id", &self.lock_id)
            .field("released", &self.released)
            .finish_non_exhaustive()
    }
}

/// Adds `path` to an error from a call that does not name it.
fn with_path(path: &Path, what: &str, e: &io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()))
}

/// Opens the lock file (`0600`), creating it when `create` is set.
fn open(path: &Path, create: bool) -> io::Result<fs_err::File> {
    fs_err::OpenOptions::new()
        .read(true)
        .write(true)
        .create(create)
        .mode(0o600)
        .open(path)
}

/// Tries once to take the exclusive `flock` on `file`.
fn try_flock(file: &fs_err::File) -> io::Result<bool> {
    FileExt::try_lock_exclusive(file.file()).map_err(|e| with_path(file.path(), "locking", &e))
}

/// Releases the `flock` on `file`.
fn unflock(file: &fs_err::File) -> io::Result<()> {
    FileExt::unlock(file.file()).map_err(|e| with_path(file.path(), "unlocking", &e))
}

/// The holder record in the lock file, if it has a readable one.
fn read_record(path: &Path) -> Option<LockInfo> {
    let text = fs_err::read_to_string(path).ok()?;
    serde_json::from_str(&text).ok()
}

/// The record of a holder known to hold the `flock`, retrying briefly while the
/// holder may still be writing it.
fn live_record(path: &Path) -> Option<LockInfo> {
    for attempt in 0..RECORD_ATTEMPTS {
        if let Some(info) = read_record(path) {
            return Some(info);
        }
        if attempt + 1 < RECORD_ATTEMPTS {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    None
}

/// The error for a lock held by someone else.
fn locked(path: &Path) -> StateError {
    match live_record(path) {
        Some(holder) => StateError::Locked {
            holder: Box::new(holder),
        },
        None => StateError::LockedUnknown {
            path: path.display().to_string(),
        },
    }
}

/// Replaces the lock file's content with `info` and syncs it.
fn write_record(file: &mut fs_err::File, info: &LockInfo) -> Result<(), StateError> {
    let json = serde_json::to_vec_pretty(info)
        .map_err(|e| io::Error::other(format!("encoding lock record: {e}")))?;
    file.set_len(0)?;
    file.seek(SeekFrom::Start(0))?;
    file.write_all(&json)?;
    file.write_all(b"\n")?;
    file.sync_all()?;
    Ok(())
}

/// Takes the `flock` once (no waiting) and writes the holder record, without
/// opening the database (`state recover` moves a damaged one aside first).
pub(super) fn take_flock(inner: &Arc<Inner>, info: &LockInfo) -> Result<HeldFlock, StateError> {
    let path = inner.lock_path();
    // A state removed while we opened its lock file (`prov env down`)
    // leaves us a locked file no longer at its path: open it again.
    let mut attempts = 0;
    let mut file = loop {
        perms::ensure_dir(&inner.dir)?;
        let file = open(&path, true)?;
        if !try_flock(&file)? {
            return Err(locked(&path));
        }
        attempts += 1;
        if is_at_path(&file, &path)? || attempts >= 3 {
            break file;
        }
    };
    write_record(&mut file, info)?;
    Ok(HeldFlock {
        file,
        inner: Arc::clone(inner),
        lock_id: info.id.clone(),
        released: false,
    })
}

/// Takes the lock once (no waiting): the `flock`, then the holder record, then
/// opens the database into the backend's slot, after checking that it has
/// not lost versions its copy holds.
pub(super) fn try_acquire(inner: &Arc<Inner>, info: &LockInfo) -> Result<HeldFlock, StateError> {
    let held = take_flock(inner, info)?;
    // From here on, dropping `held` undoes everything on error.
    let db = open_checked(inner)?;
    perms::harden(&inner.dir)?;
    *inner.slot() = Some(OpenDb {
        cache: super::store::Cache::default(),
        lock_id: info.id.clone(),
        db,
    });
    Ok(held)
}

/// Whether `file` is still the file at `path` (same device and inode).
fn is_at_path(file: &fs_err::File, path: &Path) -> io::Result<bool> {
    use std::os::unix::fs::MetadataExt as _;
    let open = file.metadata()?;
    match fs_err::metadata(path) {
        Ok(there) => Ok(there.dev() == open.dev() && there.ino() == open.ino()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// Opens the database and checks it against the copy of its latest version.
pub(super) fn open_checked(inner: &Inner) -> Result<sled::Db, StateError> {
    let db = store::open(&inner.db_path()).map_err(|e| copy::explain(&inner.dir, e))?;
    let latest =
        store::latest_header(&db, &inner.db_path()).map_err(|e| copy::explain(&inner.dir, e))?;
    copy::check(&inner.dir, latest.as_ref().map(|(l, s)| (l.as_str(), *s)))?;
    Ok(db)
}

impl HeldFlock {
    /// The backend whose database this lock guards.
    pub(super) fn inner(&self) -> &Arc<Inner> {
        &self.inner
    }

    /// Flushes and closes the database, clears the record, releases the lock.
    pub(super) fn release(&mut self) -> Result<(), StateError> {
        if self.released {
            return Ok(());
        }
        self.released = true;
        let open = {
            let mut slot = self.inner.slot();
            if slot.as_ref().is_some_and(|o| o.lock_id == self.lock_id) {
                slot.take()
            } else {
                None
            }
        };
        let mut result = Ok(());
        if let Some(open) = open {
            if let Err(source) = open.db.flush() {
                result = Err(StateError::Database {
                    path: self.inner.db_path().display().to_string(),
                    source,
                });
            }
            drop(open);
            if let Err(e) = perms::harden(&self.inner.dir) {
                result = result.and(Err(e.into()));
            }
        }
        if let Err(e) = self.file.set_len(0) {
            result = result.and(Err(e.into()));
        }
        if let Err(e) = unflock(&self.file) {
            result = result.and(Err(e.into()));
        }
        result
    }
}

impl HeldFlock {
    /// Removes the state this lock guards (the database, its copy, a
    /// damaged database kept aside), then the lock file (unlinked while
    /// still locked, so a waiter that opened it sees it gone), releases the
    /// lock and removes the directory when nothing else is left in it.
    pub(super) fn remove(&mut self) -> Result<(), StateError> {
        if self.released {
            return Err(StateError::Conflict(format!(
                "removing {} after its lock was released",
                self.inner.dir.display()
            )));
        }
        {
            let mut slot = self.inner.slot();
            if slot.as_ref().is_some_and(|o| o.lock_id == self.lock_id) {
                drop(slot.take());
            }
        }
        let dir = self.inner.dir.clone();
        for entry in fs_err::read_dir(&dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let path = entry.path();
            if name == "state.db" || name.starts_with("state.db.damaged-") {
                fs_err::remove_dir_all(&path)?;
            } else if name == copy::NAME || name.starts_with(&format!("{}.", copy::NAME)) {
                fs_err::remove_file(&path)?;
            }
        }
        fs_err::remove_file(self.inner.lock_path())?;
        self.released = true;
        unflock(&self.file)?;
        match fs_err::remove_dir(&dir) {
            Ok(()) => Ok(()),
            // Something else lives there (keys beside a deployment's state),
            // or a new state was begun after the lock went: it stays.
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::DirectoryNotEmpty | io::ErrorKind::NotFound
                ) =>
            {
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }
}

impl Drop for HeldFlock {
    fn drop(&mut self) {
        if let Err(e) = self.release() {
            tracing::warn!(
                "releasing the state lock {}: {e}",
                self.file.path().display()
            );
        }
    }
}

/// Who holds the lock at `path` now: `Some` only while its `flock` is held.
pub(super) fn holder(path: &Path) -> Result<Option<LockInfo>, StateError> {
    if !path.exists() {
        return Ok(None);
    }
    let file = open(path, false)?;
    if try_flock(&file)? {
        unflock(&file)?;
        return Ok(None);
    }
    match live_record(path) {
        Some(info) => Ok(Some(info)),
        None => Err(StateError::LockedUnknown {
            path: path.display().to_string(),
        }),
    }
}

/// Clears a stale record when the lock is free; a live holder cannot be broken.
pub(super) fn force_unlock(path: &Path, id: &str) -> Result<(), StateError> {
    if !path.exists() {
        tracing::info!("no lock file at {}; nothing to unlock", path.display());
        return Ok(());
    }
    let file = open(path, false)?;
    if try_flock(&file)? {
        let stale = read_record(path);
        file.set_len(0)?;
        unflock(&file)?;
        match stale {
            Some(info) => tracing::info!(
                "the lock at {} was already free (its holder {info} has exited); cleared its record",
                path.display()
            ),
            None => tracing::info!("the lock at {} was already free", path.display()),
        }
        return Ok(());
    }
    match live_record(path) {
        Some(holder) if holder.id == id => Err(StateError::HolderRunning {
            holder: Box::new(holder),
        }),
        Some(holder) => Err(StateError::LockMismatch {
            given: id.to_owned(),
            holder: Some(Box::new(holder)),
        }),
        None => Err(StateError::LockedUnknown {
            path: path.display().to_string(),
        }),
    }
}
