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
    app_pool_options(connections_max).connect_with(options.application_name("till")).await
}

/// An application pool (sessions run as `till_app`) that opens connections only when
/// asked for one. Its connections, and its own housekeeping, belong to the Tokio runtime
/// this is called in: the ledger's writers, on a runtime of their own, use it so that
/// the replies to their statements wake their threads rather than wait for the request
/// handlers' runtime to look for them.
pub fn lazy_app_pool(options: PgConnectOptions, connections_max: u32) -> PgPool {
    app_pool_options(connections_max).connect_lazy_with(options)
}

fn app_pool_options(connections_max: u32) -> PgPoolOptions {
    PgPoolOptions::new().max_connections(connections_max).acquire_timeout(Duration::from_secs(5)).after_connect(
        |connection, _meta| {
            Box::pin(async move {
                connection.execute("SET ROLE till_app").await?;
                Ok(())
            })
        },
    )
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

/// Whether `error` means the connection is gone: the server ended the session (restart,
/// failover, an operator's `pg_terminate_backend`: SQLSTATE 57P01–57P03) or the
/// connection failed (class 08). PostgreSQL says so in an error message before it
/// closes the socket, so these arrive as database errors rather than I/O errors. Work
/// sent before the loss did not commit; work lost during its COMMIT may have, which a
/// retry with the same Idempotency-Key settles.
pub fn connection_lost(error: &sqlx::Error) -> bool {
    if matches!(error, sqlx::Error::Io(_)) {
        return true;
    }
    let Some(code) = error.as_database_error().and_then(|db| db.code()) else { return false };
    code.starts_with("08") || matches!(code.as_ref(), "57P01" | "57P02" | "57P03")
}

/// A listener on the NOTIFY `channel`, or `None` (with a warning) when one cannot be
/// opened: a job that is woken by it then relies on its polling alone, which only delays.
pub async fn listen(pool: &sqlx::PgPool, channel: &str) -> Option<sqlx::postgres::PgListener> {
    let listening = async {
        let mut listener = sqlx::postgres::PgListener::connect_with(pool).await?;
        listener.listen(channel).await?;
        Ok::<_, sqlx::Error>(listener)
    };
    match listening.await {
        Ok(listener) => Some(listener),
        Err(error) => {
            tracing::warn!(%error, channel, "cannot LISTEN; polling only");
            None
        }
    }
}
