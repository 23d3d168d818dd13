//! Writing events to a service's outbox, in the caller's transaction.

use sqlx::postgres::PgArguments;
use sqlx::query::Query;
use sqlx::{PgConnection, Postgres};
use till_kit::BusinessId;
use time::OffsetDateTime;

use crate::{Event, EventType};

/// Appends `events` to `outbox` (a service's `<schema>.outbox`, a constant of that
/// service's code, never input), in order. One statement for any number of events.
pub async fn append(connection: &mut PgConnection, outbox: &'static str, events: &[Event]) -> Result<(), sqlx::Error> {
    if events.is_empty() {
        return Ok(());
    }
    bind_append(sqlx::query(&append_sql(outbox, 1)), events).execute(connection).await?;
    Ok(())
}

/// Why an event about a resource could not be written.
#[derive(Debug, thiserror::Error)]
pub enum AnnounceError {
    #[error("encoding an event: {0}")]
    Encode(#[from] serde_json::Error),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

impl From<AnnounceError> for till_http::ApiError {
    fn from(error: AnnounceError) -> till_http::ApiError {
        match error {
            AnnounceError::Database(error) => till_http::ApiError::database(error),
            AnnounceError::Encode(error) => till_http::ApiError::internal(&error),
        }
    }
}

/// Appends the one event of a change to a resource, in the caller's transaction: `data`
/// is the resource as the API shows it after the change, and `sequence` its place among
/// the resource's events (its version, for a versioned resource).
#[allow(clippy::too_many_arguments)] // One event's fields, each distinct; a struct would only rename them.
pub async fn announce(
    connection: &mut PgConnection,
    outbox: &'static str,
    business: BusinessId,
    resource_id: String,
    sequence: i64,
    at: OffsetDateTime,
    event_type: EventType,
    data: &impl serde::Serialize,
) -> Result<(), AnnounceError> {
    let event = Event::about(event_type, business, resource_id, sequence, at, data)?;
    append(connection, outbox, &[event]).await?;
    Ok(())
}

/// The types of [`append_sql`]'s parameters, in order.
const APPEND_TYPES: [&str; 9] =
    ["uuid[]", "text[]", "int4[]", "uuid[]", "text[]", "int8[]", "timestamptz[]", "text[]", "jsonb[]"];
/// Parameters [`append_sql`] takes.
pub const APPEND_PARAMETERS: usize = APPEND_TYPES.len();

/// The append as SQL, with its parameters numbered from `first`: a statement of its own,
/// or one data-modifying CTE of a caller's statement (which saves the caller a round
/// trip). Bind its values with [`bind_append`], in parameter order.
pub fn append_sql(outbox: &'static str, first: usize) -> String {
    format!(
        "INSERT INTO {outbox} (id, type, version, business_id, resource_id, sequence, occurred_at, request_id, data)
         SELECT id, type, version, business_id, resource_id, sequence, occurred_at, request_id, data
           FROM UNNEST({})
         WITH ORDINALITY AS u(id, type, version, business_id, resource_id, sequence, occurred_at, request_id, data, n)
         ORDER BY n",
        till_db::params::numbered(first, &APPEND_TYPES)
    )
}

/// Binds the values of [`append_sql`] (empty arrays append nothing).
pub fn bind_append<'q>(query: Query<'q, Postgres, PgArguments>, events: &[Event]) -> Query<'q, Postgres, PgArguments> {
    query
        .bind(events.iter().map(|e| e.id.as_uuid()).collect::<Vec<_>>())
        .bind(events.iter().map(|e| e.event_type.name()).collect::<Vec<_>>())
        .bind(events.iter().map(|e| e.event_type.version()).collect::<Vec<_>>())
        .bind(events.iter().map(|e| e.business_id.as_uuid()).collect::<Vec<_>>())
        .bind(events.iter().map(|e| e.resource_id.clone()).collect::<Vec<_>>())
        .bind(events.iter().map(|e| e.sequence).collect::<Vec<_>>())
        .bind(events.iter().map(|e| e.occurred_at).collect::<Vec<_>>())
        .bind(events.iter().map(|e| e.request_id.clone()).collect::<Vec<_>>())
        .bind(events.iter().map(|e| sqlx::types::Json(e.data.clone())).collect::<Vec<_>>())
}
