//! Typed, validated configuration. The CLI fills it from flags and environment; anything
//! invalid fails at start-up with a message that names the setting.

use std::num::NonZeroU32;

use till_access::jwt::JwtKeyConfig;
use till_http::rate_limit::RateLimitConfig;
use till_kit::Secret;

pub const BODY_BYTES_MAX_DEFAULT: usize = 1024 * 1024;
pub const IDEMPOTENCY_RETENTION_HOURS_MIN: u32 = 24;

#[derive(Clone)]
pub struct Config {
    pub body_bytes_max: usize,
    /// Header, keep-alive and body timeouts, and the connection cap.
    pub http: crate::serve::ConnectionLimits,
    pub rate_limit: RateLimitConfig,
    pub idempotency_retention_hours: u32,
    pub admin_token: Secret<String>,
    /// Seals secrets at rest (stored responses that carry one, webhook signing secrets).
    pub keyring: std::sync::Arc<till_kit::Keyring>,
    pub jwt_keys: Vec<JwtKeyConfig>,
    pub jwt_issuer: Option<String>,
    pub jwt_audience: Option<String>,
    pub jwt_leeway_seconds: u64,
    /// The longest a dashboard JWT may live (`exp - iat`).
    pub jwt_lifetime_seconds_max: u64,
    pub webhooks: till_webhooks::WebhookConfig,
    /// The bus consumers read: the embedded log, or RabbitMQ (then the publisher runs too).
    pub bus: till_events::bus::Bus,
    /// Where the payment gateways are (`till up`: the simulator, unless configured).
    pub payments: till_payments::PaymentsConfig,
    /// Where the payout rails are, and how the payout saga runs.
    pub payouts: till_payouts::PayoutsConfig,
    /// How the checkout saga runs.
    pub commerce: till_commerce::CommerceConfig,
    /// Where e-mail and SMS notifications go, and how the sender retries.
    pub notify: till_notify::NotifyConfig,
    /// Which Salesforce org Till is mirrored into, and how the sync runs.
    pub crm: till_crm::CrmConfig,
    /// Failed authentications from one address in a minute before it is throttled (429).
    pub auth_failures_per_minute: u32,
    /// Leases of phased requests (those that call an outside party) and when the recovery
    /// job resumes one that was abandoned.
    pub recovery: till_http::recovery::RecoveryConfig,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{setting}: {why}")]
    Invalid { setting: &'static str, why: String },
}

impl Config {
    /// Defaults for everything but the admin token and the sealing keys.
    pub fn new(admin_token: Secret<String>, keyring: till_kit::Keyring) -> Config {
        Config {
            body_bytes_max: BODY_BYTES_MAX_DEFAULT,
            http: crate::serve::ConnectionLimits::default(),
            rate_limit: RateLimitConfig {
                requests_per_second: NonZeroU32::new(100).unwrap_or(NonZeroU32::MIN),
                burst: NonZeroU32::new(200).unwrap_or(NonZeroU32::MIN),
            },
            idempotency_retention_hours: IDEMPOTENCY_RETENTION_HOURS_MIN,
            admin_token,
            keyring: std::sync::Arc::new(keyring),
            auth_failures_per_minute: till_access::authn::FAILURE_THROTTLE_THRESHOLD,
            recovery: till_http::recovery::RecoveryConfig::default(),
            jwt_keys: Vec::new(),
            jwt_issuer: None,
            jwt_audience: None,
            jwt_leeway_seconds: 30,
            jwt_lifetime_seconds_max: till_access::jwt::LIFETIME_SECONDS_DEFAULT,
            webhooks: till_webhooks::WebhookConfig::default(),
            bus: till_events::bus::Bus::Embedded,
            payments: till_payments::PaymentsConfig::default(),
            payouts: till_payouts::PayoutsConfig::default(),
            commerce: till_commerce::CommerceConfig::default(),
            notify: till_notify::NotifyConfig::default(),
            crm: till_crm::CrmConfig::default(),
        }
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.idempotency_retention_hours < IDEMPOTENCY_RETENTION_HOURS_MIN {
            return Err(ConfigError::Invalid {
                setting: "TILL_IDEMPOTENCY_RETENTION_HOURS",
                why: format!("must be at least {IDEMPOTENCY_RETENTION_HOURS_MIN} (API.md promises a day)"),
            });
        }
        if self.admin_token.expose_secret().len() < 32 {
            return Err(ConfigError::Invalid {
                setting: "TILL_ADMIN_TOKEN",
                why: "must be at least 32 characters".into(),
            });
        }
        let seconds = |duration: std::time::Duration| duration.as_secs();
        if !(1..=300).contains(&seconds(self.http.header_timeout)) {
            return Err(ConfigError::Invalid {
                setting: "TILL_HTTP_HEADER_TIMEOUT_SECONDS",
                why: "must be between 1 and 300".into(),
            });
        }
        if !(1..=3600).contains(&seconds(self.http.body_timeout)) {
            return Err(ConfigError::Invalid {
                setting: "TILL_HTTP_BODY_TIMEOUT_SECONDS",
                why: "must be between 1 and 3600".into(),
            });
        }
        if !(1..=1_000_000).contains(&self.http.connections_max) {
            return Err(ConfigError::Invalid {
                setting: "TILL_HTTP_CONNECTIONS_MAX",
                why: "must be between 1 and 1000000".into(),
            });
        }
        if !(1024..=64 * 1024 * 1024).contains(&self.body_bytes_max) {
            return Err(ConfigError::Invalid {
                setting: "TILL_BODY_BYTES_MAX",
                why: "must be between 1 KiB and 64 MiB".into(),
            });
        }
        Ok(())
    }
}
