//! Extractors whose rejections are problems: JSON bodies (415 for another content type,
//! 413 over the limit, 400 with the offending field for bad or unknown fields), query
//! strings (400) and path ids (404: a malformed id names no resource).

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header;
use axum::http::request::Parts;
use bytes::Bytes;
use serde::de::DeserializeOwned;

use crate::problem::ApiError;
use crate::ErrorCode;

/// A JSON request body. Request types use `#[serde(deny_unknown_fields)]`, so a typo is a
/// 400 that names the field rather than a silently ignored value.
pub struct ApiJson<T>(pub T);

pub use crate::body::too_large as body_too_large;

fn unsupported_media_type() -> ApiError {
    ApiError::new(ErrorCode::UnsupportedMediaType, "Send the body as `Content-Type: application/json`.")
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
    let parsed = serde_path_to_error::deserialize(&mut deserializer);
    let value = match parsed {
        Ok(value) => value,
        // JSON has one kind of number: `2500.0` is the integer 2500 (JSON Schema says so
        // too), which serde will not read as an i64. Only then is the body read again
        // with such numbers made integers, so the common body pays nothing for it.
        // (`from_slice` refuses trailing data itself.)
        Err(error) if error.inner().to_string().starts_with("invalid type: floating point") => {
            let mut document: serde_json::Value = serde_json::from_slice(bytes).map_err(body_error_plain)?;
            integral_floats_to_integers(&mut document);
            return serde_path_to_error::deserialize(document).map_err(body_error);
        }
        Err(error) => return Err(body_error(error)),
    };
    deserializer.end().map_err(|error| {
        ApiError::new(
            ErrorCode::InvalidJson,
            format!("The body must be one JSON document and nothing after it: {error}"),
        )
    })?;
    Ok(value)
}

fn body_error(error: serde_path_to_error::Error<serde_json::Error>) -> ApiError {
    let path = error.path().to_string();
    let mut problem = body_error_plain(error.into_inner());
    if path != "." {
        problem = problem.with_param(path);
    }
    problem
}

fn body_error_plain(error: serde_json::Error) -> ApiError {
    let message = error.to_string();
    let code = if message.starts_with("unknown field") { ErrorCode::UnknownField } else { ErrorCode::InvalidJson };
    ApiError::new(code, message)
}

/// Makes every number with no fractional part that fits an i64 (or u64) an integer.
fn integral_floats_to_integers(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Number(number) if number.is_f64() => {
            let Some(float) = number.as_f64() else { return };
            // Exact only within ±2^53; beyond, a float is not a trustworthy integer.
            const EXACT: f64 = 9_007_199_254_740_992.0;
            if float.fract() == 0.0 && float.abs() <= EXACT {
                let text = format!("{float:.0}");
                if let Ok(integer) = text.parse::<i64>() {
                    *value = serde_json::Value::from(integer);
                }
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(integral_floats_to_integers),
        serde_json::Value::Object(fields) => fields.values_mut().for_each(integral_floats_to_integers),
        _ => {}
    }
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
        let uri = &parts.uri;
        axum::extract::Query::<T>::try_from_uri(uri).map(|axum::extract::Query(value)| ApiQuery(value)).map_err(
            |rejection| {
                let message = rejection.body_text();
                let code =
                    if message.contains("unknown field") { ErrorCode::UnknownField } else { ErrorCode::InvalidRequest };
                ApiError::new(code, message).with_param("query")
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
        // The optional body's schema admits `null`, which says "no body" as plainly.
        parse_json::<Option<T>>(&bytes).map(|body| ApiJsonOrEmpty(body.unwrap_or_default()))
    }
}
