//! One service calling another's API, in process.
//!
//! A service that needs another's write (commerce's checkout takes its payment through
//! payments' intents) calls that service's public HTTP API, routed in process through
//! the same router, middleware and unit of work that serve outside clients: the
//! Idempotency-Key protocol, the phases and recovery points of a route that calls a
//! gateway, the permission table and row-level security all apply unchanged, and the
//! caller reads the answer as it would read an outside party's (it validates the body
//! before acting on it). A call is by a service on behalf of one business: it is
//! authenticated by an [`InternalCaller`] in the request's extensions, which only code
//! in this process can put there (nothing on the wire becomes an extension), and it has
//! the [`Role::Finance`](crate::auth::Role) role.
//!
//! Why this and not a function per operation: the route code is the only code that
//! moves a payment, so a saga's step and a client's request cannot drift apart, and a
//! step retried with its key after a crash is answered as a client's retry is (replayed,
//! resumed from its recovery point, or settled by the recovery job). When services run
//! in separate processes, the same call becomes a network call without changing shape.

use std::sync::{Arc, OnceLock};

use axum::body::Body;
use axum::http::{header, HeaderValue, Method, Request, StatusCode};
use axum::Router;
use bytes::Bytes;
use till_kit::BusinessId;
use tower::ServiceExt;

/// The largest answer an internal call reads.
const REPLY_BYTES_MAX: usize = 4 * 1024 * 1024;

/// Who makes an internal call: a service, for one business.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InternalCaller {
    pub business_id: BusinessId,
    /// The calling service's name (`commerce`): its idempotency keys and its audit
    /// entries are its own (`service:commerce`).
    pub service: &'static str,
}

/// The way into the API from inside the process. The composition root hands every
/// service the same one while it mounts them and connects it to the finished router.
#[derive(Clone, Default)]
pub struct Internal {
    router: Arc<OnceLock<Router>>,
}

/// An internal call's answer: its status and body, as a client would get them.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: StatusCode,
    pub body: Bytes,
}

#[derive(Debug, thiserror::Error)]
pub enum InternalError {
    #[error("the internal API is not connected yet (the server has not finished building)")]
    NotConnected,
    #[error("encoding the request: {0}")]
    Encode(#[from] serde_json::Error),
    #[error("building the request: {0}")]
    Request(#[from] axum::http::Error),
    #[error("reading the answer: {0}")]
    Body(String),
}

impl Internal {
    /// Routes calls to `router` from now on. Once: a second router is ignored.
    pub fn connect(&self, router: Router) {
        if self.router.set(router).is_err() {
            tracing::warn!("the internal API was connected twice; the first router stays");
        }
    }

    /// `POST path` with `body` and `idempotency_key`, as `caller`.
    pub async fn post(
        &self,
        caller: InternalCaller,
        path: &str,
        idempotency_key: &str,
        body: &impl serde::Serialize,
    ) -> Result<Reply, InternalError> {
        let body = serde_json::to_vec(body)?;
        let request = Request::builder()
            .method(Method::POST)
            .uri(path)
            .header(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .header("Idempotency-Key", idempotency_key)
            .body(Body::from(body))?;
        self.send(caller, request).await
    }

    /// `GET path`, as `caller`.
    pub async fn get(&self, caller: InternalCaller, path: &str) -> Result<Reply, InternalError> {
        let request = Request::builder().method(Method::GET).uri(path).body(Body::empty())?;
        self.send(caller, request).await
    }

    async fn send(&self, caller: InternalCaller, mut request: Request<Body>) -> Result<Reply, InternalError> {
        let router = self.router.get().ok_or(InternalError::NotConnected)?.clone();
        request.extensions_mut().insert(caller);
        // The router's error type is Infallible: every failure is an answer.
        let Ok(response) = router.oneshot(request).await;
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), REPLY_BYTES_MAX)
            .await
            .map_err(|error| InternalError::Body(error.to_string()))?;
        Ok(Reply { status, body })
    }
}
