//! What every `PATCH` shares: fields that may be sent as `null` to clear them, and the
//! `If-Match` precondition on the resource's `version` (API.md, "Headers").

use axum::http::{header, HeaderMap};
use serde::{Deserialize, Deserializer};

use crate::{ApiError, ErrorCode};

/// For `#[serde(default, deserialize_with = "present")]` on an `Option<Option<T>>`: a
/// field left out is `None`, a field sent as `null` is `Some(None)`.
pub fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(deserializer: D) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(deserializer).map(Some)
}

/// Checks `If-Match`, when sent, against the resource's `version` (quoted or not): 400
/// if it is no version, 412 `version_mismatch` if it is another. `noun` names the
/// resource in the answer.
pub fn check_if_match(headers: &HeaderMap, version: i32, noun: &str) -> Result<(), ApiError> {
    let Some(expected) = headers.get(header::IF_MATCH) else {
        return Ok(());
    };
    let expected = expected.to_str().unwrap_or_default().trim().trim_matches('"');
    if expected.is_empty() || expected.len() > 18 || !expected.bytes().all(|byte| byte.is_ascii_digit()) {
        return Err(ApiError::invalid("If-Match", format!("If-Match must be the {noun}'s version, a whole number.")));
    }
    if expected != version.to_string() {
        return Err(ApiError::new(
            ErrorCode::VersionMismatch,
            format!("The {noun} is at version {version}; re-read it and try again."),
        )
        .with_param("If-Match"));
    }
    Ok(())
}
