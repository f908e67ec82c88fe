//! Go durations (`time.Duration` strings, as `metav1.Duration` serializes them):
//! cert-manager writes `spec.duration: 1h0m0s`, users write `2160h` or `90m`.

use std::time::Duration;

/// A string that is not a Go duration.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration {0:?}: use a Go duration such as 1h, 90m or 2160h0m0s")]
pub struct DurationError(pub String);

/// Parses a non-negative Go duration: one or more `<number><unit>` with units
/// `ns`, `us`, `µs`, `ms`, `s`, `m`, `h`; numbers may have a fraction; `0` alone is zero.
pub fn parse_go_duration(text: &str) -> Result<Duration, DurationError> {
    let err = || DurationError(text.chars().take(64).collect());
    let s = text.strip_prefix('+').unwrap_or(text);
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() || s.starts_with('-') {
        return Err(err());
    }
    let mut rest = s;
    let mut total_nanos: u128 = 0;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(err)?;
        let (number, tail) = rest.split_at(number_len);
        if number.is_empty() || number == "." || number.matches('.').count() > 1 {
            return Err(err());
        }
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let unit_nanos: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return Err(err()),
        };
        let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
        let whole: u128 = if whole.is_empty() {
            0
        } else {
            whole.parse().map_err(|_| err())?
        };
        let mut value = whole.checked_mul(unit_nanos).ok_or_else(err)?;
        let mut scale = unit_nanos;
        for digit in fraction.chars().take(18) {
            scale /= 10;
            value += u128::from(digit.to_digit(10).ok_or_else(err)?) * scale;
        }
        total_nanos = total_nanos.checked_add(value).ok_or_else(err)?;
        rest = tail;
    }
    // Go's own limit: about 290 years.
    if total_nanos > i64::MAX as u128 {
        return Err(err());
    }
    Ok(Duration::from_nanos(total_nanos as u64))
}

/// Formats whole seconds the way Go does (`1h0m0s`, `10m0s`, `45s`).
pub fn format_go_duration(d: Duration) -> String {
    let secs = d.as_secs();
    let (h, m, s) = (secs / 3600, (secs % 3600) / 60, secs % 60);
    if h > 0 {
        format!("{h}h{m}m{s}s")
    } else if m > 0 {
        format!("{m}m{s}s")
    } else {
        format!("{s}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_cert_manager_and_users_write() {
        let h = Duration::from_secs(3600);
        assert_eq!(parse_go_duration("1h0m0s").unwrap(), h);
        assert_eq!(parse_go_duration("1h").unwrap(), h);
        assert_eq!(parse_go_duration("60m").unwrap(), h);
        assert_eq!(parse_go_duration("2160h0m0s").unwrap(), h * 2160);
        assert_eq!(parse_go_duration("1.5h").unwrap(), h * 3 / 2);
        assert_eq!(parse_go_duration("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(
            parse_go_duration("250ms").unwrap(),
            Duration::from_millis(250)
        );
        assert_eq!(parse_go_duration("0").unwrap(), Duration::ZERO);
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            "",
            "1",
            "h",
            "-1h",
            "1d",
            "1h-",
            "1..5h",
            "1.2.3s",
            "ten minutes",
            "9999999999999h",
        ] {
            assert!(parse_go_duration(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn formats_like_go() {
        assert_eq!(format_go_duration(Duration::from_secs(3600)), "1h0m0s");
        assert_eq!(format_go_duration(Duration::from_secs(600)), "10m0s");
        assert_eq!(format_go_duration(Duration::from_secs(5)), "5s");
        for d in [1, 59, 60, 3599, 3600, 7_776_000] {
            let d = Duration::from_secs(d);
            assert_eq!(parse_go_duration(&format_go_duration(d)).unwrap(), d);
        }
    }
}
