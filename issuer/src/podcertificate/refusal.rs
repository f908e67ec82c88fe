//! Why a PodCertificateRequest ends without a certificate: the terminal condition
//! ([`Verdict`]), its reason ([`Reason`], the one place the wire strings live) and a
//! message that tells the pod's owner what to change.

use super::resource::{DENIED, FAILED};

/// Which terminal condition a refusal writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// `Denied`: the signer will not issue this request, ever.
    Denied,
    /// `Failed`: the signer could not issue it (configuration, CA, gave up retrying).
    Failed,
}

impl Verdict {
    /// The condition type.
    pub fn condition(self) -> &'static str {
        match self {
            Verdict::Denied => DENIED,
            Verdict::Failed => FAILED,
        }
    }
}

/// The reason of a PodCertificateRequest's condition: CamelCase, as the API requires.
/// The wire strings live here and nowhere else.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// Issued.
    Issued,
    /// The stub request's signature does not verify.
    InvalidProofOfPossession,
    /// A key type the signer does not issue for (the API defines this reason).
    UnsupportedKeyType,
    /// The stub request cannot be read.
    InvalidStubPKCS10Request,
    /// The stub request carries names or a CA request.
    NonEmptyStubPKCS10Request,
    /// `unverifiedUserAnnotations` the signer does not accept (the API defines this reason).
    InvalidUnverifiedUserAnnotations,
    /// The request does not match the API server's pod, service account or node.
    IdentityMismatch,
    /// The pod is gone.
    PodNotFound,
    /// The pod mounts no podCertificate volume for this signer.
    NoPodCertificateVolume,
    /// The lifetime is shorter than the API accepts.
    LifetimeTooShort,
    /// The policy refused.
    PolicyDenied,
    /// The issuance path refused the request as malformed.
    BadRequest,
    /// The CA cannot sign now.
    SignerUnavailable,
    /// A bug or broken CA material.
    InternalError,
    /// Transient errors lasted past the maximum retry duration.
    GaveUpRetrying,
    /// The API server refused the status with the issued certificate.
    StatusRejected,
}

impl Reason {
    /// The reason as written in the condition.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Issued => "Issued",
            Reason::InvalidProofOfPossession => "InvalidProofOfPossession",
            Reason::UnsupportedKeyType => "UnsupportedKeyType",
            Reason::InvalidStubPKCS10Request => "InvalidStubPKCS10Request",
            Reason::NonEmptyStubPKCS10Request => "NonEmptyStubPKCS10Request",
            Reason::InvalidUnverifiedUserAnnotations => "InvalidUnverifiedUserAnnotations",
            Reason::IdentityMismatch => "IdentityMismatch",
            Reason::PodNotFound => "PodNotFound",
            Reason::NoPodCertificateVolume => "NoPodCertificateVolume",
            Reason::LifetimeTooShort => "LifetimeTooShort",
            Reason::PolicyDenied => "PolicyDenied",
            Reason::BadRequest => "BadRequest",
            Reason::SignerUnavailable => "SignerUnavailable",
            Reason::InternalError => "InternalError",
            Reason::GaveUpRetrying => "GaveUpRetrying",
            Reason::StatusRejected => "StatusRejected",
        }
    }
}

/// Why a request ends without a certificate: the condition, its reason and a
/// message that tells the pod's owner what to change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// Denied or Failed.
    pub verdict: Verdict,
    /// The condition's reason.
    pub reason: Reason,
    /// The condition's message.
    pub message: String,
}

impl Refusal {
    pub(crate) fn denied(reason: Reason, message: impl Into<String>) -> Self {
        Refusal {
            verdict: Verdict::Denied,
            reason,
            message: message.into(),
        }
    }

    pub(crate) fn failed(reason: Reason, message: impl Into<String>) -> Self {
        Refusal {
            verdict: Verdict::Failed,
            reason,
            message: message.into(),
        }
    }
}
