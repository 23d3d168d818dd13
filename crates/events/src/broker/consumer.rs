//! A consumer on RabbitMQ: its own quorum queue, bounded prefetch, manual acks.
//!
//! Each delivery is validated, then handled with [`crate::consumer::handle_once`] (the
//! effect and the inbox row commit together), and only then acknowledged: a crash before
//! the ack redelivers, and the inbox turns the redelivery into a skip. A handler that
//! fails sends the message to the retry queue of its attempt (the queue's TTL is the
//! backoff; it then dead-letters the message back to the consumer's queue), and after the
//! last attempt to the dead-letter queue. The copy is confirmed by the broker before the
//! original is acked, so a failure in between means a redelivery, never a loss. A message
//! that is not a valid event goes straight to the dead-letter queue: retrying cannot fix it.
//!
//! Messages are handled in queue order. Whatever has already arrived (up to the prefetch)
//! is handled as one batch in one transaction and acked together after its commit; if an
//! effect in the batch fails, the batch is handled again message by message, so the
//! failure is retried alone.

use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Confirmation};
use sqlx::PgPool;
use tokio::sync::watch;

use super::{
    attempt_of, close, confirm_channel, connect, dead_queue_name, declare_consumer, event_properties, parse_event,
    queue_name, reconnecting, retry_queue_name, BrokerConfig, BrokerError, ERROR_HEADER,
};
use crate::bus::{Handler, Subscription};
use crate::consumer::{handle_batch, handle_once, Handled};

/// What became of one delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Handled(Handled),
    /// Parked for a retry after the given delay.
    Retried(Duration),
    /// Moved to the dead-letter queue.
    DeadLettered(String),
}

/// Runs `handler` for `subscription` until `shutdown` flips, reconnecting with backoff
/// while the broker (or the database) is away.
pub async fn run(
    pool: PgPool,
    config: BrokerConfig,
    subscription: Subscription,
    handler: Arc<dyn Handler>,
    shutdown: watch::Receiver<bool>,
) {
    let what = format!("consumer {}", subscription.name);
    reconnecting(&what, shutdown, |shutdown| connected(&pool, &config, &subscription, handler.as_ref(), shutdown))
        .await;
}

/// One connection's life: returns with the error that ended it, or once `shutdown`
/// flipped; either way the connection is closed, and with it the broker requeues the
/// deliveries it held unacknowledged (the batch in hand when the database went away, or
/// when Till stopped).
async fn connected(
    pool: &PgPool,
    config: &BrokerConfig,
    subscription: &Subscription,
    handler: &dyn Handler,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), BrokerError> {
    let name = format!("till-consumer-{}", subscription.name);
    let connection = tokio::select! {
        connection = connect(config, &name) => connection?,
        _ = shutdown.changed() => return Ok(()),
    };
    let outcome = tokio::select! {
        outcome = consuming(pool, config, subscription, handler, &connection) => outcome,
        _ = shutdown.changed() => Ok(()),
    };
    close(&connection).await;
    outcome
}

/// Handles deliveries as they come; returns only with the error that ended it.
async fn consuming(
    pool: &PgPool,
    config: &BrokerConfig,
    subscription: &Subscription,
    handler: &dyn Handler,
    connection: &lapin::Connection,
) -> Result<(), BrokerError> {
    let setup = connection.create_channel().await?;
    declare_consumer(&setup, config, &subscription.name, &subscription.patterns).await?;
    let republish = confirm_channel(connection).await?;
    let consume = connection.create_channel().await?;
    consume.basic_qos(config.prefetch, BasicQosOptions::default()).await?;
    let mut deliveries = consume
        .basic_consume(
            queue_name(&subscription.name).as_str().into(),
            format!("till-{}", subscription.name).as_str().into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    tracing::info!(consumer = subscription.name, "consuming events from RabbitMQ");
    while let Some(first) = deliveries.next().await {
        let mut batch = vec![first?];
        while batch.len() < usize::from(config.prefetch) {
            match deliveries.next().now_or_never() {
                Some(Some(delivery)) => batch.push(delivery?),
                _ => break,
            }
        }
        let events: Result<Vec<_>, _> = batch.iter().map(|delivery| parse_event(&delivery.data)).collect();
        // A lone message takes the one-by-one path at once (no point trying it twice).
        let in_one = match events {
            Ok(events) if events.len() > 1 => {
                handle_batch(pool, &subscription.name, &events, handler, None).await.is_ok()
            }
            _ => false,
        };
        if !in_one {
            for delivery in &batch {
                let outcome = handle_delivery(pool, config, &republish, &subscription.name, handler, delivery).await?;
                tracing::debug!(consumer = subscription.name, ?outcome, "event handled");
            }
        }
        // Everything up to the batch's last message is done (its effect committed, or its
        // copy confirmed in a retry or dead-letter queue).
        if let Some(last) = batch.last() {
            last.acker.ack(BasicAckOptions { multiple: true }).await?;
        }
    }
    Err(BrokerError::Invalid("the broker cancelled the consumer".into()))
}

/// Handles one delivery and, when it failed, parks its copy (confirmed) in the retry or
/// dead-letter queue. On `Ok` the caller acks the original; on `Err` it must not (the
/// broker redelivers it once the connection is gone). A database that cannot be reached
/// is such an `Err`: an outage must not burn an event's attempts and dead-letter it.
pub async fn handle_delivery(
    pool: &PgPool,
    config: &BrokerConfig,
    republish: &Channel,
    consumer: &str,
    handler: &dyn Handler,
    delivery: &Delivery,
) -> Result<Outcome, BrokerError> {
    let event = match parse_event(&delivery.data) {
        Ok(event) => event,
        Err(error) => {
            let reason = error.to_string();
            tracing::warn!(consumer, %reason, "dead-lettering a message that is not an event");
            let mut properties = delivery.properties.clone();
            let mut headers = properties.headers().clone().unwrap_or_default();
            headers.insert(ERROR_HEADER.into(), lapin::types::AMQPValue::LongString(reason.as_str().into()));
            properties = properties.with_headers(headers);
            publish_confirmed(republish, &dead_queue_name(consumer), &delivery.data, properties).await?;
            return Ok(Outcome::DeadLettered(reason));
        }
    };
    let attempt = attempt_of(&delivery.properties);
    let failure = match handle_once(pool, consumer, &event, handler).await {
        Ok(handled) => return Ok(Outcome::Handled(handled)),
        Err(error) if database_unavailable(error.as_ref()) => {
            return Err(BrokerError::DatabaseUnavailable(error.to_string()));
        }
        Err(error) => error.to_string(),
    };
    let index = usize::try_from(attempt).unwrap_or(usize::MAX).saturating_sub(1);
    match config.retry_delays.get(index) {
        Some(delay) => {
            tracing::warn!(consumer, event = %event.id, attempt, error = %failure, retry_in = ?delay, "handling an event failed; retrying later");
            let properties = event_properties(&event, attempt.saturating_add(1), Some(&failure));
            publish_confirmed(republish, &retry_queue_name(consumer, *delay), &delivery.data, properties).await?;
            Ok(Outcome::Retried(*delay))
        }
        None => {
            tracing::error!(consumer, event = %event.id, attempt, error = %failure, "handling an event failed every attempt; dead-lettered");
            let properties = event_properties(&event, attempt, Some(&failure));
            publish_confirmed(republish, &dead_queue_name(consumer), &delivery.data, properties).await?;
            Ok(Outcome::DeadLettered(failure))
        }
    }
}

/// Whether a handler's failure is the database being out of reach (connection refused or
/// lost, pool exhausted or closed) rather than something about the event.
fn database_unavailable(error: &(dyn std::error::Error + Send + Sync + 'static)) -> bool {
    matches!(
        error.downcast_ref::<sqlx::Error>(),
        Some(sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::WorkerCrashed)
    )
}

/// Publishes straight to `queue` (through the default exchange) and waits for the
/// broker's confirm that the queue has it.
pub async fn publish_confirmed(
    channel: &Channel,
    queue: &str,
    payload: &[u8],
    properties: lapin::BasicProperties,
) -> Result<(), BrokerError> {
    // Mandatory: a queue that does not exist returns the message instead of dropping it.
    let options = BasicPublishOptions { mandatory: true, ..BasicPublishOptions::default() };
    let confirm = channel.basic_publish("".into(), queue.into(), options, payload, properties).await?;
    match confirm.await? {
        Confirmation::Ack(None) => Ok(()),
        Confirmation::Ack(Some(_)) | Confirmation::Nack(_) | Confirmation::NotRequested => {
            Err(BrokerError::Refused(queue.to_string()))
        }
    }
}
