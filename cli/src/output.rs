//! How results are shown: human text or JSON, and the time formats both use.

use time::format_description::well_known::Rfc3339;
use time::{Duration, OffsetDateTime};

/// `--output` values.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Lines for people.
    #[default]
    Text,
    /// One JSON document on stdout.
    Json,
}

/// RFC 3339 in UTC.
pub fn rfc3339(t: OffsetDateTime) -> String {
    t.to_offset(time::UtcOffset::UTC)
        .format(&Rfc3339)
        .unwrap_or_else(|_| t.to_string())
}

/// Parses an RFC 3339 time.
pub fn parse_rfc3339(s: &str) -> Result<OffsetDateTime, String> {
    OffsetDateTime::parse(s, &Rfc3339)
        .map_err(|e| format!("{s:?} is not an RFC 3339 time like 2030-01-02T03:04:05Z: {e}"))
}

/// `3y 12d`, `5h 3m`, or `expired 2d ago`.
pub fn human_duration(d: Duration) -> String {
    let neg = d.is_negative();
    let secs = d.whole_seconds().unsigned_abs();
    let (y, rest) = (secs / (365 * 86_400), secs % (365 * 86_400));
    let (days, rest) = (rest / 86_400, rest % 86_400);
    let (h, rest) = (rest / 3_600, rest % 3_600);
    let m = rest / 60;
    let s = if y > 0 {
        format!("{y}y {days}d")
    } else if days > 0 {
        format!("{days}d {h}h")
    } else if h > 0 {
        format!("{h}h {m}m")
    } else {
        format!("{m}m {}s", rest % 60)
    };
    if neg {
        format!("expired {s} ago")
    } else {
        s
    }
}

/// Prints a JSON value, pretty, with a final newline.
pub fn print_json(v: &serde_json::Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(v).expect("JSON values serialize")
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_well() {
        assert_eq!(human_duration(Duration::days(365 * 5 + 3)), "5y 3d");
        assert_eq!(human_duration(Duration::hours(50)), "2d 2h");
        assert_eq!(human_duration(Duration::minutes(90)), "1h 30m");
        assert_eq!(
            human_duration(Duration::seconds(-86_400 * 2)),
            "expired 2d 0h ago"
        );
    }

    #[test]
    fn rfc3339_round_trips() {
        let t = parse_rfc3339("2030-01-02T03:04:05Z").unwrap();
        assert_eq!(rfc3339(t), "2030-01-02T03:04:05Z");
        assert!(parse_rfc3339("yesterday").is_err());
    }
}
