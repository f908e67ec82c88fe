//! Issuing: the one path every certificate takes, whoever asks (the HTTP API with a
//! token, a service-account JWT or mTLS; cert-manager CertificateRequests; Kubernetes
//! CSRs). Each entry point parses its caller into a typed [`Requester`] and its input
//! into a [`SignRequest`] (the CSR parsed once) at the edge; then one pure decision
//! ([`policy::decide`]) → sign (the core parses the result back and checks it against
//! its profile) → record durably → return.
//!
//! The files: `request.rs` (the request parsed at the edge), `error.rs` (why a request
//! was not fulfilled), `refusal.rs` (refusals counted and audited), `revocation.rs` (who
//! may revoke, the deny list), `crl.rs` (the CRLs, cached).

mod crl;
mod error;
mod refusal;
mod request;
mod revocation;

pub use error::{csr_error, IssueError};
pub use request::SignRequest;

use std::collections::HashMap;
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Instant;

use canopy::cert::Certificate;
use canopy::profile::{LeafProfile, LeafRequest, Profile, Subject};
use canopy::serial::Serial;
use canopy::spiffe::{SpiffeId, TrustDomain};
use serde_json::json;
use time::OffsetDateTime;

use crate::audit::{AuditEvent, Outcome};
use crate::auth::Requester;
use crate::config::Config;
use crate::error_code::ErrorCode;
use crate::intermediate::Authorities;
use crate::metrics::{Metrics, ProfileLabel};
use crate::names::ClusterName;
use crate::policy::{self, Ask, Policy};
use crate::recorder::Recorder;
use crate::store::{CertificateRecord, Store, Write};
use crl::CrlCache;
use error::signing_error;
use request::dns_names;

/// A signed and recorded certificate.
#[derive(Clone, Debug)]
pub struct Issued {
    /// The certificate.
    pub certificate: Certificate,
    /// Leaf first, then the intermediates; no root.
    pub chain: Vec<Certificate>,
    /// Trust anchors, PEM.
    pub roots_pem: Arc<str>,
    /// Its serial.
    pub serial: Serial,
    /// Its notAfter.
    pub not_after: OffsetDateTime,
    /// Profile it was issued under.
    pub profile: Profile,
    /// Intermediate that signed it.
    pub intermediate: String,
    /// Whether the requested TTL was cut (by policy or by the intermediate's expiry).
    pub ttl_capped: bool,
}

/// A certificate just signed, with what the ledger records beside it.
struct Signed<'a> {
    cert: &'a Certificate,
    spiffe_id: Option<&'a SpiffeId>,
    intermediate: &'a str,
    profile: Profile,
    policy: &'a str,
}

impl Signed<'_> {
    /// The certificate's record and the audit event committed with it.
    fn ledger_entry(
        &self,
        requester: &Requester,
        now: OffsetDateTime,
    ) -> (CertificateRecord, AuditEvent) {
        let record = CertificateRecord {
            spiffe_id: self.spiffe_id.map(ToString::to_string),
            cluster: requester.cluster.as_ref().map(ToString::to_string),
            namespace: requester.namespace.clone(),
            token_id: requester.token_id.clone(),
            ..CertificateRecord::new(
                self.cert,
                self.intermediate,
                &self.profile.to_string(),
                &requester.to_string(),
                requester.method.as_str(),
                now.unix_timestamp(),
            )
        };
        let event = AuditEvent::new(
            crate::clock::unix_ms(now),
            requester.to_string(),
            "sign",
            self.cert.serial().to_string(),
            Outcome::Ok,
            json!({
                "profile": self.profile.to_string(),
                "intermediate": self.intermediate,
                "spiffe_id": record.spiffe_id,
                "dns_names": record.dns_names,
                "not_after": record.not_after,
                "policy": self.policy,
                "auth": requester.method.as_str(),
                "fingerprint": record.fingerprint,
            }),
        );
        (record, event)
    }
}

/// The signing service: CAs, policies, storage, audit, metrics.
#[derive(Debug)]
pub struct Issuer {
    trust_domain: TrustDomain,
    authorities: Arc<Authorities>,
    policies: Vec<Policy>,
    cluster_intermediates: HashMap<ClusterName, String>,
    reserved_dns: Vec<String>,
    reserved_ips: Vec<IpAddr>,
    crls: CrlCache,
    store: Store,
    recorder: Recorder,
    metrics: Arc<Metrics>,
}

impl Issuer {
    /// Builds the service; starts the recorder task on the current runtime.
    pub fn new(
        config: &Config,
        authorities: Arc<Authorities>,
        store: Store,
        metrics: Arc<Metrics>,
    ) -> Issuer {
        Issuer {
            trust_domain: config.trust_domain.clone(),
            authorities,
            policies: config
                .policies
                .iter()
                .cloned()
                .map(|config| Policy { config })
                .collect(),
            cluster_intermediates: config
                .clusters
                .iter()
                .map(|c| (c.name.clone(), c.intermediate.clone()))
                .collect(),
            reserved_dns: config.listen.server_names.clone(),
            reserved_ips: config.listen.server_ips.clone(),
            crls: CrlCache::default(),
            recorder: Recorder::start(store.clone()),
            store,
            metrics,
        }
    }

    /// The CAs.
    pub fn authorities(&self) -> &Arc<Authorities> {
        &self.authorities
    }

    /// The database.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The trust domain.
    pub fn trust_domain(&self) -> &TrustDomain {
        &self.trust_domain
    }

    /// Signs a CSR for `requester` if policy allows, records it durably, and only
    /// then returns it. Denials and rejections are audited with their reason.
    pub async fn issue(
        &self,
        requester: &Requester,
        request: SignRequest,
    ) -> Result<Issued, IssueError> {
        let started = Instant::now();
        let _in_flight = InFlight::begin(&self.metrics.signings_in_flight);
        let now = crate::clock::now();
        let result = self.try_issue(requester, request, now).await;
        match &result {
            Ok(issued) => {
                self.metrics
                    .issued
                    .get_or_create(&ProfileLabel {
                        profile: issued.profile.to_string(),
                    })
                    .inc();
                self.metrics
                    .sign_duration
                    .observe(started.elapsed().as_secs_f64());
            }
            Err(e) => self.refused(requester, e, now).await,
        }
        result
    }

    fn rules<'a>(&'a self, intermediates: &'a [&'a str]) -> policy::Rules<'a> {
        policy::Rules {
            trust_domain: &self.trust_domain,
            policies: &self.policies,
            intermediates,
            default_intermediate: &self.authorities.default_intermediate().name,
            cluster_intermediates: &self.cluster_intermediates,
            reserved_dns: &self.reserved_dns,
            reserved_ips: &self.reserved_ips,
        }
    }

    /// Decides `request` for `requester` without signing: the names it would get, or
    /// the rule that refuses it. Pure apart from reading the CSR's SANs.
    pub fn decide(
        &self,
        requester: &Requester,
        request: &SignRequest,
    ) -> Result<(Option<SpiffeId>, policy::Decision), IssueError> {
        let csr = &request.csr;
        let mut spiffe_ids = Vec::new();
        for uri in csr.uris() {
            let id = SpiffeId::from_str(uri).map_err(|e| {
                IssueError::bad(
                    ErrorCode::BadUriSan,
                    format!(
                        "URI SAN {:?} is not a SPIFFE ID: {e}",
                        uri.chars().take(128).collect::<String>()
                    ),
                )
            })?;
            spiffe_ids.push(id);
        }
        if spiffe_ids.len() > 1 {
            return Err(IssueError::bad(
                ErrorCode::TooManySpiffeIds,
                "the CSR carries more than one SPIFFE ID; a certificate carries exactly one",
            ));
        }
        if !csr.emails().is_empty() {
            return Err(IssueError::bad(
                ErrorCode::BadSan,
                "e-mail SANs are not issued by canopy",
            ));
        }
        // No SPIFFE ID in the CSR: a workload gets its own identity.
        let spiffe_id = match spiffe_ids.pop() {
            Some(id) => Some(id),
            None if request.profile == Profile::Workload => requester.spiffe_id().cloned(),
            None => None,
        };
        dns_names(csr)?;
        let names = self.authorities.names();
        let ask = Ask {
            profile: request.profile,
            spiffe_id: spiffe_id.as_ref(),
            dns_names: csr.dns_names(),
            ip_addresses: csr.ip_addresses(),
            ttl: request.ttl,
            key_type: csr.key_type(),
            intermediate: request.intermediate.as_deref(),
            requests_ca: csr.requests_ca(),
        };
        let decision = policy::decide(requester, &ask, &self.rules(&names)).map_err(|d| {
            if d.rule == policy::Rule::UnknownIntermediate {
                IssueError::bad(d.code(), d.reason)
            } else {
                IssueError::Denied {
                    code: d.code(),
                    message: d.reason,
                }
            }
        })?;
        Ok((spiffe_id, decision))
    }

    async fn try_issue(
        &self,
        requester: &Requester,
        request: SignRequest,
        now: OffsetDateTime,
    ) -> Result<Issued, IssueError> {
        let (spiffe_id, grant) = self.decide(requester, &request)?;
        let profile = request.profile;
        let csr = request.csr;
        let intermediate = self
            .authorities
            .get(&grant.intermediate)
            .ok_or_else(|| IssueError::Internal("decided intermediate is not loaded".into()))?;
        // Wildcards get past `decide` only through a policy with `wildcards: true`.
        let dns_names = dns_names(&csr)?;
        let ip_addresses: Vec<IpAddr> = csr.ip_addresses().to_vec();

        // The CN is kept only when it repeats a DNS SAN the policy allowed: a free CN
        // would be a name nobody checked.
        let common_name = csr
            .subject_cn()
            .filter(|cn| {
                dns_names
                    .iter()
                    .any(|d| d.as_str().eq_ignore_ascii_case(cn))
            })
            .map(str::to_string);
        // `decide` refuses CA profiles; this only turns that into the type.
        let leaf_profile = LeafProfile::try_from(profile).map_err(|e| IssueError::Denied {
            code: ErrorCode::CaNotAllowed,
            message: e.to_string(),
        })?;
        let cert_request = LeafRequest {
            subject: Subject {
                common_name,
                organization: None,
            },
            spiffe_id: spiffe_id.clone(),
            trust_domain: Some(self.trust_domain.clone()),
            dns_names,
            ip_addresses,
            ttl: Some(grant.ttl),
            clamp_to_issuer: true,
            ..LeafRequest::new(leaf_profile)
        };
        let issued = intermediate
            .ca
            .issue_for_csr(&csr, &cert_request, now)
            .map_err(|e| signing_error(e, &intermediate.name))?;

        let cert = issued.certificate;
        let serial = cert.serial().clone();
        let signed = Signed {
            cert: &cert,
            spiffe_id: spiffe_id.as_ref(),
            intermediate: &intermediate.name,
            profile,
            policy: &grant.policy,
        };
        let (record, event) = signed.ledger_entry(requester, now);
        self.recorder
            .record(Write::Issued(Box::new(record), event))
            .await?;
        Ok(Issued {
            not_after: cert.not_after(),
            chain: issued.chain,
            roots_pem: self.authorities.roots_pem.clone(),
            serial,
            profile,
            intermediate: intermediate.name.clone(),
            ttl_capped: grant.ttl_capped || issued.clamped,
            certificate: cert,
        })
    }

    /// Whether the requester may read certificate records (a policy with `list: true`).
    pub fn may_list(&self, requester: &Requester) -> bool {
        policy::applicable(&self.policies, requester)
            .iter()
            .any(|p| p.config.list)
    }
}

/// One signing counted in `canopy_signings_in_flight` until dropped (answered, or the
/// request's task cancelled).
struct InFlight<'a>(&'a prometheus_client::metrics::gauge::Gauge);

impl<'a> InFlight<'a> {
    fn begin(gauge: &'a prometheus_client::metrics::gauge::Gauge) -> Self {
        gauge.inc();
        InFlight(gauge)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}
