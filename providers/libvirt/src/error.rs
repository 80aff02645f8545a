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

/// Something the machine lacks (libvirtd, a pool, a base image, a kernel):
/// the message names it and says how to provide it.
pub(crate) fn missing(message: impl Into<String>) -> ProviderError {
    ProviderError::Prerequisite {
        provider: PROVIDER_NAME.to_owned(),
        message: message.into(),
    }
}

/// A libvirt call that failed, with libvirt's own message. The error is not
/// kept as a source: its text is that message plus the numeric code and
/// domain, which callers match on (`conn.rs`'s `is`) before it gets here.
pub(crate) fn libvirt_error(operation: &str, error: &virt::error::Error) -> ProviderError {
    ProviderError::api(format!("libvirt {operation}"), error.message().to_owned())
}
