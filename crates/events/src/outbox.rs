//! Writing events to a service's outbox, in the caller's transaction.

use sqlx::PgConnection;

use crate::Event;

/// Appends `events` to `outbox` (a service's `<schema>.outbox`, a constant of that
/// service's code, never input), in order. One statement for any number of events.
pub async fn append(connection: &mut PgConnection, outbox: &'static str, events: &[Event]) -> Result<(), sqlx::Error> {
    if events.is_empty() {
        return Ok(());
    }
    sqlx::query(&format!(
        "INSERT INTO {outbox} (id, type, version, business_id, resource_id, sequence, occurred_at, request_id, data)
         SELECT id, type, version, business_id, resource_id, sequence, occurred_at, request_id, data
           FROM UNNEST($1::uuid[], $2::text[], $3::int4[], $4::uuid[], $5::text[], $6::int8[],
                              $7::timestamptz[], $8::text[], $9::jsonb[])
         WITH ORDINALITY AS u(id, type, version, business_id, resource_id, sequence, occurred_at, request_id, data, n)
         ORDER BY n"
    ))
    .bind(events.iter().map(|e| e.id.as_uuid()).collect::<Vec<_>>())
    .bind(events.iter().map(|e| e.event_type.name()).collect::<Vec<_>>())
    .bind(events.iter().map(|e| e.event_type.version()).collect::<Vec<_>>())
    .bind(events.iter().map(|e| e.business_id.as_uuid()).collect::<Vec<_>>())
    .bind(events.iter().map(|e| e.resource_id.clone()).collect::<Vec<_>>())
    .bind(events.iter().map(|e| e.sequence).collect::<Vec<_>>())
    .bind(events.iter().map(|e| e.occurred_at).collect::<Vec<_>>())
    .bind(events.iter().map(|e| e.request_id.clone()).collect::<Vec<_>>())
    .bind(events.iter().map(|e| e.data.clone()).collect::<Vec<_>>())
    .execute(connection)
    .await?;
    Ok(())
}
