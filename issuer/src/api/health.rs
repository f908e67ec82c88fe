//! Probes, metrics, the Istio sync's report, this API's own description and the
//! answers for routes and methods it does not serve.

use std::time::Duration;

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use serde_json::Value;

use super::extract::Authenticated;
use super::inventory::require_list;
use super::pem::rfc3339;
use super::{ApiError, AppState};
use crate::error_code::ErrorCode;
use crate::metrics::IntermediateLabel;

/// The codes the status handler answers with, besides authentication's.
pub(super) const STATUS_ERRORS: &[ErrorCode] = &[ErrorCode::ListNotAllowed, ErrorCode::NotReady];

/// Answer of `/healthz` and `/readyz`.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct Health {
    /// `ok` (alive) or `ready`.
    pub status: &'static str,
}

/// How long `/readyz` waits for the database to answer.
const READY_PING_TIMEOUT: Duration = Duration::from_millis(800);

pub(super) async fn openapi() -> Json<Value> {
    Json(crate::openapi::document())
}

pub(super) async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

pub(super) async fn readyz(State(state): State<AppState>) -> Result<Json<Health>, ApiError> {
    let now = crate::clock::now_precise();
    let not_ready = |message: String| ApiError::new(ErrorCode::NotReady, message);
    // A database that does not answer in time is down: answer 503 inside the kubelet
    // probe's default 1 s timeout instead of timing the probe out.
    let ping = tokio::time::timeout(READY_PING_TIMEOUT, state.issuer.store().ping()).await;
    if !matches!(ping, Ok(Ok(()))) {
        return Err(not_ready("storage is not reachable".into()));
    }
    for inter in state.issuer.authorities().all() {
        if inter.not_after <= now {
            return Err(not_ready(format!(
                "intermediate {} expired at {}",
                inter.name,
                rfc3339(inter.not_after)
            )));
        }
    }
    // A key on a token that went away: not ready until it is back (checked off the
    // async threads: a token may be slow to answer).
    for inter in state.issuer.authorities().all() {
        let held = inter.clone();
        let checked = tokio::time::timeout(
            READY_PING_TIMEOUT,
            tokio::task::spawn_blocking(move || held.ca.check_signer()),
        )
        .await;
        let problem = match checked {
            Ok(Ok(Ok(()))) => continue,
            Ok(Ok(Err(e))) => e.to_string(),
            _ => "its key did not answer in time".to_string(),
        };
        return Err(not_ready(format!("intermediate {}: {problem}", inter.name)));
    }
    if let Some(istio) = &state.istio {
        if let Err(lines) = istio.readiness(crate::clock::now()) {
            return Err(not_ready(lines.join("; ")));
        }
    }
    Ok(Json(Health { status: "ready" }))
}

/// Per cluster: roots trusted, mesh CA serial and expiry, rotation phase, problems found
/// (from the last cacerts sync pass). Needs a policy with `list: true`.
pub(super) async fn istio_status(
    State(state): State<AppState>,
    Authenticated(requester): Authenticated,
) -> Result<Json<Value>, ApiError> {
    require_list(&state, &requester)?;
    match state.istio.as_ref().and_then(|h| h.last()) {
        Some(report) => Ok(Json(report.to_json())),
        None => Err(ApiError::new(
            ErrorCode::NotReady,
            if state.istio.is_some() {
                "no cacerts sync pass has run yet"
            } else {
                "no cluster in the config has istio settings"
            },
        )),
    }
}

pub(super) async fn metrics(State(state): State<AppState>) -> Response {
    let now = crate::clock::now_precise();
    for inter in state.issuer.authorities().all() {
        state
            .metrics
            .intermediate_expiry
            .get_or_create(&IntermediateLabel {
                intermediate: inter.name.clone(),
            })
            .set((inter.not_after - now).whole_seconds());
    }
    (
        [(
            CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
        .into_response()
}

pub(super) async fn not_found() -> ApiError {
    ApiError::new(super::NO_ROUTE, "no such route (see /v1/openapi.json)")
}

pub(super) async fn method_not_allowed() -> ApiError {
    ApiError::new(
        ErrorCode::MethodNotAllowed,
        "method not allowed on this route",
    )
}
