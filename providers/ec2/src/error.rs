//! Turning SDK errors into [`ProviderError`]s that say what AWS said.

use std::error::Error as StdError;
use std::fmt::Debug;

use aws_sdk_ec2::error::{ProvideErrorMetadata, SdkError};
use prov_provider::{BoxedError, ProviderError};

use crate::PROVIDER_NAME;

/// One failed EC2 call, with the AWS error code kept for callers that treat
/// some codes (`…NotFound`, `DependencyViolation`) specially.
#[derive(Debug)]
pub(crate) struct ApiFailure {
    /// The API operation, e.g. `RunInstances`.
    pub operation: &'static str,
    /// The AWS error code, for service errors.
    pub code: Option<String>,
    /// What failed: AWS's code and message, or which endpoint could not be
    /// used (the SDK's own description is in `source`).
    pub message: String,
    /// The SDK's error, except for a service error with a code: AWS's code
    /// and message are then the whole of what it said, and the SDK's chain
    /// (`service error: unhandled error (Code): Error { code: … }`) would
    /// only repeat them.
    pub source: Option<BoxedError>,
}

impl ApiFailure {
    /// Describes an SDK error; `target` names the endpoint for connection errors.
    pub fn from_sdk<E, R>(operation: &'static str, target: &str, err: SdkError<E, R>) -> Self
    where
        E: ProvideErrorMetadata + StdError + Send + Sync + 'static,
        R: Debug + Send + Sync + 'static,
    {
        let (code, message) = match &err {
            SdkError::ServiceError(_) => {
                let code = err.code().map(str::to_owned);
                let text = err.message().unwrap_or("no message");
                let message = match &code {
                    Some(code) => format!("{code}: {text}"),
                    None => text.to_owned(),
                };
                (code, message)
            }
            SdkError::DispatchFailure(_) => {
                (None, format!("could not reach the EC2 endpoint {target}"))
            }
            SdkError::TimeoutError(_) => (
                None,
                format!("the EC2 endpoint {target} did not answer in time"),
            ),
            SdkError::ResponseError(_) => (
                None,
                format!("unreadable response from the EC2 endpoint {target}"),
            ),
            SdkError::ConstructionFailure(_) => (None, "could not build the request".to_owned()),
            _ => (None, format!("calling the EC2 endpoint {target}")),
        };
        let source: Option<BoxedError> = if code.is_some() {
            None
        } else {
            Some(Box::new(err))
        };
        Self {
            operation,
            code,
            message,
            source,
        }
    }

    /// Whether AWS answered with exactly `code`.
    pub fn has_code(&self, code: &str) -> bool {
        self.code.as_deref() == Some(code)
    }

    /// Whether AWS answered with a code ending in `suffix` (`.NotFound`).
    pub fn code_ends_with(&self, suffix: &str) -> bool {
        self.code.as_deref().is_some_and(|c| c.ends_with(suffix))
    }
}

impl From<ApiFailure> for ProviderError {
    fn from(failure: ApiFailure) -> Self {
        match failure.source {
            Some(source) => {
                ProviderError::api_caused_by(failure.operation, failure.message, source)
            }
            None => ProviderError::api(failure.operation, failure.message),
        }
    }
}

/// A configuration error of this provider.
pub(crate) fn config_error(message: impl Into<String>) -> ProviderError {
    ProviderError::Config {
        provider: PROVIDER_NAME.to_owned(),
        message: message.into(),
    }
}
