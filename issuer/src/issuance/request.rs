//! A sign request as the issuer takes it: the CSR parsed and its signature verified once,
//! at the edge.

use std::str::FromStr;

use canopy::csr::Csr;
use canopy::dns::{DnsName, Wildcards};
use canopy::profile::Profile;
use canopy::ttl::Ttl;

use super::error::{csr_error, IssueError};
use crate::error_code::ErrorCode;

/// What a requester asks to be signed, parsed at the edge.
#[derive(Clone, Debug)]
pub struct SignRequest {
    /// The CSR, its signature verified. The key stays with the requester.
    pub csr: Csr,
    /// Profile.
    pub profile: Profile,
    /// Requested lifetime (default 24 h, capped by policy).
    pub ttl: Option<Ttl>,
    /// Intermediate to sign with (default: the requester's cluster's, else the default).
    pub intermediate: Option<String>,
}

impl SignRequest {
    /// Parses the API's fields: a PEM CSR and a profile name (default `workload`).
    pub fn parse(
        csr_pem: &str,
        profile: Option<&str>,
        ttl: Option<Ttl>,
        intermediate: Option<String>,
    ) -> Result<SignRequest, IssueError> {
        let profile = Profile::from_str(profile.unwrap_or("workload"))
            .map_err(|e| IssueError::bad(ErrorCode::BadProfile, e.to_string()))?;
        let csr = Csr::from_pem(csr_pem).map_err(csr_error)?;
        Ok(SignRequest {
            csr,
            profile,
            ttl,
            intermediate,
        })
    }
}

/// The CSR's DNS names as [`DnsName`]s (wildcards parse; policy decides whether they pass).
pub(super) fn dns_names(csr: &Csr) -> Result<Vec<DnsName>, IssueError> {
    csr.dns_names()
        .iter()
        .map(|name| DnsName::parse(name, Wildcards::Allowed))
        .collect::<Result<_, _>>()
        .map_err(|e| IssueError::bad(ErrorCode::BadDnsName, e.to_string()))
}
