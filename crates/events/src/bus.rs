//! Subscribing to events, on whichever bus this Till runs: the embedded log (the default,
//! what `till up` uses) or RabbitMQ (`TILL_BROKER_URL`). A consumer names itself, says
//! which event types it wants (RabbitMQ topic patterns: `transfer.*`, `#`), and gives a
//! [`Handler`]; the bus delivers every matching event at least once, and
//! [`crate::consumer::handle_once`] makes the effect happen once.

use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::watch;

use crate::broker::{self, BrokerConfig};
pub use crate::consumer::Handler;
use crate::consumer::{advance, handle_batch, handle_once, poll};

pub use till_outbox::consume::{topic_matches, Subscription};

/// Which bus carries events to consumers.
#[derive(Debug, Clone, Default)]
pub enum Bus {
    /// The PostgreSQL event log, read with a cursor per consumer.
    #[default]
    Embedded,
    RabbitMq(BrokerConfig),
}

/// Runs a consumer until `shutdown` flips.
pub async fn subscribe(
    pool: PgPool,
    bus: Bus,
    subscription: Subscription,
    handler: Arc<dyn Handler>,
    shutdown: watch::Receiver<bool>,
) {
    match bus {
        Bus::Embedded => run_embedded(pool, subscription, handler, shutdown).await,
        Bus::RabbitMq(config) => broker::consumer::run(pool, config, subscription, handler, shutdown).await,
    }
}

const EMBEDDED_ROWS_MAX: i32 = 500;
const EMBEDDED_POLL_INTERVAL: Duration = Duration::from_secs(1);
const EMBEDDED_RETRY_MIN: Duration = Duration::from_millis(100);
const EMBEDDED_RETRY_MAX: Duration = Duration::from_secs(60);

/// The embedded bus: read the log after the consumer's cursor (woken by the relay's
/// `till_log` notification, and every second), handle each wanted event once, move the
/// cursor. A failing event is retried with backoff and holds the cursor — order is kept,
/// and the lag shows in `till events backlog` — because the log has no side queue to park
/// it in; RabbitMQ has, and dead-letters instead.
async fn run_embedded(
    pool: PgPool,
    subscription: Subscription,
    handler: Arc<dyn Handler>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut listener = crate::relay::listen(&pool, broker::publisher::LOG_CHANNEL).await;
    let mut retry = EMBEDDED_RETRY_MIN;
    loop {
        let progress = consume_available(&pool, &subscription, handler.as_ref()).await;
        let wait = match progress {
            Ok(()) => {
                retry = EMBEDDED_RETRY_MIN;
                EMBEDDED_POLL_INTERVAL
            }
            Err(error) => {
                tracing::warn!(consumer = subscription.name, %error, retry_in = ?retry, "consuming the event log failed");
                let wait = retry;
                retry = (retry * 2).min(EMBEDDED_RETRY_MAX);
                wait
            }
        };
        let notified = async {
            match listener.as_mut() {
                Some(listener) => listener.recv().await.map(|_| ()),
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = tokio::time::sleep(wait) => {}
            outcome = notified, if retry == EMBEDDED_RETRY_MIN => {
                if let Err(error) = outcome {
                    tracing::warn!(%error, "event log listener failed; polling only from now on");
                    listener = None;
                }
            }
        }
        if let Some(listener) = listener.as_mut() {
            while listener.next_buffered().is_some() {}
        }
    }
}

/// Handles everything after the cursor. Each batch read from the log is handled in one
/// transaction that also moves the cursor; if an effect fails, the batch is handled again
/// event by event, and the cursor moves up to the event that failed.
pub async fn consume_available(
    pool: &PgPool,
    subscription: &Subscription,
    handler: &dyn Handler,
) -> Result<(), crate::consumer::HandlerError> {
    loop {
        let events = poll(pool, &subscription.name, EMBEDDED_ROWS_MAX).await?;
        let Some(last) = events.last().map(|event| event.position) else {
            return Ok(());
        };
        let wanted: Vec<_> =
            events.iter().filter(|event| subscription.wants(&event.event_type)).map(|event| event.body()).collect();
        match handle_batch(pool, &subscription.name, &wanted, handler, Some(last)).await {
            Ok(_) => {
                if events.len() < EMBEDDED_ROWS_MAX as usize {
                    return Ok(());
                }
                continue;
            }
            Err(error) => {
                tracing::debug!(consumer = subscription.name, %error, "a batch failed; handling its events one by one");
            }
        }
        let mut done = None;
        for event in &events {
            if subscription.wants(&event.event_type) {
                let body = event.body();
                if let Err(error) = handle_once(pool, &subscription.name, &body, handler).await {
                    if let Some(position) = done {
                        advance(pool, &subscription.name, position).await?;
                    }
                    return Err(error);
                }
            }
            done = Some(event.position);
        }
        advance(pool, &subscription.name, last).await?;
        if events.len() < EMBEDDED_ROWS_MAX as usize {
            return Ok(());
        }
    }
}
