//! The RabbitMQ bus (`TILL_BROKER_URL=amqp://…`), through lapin.
//!
//! The event log stays the record: [`publisher`] follows it with a cursor and publishes
//! every event to one durable topic exchange, routing key = event type, persistent, and
//! advances its cursor only after the broker has confirmed the whole batch. Each consumer
//! ([`consumer`]) owns a durable quorum queue bound to the types it wants; it acks
//! manually, after the event's effect has committed with its inbox row; a failed event is
//! parked in a retry queue whose TTL is the backoff and which dead-letters it back; after
//! the last retry it goes to the consumer's dead-letter queue, which [`dead_letters`]
//! lists and replays (`till events dead-letters`).
//!
//! Topology, per consumer `c`:
//! - `till.events` (topic, the default name) → `till.c` (quorum; bound with the consumer's patterns)
//! - `till.c.retry.<ms>` (quorum, TTL `<ms>`, dead-letters to `till.c`) — one per backoff step
//! - `till.c.dead` (quorum) — events that failed every attempt, with their last error

pub mod consumer;
pub mod dead_letters;
pub mod node;
pub mod publisher;

/// The AMQP client, for callers that need its options and types.
pub use lapin;

use std::time::Duration;

use lapin::options::{ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use till_kit::Secret;

use till_outbox::envelope::EventBody;

/// The exchange every event is published to, unless configured otherwise.
pub const EXCHANGE: &str = "till.events";
/// Which attempt at handling a message this is (1 for the first delivery).
pub const ATTEMPT_HEADER: &str = "x-till-attempt";
/// Why the last attempt failed, on retried and dead-lettered messages.
pub const ERROR_HEADER: &str = "x-till-error";
const ERROR_CHARS_MAX: usize = 500;

#[derive(Clone, Debug)]
pub struct BrokerConfig {
    pub url: Secret<String>,
    /// The topic exchange events go to (several Tills can share a broker with different
    /// exchanges and consumer names).
    pub exchange: String,
    /// Unacknowledged messages the broker sends a consumer at most.
    pub prefetch: u16,
    /// The wait before each retry of a failed event; after the last, the event is
    /// dead-lettered. So an event is tried `retry_delays.len() + 1` times.
    pub retry_delays: Vec<Duration>,
    /// Events published per confirmed batch.
    pub publish_rows_max: i32,
    /// How long the publisher waits for the broker to confirm a batch.
    pub confirm_timeout: Duration,
}

impl BrokerConfig {
    pub fn new(url: Secret<String>) -> BrokerConfig {
        BrokerConfig {
            url,
            exchange: EXCHANGE.to_string(),
            prefetch: 64,
            retry_delays: [1, 10, 60, 600, 3_600].into_iter().map(Duration::from_secs).collect(),
            publish_rows_max: 500,
            confirm_timeout: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("RabbitMQ: {0}")]
    Amqp(#[from] lapin::Error),
    #[error("the broker refused message {0} (nack)")]
    Refused(String),
    #[error("the broker did not confirm within {0:?}")]
    ConfirmTimeout(Duration),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// The consumer's database cannot be reached: not the event's fault, so it is not
    /// counted as an attempt; the message is redelivered after a reconnect.
    #[error("database unavailable: {0}")]
    DatabaseUnavailable(String),
    #[error("{0}")]
    Invalid(String),
}

const RECONNECT_DELAY_MIN: Duration = Duration::from_millis(100);
const RECONNECT_DELAY_MAX: Duration = Duration::from_secs(5);
/// How long closing a connection may wait for the broker's answer.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Whether `shutdown` has flipped (or its sender is gone, which means the same).
pub(crate) fn stopping(shutdown: &tokio::sync::watch::Receiver<bool>) -> bool {
    *shutdown.borrow() || shutdown.has_changed().is_err()
}

/// Closes `connection` and waits for the broker to confirm (up to [`CLOSE_TIMEOUT`]). The
/// broker puts the deliveries a connection held unacknowledged back in their queues when
/// it closes. A connection that is already broken has nothing left to close: that error
/// is only logged.
pub(crate) async fn close(connection: &Connection) {
    let closing = connection.close(lapin::protocol::constants::REPLY_SUCCESS, "closing".into());
    match tokio::time::timeout(CLOSE_TIMEOUT, closing).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => tracing::debug!(%error, "closing a RabbitMQ connection"),
        Err(_) => tracing::warn!("closing a RabbitMQ connection timed out"),
    }
}

/// Runs `connected` again and again until `shutdown` flips. Each call is one connection's
/// life: it returns with the error that ended it, or `Ok` once it has wound down after
/// `shutdown` flipped. It gets the receiver and is never dropped half-way, so that it
/// closes its own connection ([`close`]): a consumer's connection dropped in the middle of
/// a delivery was seen to stay open, keeping that delivery unacknowledged and out of the
/// queue. Between calls the wait doubles from 100 ms to 5 s, and starts over after a
/// connection that had lasted (a new outage).
pub(crate) async fn reconnecting<F, Fut>(what: &str, mut shutdown: tokio::sync::watch::Receiver<bool>, mut connected: F)
where
    F: FnMut(tokio::sync::watch::Receiver<bool>) -> Fut,
    Fut: std::future::Future<Output = Result<(), BrokerError>>,
{
    let mut delay = RECONNECT_DELAY_MIN;
    loop {
        if stopping(&shutdown) {
            return;
        }
        let started = tokio::time::Instant::now();
        if let Err(error) = connected(shutdown.clone()).await {
            tracing::warn!(%error, what, retry_in = ?delay, "RabbitMQ work stopped; reconnecting");
        }
        if stopping(&shutdown) {
            return;
        }
        if started.elapsed() > RECONNECT_DELAY_MAX * 4 {
            delay = RECONNECT_DELAY_MIN;
        }
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(RECONNECT_DELAY_MAX);
    }
}

pub fn queue_name(consumer: &str) -> String {
    format!("till.{consumer}")
}

pub fn dead_queue_name(consumer: &str) -> String {
    format!("till.{consumer}.dead")
}

pub fn retry_queue_name(consumer: &str, delay: Duration) -> String {
    format!("till.{consumer}.retry.{}ms", delay.as_millis())
}

/// Connects; the connection name shows in the broker's management tools.
pub async fn connect(config: &BrokerConfig, name: &str) -> Result<Connection, BrokerError> {
    let properties = ConnectionProperties::default().with_connection_name(name.into());
    Ok(Connection::connect(config.url.expose_secret(), properties).await?)
}

/// A channel on which every publish is confirmed by the broker.
pub async fn confirm_channel(connection: &Connection) -> Result<Channel, BrokerError> {
    let channel = connection.create_channel().await?;
    channel.confirm_select(ConfirmSelectOptions::default()).await?;
    Ok(channel)
}

pub async fn declare_exchange(channel: &Channel, config: &BrokerConfig) -> Result<(), BrokerError> {
    let options = ExchangeDeclareOptions { durable: true, ..ExchangeDeclareOptions::default() };
    channel
        .exchange_declare(config.exchange.as_str().into(), ExchangeKind::Topic, options, FieldTable::default())
        .await?;
    Ok(())
}

/// Declares a consumer's queues and binds its patterns (idempotent: declaring what
/// exists with the same arguments is a no-op).
pub async fn declare_consumer(
    channel: &Channel,
    config: &BrokerConfig,
    consumer: &str,
    patterns: &[String],
) -> Result<(), BrokerError> {
    declare_exchange(channel, config).await?;
    let durable = QueueDeclareOptions { durable: true, ..QueueDeclareOptions::default() };
    let main = queue_name(consumer);
    channel.queue_declare(main.as_str().into(), durable, quorum_arguments()).await?;
    for pattern in patterns {
        channel
            .queue_bind(
                main.as_str().into(),
                config.exchange.as_str().into(),
                pattern.as_str().into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
    }
    for delay in &config.retry_delays {
        let mut arguments = quorum_arguments();
        let ttl = i64::try_from(delay.as_millis()).unwrap_or(i64::MAX);
        arguments.insert("x-message-ttl".into(), AMQPValue::LongLongInt(ttl));
        arguments.insert("x-dead-letter-exchange".into(), AMQPValue::LongString("".into()));
        arguments.insert("x-dead-letter-routing-key".into(), AMQPValue::LongString(main.as_str().into()));
        // Quorum queues dead-letter at most once unless asked for at least once, which
        // needs reject-publish overflow: an expired retry must not vanish on its way back.
        arguments.insert("x-dead-letter-strategy".into(), AMQPValue::LongString("at-least-once".into()));
        arguments.insert("x-overflow".into(), AMQPValue::LongString("reject-publish".into()));
        let retry = retry_queue_name(consumer, *delay);
        channel.queue_declare(retry.as_str().into(), durable, arguments).await?;
    }
    channel.queue_declare(dead_queue_name(consumer).as_str().into(), durable, quorum_arguments()).await?;
    Ok(())
}

fn quorum_arguments() -> FieldTable {
    let mut arguments = FieldTable::default();
    arguments.insert("x-queue-type".into(), AMQPValue::LongString("quorum".into()));
    arguments
}

/// The properties every event message carries: persistent, JSON, its id and type, and
/// the attempt it is on.
pub fn event_properties(event: &EventBody, attempt: u32, error: Option<&str>) -> BasicProperties {
    let mut headers = FieldTable::default();
    headers.insert(ATTEMPT_HEADER.into(), AMQPValue::LongLongInt(i64::from(attempt)));
    if let Some(error) = error {
        let error: String = error.chars().take(ERROR_CHARS_MAX).collect();
        headers.insert(ERROR_HEADER.into(), AMQPValue::LongString(LongString::from(error)));
    }
    BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type(ShortString::from("application/json"))
        .with_message_id(ShortString::from(event.id.to_string()))
        .with_type(ShortString::from(event.event_type.clone()))
        .with_timestamp(u64::try_from(event.occurred_at.unix_timestamp()).unwrap_or(0))
        .with_headers(headers)
}

/// The attempt a delivered message is on (1 when the header is missing or malformed).
pub fn attempt_of(properties: &BasicProperties) -> u32 {
    header(properties, ATTEMPT_HEADER)
        .and_then(|value| match value {
            AMQPValue::LongLongInt(attempt) => u32::try_from(*attempt).ok(),
            AMQPValue::LongInt(attempt) => u32::try_from(*attempt).ok(),
            AMQPValue::LongUInt(attempt) => Some(*attempt),
            _ => None,
        })
        .filter(|attempt| *attempt >= 1)
        .unwrap_or(1)
}

/// The last error recorded on a message, if any.
pub fn error_of(properties: &BasicProperties) -> Option<String> {
    match header(properties, ERROR_HEADER)? {
        AMQPValue::LongString(text) => Some(String::from_utf8_lossy(text.as_bytes()).into_owned()),
        _ => None,
    }
}

fn header<'p>(properties: &'p BasicProperties, name: &str) -> Option<&'p AMQPValue> {
    properties.headers().as_ref()?.inner().get(name)
}

/// Parses and checks a message body: what the broker hands us is validated before it is
/// acted on, like any outside input.
pub fn parse_event(body: &[u8]) -> Result<EventBody, BrokerError> {
    let event: EventBody = serde_json::from_slice(body)
        .map_err(|error| BrokerError::Invalid(format!("not an event envelope: {error}")))?;
    if event.version < 1 || event.sequence < 1 || event.event_type.is_empty() || event.resource_id.is_empty() {
        return Err(BrokerError::Invalid(format!("event {} has an impossible envelope", event.id)));
    }
    Ok(event)
}
