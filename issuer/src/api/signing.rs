//! `POST /v1/sign`: a CSR in, a certificate out.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;
use canopy::cert::Certificate;
use serde::{Deserialize, Serialize};

use super::extract::{ApiJson, AuthenticatedToSign};
use super::pem::{pem_response, rfc3339, wants_pem};
use super::{ApiError, AppState};
use crate::error_code::ErrorCode;
use crate::issuance::{Issued, SignRequest};

/// The codes the sign handler answers with, besides authentication's.
pub(super) const ERRORS: &[ErrorCode] = &[
    ErrorCode::UnsupportedMediaType,
    ErrorCode::BadJson,
    ErrorCode::BadTtl,
    ErrorCode::BadCsr,
    ErrorCode::CsrTooLarge,
    ErrorCode::BadCsrSignature,
    ErrorCode::BadCsrKey,
    ErrorCode::BadProfile,
    ErrorCode::BadUriSan,
    ErrorCode::TooManySpiffeIds,
    ErrorCode::BadSan,
    ErrorCode::BadDnsName,
    ErrorCode::UnknownIntermediate,
    ErrorCode::NoPolicy,
    ErrorCode::CaNotAllowed,
    ErrorCode::TtlTooShort,
    ErrorCode::ClusterNotAllowed,
    ErrorCode::ProfileNotAllowed,
    ErrorCode::IntermediateNotAllowed,
    ErrorCode::KeyTypeNotAllowed,
    ErrorCode::SpiffeIdNotAllowed,
    ErrorCode::SpiffeIdOutsideNamespace,
    ErrorCode::DnsNameNotAllowed,
    ErrorCode::DnsNameOutsideNamespace,
    ErrorCode::WildcardNotAllowed,
    ErrorCode::IpAddressNotAllowed,
    ErrorCode::ReservedName,
    ErrorCode::RenewalWidens,
    ErrorCode::IdentityDenied,
    ErrorCode::IntermediateExpired,
    ErrorCode::SignerUnavailable,
    ErrorCode::Internal,
];

/// Body of `POST /v1/sign` (public so the fuzz target can feed it through [`ApiJson`]).
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "SignRequest")]
pub struct SignBody {
    /// PKCS#10 CSR, PEM.
    csr: String,
    /// `workload` (the default), `server` or `client`.
    #[serde(default)]
    #[schemars(extend("enum" = ["workload", "server", "client"], "default" = "workload"))]
    profile: Option<String>,
    /// Requested lifetime, like `1h`; capped by policy; minimum 10m.
    #[serde(default)]
    ttl: Option<String>,
    /// The intermediate to sign with, like `aws`.
    #[serde(default)]
    intermediate: Option<String>,
}

/// Answer of `POST /v1/sign`.
#[derive(Debug, Serialize, schemars::JsonSchema)]
#[schemars(rename = "SignResponse")]
pub struct Signed {
    /// Leaf, PEM.
    pub certificate: String,
    /// Leaf first, then intermediates; no root (PEM).
    pub chain: String,
    /// Trust anchors, PEM.
    pub roots: String,
    /// Serial, hex.
    pub serial: String,
    /// RFC 3339.
    #[schemars(extend("format" = "date-time"))]
    pub not_after: String,
    /// The certificate's SPIFFE ID.
    pub spiffe_id: Option<String>,
    /// The profile signed under.
    pub profile: String,
    /// The intermediate that signed.
    pub intermediate: String,
    /// Whether the lifetime asked for was cut by policy.
    pub ttl_capped: bool,
}

impl From<&Issued> for Signed {
    fn from(issued: &Issued) -> Self {
        // The chain starts with the leaf: its PEM is encoded once and used twice.
        let certificate = issued.certificate.to_pem();
        let chain = match issued.chain.split_first() {
            Some((leaf, above)) if *leaf == issued.certificate => {
                certificate.clone() + &Certificate::pem_of(above)
            }
            _ => Certificate::pem_of(&issued.chain),
        };
        Signed {
            certificate,
            chain,
            roots: issued.roots_pem.to_string(),
            serial: issued.serial.to_string(),
            not_after: rfc3339(issued.not_after),
            spiffe_id: issued.certificate.spiffe_id().map(|id| id.to_string()),
            profile: issued.profile.to_string(),
            intermediate: issued.intermediate.clone(),
            ttl_capped: issued.ttl_capped,
        }
    }
}

pub(super) async fn sign(
    State(state): State<AppState>,
    headers: HeaderMap,
    AuthenticatedToSign(requester): AuthenticatedToSign,
    ApiJson(body): ApiJson<SignBody>,
) -> Result<Response, ApiError> {
    let ttl = match &body.ttl {
        Some(t) => Some(t.parse().map_err(|e: canopy::ttl::TtlError| {
            state.metrics.fail(ErrorCode::BadTtl);
            ApiError::new(ErrorCode::BadTtl, e.to_string())
        })?),
        None => None,
    };
    let request =
        match SignRequest::parse(&body.csr, body.profile.as_deref(), ttl, body.intermediate) {
            Ok(request) => request,
            Err(e) => {
                let now = crate::clock::now();
                state.issuer.refused(&requester, &e, now).await;
                return Err(e.into());
            }
        };
    let issued = state.issuer.issue(&requester, request).await?;
    if wants_pem(&headers) {
        return Ok(pem_response(Certificate::pem_of(&issued.chain)));
    }
    Ok(Json(Signed::from(&issued)).into_response())
}
