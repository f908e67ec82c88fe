//! The HTTP API (JSON, `/v1`). Handlers are thin: authenticate, parse, call the
//! [`Issuer`], shape the answer. Errors carry a stable `code` and a message that
//! never includes SQL, paths or key material.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts, Path, Query, Request, State};
use axum::http::header::{
    ACCEPT, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, EXPECT, RETRY_AFTER,
};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use canopy::cert::Certificate;
use canopy::serial::Serial;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tower_http::timeout::TimeoutLayer;

use crate::auth::{AuthError, Authenticator, Requester};
use crate::config::Limits;
use crate::issuance::{IssueError, Issuer, SignRequest};
use crate::metrics::{IntermediateLabel, Metrics};
use crate::ratelimit::RateLimiter;
use crate::store::{CertificateFilter, CertificateRecord, Cursor, Revocation};
use crate::tls::Peer;

/// Every route the API serves: (method, path). The OpenAPI document is checked
/// against this list, and the router is built to match it.
pub const ROUTES: &[(&str, &str)] = &[
    ("post", "/v1/sign"),
    ("get", "/v1/roots"),
    ("get", "/v1/chain/{intermediate}"),
    ("get", "/v1/bundle"),
    ("get", "/v1/crl/{intermediate}"),
    ("post", "/v1/revoke"),
    ("get", "/v1/certificates"),
    ("get", "/v1/certificates/{serial}"),
    ("get", "/v1/status"),
    ("get", "/v1/openapi.json"),
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/metrics"),
];

const PEM_TYPE: &str = "application/x-pem-file";

/// Shared state of the handlers.
#[derive(Clone, Debug)]
pub struct AppState {
    /// The signing service.
    pub issuer: Arc<Issuer>,
    /// Credential checks.
    pub auth: Arc<Authenticator>,
    /// Per-identity rate limit.
    pub limiter: Arc<RateLimiter>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// The Istio cacerts sync's health, when any cluster has `istio` settings.
    pub istio: Option<Arc<crate::istio::Health>>,
}

/// Builds the router with the limits that apply before any handler runs: the per-peer
/// rate limit, the body limit and the global budget of buffered bodies, the request
/// timeout.
pub fn router(state: AppState, limits: &Limits) -> Router {
    let request_timeout = Duration::from_secs(limits.request_timeout.as_seconds().max(1) as u64);
    let bodies = Arc::new(BodyBounds {
        limit: limits.body_bytes,
        budget: Arc::new(Semaphore::new(
            limits.buffered_body_bytes.min(Semaphore::MAX_PERMITS),
        )),
        drain: Drain {
            bytes: limits.body_bytes.saturating_mul(DRAIN_FACTOR),
            within: request_timeout,
        },
        metrics: state.metrics.clone(),
    });
    let peers = Arc::new(PeerLimit {
        limiter: RateLimiter::new(limits.peer_rate_per_second, limits.peer_burst),
        metrics: state.metrics.clone(),
        drain: bodies.drain,
    });
    Router::new()
        .route("/v1/sign", post(sign))
        .route("/v1/roots", get(roots))
        .route("/v1/chain/{intermediate}", get(chain))
        .route("/v1/bundle", get(bundle))
        .route("/v1/crl/{intermediate}", get(crl))
        .route("/v1/revoke", post(revoke))
        .route("/v1/certificates", get(certificates))
        .route("/v1/certificates/{serial}", get(certificate))
        .route("/v1/status", get(istio_status))
        .route("/v1/openapi.json", get(openapi))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(limits.body_bytes))
        .layer(axum::middleware::from_fn(
            move |req: Request, next: axum::middleware::Next| {
                buffer_body(bodies.clone(), req, next)
            },
        ))
        .layer(axum::middleware::from_fn(
            move |req: Request, next: axum::middleware::Next| limit_peer(peers.clone(), req, next),
        ))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            request_timeout,
        ))
        .with_state(state)
}

/// After an early answer, up to this many times `limits.body_bytes` of the rest of the
/// body is read and thrown away (see [`Drain`]).
const DRAIN_FACTOR: usize = 16;

/// How much of an unwanted body is read, and for how long, after an early answer.
///
/// An HTTP/2 stream whose request body is left unread ends with RST_STREAM (NO_ERROR,
/// RFC 9113 section 8.1) once the answer is sent; clients still sending, curl 7.88 among
/// them, report that reset (exit 92) instead of the answer. Reading the rest lets the
/// stream end cleanly, so a 413 or 429 reaches the client over HTTP/2 as over HTTP/1.1.
/// Beyond `bytes` or `within` the stream is reset after all: nobody makes the issuer
/// read an unbounded upload.
#[derive(Clone, Copy, Debug)]
struct Drain {
    bytes: usize,
    within: Duration,
}

impl Drain {
    /// Answers `response` now and reads the rest of `body` in the background, unless
    /// `headers` show the client waits for `100 Continue` (it will not send the body
    /// unless asked, and reading would ask) or declare more than the drain takes.
    fn answer(self, headers: &HeaderMap, body: axum::body::Body, response: Response) -> Response {
        let waits_for_continue = headers
            .get(EXPECT)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
        if waits_for_continue || declared_length(headers).is_some_and(|n| n > self.bytes as u64) {
            return response;
        }
        tokio::spawn(async move {
            use http_body_util::BodyExt as _;
            let mut body = body;
            let mut left = self.bytes;
            let _ = tokio::time::timeout(self.within, async {
                while let Some(Ok(frame)) = body.frame().await {
                    let n = frame.data_ref().map_or(0, |d| d.len());
                    if n > left {
                        return;
                    }
                    left -= n;
                }
            })
            .await;
        });
        response
    }
}

fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
}

/// The per-peer rate limit, taken before authentication or any body is read.
#[derive(Debug)]
struct PeerLimit {
    limiter: RateLimiter,
    metrics: Arc<Metrics>,
    drain: Drain,
}

/// Refuses requests over `limits.peer_rate_per_second`/`peer_burst` from one peer
/// address with 429 and `Retry-After`, before any credential is checked: a flood of bad
/// tokens or JWTs costs a bucket look-up each, not a database query or a signature check.
async fn limit_peer(peers: Arc<PeerLimit>, req: Request, next: axum::middleware::Next) -> Response {
    let Some(Peer(peer)) = req.extensions().get::<Peer>().copied() else {
        return next.run(req).await;
    };
    let Err(wait) = peers.limiter.check(&peer.to_string(), Instant::now()) else {
        return next.run(req).await;
    };
    peers.metrics.deny("peer_rate_limited");
    let mut err = ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "peer_rate_limited",
        format!("too many requests from {peer}; retry later"),
    );
    err.retry_after = Some(wait.as_secs_f64().ceil().max(1.0) as u64);
    let (parts, body) = req.into_parts();
    peers
        .drain
        .answer(&parts.headers, body, err.into_response())
}

/// The body limit and the global budget of buffered body bytes.
#[derive(Debug)]
struct BodyBounds {
    limit: usize,
    budget: Arc<Semaphore>,
    drain: Drain,
    metrics: Arc<Metrics>,
}

/// Reads the whole request body (at most `limit` bytes) before any handler runs.
///
/// A declared body over the limit is refused before it is read (and before a client
/// waiting on `Expect: 100-continue` sends it); an undeclared one when it passes the
/// limit. Reading the rest first means an early answer (401, 403, 429) is never sent
/// while the client is still sending: over HTTP/2 that answer would end with a
/// RST_STREAM, which some clients (curl 7.88) report as a failed transfer. For the
/// same reason a refused body is drained ([`Drain`]).
///
/// The bytes read are held against `limits.buffered_body_bytes`, shared by all requests:
/// this reading happens before authentication, so without the budget unauthenticated
/// clients could make the issuer hold connections × streams × body limit bytes. A body
/// that does not fit is answered 503 with `Retry-After`.
async fn buffer_body(
    bounds: Arc<BodyBounds>,
    req: Request,
    next: axum::middleware::Next,
) -> Response {
    use http_body_util::BodyExt as _;
    let (parts, mut body) = req.into_parts();
    if declared_length(&parts.headers).is_some_and(|n| n > bounds.limit as u64) {
        return bounds
            .drain
            .answer(&parts.headers, body, body_too_large().into_response());
    }
    let mut bytes = Vec::new();
    let mut held: Option<OwnedSemaphorePermit> = None;
    while let Some(frame) = body.frame().await {
        let data = match frame {
            Ok(frame) => match frame.into_data() {
                Ok(data) => data,
                Err(_) => continue, // trailers
            },
            Err(_) => {
                return ApiError::bad("bad_request", "the request body could not be read")
                    .into_response()
            }
        };
        if bytes.len() + data.len() > bounds.limit {
            return bounds
                .drain
                .answer(&parts.headers, body, body_too_large().into_response());
        }
        let permits = u32::try_from(data.len()).unwrap_or(u32::MAX);
        match bounds.budget.clone().try_acquire_many_owned(permits) {
            Ok(permit) => match &mut held {
                Some(h) => h.merge(permit),
                None => held = Some(permit),
            },
            Err(_) => {
                bounds.metrics.fail("body_budget_exhausted");
                let mut err = ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "busy",
                    "the issuer holds as many request bodies as it may; retry",
                );
                err.retry_after = Some(1);
                return bounds
                    .drain
                    .answer(&parts.headers, body, err.into_response());
            }
        }
        bytes.extend_from_slice(&data);
    }
    let response = next
        .run(Request::from_parts(parts, axum::body::Body::from(bytes)))
        .await;
    // The handler is done with the body: its bytes leave the budget.
    drop(held);
    response
}

fn body_too_large() -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "body_too_large",
        "request body is larger than the limit",
    )
}

/// An API error: HTTP status, stable code, safe message.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    retry_after: Option<u64>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    fn bad(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (
            self.status,
            Json(json!({"code": self.code, "message": self.message})),
        )
            .into_response();
        if let Some(secs) = self.retry_after {
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                response.headers_mut().insert(RETRY_AFTER, v);
            }
        }
        response
    }
}

impl From<IssueError> for ApiError {
    fn from(e: IssueError) -> Self {
        let status = match &e {
            IssueError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            IssueError::Denied { .. } => StatusCode::FORBIDDEN,
            IssueError::Unauthenticated { .. } => StatusCode::UNAUTHORIZED,
            IssueError::NotFound(_) => StatusCode::NOT_FOUND,
            IssueError::Storage(_) | IssueError::Unavailable { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            IssueError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let message = match &e {
            // Internal details go to the log and the audit entry, not to the caller.
            IssueError::Internal(_) => "internal error; the certificate was not issued".to_string(),
            other => other.to_string(),
        };
        let mut err = ApiError::new(status, e.code(), message);
        if status == StatusCode::SERVICE_UNAVAILABLE {
            err.retry_after = Some(1);
        }
        err
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::Storage(s) => IssueError::from(s).into(),
            other => ApiError::new(StatusCode::UNAUTHORIZED, other.code(), other.to_string()),
        }
    }
}

/// An authenticated, rate-limited requester.
#[derive(Debug)]
pub struct Authenticated(pub Requester);

impl FromRequestParts<AppState> for Authenticated {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        authenticate(parts, state, false).await.map(Authenticated)
    }
}

/// An authenticated, rate-limited requester of a certificate: a token may come from
/// the authenticator's short cache, because the store checks it again when it
/// records the certificate (see [`crate::auth`]).
#[derive(Debug)]
pub struct AuthenticatedToSign(pub Requester);

impl FromRequestParts<AppState> for AuthenticatedToSign {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        authenticate(parts, state, true)
            .await
            .map(AuthenticatedToSign)
    }
}

async fn authenticate(
    parts: &Parts,
    state: &AppState,
    to_sign: bool,
) -> Result<Requester, ApiError> {
    let header = match parts.headers.get(AUTHORIZATION) {
        Some(v) => Some(
            v.to_str()
                .map_err(|_| ApiError::from(AuthError::Malformed))?,
        ),
        None => None,
    };
    let cert = parts
        .extensions
        .get::<crate::tls::ClientCert>()
        .and_then(|c| c.0.as_deref());
    let requester = if to_sign {
        state.auth.authenticate_to_sign(header, cert).await
    } else {
        state.auth.authenticate(header, cert).await
    }
    .inspect_err(|e| state.metrics.deny(e.code()))?;
    if let Err(wait) = state.limiter.check(&requester.rate_key(), Instant::now()) {
        state.metrics.deny("rate_limited");
        let mut err = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!("too many requests from {requester}; retry later"),
        );
        err.retry_after = Some(wait.as_secs().max(1));
        return Err(err);
    }
    Ok(requester)
}

/// JSON body whose rejections are API errors (400, 413 for a body over the limit, 415).
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(ApiJson(v)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

fn json_rejection(rejection: JsonRejection) -> ApiError {
    match rejection.status() {
        StatusCode::PAYLOAD_TOO_LARGE => body_too_large(),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send JSON with Content-Type: application/json",
        ),
        _ => match rejection {
            JsonRejection::JsonDataError(e) => ApiError::bad("bad_json", e.body_text()),
            JsonRejection::JsonSyntaxError(_) => {
                ApiError::bad("bad_json", "body is not valid JSON")
            }
            other => ApiError::bad("bad_request", other.body_text()),
        },
    }
}

/// Query string whose rejections are API errors.
#[derive(Debug)]
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(v)| ApiQuery(v))
            .map_err(|e: QueryRejection| ApiError::bad("bad_query", e.body_text()))
    }
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_default()
}

fn unix_rfc3339(secs: i64) -> String {
    OffsetDateTime::from_unix_timestamp(secs)
        .map(rfc3339)
        .unwrap_or_default()
}

fn wants_pem(headers: &HeaderMap) -> bool {
    headers
        .get(ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains(PEM_TYPE))
}

fn pem_response(text: String) -> Response {
    ([(CONTENT_TYPE, PEM_TYPE)], text).into_response()
}

/// Body of `POST /v1/sign` (public so the fuzz target can feed it through [`ApiJson`]).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignBody {
    csr: String,
    #[serde(default)]
    profile: Option<String>,
    #[serde(default)]
    ttl: Option<String>,
    #[serde(default)]
    intermediate: Option<String>,
}

async fn sign(
    State(state): State<AppState>,
    headers: HeaderMap,
    AuthenticatedToSign(requester): AuthenticatedToSign,
    ApiJson(body): ApiJson<SignBody>,
) -> Result<Response, ApiError> {
    let ttl = match &body.ttl {
        Some(t) => Some(t.parse().map_err(|e: canopy::ttl::TtlError| {
            state.metrics.fail("bad_ttl");
            ApiError::bad("bad_ttl", e.to_string())
        })?),
        None => None,
    };
    let request =
        match SignRequest::parse(&body.csr, body.profile.as_deref(), ttl, body.intermediate) {
            Ok(request) => request,
            Err(e) => {
                state
                    .issuer
                    .refused(&requester, &e, crate::clock::now())
                    .await;
                return Err(e.into());
            }
        };
    let issued = state.issuer.issue(&requester, request).await?;
    if wants_pem(&headers) {
        return Ok(pem_response(Certificate::pem_of(&issued.chain)));
    }
    Ok(Json(json!({
        "certificate": issued.certificate.to_pem(),
        "chain": Certificate::pem_of(&issued.chain),
        "roots": &*issued.roots_pem,
        "serial": issued.serial.to_string(),
        "not_after": rfc3339(issued.not_after),
        "spiffe_id": issued.certificate.spiffe_id().map(|id| id.to_string()),
        "profile": issued.profile.to_string(),
        "intermediate": issued.intermediate,
        "ttl_capped": issued.ttl_capped,
    }))
    .into_response())
}

async fn roots(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let pem = state.issuer.authorities().roots_pem.to_string();
    if wants_pem(&headers) {
        return pem_response(pem);
    }
    Json(json!({"roots": pem})).into_response()
}

async fn chain(
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
    Ok(Json(json!({
        "intermediate": inter.name,
        "chain": inter.chain_pem,
        "not_after": rfc3339(inter.not_after),
    }))
    .into_response())
}

fn unknown_intermediate(state: &AppState, name: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "unknown_intermediate",
        format!(
            "unknown intermediate {:?} (this issuer has: {})",
            name.chars().take(64).collect::<String>(),
            state.issuer.authorities().names().join(", ")
        ),
    )
}

async fn bundle(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
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
        .map_err(|_| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "cannot build the bundle",
            )
        })
}

async fn crl(
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

/// Body of `POST /v1/revoke` (public so the fuzz target can feed it through [`ApiJson`]).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevokeBody {
    serial: String,
    #[serde(default)]
    reason: Option<String>,
    /// Also put the certificate's SPIFFE ID on the deny list (operators only).
    #[serde(default)]
    deny_renewal: bool,
}

async fn revoke(
    State(state): State<AppState>,
    Authenticated(requester): Authenticated,
    ApiJson(body): ApiJson<RevokeBody>,
) -> Result<Json<Value>, ApiError> {
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
    Ok(Json(json!({
        "serial": record.serial,
        "revoked_at": record.revoked_at.map(unix_rfc3339),
        "reason": record.revocation_reason,
        "already_revoked": already,
    })))
}

fn view(r: &CertificateRecord) -> Value {
    json!({
        "serial": r.serial,
        "spiffe_id": r.spiffe_id,
        "subject": r.subject,
        "dns_names": r.dns_names,
        "ip_addresses": r.ip_addresses,
        "not_before": unix_rfc3339(r.not_before),
        "not_after": unix_rfc3339(r.not_after),
        "issued_at": unix_rfc3339(r.issued_at),
        "requester": r.requester,
        "auth_method": r.auth_method,
        "intermediate": r.intermediate,
        "cluster": r.cluster,
        "namespace": r.namespace,
        "profile": r.profile,
        "fingerprint_sha256": r.fingerprint,
        "revoked": r.revoked_at.is_some(),
        "revoked_at": r.revoked_at.map(unix_rfc3339),
        "revocation_reason": r.revocation_reason,
        "certificate": r.pem(),
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    spiffe_id: Option<String>,
    serial: Option<String>,
    requester: Option<String>,
    expires_before: Option<String>,
    expires_after: Option<String>,
    revoked: Option<bool>,
    limit: Option<u32>,
    cursor: Option<String>,
}

fn parse_time(field: &str, value: &str) -> Result<i64, ApiError> {
    OffsetDateTime::parse(value, &Rfc3339)
        .map(|t| t.unix_timestamp())
        .map_err(|_| {
            ApiError::bad(
                "bad_query",
                format!("{field} must be an RFC 3339 time like 2030-01-02T03:04:05Z"),
            )
        })
}

fn require_list(state: &AppState, requester: &Requester) -> Result<(), ApiError> {
    if state.issuer.may_list(requester) {
        Ok(())
    } else {
        state.metrics.deny("list_not_allowed");
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "list_not_allowed",
            format!("{requester} may not read certificate records (no policy with list: true)"),
        ))
    }
}

async fn certificates(
    State(state): State<AppState>,
    Authenticated(requester): Authenticated,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    require_list(&state, &requester)?;
    let serial = match &q.serial {
        Some(s) => Some(
            s.parse::<Serial>()
                .map_err(|e| ApiError::bad("bad_serial", e.to_string()))?
                .to_string(),
        ),
        None => None,
    };
    let filter = CertificateFilter {
        spiffe_id: q.spiffe_id.clone(),
        serial,
        requester: q.requester.clone(),
        expires_before: q
            .expires_before
            .as_deref()
            .map(|v| parse_time("expires_before", v))
            .transpose()?,
        expires_after: q
            .expires_after
            .as_deref()
            .map(|v| parse_time("expires_after", v))
            .transpose()?,
        revoked: q.revoked,
    };
    let limit = q.limit.unwrap_or(100);
    if limit == 0 || limit > 1000 {
        return Err(ApiError::bad(
            "bad_query",
            "limit must be between 1 and 1000",
        ));
    }
    let after =
        match &q.cursor {
            Some(c) => Some(decode_cursor(c).ok_or_else(|| {
                ApiError::bad("bad_cursor", "cursor is not one this API returned")
            })?),
            None => None,
        };
    let (records, next) = state
        .issuer
        .store()
        .certificates(&filter, after, limit)
        .await
        .map_err(IssueError::from)?;
    Ok(Json(json!({
        "items": records.iter().map(view).collect::<Vec<_>>(),
        "next_cursor": next.map(encode_cursor),
    })))
}

/// A page's cursor as the API hands it out: `NOTAFTER.ID`, base64url, opaque to clients.
fn encode_cursor(c: Cursor) -> String {
    URL_SAFE_NO_PAD.encode(format!("{}.{}", c.not_after, c.id))
}

fn decode_cursor(text: &str) -> Option<Cursor> {
    let bytes = URL_SAFE_NO_PAD.decode(text).ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let (not_after, id) = text.split_once('.')?;
    Some(Cursor {
        not_after: not_after.parse().ok()?,
        id: id.parse().ok()?,
    })
}

async fn certificate(
    State(state): State<AppState>,
    Authenticated(requester): Authenticated,
    Path(serial): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let serial: Serial = serial
        .parse()
        .map_err(|e: canopy::serial::SerialError| ApiError::bad("bad_serial", e.to_string()))?;
    let record = state
        .issuer
        .store()
        .certificate(&serial.to_string())
        .await
        .map_err(IssueError::from)?;
    let own = record.spiffe_id.is_some()
        && requester.spiffe_id().map(ToString::to_string) == record.spiffe_id;
    if !own {
        require_list(&state, &requester)?;
    }
    Ok(Json(view(&record)))
}

async fn openapi() -> Json<Value> {
    Json(crate::openapi::document())
}

async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// How long `/readyz` waits for the database to answer.
const READY_PING_TIMEOUT: Duration = Duration::from_millis(800);

async fn readyz(State(state): State<AppState>) -> Response {
    let now = crate::clock::now_precise();
    // A database that does not answer in time is down: answer 503 inside the kubelet
    // probe's default 1 s timeout instead of timing the probe out.
    let ping = tokio::time::timeout(READY_PING_TIMEOUT, state.issuer.store().ping()).await;
    if !matches!(ping, Ok(Ok(()))) {
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            "storage is not reachable",
        )
        .into_response();
    }
    for inter in state.issuer.authorities().all() {
        if inter.not_after <= now {
            return ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "not_ready",
                format!(
                    "intermediate {} expired at {}",
                    inter.name,
                    rfc3339(inter.not_after)
                ),
            )
            .into_response();
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
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            format!("intermediate {}: {problem}", inter.name),
        )
        .into_response();
    }
    if let Some(istio) = &state.istio {
        if let Err(lines) = istio.readiness(crate::clock::now()) {
            return ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "not_ready",
                lines.join("; "),
            )
            .into_response();
        }
    }
    Json(json!({"status": "ready"})).into_response()
}

/// Per cluster: roots trusted, mesh CA serial and expiry, rotation phase, problems found
/// (from the last cacerts sync pass). Needs a policy with `list: true`.
async fn istio_status(
    State(state): State<AppState>,
    Authenticated(requester): Authenticated,
) -> Result<Json<Value>, ApiError> {
    require_list(&state, &requester)?;
    match state.istio.as_ref().and_then(|h| h.last()) {
        Some(report) => Ok(Json(report.to_json())),
        None => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            if state.istio.is_some() {
                "no cacerts sync pass has run yet"
            } else {
                "no cluster in the config has istio settings"
            },
        )),
    }
}

async fn metrics(State(state): State<AppState>) -> Response {
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

async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such route (see /v1/openapi.json)",
    )
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "method not allowed on this route",
    )
}
