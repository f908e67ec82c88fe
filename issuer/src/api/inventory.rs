//! The inventory of issued certificates: a filtered, paged list (a policy with
//! `list: true`) and one record (its holder, or such a policy).

use axum::extract::{Path, State};
use axum::Json;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use canopy::serial::Serial;
use serde::{Deserialize, Serialize};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::extract::{ApiQuery, Authenticated};
use super::pem::unix_rfc3339;
use super::{ApiError, AppState};
use crate::auth::Requester;
use crate::error_code::ErrorCode;
use crate::issuance::IssueError;
use crate::store::{CertificateFilter, CertificateRecord, Cursor};

/// The codes the list handler answers with, besides authentication's.
pub(super) const LIST_ERRORS: &[ErrorCode] = &[
    ErrorCode::BadQuery,
    ErrorCode::BadSerial,
    ErrorCode::BadCursor,
    ErrorCode::ListNotAllowed,
];

/// The codes the one-record handler answers with, besides authentication's.
pub(super) const ONE_ERRORS: &[ErrorCode] = &[
    ErrorCode::BadSerial,
    ErrorCode::NotFound,
    ErrorCode::ListNotAllowed,
];

/// An issued certificate as the API shows it.
#[derive(Debug, Serialize, schemars::JsonSchema)]
#[schemars(rename = "CertificateRecord")]
pub struct CertificateView {
    /// Serial, hex.
    pub serial: String,
    /// SPIFFE ID, if any.
    pub spiffe_id: Option<String>,
    /// Subject DN.
    pub subject: String,
    /// DNS SANs.
    pub dns_names: Vec<String>,
    /// IP SANs.
    pub ip_addresses: Vec<String>,
    /// RFC 3339.
    #[schemars(extend("format" = "date-time"))]
    pub not_before: String,
    /// RFC 3339.
    #[schemars(extend("format" = "date-time"))]
    pub not_after: String,
    /// RFC 3339.
    #[schemars(extend("format" = "date-time"))]
    pub issued_at: String,
    /// Who asked.
    pub requester: String,
    /// How the requester authenticated.
    pub auth_method: String,
    /// The intermediate that signed.
    pub intermediate: String,
    /// The requester's cluster, if any.
    pub cluster: Option<String>,
    /// The requester's namespace, if any.
    pub namespace: Option<String>,
    /// The profile signed under.
    pub profile: String,
    /// SHA-256 of the DER, hex.
    pub fingerprint_sha256: String,
    /// Whether it is revoked.
    pub revoked: bool,
    /// RFC 3339.
    #[schemars(extend("format" = "date-time"))]
    pub revoked_at: Option<String>,
    /// RFC 5280 reason.
    pub revocation_reason: Option<String>,
    /// The certificate, PEM.
    pub certificate: String,
}

impl From<&CertificateRecord> for CertificateView {
    fn from(r: &CertificateRecord) -> Self {
        CertificateView {
            serial: r.serial.clone(),
            spiffe_id: r.spiffe_id.clone(),
            subject: r.subject.clone(),
            dns_names: r.dns_names.clone(),
            ip_addresses: r.ip_addresses.clone(),
            not_before: unix_rfc3339(r.not_before),
            not_after: unix_rfc3339(r.not_after),
            issued_at: unix_rfc3339(r.issued_at),
            requester: r.requester.clone(),
            auth_method: r.auth_method.clone(),
            intermediate: r.intermediate.clone(),
            cluster: r.cluster.clone(),
            namespace: r.namespace.clone(),
            profile: r.profile.clone(),
            fingerprint_sha256: r.fingerprint.clone(),
            revoked: r.revoked_at.is_some(),
            revoked_at: r.revoked_at.map(unix_rfc3339),
            revocation_reason: r.revocation_reason.clone(),
            certificate: r.pem(),
        }
    }
}

/// Answer of `GET /v1/certificates`.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct CertificatePage {
    /// The page, soonest expiry first.
    pub items: Vec<CertificateView>,
    /// The `cursor` of the next page; absent on the last.
    pub next_cursor: Option<String>,
}

/// Query of `GET /v1/certificates`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Exact SPIFFE ID.
    spiffe_id: Option<String>,
    /// Serial, hex.
    serial: Option<String>,
    /// Exact requester.
    requester: Option<String>,
    /// RFC 3339.
    #[schemars(extend("format" = "date-time"))]
    expires_before: Option<String>,
    /// RFC 3339.
    #[schemars(extend("format" = "date-time"))]
    expires_after: Option<String>,
    /// Only revoked, or only not revoked.
    revoked: Option<bool>,
    /// 1 to 1000; 100 when left out.
    #[schemars(range(min = 1, max = 1000), extend("default" = 100))]
    limit: Option<u32>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

impl ListQuery {
    fn filter(&self) -> Result<CertificateFilter, ApiError> {
        let serial = match &self.serial {
            Some(s) => Some(
                s.parse::<Serial>()
                    .map_err(|e| ApiError::new(ErrorCode::BadSerial, e.to_string()))?
                    .to_string(),
            ),
            None => None,
        };
        let time = |field: &str, value: &Option<String>| {
            value.as_deref().map(|v| parse_time(field, v)).transpose()
        };
        Ok(CertificateFilter {
            spiffe_id: self.spiffe_id.clone(),
            serial,
            requester: self.requester.clone(),
            expires_before: time("expires_before", &self.expires_before)?,
            expires_after: time("expires_after", &self.expires_after)?,
            revoked: self.revoked,
        })
    }

    fn limit(&self) -> Result<u32, ApiError> {
        match self.limit.unwrap_or(100) {
            limit @ 1..=1000 => Ok(limit),
            _ => Err(ApiError::new(
                ErrorCode::BadQuery,
                "limit must be between 1 and 1000",
            )),
        }
    }

    fn after(&self) -> Result<Option<Cursor>, ApiError> {
        self.cursor
            .as_deref()
            .map(|c| {
                decode_cursor(c).ok_or_else(|| {
                    ApiError::new(ErrorCode::BadCursor, "cursor is not one this API returned")
                })
            })
            .transpose()
    }
}

fn parse_time(field: &str, value: &str) -> Result<i64, ApiError> {
    OffsetDateTime::parse(value, &Rfc3339)
        .map(|t| t.unix_timestamp())
        .map_err(|_| {
            ApiError::new(
                ErrorCode::BadQuery,
                format!("{field} must be an RFC 3339 time like 2030-01-02T03:04:05Z"),
            )
        })
}

/// Refuses a requester without a policy with `list: true`.
pub(super) fn require_list(state: &AppState, requester: &Requester) -> Result<(), ApiError> {
    if state.issuer.may_list(requester) {
        Ok(())
    } else {
        state.metrics.deny(ErrorCode::ListNotAllowed);
        Err(ApiError::new(
            ErrorCode::ListNotAllowed,
            format!("{requester} may not read certificate records (no policy with list: true)"),
        ))
    }
}

pub(super) async fn certificates(
    State(state): State<AppState>,
    Authenticated(requester): Authenticated,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<CertificatePage>, ApiError> {
    require_list(&state, &requester)?;
    let (filter, limit, after) = (q.filter()?, q.limit()?, q.after()?);
    let (records, next) = state
        .issuer
        .store()
        .certificates(&filter, after, limit)
        .await
        .map_err(IssueError::from)?;
    Ok(Json(CertificatePage {
        items: records.iter().map(CertificateView::from).collect(),
        next_cursor: next.map(encode_cursor),
    }))
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

pub(super) async fn certificate(
    State(state): State<AppState>,
    Authenticated(requester): Authenticated,
    Path(serial): Path<String>,
) -> Result<Json<CertificateView>, ApiError> {
    let serial: Serial = serial.parse().map_err(|e: canopy::serial::SerialError| {
        ApiError::new(ErrorCode::BadSerial, e.to_string())
    })?;
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
    Ok(Json(CertificateView::from(&record)))
}
