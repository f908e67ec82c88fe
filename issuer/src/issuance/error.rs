//! Why a sign, revocation or CRL request was not fulfilled, each with its stable
//! [`ErrorCode`]; messages are safe to return to the requester.

use canopy::ca::CaError;
use canopy::csr::CsrError;
use canopy::profile::ProfileError;

use crate::error_code::ErrorCode;
use crate::store::StoreError;

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
    pub(super) fn bad(code: ErrorCode, message: impl Into<String>) -> Self {
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
pub(super) fn signing_error(e: CaError, intermediate: &str) -> IssueError {
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
