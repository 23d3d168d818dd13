//! Typed, prefixed resource ids over UUIDv7.
//!
//! On the wire an id is `<prefix>_<32 lower-case hex digits>` (e.g. `biz_0193…`); in the
//! database it is the bare UUID. The prefix makes a pasted id self-describing and lets
//! the parser refuse an account id where a business id is expected. UUIDv7 puts the
//! creation time first, so ids sort by creation and make good B-tree keys and cursors.

use uuid::Uuid;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("expected an id starting with `{expected}_`")]
    WrongPrefix { expected: &'static str },
    #[error("the id is malformed")]
    Malformed,
}

/// Parses `<prefix>_<32 hex>` into a UUID. Upper-case hex is refused so that every id
/// has exactly one spelling (ids are compared as strings by clients).
pub fn parse_prefixed(prefix: &'static str, text: &str) -> Result<Uuid, IdError> {
    let rest = text
        .strip_prefix(prefix)
        .and_then(|rest| rest.strip_prefix('_'))
        .ok_or(IdError::WrongPrefix { expected: prefix })?;
    let is_lower_hex = rest.len() == 32 && rest.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if !is_lower_hex {
        return Err(IdError::Malformed);
    }
    Uuid::try_parse(rest).map_err(|_| IdError::Malformed)
}

/// What every typed id can do, for code generic over ids (path extractors, cursors).
pub trait TypedId: Sized + Copy {
    /// What the id names, for messages ("API key").
    const NOUN: &'static str;
    fn parse_id(text: &str) -> Result<Self, IdError>;
}

/// Declares a typed id: `typed_id!(BusinessId, "biz", "business", "A business (tenant).")`.
#[macro_export]
macro_rules! typed_id {
    ($name:ident, $prefix:literal, $noun:literal, $doc:literal) => {
        #[doc = $doc]
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name($crate::__private::uuid::Uuid);

        impl $name {
            pub const PREFIX: &'static str = $prefix;

            /// A new id for a resource being created now (UUIDv7: time-ordered).
            pub fn generate() -> Self {
                Self($crate::__private::uuid::Uuid::now_v7())
            }

            /// Wraps a UUID read back from storage.
            pub fn from_uuid(uuid: $crate::__private::uuid::Uuid) -> Self {
                Self(uuid)
            }

            pub fn as_uuid(&self) -> $crate::__private::uuid::Uuid {
                self.0
            }

            pub fn parse(text: &str) -> Result<Self, $crate::id::IdError> {
                $crate::id::parse_prefixed($prefix, text).map(Self)
            }
        }

        impl $crate::id::TypedId for $name {
            const NOUN: &'static str = $noun;
            fn parse_id(text: &str) -> Result<Self, $crate::id::IdError> {
                Self::parse(text)
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                write!(f, "{}_{}", $prefix, self.0.simple())
            }
        }

        impl ::std::fmt::Debug for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                ::std::fmt::Display::fmt(self, f)
            }
        }

        impl ::std::str::FromStr for $name {
            type Err = $crate::id::IdError;
            fn from_str(text: &str) -> Result<Self, Self::Err> {
                Self::parse(text)
            }
        }

        impl $crate::__private::serde::Serialize for $name {
            fn serialize<S: $crate::__private::serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_str(self)
            }
        }

        impl<'de> $crate::__private::serde::Deserialize<'de> for $name {
            fn deserialize<D: $crate::__private::serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = <::std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
                Self::parse(&text).map_err($crate::__private::serde::de::Error::custom)
            }
        }

        impl $crate::__private::utoipa::PartialSchema for $name {
            fn schema() -> $crate::__private::utoipa::openapi::RefOr<$crate::__private::utoipa::openapi::schema::Schema>
            {
                $crate::__private::utoipa::openapi::ObjectBuilder::new()
                    .schema_type($crate::__private::utoipa::openapi::schema::Type::String)
                    .pattern(Some(concat!("^", $prefix, "_[0-9a-f]{32}$")))
                    .description(Some($doc))
                    .examples([$crate::__private::serde_json::json!(concat!(
                        $prefix,
                        "_01936f0e6c2a7cc2b0a6a4e5f3d2c1b0"
                    ))])
                    .into()
            }
        }

        impl $crate::__private::utoipa::ToSchema for $name {}
    };
}

typed_id!(BusinessId, "biz", "business", "A business: the tenant that owns every other resource.");
typed_id!(ApiKeyId, "key", "API key", "An API key of a business.");
typed_id!(RequestId, "req", "request", "The id of one HTTP request, echoed in `Request-Id`.");
typed_id!(AuditEventId, "aud", "audit event", "An entry of the security audit log.");

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[allow(dead_code)]
    mod test_ids {
        crate::typed_id!(AccountId, "acct", "account", "An id type only these tests use.");
    }
    use test_ids::AccountId;

    #[test]
    fn generated_ids_sort_by_creation() {
        let first = BusinessId::generate();
        let second = BusinessId::generate();
        assert!(first < second);
        assert!(first.to_string() < second.to_string());
    }

    #[test]
    fn prefix_mismatch_is_refused() {
        let business = BusinessId::generate().to_string();
        assert_eq!(AccountId::parse(&business), Err(IdError::WrongPrefix { expected: "acct" }));
        let upper = business.to_uppercase().replacen("BIZ", "biz", 1);
        assert_eq!(BusinessId::parse(&upper), Err(IdError::Malformed));
        assert_eq!(BusinessId::parse("biz_"), Err(IdError::Malformed));
        assert_eq!(BusinessId::parse("biz"), Err(IdError::WrongPrefix { expected: "biz" }));
        assert_eq!(BusinessId::parse("bizz_0193"), Err(IdError::WrongPrefix { expected: "biz" }));
    }

    #[test]
    fn serde_uses_the_prefixed_form() {
        let id = ApiKeyId::generate();
        let json = serde_json::to_string(&id).unwrap_or_default();
        assert_eq!(json, format!("\"{id}\""));
        assert_eq!(serde_json::from_str::<ApiKeyId>(&json).ok(), Some(id));
        assert!(serde_json::from_str::<BusinessId>(&json).is_err());
    }

    proptest! {
        #[test]
        fn display_parse_roundtrip(bits in any::<u128>()) {
            let id = BusinessId::from_uuid(Uuid::from_u128(bits));
            prop_assert_eq!(BusinessId::parse(&id.to_string()), Ok(id));
        }

        #[test]
        fn arbitrary_text_never_panics(text in "\\PC{0,60}") {
            let _ = BusinessId::parse(&text);
        }

        #[test]
        fn any_other_prefix_is_refused(prefix in "[a-z]{1,5}", bits in any::<u128>()) {
            prop_assume!(prefix != "biz");
            let text = format!("{prefix}_{}", Uuid::from_u128(bits).simple());
            prop_assert!(BusinessId::parse(&text).is_err());
        }
    }
}
