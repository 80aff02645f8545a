//! Turning SDK errors into [`ProviderError`]s that say what AWS said.

use std::error::Error as StdError;
use std::fmt::Debug;

use aws_sdk_ec2::error::{ProvideErrorMetadata, SdkError};
use prov_provider::ProviderError;

use crate::PROVIDER_NAME;

/// One failed EC2 call, with the AWS error code kept for callers that treat
/// some codes (`…NotFound`, `DependencyViolation`) specially.
#[derive(Debug, Clone)]
pub(crate) struct ApiFailure {
    /// The API operation, e.g. `RunInstances`.
    pub operation: &'static str,
    /// The AWS error code, for service errors.
    pub code: Option<String>,
    /// A human-readable message including the code.
    pub message: String,
}

impl ApiFailure {
    /// Describes an SDK error; `target` names the endpoint for connection errors.
    pub fn from_sdk<E, R>(operation: &'static str, target: &str, err: &SdkError<E, R>) -> Self
    where
        E: ProvideErrorMetadata + StdError + 'static,
        R: Debug + Send + Sync + 'static,
    {
        let context = error_chain(err);
        match err {
            SdkError::ServiceError(_) => {
                let code = err.code().map(str::to_owned);
                let text = err.message().unwrap_or("no message");
                let message = match &code {
                    Some(code) => format!("{code}: {text}"),
                    None => format!("{text} ({context})"),
                };
                Self {
                    operation,
                    code,
                    message,
                }
            }
            SdkError::DispatchFailure(_) => Self {
                operation,
                code: None,
                message: format!("could not reach the EC2 endpoint {target}: {context}"),
            },
            SdkError::TimeoutError(_) => Self {
                operation,
                code: None,
                message: format!("the EC2 endpoint {target} did not answer in time: {context}"),
            },
            SdkError::ResponseError(_) => Self {
                operation,
                code: None,
                message: format!("unreadable response from the EC2 endpoint {target}: {context}"),
            },
            SdkError::ConstructionFailure(_) => Self {
                operation,
                code: None,
                message: format!("could not build the request: {context}"),
            },
            _ => Self {
                operation,
                code: None,
                message: context,
            },
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
        ProviderError::api(failure.operation, failure.message)
    }
}

/// `err` and its sources, joined with `: ` (what
/// `aws_sdk_ec2::error::DisplayErrorContext` shows, without its debug dump).
pub(crate) fn error_chain(err: &(dyn StdError + 'static)) -> String {
    let mut parts: Vec<String> = vec![err.to_string()];
    let mut source = err.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if parts.last() != Some(&text) {
            parts.push(text);
        }
        source = cause.source();
    }
    parts.join(": ")
}

/// A configuration error of this provider.
pub(crate) fn config_error(message: impl Into<String>) -> ProviderError {
    ProviderError::Config {
        provider: PROVIDER_NAME.to_owned(),
        message: message.into(),
    }
}
