//! Idempotent consumers.
//!
//! Whatever the bus, a consumer handles each event with [`handle_once`], which records the
//! event in `events.inbox` in the same transaction as the effect, so a duplicate is
//! skipped. On the embedded bus a consumer reads the log after its cursor ([`poll`]) and
//! then moves the cursor ([`advance`]); the cursor may lag (a crash between handling and
//! advancing redelivers), and the inbox makes that harmless: delivery is at least once,
//! the effect exactly once. [`crate::bus`] runs consumers on either bus.

use sqlx::{PgConnection, PgPool};
use till_kit::BusinessId;
use time::OffsetDateTime;
use uuid::Uuid;

use till_outbox::envelope::EventBody;
use till_outbox::EventId;

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

    /// The envelope as consumers, the API and the broker see it.
    pub fn body(&self) -> EventBody {
        EventBody {
            id: self.event_id(),
            event_type: self.event_type.clone(),
            version: self.version,
            business_id: BusinessId::from_uuid(self.business_id),
            resource_id: self.resource_id.clone(),
            sequence: self.sequence,
            occurred_at: self.occurred_at,
            request_id: self.request_id.clone(),
            data: self.data.clone(),
        }
    }
}

pub use till_outbox::consume::{Effect, Handler, HandlerError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handled {
    /// The effect ran and committed with the inbox record.
    Applied,
    /// The consumer had handled this event before; nothing ran.
    Duplicate,
}

/// Handles `event` once for `consumer`: the inbox row and the effect commit together, and
/// a second copy (sequential or concurrent) finds the row and skips the effect.
pub async fn handle_once(
    pool: &PgPool,
    consumer: &str,
    event: &EventBody,
    handler: &dyn Handler,
) -> Result<Handled, HandlerError> {
    let mut transaction = till_db::begin_tenant(pool, event.business_id).await?;
    if !record(&mut transaction, consumer, event).await? {
        transaction.rollback().await?;
        return Ok(Handled::Duplicate);
    }
    handler.handle(&mut transaction, event).await?;
    transaction.commit().await?;
    Ok(Handled::Applied)
}

/// Records `event` in `consumer`'s inbox; false when it was there already. A concurrent
/// copy waits on the primary key until the first commits, then inserts nothing.
async fn record(connection: &mut PgConnection, consumer: &str, event: &EventBody) -> Result<bool, sqlx::Error> {
    let recorded = sqlx::query(
        "INSERT INTO events.inbox (consumer, event_id, business_id) VALUES ($1, $2, $3)
         ON CONFLICT (consumer, event_id) DO NOTHING",
    )
    .bind(consumer)
    .bind(event.id.as_uuid())
    .bind(event.business_id.as_uuid())
    .execute(connection)
    .await?;
    Ok(recorded.rows_affected() == 1)
}

/// Handles `events` as [`handle_once`] would, in order, but in one transaction (one commit
/// for the lot: what lets a consumer keep up with the ledger), moving the embedded
/// cursor to `advance_to` in the same transaction when given. Each event's effect runs
/// with the tenant set to that event's business. If any effect fails, nothing commits and
/// the error is returned: the caller then handles the events one at a time, so one bad
/// event cannot hold the others back or be hidden among them.
pub async fn handle_batch(
    pool: &PgPool,
    consumer: &str,
    events: &[EventBody],
    handler: &dyn Handler,
    advance_to: Option<i64>,
) -> Result<Vec<Handled>, HandlerError> {
    let mut transaction = pool.begin().await?;
    let mut outcomes = Vec::with_capacity(events.len());
    for event in events {
        till_db::tenant::set_tenant(&mut transaction, event.business_id).await?;
        if record(&mut transaction, consumer, event).await? {
            handler.handle(&mut transaction, event).await?;
            outcomes.push(Handled::Applied);
        } else {
            outcomes.push(Handled::Duplicate);
        }
    }
    if let Some(position) = advance_to {
        sqlx::query("SELECT events.advance_consumer($1, $2)")
            .bind(consumer)
            .bind(position)
            .execute(&mut *transaction)
            .await?;
    }
    transaction.commit().await?;
    Ok(outcomes)
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
