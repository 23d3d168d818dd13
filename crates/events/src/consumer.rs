//! Idempotent consumers on the embedded bus.
//!
//! A consumer reads the log after its cursor ([`poll`]), handles each event with
//! [`handle_once`] — which records the event in `events.inbox` in the same transaction as
//! the effect, so a duplicate is skipped — and then moves its cursor ([`advance`]). The
//! cursor may lag (a crash between handling and advancing redelivers), the inbox makes
//! that harmless: delivery is at least once, the effect exactly once.

use std::future::Future;
use std::pin::Pin;

use sqlx::{PgConnection, PgPool};
use till_kit::BusinessId;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::EventId;

/// An event as a consumer receives it.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct LoggedEvent {
    pub position: i64,
    pub id: Uuid,
    #[sqlx(rename = "type")]
    pub event_type: String,
    pub version: i32,
    pub business_id: Uuid,
    pub resource_id: String,
    pub sequence: i64,
    pub occurred_at: OffsetDateTime,
    pub request_id: Option<String>,
    pub data: serde_json::Value,
}

impl LoggedEvent {
    pub fn event_id(&self) -> EventId {
        EventId::from_uuid(self.id)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handled {
    /// The effect ran and committed with the inbox record.
    Applied,
    /// The consumer had handled this event before; nothing ran.
    Duplicate,
}

/// The effect of handling one event, run in the event's business's transaction.
pub type Effect<'c> = Pin<Box<dyn Future<Output = Result<(), sqlx::Error>> + Send + 'c>>;

/// Handles `event` once for `consumer`: the inbox row and the effect commit together, and
/// a second copy (sequential or concurrent) finds the row and skips the effect.
pub async fn handle_once<F>(
    pool: &PgPool,
    consumer: &str,
    event: &LoggedEvent,
    effect: F,
) -> Result<Handled, sqlx::Error>
where
    F: for<'c> FnOnce(&'c mut PgConnection) -> Effect<'c>,
{
    let mut transaction = till_db::begin_tenant(pool, BusinessId::from_uuid(event.business_id)).await?;
    // A concurrent copy waits here on the primary key until the first commits, then
    // inserts nothing.
    let recorded = sqlx::query(
        "INSERT INTO events.inbox (consumer, event_id, business_id) VALUES ($1, $2, $3)
         ON CONFLICT (consumer, event_id) DO NOTHING",
    )
    .bind(consumer)
    .bind(event.id)
    .bind(event.business_id)
    .execute(&mut *transaction)
    .await?;
    if recorded.rows_affected() == 0 {
        transaction.rollback().await?;
        return Ok(Handled::Duplicate);
    }
    effect(&mut transaction).await?;
    transaction.commit().await?;
    Ok(Handled::Applied)
}

/// Up to `rows_max` events after `consumer`'s cursor, oldest first.
pub async fn poll(pool: &PgPool, consumer: &str, rows_max: i32) -> Result<Vec<LoggedEvent>, sqlx::Error> {
    let after: i64 = sqlx::query_scalar("SELECT events.consumer_position($1)").bind(consumer).fetch_one(pool).await?;
    sqlx::query_as("SELECT * FROM events.read_log($1, $2)").bind(after).bind(rows_max).fetch_all(pool).await
}

/// Moves `consumer`'s cursor to `position` (never backwards).
pub async fn advance(pool: &PgPool, consumer: &str, position: i64) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT events.advance_consumer($1, $2)").bind(consumer).bind(position).execute(pool).await?;
    Ok(())
}
