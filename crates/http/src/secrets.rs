//! Responses that carry a secret shown once (an API key, a webhook signing secret).
//!
//! A handler wraps such a response in [`shown_once`]. It is then sent with
//! `Cache-Control: no-store`, and the unit of work seals its body with the server's
//! keyring before storing it for idempotent replay (`till_kit::sealing`), so the secret
//! is never at rest in plain text; a replay opens it and answers the same bytes.

use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};

/// The mark of a response that carries a secret (a response extension).
#[derive(Debug, Clone, Copy)]
pub struct CarriesSecret;

/// `response`, marked as carrying a secret: never cached, sealed at rest.
pub fn shown_once(response: impl IntoResponse) -> Response {
    let mut response = response.into_response();
    response.extensions_mut().insert(CarriesSecret);
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}
