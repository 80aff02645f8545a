//! The one error type of the state crate.

use crate::LockInfo;

/// What went wrong with state.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StateError {
    /// Someone else holds the lock.
    #[error("state is locked by {holder}\nIf that run is gone, release the lock with: prov state force-unlock {}", holder.id)]
    Locked {
        /// The holder's record.
        holder: Box<LockInfo>,
    },
    /// The lock exists but its owner record cannot be read.
    #[error("state is locked by another process (no owner record could be read from {path})")]
    LockedUnknown {
        /// Where the lock lives.
        path: String,
    },
    /// `force-unlock` with an id that is not the holder's.
    #[error("lock id `{given}` does not match the current lock {}", holder.as_ref().map_or_else(|| "(no lock is held)".to_owned(), |h| h.to_string()))]
    LockMismatch {
        /// The id given.
        given: String,
        /// The holder now.
        holder: Option<Box<LockInfo>>,
    },
    /// `force-unlock` of an embedded lock whose holder process is still running.
    #[error("the lock is held by {holder}, which is still running\nAn embedded state lock is a kernel file lock: it is released as soon as its process exits (even when killed), so it never goes stale and cannot be broken. Stop process {} or wait for it to finish.", holder.pid)]
    HolderRunning {
        /// The live holder's record.
        holder: Box<LockInfo>,
    },
    /// A write that would overwrite someone else's newer version.
    #[error("state conflict: {0}")]
    Conflict(String),
    /// The stored document has a layout this build cannot read.
    #[error(
        "state format version {found} is not supported by this prov (it reads version {supported})"
    )]
    Format {
        /// Version found.
        found: u32,
        /// Version supported.
        supported: u32,
    },
    /// The stored data does not decode.
    #[error("state is corrupt: {0}")]
    Corrupt(String),
    /// The embedded database lost versions or does not open, and a copy of
    /// the latest version is kept beside it.
    #[error("the state database {database} is damaged: it holds {found}.\nThe latest version is kept in {copy}; rebuild the database from it with: prov state recover\n(the damaged database is kept aside, not deleted)")]
    Damaged {
        /// The database directory.
        database: String,
        /// The copy of the latest version.
        copy: String,
        /// What the database holds (or how it fails to open).
        found: String,
    },
    /// The embedded database failed.
    #[error("embedded state database at {path}: {source}")]
    Database {
        /// Database directory.
        path: String,
        /// The sled error.
        #[source]
        source: sled::Error,
    },
    /// Our lock was removed (`force-unlock`) and someone else holds the lock
    /// now; nothing of theirs was released.
    #[error("our lock {ours} is gone: the state is now locked by {holder}; it was probably force-unlocked while this run still held it, so nothing was released")]
    LockLost {
        /// Our lock id.
        ours: String,
        /// The holder now.
        holder: Box<LockInfo>,
    },
    /// Our lock was removed (`force-unlock`) while we held it and nobody
    /// holds it now.
    #[error("our lock {ours} on {target} is gone ({now}): it was force-unlocked while this run held it; stopping before changing anything more")]
    LockGone {
        /// Our lock id.
        ours: String,
        /// The lock object.
        target: String,
        /// Who holds it now, in words.
        now: String,
    },
    /// The S3 endpoint does not honour conditional writes, which locking
    /// and compare-and-swap rely on.
    #[error("the S3 endpoint {endpoint} does not honour conditional writes: {what}. prov cannot lock state or write it safely there; use S3 or an S3-compatible store that supports If-None-Match and If-Match on PutObject")]
    NoConditionalWrites {
        /// The endpoint (or `AWS S3`).
        endpoint: String,
        /// What the probe saw.
        what: String,
    },
    /// An S3 request failed.
    #[error("S3 {operation} on {target}: {message}")]
    S3 {
        /// The S3 operation (`PutObject`) or `configuration`.
        operation: &'static str,
        /// The object or bucket (`s3://bucket/key`).
        target: String,
        /// What went wrong (the AWS error code and message, or the
        /// connection failure).
        message: String,
    },
    /// A file operation failed (messages carry the path).
    /// State encrypted at rest could not be encrypted or decrypted, or
    /// plaintext state was found where encryption is configured.
    #[error("{0}")]
    Encryption(String),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}
