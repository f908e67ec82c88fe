//! The limits taken before any handler runs: the per-peer rate limit and the body
//! limit with its global budget of buffered bytes. An early answer drains the body.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::Request;
use axum::http::header::{CONTENT_LENGTH, EXPECT};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::ApiError;
use crate::config::Limits;
use crate::error_code::ErrorCode;
use crate::metrics::Metrics;
use crate::ratelimit::RateLimiter;
use crate::tls::Peer;

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
pub(super) struct Drain {
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
pub(super) struct PeerLimit {
    limiter: RateLimiter,
    metrics: Arc<Metrics>,
    drain: Drain,
}

impl PeerLimit {
    pub(super) fn new(limits: &Limits, metrics: Arc<Metrics>, drain: Drain) -> Self {
        PeerLimit {
            limiter: RateLimiter::new(limits.peer_rate_per_second, limits.peer_burst),
            metrics,
            drain,
        }
    }
}

/// Refuses requests over `limits.peer_rate_per_second`/`peer_burst` from one peer
/// address with 429 and `Retry-After`, before any credential is checked: a flood of bad
/// tokens or JWTs costs a bucket look-up each, not a database query or a signature check.
pub(super) async fn limit_peer(
    peers: Arc<PeerLimit>,
    req: Request,
    next: axum::middleware::Next,
) -> Response {
    let Some(Peer(peer)) = req.extensions().get::<Peer>().copied() else {
        return next.run(req).await;
    };
    let Err(wait) = peers.limiter.check(&peer.to_string(), Instant::now()) else {
        return next.run(req).await;
    };
    peers.metrics.deny(ErrorCode::PeerRateLimited);
    let err = ApiError::new(
        ErrorCode::PeerRateLimited,
        format!("too many requests from {peer}; retry later"),
    )
    .retry_after(wait.as_secs_f64().ceil().max(1.0) as u64);
    let (parts, body) = req.into_parts();
    peers
        .drain
        .answer(&parts.headers, body, err.into_response())
}

/// The body limit and the global budget of buffered body bytes.
#[derive(Debug)]
pub(super) struct BodyBounds {
    limit: usize,
    budget: Arc<Semaphore>,
    drain: Drain,
    metrics: Arc<Metrics>,
}

impl BodyBounds {
    pub(super) fn new(limits: &Limits, request_timeout: Duration, metrics: Arc<Metrics>) -> Self {
        BodyBounds {
            limit: limits.body_bytes,
            budget: Arc::new(Semaphore::new(
                limits.buffered_body_bytes.min(Semaphore::MAX_PERMITS),
            )),
            drain: Drain {
                bytes: limits.body_bytes.saturating_mul(DRAIN_FACTOR),
                within: request_timeout,
            },
            metrics,
        }
    }

    /// How an early answer drains the rest of a body.
    pub(super) fn drain(&self) -> Drain {
        self.drain
    }
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
pub(super) async fn buffer_body(
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
                return ApiError::new(ErrorCode::BadRequest, "the request body could not be read")
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
                bounds.metrics.body_budget_exhausted();
                let err = ApiError::new(
                    ErrorCode::Busy,
                    "the issuer holds as many request bodies as it may; retry",
                )
                .retry_after(1);
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

pub(super) fn body_too_large() -> ApiError {
    ApiError::new(
        ErrorCode::BodyTooLarge,
        "request body is larger than the limit",
    )
}
