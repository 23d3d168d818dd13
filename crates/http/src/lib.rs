//! Till's HTTP kit: the conventions of API.md, implemented once and shared by every service.
//!
//! - [`problem`]: RFC 9457 problem+json errors with stable codes ([`ApiError`]).
//! - [`request_id`]: the `Request-Id` of every response and the request's tracing span.
//! - [`body`]: request bodies bounded in size and in time.
//! - [`extract`]: JSON, query and path extractors whose rejections are problems.
//! - [`pagination`]: cursor pagination (`limit`, `starting_after`, `has_more`).
//! - [`auth`]: roles, the authenticated [`auth::Principal`] and the route permission check.
//! - [`internal`]: one service calling another's API in process, as a business.
//! - [`rate_limit`]: a token bucket per API key.
//! - [`headers`]: security headers on every response.
//! - [`secrets`]: responses that carry a secret (never cached, sealed at rest).
//! - [`unit_of_work`]: one database transaction per request, and for every POST the
//!   Idempotency-Key protocol, stored in that same transaction.
//! - [`recovery`]: a POST that calls an outside party, in atomic phases with recovery
//!   points, resumable after a crash.

pub mod auth;
pub mod body;
pub mod extract;
pub mod fallback;
pub mod headers;
pub mod internal;
pub mod pagination;
pub mod problem;
pub mod rate_limit;
pub mod recovery;
pub mod request_id;
pub mod secrets;
pub mod service;
pub mod unit_of_work;
pub mod update;

pub use problem::{ApiError, ErrorCode, Problem};

/// The migrations of the HTTP kit's own tables (schema `api`: idempotency keys).
pub static MIGRATIONS: till_db::SchemaMigrations = till_db::SchemaMigrations { schema: "api", migrator: &MIGRATOR };
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");
