//! Till's composition root. Each service hands it one registration value
//! ([`till_http::service::Service`], listed in [`SERVICES`]); this crate decides how they are
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

/// The services, in the order their schemas migrate and they mount: one line each. The
/// events service comes first (the others' migrations register their outboxes with it),
/// and the ledger before any service that posts to it in process.
pub static SERVICES: [&till_http::service::Service; 9] = [
    &till_events::service::SERVICE,
    &till_webhooks::service::SERVICE,
    &till_access::service::SERVICE,
    &till_ledger::service::SERVICE,
    &till_payments::service::SERVICE,
    &till_payouts::service::SERVICE,
    &till_commerce::service::SERVICE,
    &till_notify::service::SERVICE,
    &till_crm::service::SERVICE,
];

/// Every schema's migrations, in the order they must run: the kits' (the database's
/// helpers, the API's idempotency and recovery tables), then each service's.
pub fn migrations() -> Vec<&'static till_db::SchemaMigrations> {
    [&till_db::MIGRATIONS, &till_http::MIGRATIONS]
        .into_iter()
        .chain(SERVICES.iter().map(|service| service.migrations))
        .collect()
}
