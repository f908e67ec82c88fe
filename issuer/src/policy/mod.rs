//! Policy: who may obtain which certificates (shared/contracts/authorization.md).
//! Deny by default; every denial names the rule that refused it, and that reason is
//! returned to the requester and written to the audit log.
//!
//! [`decide`] is the one decision every entry point goes through (HTTP API with a token,
//! a service-account JWT or mTLS, cert-manager CertificateRequests, Kubernetes CSRs):
//! requester × request × policies → the names granted, the TTL, the intermediate, or a
//! typed [`Denial`]. It is pure, so the whole authorization table is tested without I/O.
//!
//! Patterns are templates: `{namespace}`, `{sa}`, `{cluster}` stand for the
//! requester's own values and `{self}` for its SPIFFE ID. A requester with a namespace
//! gets, unless the policy says `bind_namespace: false`, only
//! `spiffe://TD/ns/{namespace}/...` identities and DNS names matched by a pattern that
//! spells `{namespace}` out.
//!
//! The files: `pattern.rs` (the templates and their matching), `decide.rs` (the decision
//! and the authorization table that tests it), `denial.rs` (the rule broken and its
//! code), `renewal.rs` (an mTLS renewal's bounds).

mod decide;
mod denial;
mod pattern;
mod renewal;

pub use decide::{decide, Ask, Decision, Rules, DEFAULT_TTL};
pub use denial::{Denial, Rule};
pub use pattern::{DnsMatch, DnsPattern, SpiffePattern, Vars};
pub use renewal::Presented;

use crate::auth::{PolicyScope, Requester};
use crate::config::PolicyConfig;

/// A loaded policy.
#[derive(Clone, Debug)]
pub struct Policy {
    /// The configuration it came from.
    pub config: PolicyConfig,
}

/// The policies `requester` is decided under: its bound policy, or those whose
/// `identities` match its SPIFFE ID.
pub fn applicable<'p>(policies: &'p [Policy], requester: &Requester) -> Vec<&'p Policy> {
    match &requester.scope {
        PolicyScope::Bound(name) => policies.iter().filter(|p| &p.config.name == name).collect(),
        PolicyScope::ByIdentity => {
            let Some(id) = requester.spiffe_id.as_ref() else {
                return Vec::new();
            };
            let who = Vars::of(requester);
            policies
                .iter()
                .filter(|p| p.config.identities.iter().any(|pat| pat.matches(id, &who)))
                .collect()
        }
    }
}
