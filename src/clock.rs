//! The time prov reads: now, or `PROV_NOW` (RFC 3339) when set, so that
//! what depends on time (certificate renewal, expiry) can be tested without
//! waiting.

use anyhow::{Context as _, Result};
use chrono::{DateTime, Utc};

/// The variable that sets the clock.
pub const NOW_ENV: &str = "PROV_NOW";

/// Now, or the time `PROV_NOW` gives.
///
/// # Errors
/// When `PROV_NOW` is set but is not an RFC 3339 time.
pub fn now() -> Result<DateTime<Utc>> {
    match std::env::var(NOW_ENV) {
        Ok(text) if !text.is_empty() => prov_state::timestamp::parse(&text)
            .with_context(|| format!("{NOW_ENV}=`{text}` is not an RFC 3339 time")),
        _ => Ok(prov_state::timestamp::now()),
    }
}
