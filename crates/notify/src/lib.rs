//! The notifications service: e-mail and SMS sent when a business's events happen.
//!
//! - [`domain`]: recipients (e-mail addresses, E.164 numbers), channels, rules (pure).
//! - [`templates`]: the events that can notify, the fields their templates may use, the
//!   built-in templates, checking and rendering (pure; minijinja).
//! - [`consumer`]: the event consumer that turns an event into its notifications, in the
//!   transaction that records the event in its inbox (exactly once per event).
//! - [`sender`]: the job that sends queued notifications through the outbound kit, in
//!   order per recipient, retried with backoff, never dropped by an outage.
//! - [`sms`]: SMS through Twilio's Messages API, and its status callbacks.
//! - [`api`]: `/v1/notification_settings`, `/v1/notification_templates`,
//!   `/v1/notifications`. [`store`]: the schema's SQL. [`service`]: the registration.

pub mod api;
pub mod consumer;
pub mod domain;
pub mod sender;
pub mod service;
pub mod sms;
pub mod store;
pub mod templates;

use std::time::Duration;

use till_kit::Secret;

pub static MIGRATIONS: till_db::SchemaMigrations = till_db::SchemaMigrations { schema: "notify", migrator: &MIGRATOR };
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

till_kit::typed_id!(NotificationId, "ntf", "notification", "One message to one recipient, made by one event and rule.");
till_kit::typed_id!(TemplateId, "ntt", "notification template", "A business's own wording for one event and channel.");

/// Where e-mail goes.
#[derive(Debug, Clone)]
pub struct EmailSettings {
    /// The SMTP server (`TILL_SMTP_URL`): `smtp://host:port`, `smtps://…`, with
    /// `user:password@` if it needs them.
    pub smtp_url: Secret<String>,
    /// The address messages are sent from (`TILL_SMTP_FROM`); each business's name is
    /// its display name, and its reply-to its own.
    pub from_address: domain::EmailAddress,
    pub attempt_timeout: Duration,
    /// The SMTP server's circuit breaker: while it is open nothing is sent and every
    /// e-mail stays queued.
    pub breaker: till_outbound::breaker::BreakerConfig,
}

/// How the notifications service runs, provided by the composition root.
#[derive(Debug, Clone, Default)]
pub struct NotifyConfig {
    /// `None`: e-mail notifications are made and stay queued until an SMTP server is set.
    pub email: Option<EmailSettings>,
    /// `None`: SMS notifications are made and stay queued until a provider is set.
    pub sms: Option<sms::SmsSettings>,
    pub sender: sender::SenderConfig,
}
