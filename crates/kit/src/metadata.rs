//! Metadata: the small free-form string map that clients may attach to resources.
//! The limits are API.md's: at most 20 keys of at most 40 characters, values of at most
//! 500 characters. Keys and values are human text (`crate::text`): no control or
//! bidirectional control characters.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::text::{self, TextError};

pub const METADATA_KEYS_MAX: usize = 20;
pub const METADATA_KEY_CHARS_MAX: usize = 40;
pub const METADATA_VALUE_CHARS_MAX: usize = 500;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Metadata(BTreeMap<String, String>);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetadataError {
    #[error("metadata has more than {METADATA_KEYS_MAX} keys")]
    TooManyKeys,
    #[error("metadata keys must be 1 to {METADATA_KEY_CHARS_MAX} characters")]
    KeyLength,
    #[error("metadata values must be at most {METADATA_VALUE_CHARS_MAX} characters")]
    ValueLength,
    #[error("metadata keys and values {0}")]
    Text(TextError),
}

impl Metadata {
    pub fn parse(map: BTreeMap<String, String>) -> Result<Metadata, MetadataError> {
        if map.len() > METADATA_KEYS_MAX {
            return Err(MetadataError::TooManyKeys);
        }
        for (key, value) in &map {
            match text::check(key, METADATA_KEY_CHARS_MAX) {
                _ if key.is_empty() => return Err(MetadataError::KeyLength),
                Err(TextError::TooLong { .. }) => return Err(MetadataError::KeyLength),
                Err(refusal) => return Err(MetadataError::Text(refusal)),
                Ok(()) => {}
            }
            match text::check(value, METADATA_VALUE_CHARS_MAX) {
                Err(TextError::TooLong { .. }) => return Err(MetadataError::ValueLength),
                Err(refusal) => return Err(MetadataError::Text(refusal)),
                Ok(()) => {}
            }
        }
        Ok(Metadata(map))
    }

    pub fn as_map(&self) -> &BTreeMap<String, String> {
        &self.0
    }
}

impl<'de> Deserialize<'de> for Metadata {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let map = BTreeMap::<String, String>::deserialize(deserializer)?;
        Metadata::parse(map).map_err(serde::de::Error::custom)
    }
}

impl utoipa::PartialSchema for Metadata {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        let text = |min: usize, max: usize| {
            utoipa::openapi::ObjectBuilder::new()
                .schema_type(utoipa::openapi::schema::Type::String)
                .min_length(Some(min))
                .max_length(Some(max))
                .pattern(Some(text::HUMAN_TEXT_PATTERN))
        };
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::Object)
            .property_names(Some(text(1, METADATA_KEY_CHARS_MAX)))
            .additional_properties(Some(text(0, METADATA_VALUE_CHARS_MAX)))
            .max_properties(Some(METADATA_KEYS_MAX))
            .description(Some(
                "Up to 20 string keys (at most 40 characters) with string values (at most 500 characters).",
            ))
            .into()
    }
}

impl utoipa::ToSchema for Metadata {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits() {
        let many: BTreeMap<String, String> = (0..21).map(|i| (format!("k{i}"), String::new())).collect();
        assert_eq!(Metadata::parse(many), Err(MetadataError::TooManyKeys));
        let long_key = BTreeMap::from([("k".repeat(41), String::new())]);
        assert_eq!(Metadata::parse(long_key), Err(MetadataError::KeyLength));
        let long_value = BTreeMap::from([("k".to_string(), "v".repeat(501))]);
        assert_eq!(Metadata::parse(long_value), Err(MetadataError::ValueLength));
        let fine = BTreeMap::from([("k".repeat(40), "é".repeat(500))]);
        assert!(Metadata::parse(fine).is_ok());
        let nul = BTreeMap::from([("k".to_string(), "a\0b".to_string())]);
        assert_eq!(Metadata::parse(nul), Err(MetadataError::Text(TextError::ControlCharacter)));
        let nul_key = BTreeMap::from([("k\0".to_string(), String::new())]);
        assert_eq!(Metadata::parse(nul_key), Err(MetadataError::Text(TextError::ControlCharacter)));
        let bidi = BTreeMap::from([("k".to_string(), "\u{202e}".to_string())]);
        assert_eq!(Metadata::parse(bidi), Err(MetadataError::Text(TextError::BidiControl)));
    }
}
