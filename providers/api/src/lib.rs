//! The provider API of prov.
//!
//! Every infrastructure target (EC2, libvirt, VirtualBox, local containers, …)
//! implements one object-safe [`Provider`] trait. The planner talks only to this
//! trait: it reads real objects in batches, asks the provider for a *pure* diff
//! between the desired configuration and what exists, and then creates, updates
//! or deletes objects.
//!
//! Values travel as JSON ([`Attributes`]): the state backend stores them
//! opaquely, and the plan renders them without knowing any provider.

mod address;
pub mod cloud_init;
mod config;
pub mod crashpoint;
mod diff;
mod error;
/// An in-memory provider for tests and benchmarks (the `test-support`
/// feature; dev-dependencies turn it on).
#[cfg(any(test, feature = "test-support"))]
pub mod fake;
pub mod iso;
pub mod keys;
pub mod machine;
mod names;
mod problem;
mod provider;
mod reader;
mod schema;
pub mod shell;
mod single_kind;
mod values;

pub use address::{is_valid_name, Address, AddressParseError, HOST_KIND};
pub use config::{Attributes, Desired, Reference, ResourceConfig};
pub use diff::{diff_attributes, AttributeChange, Change};
pub use error::{BoxedError, ProviderError};
pub use names::{DerivedName, NameForm};
pub use problem::{AttributeProblem, ProblemKind};
pub use provider::{CreateRequest, Marked, Observed, Provider, UpdateRequest};
pub use reader::AttributeReader;
pub use schema::{AttributeSchema, UpdateMode};
pub use single_kind::SingleKind;
pub use values::{
    authorized_keys, authorized_keys_from_lines, is_unset, keep_current, normalize_authorized_keys,
    optional_string, set_default,
};

/// Computes a stable hex SHA-256 digest of `data`; used for values that are kept
/// only as a hash (EC2 user data, for instance).
#[must_use]
pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}
