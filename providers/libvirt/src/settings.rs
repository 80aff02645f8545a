//! Settings of `[providers.libvirt]`.

use std::time::Duration;

/// The URI used when the spec names none.
pub const DEFAULT_URI: &str = "qemu:///system";

/// Settings of the `[providers.libvirt]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LibvirtSettings {
    /// The deployment's name: part of every domain and volume name.
    pub deployment: String,
    /// The connection URI (`qemu:///system`, `qemu:///session`,
    /// `qemu+ssh://user@host/system`).
    pub uri: String,
    /// How long a VM may take from start to an SSH banner.
    pub boot_timeout: Duration,
    /// How long an ACPI shutdown may take before the VM is powered off.
    pub shutdown_timeout: Duration,
}

impl LibvirtSettings {
    /// Default settings for `deployment`.
    #[must_use]
    pub fn new(deployment: impl Into<String>) -> Self {
        Self {
            deployment: deployment.into(),
            uri: DEFAULT_URI.to_owned(),
            boot_timeout: Duration::from_secs(300),
            shutdown_timeout: Duration::from_secs(60),
        }
    }
}
