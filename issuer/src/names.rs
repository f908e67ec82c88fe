//! Names that the configuration, the policy and the controllers all speak of, parsed at
//! the edge. This module imports nothing from the rest of the issuer, so any module may
//! use it without pulling in the configuration.

use std::fmt;
use std::str::FromStr;

use serde::Deserialize;

/// A cluster name: lowercase letters, digits and `-`, 1–63 characters.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClusterName(String);

impl ClusterName {
    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ClusterName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for ClusterName {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let ok = !s.is_empty()
            && s.len() <= 63
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !s.starts_with('-')
            && !s.ends_with('-');
        if ok {
            Ok(ClusterName(s.to_string()))
        } else {
            Err(format!(
                "invalid cluster name {s:?}: use 1-63 lowercase letters, digits and '-'"
            ))
        }
    }
}

impl<'de> Deserialize<'de> for ClusterName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Whether `s` may name an intermediate or a policy: 1–63 lowercase letters, digits,
/// `-` or `_`.
pub fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_names_are_dns_labels() {
        assert!("eks-prod".parse::<ClusterName>().is_ok());
        for bad in ["", "EKS", "-a", "a-", "a_b", &"a".repeat(64)] {
            assert!(bad.parse::<ClusterName>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn names_allow_underscores_but_not_capitals() {
        assert!(valid_name("work_loads-1"));
        assert!(!valid_name("Workloads"));
        assert!(!valid_name(""));
        assert!(!valid_name(&"a".repeat(64)));
    }
}
