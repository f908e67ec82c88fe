//! The HTTP API (JSON, `/v1`). Handlers are thin: authenticate, parse, call the
//! [`Issuer`], shape the answer. Errors carry a stable [`ErrorCode`] and a message that
//! never includes SQL, paths or key material.
//!
//! [`ROUTES`] is the one list of routes: the router is built from it and the OpenAPI
//! document ([`crate::openapi`]) is generated from it and from the body types here.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Request};
use axum::http::StatusCode;
use axum::routing::{on, MethodFilter, MethodRouter};
use axum::Router;
use tower_http::timeout::TimeoutLayer;

use crate::auth::Authenticator;
use crate::config::Limits;
use crate::error_code::ErrorCode;
use crate::issuance::Issuer;
use crate::metrics::Metrics;
use crate::ratelimit::RateLimiter;

mod error;
mod extract;
mod health;
mod inventory;
mod limits;
mod pem;
mod revocation;
mod signing;
mod trust;

pub use error::{ApiError, ErrorBody};
pub use extract::{ApiJson, ApiQuery, Authenticated, AuthenticatedToSign};
pub use health::Health;
pub use inventory::{CertificatePage, CertificateView, ListQuery};
pub use revocation::{RevokeBody, Revoked};
pub use signing::{SignBody, Signed};
pub use trust::{Chain, Roots};

/// What a route does; each has one handler.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// Sign a CSR.
    Sign,
    /// The trust anchors.
    Roots,
    /// An intermediate's chain.
    Chain,
    /// The SPIFFE trust bundle.
    Bundle,
    /// An intermediate's CRL.
    Crl,
    /// Revoke a certificate.
    Revoke,
    /// A page of certificate records.
    Certificates,
    /// One certificate record.
    Certificate,
    /// The Istio cacerts sync's report.
    Status,
    /// The OpenAPI document.
    OpenApi,
    /// Liveness.
    Healthz,
    /// Readiness.
    Readyz,
    /// Prometheus metrics.
    Metrics,
}

/// HTTP method of a route.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// GET.
    Get,
    /// POST.
    Post,
}

impl Method {
    fn filter(self) -> MethodFilter {
        match self {
            Method::Get => MethodFilter::GET,
            Method::Post => MethodFilter::POST,
        }
    }

    /// The lower-case name, as OpenAPI writes it.
    pub const fn as_str(self) -> &'static str {
        match self {
            Method::Get => "get",
            Method::Post => "post",
        }
    }
}

/// A route: method, path, what it does and the error codes its handler answers with
/// (see [`Route::all_errors`] for the rest).
#[derive(Clone, Copy, Debug)]
pub struct Route {
    /// HTTP method.
    pub method: Method,
    /// Path, with `{name}` parameters.
    pub path: &'static str,
    /// The handler.
    pub endpoint: Endpoint,
    /// Whether a credential is required.
    pub secured: bool,
    /// The codes the handler answers with.
    pub errors: &'static [ErrorCode],
}

impl Route {
    /// The status `code` is answered with on this route. The one code whose status
    /// depends on the route: an intermediate named in the path is a resource not found
    /// (404), one named in a sign request a bad request (400).
    pub fn status(&self, code: ErrorCode) -> StatusCode {
        if code == ErrorCode::UnknownIntermediate && self.path.contains("{intermediate}") {
            StatusCode::NOT_FOUND
        } else {
            code.status()
        }
    }

    /// Every code the route may answer with: its handler's, [`AUTH_ERRORS`] when it is
    /// secured, and [`ANY_ROUTE_ERRORS`].
    pub fn all_errors(&self) -> impl Iterator<Item = ErrorCode> + '_ {
        let auth = if self.secured { AUTH_ERRORS } else { &[] };
        self.errors
            .iter()
            .chain(auth)
            .chain(ANY_ROUTE_ERRORS)
            .copied()
    }
}

/// Codes any route may answer with: the limits taken before a handler runs, and a
/// method the route does not take.
pub const ANY_ROUTE_ERRORS: &[ErrorCode] = &[
    ErrorCode::PeerRateLimited,
    ErrorCode::BodyTooLarge,
    ErrorCode::Busy,
    ErrorCode::BadRequest,
    ErrorCode::MethodNotAllowed,
];

/// The code of a path no route serves (the router's fallback).
pub const NO_ROUTE: ErrorCode = ErrorCode::NotFound;

/// Codes of authentication and the per-identity rate limit, on every secured route.
pub const AUTH_ERRORS: &[ErrorCode] = &[
    ErrorCode::Unauthenticated,
    ErrorCode::BadAuthorization,
    ErrorCode::UnknownToken,
    ErrorCode::ExpiredToken,
    ErrorCode::BadJwt,
    ErrorCode::BadClientCertificate,
    ErrorCode::StorageUnavailable,
    ErrorCode::RateLimited,
];

const fn route(
    method: Method,
    path: &'static str,
    endpoint: Endpoint,
    errors: &'static [ErrorCode],
) -> Route {
    Route {
        method,
        path,
        endpoint,
        secured: false,
        errors,
    }
}

const fn secured(
    method: Method,
    path: &'static str,
    endpoint: Endpoint,
    errors: &'static [ErrorCode],
) -> Route {
    Route {
        secured: true,
        ..route(method, path, endpoint, errors)
    }
}

/// Every route the API serves. The router is built from this list and the OpenAPI
/// document is generated from it.
pub const ROUTE_TABLE: [Route; 13] = [
    secured(Method::Post, "/v1/sign", Endpoint::Sign, signing::ERRORS),
    route(Method::Get, "/v1/roots", Endpoint::Roots, &[]),
    route(
        Method::Get,
        "/v1/chain/{intermediate}",
        Endpoint::Chain,
        &[ErrorCode::UnknownIntermediate],
    ),
    route(
        Method::Get,
        "/v1/bundle",
        Endpoint::Bundle,
        &[ErrorCode::Internal],
    ),
    route(
        Method::Get,
        "/v1/crl/{intermediate}",
        Endpoint::Crl,
        &[
            ErrorCode::UnknownIntermediate,
            ErrorCode::StorageUnavailable,
            ErrorCode::Internal,
        ],
    ),
    secured(
        Method::Post,
        "/v1/revoke",
        Endpoint::Revoke,
        revocation::ERRORS,
    ),
    secured(
        Method::Get,
        "/v1/certificates",
        Endpoint::Certificates,
        inventory::LIST_ERRORS,
    ),
    secured(
        Method::Get,
        "/v1/certificates/{serial}",
        Endpoint::Certificate,
        inventory::ONE_ERRORS,
    ),
    secured(
        Method::Get,
        "/v1/status",
        Endpoint::Status,
        health::STATUS_ERRORS,
    ),
    route(Method::Get, "/v1/openapi.json", Endpoint::OpenApi, &[]),
    route(Method::Get, "/healthz", Endpoint::Healthz, &[]),
    route(
        Method::Get,
        "/readyz",
        Endpoint::Readyz,
        &[ErrorCode::NotReady],
    ),
    route(Method::Get, "/metrics", Endpoint::Metrics, &[]),
];

/// `(method, path)` of every route in [`ROUTE_TABLE`], as the integration tests walk
/// them against the running router.
pub const ROUTES: &[(&str, &str)] = &method_paths(ROUTE_TABLE);

const fn method_paths<const N: usize>(table: [Route; N]) -> [(&'static str, &'static str); N] {
    let mut out = [("", ""); N];
    let mut i = 0;
    while i < N {
        out[i] = (table[i].method.as_str(), table[i].path);
        i += 1;
    }
    out
}

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

/// The handler of `route`, for its method.
fn method_router(route: &Route) -> MethodRouter<AppState> {
    let method = route.method.filter();
    match route.endpoint {
        Endpoint::Sign => on(method, signing::sign),
        Endpoint::Roots => on(method, trust::roots),
        Endpoint::Chain => on(method, trust::chain),
        Endpoint::Bundle => on(method, trust::bundle),
        Endpoint::Crl => on(method, trust::crl),
        Endpoint::Revoke => on(method, revocation::revoke),
        Endpoint::Certificates => on(method, inventory::certificates),
        Endpoint::Certificate => on(method, inventory::certificate),
        Endpoint::Status => on(method, health::istio_status),
        Endpoint::OpenApi => on(method, health::openapi),
        Endpoint::Healthz => on(method, health::healthz),
        Endpoint::Readyz => on(method, health::readyz),
        Endpoint::Metrics => on(method, health::metrics),
    }
}

/// Builds the router from [`ROUTE_TABLE`] with the limits that apply before any handler
/// runs: the per-peer rate limit, the body limit and the global budget of buffered
/// bodies, the request timeout.
pub fn router(state: AppState, limits: &Limits) -> Router {
    let request_timeout = Duration::from_secs(limits.request_timeout.as_seconds().max(1) as u64);
    let bodies = Arc::new(limits::BodyBounds::new(
        limits,
        request_timeout,
        state.metrics.clone(),
    ));
    let peers = Arc::new(limits::PeerLimit::new(
        limits,
        state.metrics.clone(),
        bodies.drain(),
    ));
    let mut router = Router::new();
    for route in &ROUTE_TABLE {
        router = router.route(route.path, method_router(route));
    }
    router
        .fallback(health::not_found)
        .method_not_allowed_fallback(health::method_not_allowed)
        .layer(DefaultBodyLimit::max(limits.body_bytes))
        .layer(axum::middleware::from_fn(
            move |req: Request, next: axum::middleware::Next| {
                limits::buffer_body(bodies.clone(), req, next)
            },
        ))
        .layer(axum::middleware::from_fn(
            move |req: Request, next: axum::middleware::Next| {
                limits::limit_peer(peers.clone(), req, next)
            },
        ))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            request_timeout,
        ))
        .with_state(state)
}
