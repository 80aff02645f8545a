//! The one error type providers return.

/// What went wrong talking to a provider.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProviderError {
    /// The provider does not manage this kind of resource.
    #[error("the {provider} provider has no resource kind `{kind}`")]
    UnknownKind {
        /// Provider name.
        provider: String,
        /// The kind asked for.
        kind: String,
    },
    /// The provider cannot do this at all (an optional capability).
    #[error("the {provider} provider does not support {operation}")]
    Unsupported {
        /// Provider name.
        provider: String,
        /// What was asked.
        operation: String,
    },
    /// The configuration given to the provider is unusable.
    #[error("invalid {provider} configuration: {message}")]
    Config {
        /// Provider name.
        provider: String,
        /// What is wrong.
        message: String,
    },
    /// Something the provider needs from the machine or account is missing
    /// (a daemon, a storage pool, an image); the message says how to fix it.
    #[error("{provider}: {message}")]
    Prerequisite {
        /// The provider's name.
        provider: String,
        /// What is missing and how to provide it.
        message: String,
    },
    /// The object named does not exist.
    #[error("{kind} `{id}` does not exist")]
    NotFound {
        /// Resource kind.
        kind: String,
        /// Provider id.
        id: String,
    },
    /// A call to the provider's API failed.
    #[error("{operation} failed: {message}")]
    Api {
        /// The API operation, e.g. `RunInstances`.
        operation: String,
        /// The message, with the API's own error code where there is one
        /// (not repeating the source's text: `{:#}` and the error's chain
        /// show that).
        message: String,
        /// The error underneath (an I/O error, the SDK's error, …), kept
        /// whole so callers can inspect its type.
        #[source]
        source: Option<BoxedError>,
    },
    /// The object a create would make already exists, made by another state
    /// (another checkout of the same deployment, or a state that was lost).
    /// Nothing was changed; the caller says how to remove or adopt it.
    #[error("{place} already holds the {kind} `{id}`, created by another state for `{owner}`")]
    Taken {
        /// Resource kind.
        kind: String,
        /// The provider's id of the existing object (what `prov import` takes).
        id: String,
        /// Where it is (a directory, a name), for the message.
        place: String,
        /// The address it was created for, as recorded with it.
        owner: String,
    },
    /// Waiting for an object to reach a state took too long.
    #[error("timed out after {seconds}s waiting for {what}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// How long prov waited.
        seconds: u64,
    },
}

/// Any error a provider wraps as the source of an [`ProviderError::Api`].
pub type BoxedError = Box<dyn std::error::Error + Send + Sync + 'static>;

impl ProviderError {
    /// An API failure the provider found itself (nothing underneath).
    pub fn api(operation: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Api {
            operation: operation.into(),
            message: message.into(),
            source: None,
        }
    }

    /// An API failure caused by `source`; `message` says what failed
    /// (`/path/of/the/file`, `could not reach the endpoint …`) without
    /// repeating `source`'s own text.
    pub fn api_caused_by(
        operation: impl Into<String>,
        message: impl Into<String>,
        source: impl Into<BoxedError>,
    ) -> Self {
        Self::Api {
            operation: operation.into(),
            message: message.into(),
            source: Some(source.into()),
        }
    }

    /// The object `id` of `kind` does not exist.
    pub fn not_found(kind: &str, id: &str) -> Self {
        Self::NotFound {
            kind: kind.to_owned(),
            id: id.to_owned(),
        }
    }

    /// An unknown kind for `provider`.
    pub fn unknown_kind(provider: &str, kind: &str) -> Self {
        Self::UnknownKind {
            provider: provider.to_owned(),
            kind: kind.to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_errors_keep_their_source() {
        let io = std::io::Error::new(std::io::ErrorKind::PermissionDenied, "denied");
        let error = ProviderError::api_caused_by("write host file", "/h/key", io);
        assert_eq!(error.to_string(), "write host file failed: /h/key");
        let source =
            std::error::Error::source(&error).and_then(|s| s.downcast_ref::<std::io::Error>());
        assert_eq!(
            source.map(std::io::Error::kind),
            Some(std::io::ErrorKind::PermissionDenied)
        );
        let alone = ProviderError::api("CreateThing", "injected failure");
        assert!(std::error::Error::source(&alone).is_none());
    }
}
