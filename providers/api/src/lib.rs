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
mod problem;
mod provider;
mod reader;
mod schema;
pub mod shell;

pub use address::{is_valid_name, Address, AddressParseError, HOST_KIND};
pub use config::{Attributes, Desired, Reference, ResourceConfig};
pub use diff::{diff_attributes, AttributeChange, Change};
pub use error::{BoxedError, ProviderError};
pub use problem::{AttributeProblem, ProblemKind};
pub use provider::{CreateRequest, Observed, Provider, UpdateRequest};
pub use reader::AttributeReader;
pub use schema::{AttributeSchema, UpdateMode};

/// Computes a stable hex SHA-256 digest of `data`; used for values that are kept
/// only as a hash (EC2 user data, for instance).
#[must_use]
pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}

/// Trims the lines of a desired `authorized_keys` attribute and drops empty
/// ones, as providers report them (so a stray space plans no change).
pub fn normalize_authorized_keys(desired: &mut Attributes) {
    if let Some(serde_json::Value::Array(items)) = desired.get("authorized_keys") {
        if let Some(lines) = items
            .iter()
            .map(serde_json::Value::as_str)
            .collect::<Option<Vec<_>>>()
        {
            let lines: Vec<serde_json::Value> = lines
                .into_iter()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(serde_json::Value::from)
                .collect();
            desired.insert("authorized_keys".into(), serde_json::Value::Array(lines));
        }
    }
}

/// The integer attribute `name`, when set, checked against `range`. The
/// error is the reason, for the provider to wrap in its own configuration
/// error.
///
/// # Errors
/// When the value is not an integer in `range`.
pub fn bounded_integer(
    attributes: &Attributes,
    name: &str,
    range: std::ops::RangeInclusive<u64>,
) -> Result<Option<u64>, String> {
    match attributes.get(name) {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .filter(|n| range.contains(n))
            .map(Some)
            .ok_or_else(|| {
                format!(
                    "`{name}` must be an integer from {} to {}, not {v}",
                    range.start(),
                    range.end()
                )
            }),
    }
}

/// The `authorized_keys` attribute of a machine-like resource (local hosts,
/// VMs): OpenSSH public key lines, trimmed, empty ones dropped. The error is
/// the reason, for the provider to wrap in its own configuration error.
///
/// # Errors
/// When the attribute is not a list of single-line strings.
pub fn authorized_keys(attributes: &Attributes) -> Result<Vec<String>, &'static str> {
    let items = match attributes.get("authorized_keys") {
        None | Some(serde_json::Value::Null) => return Ok(Vec::new()),
        Some(serde_json::Value::Array(items)) => items,
        Some(_) => return Err("must be a list of OpenSSH public key lines"),
    };
    let mut keys = Vec::new();
    for item in items {
        let serde_json::Value::String(line) = item else {
            return Err("must hold only strings");
        };
        let line = line.trim();
        if line.contains(['\n', '\r']) {
            return Err("entries must be single lines");
        }
        if !line.is_empty() {
            keys.push(line.to_owned());
        }
    }
    Ok(keys)
}
