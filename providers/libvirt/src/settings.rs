//! Settings of `[providers.libvirt]`.

use std::time::Duration;

/// The URI used when the spec names none.
pub const DEFAULT_URI: &str = "qemu:///system";

/// How long a VM may take from start to an SSH banner when the spec does
/// not say.
pub const DEFAULT_BOOT_TIMEOUT: Duration = Duration::from_secs(300);

/// How long an ACPI shutdown may take before power-off when the spec does
/// not say.
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(60);

/// The longest timeout the spec may give, in seconds (a day).
const MAX_TIMEOUT_SECONDS: i64 = 86_400;

/// Settings of the `[providers.libvirt]` section (environment variables
/// already expanded); the spec holds this type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LibvirtSettings {
    /// The connection URI (`qemu:///system`, `qemu:///session`,
    /// `qemu+ssh://user@host/system`).
    pub uri: String,
    /// How long a VM may take from start to an SSH banner
    /// ([`DEFAULT_BOOT_TIMEOUT`] when unset).
    pub boot_timeout: Option<Duration>,
    /// How long an ACPI shutdown may take before the VM is powered off
    /// ([`DEFAULT_SHUTDOWN_TIMEOUT`] when unset).
    pub shutdown_timeout: Option<Duration>,
}

impl Default for LibvirtSettings {
    /// [`DEFAULT_URI`] and the default timeouts.
    fn default() -> Self {
        Self {
            uri: DEFAULT_URI.to_owned(),
            boot_timeout: None,
            shutdown_timeout: None,
        }
    }
}

/// A `boot_timeout` or `shutdown_timeout` as the spec writes it: whole
/// seconds, from 1 to 86400.
///
/// # Errors
/// The reason, for the spec to show at the value.
pub fn timeout(seconds: i64) -> Result<Duration, String> {
    u64::try_from(seconds)
        .ok()
        .filter(|s| (1..=MAX_TIMEOUT_SECONDS.unsigned_abs()).contains(s))
        .map(Duration::from_secs)
        .ok_or_else(|| format!("must be from 1 to {MAX_TIMEOUT_SECONDS} seconds (got {seconds})"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_are_whole_seconds_up_to_a_day() {
        assert_eq!(timeout(90), Ok(Duration::from_secs(90)));
        assert_eq!(timeout(86_400), Ok(Duration::from_secs(86_400)));
        for bad in [0, -5, 86_401] {
            let why = timeout(bad).unwrap_err();
            assert_eq!(why, format!("must be from 1 to 86400 seconds (got {bad})"));
        }
    }
}
