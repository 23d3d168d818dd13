//! Request bodies, bounded in size and in time.
//!
//! The outermost layers wrap every request body: a `Content-Length` over the limit is a
//! 413 at once, before a byte is read (a client announcing 10 GB gets its answer now,
//! not after a megabyte); the body may not grow past the limit however it is sent
//! (chunked); and it must arrive within the read timeout, counted from when the request's
//! head was read, so a body trickled one byte at a time cannot hold a connection for
//! long. The body is not read here: only handlers that need it read it, after
//! authentication, through [`collect`].

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http_body::Frame;
use http_body_util::BodyExt;

use crate::problem::ApiError;
use crate::ErrorCode;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyLimits {
    pub bytes_max: usize,
    pub read_timeout: Duration,
}

/// The body did not arrive within the read timeout.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within {0:?}")]
pub struct BodyTimedOut(Duration);

pub fn too_large() -> ApiError {
    ApiError::new(ErrorCode::BodyTooLarge, "The request body is over the size limit.")
}

fn timed_out() -> ApiError {
    ApiError::new(ErrorCode::RequestTimeout, "The request body did not arrive in time.")
}

/// The connection cannot be reused after a body was refused unread.
fn closing(error: ApiError) -> Response {
    let mut response = error.into_response();
    response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// Outer middleware: refuses an announced body over the limit, and bounds the rest.
pub async fn middleware(State(limits): State<BodyLimits>, request: Request, next: Next) -> Response {
    let announced = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .map(|value| value.to_str().ok().and_then(|text| text.trim().parse::<u64>().ok()));
    match announced {
        Some(None) => return closing(ApiError::invalid("Content-Length", "Content-Length is not a number of bytes.")),
        Some(Some(length)) if length > u64::try_from(limits.bytes_max).unwrap_or(u64::MAX) => {
            return closing(too_large())
        }
        _ => {}
    }
    let (parts, body) = request.into_parts();
    let bounded = http_body_util::Limited::new(
        Deadline { inner: body, sleep: Box::pin(tokio::time::sleep(limits.read_timeout)), limit: limits.read_timeout },
        limits.bytes_max,
    );
    let response = next.run(Request::from_parts(parts, Body::new(bounded))).await;
    if response.status() == StatusCode::PAYLOAD_TOO_LARGE || response.status() == StatusCode::REQUEST_TIMEOUT {
        let mut response = response;
        response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
        return response;
    }
    response
}

/// Reads a (bounded) request body: 413 past the size limit, 408 past the read timeout.
pub async fn collect(body: Body) -> Result<Bytes, ApiError> {
    match body.collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) => {
            let error: Box<dyn std::error::Error + Send + Sync> = error.into_inner();
            if caused_by::<http_body_util::LengthLimitError>(error.as_ref()) {
                Err(too_large())
            } else if caused_by::<BodyTimedOut>(error.as_ref()) {
                Err(timed_out())
            } else {
                Err(ApiError::invalid("body", format!("The request body could not be read: {error}")))
            }
        }
    }
}

/// Whether `error` or one of its causes is a `T` (bodies wrap each other's errors).
fn caused_by<T: std::error::Error + 'static>(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(error);
    while let Some(error) = current {
        if error.is::<T>() {
            return true;
        }
        current = error.source();
    }
    false
}

/// A body that fails once its deadline has passed.
struct Deadline {
    inner: Body,
    sleep: Pin<Box<tokio::time::Sleep>>,
    limit: Duration,
}

impl http_body::Body for Deadline {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if self.sleep.as_mut().poll(context).is_ready() {
            return Poll::Ready(Some(Err(Box::new(BodyTimedOut(self.limit)))));
        }
        Pin::new(&mut self.inner).poll_frame(context).map_err(|error| Box::new(error) as Self::Error)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
