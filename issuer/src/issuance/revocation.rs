//! Revocation: who may revoke which certificate, the revocation itself (audited, refused
//! ones too), and the deny list that keeps a revoked identity from renewing.

use std::str::FromStr;

use canopy::crl::RevocationReason;
use canopy::serial::Serial;
use canopy::spiffe::SpiffeId;
use serde_json::json;

use super::{IssueError, Issuer};
use crate::audit::{AuditEvent, Outcome};
use crate::auth::{AuthMethod, Requester};
use crate::error_code::ErrorCode;
use crate::policy;
use crate::store::{CertificateRecord, Revocation, Write};

impl Issuer {
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
    /// certificates are no mTLS identity) until it is allowed again ([`crate::store::Store::allow_identity`]).
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
}
