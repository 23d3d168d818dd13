//! The webhook worker: fans new events out to endpoints, then delivers due deliveries,
//! signed, each through the SSRF guard, and records every attempt. Runs until shutdown.

use std::sync::Arc;
use std::time::Instant;

use axum::http::{HeaderMap, HeaderValue};
use sqlx::PgPool;
use tokio::sync::{watch, Semaphore};
use uuid::Uuid;

use super::guard::{check_url, GuardedResolver};
use super::signing::signature_header;
use super::{retry_delay, WebhookConfig};

const FAN_OUT_ROWS_MAX: i32 = 1_000;
const CLAIM_ROWS_MAX: i32 = 64;
const SENDS_CONCURRENT_MAX: usize = 16;
/// Bytes of a receiver's response read at most; the rest is ignored.
const RESPONSE_BYTES_MAX: usize = 16 * 1024;
const ERROR_CHARS_MAX: usize = 300;
const DISABLE_CHECK_INTERVAL: std::time::Duration = std::time::Duration::from_secs(60);

#[derive(sqlx::FromRow)]
struct Claimed {
    delivery_id: Uuid,
    #[allow(dead_code)]
    business_id: Uuid,
    #[allow(dead_code)]
    endpoint_id: Uuid,
    url: String,
    secret: String,
    previous_secret: Option<String>,
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
    sqlx::query_scalar("SELECT events.disable_failing_endpoints($1::interval)")
        .bind(disable_after)
        .fetch_one(pool)
        .await
}

pub async fn run(pool: PgPool, config: WebhookConfig, mut shutdown: watch::Receiver<bool>) {
    let client = match client(&config) {
        Ok(client) => client,
        Err(error) => {
            tracing::error!(%error, "cannot build the webhook client; webhooks will not be delivered");
            return;
        }
    };
    let sends = Arc::new(Semaphore::new(SENDS_CONCURRENT_MAX));
    let mut tick = tokio::time::interval(config.poll_interval);
    let mut disable_check = tokio::time::interval(DISABLE_CHECK_INTERVAL);
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = disable_check.tick() => {
                match disable_failing_endpoints(&pool, &config).await {
                    Ok(0) => {}
                    Ok(disabled) => tracing::warn!(disabled, "disabled webhook endpoints that kept failing"),
                    Err(error) => tracing::warn!(%error, "checking for failing webhook endpoints failed"),
                }
                continue;
            }
            _ = tick.tick() => {}
        }
        if let Err(error) = step(&pool, &config, &client, &sends).await {
            tracing::warn!(%error, "webhook worker step failed; retrying on the next tick");
        }
    }
}

/// One round: fan out, then deliver what is due.
pub async fn step(
    pool: &PgPool,
    config: &WebhookConfig,
    client: &reqwest::Client,
    sends: &Arc<Semaphore>,
) -> Result<(), sqlx::Error> {
    while sqlx::query_scalar::<_, i32>("SELECT events.fan_out_webhooks($1)")
        .bind(FAN_OUT_ROWS_MAX)
        .fetch_one(pool)
        .await?
        > 0
    {}
    let disable_after = format!("{} milliseconds", config.disable_after.as_millis());
    let disabled: i32 = sqlx::query_scalar("SELECT events.disable_failing_endpoints($1::interval)")
        .bind(disable_after)
        .fetch_one(pool)
        .await?;
    if disabled > 0 {
        tracing::warn!(disabled, "disabled webhook endpoints that kept failing");
    }
    let lease = format!("{} milliseconds", (config.request_timeout + config.connect_timeout).as_millis() * 2);
    let claimed: Vec<Claimed> = sqlx::query_as("SELECT * FROM events.claim_webhook_deliveries($1, $2::interval)")
        .bind(CLAIM_ROWS_MAX)
        .bind(lease)
        .fetch_all(pool)
        .await?;
    let mut tasks = Vec::with_capacity(claimed.len());
    for delivery in claimed {
        let permit = Arc::clone(sends).acquire_owned().await.ok();
        let (pool, config, client) = (pool.clone(), config.clone(), client.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = permit;
            deliver(&pool, &config, &client, delivery).await
        }));
    }
    for task in tasks {
        match task.await {
            Ok(Err(error)) => tracing::warn!(%error, "recording a webhook attempt failed; the lease will retry it"),
            Err(error) => tracing::error!(%error, "a webhook delivery task failed"),
            Ok(Ok(())) => {}
        }
    }
    Ok(())
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
    delivery: Claimed,
) -> Result<(), sqlx::Error> {
    let started = Instant::now();
    let attempt = send(config, client, &delivery).await;
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
    sqlx::query("SELECT events.record_webhook_attempt($1, $2, $3, $4, $5, $6)")
        .bind(delivery.delivery_id)
        .bind(attempt.succeeded)
        .bind(attempt.status_code)
        .bind(latency_ms)
        .bind(attempt.error)
        .bind(next_attempt_at)
        .execute(pool)
        .await?;
    Ok(())
}

async fn send(config: &WebhookConfig, client: &reqwest::Client, delivery: &Claimed) -> Attempt {
    let failed = |error: String| Attempt {
        succeeded: false,
        status_code: None,
        error: Some(error.chars().take(ERROR_CHARS_MAX).collect()),
    };
    // Checked again at every delivery: the URL may predate a tightened policy.
    let url = match check_url(&delivery.url, config.allow_private_targets) {
        Ok(url) => url,
        Err(refusal) => return failed(refusal.to_string()),
    };
    let body = match serde_json::to_vec(&delivery.body) {
        Ok(body) => body,
        Err(error) => return failed(error.to_string()),
    };
    let id = format!("evt_{}", delivery.event_id.simple());
    let timestamp = time::OffsetDateTime::now_utc().unix_timestamp();
    let mut secrets = vec![delivery.secret.as_str()];
    secrets.extend(delivery.previous_secret.as_deref());
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
        Err(error) => return failed(error_chain(&error)),
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

/// An error and its causes ("error sending request: … : operation timed out"), so the
/// attempt log says what actually happened.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
