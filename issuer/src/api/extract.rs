//! Extractors whose rejections are API errors: the authenticated requester (after the
//! per-identity rate limit), a JSON body, a query string.

use std::time::Instant;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Query, Request};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::Json;
use serde::de::DeserializeOwned;

use super::limits::body_too_large;
use super::{ApiError, AppState};
use crate::auth::{AuthError, Requester};
use crate::error_code::ErrorCode;

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
        state.metrics.deny(ErrorCode::RateLimited);
        return Err(ApiError::new(
            ErrorCode::RateLimited,
            format!("too many requests from {requester}; retry later"),
        )
        .retry_after(wait.as_secs().max(1)));
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
            ErrorCode::UnsupportedMediaType,
            "send JSON with Content-Type: application/json",
        ),
        _ => match rejection {
            JsonRejection::JsonDataError(e) => ApiError::new(ErrorCode::BadJson, e.body_text()),
            JsonRejection::JsonSyntaxError(_) => {
                ApiError::new(ErrorCode::BadJson, "body is not valid JSON")
            }
            other => ApiError::new(ErrorCode::BadRequest, other.body_text()),
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
            .map_err(|e: QueryRejection| ApiError::new(ErrorCode::BadQuery, e.body_text()))
    }
}
