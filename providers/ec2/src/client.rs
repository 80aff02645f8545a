//! The EC2 client, wrapped so that every call is counted and logged.

use std::error::Error as StdError;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};

use aws_sdk_ec2::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_ec2::Client;
use prov_provider::ProviderError;

use crate::error::ApiFailure;

/// An EC2 client that counts its calls.
#[derive(Debug)]
pub(crate) struct Ec2Api {
    client: Client,
    calls: AtomicU64,
    target: String,
}

impl Ec2Api {
    /// Wraps `client`; `target` describes the endpoint in error messages.
    pub fn new(client: Client, target: String) -> Self {
        Self {
            client,
            calls: AtomicU64::new(0),
            target,
        }
    }

    /// The raw SDK client, to build requests with.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// How many calls were made so far.
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    /// Sends one request (the future of a fluent builder's `.send()`),
    /// counting and logging it.
    pub async fn call<T, E, R, F>(
        &self,
        operation: &'static str,
        request: F,
    ) -> Result<T, ApiFailure>
    where
        F: Future<Output = Result<T, SdkError<E, R>>>,
        E: ProvideErrorMetadata + StdError + Send + Sync + 'static,
        R: std::fmt::Debug + Send + Sync + 'static,
    {
        let n = self.calls.fetch_add(1, Ordering::Relaxed) + 1;
        tracing::debug!(operation, call = n, "EC2 API call");
        request.await.map_err(|err| {
            tracing::debug!(operation, error = %aws_sdk_ec2::error::DisplayErrorContext(&err), "EC2 API call failed");
            ApiFailure::from_sdk(operation, &self.target, err)
        })
    }
}

/// Every item of a paginated Describe call: `page` sends one request with
/// the given next token and answers with its items and the next token;
/// pages are fetched until no (or an empty) next token comes back.
pub(crate) async fn paginate<T, F, Fut>(mut page: F) -> Result<Vec<T>, ProviderError>
where
    F: FnMut(Option<String>) -> Fut,
    Fut: Future<Output = Result<(Vec<T>, Option<String>), ProviderError>>,
{
    let mut items = Vec::new();
    let mut next_token = None;
    loop {
        let (page_items, token) = page(next_token.take()).await?;
        items.extend(page_items);
        match token {
            Some(t) if !t.is_empty() => next_token = Some(t),
            _ => return Ok(items),
        }
    }
}

/// EC2 accepts at most this many values in one filter.
pub(crate) const MAX_FILTER_VALUES: usize = 200;

/// A Describe* filter.
pub(crate) fn filter<I, S>(name: &str, values: I) -> aws_sdk_ec2::types::Filter
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    aws_sdk_ec2::types::Filter::builder()
        .name(name)
        .set_values(Some(values.into_iter().map(Into::into).collect()))
        .build()
}
