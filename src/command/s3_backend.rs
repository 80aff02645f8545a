//! Opening S3 state, which this build may lack (the `s3` cargo feature).

use std::sync::Arc;

use anyhow::Result;
use prov_state::{S3Settings, StateBackend};

/// A backend on the S3 state `settings` (nothing is fetched yet).
///
/// # Errors
/// When the settings cannot make an S3 client.
#[cfg(feature = "s3")]
pub(crate) fn open(settings: &S3Settings) -> Result<Arc<dyn StateBackend>> {
    Ok(Arc::new(prov_state::S3Backend::lazy(settings.clone())?))
}

/// Without the `s3` feature there is no S3 state.
///
/// # Errors
/// Always: this build cannot reach S3.
#[cfg(not(feature = "s3"))]
pub(crate) fn open(_settings: &S3Settings) -> Result<Arc<dyn StateBackend>> {
    anyhow::bail!("this prov was built without S3 state support: rebuild with the `s3` cargo feature (on by default)")
}
