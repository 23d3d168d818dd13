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
    // Every request body is a JSON object (API.md). serde would read a struct from an
    // array too (`[null, null]` as a struct of two optional fields), so anything else is
    // refused before it is read.
    if bytes.iter().find(|byte| !byte.is_ascii_whitespace()).is_some_and(|first| *first != b'{') {
        return Err(ApiError::new(ErrorCode::InvalidJson, "The body must be a JSON object."));
    }
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let parsed = serde_path_to_error::deserialize(&mut deserializer);
    let value = match parsed {
        Ok(value) => value,
        // JSON has one kind of number: `2500.0` and `25e2` are the integer 2500 (JSON
        // Schema says so too), which serde will not read as an i64. Only then is the body
        // read again, with every such literal written as the integer it exactly is, so the
        // common body pays nothing. The literal's digits decide, never an f64: a float
        // would read `2500.0000000000001` as 2500.
        Err(error) if error.inner().to_string().starts_with("invalid type: floating point") => {
            let Some(rewritten) = integral_literals_as_integers(bytes) else { return Err(body_error(error)) };
            return parse_json_once(&rewritten);
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

/// [`parse_json`] without the second reading.
fn parse_json_once<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(body_error)?;
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

/// The JSON text with every number literal that has a fraction or an exponent but is
/// exactly an integer (`2500.0`, `25e2`, `-0.0`) written as that integer; `None` when
/// there is none (nothing to read again). Literals that are not exact integers, and
/// everything inside strings, are left as they are.
fn integral_literals_as_integers(bytes: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut rewritten = false;
    let mut index = 0;
    while let Some(&byte) = bytes.get(index) {
        if byte == b'"' {
            // A string, copied whole: up to its closing quote, skipping escaped ones.
            let start = index;
            index += 1;
            while let Some(&inner) = bytes.get(index) {
                index += if inner == b'\\' { 2 } else { 1 };
                if inner == b'"' {
                    break;
                }
            }
            out.extend_from_slice(bytes.get(start..index.min(bytes.len()))?);
        } else if byte == b'-' || byte.is_ascii_digit() {
            let start = index;
            while bytes.get(index).is_some_and(|b| b.is_ascii_digit() || matches!(b, b'-' | b'+' | b'.' | b'e' | b'E'))
            {
                index += 1;
            }
            let literal = bytes.get(start..index)?;
            match exact_integer(literal) {
                Some(integer) if integer.as_bytes() != literal => {
                    out.extend_from_slice(integer.as_bytes());
                    rewritten = true;
                }
                _ => out.extend_from_slice(literal),
            }
        } else {
            out.push(byte);
            index += 1;
        }
    }
    rewritten.then_some(out)
}

/// The integer a JSON number literal exactly is, as digits (at most 20 of them), or
/// `None` if it has a non-zero fractional part, is out of that range or is malformed.
fn exact_integer(literal: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(literal).ok()?;
    let (negative, unsigned) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (mantissa, exponent) = match unsigned.find(['e', 'E']) {
        Some(at) => (unsigned.get(..at)?, unsigned.get(at + 1..)?.parse::<i32>().ok()?),
        None => (unsigned, 0),
    };
    let (whole, fraction) = match mantissa.split_once('.') {
        Some((_, "")) => return None,
        Some(parts) => parts,
        None => (mantissa, ""),
    };
    if whole.is_empty() || !whole.bytes().all(|b| b.is_ascii_digit()) || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if !(-400..=400).contains(&exponent) {
        return None;
    }
    let digits: String = [whole, fraction].concat();
    // Where the decimal point falls in `digits` once the exponent has moved it.
    let point = i64::try_from(whole.len()).ok()? + i64::from(exponent);
    let point = usize::try_from(point.max(0)).ok()?;
    let (integral, rest) = if point >= digits.len() {
        (format!("{digits}{}", "0".repeat(point - digits.len())), "")
    } else {
        (digits.get(..point)?.to_string(), digits.get(point..)?)
    };
    if !rest.bytes().all(|b| b == b'0') {
        return None;
    }
    let integral = integral.trim_start_matches('0');
    if integral.len() > 20 {
        return None;
    }
    Some(match (integral.is_empty(), negative) {
        (true, _) => String::from("0"),
        (false, true) => format!("-{integral}"),
        (false, false) => integral.to_string(),
    })
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
        if !bytes.is_empty() && !has_json_type {
            return Err(unsupported_media_type());
        }
        parse_json_or_empty(&bytes).map(ApiJsonOrEmpty)
    }
}

/// An optional JSON body, from bytes already read (a phased route's): empty or `null` is
/// `T::default()` (the optional body's schema admits `null`, which says "no body" as
/// plainly); anything else is parsed like [`ApiJson`].
pub fn parse_json_or_empty<T: DeserializeOwned + Default>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.is_empty() || bytes.trim_ascii() == b"null" {
        return Ok(T::default());
    }
    parse_json::<T>(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Default, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Optional {
        #[allow(dead_code)]
        limit: Option<i64>,
    }

    #[test]
    fn only_an_object_is_a_body() {
        for body in [&b"[null]"[..], b"[]", b" [1]", b"1", b"\"x\"", b"true"] {
            let refused = parse_json::<Optional>(body).expect_err("refused");
            assert_eq!(refused.code, ErrorCode::InvalidJson, "{body:?}");
        }
        assert!(parse_json::<Optional>(b" {}").is_ok());
        assert!(parse_json_or_empty::<Optional>(b"").is_ok());
        assert!(parse_json_or_empty::<Optional>(b"null").is_ok());
        assert!(parse_json_or_empty::<Optional>(b"[null]").is_err());
    }

    #[derive(Debug, serde::Deserialize)]
    struct Amount {
        amount: i64,
        #[serde(default)]
        note: Option<String>,
    }

    #[test]
    fn exact_integers_are_read_from_the_literal_never_through_a_float() {
        for (text, expected) in [
            ("2500.0", "2500"),
            ("25e2", "2500"),
            ("2.5E3", "2500"),
            ("-0.0", "0"),
            ("1e18", "1000000000000000000"),
            ("-7.000", "-7"),
            ("1000e-3", "1"),
        ] {
            assert_eq!(exact_integer(text.as_bytes()).as_deref(), Some(expected), "{text}");
        }
        for text in ["2500.0000000000001", "1.5", "1.25e1", "1e-1", "1e400", "1e25", "-", "1.", ".5", "1e"] {
            assert_eq!(exact_integer(text.as_bytes()), None, "{text}");
        }
    }

    #[test]
    fn a_body_with_an_integral_float_is_read_and_one_with_a_fraction_is_refused() {
        let amount: Amount = parse_json(br#"{"amount": 2500.0, "note": "2.5 \"x\" 3.0"}"#).expect("integral");
        assert_eq!(amount.amount, 2500);
        assert_eq!(amount.note.as_deref(), Some("2.5 \"x\" 3.0"), "strings are left alone");
        // A float would round this to 2500; the literal says it is not an integer.
        let refused = parse_json::<Amount>(br#"{"amount": 2500.0000000000001}"#).expect_err("a fraction");
        assert_eq!((refused.code, refused.param.as_deref()), (ErrorCode::InvalidJson, Some("amount")));
        let trailing = parse_json::<Amount>(br#"{"amount": 1.0} {}"#).expect_err("trailing");
        assert_eq!(trailing.code, ErrorCode::InvalidJson);
    }
}
