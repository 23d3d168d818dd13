//! Till's database kit.
//!
//! - [`embedded`]: provisions and supervises a private PostgreSQL cluster from the server
//!   binaries installed on the machine (used by `till up` and by the test harness).
//! - [`pool`]: connection pools whose sessions run as the unprivileged `till_app` role, so
//!   row-level security applies to every query the services make.
//! - [`migrate`](mod@migrate): forward-only migrations embedded in the binary, one schema per service.
//! - [`tenant`]: transactions scoped to one business for the row-level-security policies.
//! - [`params`]: numbered parameters for statements assembled from parts.
//! - [`packages`]: the system packages Till needs, installed when missing (when it may).

pub mod embedded;
pub mod migrate;
pub mod packages;
pub mod params;
pub mod pool;
pub mod tenant;

pub use migrate::{migrate, SchemaMigrations};
pub use pool::{connect_app_pool, connect_owner_pool, listen, APP_ROLE};
pub use tenant::{begin_platform, begin_tenant};

/// The base migrations of the database kit itself (schema `till`): the application role
/// and the helper functions that every service's row-level-security policies call.
pub static MIGRATIONS: SchemaMigrations = SchemaMigrations { schema: "till", migrator: &MIGRATOR };
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");
