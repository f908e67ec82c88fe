//! `POST /v1/revoke`: revoke a certificate, by its holder or a policy with `revoke: true`.

use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};

use super::extract::{ApiJson, Authenticated};
use super::pem::unix_rfc3339;
use super::{ApiError, AppState};
use crate::error_code::ErrorCode;
use crate::store::Revocation;

/// The codes the revoke handler answers with, besides authentication's.
pub(super) const ERRORS: &[ErrorCode] = &[
    ErrorCode::UnsupportedMediaType,
    ErrorCode::BadJson,
    ErrorCode::BadSerial,
    ErrorCode::BadReason,
    ErrorCode::NotFound,
    ErrorCode::RevokeNotAllowed,
    ErrorCode::BadSpiffeId,
    ErrorCode::Internal,
];

/// Body of `POST /v1/revoke` (public so the fuzz target can feed it through [`ApiJson`]).
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "RevokeRequest")]
pub struct RevokeBody {
    /// Serial, hex.
    serial: String,
    /// RFC 5280 reason, like `key-compromise`; `unspecified` when left out.
    #[serde(default)]
    #[schemars(extend("enum" = ["unspecified", "key-compromise", "ca-compromise", "affiliation-changed", "superseded", "cessation-of-operation"]))]
    reason: Option<String>,
    /// Also put the certificate's SPIFFE ID on the deny list (operators only).
    #[serde(default)]
    deny_renewal: bool,
}

/// Answer of `POST /v1/revoke`.
#[derive(Debug, Serialize, schemars::JsonSchema)]
#[schemars(rename = "RevokeResponse")]
pub struct Revoked {
    /// Serial, hex.
    pub serial: String,
    /// RFC 3339.
    #[schemars(extend("format" = "date-time"))]
    pub revoked_at: Option<String>,
    /// RFC 5280 reason.
    pub reason: Option<String>,
    /// Whether it was revoked before this request.
    pub already_revoked: bool,
}

pub(super) async fn revoke(
    State(state): State<AppState>,
    Authenticated(requester): Authenticated,
    ApiJson(body): ApiJson<RevokeBody>,
) -> Result<Json<Revoked>, ApiError> {
    let outcome = state
        .issuer
        .revoke(
            &requester,
            &body.serial,
            body.reason.as_deref(),
            body.deny_renewal,
        )
        .await?;
    let (record, already) = match outcome {
        Revocation::Revoked(r) => (r, false),
        Revocation::AlreadyRevoked(r) => (r, true),
    };
    Ok(Json(Revoked {
        serial: record.serial,
        revoked_at: record.revoked_at.map(unix_rfc3339),
        reason: record.revocation_reason,
        already_revoked: already,
    }))
}
