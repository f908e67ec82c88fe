//! API errors: a status, a stable [`ErrorCode`] and a safe message, turned into a
//! response by one `IntoResponse` impl.

use axum::http::header::RETRY_AFTER;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

use crate::auth::AuthError;
use crate::error_code::ErrorCode;
use crate::issuance::IssueError;

/// The body of every error answer.
#[derive(Debug, Serialize, schemars::JsonSchema)]
#[schemars(rename = "Error")]
pub struct ErrorBody {
    /// Stable error code.
    pub code: ErrorCode,
    /// What went wrong, for a person.
    pub message: String,
}

/// An API error: HTTP status, stable code, safe message.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: ErrorCode,
    message: String,
    retry_after: Option<u64>,
}

impl ApiError {
    /// An error answered with the code's own status.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            status: code.status(),
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    /// Answered with `status` instead of the code's own (see [`super::Route::status`]).
    pub(super) fn with_status(mut self, status: StatusCode) -> Self {
        self.status = status;
        self
    }

    /// Tells the client to retry after `secs` seconds.
    pub(super) fn retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs);
        self
    }

    /// The code.
    pub fn code(&self) -> ErrorCode {
        self.code
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            code: self.code,
            message: self.message,
        };
        let mut response = (self.status, Json(body)).into_response();
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
        // The kind of error decides the status, as for the controllers.
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
        let err = ApiError::new(e.code(), message).with_status(status);
        if status == StatusCode::SERVICE_UNAVAILABLE {
            err.retry_after(1)
        } else {
            err
        }
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::Storage(s) => IssueError::from(s).into(),
            other => {
                ApiError::new(other.code(), other.to_string()).with_status(StatusCode::UNAUTHORIZED)
            }
        }
    }
}
