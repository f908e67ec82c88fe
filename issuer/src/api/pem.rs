//! PEM answers: a client that sends `Accept: application/x-pem-file` gets the PEM text
//! instead of JSON, and times on the wire are RFC 3339.

use axum::http::header::{ACCEPT, CONTENT_TYPE};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// The media type of a PEM answer.
pub const PEM_TYPE: &str = "application/x-pem-file";

/// Whether the client asked for PEM.
pub(super) fn wants_pem(headers: &HeaderMap) -> bool {
    headers
        .get(ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains(PEM_TYPE))
}

/// `text` answered as PEM.
pub(super) fn pem_response(text: String) -> Response {
    ([(CONTENT_TYPE, PEM_TYPE)], text).into_response()
}

/// A time as the API writes it.
pub(super) fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_default()
}

/// Seconds since the epoch as the API writes them.
pub(super) fn unix_rfc3339(secs: i64) -> String {
    OffsetDateTime::from_unix_timestamp(secs)
        .map(rfc3339)
        .unwrap_or_default()
}
