//! Refusals: the rule a request broke, its stable code, and a reason a person can act on.

use crate::error_code::ErrorCode;

/// The rule a request broke.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rule {
    /// CA certificates are never issued to requesters.
    CaNotAllowed,
    /// Below the minimum lifetime.
    TtlTooShort,
    /// No policy applies to the requester.
    NoPolicy,
    /// The policy is limited to other clusters.
    ClusterNotAllowed,
    /// The policy does not allow the profile.
    ProfileNotAllowed,
    /// Unknown intermediate (a request error rather than a denial).
    UnknownIntermediate,
    /// Another cluster's intermediate, not listed by the policy.
    IntermediateNotAllowed,
    /// Key type refused.
    KeyTypeNotAllowed,
    /// SPIFFE ID outside the trust domain or the policy.
    SpiffeIdNotAllowed,
    /// SPIFFE ID of another namespace than the requester's.
    SpiffeIdOutsideNamespace,
    /// DNS name outside the policy.
    DnsNameNotAllowed,
    /// DNS name not under the requester's namespace.
    DnsNameOutsideNamespace,
    /// Wildcard DNS name where the policy has no `wildcards: true`.
    WildcardNotAllowed,
    /// IP address outside the policy.
    IpAddressNotAllowed,
    /// One of the issuer's own serving names.
    ReservedName,
    /// An mTLS renewal asking for more than the presented certificate carries.
    RenewalWidens,
}

impl Rule {
    /// Stable code (API errors, metrics, audit, cert-manager status messages).
    pub fn code(self) -> ErrorCode {
        match self {
            Rule::CaNotAllowed => ErrorCode::CaNotAllowed,
            Rule::TtlTooShort => ErrorCode::TtlTooShort,
            Rule::NoPolicy => ErrorCode::NoPolicy,
            Rule::ClusterNotAllowed => ErrorCode::ClusterNotAllowed,
            Rule::ProfileNotAllowed => ErrorCode::ProfileNotAllowed,
            Rule::UnknownIntermediate => ErrorCode::UnknownIntermediate,
            Rule::IntermediateNotAllowed => ErrorCode::IntermediateNotAllowed,
            Rule::KeyTypeNotAllowed => ErrorCode::KeyTypeNotAllowed,
            Rule::SpiffeIdNotAllowed => ErrorCode::SpiffeIdNotAllowed,
            Rule::SpiffeIdOutsideNamespace => ErrorCode::SpiffeIdOutsideNamespace,
            Rule::DnsNameNotAllowed => ErrorCode::DnsNameNotAllowed,
            Rule::DnsNameOutsideNamespace => ErrorCode::DnsNameOutsideNamespace,
            Rule::WildcardNotAllowed => ErrorCode::WildcardNotAllowed,
            Rule::IpAddressNotAllowed => ErrorCode::IpAddressNotAllowed,
            Rule::ReservedName => ErrorCode::ReservedName,
            Rule::RenewalWidens => ErrorCode::RenewalWidens,
        }
    }
}

/// A refusal: the rule and a reason a person can act on.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct Denial {
    /// The rule that refused.
    pub rule: Rule,
    /// Human-readable reason.
    pub reason: String,
}

impl Denial {
    pub(super) fn new(rule: Rule, reason: impl Into<String>) -> Self {
        Denial {
            rule,
            reason: reason.into(),
        }
    }

    /// Stable code.
    pub fn code(&self) -> ErrorCode {
        self.rule.code()
    }
}
