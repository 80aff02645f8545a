//! How the provider finds its endpoint, region and credentials.

/// Settings of the `[providers.ec2]` section (the spec holds this type);
/// everything left unset comes from the standard AWS chain (environment,
/// profile files, instance metadata).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ec2Settings {
    /// AWS region (`us-east-1`); falls back to `AWS_REGION` and the profile.
    pub region: Option<String>,
    /// Endpoint URL override (moto, LocalStack); falls back to `AWS_ENDPOINT_URL`.
    pub endpoint: Option<String>,
    /// Named profile from `~/.aws/config`; falls back to `AWS_PROFILE`.
    pub profile: Option<String>,
}
