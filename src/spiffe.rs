//! SPIFFE IDs and trust domains, parsed once at the edge (shared/contracts/profiles.md).

use std::fmt;
use std::str::FromStr;

/// The most bytes a SPIFFE ID may have.
pub const MAX_SPIFFE_ID_LEN: usize = 2048;
/// The most bytes a trust domain name may have.
pub const MAX_TRUST_DOMAIN_LEN: usize = 255;

/// Why a string is not a SPIFFE ID or trust domain.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone)]
pub enum SpiffeError {
    #[error("SPIFFE ID is empty")]
    Empty,
    #[error("SPIFFE ID must start with \"spiffe://\" (lowercase scheme)")]
    WrongScheme,
    #[error("SPIFFE ID is longer than {MAX_SPIFFE_ID_LEN} bytes")]
    TooLong,
    #[error("trust domain is empty")]
    EmptyTrustDomain,
    #[error("trust domain is longer than {MAX_TRUST_DOMAIN_LEN} bytes")]
    TrustDomainTooLong,
    #[error("trust domain may only contain lowercase letters, digits, '.', '-' and '_' (found {0:?}); no port, user info or uppercase")]
    BadTrustDomainChar(char),
    #[error("SPIFFE ID may not contain a query or fragment")]
    QueryOrFragment,
    #[error("SPIFFE ID path segments may not be empty (no \"//\" and no trailing \"/\")")]
    EmptySegment,
    #[error("SPIFFE ID path segments may not be \".\" or \"..\"")]
    DotSegment,
    #[error("SPIFFE ID path may only contain letters, digits, '.', '-' and '_' in segments (found {0:?})")]
    BadPathChar(char),
    #[error("SPIFFE ID {0:?} is not of the Kubernetes form spiffe://TRUST_DOMAIN/ns/NAMESPACE/sa/SERVICE_ACCOUNT")]
    NotKubernetes(String),
}

/// A SPIFFE trust domain such as `mesh.example`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TrustDomain(String);

impl TrustDomain {
    /// The trust domain name without scheme.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `spiffe://NAME`, the ID of the trust domain itself (used as a CA's URI SAN).
    pub fn id_string(&self) -> String {
        format!("spiffe://{}", self.0)
    }

    fn parse_name(name: &str) -> Result<Self, SpiffeError> {
        if name.is_empty() {
            return Err(SpiffeError::EmptyTrustDomain);
        }
        if name.len() > MAX_TRUST_DOMAIN_LEN {
            return Err(SpiffeError::TrustDomainTooLong);
        }
        if let Some(c) = name.chars().find(|c| {
            !(c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '-' | '_'))
        }) {
            return Err(SpiffeError::BadTrustDomainChar(c));
        }
        Ok(Self(name.to_owned()))
    }
}

impl FromStr for TrustDomain {
    type Err = SpiffeError;

    /// Accepts `mesh.example` or `spiffe://mesh.example`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.strip_prefix("spiffe://") {
            Some(rest) => {
                let id: SpiffeId = s.parse()?;
                if !id.path.is_empty() {
                    return Err(SpiffeError::BadTrustDomainChar('/'));
                }
                Self::parse_name(rest)
            }
            None => Self::parse_name(s),
        }
    }
}

impl fmt::Display for TrustDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for TrustDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TrustDomain({})", self.0)
    }
}

/// A SPIFFE ID: `spiffe://TRUST_DOMAIN[/PATH]`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpiffeId {
    trust_domain: TrustDomain,
    /// Empty, or starting with `/` and without a trailing `/`.
    path: String,
}

impl SpiffeId {
    /// The ID of a Kubernetes service account: `spiffe://TD/ns/NS/sa/SA`.
    pub fn kubernetes(
        td: &TrustDomain,
        namespace: &str,
        service_account: &str,
    ) -> Result<Self, SpiffeError> {
        if namespace.contains('/') || service_account.contains('/') {
            return Err(SpiffeError::BadPathChar('/'));
        }
        format!("spiffe://{td}/ns/{namespace}/sa/{service_account}").parse()
    }

    /// The ID of the trust domain itself (no path).
    pub fn for_trust_domain(td: &TrustDomain) -> Self {
        Self {
            trust_domain: td.clone(),
            path: String::new(),
        }
    }

    /// The trust domain part.
    pub fn trust_domain(&self) -> &TrustDomain {
        &self.trust_domain
    }

    /// The path, empty or starting with `/`.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// `(namespace, service_account)` when the path is exactly `/ns/NS/sa/SA`.
    pub fn kubernetes_parts(&self) -> Option<(&str, &str)> {
        let segs: Vec<&str> = self.path.split('/').skip(1).collect();
        match segs.as_slice() {
            ["ns", ns, "sa", sa] => Some((ns, sa)),
            _ => None,
        }
    }

    /// Like [`Self::kubernetes_parts`] but an error that says what form is expected.
    pub fn require_kubernetes(&self) -> Result<(&str, &str), SpiffeError> {
        self.kubernetes_parts()
            .ok_or_else(|| SpiffeError::NotKubernetes(self.to_string()))
    }
}

impl FromStr for SpiffeId {
    type Err = SpiffeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err(SpiffeError::Empty);
        }
        if s.len() > MAX_SPIFFE_ID_LEN {
            return Err(SpiffeError::TooLong);
        }
        let rest = s
            .strip_prefix("spiffe://")
            .ok_or(SpiffeError::WrongScheme)?;
        if rest.contains(['?', '#']) {
            return Err(SpiffeError::QueryOrFragment);
        }
        let (td, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        let trust_domain = TrustDomain::parse_name(td)?;
        if !path.is_empty() {
            for seg in path[1..].split('/') {
                if seg.is_empty() {
                    return Err(SpiffeError::EmptySegment);
                }
                if seg == "." || seg == ".." {
                    return Err(SpiffeError::DotSegment);
                }
                if let Some(c) = seg
                    .chars()
                    .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')))
                {
                    return Err(SpiffeError::BadPathChar(c));
                }
            }
        }
        Ok(Self {
            trust_domain,
            path: path.to_owned(),
        })
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "spiffe://{}{}", self.trust_domain, self.path)
    }
}

impl fmt::Debug for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SpiffeId({self})")
    }
}

macro_rules! serde_via_str {
    ($t:ty) => {
        impl serde::Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
        impl<'de> serde::Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                String::deserialize(d)?
                    .parse()
                    .map_err(serde::de::Error::custom)
            }
        }
    };
}
serde_via_str!(SpiffeId);
serde_via_str!(TrustDomain);

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepts_valid_ids() {
        for ok in [
            "spiffe://mesh.example",
            "spiffe://mesh.example/ns/default/sa/web",
            "spiffe://a_b-c.d/x/Y.z-_",
            "spiffe://1/2",
        ] {
            let id: SpiffeId = ok.parse().unwrap_or_else(|e| panic!("{ok}: {e}"));
            assert_eq!(id.to_string(), ok);
        }
    }

    #[test]
    fn rejects_every_rule() {
        use SpiffeError::*;
        let cases = [
            ("", Empty),
            ("SPIFFE://td/a", WrongScheme),
            ("https://td/a", WrongScheme),
            ("spiffe://", EmptyTrustDomain),
            ("spiffe:///path", EmptyTrustDomain),
            ("spiffe://TD/a", BadTrustDomainChar('T')),
            ("spiffe://td:8080/a", BadTrustDomainChar(':')),
            ("spiffe://user@td/a", BadTrustDomainChar('@')),
            ("spiffe://td/a?x=1", QueryOrFragment),
            ("spiffe://td/a#f", QueryOrFragment),
            ("spiffe://td/a//b", EmptySegment),
            ("spiffe://td/a/", EmptySegment),
            ("spiffe://td/", EmptySegment),
            ("spiffe://td/a/./b", DotSegment),
            ("spiffe://td/a/..", DotSegment),
            ("spiffe://td/a b", BadPathChar(' ')),
            ("spiffe://td/a%2f", BadPathChar('%')),
            ("spiffe://td/\0", BadPathChar('\0')),
        ];
        for (input, want) in cases {
            assert_eq!(input.parse::<SpiffeId>().unwrap_err(), want, "{input:?}");
        }
        let long_td = format!("spiffe://{}", "a".repeat(256));
        assert_eq!(long_td.parse::<SpiffeId>().unwrap_err(), TrustDomainTooLong);
        let long = format!("spiffe://td/{}", "a".repeat(2048));
        assert_eq!(long.parse::<SpiffeId>().unwrap_err(), TooLong);
    }

    #[test]
    fn kubernetes_form() {
        let td: TrustDomain = "mesh.example".parse().unwrap();
        let id = SpiffeId::kubernetes(&td, "payments", "api").unwrap();
        assert_eq!(id.to_string(), "spiffe://mesh.example/ns/payments/sa/api");
        assert_eq!(id.kubernetes_parts(), Some(("payments", "api")));
        let other: SpiffeId = "spiffe://mesh.example/ns/a/sa/b/c".parse().unwrap();
        assert!(other.kubernetes_parts().is_none());
        assert!(SpiffeId::kubernetes(&td, "a/b", "c").is_err());
    }

    #[test]
    fn trust_domain_forms() {
        let a: TrustDomain = "mesh.example".parse().unwrap();
        let b: TrustDomain = "spiffe://mesh.example".parse().unwrap();
        assert_eq!(a, b);
        assert!("spiffe://mesh.example/x".parse::<TrustDomain>().is_err());
        assert!("Mesh".parse::<TrustDomain>().is_err());
    }

    /// The SPIFFE ID grammar written out again, independently of the parser: the oracle.
    fn spec_accepts(s: &str) -> bool {
        let Some(rest) = s.strip_prefix("spiffe://") else {
            return false;
        };
        let mut parts = rest.split('/');
        let td = parts.next().unwrap_or_default();
        let td_ok = !td.is_empty()
            && td.len() <= 255
            && td
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
        s.len() <= 2048
            && td_ok
            && parts.all(|seg| {
                !seg.is_empty()
                    && seg != "."
                    && seg != ".."
                    && seg
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
            })
    }

    /// A valid-looking ID (segments may be `.` or `..`), then maybe one insertion of a
    /// character or piece the grammar cares about, anywhere (the scheme included).
    fn near_valid() -> impl Strategy<Value = String> {
        let id = (
            "[a-z0-9._-]{1,12}",
            prop::collection::vec("[A-Za-z0-9._-]{1,6}", 0..4),
        )
            .prop_map(|(td, segs)| {
                let path: String = segs.iter().map(|x| format!("/{x}")).collect();
                format!("spiffe://{td}{path}")
            });
        let edit = prop::option::weighted(
            0.5,
            (
                any::<prop::sample::Index>(),
                prop::sample::select(vec![
                    "/", "//", "/.", "/..", ".", "?", "#", "%2f", " ", "A", ":", "@", "é", "\0",
                ]),
            ),
        );
        (id, edit).prop_map(|(mut s, edit)| {
            if let Some((at, piece)) = edit {
                s.insert_str(at.index(s.len() + 1), piece);
            }
            s
        })
    }

    #[test]
    fn near_valid_reaches_both_outcomes() {
        use proptest::strategy::ValueTree;
        let mut runner = proptest::test_runner::TestRunner::deterministic();
        let (mut accepted, mut rejected) = (0, 0);
        for _ in 0..1000 {
            let s = near_valid().new_tree(&mut runner).unwrap().current();
            match s.parse::<SpiffeId>() {
                Ok(_) => accepted += 1,
                Err(_) => rejected += 1,
            }
        }
        assert!(
            accepted > 200 && rejected > 200,
            "{accepted} accepted, {rejected} rejected"
        );
    }

    fn segment() -> impl Strategy<Value = String> {
        "[A-Za-z0-9._-]{1,12}".prop_filter("no dot segments", |s| s != "." && s != "..")
    }

    proptest! {
        #[test]
        fn valid_ids_round_trip(td in "[a-z0-9._-]{1,40}", segs in prop::collection::vec(segment(), 0..6)) {
            let s = format!("spiffe://{td}{}", segs.iter().map(|x| format!("/{x}")).collect::<String>());
            let id: SpiffeId = s.parse().unwrap();
            prop_assert_eq!(id.to_string(), s.clone());
            prop_assert_eq!(id.trust_domain().as_str(), td.as_str());
            let again: SpiffeId = id.to_string().parse().unwrap();
            prop_assert_eq!(again, id);
        }

        // Arbitrary text alone is almost never accepted (it would have to start with
        // `spiffe://`), so most cases are near-valid IDs with one edit: both outcomes occur
        // (`near_valid_reaches_both_outcomes`), and the parser must agree with the spec.
        #[test]
        fn accepted_exactly_per_the_spec_and_accepted_ones_are_canonical(
            s in prop_oneof![4 => near_valid(), 1 => "\\PC{0,80}"],
        ) {
            let parsed = s.parse::<SpiffeId>();
            prop_assert_eq!(parsed.is_ok(), spec_accepts(&s), "{:?}: {:?}", s, parsed);
            if let Ok(id) = parsed {
                prop_assert_eq!(id.to_string(), s.clone());
                prop_assert!(s.starts_with("spiffe://"));
                prop_assert!(!s.ends_with('/'));
                prop_assert!(!s.contains("//") || s.matches("//").count() == 1);
            }
        }

        #[test]
        fn any_bad_char_in_path_is_rejected(td in "[a-z]{1,10}", c in "[^A-Za-z0-9._/-]") {
            let s = format!("spiffe://{td}/a{c}b");
            prop_assert!(s.parse::<SpiffeId>().is_err());
        }
    }
}
