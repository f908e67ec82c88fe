//! cert-manager's `CertificateRequest` (`cert-manager.io/v1`), the fields we read and
//! write, and the pure questions asked of it: is it ours, is it approved, is it done.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::crd::{IssuerKind, GROUP};

/// Reasons of the `Ready` condition cert-manager understands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// Waiting (approval, issuer, a transient error).
    Pending,
    /// Signed.
    Issued,
    /// Will never succeed.
    Failed,
    /// The request was denied by an approver.
    Denied,
}

impl Reason {
    /// The reason as written in the condition.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Pending => "Pending",
            Reason::Issued => "Issued",
            Reason::Failed => "Failed",
            Reason::Denied => "Denied",
        }
    }
}

/// What cert-manager (or istio-csr) asks for.
#[derive(CustomResource, Clone, Debug, Default, Deserialize, Serialize, JsonSchema)]
#[kube(
    group = "cert-manager.io",
    version = "v1",
    kind = "CertificateRequest",
    namespaced,
    status = "CertificateRequestStatus",
    schema = "disabled"
)]
#[serde(rename_all = "camelCase")]
pub struct CertificateRequestSpec {
    /// PEM CSR, base64 in JSON.
    #[serde(default)]
    pub request: String,
    /// Requested lifetime, a Go duration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<String>,
    /// Whether a CA certificate is asked for.
    #[serde(default, rename = "isCA", skip_serializing_if = "Option::is_none")]
    pub is_ca: Option<bool>,
    /// Key usages and extended key usages, cert-manager's names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usages: Option<Vec<String>>,
    /// Which issuer should sign.
    pub issuer_ref: IssuerRef,
    /// Who created the request: written by cert-manager's webhook from the
    /// creator's credentials (not settable by the creator).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// The creator's groups (webhook-written, like `username`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    /// The creator's UID (webhook-written).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
}

/// `spec.issuerRef`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IssuerRef {
    /// Issuer name.
    #[serde(default)]
    pub name: String,
    /// `Issuer` (default) or `ClusterIssuer`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// API group of the issuer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
}

/// `status` of a CertificateRequest.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CertificateRequestStatus {
    /// `Approved`, `Denied`, `Ready`, `InvalidRequest`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<RequestCondition>,
    /// Leaf then intermediates, PEM, base64 in JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<String>,
    /// Root, PEM, base64 in JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<String>,
    /// When the request failed for good.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_time: Option<String>,
}

/// One condition of a CertificateRequest.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RequestCondition {
    /// Type.
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False`, `Unknown`.
    pub status: String,
    /// Reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When `status` changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<String>,
}

/// Where the approvers stand.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Approval {
    /// Neither approved nor denied yet.
    Waiting,
    /// `Approved=True`.
    Approved,
    /// `Denied=True`, with the approver's message.
    Denied(String),
}

impl CertificateRequest {
    /// The issuer kind it names, if it names one of ours (group ours, kind exact).
    pub fn our_issuer(&self) -> Option<IssuerKind> {
        let r = &self.spec.issuer_ref;
        if r.group.as_deref() != Some(GROUP) {
            return None;
        }
        IssuerKind::from_ref(r.kind.as_deref())
    }

    fn condition(&self, type_: &str) -> Option<&RequestCondition> {
        self.status
            .as_ref()?
            .conditions
            .iter()
            .find(|c| c.type_ == type_)
    }

    /// The `Ready` condition, if any.
    pub fn ready(&self) -> Option<&RequestCondition> {
        self.condition("Ready")
    }

    /// Approved, denied or neither. Denial wins over approval.
    pub fn approval(&self) -> Approval {
        if let Some(c) = self.condition("Denied").filter(|c| c.status == "True") {
            return Approval::Denied(c.message.clone().unwrap_or_default());
        }
        if self
            .condition("Approved")
            .is_some_and(|c| c.status == "True")
        {
            return Approval::Approved;
        }
        Approval::Waiting
    }

    /// Whether the request reached a final state (Issued, Failed, Denied): it is
    /// never signed again.
    pub fn is_finished(&self) -> bool {
        if self
            .status
            .as_ref()
            .is_some_and(|s| s.failure_time.is_some())
        {
            return true;
        }
        match self.ready() {
            Some(c) if c.status == "True" => true,
            Some(c) if c.status == "False" => [Reason::Failed, Reason::Denied]
                .iter()
                .any(|r| c.reason.as_deref() == Some(r.as_str())),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cr(
        group: Option<&str>,
        kind: Option<&str>,
        conditions: &[(&str, &str, &str)],
    ) -> CertificateRequest {
        let mut cr = CertificateRequest::new(
            "x",
            CertificateRequestSpec {
                issuer_ref: IssuerRef {
                    name: "i".into(),
                    kind: kind.map(Into::into),
                    group: group.map(Into::into),
                },
                ..Default::default()
            },
        );
        cr.status = Some(CertificateRequestStatus {
            conditions: conditions
                .iter()
                .map(|(t, s, r)| RequestCondition {
                    type_: t.to_string(),
                    status: s.to_string(),
                    reason: Some(r.to_string()),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        });
        cr
    }

    #[test]
    fn only_our_group_and_exact_kinds() {
        assert_eq!(
            cr(Some(GROUP), None, &[]).our_issuer(),
            Some(IssuerKind::Issuer)
        );
        assert_eq!(
            cr(Some(GROUP), Some(""), &[]).our_issuer(),
            Some(IssuerKind::Issuer)
        );
        assert_eq!(
            cr(Some(GROUP), Some("ClusterIssuer"), &[]).our_issuer(),
            Some(IssuerKind::ClusterIssuer)
        );
        assert_eq!(
            cr(Some("cert-manager.io"), Some("Issuer"), &[]).our_issuer(),
            None
        );
        assert_eq!(cr(None, Some("Issuer"), &[]).our_issuer(), None);
        assert_eq!(
            cr(Some(GROUP), Some("Clusterissuer"), &[]).our_issuer(),
            None
        );
    }

    #[test]
    fn approval_and_finality() {
        assert_eq!(cr(Some(GROUP), None, &[]).approval(), Approval::Waiting);
        let approved = cr(Some(GROUP), None, &[("Approved", "True", "ok")]);
        assert_eq!(approved.approval(), Approval::Approved);
        assert!(!approved.is_finished());
        let denied = cr(
            Some(GROUP),
            None,
            &[("Approved", "True", ""), ("Denied", "True", "")],
        );
        assert!(matches!(denied.approval(), Approval::Denied(_)));
        assert!(cr(Some(GROUP), None, &[("Ready", "True", "Issued")]).is_finished());
        assert!(cr(Some(GROUP), None, &[("Ready", "False", "Failed")]).is_finished());
        assert!(cr(Some(GROUP), None, &[("Ready", "False", "Denied")]).is_finished());
        assert!(!cr(Some(GROUP), None, &[("Ready", "False", "Pending")]).is_finished());
    }
}
