//! `Request-Id` on every response, and the tracing span of every request.
//!
//! A client-sent `Request-Id` is kept when it is a safe token (so clients can correlate
//! their logs with ours) and replaced otherwise, so a hostile value never reaches logs or
//! headers. The id is also kept in a task-local so that error bodies can quote it.

use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

use till_kit::RequestId;

pub static REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("request-id");
const CLIENT_REQUEST_ID_CHARS_MAX: usize = 64;

tokio::task_local! {
    static CURRENT: String;
}

/// The current request's id, inside a request.
pub fn current() -> Option<String> {
    CURRENT.try_with(Clone::clone).ok()
}

/// Runs `future` as part of the request `id` (for work that runs outside a request's
/// task on its behalf, such as a job resuming it): `current` answers `id` inside it.
pub async fn scope<F: std::future::Future>(id: String, future: F) -> F::Output {
    CURRENT.scope(id, future).await
}

fn is_safe_token(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= CLIENT_REQUEST_ID_CHARS_MAX
        && value.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Outermost middleware: assigns the id, opens the request span, stamps the response.
pub async fn middleware(request: Request, next: Next) -> Response {
    let id = request
        .headers()
        .get(&REQUEST_ID_HEADER)
        .and_then(|value| value.to_str().ok())
        .filter(|value| is_safe_token(value))
        .map(str::to_owned)
        .unwrap_or_else(|| RequestId::generate().to_string());
    let span = tracing::info_span!(
        "request",
        request_id = %id,
        method = %request.method(),
        path = %request.uri().path(),
        business_id = tracing::field::Empty,
        status = tracing::field::Empty,
    );
    let started = std::time::Instant::now();
    let mut response = CURRENT.scope(id.clone(), next.run(request)).instrument(span.clone()).await;
    span.record("status", response.status().as_u16());
    span.in_scope(|| {
        tracing::info!(elapsed_ms = started.elapsed().as_millis() as u64, "request finished");
    });
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID_HEADER.clone(), value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::is_safe_token;

    #[test]
    fn safe_tokens() {
        assert!(is_safe_token("req_abc-123.x"));
        assert!(!is_safe_token(""));
        assert!(!is_safe_token("a b"));
        assert!(!is_safe_token("<script>"));
        assert!(!is_safe_token("line\nbreak"));
        assert!(!is_safe_token(&"a".repeat(65)));
    }
}
