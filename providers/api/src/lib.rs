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
mod config;
mod diff;
mod error;
pub mod fake;
mod provider;
mod schema;

pub use address::{is_valid_name, Address, AddressParseError, HOST_KIND};
pub use config::{Attributes, Desired, Reference, ResourceConfig};
pub use diff::{diff_attributes, AttributeChange, Change};
pub use error::ProviderError;
pub use provider::{CreateRequest, Observed, Provider, UpdateRequest};
pub use schema::{AttributeSchema, UpdateMode};

/// Computes a stable hex SHA-256 digest of `data`; used for values that are kept
/// only as a hash (EC2 user data, for instance).
#[must_use]
pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}
