//! Checks of the settings tables: `[state]` (the backend and only the keys
//! it takes) and `[providers.ec2]`.

use super::Checker;
use crate::spec::error::ErrorKind;
use crate::spec::raw::{RawSpec, RawState, Str};

/// `[state] backend` value of the S3 backend.
pub(crate) const S3_BACKEND: &str = "s3";
/// `[state] backend` value of the embedded backend (the default).
const EMBEDDED_BACKEND: &str = "embedded";

impl Checker<'_> {
    /// `[state]` and `[providers.ec2]`.
    pub(super) fn settings(&mut self, raw: &RawSpec) {
        if let Some(state) = &raw.state {
            self.state(state);
        }
        if let Some(ec2) = &raw.providers.ec2 {
            self.non_empty(ec2.region.as_ref(), "region");
            self.non_empty(ec2.profile.as_ref(), "profile");
            if let Some(endpoint) = &ec2.endpoint {
                self.endpoint(endpoint);
            }
        }
    }

    /// `[state]`: the backend, and only the keys that backend takes.
    fn state(&mut self, state: &RawState) {
        self.non_empty(state.path.as_ref(), "path");
        crate::spec::check_secrets::check_encrypt_to(state.encrypt_to.as_ref(), &mut self.diags);
        if let Some(keep) = &state.keep_versions {
            if *keep.get_ref() < 1 {
                self.push(
                    ErrorKind::InvalidValue,
                    format!(
                        "keep_versions must be at least 1 (got {}): it is how many of the newest state versions history keeps",
                        keep.get_ref()
                    ),
                    keep.span(),
                )
                .help
                .push("remove `keep_versions` to keep every version".into());
            }
        }
        let s3_keys = [
            ("bucket", &state.bucket),
            ("key", &state.key),
            ("region", &state.region),
            ("endpoint", &state.endpoint),
            ("profile", &state.profile),
            ("workspace", &state.workspace),
        ];
        for (field, value) in s3_keys {
            self.non_empty(value.as_ref(), field);
        }
        let backend = state.backend.as_ref();
        match backend.map(|b| b.get_ref().as_str()) {
            None | Some(EMBEDDED_BACKEND) => {
                for (field, value) in s3_keys {
                    if let Some(v) = value {
                        self.push(
                            ErrorKind::Conflict,
                            format!("`{field}` in [state] needs `backend = \"s3\"`"),
                            v.span(),
                        )
                        .help
                        .push("the embedded backend (the default) takes only `path`".into());
                    }
                }
            }
            Some(S3_BACKEND) => {
                let Some(backend) = backend else { return };
                if let Some(path) = &state.path {
                    self.push(
                        ErrorKind::Conflict,
                        "`path` is for the embedded backend, but [state] has `backend = \"s3\"`",
                        path.span(),
                    )
                    .help
                    .push("S3 state lives at `bucket` and `key`; remove `path`".into());
                }
                match &state.bucket {
                    None => {
                        self.push(
                            ErrorKind::MissingField,
                            "[state] `backend = \"s3\"` needs `bucket`",
                            backend.span(),
                        )
                        .help
                        .push(
                            "e.g. `bucket = \"my-team-prov-state\"` (the bucket must exist)".into(),
                        );
                    }
                    Some(bucket) if !bucket.get_ref().trim().is_empty() => {
                        if let Err(message) = prov_state::S3Settings::check_bucket(bucket.get_ref())
                        {
                            self.push(ErrorKind::InvalidValue, message, bucket.span());
                        }
                    }
                    Some(_) => {}
                }
                if let Some(key) = state
                    .key
                    .as_ref()
                    .filter(|k| !k.get_ref().trim().is_empty())
                {
                    if let Err(message) = prov_state::S3Settings::check_key(key.get_ref()) {
                        self.push(ErrorKind::InvalidValue, message, key.span());
                    }
                }
                if let Some(workspace) = &state.workspace {
                    self.name(workspace, "workspace");
                }
                if let Some(endpoint) = &state.endpoint {
                    self.endpoint(endpoint);
                }
            }
            Some(other) => {
                let Some(backend) = backend else { return };
                self.push(
                    ErrorKind::InvalidValue,
                    format!("unknown state backend `{other}`"),
                    backend.span(),
                )
                .help
                .push("use `backend = \"embedded\"` (the default) or `backend = \"s3\"`".into());
            }
        }
    }

    /// An AWS endpoint URL: `http://` or `https://` and a host.
    fn endpoint(&mut self, endpoint: &Str) {
        let url = endpoint.get_ref();
        let rest = url
            .strip_prefix("http://")
            .or_else(|| url.strip_prefix("https://"));
        if rest.is_none_or(str::is_empty) {
            self.push(
                ErrorKind::InvalidValue,
                format!("endpoint `{url}` is not an http:// or https:// URL"),
                endpoint.span(),
            )
            .help
            .push("e.g. `endpoint = \"http://127.0.0.1:5000\"`".into());
        }
    }
}
