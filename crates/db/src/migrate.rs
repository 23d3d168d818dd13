//! Forward-only migrations, embedded in the binary, one PostgreSQL schema per service.
//!
//! Each service hands over its schema name and its `sqlx::migrate!` migrator. The schema's
//! migration history lives inside the schema itself (`<schema>._sqlx_migrations`), so each
//! service's migrations are versioned independently, as its tables are.

use sqlx::migrate::Migrator;
use sqlx::{Executor, PgPool};

pub struct SchemaMigrations {
    pub schema: &'static str,
    pub migrator: &'static Migrator,
}

#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error("migrating schema `{schema}`: {source}")]
    Migrate { schema: &'static str, source: sqlx::migrate::MigrateError },
    #[error("preparing schema `{schema}`: {source}")]
    Database { schema: &'static str, source: sqlx::Error },
}

/// Applies every pending migration, schemas in the order given. Must run as the role that
/// should own the tables (never `till_app`).
pub async fn migrate(owner_pool: &PgPool, schemas: &[&SchemaMigrations]) -> Result<(), MigrateError> {
    for service in schemas {
        let schema = service.schema;
        let database = |source| MigrateError::Database { schema, source };
        let mut connection = owner_pool.acquire().await.map_err(database)?;
        // Schema names are compile-time constants of this workspace, never user input.
        connection.execute(format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\"").as_str()).await.map_err(database)?;
        connection.execute(format!("SET search_path TO \"{schema}\", public").as_str()).await.map_err(database)?;
        let outcome = service.migrator.run(&mut *connection).await;
        // Leave the pooled connection as we found it whether or not the migration worked.
        connection.execute("RESET search_path").await.map_err(database)?;
        outcome.map_err(|source| MigrateError::Migrate { schema, source })?;
    }
    Ok(())
}
