//! Where an S3 state lives: bucket, key, workspace, and how to reach AWS.

/// The settings of an S3 state (`[state] backend = "s3"`).
///
/// The state object is `KEY` (under `workspaces/NAME/` when a workspace is
/// set); next to it live `KEY.lock` (the lock) and `KEY.history/` (one object
/// per serial).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Settings {
    /// The bucket (it must exist; prov does not create buckets).
    pub bucket: String,
    /// The state object's key (without the workspace prefix).
    pub key: String,
    /// A workspace: the key is put under `workspaces/NAME/`.
    pub workspace: Option<String>,
    /// AWS region; the standard chain (`AWS_REGION`, profile) when absent.
    pub region: Option<String>,
    /// Endpoint URL (moto, MinIO, LocalStack); `AWS_ENDPOINT_URL` when
    /// absent. With an endpoint, requests use path-style addressing.
    pub endpoint: Option<String>,
    /// Named profile from the AWS config files.
    pub profile: Option<String>,
    /// An environment (`prov env`): its state is
    /// `KEY.envs/NAME/state.json`, beside the deployment's.
    pub environment: Option<String>,
}

impl S3Settings {
    /// Settings for `bucket` and `key`, everything else from the standard AWS
    /// chain.
    #[must_use]
    pub fn new(bucket: impl Into<String>, key: impl Into<String>) -> Self {
        Self {
            bucket: bucket.into(),
            key: key.into(),
            workspace: None,
            environment: None,
            region: None,
            endpoint: None,
            profile: None,
        }
    }

    /// Parses `s3://BUCKET/KEY`.
    ///
    /// # Errors
    /// A message saying what is wrong with `url`.
    pub fn from_url(url: &str) -> Result<Self, String> {
        let rest = url
            .strip_prefix("s3://")
            .ok_or_else(|| format!("`{url}` is not an s3://BUCKET/KEY URL"))?;
        let (bucket, key) = rest
            .split_once('/')
            .ok_or_else(|| format!("`{url}` names no object key: use s3://BUCKET/KEY"))?;
        let settings = Self::new(bucket, key);
        settings.validate()?;
        Ok(settings)
    }

    /// Checks the bucket name and the key.
    ///
    /// # Errors
    /// A message saying what is wrong.
    pub fn validate(&self) -> Result<(), String> {
        Self::check_bucket(&self.bucket)?;
        Self::check_key(&self.key)?;
        if let Some(workspace) = &self.workspace {
            let ok = !workspace.is_empty()
                && workspace
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
                && !workspace.starts_with('.');
            if !ok {
                return Err(format!(
                    "workspace `{workspace}` may only use ASCII letters, digits, `-`, `_` and `.`"
                ));
            }
        }
        if let Some(name) = &self.environment {
            crate::environment::check_name(name)?;
        }
        Ok(())
    }

    /// The key of the deployment's state object, workspace prefix included
    /// (the environment's, if any, is under [`S3Settings::environments_prefix`]).
    fn deployment_key(&self) -> String {
        match &self.workspace {
            Some(workspace) => format!("workspaces/{workspace}/{}", self.key),
            None => self.key.clone(),
        }
    }

    /// The key of the state object: the deployment's (workspace prefix
    /// included), or its environment's.
    #[must_use]
    pub fn object_key(&self) -> String {
        match &self.environment {
            Some(name) => format!("{}{name}/state.json", self.environments_prefix()),
            None => self.deployment_key(),
        }
    }

    /// What the keys of every environment of the deployment start with
    /// (`KEY.envs/`): one listing with delimiter `/` names them all.
    #[must_use]
    pub fn environments_prefix(&self) -> String {
        format!("{}.envs/", self.deployment_key())
    }

    /// These settings for the environment `name` of the same deployment.
    #[must_use]
    pub fn for_environment(&self, name: &str) -> Self {
        Self {
            environment: Some(name.to_owned()),
            ..self.clone()
        }
    }

    /// Checks an S3 bucket name (3–63 characters: lowercase letters, digits,
    /// `.` and `-`, starting and ending with a letter or digit).
    ///
    /// # Errors
    /// A message saying what is wrong.
    pub fn check_bucket(bucket: &str) -> Result<(), String> {
        let chars_ok = bucket
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-');
        let ends_ok = bucket
            .chars()
            .next()
            .zip(bucket.chars().last())
            .is_some_and(|(a, b)| a.is_ascii_alphanumeric() && b.is_ascii_alphanumeric());
        if (3..=63).contains(&bucket.len()) && chars_ok && ends_ok {
            Ok(())
        } else {
            Err(format!(
                "`{bucket}` is not a valid S3 bucket name (3-63 characters: lowercase letters, \
                 digits, `.` and `-`, starting and ending with a letter or digit)"
            ))
        }
    }

    /// Checks a state object key: not empty, no leading or trailing `/`.
    ///
    /// # Errors
    /// A message saying what is wrong.
    pub fn check_key(key: &str) -> Result<(), String> {
        if key.trim().is_empty() {
            return Err("the state object key is empty".to_owned());
        }
        if key.starts_with('/') || key.ends_with('/') {
            return Err(format!(
                "the state object key `{key}` must not start or end with `/`"
            ));
        }
        if key.len() > 900 {
            return Err("the state object key is longer than 900 bytes".to_owned());
        }
        Ok(())
    }

    /// `s3://BUCKET/OBJECT-KEY`.
    #[must_use]
    pub fn url(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.object_key())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn url_round_trips() {
        let s = S3Settings::from_url("s3://team-state/prod/state.json").unwrap();
        assert_eq!(s.bucket, "team-state");
        assert_eq!(s.key, "prod/state.json");
        assert_eq!(s.url(), "s3://team-state/prod/state.json");
    }

    #[test]
    fn workspace_prefixes_the_key() {
        let mut s = S3Settings::new("b-1", "d/state.json");
        s.workspace = Some("staging".into());
        assert_eq!(s.object_key(), "workspaces/staging/d/state.json");
        assert_eq!(s.url(), "s3://b-1/workspaces/staging/d/state.json");
        s.validate().unwrap();
        s.workspace = Some("../x".into());
        assert!(s.validate().is_err());
    }

    #[test]
    fn an_environment_lives_under_the_deployment_key() {
        let s = S3Settings::new("b-1", "d/state.json").for_environment("pr-7");
        assert_eq!(s.object_key(), "d/state.json.envs/pr-7/state.json");
        assert_eq!(s.environments_prefix(), "d/state.json.envs/");
        s.validate().unwrap();
        assert!(s.for_environment("../x").validate().is_err());
    }

    #[test]
    fn bad_urls_are_explained() {
        for (url, part) in [
            ("http://b/k", "not an s3://"),
            ("s3://bucket", "names no object key"),
            ("s3://bucket/", "empty"),
            ("s3://Bucket/k", "not a valid S3 bucket name"),
            ("s3://b/k", "not a valid S3 bucket name"),
            ("s3://bucket/k/", "must not start or end"),
        ] {
            let err = S3Settings::from_url(url).unwrap_err();
            assert!(err.contains(part), "{url}: {err}");
        }
    }
}
