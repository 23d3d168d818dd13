//! Extractors whose rejections are problems: JSON bodies (415 for another content type,
//! 413 over the limit, 400 with the offending field for bad or unknown fields), query
//! strings (400) and path ids (404: a malformed id names no resource).

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use bytes::Bytes;
use serde::de::DeserializeOwned;

use crate::problem::ApiError;

/// A JSON request body. Request types use `#[serde(deny_unknown_fields)]`, so a typo is a
/// 400 that names the field rather than a silently ignored value.
pub struct ApiJson<T>(pub T);

pub use crate::body::too_large as body_too_large;

fn unsupported_media_type() -> ApiError {
    ApiError::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
        "Unsupported media type",
        "Send the body as `Content-Type: application/json`.",
    )
}

/// The body, within the size limit (413 beyond it) and the read timeout (408).
async fn read_bytes<S: Send + Sync>(request: Request, _state: &S) -> Result<Bytes, ApiError> {
    crate::body::collect(request.into_body()).await
}

fn is_json_content_type(parts: &axum::http::HeaderMap) -> bool {
    let Some(value) = parts.get(header::CONTENT_TYPE).and_then(|value| value.to_str().ok()) else {
        return false;
    };
    let essence = value.split(';').next().unwrap_or_default().trim();
    essence.eq_ignore_ascii_case("application/json")
}

/// Parses JSON bytes into `T`, naming the offending field on failure. Nothing but
/// whitespace may follow the document: `{…} trailing` is refused, so Till never reads a
/// body differently from a proxy or a signer that stops at the first document.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
        let path = error.path().to_string();
        let inner = error.into_inner();
        let message = inner.to_string();
        let code = if message.starts_with("unknown field") { "unknown_field" } else { "invalid_json" };
        let mut problem = ApiError::new(StatusCode::BAD_REQUEST, code, "Invalid request body", message);
        if path != "." {
            problem = problem.with_param(path);
        }
        problem
    })?;
    deserializer.end().map_err(|error| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            "Invalid request body",
            format!("The body must be one JSON document and nothing after it: {error}"),
        )
    })?;
    Ok(value)
}

impl<T, S> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !is_json_content_type(request.headers()) {
            return Err(unsupported_media_type());
        }
        let bytes = read_bytes(request, state).await?;
        parse_json(&bytes).map(ApiJson)
    }
}

/// A query string, with unknown parameters refused.
pub struct ApiQuery<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::try_from_uri(&parts.uri).map(|axum::extract::Query(value)| ApiQuery(value)).map_err(
            |rejection| {
                let message = rejection.body_text();
                let code = if message.contains("unknown field") { "unknown_field" } else { "invalid_request" };
                ApiError::new(StatusCode::BAD_REQUEST, code, "Invalid query", message).with_param("query")
            },
        )
    }
}

/// One path parameter parsed into a typed id. A malformed id cannot name any resource,
/// so it is answered like a missing one (404), as another business's id would be.
pub struct ApiPath<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiPath<T>
where
    T: till_kit::id::TypedId + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let axum::extract::Path(text) = axum::extract::Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|_| ApiError::not_found(T::NOUN))?;
        T::parse_id(&text).map(ApiPath).map_err(|_| ApiError::not_found(T::NOUN))
    }
}

/// A JSON body that may be left out entirely (for actions like "void" whose body is
/// optional): an empty body is `T::default()`; a non-empty one is parsed like [`ApiJson`].
pub struct ApiJsonOrEmpty<T>(pub T);

impl<T, S> FromRequest<S> for ApiJsonOrEmpty<T>
where
    T: DeserializeOwned + Default,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let has_json_type = is_json_content_type(request.headers());
        let bytes = read_bytes(request, state).await?;
        if bytes.is_empty() {
            return Ok(ApiJsonOrEmpty(T::default()));
        }
        if !has_json_type {
            return Err(unsupported_media_type());
        }
        parse_json(&bytes).map(ApiJsonOrEmpty)
    }
}
