//! The relay: committed events from every outbox into the embedded event log.
//!
//! Each move is one transaction inside PostgreSQL (`events.relay`): the events leave the
//! outbox and enter the log together, so a relay that dies mid-batch loses nothing and
//! publishes nothing twice; the next relay moves the same events. Order per outbox is
//! kept (oldest first, one relay per outbox at a time), which keeps order per resource.

use std::time::Duration;

use sqlx::postgres::PgListener;
use sqlx::PgPool;
use tokio::sync::watch;

/// Every outbox, registered by its service's migration.
pub const OUTBOXES: [&str; 2] = ["access.outbox", "ledger.outbox"];
pub const NOTIFY_CHANNEL: &str = "till_outbox";
const RELAY_ROWS_MAX: i32 = 1_000;
/// Polled even without notifications, so a lost NOTIFY only delays.
const POLL_INTERVAL: Duration = Duration::from_secs(1);

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

/// Runs until `shutdown` flips: drains every outbox when notified, and every second.
pub async fn run(pool: PgPool, mut shutdown: watch::Receiver<bool>) {
    let mut listener = match PgListener::connect_with(&pool).await {
        Ok(mut listener) => match listener.listen(NOTIFY_CHANNEL).await {
            Ok(()) => Some(listener),
            Err(error) => {
                tracing::warn!(%error, "cannot LISTEN for outbox notifications; polling only");
                None
            }
        },
        Err(error) => {
            tracing::warn!(%error, "cannot open the outbox listener; polling only");
            None
        }
    };
    let mut poll = tokio::time::interval(POLL_INTERVAL);
    loop {
        let notified = async {
            match listener.as_mut() {
                Some(listener) => listener.recv().await.map(|_| ()),
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = poll.tick() => {}
            outcome = notified => {
                if let Err(error) = outcome {
                    // Keep going on polling alone rather than spin on a broken listener.
                    tracing::warn!(%error, "outbox listener failed; polling only from now on");
                    listener = None;
                }
            }
        }
        for outbox in OUTBOXES {
            if let Err(error) = drain(&pool, outbox).await {
                tracing::warn!(%error, outbox, "relaying events failed; retrying on the next tick");
            }
        }
    }
}
