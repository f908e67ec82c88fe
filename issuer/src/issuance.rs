//! Issuing: the one path every certificate takes, whoever asks (the HTTP API with a
//! token, a service-account JWT or mTLS; cert-manager CertificateRequests; Kubernetes
//! CSRs). Each entry point parses its caller into a typed [`Requester`] and its input
//! into a [`SignRequest`] (the CSR parsed once) at the edge; then one pure decision
//! ([`policy::decide`]) → sign (the core parses the result back and checks it against
//! its profile) → record durably → return.

use std::collections::HashMap;
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Instant;

use canopy::ca::CaError;
use canopy::cert::Certificate;
use canopy::crl::{Crl, RevocationReason, RevokedEntry};
use canopy::csr::{Csr, CsrError};
use canopy::dns::{DnsName, Wildcards};
use canopy::profile::{LeafProfile, LeafRequest, Profile, ProfileError, Subject};
use canopy::serial::Serial;
use canopy::spiffe::{SpiffeId, TrustDomain};
use canopy::ttl::Ttl;
use serde_json::json;
use time::OffsetDateTime;

use crate::audit::{AuditEvent, Outcome};
use crate::auth::{AuthMethod, Requester};
use crate::config::Config;
use crate::error_code::ErrorCode;
use crate::intermediate::Authorities;
use crate::metrics::{Metrics, ProfileLabel};
use crate::names::ClusterName;
use crate::policy::{self, Ask, Policy};
use crate::recorder::Recorder;
use crate::store::{CertificateRecord, Revocation, Store, StoreError, Write};

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
fn dns_names(csr: &Csr) -> Result<Vec<DnsName>, IssueError> {
    csr.dns_names()
        .iter()
        .map(|name| DnsName::parse(name, Wildcards::Allowed))
        .collect::<Result<_, _>>()
        .map_err(|e| IssueError::bad(ErrorCode::BadDnsName, e.to_string()))
}

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

/// Why a request was not fulfilled. Messages are safe to return to the requester.
#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    /// Malformed or unacceptable input (400).
    #[error("{message}")]
    BadRequest {
        /// Stable code.
        code: ErrorCode,
        /// What is wrong.
        message: String,
    },
    /// Refused by policy (403).
    #[error("{message}")]
    Denied {
        /// Stable code.
        code: ErrorCode,
        /// Why.
        message: String,
    },
    /// No such record (404).
    #[error("{0}")]
    NotFound(String),
    /// The credential was revoked before the certificate could be recorded (401).
    #[error("{message}")]
    Unauthenticated {
        /// Stable code.
        code: ErrorCode,
        /// Why.
        message: String,
    },
    /// The CA cannot sign now (an expired intermediate) (503).
    #[error("{message}")]
    Unavailable {
        /// Stable code.
        code: ErrorCode,
        /// Why.
        message: String,
    },
    /// Storage failed; the request may be retried (503).
    #[error("storage unavailable, retry later")]
    Storage(#[source] StoreError),
    /// A bug or broken CA material; nothing was returned (500).
    #[error("internal error: {0}")]
    Internal(String),
}

impl IssueError {
    fn bad(code: ErrorCode, message: impl Into<String>) -> Self {
        IssueError::BadRequest {
            code,
            message: message.into(),
        }
    }

    /// Stable code for API errors and metrics.
    pub fn code(&self) -> ErrorCode {
        match self {
            IssueError::BadRequest { code, .. }
            | IssueError::Denied { code, .. }
            | IssueError::Unauthenticated { code, .. }
            | IssueError::Unavailable { code, .. } => *code,
            IssueError::NotFound(_) => ErrorCode::NotFound,
            IssueError::Storage(_) => ErrorCode::StorageUnavailable,
            IssueError::Internal(_) => ErrorCode::Internal,
        }
    }
}

impl From<StoreError> for IssueError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => IssueError::NotFound("no such certificate".into()),
            StoreError::RevokedToken => IssueError::Unauthenticated {
                code: ErrorCode::UnknownToken,
                message: StoreError::RevokedToken.to_string(),
            },
            e @ StoreError::DeniedIdentity(_) => IssueError::Denied {
                code: ErrorCode::IdentityDenied,
                message: e.to_string(),
            },
            other => IssueError::Storage(other),
        }
    }
}

/// The error of a CSR that does not parse or verify.
pub fn csr_error(e: CsrError) -> IssueError {
    let code = match e {
        CsrError::TooLarge => ErrorCode::CsrTooLarge,
        CsrError::BadSignature => ErrorCode::BadCsrSignature,
        CsrError::Key(_) => ErrorCode::BadCsrKey,
        CsrError::NotPem | CsrError::Malformed(_) => ErrorCode::BadCsr,
    };
    IssueError::bad(code, e.to_string())
}

/// The answer of the CA to a sign request the policy allowed: `ca` did not sign.
fn signing_error(e: CaError, intermediate: &str) -> IssueError {
    match e {
        CaError::Profile(ProfileError::CheckFailed(problems)) => IssueError::Internal(format!(
            "signed certificate failed its profile check: {}",
            problems.join("; ")
        )),
        CaError::Profile(ProfileError::IssuerExpired { .. }) => IssueError::Unavailable {
            code: ErrorCode::IntermediateExpired,
            message: format!(
                "intermediate {intermediate} has expired: it must be renewed before it can sign"
            ),
        },
        CaError::SignerUnavailable => IssueError::Unavailable {
            code: ErrorCode::SignerUnavailable,
            message: format!(
                "the key of intermediate {intermediate} cannot be reached now (its token is missing); nothing was issued, retry"
            ),
        },
        CaError::Profile(p) => IssueError::bad(ErrorCode::BadRequest, p.to_string()),
        CaError::CaRequested => IssueError::Denied {
            code: ErrorCode::CaNotAllowed,
            message: e.to_string(),
        },
        other => IssueError::Internal(other.to_string()),
    }
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

    /// Counts and audits a refused or failed sign request (before or inside [`Self::issue`]).
    pub async fn refused(&self, requester: &Requester, e: &IssueError, now: OffsetDateTime) {
        let outcome = match e {
            IssueError::Denied { .. } | IssueError::Unauthenticated { .. } => Outcome::Denied,
            IssueError::BadRequest { .. } | IssueError::NotFound(_) => Outcome::Rejected,
            IssueError::Storage(_) | IssueError::Internal(_) | IssueError::Unavailable { .. } => {
                Outcome::Failed
            }
        };
        // Storage being down is the one failure the audit log cannot take.
        let audit = !matches!(e, IssueError::Storage(_));
        let (code, message) = (e.code().as_str(), e.to_string());
        self.count_and_audit(requester, outcome, code, &message, now, audit)
            .await;
        if matches!(e, IssueError::Internal(_)) {
            tracing::error!(requester = %requester, error = %e, "sign failed");
        }
    }

    /// Counts and audits a sign request refused outside the API, under `reason`, a label
    /// of that path's own vocabulary (a Kubernetes condition reason).
    pub async fn refused_as(
        &self,
        requester: &Requester,
        outcome: Outcome,
        reason: &str,
        message: &str,
        now: OffsetDateTime,
    ) {
        self.count_and_audit(requester, outcome, reason, message, now, true)
            .await;
    }

    async fn count_and_audit(
        &self,
        requester: &Requester,
        outcome: Outcome,
        label: &str,
        message: &str,
        now: OffsetDateTime,
        audit: bool,
    ) {
        match outcome {
            Outcome::Denied => self.metrics.deny_as(label),
            _ => self.metrics.fail_as(label),
        }
        if !audit {
            return;
        }
        let event = AuditEvent::new(
            crate::clock::unix_ms(now),
            requester.to_string(),
            "sign",
            "",
            outcome,
            json!({"code": label, "reason": message, "auth": requester.method.as_str()}),
        );
        if let Err(store_error) = self.recorder.record(Write::Event(event)).await {
            tracing::warn!(error = %store_error, "could not audit a refused sign request");
        }
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

    /// Whether `requester` may revoke `record`: its own holder (same SPIFFE ID), an
    /// operator (a policy with `revoke: true` and no namespace: any serial, DNS-only
    /// certificates, mesh CAs and the listener's included), or a namespaced requester
    /// with `revoke: true` for its own namespace's certificates.
    fn may_revoke(&self, requester: &Requester, record: &CertificateRecord) -> bool {
        let own = record.spiffe_id.is_some()
            && requester.spiffe_id().map(ToString::to_string) == record.spiffe_id;
        if own {
            return true;
        }
        let revokers = policy::applicable(&self.policies, requester)
            .into_iter()
            .any(|p| p.config.revoke);
        if !revokers {
            return false;
        }
        match requester
            .namespace
            .as_ref()
            .filter(|_| requester.bound_to_namespace)
        {
            // An operator's token; a workload without a namespace only revokes its own.
            None => matches!(requester.method, AuthMethod::Token | AuthMethod::Internal),
            Some(ns) => {
                let in_ns = |id: &str| {
                    id.parse::<SpiffeId>()
                        .ok()
                        .and_then(|id| id.kubernetes_parts().map(|(n, _)| n == ns))
                        .unwrap_or(false)
                };
                record.spiffe_id.as_deref().is_some_and(in_ns)
            }
        }
    }

    /// Whether `requester` is an operator: a policy with `revoke: true`, no namespace.
    pub fn is_operator(&self, requester: &Requester) -> bool {
        requester.namespace.is_none()
            && matches!(requester.method, AuthMethod::Token | AuthMethod::Internal)
            && requester.renewal_of.is_none()
            && policy::applicable(&self.policies, requester)
                .iter()
                .any(|p| p.config.revoke)
    }

    /// Revokes a certificate (its holder, an operator, or a revoker of its namespace). With
    /// `deny_renewal`, an operator also puts its SPIFFE ID on the deny list, so a
    /// certificate renewed from it before the revocation cannot renew again.
    pub async fn revoke(
        &self,
        requester: &Requester,
        serial: &str,
        reason: Option<&str>,
        deny_renewal: bool,
    ) -> Result<Revocation, IssueError> {
        let now = crate::clock::now_precise();
        let serial: Serial = serial.parse().map_err(|e: canopy::serial::SerialError| {
            IssueError::bad(ErrorCode::BadSerial, e.to_string())
        })?;
        let reason = match reason {
            Some(r) => RevocationReason::from_str(r)
                .map_err(|e| IssueError::bad(ErrorCode::BadReason, e.to_string()))?,
            None => RevocationReason::Unspecified,
        };
        let serial = serial.to_string();
        let record = self.store.certificate(&serial).await?;
        let allowed =
            self.may_revoke(requester, &record) && (!deny_renewal || self.is_operator(requester));
        if !allowed {
            let message = if deny_renewal && self.may_revoke(requester, &record) {
                format!("{requester} may revoke certificate {serial} but only an operator may deny its SPIFFE ID renewal")
            } else {
                format!("{requester} may not revoke certificate {serial}")
            };
            let event = AuditEvent::new(
                crate::clock::unix_ms(now),
                requester.to_string(),
                "revoke",
                serial.clone(),
                Outcome::Denied,
                json!({"reason": message}),
            );
            if let Err(e) = self.recorder.record(Write::Event(event)).await {
                tracing::warn!(error = %e, "could not audit a refused revocation");
            }
            self.metrics.deny(ErrorCode::RevokeNotAllowed);
            return Err(IssueError::Denied {
                code: ErrorCode::RevokeNotAllowed,
                message,
            });
        }
        let event = AuditEvent::new(
            crate::clock::unix_ms(now),
            requester.to_string(),
            "revoke",
            serial.clone(),
            Outcome::Ok,
            json!({"reason": reason.to_string(), "spiffe_id": record.spiffe_id, "intermediate": record.intermediate, "not_after": record.not_after}),
        );
        let revocation = self
            .store
            .revoke(
                &serial,
                Some(&reason.to_string()),
                now.unix_timestamp(),
                event,
            )
            .await?;
        if deny_renewal {
            if let Some(id) = &record.spiffe_id {
                self.deny_identity(
                    requester,
                    id,
                    &format!("certificate {serial} revoked ({reason})"),
                )
                .await?;
            }
        }
        Ok(revocation)
    }

    /// Puts a SPIFFE ID on the deny list: nothing is issued for it (and its
    /// certificates are no mTLS identity) until it is allowed again ([`Store::allow_identity`]).
    pub async fn deny_identity(
        &self,
        requester: &Requester,
        spiffe_id: &str,
        reason: &str,
    ) -> Result<bool, IssueError> {
        let id: SpiffeId = spiffe_id
            .parse()
            .map_err(|e: canopy::spiffe::SpiffeError| {
                IssueError::bad(ErrorCode::BadSpiffeId, e.to_string())
            })?;
        let now = crate::clock::now_precise();
        let event = AuditEvent::new(
            crate::clock::unix_ms(now),
            requester.to_string(),
            "deny-identity",
            id.to_string(),
            Outcome::Ok,
            json!({"reason": reason}),
        );
        Ok(self
            .store
            .deny_identity(&id.to_string(), reason, now.unix_timestamp(), event)
            .await?)
    }

    /// The CRL of an intermediate. Signed again only when its revocations changed or
    /// its nextUpdate comes near; otherwise the cached one is served (a revocation on
    /// any replica shows at once, since the list is read from the database).
    pub async fn crl(&self, intermediate: &str) -> Result<Arc<Crl>, IssueError> {
        let now = crate::clock::now();
        let inter = self.authorities.get(intermediate).ok_or_else(|| {
            IssueError::NotFound(format!("unknown intermediate {intermediate:?}"))
        })?;
        let revoked = self
            .store
            .revoked(intermediate, now.unix_timestamp())
            .await?;
        let mut entries = Vec::with_capacity(revoked.len());
        for r in revoked {
            let serial: Serial = r
                .serial
                .parse()
                .map_err(|_| IssueError::Internal("stored serial is malformed".into()))?;
            entries.push(RevokedEntry {
                serial,
                revoked_at: OffsetDateTime::from_unix_timestamp(r.revoked_at)
                    .map_err(|_| IssueError::Internal("stored time is malformed".into()))?,
                reason: r
                    .reason
                    .as_deref()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(RevocationReason::Unspecified),
            });
        }
        if let Some(crl) = self.crls.get(intermediate, &entries, now) {
            return Ok(crl);
        }
        // Milliseconds since the epoch: increases across restarts and replicas.
        let number = u64::try_from(crate::clock::unix_ms(now)).unwrap_or_default();
        let this_update = now - time::Duration::seconds(60);
        let next_update = now + CRL_VALIDITY;
        let crl = Arc::new(
            inter
                .ca
                .sign_crl(&entries, number, this_update, next_update)
                .map_err(|e| IssueError::Internal(e.to_string()))?,
        );
        self.metrics.crl_signed();
        self.crls
            .put(intermediate, entries, next_update, crl.clone());
        Ok(crl)
    }
}

/// How long a CRL is valid (its nextUpdate).
const CRL_VALIDITY: time::Duration = time::Duration::hours(1);
/// A cached CRL is signed again this long before its nextUpdate.
const CRL_REFRESH_BEFORE: time::Duration = time::Duration::minutes(15);

/// The last CRL signed per intermediate and the entries it lists.
#[derive(Debug, Default)]
struct CrlCache {
    by_intermediate: std::sync::Mutex<HashMap<String, CachedCrl>>,
}

#[derive(Debug)]
struct CachedCrl {
    entries: Vec<RevokedEntry>,
    next_update: OffsetDateTime,
    crl: Arc<Crl>,
}

impl CrlCache {
    fn get(
        &self,
        intermediate: &str,
        entries: &[RevokedEntry],
        now: OffsetDateTime,
    ) -> Option<Arc<Crl>> {
        let cache = self
            .by_intermediate
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        cache
            .get(intermediate)
            .filter(|c| c.entries == entries && now < c.next_update - CRL_REFRESH_BEFORE)
            .map(|c| c.crl.clone())
    }

    fn put(
        &self,
        intermediate: &str,
        entries: Vec<RevokedEntry>,
        next_update: OffsetDateTime,
        crl: Arc<Crl>,
    ) {
        let mut cache = self
            .by_intermediate
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        cache.insert(
            intermediate.to_string(),
            CachedCrl {
                entries,
                next_update,
                crl,
            },
        );
    }
}
