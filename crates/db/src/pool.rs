//! Connection pools.
//!
//! Every application connection switches to the `till_app` role as soon as it opens.
//! `till_app` owns no table and cannot bypass row-level security, so the policies are a
//! backstop even if a query forgets its `business_id` filter.

use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Executor, PgPool};

pub const APP_ROLE: &str = "till_app";

/// A pool for request handling and workers: sessions run as `till_app`.
pub async fn connect_app_pool(options: PgConnectOptions, connections_max: u32) -> Result<PgPool, sqlx::Error> {
    PgPoolOptions::new()
        .max_connections(connections_max)
        .acquire_timeout(Duration::from_secs(5))
        .after_connect(|connection, _meta| {
            Box::pin(async move {
                connection.execute("SET ROLE till_app").await?;
                Ok(())
            })
        })
        .connect_with(options.application_name("till"))
        .await
}

/// A small pool that keeps the login role: for migrations and for the few operations
/// that must see across businesses (the platform operator's CLI, the idempotency purge).
pub async fn connect_owner_pool(options: PgConnectOptions, connections_max: u32) -> Result<PgPool, sqlx::Error> {
    PgPoolOptions::new()
        .max_connections(connections_max)
        .acquire_timeout(Duration::from_secs(5))
        .connect_with(options.application_name("till-owner"))
        .await
}
