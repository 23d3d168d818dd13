//! The CRM sync's SQL, and nothing else. The consumer writes in the event's tenant
//! transaction; the worker leases and records through `crm.lease_due` and
//! `crm.record_outcomes` (one org mirrors every business); the CLI reads `crm.status()`.

use sqlx::{PgConnection, PgPool};
use till_kit::BusinessId;
use uuid::Uuid;

use crate::domain::Change;

/// Queues `change` for the event, unless the event queued it before.
pub async fn queue(
    connection: &mut PgConnection,
    business: BusinessId,
    event: Uuid,
    change: &Change,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO crm.changes (id, business_id, event_id, sobject, external_field, external_id, fields)
         VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb)
         ON CONFLICT (event_id, sobject, external_id) DO NOTHING",
    )
    .bind(Uuid::now_v7())
    .bind(business.as_uuid())
    .bind(event)
    .bind(change.sobject)
    .bind(change.external_field)
    .bind(&change.external_id)
    .bind(&change.fields)
    .execute(connection)
    .await?;
    Ok(())
}

/// Records a refund (once) and answers what its payment has had refunded in all.
pub async fn add_refund(
    connection: &mut PgConnection,
    business: BusinessId,
    refund: &str,
    payment: &str,
    amount: i64,
) -> Result<i64, sqlx::Error> {
    sqlx::query(
        "INSERT INTO crm.refunds (refund_id, business_id, payment_intent_id, amount) VALUES ($1, $2, $3, $4)
         ON CONFLICT (refund_id) DO NOTHING",
    )
    .bind(refund)
    .bind(business.as_uuid())
    .bind(payment)
    .bind(amount)
    .execute(&mut *connection)
    .await?;
    sqlx::query_scalar(
        "SELECT coalesce(sum(amount), 0)::bigint FROM crm.refunds WHERE business_id = $1 AND payment_intent_id = $2",
    )
    .bind(business.as_uuid())
    .bind(payment)
    .fetch_one(connection)
    .await
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Leased {
    pub id: Uuid,
    pub sobject: String,
    pub external_field: String,
    pub external_id: String,
    pub fields: String,
    pub attempts: i32,
}

pub async fn lease_due(pool: &PgPool, rows_max: i32, lease_seconds: i32) -> Result<Vec<Leased>, sqlx::Error> {
    sqlx::query_as("SELECT * FROM crm.lease_due($1, $2)").bind(rows_max).bind(lease_seconds).fetch_all(pool).await
}

/// What one attempt at a change came to: `synced`, `parked` with its error, or
/// `pending` again in `retry_ms` (an attempt when `attempted`).
#[derive(Debug, Clone)]
pub struct Recorded {
    pub id: Uuid,
    pub outcome: &'static str,
    pub error: Option<String>,
    pub retry_ms: i64,
    pub attempted: bool,
}

/// Records a batch's outcomes in one statement.
pub async fn record_all(pool: &PgPool, recorded: &[Recorded]) -> Result<(), sqlx::Error> {
    let ids: Vec<Uuid> = recorded.iter().map(|r| r.id).collect();
    let outcomes: Vec<&str> = recorded.iter().map(|r| r.outcome).collect();
    let errors: Vec<Option<&str>> = recorded.iter().map(|r| r.error.as_deref()).collect();
    let retries: Vec<i64> = recorded.iter().map(|r| r.retry_ms).collect();
    let attempted: Vec<bool> = recorded.iter().map(|r| r.attempted).collect();
    sqlx::query("SELECT crm.record_outcomes($1, $2, $3, $4, $5)")
        .bind(ids)
        .bind(outcomes)
        .bind(errors)
        .bind(retries)
        .bind(attempted)
        .execute(pool)
        .await?;
    Ok(())
}

/// The sync's state for `till crm status`: pending, the oldest pending, parked, the last error.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Status {
    pub pending: i64,
    pub oldest_pending: Option<time::OffsetDateTime>,
    pub parked: i64,
    pub last_error: Option<String>,
}

/// As the owner (the CLI): the functions are not the application role's.
pub async fn status(owner_pool: &PgPool) -> Result<Status, sqlx::Error> {
    sqlx::query_as("SELECT * FROM crm.status()").fetch_one(owner_pool).await
}

/// A parked change, as `till crm status` lists it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Parked {
    pub sobject: String,
    pub external_field: String,
    pub external_id: String,
    pub last_error: Option<String>,
    pub created_at: time::OffsetDateTime,
}

/// The oldest `rows_max` parked changes.
pub async fn parked(owner_pool: &PgPool, rows_max: i32) -> Result<Vec<Parked>, sqlx::Error> {
    sqlx::query_as("SELECT * FROM crm.parked($1)").bind(rows_max).fetch_all(owner_pool).await
}

pub async fn replay_parked(owner_pool: &PgPool) -> Result<i32, sqlx::Error> {
    sqlx::query_scalar("SELECT crm.replay_parked()").fetch_one(owner_pool).await
}
