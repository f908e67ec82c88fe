//! Refusals are counted and audited: a sign request refused by policy, rejected as
//! malformed or failed inside the issuer leaves an audit entry with its code and reason.

use serde_json::json;
use time::OffsetDateTime;

use super::{IssueError, Issuer};
use crate::audit::{AuditEvent, Outcome};
use crate::auth::Requester;
use crate::store::Write;

impl Issuer {
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
}
