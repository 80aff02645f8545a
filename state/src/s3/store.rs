//! The S3 calls the backend makes, with conditional writes, and what their
//! failures mean.

use std::collections::HashMap;
use std::error::Error as StdError;
use std::fmt::Debug;

use aws_config::{BehaviorVersion, Region};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::Client;

use super::S3Settings;
use crate::StateError;

/// Why S3 refused a request whose refusal the protocol expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Refusal {
    /// 412 Precondition Failed: `If-None-Match: *` met an existing object, or
    /// `If-Match` another ETag.
    Precondition,
    /// 409 ConditionalRequestConflict: a concurrent conditional write to the
    /// same key is in flight (real S3); retrying is safe.
    Contention,
    /// 404: the object does not exist (an `If-Match` on a deleted object).
    Missing,
}

/// The condition of a write.
#[derive(Debug, Clone, Copy)]
pub(super) enum Cond<'a> {
    /// `If-None-Match: *`: only if no object exists.
    Absent,
    /// `If-Match: ETAG`: only if the object is exactly that version.
    Matches(&'a str),
}

/// An object read back.
#[derive(Debug, Clone)]
pub(super) struct Object {
    /// Its content.
    pub bytes: Vec<u8>,
    /// Its ETag (quoted, as S3 gives it).
    pub etag: String,
    /// User metadata (`x-amz-meta-*`), keys lowercase.
    pub metadata: HashMap<String, String>,
    /// When it was last written, if S3 said.
    pub last_modified: Option<chrono::DateTime<chrono::Utc>>,
}

/// An object's headers (`HeadObject`).
#[derive(Debug, Clone)]
pub(super) struct Head {
    /// Its ETag.
    pub etag: String,
    /// User metadata, keys lowercase.
    pub metadata: HashMap<String, String>,
}

/// A client on one bucket.
#[derive(Debug, Clone)]
pub(super) struct Store {
    client: Client,
    bucket: String,
    /// The endpoint for connection errors (`https://s3…` or the custom one).
    endpoint: String,
}

/// The error for a missing region.
fn no_region(settings: &S3Settings) -> StateError {
    StateError::S3 {
        operation: "configuration",
        target: settings.url(),
        message: "no AWS region is configured: set `region` in [state] or the AWS_REGION \
                  environment variable"
            .to_owned(),
    }
}

impl Store {
    /// Builds a client from `settings` and the standard AWS chain
    /// (environment, profile files, instance metadata; `AWS_ENDPOINT_URL` when
    /// no endpoint is given). A custom endpoint gets path-style addressing.
    pub(super) async fn connect(settings: &S3Settings) -> Result<Self, StateError> {
        let mut loader = aws_config::defaults(BehaviorVersion::latest());
        if let Some(profile) = &settings.profile {
            loader = loader.profile_name(profile);
        }
        if let Some(region) = &settings.region {
            loader = loader.region(Region::new(region.clone()));
        }
        if let Some(endpoint) = &settings.endpoint {
            loader = loader.endpoint_url(endpoint);
        }
        Self::from_sdk_config(settings, &loader.load().await)
    }

    /// Builds a client from an already loaded SDK configuration; an endpoint
    /// in `settings` overrides the configuration's.
    pub(super) fn from_sdk_config(
        settings: &S3Settings,
        sdk: &aws_config::SdkConfig,
    ) -> Result<Self, StateError> {
        let region = settings
            .region
            .clone()
            .map(Region::new)
            .or_else(|| sdk.region().cloned());
        let Some(region) = region else {
            return Err(no_region(settings));
        };
        let s3_endpoint = std::env::var("AWS_ENDPOINT_URL_S3")
            .ok()
            .filter(|e| !e.is_empty());
        let custom = settings
            .endpoint
            .clone()
            .or_else(|| sdk.endpoint_url().map(str::to_owned))
            .or(s3_endpoint);
        let mut config = aws_sdk_s3::config::Builder::from(sdk);
        config = config.region(region.clone());
        if let Some(endpoint) = &settings.endpoint {
            config = config.endpoint_url(endpoint);
        }
        if custom.is_some() {
            // moto, MinIO and LocalStack serve buckets under the path, not as
            // subdomains of the endpoint.
            config = config.force_path_style(true);
        }
        let endpoint = custom.unwrap_or_else(|| format!("of region {region}"));
        tracing::debug!(bucket = %settings.bucket, %endpoint, "S3 state configured");
        Ok(Self {
            client: Client::from_conf(config.build()),
            bucket: settings.bucket.clone(),
            endpoint,
        })
    }

    /// `s3://BUCKET/KEY`.
    pub(super) fn url(&self, key: &str) -> String {
        format!("s3://{}/{key}", self.bucket)
    }

    /// Turns an SDK failure into a [`StateError`], or the refusal it is.
    fn failure<E, R>(
        &self,
        operation: &'static str,
        key: &str,
        err: &SdkError<E, R>,
    ) -> Result<Refusal, StateError>
    where
        E: ProvideErrorMetadata + StdError + 'static,
        R: Debug + HasStatus + Send + Sync + 'static,
    {
        let status = err.raw_response().map(HasStatus::status);
        let code = err.code();
        if matches!(err, SdkError::ServiceError(_)) {
            match (status, code) {
                (_, Some("NoSuchBucket")) => {}
                (Some(412), _) | (_, Some("PreconditionFailed")) => {
                    return Ok(Refusal::Precondition)
                }
                (Some(409), _) | (_, Some("ConditionalRequestConflict")) => {
                    return Ok(Refusal::Contention)
                }
                (Some(404), _) | (_, Some("NoSuchKey" | "NotFound")) => {
                    return Ok(Refusal::Missing)
                }
                _ => {}
            }
        }
        Err(StateError::S3 {
            operation,
            target: self.url(key),
            message: self.describe(err),
        })
    }

    /// A message for an SDK failure that is not an expected refusal.
    fn describe<E, R>(&self, err: &SdkError<E, R>) -> String
    where
        E: ProvideErrorMetadata + StdError + 'static,
        R: Debug + Send + Sync + 'static,
    {
        let context = error_chain(err);
        match err {
            SdkError::ServiceError(_) => {
                let text = err.message().unwrap_or("no message");
                match err.code() {
                    Some("NoSuchBucket") => format!(
                        "NoSuchBucket: the bucket `{}` does not exist (prov does not create \
                         buckets; create it first, e.g. `aws s3 mb s3://{}`)",
                        self.bucket, self.bucket
                    ),
                    Some(code) => format!("{code}: {text}"),
                    None => format!("{text} ({context})"),
                }
            }
            SdkError::DispatchFailure(_) => format!(
                "could not reach the S3 endpoint {}: {context}",
                self.endpoint
            ),
            SdkError::TimeoutError(_) => format!(
                "the S3 endpoint {} did not answer in time: {context}",
                self.endpoint
            ),
            SdkError::ResponseError(_) => format!(
                "unreadable response from the S3 endpoint {}: {context}",
                self.endpoint
            ),
            _ => context,
        }
    }

    /// Reads `key`; `None` when it does not exist.
    pub(super) async fn get(&self, key: &str) -> Result<Option<Object>, StateError> {
        tracing::debug!(operation = "GetObject", key, "S3 call");
        let resp = match self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(resp) => resp,
            Err(err) => {
                return match self.failure("GetObject", key, &err)? {
                    Refusal::Missing => Ok(None),
                    other => Err(self.unexpected("GetObject", key, other)),
                }
            }
        };
        let etag = self.etag("GetObject", key, resp.e_tag())?;
        let metadata = resp.metadata().cloned().unwrap_or_default();
        let last_modified = resp.last_modified().and_then(to_chrono);
        let bytes = resp
            .body
            .collect()
            .await
            .map_err(|e| StateError::S3 {
                operation: "GetObject",
                target: self.url(key),
                message: format!("reading the object body: {e}"),
            })?
            .into_bytes()
            .to_vec();
        Ok(Some(Object {
            bytes,
            etag,
            metadata,
            last_modified,
        }))
    }

    /// The headers of `key`; `None` when it does not exist.
    pub(super) async fn head(&self, key: &str) -> Result<Option<Head>, StateError> {
        tracing::debug!(operation = "HeadObject", key, "S3 call");
        match self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(resp) => Ok(Some(Head {
                etag: self.etag("HeadObject", key, resp.e_tag())?,
                metadata: resp.metadata().cloned().unwrap_or_default(),
            })),
            Err(err) => match self.failure("HeadObject", key, &err)? {
                Refusal::Missing => Ok(None),
                other => Err(self.unexpected("HeadObject", key, other)),
            },
        }
    }

    /// Writes `key` under `cond`; the new ETag, or the refusal.
    pub(super) async fn put(
        &self,
        key: &str,
        body: Vec<u8>,
        metadata: &[(&str, String)],
        cond: Cond<'_>,
    ) -> Result<Result<String, Refusal>, StateError> {
        tracing::debug!(operation = "PutObject", key, "S3 call");
        let mut req = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type("application/json")
            .body(ByteStream::from(body));
        for (name, value) in metadata {
            req = req.metadata(*name, value.clone());
        }
        req = match cond {
            Cond::Absent => req.if_none_match("*"),
            Cond::Matches(etag) => req.if_match(etag),
        };
        match req.send().await {
            Ok(resp) => Ok(Ok(self.etag("PutObject", key, resp.e_tag())?)),
            Err(err) => Ok(Err(self.failure("PutObject", key, &err)?)),
        }
    }

    /// Writes `key` unconditionally, without metadata; readable by anyone
    /// (ACL `public-read`) when `public`.
    pub(super) async fn put_plain(
        &self,
        key: &str,
        body: Vec<u8>,
        public: bool,
    ) -> Result<Result<(), Refusal>, StateError> {
        tracing::debug!(operation = "PutObject", key, bytes = body.len(), "S3 call");
        let mut req = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .body(ByteStream::from(body));
        if public {
            req = req.acl(aws_sdk_s3::types::ObjectCannedAcl::PublicRead);
        }
        match req.send().await {
            Ok(_) => Ok(Ok(())),
            Err(err) => Ok(Err(self.failure("PutObject", key, &err)?)),
        }
    }

    /// Deletes `key`, only if its ETag is `etag` (when given).
    pub(super) async fn delete(
        &self,
        key: &str,
        etag: Option<&str>,
    ) -> Result<Result<(), Refusal>, StateError> {
        tracing::debug!(operation = "DeleteObject", key, "S3 call");
        let mut req = self.client.delete_object().bucket(&self.bucket).key(key);
        if let Some(etag) = etag {
            req = req.if_match(etag);
        }
        match req.send().await {
            Ok(_) => Ok(Ok(())),
            Err(err) => Ok(Err(self.failure("DeleteObject", key, &err)?)),
        }
    }

    /// Every key under `prefix`.
    pub(super) async fn list(&self, prefix: &str) -> Result<Vec<String>, StateError> {
        let mut keys = Vec::new();
        self.pages(prefix, None, |page| {
            keys.extend(
                page.contents()
                    .iter()
                    .filter_map(|o| o.key().map(str::to_owned)),
            );
        })
        .await?;
        Ok(keys)
    }

    /// The names one level below `prefix`: the common prefixes of a
    /// listing with delimiter `/`, without `prefix` and the trailing `/`.
    pub(super) async fn list_names(&self, prefix: &str) -> Result<Vec<String>, StateError> {
        let mut names = Vec::new();
        self.pages(prefix, Some("/"), |page| {
            names.extend(page.common_prefixes().iter().filter_map(|p| {
                let name = p.prefix()?.strip_prefix(prefix)?.strip_suffix('/')?;
                Some(name.to_owned())
            }));
        })
        .await?;
        Ok(names)
    }

    /// Lists `prefix` (with `delimiter`), handing each page to `each`.
    async fn pages(
        &self,
        prefix: &str,
        delimiter: Option<&str>,
        mut each: impl FnMut(&aws_sdk_s3::operation::list_objects_v2::ListObjectsV2Output),
    ) -> Result<(), StateError> {
        let mut token: Option<String> = None;
        // 1000 keys a page: a million is far beyond any real state.
        for _ in 0..1000 {
            let mut req = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(prefix)
                .set_delimiter(delimiter.map(str::to_owned));
            tracing::debug!(operation = "ListObjectsV2", prefix, "S3 call");
            if let Some(token) = &token {
                req = req.continuation_token(token);
            }
            let resp = match req.send().await {
                Ok(resp) => resp,
                Err(err) => {
                    let refusal = self.failure("ListObjectsV2", prefix, &err)?;
                    return Err(self.unexpected("ListObjectsV2", prefix, refusal));
                }
            };
            each(&resp);
            match resp.next_continuation_token() {
                Some(next) if resp.is_truncated() == Some(true) => token = Some(next.to_owned()),
                _ => return Ok(()),
            }
        }
        Err(StateError::S3 {
            operation: "ListObjectsV2",
            target: self.url(prefix),
            message: "more than a million objects under the prefix".to_owned(),
        })
    }

    /// The ETag S3 returned, which every successful read and write carries.
    fn etag(
        &self,
        operation: &'static str,
        key: &str,
        etag: Option<&str>,
    ) -> Result<String, StateError> {
        etag.map(str::to_owned).ok_or_else(|| StateError::S3 {
            operation,
            target: self.url(key),
            message: "the response carries no ETag".to_owned(),
        })
    }

    /// The error for a refusal the operation does not expect.
    pub(super) fn unexpected(
        &self,
        operation: &'static str,
        key: &str,
        refusal: Refusal,
    ) -> StateError {
        let message = match refusal {
            Refusal::Precondition => "412 Precondition Failed for an unconditional request",
            Refusal::Contention => "409 Conflict: a concurrent write is in progress",
            Refusal::Missing => "404 Not Found",
        };
        StateError::S3 {
            operation,
            target: self.url(key),
            message: message.to_owned(),
        }
    }
}

/// What the failure classification needs from a raw response.
pub(super) trait HasStatus {
    /// The HTTP status code.
    fn status(&self) -> u16;
}

impl HasStatus for aws_sdk_s3::config::http::HttpResponse {
    fn status(&self) -> u16 {
        self.status().as_u16()
    }
}

/// `err` and its sources, joined with `: `.
fn error_chain(err: &dyn StdError) -> String {
    let mut parts = vec![err.to_string()];
    let mut source = err.source();
    while let Some(e) = source {
        let text = e.to_string();
        if parts.last() != Some(&text) {
            parts.push(text);
        }
        source = e.source();
    }
    parts.join(": ")
}

/// An S3 timestamp as a chrono one (`None` out of chrono's range).
fn to_chrono(t: &aws_sdk_s3::primitives::DateTime) -> Option<chrono::DateTime<chrono::Utc>> {
    chrono::DateTime::from_timestamp(t.secs(), t.subsec_nanos())
}
