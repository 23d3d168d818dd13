//! The dead-letter queues: what is in them, and sending them back (`till events
//! dead-letters …`). Both work with the broker's own operations, so they need nothing but
//! the broker URL.

use lapin::options::{BasicAckOptions, BasicGetOptions, BasicNackOptions};
use serde::Serialize;

use super::consumer::publish_confirmed;
use super::{
    attempt_of, confirm_channel, connect, dead_queue_name, error_of, event_properties, parse_event, queue_name,
    BrokerConfig, BrokerError,
};

/// A dead-lettered message, as the CLI shows it.
#[derive(Debug, Clone, Serialize)]
pub struct DeadLetter {
    /// The event id, or the message id when the body is not an event.
    pub id: String,
    pub event_type: Option<String>,
    pub attempts: u32,
    pub error: Option<String>,
    pub body: String,
}

/// Up to `rows_max` dead letters of `consumer`, oldest first. Reading takes each message
/// and then returns them all to the queue unchanged.
pub async fn list(config: &BrokerConfig, consumer: &str, rows_max: usize) -> Result<Vec<DeadLetter>, BrokerError> {
    let connection = connect(config, "till-dead-letters").await?;
    let channel = connection.create_channel().await?;
    let queue = dead_queue_name(consumer);
    let mut taken = Vec::new();
    let mut letters = Vec::new();
    while letters.len() < rows_max {
        let Some(message) = channel.basic_get(queue.as_str().into(), BasicGetOptions { no_ack: false }).await? else {
            break;
        };
        let delivery = message.delivery;
        let event = parse_event(&delivery.data).ok();
        letters.push(DeadLetter {
            id: event.as_ref().map(|event| event.id.to_string()).unwrap_or_else(|| {
                delivery.properties.message_id().as_ref().map(|id| id.to_string()).unwrap_or_default()
            }),
            event_type: event.as_ref().map(|event| event.event_type.clone()),
            attempts: attempt_of(&delivery.properties),
            error: error_of(&delivery.properties),
            body: String::from_utf8_lossy(&delivery.data).into_owned(),
        });
        taken.push(delivery.acker);
    }
    for acker in taken {
        acker.nack(BasicNackOptions { requeue: true, ..BasicNackOptions::default() }).await?;
    }
    connection.close(200, "listed".into()).await?;
    Ok(letters)
}

/// Sends `consumer`'s dead letters back to its queue for a fresh set of attempts: all of
/// them, or only the event `only`. Each copy is confirmed before its dead letter is
/// removed. Returns the ids sent back.
pub async fn replay(config: &BrokerConfig, consumer: &str, only: Option<&str>) -> Result<Vec<String>, BrokerError> {
    let connection = connect(config, "till-dead-letters").await?;
    let channel = connection.create_channel().await?;
    let republish = confirm_channel(&connection).await?;
    let queue = dead_queue_name(consumer);
    let mut kept = Vec::new();
    let mut replayed = Vec::new();
    loop {
        let Some(message) = channel.basic_get(queue.as_str().into(), BasicGetOptions { no_ack: false }).await? else {
            break;
        };
        let delivery = message.delivery;
        let event = match parse_event(&delivery.data) {
            Ok(event) if only.is_none_or(|wanted| wanted == event.id.to_string()) => event,
            // Not wanted now, or not an event at all (nothing could handle it): it stays.
            _ => {
                kept.push(delivery.acker);
                continue;
            }
        };
        publish_confirmed(&republish, &queue_name(consumer), &delivery.data, event_properties(&event, 1, None)).await?;
        delivery.acker.ack(BasicAckOptions::default()).await?;
        replayed.push(event.id.to_string());
    }
    for acker in kept {
        acker.nack(BasicNackOptions { requeue: true, ..BasicNackOptions::default() }).await?;
    }
    connection.close(200, "replayed".into()).await?;
    Ok(replayed)
}
