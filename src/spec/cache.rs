//! `[cache]`: a Nix binary cache in S3 that apply fills once and every host
//! substitutes from, instead of receiving the closure over SSH each.

use serde::Deserialize;

use super::error::{Diagnostic, ErrorKind};
use super::raw::Str;
use crate::spec::model::S3Settings;

/// `[cache]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCache {
    /// `s3://BUCKET/PREFIX`: where apply uploads.
    pub url: Str,
    /// AWS region (else the standard chain).
    pub region: Option<Str>,
    /// S3 endpoint (else `AWS_ENDPOINT_URL`).
    pub endpoint: Option<Str>,
    /// AWS profile.
    pub profile: Option<Str>,
    /// The URL hosts substitute from (default: the `s3://` URL with its
    /// region and endpoint).
    pub substituter: Option<Str>,
    /// Upload objects readable by anyone (needed for a plain `http(s)://`
    /// substituter; default: true exactly then).
    pub public: Option<toml::Spanned<bool>>,
}

/// `[cache]`, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheSettings {
    /// The bucket and prefix (`key`), with region, endpoint and profile.
    pub s3: S3Settings,
    /// What hosts use as substituter.
    pub substituter: String,
    /// Whether uploads are readable by anyone.
    pub public: bool,
}

impl CacheSettings {
    /// `s3://BUCKET/PREFIX`.
    #[must_use]
    pub fn url(&self) -> String {
        format!("s3://{}/{}", self.s3.bucket, self.s3.key)
    }
}

/// Checks `raw`; a bad value is a diagnostic at it.
pub(crate) fn check(raw: Option<&RawCache>, diags: &mut Vec<Diagnostic>) -> Option<CacheSettings> {
    let raw = raw?;
    let url = raw.url.get_ref();
    let parsed = url
        .strip_prefix("s3://")
        .map(|rest| match rest.split_once('/') {
            Some((bucket, prefix)) => (bucket, prefix.trim_matches('/')),
            None => (rest, ""),
        })
        .filter(|(_, prefix)| !prefix.is_empty());
    let Some((bucket, prefix)) = parsed else {
        diags.push(
            Diagnostic::new(
                ErrorKind::InvalidValue,
                format!("`{url}` is not an s3://BUCKET/PREFIX URL"),
                raw.url.span(),
            )
            .help("a binary cache lives under a prefix of a bucket: url = \"s3://my-bucket/nix-cache\""),
        );
        return None;
    };
    if let Err(message) = S3Settings::check_bucket(bucket) {
        diags.push(Diagnostic::new(
            ErrorKind::InvalidValue,
            message,
            raw.url.span(),
        ));
        return None;
    }
    let get = |v: &Option<Str>| v.as_ref().map(|s| s.get_ref().clone());
    let mut s3 = S3Settings::new(bucket, prefix);
    s3.region = get(&raw.region);
    s3.endpoint = get(&raw.endpoint);
    s3.profile = get(&raw.profile);
    let substituter = match &raw.substituter {
        Some(value) => {
            let text = value.get_ref();
            let known = ["http://", "https://", "s3://", "file://"];
            if !known.iter().any(|scheme| text.starts_with(scheme)) {
                diags.push(Diagnostic::new(
                    ErrorKind::InvalidValue,
                    format!(
                        "`{text}` is not a substituter URL (http://, https://, s3:// or file://)"
                    ),
                    value.span(),
                ));
                return None;
            }
            text.trim_end_matches('/').to_owned()
        }
        None => default_substituter(&s3),
    };
    let public = raw.public.as_ref().map_or_else(
        || substituter.starts_with("http://") || substituter.starts_with("https://"),
        |p| *p.get_ref(),
    );
    Some(CacheSettings {
        s3,
        substituter,
        public,
    })
}

/// `s3://BUCKET/PREFIX?region=…&endpoint=…`, the store URL Nix reads S3
/// caches with.
fn default_substituter(s3: &S3Settings) -> String {
    let mut query = Vec::new();
    if let Some(region) = &s3.region {
        query.push(format!("region={region}"));
    }
    if let Some(endpoint) = &s3.endpoint {
        query.push(format!("endpoint={endpoint}"));
    }
    if let Some(profile) = &s3.profile {
        query.push(format!("profile={profile}"));
    }
    let base = format!("s3://{}/{}", s3.bucket, s3.key);
    if query.is_empty() {
        base
    } else {
        format!("{base}?{}", query.join("&"))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::path::Path;

    fn spec(cache: &str) -> Result<crate::spec::Spec, crate::spec::SpecError> {
        crate::spec::parse_toml(
            &format!("deployment = \"d\"\n[cache]\n{cache}"),
            Path::new("prov.toml"),
        )
    }

    #[test]
    fn urls_defaults_and_errors() {
        let c = spec("url = \"s3://team-cache/nix\"\nregion = \"eu-west-1\"\n")
            .unwrap()
            .cache
            .unwrap();
        assert_eq!(c.url(), "s3://team-cache/nix");
        assert_eq!(c.substituter, "s3://team-cache/nix?region=eu-west-1");
        assert!(!c.public);
        let c = spec("url = \"s3://team-cache/nix/\"\nsubstituter = \"http://127.0.0.1:5000/team-cache/nix/\"\n")
            .unwrap()
            .cache
            .unwrap();
        assert_eq!(c.substituter, "http://127.0.0.1:5000/team-cache/nix");
        assert!(c.public, "a plain HTTP substituter needs readable objects");
        for (bad, says) in [
            ("url = \"s3://team-cache\"\n", "s3://BUCKET/PREFIX"),
            ("url = \"https://x/y\"\n", "s3://BUCKET/PREFIX"),
            ("url = \"s3://B/x\"\n", "bucket name"),
            (
                "url = \"s3://team-cache/x\"\nsubstituter = \"ftp://x\"\n",
                "substituter URL",
            ),
        ] {
            let error = format!("{:?}", spec(bad).unwrap_err());
            assert!(error.contains(says), "{bad}: {error}");
            assert!(error.contains("line"), "located: {error}");
        }
    }
}
