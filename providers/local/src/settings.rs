//! Settings of `[providers.local]`: where the provider keeps its hosts.

use std::path::PathBuf;

/// The default directory under which host directories live.
pub const DEFAULT_ROOT: &str = "/var/lib/prov/local";

/// Settings of the `[providers.local]` section; the spec holds this type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalSettings {
    /// Where host directories live (`ROOT/DEPLOYMENT/NAME`); default
    /// [`DEFAULT_ROOT`].
    pub root: PathBuf,
}

impl Default for LocalSettings {
    /// Host directories under [`DEFAULT_ROOT`].
    fn default() -> Self {
        Self {
            root: PathBuf::from(DEFAULT_ROOT),
        }
    }
}
