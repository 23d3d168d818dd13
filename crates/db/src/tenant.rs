//! Transactions scoped to one business.
//!
//! Row-level-security policies compare each row's `business_id` with
//! `till.current_business_id()`, which reads the transaction-local setting made here. The
//! setting is `is_local`, so it ends with the transaction and can never leak to the next
//! user of a pooled connection.

use sqlx::{PgPool, Postgres, Transaction};
use till_kit::BusinessId;

/// Begins a transaction that sees and writes only `business`'s rows.
pub async fn begin_tenant(pool: &PgPool, business: BusinessId) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
    let mut transaction = pool.begin().await?;
    set_tenant(&mut transaction, business).await?;
    Ok(transaction)
}

/// Makes the rest of the open transaction act for `business` (its rows, its idempotency
/// scope), as [`begin_tenant`] does; a consumer handling a batch switches per event.
pub async fn set_tenant(connection: &mut sqlx::PgConnection, business: BusinessId) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT set_config('till.business_id', $1, true), set_config('till.scope', $1, true)")
        .bind(business.as_uuid().to_string())
        .execute(connection)
        .await?;
    Ok(())
}

/// Begins a transaction for a platform-operator request: it sees no business's rows until
/// it calls [`enter_business`], and its idempotency keys live in the `platform` scope.
pub async fn begin_platform(pool: &PgPool) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
    let mut transaction = pool.begin().await?;
    sqlx::query("SELECT set_config('till.scope', 'platform', true)").execute(&mut *transaction).await?;
    Ok(transaction)
}

/// Points an open transaction at `business` (used by the platform when it creates one).
pub async fn enter_business(connection: &mut sqlx::PgConnection, business: BusinessId) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT set_config('till.business_id', $1, true)")
        .bind(business.as_uuid().to_string())
        .execute(connection)
        .await?;
    Ok(())
}
