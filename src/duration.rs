//! Human durations on the command line and in the spec: `30s`, `5m`,
//! `500ms`, `1h`, `7d`, or plain seconds.

use std::time::Duration;

/// Parses `30s`, `5m`, `500ms`, `1h`, `7d` or a plain number of seconds.
///
/// # Errors
/// A message naming the accepted forms.
pub fn parse(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("`{s}` is not a duration (try 30s, 5m, 500ms)"))?;
    let too_long = || format!("`{s}` is too long a duration");
    let duration = match unit {
        "" | "s" => Duration::from_secs(n),
        "ms" => Duration::from_millis(n),
        "m" => Duration::from_secs(n.checked_mul(60).ok_or_else(too_long)?),
        "h" => Duration::from_secs(n.checked_mul(3600).ok_or_else(too_long)?),
        "d" => Duration::from_secs(n.checked_mul(86_400).ok_or_else(too_long)?),
        _ => return Err(format!("`{s}` has an unknown unit (use ms, s, m, h or d)")),
    };
    Ok(duration)
}

/// `duration` the way [`parse`] reads it, in its largest whole unit
/// (`2h`, `90m`, `45s`, `1500ms`).
#[must_use]
pub fn show(duration: Duration) -> String {
    let secs = duration.as_secs();
    if duration.subsec_millis() != 0 || secs == 0 {
        return format!("{}ms", duration.as_millis());
    }
    for (unit, size) in [("d", 86_400), ("h", 3600), ("m", 60)] {
        if secs % size == 0 {
            return format!("{}{unit}", secs / size);
        }
    }
    format!("{secs}s")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units() {
        assert_eq!(parse("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse("7").unwrap(), Duration::from_secs(7));
        assert_eq!(parse("2d").unwrap(), Duration::from_secs(2 * 86_400));
        assert!(parse("x").is_err());
        assert!(parse("5w").is_err());
        for text in ["2d", "36h", "90m", "45s", "1500ms", "0ms"] {
            assert_eq!(show(parse(text).unwrap()), text);
        }
    }

    #[test]
    fn an_overflowing_duration_is_an_error_not_a_panic() {
        let err = parse("18446744073709551615h").unwrap_err();
        assert!(err.contains("too long"), "{err}");
        assert!(parse("18446744073709551615m").is_err());
    }
}
