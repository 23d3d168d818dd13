//! Till's composition root. Services contribute routes; this crate decides how they are
//! mounted, which middleware guards them, what each route needs (the permission table),
//! how the OpenAPI document is assembled, and how the server starts and stops.

pub mod app;
pub mod config;
pub mod contract;
pub mod jobs;
pub mod openapi;
pub mod permissions;
pub mod serve;

pub use app::{build, AppParts, Extension};
pub use config::Config;
pub use serve::{serve, ConnectionLimits};

/// Every schema's migrations, in the order they must run.
pub fn migrations() -> [&'static till_db::SchemaMigrations; 6] {
    // The events schema comes before the services, whose outboxes register with it.
    [
        &till_db::MIGRATIONS,
        &till_http::MIGRATIONS,
        &till_events::MIGRATIONS,
        &till_webhooks::MIGRATIONS,
        &till_access::MIGRATIONS,
        &till_ledger::MIGRATIONS,
    ]
}
