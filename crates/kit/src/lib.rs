//! Till's kit of pure value types: money and ISO 4217 currencies, typed prefixed ids,
//! masked secrets, secrets sealed at rest, human text and validated metadata.
//!
//! Nothing here performs I/O or knows about HTTP or SQL; every service depends on it.

pub mod bank;
pub mod currency;
pub mod errors;
pub mod id;
pub mod metadata;
pub mod money;
pub mod schema;
pub mod sealing;
pub mod secret;
pub mod text;

pub use currency::{Currency, UnknownCurrency};
pub use id::IdError;
pub use metadata::{Metadata, MetadataError};
pub use money::{Money, MoneyError};
pub use sealing::Keyring;
pub use secret::Secret;
pub use text::{HumanText, TextError};

pub use id::{ApiKeyId, AuditEventId, BusinessId, RequestId};

/// Re-exports for `typed_id!`, so crates that declare ids need no extra dependencies.
#[doc(hidden)]
pub mod __private {
    pub use serde;
    pub use serde_json;
    pub use utoipa;
    pub use uuid;
}
