//! What can go wrong calling an outside party, and the problem each becomes.

use std::time::Duration;

use till_http::problem::DependencyFailure;
use till_http::{ApiError, ErrorCode};

/// A dependency's name and the stable problem codes its failures become (API.md:
/// `<dependency>_unavailable` with Retry-After when nothing was sent, `…_reply_invalid`
/// when a reply failed validation, `…_timeout` when it may or may not have acted).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Names {
    pub dependency: &'static str,
    pub unavailable: &'static str,
    pub reply_invalid: &'static str,
    pub timeout: &'static str,
}

/// A reply that cannot be acted on: what was wrong with it, naming the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {why}")]
pub struct InvalidReply {
    pub field: String,
    pub why: String,
}

impl InvalidReply {
    pub fn new(field: impl Into<String>, why: impl Into<String>) -> InvalidReply {
        InvalidReply { field: field.into(), why: why.into() }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum OutboundError {
    /// Nothing was sent: the breaker is open, or every place for a call stayed taken.
    #[error("{} is unavailable ({why}); nothing was sent", names.dependency)]
    Unavailable { names: Names, why: &'static str, retry_after: Duration },
    /// Nothing was sent: no connection could be made.
    #[error("could not connect to {}: {cause}", names.dependency)]
    Connect { names: Names, cause: String },
    /// The request may have reached the party, which may or may not have acted.
    #[error("{} did not answer in time: {cause}", names.dependency)]
    TimedOut { names: Names, cause: String },
    /// The party kept failing (5xx, 429) through every retry allowed.
    #[error("{} answered {status}", names.dependency)]
    Failing { names: Names, status: u16, retry_after: Option<Duration> },
    /// The reply failed validation: nothing may act on it.
    #[error("{}'s reply is invalid: {reason}", names.dependency)]
    InvalidReply { names: Names, reason: InvalidReply },
    /// The request could not be made (a bug in the caller: a bad URL or header).
    #[error("the request to {} could not be made: {cause}", names.dependency)]
    Request { names: Names, cause: String },
}

impl OutboundError {
    /// Whether the outside party may have acted on the request: the caller must then
    /// settle the outcome (a status query, a webhook, a retry with the same idempotency
    /// key) rather than assume it failed.
    pub fn may_have_acted(&self) -> bool {
        match self {
            OutboundError::Unavailable { .. } | OutboundError::Connect { .. } | OutboundError::Request { .. } => false,
            OutboundError::TimedOut { .. } | OutboundError::Failing { .. } | OutboundError::InvalidReply { .. } => true,
        }
    }

    pub fn names(&self) -> Names {
        match self {
            OutboundError::Unavailable { names, .. }
            | OutboundError::Connect { names, .. }
            | OutboundError::TimedOut { names, .. }
            | OutboundError::Failing { names, .. }
            | OutboundError::InvalidReply { names, .. }
            | OutboundError::Request { names, .. } => *names,
        }
    }
}

impl From<OutboundError> for ApiError {
    fn from(error: OutboundError) -> ApiError {
        let names = error.names();
        let unavailable = |retry_after: Duration| {
            let mut problem = ApiError::new(
                ErrorCode::Dependency { code: names.unavailable, failure: DependencyFailure::Unavailable },
                format!("{} is unavailable; nothing was done. Retry after Retry-After seconds.", names.dependency),
            );
            problem.retry_after_seconds = Some(retry_after.as_secs().max(1));
            problem
        };
        match &error {
            OutboundError::Unavailable { retry_after, .. } => {
                tracing::warn!(%error, "an outside party is unavailable");
                unavailable(*retry_after)
            }
            OutboundError::Connect { .. } => {
                tracing::warn!(%error, "an outside party is unreachable");
                unavailable(Duration::from_secs(1))
            }
            OutboundError::Failing { retry_after, .. } => {
                tracing::warn!(%error, "an outside party keeps failing");
                unavailable(retry_after.unwrap_or(Duration::from_secs(1)))
            }
            OutboundError::TimedOut { .. } => {
                tracing::warn!(%error, "an outside party timed out");
                ApiError::new(
                    ErrorCode::Dependency { code: names.timeout, failure: DependencyFailure::TimedOut },
                    format!(
                        "{} did not answer in time; it may or may not have acted. Retry with the same Idempotency-Key.",
                        names.dependency
                    ),
                )
            }
            OutboundError::InvalidReply { .. } => {
                tracing::warn!(%error, "an outside party's reply failed validation");
                ApiError::new(
                    ErrorCode::Dependency { code: names.reply_invalid, failure: DependencyFailure::ReplyInvalid },
                    format!("{}'s reply could not be trusted, so nothing was done with it.", names.dependency),
                )
            }
            OutboundError::Request { .. } => ApiError::internal(&error),
        }
    }
}
