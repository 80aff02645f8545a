//! Raw (spanned) tables for system deploys: `[hosts.NAME]` deploy keys,
//! `[hosts.NAME.ssh]`, `[hosts.NAME.health]`, `[deploy]`, `[providers.local]`.

use serde::Deserialize;
use toml::Spanned;

use super::raw::Str;

/// `nix = { file = "…", attr = "…" }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawNix {
    /// The Nix file, relative to the spec's directory.
    pub file: Str,
    /// Attribute path inside it.
    pub attr: Option<Str>,
}

/// `[hosts.NAME.ssh]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSsh {
    /// Address to connect to.
    pub address: Option<Str>,
    /// Port.
    pub port: Option<Spanned<i64>>,
    /// User.
    pub user: Option<Str>,
    /// Private key file.
    pub identity_file: Option<Str>,
    /// Jump host.
    pub jump: Option<RawJump>,
}

/// `[hosts.NAME.ssh.jump]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawJump {
    /// Address.
    pub address: Str,
    /// Port.
    pub port: Option<Spanned<i64>>,
    /// User.
    pub user: Option<Str>,
    /// Pinned host key.
    pub host_key: Option<Str>,
}

/// `[hosts.NAME.health]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHealth {
    /// Command on the host.
    pub command: Option<Str>,
    /// URL fetched from the deployer.
    pub http: Option<Str>,
    /// Attempts.
    pub retries: Option<Spanned<i64>>,
    /// Seconds between attempts.
    pub interval: Option<Spanned<i64>>,
    /// Seconds per attempt.
    pub timeout: Option<Spanned<i64>>,
}

/// `[deploy]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDeploy {
    /// `stop` or `continue`.
    pub on_failure: Option<Str>,
    /// Default SSH user.
    pub user: Option<Str>,
    /// Default private key file.
    pub identity_file: Option<Str>,
    /// Use ssh-agent.
    pub use_agent: Option<bool>,
}

/// `[providers.local]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLocal {
    /// Where host directories live.
    pub root: Option<Str>,
}
