//! X.509 name constraints (RFC 5280 §4.2.1.10) for the CAs canopy mints below itself.
//!
//! A mesh CA's key sits unencrypted in istiod's `cacerts` Secret. Its certificate carries
//! permitted subtrees so that a stolen key mints nothing outside the mesh that Go's
//! crypto/x509, OpenSSL or webpki accept: URI names only in the trust domain (for a
//! SPIFFE ID the URI constraint matches the host, which is the trust domain) and DNS
//! names only under istiod's own service names.
//!
//! rcgen encodes DNS, email, IP and directory subtrees but not URI ones, so the
//! extension is encoded here (a few lines of DER) and added as a critical custom
//! extension.

use crate::der::tlv;
use crate::spiffe::TrustDomain;

/// The nameConstraints extension's OID, 2.5.29.30.
pub const OID: &[u64] = &[2, 5, 29, 30];

/// Permitted subtrees; a kind of name with no subtree here is left unconstrained
/// (RFC 5280), so IP addresses and e-mail stay as the profile allows them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NameConstraints {
    /// URI hosts (`mesh.example`): a URI name must have exactly this host.
    pub permitted_uri_hosts: Vec<String>,
    /// DNS subtrees: `.istio-system.svc` permits names below it, `example.com` that name
    /// and names below it.
    pub permitted_dns: Vec<String>,
}

/// Why a constraint cannot be encoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConstraintError {
    #[error("name constraint {0:?} is not a DNS name (letters, digits, '-', '.', an optional leading '.')")]
    BadDnsSubtree(String),
    #[error("name constraints permit nothing: give a URI host or a DNS subtree")]
    Empty,
}

impl NameConstraints {
    /// The constraints of a mesh CA: URIs in `trust_domain`, DNS names in `dns`.
    pub fn mesh(trust_domain: &TrustDomain, dns: &[String]) -> Self {
        NameConstraints {
            permitted_uri_hosts: vec![trust_domain.as_str().to_owned()],
            permitted_dns: dns.to_vec(),
        }
    }

    /// istiod's service names in `namespace`: `.NAMESPACE.svc`.
    pub fn istiod_dns(namespace: &str) -> Vec<String> {
        vec![format!(".{namespace}.svc")]
    }

    /// Checks every subtree.
    pub fn validate(&self) -> Result<(), ConstraintError> {
        if self.permitted_uri_hosts.is_empty() && self.permitted_dns.is_empty() {
            return Err(ConstraintError::Empty);
        }
        // URI hosts come from a TrustDomain, already checked; DNS subtrees from config.
        for d in &self.permitted_dns {
            let bare = d.strip_prefix('.').unwrap_or(d);
            let ok = !bare.is_empty()
                && bare.len() <= 253
                && bare.split('.').all(|l| {
                    !l.is_empty()
                        && l.len() <= 63
                        && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                        && !l.starts_with('-')
                        && !l.ends_with('-')
                });
            if !ok {
                return Err(ConstraintError::BadDnsSubtree(d.chars().take(80).collect()));
            }
        }
        Ok(())
    }

    /// The extension's value: `NameConstraints ::= SEQUENCE { permittedSubtrees [0]
    /// GeneralSubtrees }`, each `GeneralSubtree ::= SEQUENCE { base GeneralName }` with
    /// `uniformResourceIdentifier [6]` or `dNSName [2]` (IA5String, implicitly tagged).
    pub fn to_der(&self) -> Result<Vec<u8>, ConstraintError> {
        self.validate()?;
        let mut subtrees = Vec::new();
        for host in &self.permitted_uri_hosts {
            subtrees.extend(tlv(0x30, &tlv(0x86, host.as_bytes())));
        }
        for dns in &self.permitted_dns {
            subtrees.extend(tlv(0x30, &tlv(0x82, dns.to_ascii_lowercase().as_bytes())));
        }
        Ok(tlv(0x30, &tlv(0xa0, &subtrees)))
    }

    /// As an rcgen extension, marked critical as RFC 5280 requires.
    pub fn to_extension(&self) -> Result<rcgen::CustomExtension, ConstraintError> {
        let mut ext = rcgen::CustomExtension::from_oid_content(OID, self.to_der()?);
        ext.set_criticality(true);
        Ok(ext)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use x509_parser::extensions::{GeneralName, NameConstraints as Parsed};
    use x509_parser::prelude::FromDer;

    #[test]
    fn encodes_what_x509_parser_reads_back() {
        let td = "mesh.example".parse::<TrustDomain>().unwrap();
        let nc = NameConstraints::mesh(&td, &NameConstraints::istiod_dns("istio-system"));
        let der = nc.to_der().unwrap();
        let (rest, parsed) = Parsed::from_der(&der).unwrap();
        assert!(rest.is_empty());
        assert!(parsed.excluded_subtrees.is_none());
        let names: Vec<String> = parsed
            .permitted_subtrees
            .unwrap()
            .iter()
            .map(|s| match &s.base {
                GeneralName::URI(u) => format!("uri:{u}"),
                GeneralName::DNSName(d) => format!("dns:{d}"),
                other => format!("{other:?}"),
            })
            .collect();
        assert_eq!(names, ["uri:mesh.example", "dns:.istio-system.svc"]);
    }

    #[test]
    fn long_values_use_long_form_lengths() {
        let long = format!("{}.example", "a".repeat(60));
        let nc = NameConstraints {
            permitted_uri_hosts: vec![],
            permitted_dns: vec![long.clone(), long.clone(), long],
        };
        let der = nc.to_der().unwrap();
        assert_eq!(der[1], 0x81, "outer length takes one extra byte");
        let (_, parsed) = Parsed::from_der(&der).unwrap();
        assert_eq!(parsed.permitted_subtrees.unwrap().len(), 3);
    }

    #[test]
    fn bad_subtrees_are_refused() {
        for bad in ["", ".", "a..b", "-a.svc", "a b", "*.svc", "x/y"] {
            let nc = NameConstraints {
                permitted_uri_hosts: vec![],
                permitted_dns: vec![bad.into()],
            };
            assert!(nc.to_der().is_err(), "{bad:?} accepted");
        }
        let empty = NameConstraints {
            permitted_uri_hosts: vec![],
            permitted_dns: vec![],
        };
        assert_eq!(empty.to_der(), Err(ConstraintError::Empty));
    }
}
