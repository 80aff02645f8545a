//! Timestamps as prov stores and prints them: RFC 3339 in UTC, to the
//! second (`2024-01-02T03:04:05Z`).
//!
//! Fields of type `chrono::DateTime<Utc>` use [`serialize`] and
//! [`deserialize`] (`#[serde(with = "prov_state::timestamp")]`), or the
//! [`optional`] pair for an `Option`. Reading accepts any RFC 3339 time (an
//! offset is converted to UTC); writing always gives the form above, so what
//! older versions stored reads and prints as it did.

use chrono::{DateTime, SecondsFormat, SubsecRound, Utc};
use serde::{Deserialize, Deserializer, Serializer};

/// Now, to the second (what is stored is what is compared).
#[must_use]
pub fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(0)
}

/// `time` as stored and printed: `2024-01-02T03:04:05Z`.
#[must_use]
pub fn format(time: &DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// Parses an RFC 3339 time, converting an offset to UTC.
///
/// # Errors
/// When `text` is not an RFC 3339 time.
pub fn parse(text: &str) -> Result<DateTime<Utc>, chrono::ParseError> {
    DateTime::parse_from_rfc3339(text).map(|time| time.with_timezone(&Utc))
}

/// Serializes `time` as [`format()`] gives it.
///
/// # Errors
/// When the serializer fails.
pub fn serialize<S: Serializer>(time: &DateTime<Utc>, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&format(time))
}

/// Deserializes an RFC 3339 time (see [`parse`]).
///
/// # Errors
/// When the value is not a string holding an RFC 3339 time.
pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<DateTime<Utc>, D::Error> {
    let text = String::deserialize(deserializer)?;
    parse(&text)
        .map_err(|e| serde::de::Error::custom(format!("`{text}` is not an RFC 3339 time: {e}")))
}

/// The same for an `Option<DateTime<Utc>>` field (`None` is `null`).
pub mod optional {
    use chrono::{DateTime, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    /// Serializes `Some` as [`super::format()`] gives it, `None` as `null`.
    ///
    /// # Errors
    /// When the serializer fails.
    pub fn serialize<S: Serializer>(
        time: &Option<DateTime<Utc>>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match time {
            Some(time) => super::serialize(time, serializer),
            None => serializer.serialize_none(),
        }
    }

    /// Deserializes `null` as `None`, else an RFC 3339 time.
    ///
    /// # Errors
    /// When the value is neither `null` nor an RFC 3339 time.
    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<DateTime<Utc>>, D::Error> {
        Option::<String>::deserialize(deserializer)?
            .map(|text| {
                super::parse(&text).map_err(|e| {
                    serde::de::Error::custom(format!("`{text}` is not an RFC 3339 time: {e}"))
                })
            })
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Stamped {
        #[serde(with = "super")]
        at: DateTime<Utc>,
        #[serde(with = "super::optional", default)]
        maybe: Option<DateTime<Utc>>,
    }

    #[test]
    fn stored_form_reads_and_writes_back_unchanged() {
        let json = r#"{"at":"2024-01-02T03:04:05Z","maybe":null}"#;
        let stamped: Stamped = serde_json::from_str(json).unwrap();
        assert_eq!(format(&stamped.at), "2024-01-02T03:04:05Z");
        assert_eq!(serde_json::to_string(&stamped).unwrap(), json);
        let some = r#"{"at":"2024-01-02T03:04:05Z","maybe":"2025-06-07T08:09:10Z"}"#;
        let stamped: Stamped = serde_json::from_str(some).unwrap();
        assert_eq!(serde_json::to_string(&stamped).unwrap(), some);
    }

    #[test]
    fn offsets_become_utc_and_fractions_are_not_written() {
        let at = parse("2024-01-02T04:04:05.75+01:00").unwrap();
        assert_eq!(format(&at), "2024-01-02T03:04:05Z");
        assert!(parse("yesterday").is_err());
        let err = serde_json::from_str::<Stamped>(r#"{"at":"soon"}"#).unwrap_err();
        assert!(
            err.to_string().contains("`soon` is not an RFC 3339 time"),
            "{err}"
        );
    }

    #[test]
    fn now_has_no_fraction() {
        let now = now();
        assert_eq!(parse(&format(&now)).unwrap(), now);
    }
}
