//! What relying parties fetch: the roots, an intermediate's chain, the SPIFFE bundle
//! and an intermediate's CRL. No credential needed.

use axum::extract::{Path, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use serde_json::Value;

use super::pem::{pem_response, rfc3339, wants_pem};
use super::{ApiError, AppState};
use crate::error_code::ErrorCode;

/// Answer of `GET /v1/roots`.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct Roots {
    /// Trust anchors, PEM.
    pub roots: String,
}

/// Answer of `GET /v1/chain/{intermediate}`.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct Chain {
    /// The intermediate's name.
    pub intermediate: String,
    /// The intermediate and the certificates above it, without the root (PEM).
    pub chain: String,
    /// RFC 3339.
    #[schemars(extend("format" = "date-time"))]
    pub not_after: String,
}

pub(super) async fn roots(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let pem = state.issuer.authorities().roots_pem.to_string();
    if wants_pem(&headers) {
        return pem_response(pem);
    }
    Json(Roots { roots: pem }).into_response()
}

pub(super) async fn chain(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let inter = state
        .issuer
        .authorities()
        .get(&name)
        .ok_or_else(|| unknown_intermediate(&state, &name))?;
    if wants_pem(&headers) {
        return Ok(pem_response(inter.chain_pem.clone()));
    }
    Ok(Json(Chain {
        intermediate: inter.name.clone(),
        chain: inter.chain_pem.clone(),
        not_after: rfc3339(inter.not_after),
    })
    .into_response())
}

/// A path naming an intermediate this issuer does not hold: 404 (see [`super::Route::status`]).
fn unknown_intermediate(state: &AppState, name: &str) -> ApiError {
    ApiError::new(
        ErrorCode::UnknownIntermediate,
        format!(
            "unknown intermediate {:?} (this issuer has: {})",
            name.chars().take(64).collect::<String>(),
            state.issuer.authorities().names().join(", ")
        ),
    )
    .with_status(StatusCode::NOT_FOUND)
}

/// The SPIFFE bundle: a JWK Set built by the core library, whose shape the SPIFFE
/// specification fixes.
pub(super) async fn bundle(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let roots = &state.issuer.authorities().roots;
    // The newest root's notBefore: grows when a root is added during rotation.
    let sequence = roots
        .iter()
        .map(|r| r.not_before().unix_timestamp())
        .max()
        .unwrap_or(0)
        .max(0) as u64;
    canopy::bundle::spiffe_bundle_json(roots, sequence, 300)
        .map(Json)
        .map_err(|_| ApiError::new(ErrorCode::Internal, "cannot build the bundle"))
}

pub(super) async fn crl(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    if state.issuer.authorities().get(&name).is_none() {
        return Err(unknown_intermediate(&state, &name));
    }
    let crl = state.issuer.crl(&name).await?;
    if wants_pem(&headers) {
        return Ok(pem_response(crl.to_pem()));
    }
    Ok(([(CONTENT_TYPE, "application/pkix-crl")], crl.der().to_vec()).into_response())
}
