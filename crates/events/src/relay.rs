//! The relay: committed events from every outbox into the embedded event log.
//!
//! Each move is one transaction inside PostgreSQL (`events.relay`): the events leave the
//! outbox and enter the log together, so a relay that dies mid-batch loses nothing and
//! publishes nothing twice; the next relay moves the same events. Order per outbox is
//! kept (oldest first, one relay per outbox at a time), which keeps order per resource.
//!
//! Which outboxes there are is read from `events.outboxes`, where each service's migration
//! registers its own (`events.create_outbox`): a new service's events are relayed without
//! a list in the code to join.

use std::time::Duration;

use sqlx::postgres::PgListener;
use sqlx::PgPool;
use tokio::sync::watch;

pub const NOTIFY_CHANNEL: &str = "till_outbox";
const RELAY_ROWS_MAX: i32 = 1_000;
/// Polled even without notifications, so a lost NOTIFY only delays.
const POLL_INTERVAL: Duration = Duration::from_secs(1);
/// How long the relay gathers notifications before a drain: the latency it adds, and the
/// batching it buys under load.
const RELAY_COALESCE: Duration = Duration::from_millis(5);

/// Every registered outbox (`schema.outbox`), in name order.
pub async fn outboxes(pool: &PgPool) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT name FROM events.outboxes ORDER BY name").fetch_all(pool).await
}

/// Moves everything currently committed in `outbox`; returns how many events moved.
pub async fn drain(pool: &PgPool, outbox: &str) -> Result<u64, sqlx::Error> {
    let mut moved = 0_u64;
    loop {
        let batch: i32 =
            sqlx::query_scalar("SELECT events.relay($1, $2)").bind(outbox).bind(RELAY_ROWS_MAX).fetch_one(pool).await?;
        moved += u64::try_from(batch).unwrap_or(0);
        if batch < RELAY_ROWS_MAX {
            return Ok(moved);
        }
    }
}

/// Events waiting in `outbox` and the age of the oldest, in seconds.
pub async fn backlog(pool: &PgPool, outbox: &str) -> Result<(i64, Option<time::OffsetDateTime>), sqlx::Error> {
    sqlx::query_as("SELECT waiting, oldest FROM events.backlog($1)").bind(outbox).fetch_one(pool).await
}

/// A listener on `channel`, or None (with a warning) if it cannot be opened: the caller
/// then relies on its polling alone, which only delays.
pub(crate) async fn listen(pool: &PgPool, channel: &str) -> Option<PgListener> {
    till_db::listen(pool, channel).await
}

/// Runs until `shutdown` flips: drains the outboxes that notified, and all of them every
/// second. Notifications arriving while a drain runs, or within `RELAY_COALESCE` after it,
/// are served together by the next drain: under load the relay moves events in batches
/// instead of waking for every committing transaction.
pub async fn run(pool: PgPool, mut shutdown: watch::Receiver<bool>) {
    let mut listener = listen(&pool, NOTIFY_CHANNEL).await;
    let mut poll = tokio::time::interval(POLL_INTERVAL);
    let mut known: Vec<String> = Vec::new();
    loop {
        let notified = async {
            match listener.as_mut() {
                Some(listener) => listener.recv().await.map(|notification| notification.payload().to_string()),
                None => std::future::pending().await,
            }
        };
        let mut due: Vec<String> = tokio::select! {
            _ = shutdown.changed() => return,
            _ = poll.tick() => {
                // Every poll reads the registered outboxes again (one small query): an
                // outbox that a newer instance's migration registered is relayed here too.
                match outboxes(&pool).await {
                    Ok(registered) => known = registered,
                    Err(error) => tracing::warn!(%error, "reading the registered outboxes failed; using the last list"),
                }
                known.clone()
            }
            outcome = notified => match outcome {
                Ok(payload) => known.iter().filter(|outbox| **outbox == payload).cloned().collect(),
                Err(error) => {
                    // Keep going on polling alone rather than spin on a broken listener.
                    tracing::warn!(%error, "outbox listener failed; polling only from now on");
                    listener = None;
                    continue;
                }
            },
        };
        tokio::time::sleep(RELAY_COALESCE).await;
        if let Some(listener) = listener.as_mut() {
            while let Some(notification) = listener.next_buffered() {
                if let Some(outbox) = known.iter().find(|outbox| **outbox == notification.payload()) {
                    due.push(outbox.clone());
                }
            }
        }
        due.sort_unstable();
        due.dedup();
        for outbox in &due {
            if let Err(error) = drain(&pool, outbox).await {
                tracing::warn!(%error, outbox, "relaying events failed; retrying on the next tick");
            }
        }
    }
}
