//! The default backend: a sled database under a directory (`.prov/`).
//!
//! Layout of the directory:
//! - `lock`: the lock file. An exclusive `flock` on it is the state lock; while
//!   held it contains the holder's [`LockInfo`] as JSON. The kernel releases the
//!   `flock` when its process exits, so an embedded lock never goes stale.
//! - `state.db/`: the sled database, opened only while the lock is held (sled
//!   itself locks its files exclusively for as long as they are open).
//! - `latest.json`: a copy of the latest version, written after each write,
//!   from which `prov state recover` rebuilds a damaged database (the damaged
//!   one is kept as `state.db.damaged-TIME`).
//!
//! - `envs/NAME/`: the state of the environment `NAME` (`prov env`), laid
//!   out the same way.
//!
//! The directory is `0700` and every file in it `0600`.

mod copy;
mod held;
mod lockfile;
mod packed;
mod perms;
mod store;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;

use crate::{HistoryEntry, LockInfo, StateBackend, StateDocument, StateError, StateLock};
use held::EmbeddedLock;

/// How long to sleep between attempts while waiting for a held lock.
const RETRY_INTERVAL: Duration = Duration::from_millis(200);

/// State in a sled database under a directory, locked with `flock`.
pub struct EmbeddedBackend {
    inner: Arc<Inner>,
}

/// What the backend and its locks share.
pub(crate) struct Inner {
    /// The state directory.
    dir: PathBuf,
    /// The database, open while this backend holds the lock.
    slot: Mutex<Option<OpenDb>>,
}

/// The database opened under a lock.
struct OpenDb {
    /// The id of the lock it was opened under.
    lock_id: String,
    /// The database.
    db: sled::Db,
    /// The latest version as this handle last saw it.
    cache: store::Cache,
}

impl Inner {
    /// `DIR/lock`.
    fn lock_path(&self) -> PathBuf {
        self.dir.join("lock")
    }

    /// `DIR/state.db`.
    fn db_path(&self) -> PathBuf {
        self.dir.join("state.db")
    }

    /// The database slot (a poisoned mutex still holds a usable value).
    fn slot(&self) -> MutexGuard<'_, Option<OpenDb>> {
        self.slot.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl EmbeddedBackend {
    /// A backend for the state in `dir` (no I/O until first used).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            inner: Arc::new(Inner {
                dir: dir.into(),
                slot: Mutex::new(None),
            }),
        }
    }

    /// The state directory.
    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// The directory of the environment `name`'s state, beside the
    /// deployment's in `dir`: `DIR/envs/NAME`.
    #[must_use]
    pub fn environment_dir(dir: &Path, name: &str) -> PathBuf {
        dir.join(ENVIRONMENTS).join(name)
    }
}

/// The directory under a state directory that holds its environments'.
const ENVIRONMENTS: &str = "envs";

impl std::fmt::Debug for EmbeddedBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedBackend")
            .field("dir", &self.inner.dir)
            .finish_non_exhaustive()
    }
}

/// Runs blocking file and database work off the async runtime.
async fn blocking<T, F>(f: F) -> Result<T, StateError>
where
    F: FnOnce() -> Result<T, StateError> + Send + 'static,
    T: Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(result) => result,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => Err(std::io::Error::other(format!("state task was cancelled: {e}")).into()),
    }
}

/// Runs `f` on the open database: the one this backend holds the lock for, or
/// else under a short `read` lock taken (and released) for the call. A state
/// that was never created reads as `T::default()`.
fn with_db<T: Default>(
    inner: &Arc<Inner>,
    f: impl FnOnce(&sled::Db, &Path) -> Result<T, StateError>,
) -> Result<T, StateError> {
    let db_path = inner.db_path();
    {
        let slot = inner.slot();
        if let Some(open) = slot.as_ref() {
            return f(&open.db, &db_path);
        }
    }
    if !db_path.exists() {
        return match copy::header(&inner.dir) {
            Some(copy) => Err(copy::damaged(
                &inner.dir,
                format!(
                    "nothing: it is gone, but its copy holds serial {}",
                    copy.serial
                ),
            )),
            None => Ok(T::default()),
        };
    }
    let mut held = acquire_for_reading(inner)?;
    let result = match inner.slot().as_ref() {
        Some(open) => f(&open.db, &db_path),
        None => Err(StateError::Conflict(
            "the database was closed while reading".to_owned(),
        )),
    };
    let released = held.release();
    let value = result?;
    released?;
    Ok(value)
}

/// How long a read waits for other readers' short locks (never for a
/// writer's: a read during an apply fails at once, naming it).
const READERS_WAIT: Duration = Duration::from_secs(5);
/// How often a read looks again meanwhile.
const READERS_RETRY: Duration = Duration::from_millis(10);

/// The short `read` lock: taken at once, or as soon as other readers (two
/// `prov ssh` at once, say) let go of theirs.
fn acquire_for_reading(inner: &Arc<Inner>) -> Result<lockfile::HeldFlock, StateError> {
    let info = LockInfo::for_this_process("read");
    let deadline = Instant::now() + READERS_WAIT;
    loop {
        match lockfile::try_acquire(inner, &info) {
            // A reader's, or one whose record is being written.
            Err(StateError::Locked { holder }) if holder.operation == info.operation => {}
            Err(StateError::LockedUnknown { .. }) => {}
            other => return other,
        }
        if Instant::now() >= deadline {
            return lockfile::try_acquire(inner, &info);
        }
        std::thread::sleep(READERS_RETRY);
    }
}

/// What [`EmbeddedBackend::recover`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovered {
    /// The serial of the version the database was rebuilt with.
    pub serial: u64,
    /// Where the damaged database was moved.
    pub kept: PathBuf,
}

impl EmbeddedBackend {
    /// Rebuilds a damaged database from the copy of its latest version, under
    /// the lock held for `info`: the damaged database is moved aside (kept,
    /// never deleted) and a new one holds the copied version, with its serial.
    /// Older versions stay only in the moved-aside database.
    ///
    /// # Errors
    /// [`StateError::Conflict`] when the database is not damaged; the lock's
    /// errors; [`StateError::Corrupt`] when there is no readable copy.
    pub async fn recover(&self, info: LockInfo) -> Result<Recovered, StateError> {
        let inner = Arc::clone(&self.inner);
        blocking(move || recover_blocking(&inner, &info)).await
    }
}

fn recover_blocking(inner: &Arc<Inner>, info: &LockInfo) -> Result<Recovered, StateError> {
    let mut held = lockfile::take_flock(inner, info)?;
    let result = rebuild(inner, info);
    let released = held.release();
    let recovered = result?;
    released?;
    Ok(recovered)
}

fn rebuild(inner: &Arc<Inner>, info: &LockInfo) -> Result<Recovered, StateError> {
    let doc = copy::read(&inner.dir)?;
    let db_path = inner.db_path();
    if db_path.exists() {
        // Damaged: it does not open, or (opening checks the header only)
        // its latest version does not read.
        let latest = lockfile::open_checked(inner).and_then(|db| {
            store::read_latest(&db, &db_path).map_err(|e| copy::explain(&inner.dir, e))
        });
        match latest {
            Ok(latest) => {
                return Err(StateError::Conflict(format!(
                    "the database {} is not damaged (its latest serial is {}, its copy's {}): nothing to recover",
                    db_path.display(),
                    latest.map_or_else(|| "none".to_owned(), |d| d.serial.to_string()),
                    doc.serial
                )));
            }
            Err(StateError::Damaged { .. }) => {}
            // Not damage (permissions, say): nothing is moved.
            Err(e) => return Err(e),
        }
    }
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%S%.3fZ");
    let kept = inner.dir.join(format!("{}{stamp}", perms::DAMAGED_PREFIX));
    if db_path.exists() {
        fs_err::rename(&db_path, &kept)?;
        std::fs::File::open(&inner.dir).and_then(|d| d.sync_all())?;
    }
    let db = store::open(&db_path)?;
    store::write(
        &db,
        &db_path,
        &store::NewVersion::new(
            &doc,
            &HistoryEntry {
                written_by: format!("{} (state recover)", info.who),
                ..crate::writing::entry_now(&doc, info)
            },
        )?,
        &mut store::Cache::default(),
    )?;
    drop(db);
    perms::harden(&inner.dir)?;
    Ok(Recovered {
        serial: doc.serial,
        kept,
    })
}

#[async_trait]
impl StateBackend for EmbeddedBackend {
    fn describe(&self) -> String {
        format!("embedded state at {}", self.inner.dir.display())
    }

    async fn lock(
        &self,
        info: LockInfo,
        timeout: Duration,
    ) -> Result<Box<dyn StateLock>, StateError> {
        let deadline = Instant::now() + timeout;
        loop {
            let inner = Arc::clone(&self.inner);
            let attempt = info.clone();
            let result = blocking(move || {
                let held = lockfile::try_acquire(&inner, &attempt)?;
                Ok(Box::new(EmbeddedLock::new(attempt, held)) as Box<dyn StateLock>)
            })
            .await;
            match result {
                Err(StateError::Locked { .. } | StateError::LockedUnknown { .. })
                    if Instant::now() < deadline =>
                {
                    let left = deadline.saturating_duration_since(Instant::now());
                    tokio::time::sleep(left.min(RETRY_INTERVAL)).await;
                }
                other => return other,
            }
        }
    }

    async fn lock_holder(&self) -> Result<Option<LockInfo>, StateError> {
        let path = self.inner.lock_path();
        blocking(move || lockfile::holder(&path)).await
    }

    async fn force_unlock(&self, id: &str) -> Result<(), StateError> {
        let path = self.inner.lock_path();
        let id = id.to_owned();
        blocking(move || lockfile::force_unlock(&path, &id)).await
    }

    async fn read(&self) -> Result<Option<StateDocument>, StateError> {
        let inner = Arc::clone(&self.inner);
        // Opening checked the latest version's header only: a document
        // that does not rebuild or decode is found here, and is damage the
        // copy can repair as much as one that does not open.
        blocking(move || {
            with_db(&inner, |db, path| {
                store::read_latest(db, path).map_err(|e| copy::explain(&inner.dir, e))
            })
        })
        .await
    }

    /// Opens the database (checking it against its copy) and looks for
    /// a latest serial: no document is rebuilt or decoded.
    async fn exists(&self) -> Result<bool, StateError> {
        let inner = Arc::clone(&self.inner);
        blocking(move || {
            with_db(&inner, |db, path| {
                Ok(store::latest_serial(db, path)?.is_some())
            })
        })
        .await
    }

    async fn history(&self) -> Result<Vec<HistoryEntry>, StateError> {
        let inner = Arc::clone(&self.inner);
        blocking(move || with_db(&inner, store::history)).await
    }

    async fn read_serial(&self, serial: u64) -> Result<Option<StateDocument>, StateError> {
        let inner = Arc::clone(&self.inner);
        blocking(move || with_db(&inner, |db, path| store::read_serial(db, path, serial))).await
    }

    async fn environments(&self) -> Result<Vec<String>, StateError> {
        let dir = self.inner.dir.join(ENVIRONMENTS);
        blocking(move || {
            let entries = match fs_err::read_dir(&dir) {
                Ok(entries) => entries,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
                Err(e) => return Err(e.into()),
            };
            let mut names = Vec::new();
            for entry in entries {
                let entry = entry?;
                let name = entry.file_name().to_string_lossy().into_owned();
                if entry.file_type()?.is_dir() && crate::environment::check_name(&name).is_ok() {
                    names.push(name);
                }
            }
            names.sort();
            Ok(names)
        })
        .await
    }
}
