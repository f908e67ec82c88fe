//! DNS names for certificate SANs, checked when made (like `rustls_pki_types::DnsName`):
//! after parsing, code cannot hold a name canopy would not put in a certificate.

use std::fmt;
use std::str::FromStr;

/// A DNS SAN: LDH labels, at most 253 bytes, lowercase; a wildcard only as a whole
/// leftmost `*.` label, and only when made with [`Wildcards::Allowed`].
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DnsName(String);

/// Whether a `*.` leftmost label is accepted (policy decides).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wildcards {
    Allowed,
    Refused,
}

/// What is wrong with a DNS name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DnsNameFault {
    Empty,
    TooLong,
    WildcardNotAllowed,
    WildcardNotLeftmost,
    EmptyLabel,
    LabelTooLong,
    BadCharacter,
    HyphenAtLabelEdge,
    LooksLikeIp,
}

impl fmt::Display for DnsNameFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DnsNameFault::Empty => "empty",
            DnsNameFault::TooLong => "longer than 253 bytes",
            DnsNameFault::WildcardNotAllowed => "wildcards are not allowed here",
            DnsNameFault::WildcardNotLeftmost => "a wildcard may only be the whole leftmost label",
            DnsNameFault::EmptyLabel => "empty label",
            DnsNameFault::LabelTooLong => "label longer than 63 bytes",
            DnsNameFault::BadCharacter => "only letters, digits, '-' and '.' are allowed",
            DnsNameFault::HyphenAtLabelEdge => "a label may not start or end with '-'",
            DnsNameFault::LooksLikeIp => "looks like an IP address: use an IP SAN",
        })
    }
}

/// A string that is not a DNS name canopy issues for.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid DNS name {name:?}: {fault}")]
pub struct DnsNameError {
    /// The offending name, cut to 80 characters.
    pub name: String,
    pub fault: DnsNameFault,
}

impl DnsName {
    /// Parses `name`, accepting a leftmost `*.` label only when `wildcards` allows it.
    pub fn parse(name: &str, wildcards: Wildcards) -> Result<Self, DnsNameError> {
        check(name, wildcards).map_err(|fault| DnsNameError {
            name: name.chars().take(80).collect(),
            fault,
        })?;
        Ok(DnsName(name.to_ascii_lowercase()))
    }

    /// The name, lowercase.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether the leftmost label is `*`.
    pub fn is_wildcard(&self) -> bool {
        self.0.starts_with("*.")
    }
}

fn check(name: &str, wildcards: Wildcards) -> Result<(), DnsNameFault> {
    if name.is_empty() {
        return Err(DnsNameFault::Empty);
    }
    if name.len() > 253 {
        return Err(DnsNameFault::TooLong);
    }
    let rest = match name.strip_prefix("*.") {
        Some(r) if wildcards == Wildcards::Allowed => r,
        Some(_) => return Err(DnsNameFault::WildcardNotAllowed),
        None => name,
    };
    if rest.contains('*') {
        return Err(DnsNameFault::WildcardNotLeftmost);
    }
    for label in rest.split('.') {
        if label.is_empty() {
            return Err(DnsNameFault::EmptyLabel);
        }
        if label.len() > 63 {
            return Err(DnsNameFault::LabelTooLong);
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err(DnsNameFault::BadCharacter);
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(DnsNameFault::HyphenAtLabelEdge);
        }
    }
    if rest.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return Err(DnsNameFault::LooksLikeIp);
    }
    Ok(())
}

/// Parses without wildcards.
impl FromStr for DnsName {
    type Err = DnsNameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        DnsName::parse(s, Wildcards::Refused)
    }
}

impl TryFrom<&str> for DnsName {
    type Error = DnsNameError;

    fn try_from(s: &str) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl fmt::Display for DnsName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for DnsName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_what_a_certificate_must_not_carry() {
        for bad in [
            "",
            "a/b.example",
            "a\0b",
            "*.example.com",
            "exa mple.com",
            "-a.com",
            "a-.com",
            "a..b",
            "1.2.3.4",
            "a.*.com",
            "*",
        ] {
            let e = bad.parse::<DnsName>().unwrap_err();
            assert!(e.to_string().contains("invalid DNS name"), "{bad:?}");
        }
        assert_eq!(
            "*.example.com".parse::<DnsName>().unwrap_err().fault,
            DnsNameFault::WildcardNotAllowed
        );
        let long = format!("{}.com", "a".repeat(64));
        assert_eq!(
            long.parse::<DnsName>().unwrap_err().fault,
            DnsNameFault::LabelTooLong
        );
    }

    #[test]
    fn wildcards_only_when_allowed_and_names_are_lowercased() {
        let w = DnsName::parse("*.Example.com", Wildcards::Allowed).unwrap();
        assert!(w.is_wildcard());
        assert_eq!(w.as_str(), "*.example.com");
        assert_eq!(
            DnsName::parse("a.*.com", Wildcards::Allowed)
                .unwrap_err()
                .fault,
            DnsNameFault::WildcardNotLeftmost
        );
        assert_eq!(
            "Issuer.Canopy.SVC".parse::<DnsName>().unwrap().as_str(),
            "issuer.canopy.svc"
        );
    }
}
