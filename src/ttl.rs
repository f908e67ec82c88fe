//! Certificate lifetimes written the way operators write them: `24h`, `90d`, `5y`, `1h30m`.

use std::fmt;
use std::str::FromStr;

use time::Duration;

/// A positive lifetime with a human-readable form (`10y`, `90d`, `24h`, `1h30m`, `600s`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ttl(Duration);

/// A TTL string that could not be understood.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid duration {input:?}: {why} (examples: 10y, 90d, 24h, 1h30m, 600s)")]
pub struct TtlError {
    input: String,
    why: &'static str,
}

const UNITS: [(char, i64); 6] = [
    ('y', 365 * 86_400),
    ('w', 7 * 86_400),
    ('d', 86_400),
    ('h', 3_600),
    ('m', 60),
    ('s', 1),
];

impl Ttl {
    /// A TTL of whole seconds; `None` when not positive.
    pub fn from_seconds(seconds: i64) -> Option<Self> {
        (seconds > 0).then(|| Self(Duration::seconds(seconds)))
    }

    /// A TTL from a `time::Duration`; `None` when not at least one second.
    pub fn from_duration(d: Duration) -> Option<Self> {
        Self::from_seconds(d.whole_seconds())
    }

    /// Minutes, for defaults written in code.
    pub const fn minutes(m: i64) -> Self {
        Self(Duration::seconds(m * 60))
    }

    /// Hours, for defaults written in code.
    pub const fn hours(h: i64) -> Self {
        Self(Duration::seconds(h * 3_600))
    }

    /// Days, for defaults written in code.
    pub const fn days(d: i64) -> Self {
        Self(Duration::seconds(d * 86_400))
    }

    /// Years of 365 days, for defaults written in code.
    pub const fn years(y: i64) -> Self {
        Self(Duration::seconds(y * 365 * 86_400))
    }

    /// The lifetime as a `time::Duration`.
    pub fn as_duration(self) -> Duration {
        self.0
    }

    /// Whole seconds.
    pub fn as_seconds(self) -> i64 {
        self.0.whole_seconds()
    }
}

impl FromStr for Ttl {
    type Err = TtlError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let err = |why| TtlError {
            input: input.chars().take(64).collect(),
            why,
        };
        let s = input.trim();
        if s.is_empty() {
            return Err(err("empty"));
        }
        let mut total: i64 = 0;
        let mut number = String::new();
        let mut last_unit = usize::MAX;
        for c in s.chars() {
            if c.is_ascii_digit() {
                number.push(c);
                continue;
            }
            let Some(pos) = UNITS.iter().position(|(u, _)| *u == c) else {
                return Err(err("unknown unit (use y, w, d, h, m or s)"));
            };
            if number.is_empty() {
                return Err(err("a unit without a number"));
            }
            if last_unit != usize::MAX && pos <= last_unit {
                return Err(err("units must go from largest to smallest, each once"));
            }
            last_unit = pos;
            let n: i64 = number.parse().map_err(|_| err("number too large"))?;
            number.clear();
            total = n
                .checked_mul(UNITS[pos].1)
                .and_then(|v| total.checked_add(v))
                .ok_or_else(|| err("too large"))?;
        }
        if !number.is_empty() {
            return Err(err("a number without a unit"));
        }
        if total > 100 * 365 * 86_400 {
            return Err(err("longer than 100 years"));
        }
        Self::from_seconds(total).ok_or_else(|| err("must be longer than zero"))
    }
}

impl fmt::Display for Ttl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rest = self.0.whole_seconds();
        if rest % (365 * 86_400) == 0 {
            return write!(f, "{}y", rest / (365 * 86_400));
        }
        for (unit, secs) in UNITS.iter().skip(2) {
            if rest >= *secs {
                write!(f, "{}{}", rest / secs, unit)?;
                rest %= secs;
            }
        }
        Ok(())
    }
}

impl serde::Serialize for Ttl {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Ttl {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_common_forms() {
        assert_eq!("24h".parse::<Ttl>().unwrap().as_seconds(), 86_400);
        assert_eq!("90d".parse::<Ttl>().unwrap().as_seconds(), 90 * 86_400);
        assert_eq!("10y".parse::<Ttl>().unwrap().as_seconds(), 3650 * 86_400);
        assert_eq!("1h30m".parse::<Ttl>().unwrap().as_seconds(), 5_400);
        assert_eq!("600s".parse::<Ttl>().unwrap().as_seconds(), 600);
    }

    #[test]
    fn rejects_nonsense() {
        for bad in ["", "0s", "h", "10", "1x", "30m1h", "1h1h", "-1h", "1000y"] {
            assert!(bad.parse::<Ttl>().is_err(), "{bad} should fail");
        }
    }

    #[test]
    fn display_round_trips() {
        for s in ["24h", "90d", "10y", "1h30m", "10m", "1d2h"] {
            let t: Ttl = s.parse().unwrap();
            assert_eq!(t.to_string().parse::<Ttl>().unwrap(), t);
        }
        assert_eq!(Ttl::hours(24).to_string(), "1d");
    }
}
