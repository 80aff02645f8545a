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
pub mod environment;
mod error;
#[cfg(fuzzing)]
pub mod fuzzing;
mod lock;
mod moves;
mod records;
// S3 state: the `s3` feature (on by default). Without it the settings stay
// (specs name S3 state either way), the backend does not.
#[cfg(feature = "s3")]
mod s3;
#[cfg(not(feature = "s3"))]
#[path = "s3/settings.rs"]
mod s3_settings;
#[cfg(any(feature = "s3", fuzzing))]
mod stored;
pub mod timestamp;
mod writing;

pub use atomic::write_atomic;
pub use backend::StateBackend;
pub use changes::{idempotency_token, Deployed, Forgotten, NewResource};
pub use document::{
    EnvironmentRecord, Goal, HistoryEntry, HostRecord, ReachRecord, ResourceRecord, ResourceStatus,
    SecretRecord, StateDocument, FORMAT_VERSION,
};
pub use embedded::{EmbeddedBackend, Recovered};
pub use error::StateError;
pub use lock::{LockInfo, StateLock};
pub use moves::MoveError;
pub use records::Records;
#[cfg(feature = "s3")]
pub use s3::{ObjectPrefix, S3Backend, S3Settings};
#[cfg(not(feature = "s3"))]
pub use s3_settings::S3Settings;
