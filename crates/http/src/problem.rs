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
    pub code: ErrorCode,
    pub title: &'static str,
    pub detail: String,
    pub param: Option<String>,
    pub retry_after_seconds: Option<u64>,
}

impl ApiError {
    /// An error with `code`'s status and title from the registry.
    pub fn new(code: ErrorCode, detail: impl Into<String>) -> ApiError {
        ApiError {
            status: code.status(),
            code,
            title: code.title(),
            detail: detail.into(),
            param: None,
            retry_after_seconds: None,
        }
    }

    pub fn with_param(mut self, param: impl Into<String>) -> ApiError {
        self.param = Some(param.into());
        self
    }

    pub fn invalid(param: impl Into<String>, detail: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::InvalidRequest, detail).with_param(param)
    }

    /// A free-text field that is not human text (`till_kit::text`), naming the field.
    pub fn text(param: impl Into<String>, refusal: till_kit::TextError) -> ApiError {
        let param = param.into();
        ApiError::invalid(param.clone(), format!("{param} {refusal}."))
    }

    pub fn not_found(what: &str) -> ApiError {
        ApiError::new(ErrorCode::ResourceMissing, format!("No such {what}."))
    }

    pub fn unauthenticated(detail: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::Unauthenticated, detail)
    }

    pub fn forbidden(detail: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::Forbidden, detail)
    }

    /// A rule the schema cannot express (422 `rule_violated`), naming the field.
    pub fn rule(param: impl Into<String>, detail: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::RuleViolated, detail).with_param(param)
    }

    /// A bug or an unexpected failure. The cause is logged here, once, with the request id;
    /// the body says nothing about it.
    pub fn internal(cause: &dyn std::fmt::Display) -> ApiError {
        tracing::error!(error = %cause, "internal error");
        ApiError::new(
            ErrorCode::InternalError,
            "Something went wrong on our side. It has been logged; quote the request id when reporting it.",
        )
    }

    /// A dependency (the database) is unavailable; the client may retry.
    pub fn unavailable(cause: &dyn std::fmt::Display) -> ApiError {
        tracing::warn!(error = %cause, "dependency unavailable");
        ApiError::new(
            ErrorCode::ServiceUnavailable,
            "A dependency is unavailable. Retry with the same Idempotency-Key.",
        )
    }

    /// Maps a database error: connection-level failures are 503 (retryable); text the
    /// database cannot store (a NUL, an invalid escape, a value longer than its column)
    /// is the client's 400, a backstop behind `HumanText` for a field that missed it;
    /// a transaction PostgreSQL chose as a deadlock victim or could not serialize
    /// (40P01, 40001) was rolled back whole, so it is a retryable 503 like a lost
    /// connection, not a bug; anything else is a bug (500).
    pub fn database(error: sqlx::Error) -> ApiError {
        if till_db::pool::connection_lost(&error) {
            return ApiError::unavailable(&error);
        }
        let code = error.as_database_error().and_then(|db| db.code()).map(|code| code.into_owned());
        if matches!(code.as_deref(), Some("40P01" | "40001")) {
            tracing::warn!(%error, "a transaction lost a lock conflict and was rolled back");
            let mut refused = ApiError::new(
                ErrorCode::ServiceUnavailable,
                "The request met a conflicting one and was rolled back whole. Retry with the same Idempotency-Key.",
            );
            refused.retry_after_seconds = Some(1);
            return refused;
        }
        if matches!(code.as_deref(), Some("22021" | "22P05" | "22001")) {
            tracing::warn!(%error, "the database refused a value from a request; a field lacks its check");
            return ApiError::new(
                ErrorCode::InvalidRequest,
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
            problem_type: format!("{PROBLEM_TYPE_BASE}{}", self.code.as_str().replace('_', "-")),
            title: self.title.to_string(),
            status: self.status.as_u16(),
            code: self.code.as_str().to_string(),
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

/// Declares the registry: each code with its status, title and meaning.
macro_rules! error_codes {
    ($( $variant:ident => ($code:literal, $status:ident, $title:literal, $description:literal), )*) => {
        /// Every stable error code Till answers, with its status, title and meaning: the one
        /// registry that the problem bodies, the OpenAPI document and docs are made from.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ErrorCode {
            $( #[doc = $description] $variant, )*
            /// An outside party failed: its own code (`gateway_unavailable`, API.md), named by
            /// the outbound kit's `Names`.
            Dependency { code: &'static str, failure: DependencyFailure },
        }

        impl ErrorCode {
            /// Every code but the outside parties' own, which their services declare.
            pub const ALL: &'static [ErrorCode] = &[$( ErrorCode::$variant, )*];

            /// The code as it appears in `code` (and, dashed, in `type`).
            pub fn as_str(self) -> &'static str {
                match self { $( ErrorCode::$variant => $code, )* ErrorCode::Dependency { code, .. } => code }
            }

            pub fn status(self) -> StatusCode {
                match self {
                    $( ErrorCode::$variant => StatusCode::$status, )*
                    ErrorCode::Dependency { failure, .. } => failure.status(),
                }
            }

            pub fn title(self) -> &'static str {
                match self {
                    $( ErrorCode::$variant => $title, )*
                    ErrorCode::Dependency { failure, .. } => failure.title(),
                }
            }

            pub fn description(self) -> &'static str {
                match self {
                    $( ErrorCode::$variant => $description, )*
                    ErrorCode::Dependency { failure, .. } => failure.description(),
                }
            }
        }
    };
}

error_codes! {
    InvalidRequest => ("invalid_request", BAD_REQUEST, "Invalid request", "The request is malformed or a field is invalid; `param` names it."),
    InvalidJson => ("invalid_json", BAD_REQUEST, "Invalid request body", "The body is not valid JSON of the expected shape."),
    UnknownField => ("unknown_field", BAD_REQUEST, "Unknown field", "The body or query has a field this endpoint does not know."),
    IdempotencyKeyMissing => ("idempotency_key_missing", BAD_REQUEST, "Idempotency-Key missing", "A POST without an Idempotency-Key header."),
    WebhookSignatureInvalid => ("webhook_signature_invalid", BAD_REQUEST, "Webhook signature invalid", "A provider's webhook whose signature is missing, wrong or outside its time tolerance (or no signing secret is configured); nothing was applied."),
    IdempotencyKeyInvalid => ("idempotency_key_invalid", BAD_REQUEST, "Idempotency-Key invalid", "The Idempotency-Key is not 1–255 printable ASCII characters."),
    Unauthenticated => ("unauthenticated", UNAUTHORIZED, "Unauthenticated", "Missing, malformed, expired, revoked or otherwise invalid credentials."),
    Forbidden => ("forbidden", FORBIDDEN, "Forbidden", "The credentials are valid but their role does not allow this."),
    ResourceMissing => ("resource_missing", NOT_FOUND, "Not found", "No such resource (or it belongs to another business)."),
    RouteNotFound => ("route_not_found", NOT_FOUND, "Not found", "No such route."),
    MethodNotAllowed => ("method_not_allowed", METHOD_NOT_ALLOWED, "Method not allowed", "The route exists but not with this method."),
    RequestTimeout => ("request_timeout", REQUEST_TIMEOUT, "Request timeout", "The request body did not arrive in time."),
    IdempotencyKeyInUse => ("idempotency_key_in_use", CONFLICT, "Conflict", "A request with this Idempotency-Key is still running."),
    StateConflict => ("state_conflict", CONFLICT, "Conflict", "The resource's state does not allow this now."),
    AccountClosed => ("account_closed", CONFLICT, "Conflict", "A closed account cannot be reopened."),
    TransferIdInUse => ("transfer_id_in_use", CONFLICT, "Conflict", "A transfer with this id exists already."),
    TransferNotPending => ("transfer_not_pending", CONFLICT, "Conflict", "The transfer is not a hold."),
    HoldAlreadyResolved => ("hold_already_resolved", CONFLICT, "Conflict", "The hold was posted, voided or expired already."),
    HoldExpired => ("hold_expired", CONFLICT, "Conflict", "The hold has expired; its funds were released."),
    HoldNotExpired => ("hold_not_expired", CONFLICT, "Conflict", "The hold has not expired yet."),
    TransferNotReversible => ("transfer_not_reversible", CONFLICT, "Conflict", "The transfer cannot be reversed (not posted, already reversed, or itself a reversal)."),
    OutOfStock => ("out_of_stock", CONFLICT, "Out of stock", "A line's SKU has fewer units available than asked for; `param` names the line, and nothing was reserved."),
    InsufficientStock => ("insufficient_stock", CONFLICT, "Conflict", "The adjustment would leave fewer units on hand than are reserved for checkouts."),
    VersionMismatch => ("version_mismatch", PRECONDITION_FAILED, "Version mismatch", "The `If-Match` version is not the resource's current version."),
    BodyTooLarge => ("body_too_large", PAYLOAD_TOO_LARGE, "Body too large", "The body is over the size limit."),
    UnsupportedMediaType => ("unsupported_media_type", UNSUPPORTED_MEDIA_TYPE, "Unsupported media type", "The body is not `application/json`."),
    IdempotencyKeyReused => ("idempotency_key_reused", UNPROCESSABLE_ENTITY, "Idempotency-Key reused", "The Idempotency-Key was used before with another method, path or body."),
    InsufficientFunds => ("insufficient_funds", UNPROCESSABLE_ENTITY, "Insufficient funds", "The debit account's available balance is below what the transfer needs."),
    BalanceLimitExceeded => ("balance_limit_exceeded", UNPROCESSABLE_ENTITY, "Balance limit exceeded", "The transfer would take an account past its maximum balance."),
    CurrencyMismatch => ("currency_mismatch", UNPROCESSABLE_ENTITY, "Currency mismatch", "The amount's currency is not the account's (or the hold's)."),
    AccountNotActive => ("account_not_active", UNPROCESSABLE_ENTITY, "Account not active", "An account of the transfer is frozen or closed."),
    AmountExceedsHold => ("amount_exceeds_hold", UNPROCESSABLE_ENTITY, "Amount exceeds hold", "The amount to post is more than the hold's."),
    AccountNotEmpty => ("account_not_empty", UNPROCESSABLE_ENTITY, "Account not empty", "Only an account with a zero balance and no open holds can be closed."),
    BoundsViolated => ("bounds_violated", UNPROCESSABLE_ENTITY, "Bounds violated", "The account's current balances break the new bounds."),
    RuleViolated => ("rule_violated", UNPROCESSABLE_ENTITY, "Rule violated", "The request is well-formed but breaks a rule its schema cannot express (two fields together, a time that has passed); `param` names the field."),
    PayoutLimitExceeded => ("payout_limit_exceeded", UNPROCESSABLE_ENTITY, "Payout limit exceeded", "The payout is over a limit: the rail's per-payment limit, or the business's payout policy; `param` names the field."),
    CopResultNotAccepted => ("cop_result_not_accepted", UNPROCESSABLE_ENTITY, "Confirmation of Payee result not accepted", "The beneficiary's Confirmation of Payee result is not a match; pay it only with `accept_cop_result: true`."),
    WebhookEndpointLimit => ("webhook_endpoint_limit", UNPROCESSABLE_ENTITY, "Webhook endpoint limit", "The business has as many webhook endpoints as it may."),
    ReplayTooLarge => ("replay_too_large", UNPROCESSABLE_ENTITY, "Replay too large", "A webhook replay would leave too many deliveries waiting; replay from later."),
    RateLimited => ("rate_limited", TOO_MANY_REQUESTS, "Too many requests", "Too many requests for this API key; wait `Retry-After` seconds."),
    AuthThrottled => ("auth_throttled", TOO_MANY_REQUESTS, "Too many failed authentications", "Too many failed authentications from this address; wait `Retry-After` seconds."),
    ReplayThrottled => ("replay_throttled", TOO_MANY_REQUESTS, "Replay throttled", "The endpoint was replayed recently or is being replayed; wait `Retry-After` seconds."),
    InternalError => ("internal_error", INTERNAL_SERVER_ERROR, "Internal error", "A bug. Quote the request id."),
    ServiceUnavailable => ("service_unavailable", SERVICE_UNAVAILABLE, "Service unavailable", "A dependency is unavailable; retry with the same Idempotency-Key."),
}

/// How an outside party failed, which fixes the status of its code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DependencyFailure {
    /// 503, with Retry-After: nothing was sent (breaker open, no connection, kept failing).
    Unavailable,
    /// 504: it may or may not have acted; retry with the same Idempotency-Key.
    TimedOut,
    /// 502: its reply failed validation, so nothing was done with it.
    ReplyInvalid,
}

impl DependencyFailure {
    pub const ALL: [DependencyFailure; 3] =
        [DependencyFailure::Unavailable, DependencyFailure::TimedOut, DependencyFailure::ReplyInvalid];

    pub fn status(self) -> StatusCode {
        match self {
            DependencyFailure::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            DependencyFailure::TimedOut => StatusCode::GATEWAY_TIMEOUT,
            DependencyFailure::ReplyInvalid => StatusCode::BAD_GATEWAY,
        }
    }

    pub fn title(self) -> &'static str {
        match self {
            DependencyFailure::Unavailable => "Dependency unavailable",
            DependencyFailure::TimedOut => "Dependency timed out",
            DependencyFailure::ReplyInvalid => "Dependency reply invalid",
        }
    }

    pub fn description(self) -> &'static str {
        match self {
            DependencyFailure::Unavailable => {
                "`<dependency>_unavailable`: an outside party is unavailable and nothing was sent; retry after `Retry-After`."
            }
            DependencyFailure::TimedOut => {
                "`<dependency>_timeout`: an outside party did not answer in time and may have acted; retry with the same Idempotency-Key."
            }
            DependencyFailure::ReplyInvalid => {
                "`<dependency>_reply_invalid`: an outside party's reply failed validation; nothing was done with it."
            }
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(self.as_str())
    }
}
