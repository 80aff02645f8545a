//! State backends for prov.
//!
//! The state document records what prov created: one record per resource
//! address, with the provider id, attributes, status and dependencies. This
//! crate knows nothing of providers; attributes are opaque JSON.
//!
//! Every backend writes atomically, keeps every previous version (history by
//! serial), and locks with an owner record so a second prov on the same state
//! says who holds it.
//!
//! Backends: [`EmbeddedBackend`] (the default; sled under `.prov/`) and
//! [`S3Backend`] (team-shared state in an S3 bucket, locked with a conditional
//! put and written with compare-and-swap).

pub mod atomic;
mod backend;
mod changes;
mod delta;
mod document;
mod embedded;
mod error;
#[cfg(fuzzing)]
pub mod fuzzing;
mod lock;
mod records;
mod s3;
pub mod timestamp;
mod writing;

pub use atomic::write_atomic;
pub use backend::StateBackend;
pub use changes::{idempotency_token, Deployed, Forgotten, NewResource};
pub use document::{
    Goal, HistoryEntry, HostRecord, ReachRecord, ResourceRecord, ResourceStatus, SecretRecord,
    StateDocument, FORMAT_VERSION,
};
pub use embedded::{EmbeddedBackend, Recovered};
pub use error::StateError;
pub use lock::{LockInfo, StateLock};
pub use records::Records;
pub use s3::{S3Backend, S3Settings};
