//! The events backbone.
//!
//! Services publish through the outbox kit (`till_outbox`: the envelope, the catalogue and
//! `append` into their own `<schema>.outbox`, in the same transaction as the state change);
//! this crate moves what they committed on.
//! - [`relay`]: moves committed events, in order, from every registered outbox into the
//!   embedded event log (`events.log`), which is the bus `till up` uses: consumers read it
//!   with their own cursors. It wakes on NOTIFY and also polls, so a lost notification only
//!   delays. One relay at a time per outbox (an advisory lock), so several may run.
//! - [`api`]: `GET /v1/events` and `GET /v1/events/{id}`.
//! - [`consumer`]: idempotent consumers (an inbox row in the same transaction as the
//!   effect); [`bus`] runs them on the embedded log (a cursor each) or on RabbitMQ.
//! - [`broker`]: the RabbitMQ bus: the publisher that follows the log with confirms, the
//!   consumers' quorum queues with retries and dead letters.
//!
//! Merchant webhooks are a service of their own (`till_webhooks`), a consumer of the log.

pub mod api;
pub mod broker;
pub mod bus;
pub mod consumer;
pub mod relay;
pub mod service;

pub use till_outbox::{envelope, Event, EventId, EventType};

pub static MIGRATIONS: till_db::SchemaMigrations = till_db::SchemaMigrations { schema: "events", migrator: &MIGRATOR };
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");
