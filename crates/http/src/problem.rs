//! RFC 9457 problem details. [`ApiError`] is the only place in Till where an HTTP status is
//! chosen for an error; services map their domain and store errors into it.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use crate::request_id;

pub const PROBLEM_CONTENT_TYPE: &str = "application/problem+json";
const PROBLEM_TYPE_BASE: &str = "https://till.example/problems/";

/// The problem+json body of every error response.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(example = json!({
    "type": "https://till.example/problems/insufficient-funds",
    "title": "Insufficient funds",
    "status": 422,
    "code": "insufficient_funds",
    "detail": "The debit account's available balance is 1000; the transfer needs 2500.",
    "param": "amount",
    "request_id": "req_01936f0e6c2a7cc2b0a6a4e5f3d2c1b0"
}))]
pub struct Problem {
    /// A URI naming the problem type; the last segment is `code` with dashes.
    #[serde(rename = "type")]
    pub problem_type: String,
    pub title: String,
    pub status: u16,
    /// Stable, documented, machine-readable code.
    pub code: String,
    /// For humans; may change between releases.
    pub detail: String,
    /// The request field at fault, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub param: Option<String>,
    pub request_id: String,
    /// Seconds to wait before retrying (429 only); also sent as `Retry-After`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after_seconds: Option<u64>,
}

/// An error response: status, stable code, human detail and optional offending field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub title: &'static str,
    pub detail: String,
    pub param: Option<String>,
    pub retry_after_seconds: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, title: &'static str, detail: impl Into<String>) -> ApiError {
        ApiError { status, code, title, detail: detail.into(), param: None, retry_after_seconds: None }
    }

    pub fn with_param(mut self, param: impl Into<String>) -> ApiError {
        self.param = Some(param.into());
        self
    }

    pub fn invalid(param: impl Into<String>, detail: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", "Invalid request", detail).with_param(param)
    }

    /// A free-text field that is not human text (`till_kit::text`), naming the field.
    pub fn text(param: impl Into<String>, refusal: till_kit::TextError) -> ApiError {
        let param = param.into();
        ApiError::invalid(param.clone(), format!("{param} {refusal}."))
    }

    pub fn not_found(what: &str) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "resource_missing", "Not found", format!("No such {what}."))
    }

    pub fn unauthenticated(detail: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthenticated", "Unauthenticated", detail)
    }

    pub fn forbidden(detail: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, "forbidden", "Forbidden", detail)
    }

    pub fn conflict(code: &'static str, detail: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::CONFLICT, code, "Conflict", detail)
    }

    pub fn unprocessable(code: &'static str, title: &'static str, detail: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, title, detail)
    }

    /// A bug or an unexpected failure. The cause is logged here, once, with the request id;
    /// the body says nothing about it.
    pub fn internal(cause: &dyn std::fmt::Display) -> ApiError {
        tracing::error!(error = %cause, "internal error");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "Internal error",
            "Something went wrong on our side. It has been logged; quote the request id when reporting it.",
        )
    }

    /// A dependency (the database) is unavailable; the client may retry.
    pub fn unavailable(cause: &dyn std::fmt::Display) -> ApiError {
        tracing::warn!(error = %cause, "dependency unavailable");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "service_unavailable",
            "Service unavailable",
            "A dependency is unavailable. Retry with the same Idempotency-Key.",
        )
    }

    /// Maps a database error: connection-level failures are 503 (retryable); text the
    /// database cannot store (a NUL, an invalid escape, a value longer than its column)
    /// is the client's 400, a backstop behind `HumanText` for a field that missed it;
    /// anything else is a bug (500).
    pub fn database(error: sqlx::Error) -> ApiError {
        if till_db::pool::connection_lost(&error) {
            return ApiError::unavailable(&error);
        }
        let code = error.as_database_error().and_then(|db| db.code()).map(|code| code.into_owned());
        if matches!(code.as_deref(), Some("22021" | "22P05" | "22001")) {
            tracing::warn!(%error, "the database refused a value from a request; a field lacks its check");
            return ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "Invalid request",
                "The request contains text that cannot be stored (such as a NUL character).",
            );
        }
        match error {
            sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed => ApiError::unavailable(&error),
            other => ApiError::internal(&other),
        }
    }

    pub fn problem(&self) -> Problem {
        self.problem_for(request_id::current().unwrap_or_default())
    }

    /// The problem body quoting `request_id` (for code running outside the request's task).
    pub fn problem_for(&self, request_id: String) -> Problem {
        Problem {
            problem_type: format!("{PROBLEM_TYPE_BASE}{}", self.code.replace('_', "-")),
            title: self.title.to_string(),
            status: self.status.as_u16(),
            code: self.code.to_string(),
            detail: self.detail.clone(),
            param: self.param.clone(),
            request_id,
            retry_after_seconds: self.retry_after_seconds,
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.status.as_u16(), self.code, self.detail)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::to_vec(&self.problem()).unwrap_or_default();
        let mut response = (self.status, body).into_response();
        response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_CONTENT_TYPE));
        if let Some(seconds) = self.retry_after_seconds {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(error: sqlx::Error) -> ApiError {
        ApiError::database(error)
    }
}

/// Every stable error code with its status and meaning, for docs and the OpenAPI document.
pub const ERROR_CODES: &[(&str, u16, &str)] = &[
    ("invalid_request", 400, "The request is malformed or a field is invalid; `param` names it."),
    ("invalid_json", 400, "The body is not valid JSON of the expected shape."),
    ("unknown_field", 400, "The body or query has a field this endpoint does not know."),
    ("idempotency_key_missing", 400, "A POST without an Idempotency-Key header."),
    ("idempotency_key_invalid", 400, "The Idempotency-Key is not 1–255 printable ASCII characters."),
    ("unauthenticated", 401, "Missing, malformed, expired, revoked or otherwise invalid credentials."),
    ("forbidden", 403, "The credentials are valid but their role does not allow this."),
    ("resource_missing", 404, "No such resource (or it belongs to another business)."),
    ("route_not_found", 404, "No such route."),
    ("method_not_allowed", 405, "The route exists but not with this method."),
    ("idempotency_key_in_use", 409, "A request with this Idempotency-Key is still running."),
    ("state_conflict", 409, "The resource's state does not allow this now."),
    ("version_mismatch", 412, "The `If-Match` version is not the resource's current version."),
    ("request_timeout", 408, "The request body did not arrive in time."),
    ("body_too_large", 413, "The body is over the size limit."),
    ("unsupported_media_type", 415, "The body is not `application/json`."),
    ("idempotency_key_reused", 422, "The Idempotency-Key was used before with another method, path or body."),
    ("webhook_endpoint_limit", 422, "The business has as many webhook endpoints as it may."),
    ("replay_too_large", 422, "A webhook replay would leave too many deliveries waiting; replay from later."),
    ("rate_limited", 429, "Too many requests for this API key; wait `Retry-After` seconds."),
    ("auth_throttled", 429, "Too many failed authentications from this address; wait `Retry-After` seconds."),
    ("replay_throttled", 429, "The endpoint was replayed recently or is being replayed; wait `Retry-After` seconds."),
    ("internal_error", 500, "A bug. Quote the request id."),
    ("service_unavailable", 503, "A dependency is unavailable; retry with the same Idempotency-Key."),
];
