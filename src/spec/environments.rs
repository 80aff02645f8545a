//! `[environments]`: how long environments (`prov env up NAME`) live by
//! default and at most, and how long `prov gc` waits past an expiry.

use std::time::Duration;

use serde::Deserialize;

use super::error::{Diagnostic, ErrorKind};
use super::raw::Str;

/// How long an environment lives when `--ttl` is not given.
pub const DEFAULT_TTL: Duration = Duration::from_secs(4 * 3600);
/// How long `prov gc` waits past an expiry by default.
pub const DEFAULT_GC_GRACE: Duration = Duration::from_secs(10 * 60);

/// `[environments]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawEnvironments {
    /// `default_ttl = "2h"`.
    pub default_ttl: Option<Str>,
    /// `max_ttl = "7d"`.
    pub max_ttl: Option<Str>,
    /// `gc_grace = "15m"`.
    pub gc_grace: Option<Str>,
}

/// `[environments]`, checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EnvironmentSettings {
    /// The time to live of an environment brought up without `--ttl`.
    pub default_ttl: Duration,
    /// The longest time to live `--ttl` (and `env extend`) may give.
    pub max_ttl: Option<Duration>,
    /// How long past its expiry `prov gc` leaves an environment alone.
    pub gc_grace: Duration,
}

impl Default for EnvironmentSettings {
    fn default() -> Self {
        Self {
            default_ttl: DEFAULT_TTL,
            max_ttl: None,
            gc_grace: DEFAULT_GC_GRACE,
        }
    }
}

impl EnvironmentSettings {
    /// The time to live for `asked` (`--ttl`), or the default; more than
    /// `max_ttl` is an error.
    ///
    /// # Errors
    /// When `asked` (or the default) is longer than `max_ttl`.
    pub fn ttl(&self, asked: Option<Duration>) -> Result<Duration, String> {
        let ttl = asked.unwrap_or(self.default_ttl);
        match self.max_ttl {
            Some(max) if ttl > max => Err(format!(
                "a time to live of {} is longer than `[environments] max_ttl` ({})",
                crate::duration::show(ttl),
                crate::duration::show(max)
            )),
            _ => Ok(ttl),
        }
    }
}

/// Checks `raw`; a bad value is a diagnostic at it.
pub(crate) fn check(
    raw: Option<&RawEnvironments>,
    diags: &mut Vec<Diagnostic>,
) -> EnvironmentSettings {
    let mut settings = EnvironmentSettings::default();
    let Some(raw) = raw else {
        return settings;
    };
    let mut duration = |value: &Str, positive: bool| -> Option<Duration> {
        match crate::duration::parse(value.get_ref()) {
            Ok(d) if positive && d.is_zero() => {
                diags.push(Diagnostic::new(
                    ErrorKind::InvalidValue,
                    "must be longer than zero",
                    value.span(),
                ));
                None
            }
            Ok(d) => Some(d),
            Err(e) => {
                diags.push(Diagnostic::new(ErrorKind::InvalidValue, e, value.span()));
                None
            }
        }
    };
    if let Some(d) = raw.default_ttl.as_ref().and_then(|v| duration(v, true)) {
        settings.default_ttl = d;
    }
    if let Some(d) = raw.max_ttl.as_ref().and_then(|v| duration(v, true)) {
        settings.max_ttl = Some(d);
    }
    if let Some(d) = raw.gc_grace.as_ref().and_then(|v| duration(v, false)) {
        settings.gc_grace = d;
    }
    if let (Some(max), Some(value)) = (settings.max_ttl, &raw.default_ttl) {
        if settings.default_ttl > max {
            diags.push(Diagnostic::new(
                ErrorKind::InvalidValue,
                format!(
                    "default_ttl is longer than max_ttl ({})",
                    crate::duration::show(max)
                ),
                value.span(),
            ));
        }
    }
    settings
}
