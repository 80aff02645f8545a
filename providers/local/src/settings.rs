//! Where the provider keeps its hosts.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The default directory under which host directories live.
pub const DEFAULT_ROOT: &str = "/var/lib/prov/local";

/// Settings of the `[providers.local]` section.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalSettings {
    /// Where host directories live (`ROOT/DEPLOYMENT/NAME`); default
    /// [`DEFAULT_ROOT`].
    #[serde(default = "default_root")]
    pub root: PathBuf,
    /// The deployment's name; it separates the hosts of different deployments
    /// under one root and is part of every provider id.
    pub deployment: String,
}

impl LocalSettings {
    /// Settings for `deployment` under [`DEFAULT_ROOT`].
    #[must_use]
    pub fn new(deployment: impl Into<String>) -> Self {
        Self {
            root: default_root(),
            deployment: deployment.into(),
        }
    }
}

fn default_root() -> PathBuf {
    PathBuf::from(DEFAULT_ROOT)
}
