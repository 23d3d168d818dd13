//! The webhooks service: merchant endpoints, Standard Webhooks signatures, delivery with
//! retries, and the SSRF guard every delivery passes.
//!
//! A consumer of the event log: `webhooks.fan_out` turns new log events into deliveries
//! (its cursor is the events service's, `webhooks`); the worker claims and sends them.
//! Its tables live in its own schema (`webhooks`), its events go to its own outbox.

pub mod api;
pub mod guard;
pub mod secrets;
pub mod service;
pub mod signing;
pub mod worker;

use std::time::Duration;

pub static MIGRATIONS: till_db::SchemaMigrations =
    till_db::SchemaMigrations { schema: "webhooks", migrator: &MIGRATOR };
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

till_kit::typed_id!(WebhookEndpointId, "we", "webhook endpoint", "A merchant's webhook endpoint.");
till_kit::typed_id!(WebhookDeliveryId, "whd", "webhook delivery", "The delivery of one event to one endpoint.");

/// How webhooks are delivered. The defaults are production's; tests shorten the times.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    /// Allow `http` and loopback/private targets: for local development only. `till up`
    /// says so at start-up when it is on.
    pub allow_private_targets: bool,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    /// Full-jitter backoff: the n-th retry waits a random time up to
    /// min(retry_cap, retry_base * 2^n).
    pub retry_base: Duration,
    pub retry_cap: Duration,
    /// A delivery still failing this long after the event is given up.
    pub retry_window: Duration,
    /// An endpoint failing continuously this long is disabled.
    pub disable_after: Duration,
    pub poll_interval: Duration,
    /// Deliveries in flight at once, for this instance.
    pub sends_max: usize,
    /// Deliveries in flight at once to one endpoint, and for one business (across
    /// instances, by their leases): no business can take every send.
    pub endpoint_in_flight_max: u32,
    pub business_in_flight_max: u32,
    /// Consecutive failed attempts after which an endpoint's breaker opens; each further
    /// failure pauses it for `breaker_pause_base`, doubled per failure, up to
    /// `breaker_pause_cap` (jittered), and then one probe is let through.
    pub breaker_failures: u32,
    pub breaker_pause_base: Duration,
    pub breaker_pause_cap: Duration,
    /// Deliveries that may wait for one endpoint; past this, a new event's delivery is
    /// recorded as failed without an attempt (replayable once the endpoint catches up).
    pub pending_deliveries_max: u32,
    /// Endpoints one business may register.
    pub endpoints_per_business_max: u32,
    /// How far back a replay may reach, and how often one endpoint may be replayed.
    pub replay_window: Duration,
    pub replay_interval: Duration,
}

impl Default for WebhookConfig {
    fn default() -> WebhookConfig {
        WebhookConfig {
            allow_private_targets: false,
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(15),
            retry_base: Duration::from_secs(30),
            retry_cap: Duration::from_secs(6 * 60 * 60),
            retry_window: Duration::from_secs(3 * 24 * 60 * 60),
            disable_after: Duration::from_secs(5 * 24 * 60 * 60),
            poll_interval: Duration::from_millis(250),
            sends_max: 64,
            endpoint_in_flight_max: 4,
            business_in_flight_max: 16,
            breaker_failures: 5,
            breaker_pause_base: Duration::from_secs(30),
            breaker_pause_cap: Duration::from_secs(60 * 60),
            pending_deliveries_max: 10_000,
            endpoints_per_business_max: 16,
            replay_window: Duration::from_secs(30 * 24 * 60 * 60),
            replay_interval: Duration::from_secs(60),
        }
    }
}

/// The wait before retry number `attempt` (1-based): full jitter (AWS architecture blog),
/// so that many failing deliveries do not retry in lockstep.
pub fn retry_delay(config: &WebhookConfig, attempt: u32, random_unit: u64) -> Duration {
    let ceiling_ms =
        config.retry_base.as_millis().saturating_mul(1_u128 << attempt.min(40)).min(config.retry_cap.as_millis());
    let ceiling_ms = u64::try_from(ceiling_ms).unwrap_or(u64::MAX).max(1);
    Duration::from_millis(random_unit % ceiling_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_the_cap_and_is_jittered() {
        let config = WebhookConfig::default();
        assert!(retry_delay(&config, 1, u64::MAX) < Duration::from_secs(60));
        assert!(retry_delay(&config, 30, u64::MAX - 1) <= config.retry_cap);
        assert_eq!(retry_delay(&config, 5, 0), Duration::ZERO);
        let spread: std::collections::BTreeSet<_> =
            (0..50_u64).map(|n| retry_delay(&config, 6, n * 7_919_000)).collect();
        assert!(spread.len() > 40, "jittered");
    }
}
