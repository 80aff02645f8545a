//! Shorthands for the provider's errors.

use prov_provider::ProviderError;

use crate::PROVIDER_NAME;

/// An unusable configuration or attribute value.
pub(crate) fn config_error(message: impl Into<String>) -> ProviderError {
    ProviderError::Config {
        provider: PROVIDER_NAME.to_owned(),
        message: message.into(),
    }
}
