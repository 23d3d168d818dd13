//! Publishes the event log to RabbitMQ, at least once, in log order.
//!
//! One batch is one database transaction: claim the publisher's cursor (`FOR UPDATE SKIP
//! LOCKED`, so a second publisher skips rather than publishing the same events), read the
//! events after it, publish them all, wait until the broker has confirmed every one, then
//! move the cursor and commit. A publisher that dies anywhere before the commit leaves the
//! cursor where it was, and the batch is published again: consumers skip the copies with
//! their inbox. A broker that is down only stops this loop (it reconnects with backoff);
//! producers never notice, because they write to their outboxes, not to the broker.

use std::time::Duration;

use lapin::options::BasicPublishOptions;
use lapin::{Channel, Confirmation};
use sqlx::postgres::PgListener;
use sqlx::PgPool;
use tokio::sync::watch;

use super::{
    close, confirm_channel, connect, declare_exchange, event_properties, reconnecting, BrokerConfig, BrokerError,
};
use crate::consumer::LoggedEvent;

/// The publisher's cursor in `events.consumers`.
pub const CURSOR: &str = "rabbitmq-publisher";
pub const LOG_CHANNEL: &str = "till_log";
const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// Publishes one batch; returns how many events were published (0: nothing new, or
/// another publisher holds the cursor).
pub async fn publish_batch(pool: &PgPool, channel: &Channel, config: &BrokerConfig) -> Result<u64, BrokerError> {
    let mut transaction = pool.begin().await?;
    let claimed: Option<i64> =
        sqlx::query_scalar("SELECT events.claim_cursor($1)").bind(CURSOR).fetch_one(&mut *transaction).await?;
    let Some(after) = claimed else {
        return Ok(0);
    };
    let events: Vec<LoggedEvent> = sqlx::query_as("SELECT * FROM events.read_log($1, $2)")
        .bind(after)
        .bind(config.publish_rows_max)
        .fetch_all(&mut *transaction)
        .await?;
    let Some(last) = events.last().map(|event| event.position) else {
        return Ok(0);
    };
    let mut confirms = Vec::with_capacity(events.len());
    for event in &events {
        let body = event.body();
        let payload = serde_json::to_vec(&body).map_err(|error| BrokerError::Invalid(error.to_string()))?;
        let confirm = channel
            .basic_publish(
                config.exchange.as_str().into(),
                body.event_type.as_str().into(),
                BasicPublishOptions::default(),
                &payload,
                event_properties(&body, 1, None),
            )
            .await?;
        confirms.push((body.id, confirm));
    }
    let confirmed = async {
        for (id, confirm) in confirms {
            match confirm.await? {
                Confirmation::Ack(_) => {}
                Confirmation::Nack(_) | Confirmation::NotRequested => return Err(BrokerError::Refused(id.to_string())),
            }
        }
        Ok(())
    };
    tokio::time::timeout(config.confirm_timeout, confirmed)
        .await
        .map_err(|_| BrokerError::ConfirmTimeout(config.confirm_timeout))??;
    sqlx::query("SELECT events.advance_consumer($1, $2)").bind(CURSOR).bind(last).execute(&mut *transaction).await?;
    transaction.commit().await?;
    Ok(events.len() as u64)
}

/// Publishes everything committed so far; returns how many events.
pub async fn publish_all(pool: &PgPool, channel: &Channel, config: &BrokerConfig) -> Result<u64, BrokerError> {
    let mut published = 0;
    loop {
        let batch = publish_batch(pool, channel, config).await?;
        published += batch;
        if batch < u64::try_from(config.publish_rows_max).unwrap_or(0) {
            return Ok(published);
        }
    }
}

/// Runs until `shutdown` flips: connects (again and again, with backoff, while the broker
/// is away) and publishes whenever the relay says the log grew, and every second.
pub async fn run(pool: PgPool, config: BrokerConfig, shutdown: watch::Receiver<bool>) {
    reconnecting("publisher", shutdown, |shutdown| connected(&pool, &config, shutdown)).await;
}

/// One connection's life: returns with the error that ended it, or once `shutdown`
/// flipped; either way the connection is closed.
async fn connected(
    pool: &PgPool,
    config: &BrokerConfig,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), BrokerError> {
    let connection = tokio::select! {
        connection = connect(config, "till-publisher") => connection?,
        _ = shutdown.changed() => return Ok(()),
    };
    let outcome = tokio::select! {
        outcome = publishing(pool, config, &connection) => outcome,
        _ = shutdown.changed() => Ok(()),
    };
    close(&connection).await;
    outcome
}

/// Publishes whenever the relay says the log grew, and every second; returns only with
/// the error that ended it.
async fn publishing(pool: &PgPool, config: &BrokerConfig, connection: &lapin::Connection) -> Result<(), BrokerError> {
    let channel = confirm_channel(connection).await?;
    declare_exchange(&channel, config).await?;
    tracing::info!("publishing events to RabbitMQ");
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen(LOG_CHANNEL).await?;
    let mut poll = tokio::time::interval(POLL_INTERVAL);
    loop {
        publish_all(pool, &channel, config).await?;
        tokio::select! {
            _ = poll.tick() => {}
            notification = listener.recv() => { notification?; }
        }
        // Everything notified so far is served by the next publish_all.
        while listener.next_buffered().is_some() {}
    }
}
