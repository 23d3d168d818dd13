//! Background jobs: each mounted service's own (the relay, the RabbitMQ publisher when
//! that is the bus, the webhook worker, the hold sweeper, purging spent token
//! revocations), and the platform's: resuming abandoned phased requests, purging expired
//! idempotency keys, forgetting idle rate-limit buckets. Each runs until the shutdown
//! signal flips, finishing its current step.

use std::time::Duration;

use sqlx::PgPool;
use till_http::rate_limit::RateLimiter;
use till_http::service::Job;
use tokio::sync::watch;

const PURGE_INTERVAL: Duration = Duration::from_secs(15 * 60);
const PURGE_BATCH_ROWS_MAX: i32 = 10_000;
const LIMITER_SWEEP_INTERVAL: Duration = Duration::from_secs(60);
const RECOVERY_INTERVAL: Duration = Duration::from_secs(1);
const RECOVERY_ROWS_MAX: i32 = 100;

/// What the background jobs run with.
pub struct Jobs {
    pub pool: PgPool,
    pub retention_hours: u32,
    pub limiter: RateLimiter,
    pub recovery: Recovery,
    /// The mounted services' jobs.
    pub services: Vec<Job>,
}

/// What the recovery job resumes abandoned phased requests with.
pub struct Recovery {
    pub unit_of_work: till_http::unit_of_work::UnitOfWorkState,
    pub resumers: Vec<till_http::recovery::Resumer>,
}

/// Starts every job; the future it returns ends when all of them have. `till up` awaits
/// it before closing the pool, so no job ever meets a closed pool.
pub fn spawn(jobs: Jobs, mut shutdown: watch::Receiver<bool>) -> impl std::future::Future<Output = ()> {
    let Jobs { pool, retention_hours, limiter, recovery, services } = jobs;
    let mut running: Vec<(&'static str, tokio::task::JoinHandle<()>)> =
        services.into_iter().map(|job| (job.name, job.spawn(shutdown.clone()))).collect();
    let platform = tokio::spawn(async move {
        let mut purge = tokio::time::interval(PURGE_INTERVAL);
        let mut sweep = tokio::time::interval(LIMITER_SWEEP_INTERVAL);
        let mut resume = tokio::time::interval(RECOVERY_INTERVAL);
        resume.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = purge.tick() => purge_idempotency_keys(&pool, retention_hours).await,
                _ = sweep.tick() => limiter.forget_idle(),
                _ = resume.tick(), if !recovery.resumers.is_empty() => resume_abandoned(&recovery).await,
            }
        }
    });
    running.push(("platform", platform));
    async move {
        for (name, job) in running {
            if let Err(error) = job.await {
                tracing::error!(%error, job = name, "a background job ended abnormally");
            }
        }
    }
}

/// Resumes phased requests that were abandoned (their process died, no client retried).
async fn resume_abandoned(recovery: &Recovery) {
    match till_http::recovery::resume_abandoned(&recovery.unit_of_work, &recovery.resumers, RECOVERY_ROWS_MAX).await {
        Ok(0) => {}
        Ok(resumed) => tracing::info!(resumed, "resumed abandoned requests from their recovery points"),
        Err(error) => tracing::warn!(%error, "resuming abandoned requests failed; the next tick retries"),
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
