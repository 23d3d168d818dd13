//! The webhook worker: fans new events out to endpoints, then delivers due deliveries,
//! signed, each through the SSRF guard, and records every attempt. Runs until shutdown.
//!
//! Sends run in a pool of `sends_max` slots, and a slot is refilled as soon as it frees
//! (one slow receiver never holds up the rest, as a claim-and-wait-for-all round did).
//! The claim itself is fair (see `webhooks.claim_deliveries`): one delivery per
//! endpoint per claim, each business and endpoint under its in-flight limit, the least
//! recently served first, and nothing to an endpoint whose breaker is open.

use std::sync::Arc;
use std::time::Instant;

use axum::http::{HeaderMap, HeaderValue};
use sqlx::PgPool;
use till_kit::Keyring;
use tokio::sync::{watch, Notify, Semaphore};
use tokio::task::JoinSet;
use uuid::Uuid;

use super::guard::{check_url, GuardedResolver};
use super::signing::signature_header;
use super::{retry_delay, WebhookConfig};

const FAN_OUT_ROWS_MAX: i32 = 1_000;
/// Bytes of a receiver's response read at most; the rest is ignored.
const RESPONSE_BYTES_MAX: usize = 16 * 1024;
const DISABLE_CHECK_INTERVAL: std::time::Duration = std::time::Duration::from_secs(60);

#[derive(sqlx::FromRow)]
struct Claimed {
    delivery_id: Uuid,
    business_id: Uuid,
    endpoint_id: Uuid,
    url: String,
    secret: Option<String>,
    secret_sealed: Option<Vec<u8>>,
    previous_secret: Option<String>,
    previous_secret_sealed: Option<Vec<u8>>,
    event_id: Uuid,
    attempts: i32,
    created_at: time::OffsetDateTime,
    body: serde_json::Value,
}

/// Builds the one HTTP client deliveries use: no redirects, no proxy, bounded times, and
/// the guarded resolver.
pub fn client(config: &WebhookConfig) -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .connect_timeout(config.connect_timeout)
        .timeout(config.request_timeout)
        .dns_resolver(Arc::new(GuardedResolver { allow_private: config.allow_private_targets }))
        .user_agent("Till-Webhooks/1")
        .build()
}

/// Disables endpoints that have failed for longer than `disable_after`.
pub async fn disable_failing_endpoints(pool: &PgPool, config: &WebhookConfig) -> Result<i32, sqlx::Error> {
    let disable_after = format!("{} milliseconds", config.disable_after.as_millis());
    sqlx::query_scalar("SELECT webhooks.disable_failing_endpoints($1::interval)")
        .bind(disable_after)
        .fetch_one(pool)
        .await
}

pub async fn run(pool: PgPool, config: WebhookConfig, keyring: Arc<Keyring>, mut shutdown: watch::Receiver<bool>) {
    let client = match client(&config) {
        Ok(client) => client,
        Err(error) => {
            tracing::error!(%error, "cannot build the webhook client; webhooks will not be delivered");
            return;
        }
    };
    let slots = Arc::new(Semaphore::new(config.sends_max.max(1)));
    let finished = Arc::new(Notify::new());
    let mut sends = JoinSet::new();
    let mut tick = tokio::time::interval(config.poll_interval);
    let mut disable_check = tokio::time::interval(DISABLE_CHECK_INTERVAL);
    loop {
        let fan_out = tokio::select! {
            _ = shutdown.changed() => break,
            _ = disable_check.tick() => {
                match disable_failing_endpoints(&pool, &config).await {
                    Ok(0) => {}
                    Ok(disabled) => tracing::warn!(disabled, "disabled webhook endpoints that kept failing"),
                    Err(error) => tracing::warn!(%error, "checking for failing webhook endpoints failed"),
                }
                continue;
            }
            _ = tick.tick() => true,
            // A send ended: its slot can take the next delivery now.
            () = finished.notified() => false,
        };
        while let Some(ended) = sends.try_join_next() {
            if let Err(error) = ended {
                tracing::error!(%error, "a webhook delivery task failed");
            }
        }
        if fan_out {
            if let Err(error) = fan_out_all(&pool, &config).await {
                tracing::warn!(%error, "webhook fan-out failed; retrying on the next tick");
            }
        }
        let free = slots.available_permits();
        if free == 0 {
            continue;
        }
        let claimed = match claim(&pool, &config, free).await {
            Ok(claimed) => claimed,
            Err(error) => {
                tracing::warn!(%error, "claiming webhook deliveries failed; retrying on the next tick");
                continue;
            }
        };
        for delivery in claimed {
            let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else { break };
            let (pool, config, client, keyring, finished) =
                (pool.clone(), config.clone(), client.clone(), keyring.clone(), finished.clone());
            sends.spawn(async move {
                let _permit = permit;
                if let Err(error) = deliver(&pool, &config, &client, &keyring, delivery).await {
                    tracing::warn!(%error, "recording a webhook attempt failed; the lease will retry it");
                }
                finished.notify_one();
            });
        }
    }
    // Let the sends in flight finish (each is bounded by the request timeout), so that
    // their attempts are recorded rather than retried after their leases.
    while sends.join_next().await.is_some() {}
}

/// Turns every new log event into deliveries.
async fn fan_out_all(pool: &PgPool, config: &WebhookConfig) -> Result<(), sqlx::Error> {
    let (types, roles) = super::api::restricted_types();
    while sqlx::query_scalar::<_, i32>("SELECT webhooks.fan_out($1, $2, $3, $4)")
        .bind(FAN_OUT_ROWS_MAX)
        .bind(i32::try_from(config.pending_deliveries_max).unwrap_or(i32::MAX))
        .bind(&types)
        .bind(&roles)
        .fetch_one(pool)
        .await?
        > 0
    {}
    Ok(())
}

async fn claim(pool: &PgPool, config: &WebhookConfig, rows_max: usize) -> Result<Vec<Claimed>, sqlx::Error> {
    let lease = format!("{} milliseconds", (config.request_timeout + config.connect_timeout).as_millis() * 2);
    sqlx::query_as("SELECT * FROM webhooks.claim_deliveries($1, $2::interval, $3, $4, $5)")
        .bind(i32::try_from(rows_max).unwrap_or(i32::MAX))
        .bind(lease)
        .bind(i32::try_from(config.endpoint_in_flight_max).unwrap_or(i32::MAX))
        .bind(i32::try_from(config.business_in_flight_max).unwrap_or(i32::MAX))
        .bind(i32::try_from(config.breaker_failures).unwrap_or(i32::MAX))
        .fetch_all(pool)
        .await
}

struct Attempt {
    succeeded: bool,
    status_code: Option<i32>,
    error: Option<String>,
}

async fn deliver(
    pool: &PgPool,
    config: &WebhookConfig,
    client: &reqwest::Client,
    keyring: &Keyring,
    delivery: Claimed,
) -> Result<(), sqlx::Error> {
    let started = Instant::now();
    let attempt = send(config, client, keyring, &delivery).await;
    let latency_ms = i32::try_from(started.elapsed().as_millis()).unwrap_or(i32::MAX);
    let attempts_done = u32::try_from(delivery.attempts).unwrap_or(0) + 1;
    let next_attempt_at = if attempt.succeeded {
        None
    } else {
        let delay = retry_delay(config, attempts_done, rand::random());
        let due = time::OffsetDateTime::now_utc() + delay;
        let window_ends = delivery.created_at + config.retry_window;
        (due <= window_ends).then_some(due)
    };
    sqlx::query("SELECT webhooks.record_attempt($1, $2, $3, $4, $5, $6, $7, $8::interval, $9::interval)")
        .bind(delivery.delivery_id)
        .bind(attempt.succeeded)
        .bind(attempt.status_code)
        .bind(latency_ms)
        .bind(attempt.error)
        .bind(next_attempt_at)
        .bind(i32::try_from(config.breaker_failures).unwrap_or(i32::MAX))
        .bind(format!("{} milliseconds", config.breaker_pause_base.as_millis()))
        .bind(format!("{} milliseconds", config.breaker_pause_cap.as_millis()))
        .execute(pool)
        .await?;
    Ok(())
}

/// What the merchant may read about a failed attempt (`GET …/deliveries` is open to
/// viewers). The full cause goes to the server log only: the difference between "the
/// name resolves only to internal addresses" and "no such name" would make the endpoint
/// an oracle for Till's internal DNS.
mod outcome {
    pub const REFUSED: &str = "the endpoint's address is not allowed";
    pub const CONNECT: &str = "could not connect to the endpoint";
    pub const TIMED_OUT: &str = "timed out";
    pub const FAILED: &str = "the request failed";
    pub const SECRET: &str = "the endpoint's signing secret is unavailable";
}

fn failed(error: &'static str) -> Attempt {
    Attempt { succeeded: false, status_code: None, error: Some(error.to_string()) }
}

async fn send(config: &WebhookConfig, client: &reqwest::Client, keyring: &Keyring, delivery: &Claimed) -> Attempt {
    let log = |cause: &dyn std::fmt::Display| {
        tracing::info!(
            delivery = %delivery.delivery_id,
            endpoint = %delivery.endpoint_id,
            business = %delivery.business_id,
            %cause,
            "a webhook attempt failed"
        );
    };
    // Checked again at every delivery: the URL may predate a tightened policy.
    let url = match check_url(&delivery.url, config.allow_private_targets) {
        Ok(url) => url,
        Err(refusal) => {
            log(&refusal);
            return failed(outcome::REFUSED);
        }
    };
    let body = match serde_json::to_vec(&delivery.body) {
        Ok(body) => body,
        Err(error) => {
            log(&error);
            return failed(outcome::FAILED);
        }
    };
    let endpoint = delivery.endpoint_id;
    let secret = super::secrets::open(keyring, endpoint, delivery.secret_sealed.as_deref(), delivery.secret.as_deref());
    let secret = match secret {
        Ok(Some(secret)) => secret,
        Ok(None) => {
            log(&"the endpoint has no signing secret");
            return failed(outcome::SECRET);
        }
        Err(error) => {
            tracing::error!(%error, endpoint = %endpoint, "a webhook signing secret cannot be opened");
            return failed(outcome::SECRET);
        }
    };
    // The previous secret signs only during its grace period; one that no longer opens
    // just stops signing early.
    let previous = super::secrets::open(
        keyring,
        endpoint,
        delivery.previous_secret_sealed.as_deref(),
        delivery.previous_secret.as_deref(),
    )
    .unwrap_or(None);
    let id = format!("evt_{}", delivery.event_id.simple());
    let timestamp = time::OffsetDateTime::now_utc().unix_timestamp();
    let mut secrets = vec![secret.expose_secret().as_str()];
    secrets.extend(previous.as_ref().map(|previous| previous.expose_secret().as_str()));
    let mut headers = HeaderMap::new();
    let values = [
        ("webhook-id", id.clone()),
        ("webhook-timestamp", timestamp.to_string()),
        ("webhook-signature", signature_header(&secrets, &id, timestamp, &body)),
        ("content-type", "application/json".to_string()),
    ];
    for (name, value) in values {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(name, value);
        }
    }
    let response = match client.post(url).headers(headers).body(body).send().await {
        Ok(response) => response,
        Err(error) => {
            log(&till_kit::errors::chain(&error));
            return failed(if error.is_timeout() {
                outcome::TIMED_OUT
            } else if error.is_connect() {
                outcome::CONNECT
            } else {
                outcome::FAILED
            });
        }
    };
    let status = response.status();
    // Read a little of the body (some receivers only finish their work while writing it),
    // never all of it.
    let mut response = response;
    let mut read = 0;
    while let Ok(Some(chunk)) = response.chunk().await {
        read += chunk.len();
        if read >= RESPONSE_BYTES_MAX {
            break;
        }
    }
    let code = Some(i32::from(status.as_u16()));
    if status.is_success() {
        Attempt { succeeded: true, status_code: code, error: None }
    } else {
        Attempt { succeeded: false, status_code: code, error: Some(format!("HTTP {}", status.as_u16())) }
    }
}
