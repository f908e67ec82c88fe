//! pkictl's one error type: a message that says what to do, and whose fault it was.

use std::fmt::Display;

use canopy::ca::CaError;
use canopy::cert::CertError;
use canopy::key::KeyError;
use canopy::profile::ProfileError;

/// Why a command failed; decides the exit code (1 user, 2 internal).
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Bad input, wrong passphrase, a refusal: the user can fix it.
    #[error("{0}")]
    User(String),
    /// Something that should not happen (signing failed, disk full).
    #[error("internal error: {0}")]
    Internal(String),
}

/// Result of a pkictl operation.
pub type Result<T, E = CliError> = std::result::Result<T, E>;

impl CliError {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            CliError::User(_) => 1,
            CliError::Internal(_) => 2,
        }
    }
}

/// A user error with the given message.
pub fn user(msg: impl Display) -> CliError {
    CliError::User(msg.to_string())
}

/// An internal error with the given message.
pub fn internal(msg: impl Display) -> CliError {
    CliError::Internal(msg.to_string())
}

impl From<KeyError> for CliError {
    fn from(e: KeyError) -> Self {
        match e {
            KeyError::Generation(_) | KeyError::Encryption => internal(e),
            _ => user(e),
        }
    }
}

impl From<CertError> for CliError {
    fn from(e: CertError) -> Self {
        user(e)
    }
}

impl From<ProfileError> for CliError {
    fn from(e: ProfileError) -> Self {
        match e {
            ProfileError::CheckFailed(_) => internal(e),
            ProfileError::PastIssuerExpiry {
                requested,
                issuer_not_after,
            } => user(format!(
                "requested notAfter {} is past the root's notAfter {}: pass a shorter --ttl, or --clamp to cut it to the root's",
                crate::output::rfc3339(requested),
                crate::output::rfc3339(issuer_not_after)
            )),
            ProfileError::IssuerExpired { not_after } => user(format!(
                "the root expired at {}: make a new root (pkictl init-root) and rotate",
                crate::output::rfc3339(not_after)
            )),
            other => user(other),
        }
    }
}

impl From<CaError> for CliError {
    fn from(e: CaError) -> Self {
        match e {
            CaError::Profile(p) => p.into(),
            CaError::Key(k) => k.into(),
            CaError::Cert(c) => c.into(),
            CaError::KeyMismatch => user(
                "the root key does not match root-cert.pem: the root directory is inconsistent",
            ),
            CaError::NotCa
            | CaError::CaRequested
            | CaError::CrossSignRefused(_)
            | CaError::SignerUnavailable => user(e),
            CaError::Crl(_) | CaError::Signing(_) | CaError::PlanForAnotherIssuer => internal(e),
        }
    }
}
