//! Shorthands for the provider's errors.

use std::path::Path;

use prov_provider::ProviderError;

use crate::PROVIDER_NAME;

/// An unusable configuration or attribute value.
pub(crate) fn config_error(message: impl Into<String>) -> ProviderError {
    ProviderError::Config {
        provider: PROVIDER_NAME.to_owned(),
        message: message.into(),
    }
}

/// A failed file operation during `operation`, the I/O error kept as its source.
pub(crate) fn io_error(operation: &str, path: &Path, error: std::io::Error) -> ProviderError {
    ProviderError::api_caused_by(operation, path.display().to_string(), error)
}
