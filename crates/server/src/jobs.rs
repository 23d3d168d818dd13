//! Background jobs: the relay, the RabbitMQ publisher (when that is the bus), the webhook
//! worker, the hold sweeper, resuming abandoned phased requests, purging expired idempotency keys and spent token
//! revocations, and forgetting idle rate-limit buckets. Each runs until the shutdown signal flips, finishing its current
//! step.

use std::time::Duration;

use sqlx::PgPool;
use till_http::rate_limit::RateLimiter;
use till_ledger::engine::Engine;
use tokio::sync::watch;

const PURGE_INTERVAL: Duration = Duration::from_secs(15 * 60);
const PURGE_BATCH_ROWS_MAX: i32 = 10_000;
const LIMITER_SWEEP_INTERVAL: Duration = Duration::from_secs(60);
const HOLD_SWEEP_INTERVAL: Duration = Duration::from_secs(1);
const HOLD_SWEEP_ROWS_MAX: i32 = 1_000;
const RECOVERY_INTERVAL: Duration = Duration::from_secs(1);
const RECOVERY_ROWS_MAX: i32 = 100;

/// What the background jobs run with.
pub struct Jobs {
    pub pool: PgPool,
    pub retention_hours: u32,
    pub limiter: RateLimiter,
    pub engine: Engine,
    pub webhooks: till_webhooks::WebhookConfig,
    pub keyring: std::sync::Arc<till_kit::Keyring>,
    pub bus: till_events::bus::Bus,
    /// The longest a dashboard token lives: revocations older than that are purged.
    pub token_lifetime_max: Duration,
    pub recovery: Recovery,
}

/// What the recovery job resumes abandoned phased requests with.
pub struct Recovery {
    pub unit_of_work: till_http::unit_of_work::UnitOfWorkState,
    pub resumers: Vec<till_http::recovery::Resumer>,
}

pub fn spawn(jobs: Jobs, mut shutdown: watch::Receiver<bool>) -> tokio::task::JoinHandle<()> {
    let Jobs { pool, retention_hours, limiter, engine, webhooks, keyring, bus, token_lifetime_max, recovery } = jobs;
    // One task that ends when all the jobs have: `till up` awaits it before closing the
    // pool, so no job ever meets a closed pool.
    tokio::spawn(async move {
        let relay = till_events::relay::run(pool.clone(), shutdown.clone());
        let webhooks = till_webhooks::worker::run(pool.clone(), webhooks, keyring, shutdown.clone());
        let publisher = {
            let (pool, shutdown) = (pool.clone(), shutdown.clone());
            async move {
                if let till_events::bus::Bus::RabbitMq(broker) = bus {
                    till_events::broker::publisher::run(pool, broker, shutdown).await;
                }
            }
        };
        let periodic = async move {
            let mut purge = tokio::time::interval(PURGE_INTERVAL);
            let mut sweep = tokio::time::interval(LIMITER_SWEEP_INTERVAL);
            let mut holds = tokio::time::interval(HOLD_SWEEP_INTERVAL);
            holds.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut resume = tokio::time::interval(RECOVERY_INTERVAL);
            resume.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = shutdown.changed() => return,
                    _ = purge.tick() => {
                        purge_idempotency_keys(&pool, retention_hours).await;
                        purge_token_revocations(&pool, token_lifetime_max).await;
                    }
                    _ = sweep.tick() => limiter.forget_idle(),
                    _ = holds.tick() => expire_holds(&engine).await,
                    _ = resume.tick(), if !recovery.resumers.is_empty() => resume_abandoned(&recovery).await,
                }
            }
        };
        tokio::join!(relay, publisher, webhooks, periodic);
    })
}

/// Resumes phased requests that were abandoned (their process died, no client retried).
async fn resume_abandoned(recovery: &Recovery) {
    match till_http::recovery::resume_abandoned(&recovery.unit_of_work, &recovery.resumers, RECOVERY_ROWS_MAX).await {
        Ok(0) => {}
        Ok(resumed) => tracing::info!(resumed, "resumed abandoned requests from their recovery points"),
        Err(error) => tracing::warn!(%error, "resuming abandoned requests failed; the next tick retries"),
    }
}

/// Expires overdue holds, a bounded number per tick; a backlog drains over a few ticks.
async fn expire_holds(engine: &Engine) {
    match till_ledger::engine::expire_overdue_holds(engine, HOLD_SWEEP_ROWS_MAX).await {
        Ok(0) => {}
        Ok(expired) => tracing::info!(expired, "expired overdue holds"),
        // The next tick tries again; a hold past its expiry cannot be posted meanwhile.
        Err(error) => tracing::warn!(%error, "sweeping overdue holds failed"),
    }
}

async fn purge_token_revocations(pool: &PgPool, token_lifetime_max: Duration) {
    // A token issued before a revocation expired at most a lifetime (and the clock
    // leeway) after it: the revocation can refuse nothing any more.
    let older_than = token_lifetime_max + Duration::from_secs(till_access::jwt::LEEWAY_SECONDS_MAX * 2);
    match till_access::store::purge_revocations(pool, older_than).await {
        Ok(0) => {}
        Ok(purged) => tracing::info!(purged, "purged token revocations that can refuse nothing any more"),
        // The next tick tries again; a revocation kept longer refuses only dead tokens.
        Err(error) => tracing::warn!(%error, "purging token revocations failed"),
    }
}

async fn purge_idempotency_keys(pool: &PgPool, retention_hours: u32) {
    // Delete in bounded batches so one purge never holds a long transaction.
    loop {
        match till_http::unit_of_work::purge_expired_keys(pool, retention_hours, PURGE_BATCH_ROWS_MAX).await {
            Ok(purged) if purged >= i64::from(PURGE_BATCH_ROWS_MAX) => continue,
            Ok(purged) => {
                if purged > 0 {
                    tracing::info!(purged, "purged expired idempotency keys");
                }
                return;
            }
            Err(error) => {
                // The next tick tries again; expired keys staying a little longer is harmless.
                tracing::warn!(%error, "purging idempotency keys failed");
                return;
            }
        }
    }
}
