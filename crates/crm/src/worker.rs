//! The worker: leases due changes (the oldest unsynced change of each record, 25 at a
//! time), sends them in one Composite request, and records each one's outcome:
//! - synced;
//! - refused by the org (a validation rule, a duplicate, a related record missing):
//!   parked with the error, holding back only that record's later changes, until
//!   `till crm replay`;
//! - the session expired: the token is refreshed once and the batch sent again;
//! - the org's limits (`REQUEST_LIMIT_EXCEEDED`, 429), an outage, an open breaker: back
//!   in the queue after a full-jitter backoff; a limit or an outage uses no attempt.

use std::time::Duration;

use sqlx::PgPool;
use till_outbound::backoff::Backoff;
use till_outbound::OutboundError;
use tokio::sync::watch;

use crate::salesforce::{Batch, Outcome, Salesforce, Upsert, COMPOSITE_MAX};
use crate::store::{self, Leased};

pub const CHANNEL: &str = "crm_changes";

#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub poll_interval: Duration,
    pub lease_seconds: i32,
    pub backoff: Backoff,
}

impl Default for WorkerConfig {
    fn default() -> WorkerConfig {
        WorkerConfig {
            poll_interval: Duration::from_secs(1),
            lease_seconds: 60,
            backoff: Backoff { base: Duration::from_secs(1), cap: Duration::from_secs(10 * 60) },
        }
    }
}

pub async fn run(
    pool: PgPool,
    salesforce: Option<Salesforce>,
    config: WorkerConfig,
    mut shutdown: watch::Receiver<bool>,
) {
    let Some(salesforce) = salesforce else {
        tracing::warn!("no Salesforce org is set (TILL_SALESFORCE_INSTANCE_URL): CRM changes stay queued");
        return;
    };
    let mut listener = till_db::listen(&pool, CHANNEL).await;
    let mut tick = tokio::time::interval(config.poll_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let notified = async {
            match listener.as_mut() {
                Some(listener) => listener.recv().await.map(|_| ()),
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = tick.tick() => {}
            outcome = notified => {
                if let Err(error) = outcome {
                    tracing::warn!(%error, "the CRM queue's listener failed; polling only from now on");
                    listener = None;
                }
            }
        }
        // Batch after batch while there is work; then wait to be woken.
        loop {
            if !salesforce.admits() {
                break;
            }
            match sync_once(&pool, &salesforce, &config).await {
                Ok(0) => break,
                Ok(_) => continue,
                Err(error) => {
                    tracing::warn!(%error, "syncing to Salesforce failed; retrying on the next tick");
                    break;
                }
            }
        }
    }
}

fn jittered(config: &WorkerConfig, attempt: i32) -> i64 {
    let attempt = u32::try_from(attempt).unwrap_or(0);
    i64::try_from(config.backoff.delay(attempt, rand::random(), None).as_millis()).unwrap_or(i64::MAX)
}

/// One batch: leased, sent, recorded. Answers how many changes it leased.
pub async fn sync_once(pool: &PgPool, salesforce: &Salesforce, config: &WorkerConfig) -> Result<usize, sqlx::Error> {
    let rows_max = i32::try_from(COMPOSITE_MAX).unwrap_or(25);
    let leased = store::lease_due(pool, rows_max, config.lease_seconds).await?;
    if leased.is_empty() {
        return Ok(0);
    }
    let upserts: Vec<Upsert> = leased
        .iter()
        .map(|change| Upsert {
            sobject: change.sobject.clone(),
            external_field: change.external_field.clone(),
            external_id: change.external_id.clone(),
            fields: change.fields.clone(),
        })
        .collect();
    // A session that expired is refreshed once per batch; a second 401 waits for the next.
    let mut answer = salesforce.upsert_all(&upserts).await;
    if matches!(answer, Ok(Batch::SessionExpired)) {
        salesforce.expire_token();
        answer = salesforce.upsert_all(&upserts).await;
    }
    match answer {
        Ok(Batch::Answered(outcomes)) => {
            let mut expired = false;
            for (change, outcome) in leased.iter().zip(outcomes) {
                match outcome {
                    Outcome::Done => store::record(pool, change.id, "synced", None, 0, true).await?,
                    Outcome::Refused { code, message } => {
                        let error = format!("{code}: {message}");
                        tracing::warn!(change = %change.id, sobject = change.sobject, %error, "Salesforce refused a record; parked");
                        store::record(pool, change.id, "parked", Some(&error), 0, true).await?;
                    }
                    Outcome::SessionExpired => {
                        expired = true;
                        store::record(pool, change.id, "pending", Some("the session expired"), 0, false).await?;
                    }
                    Outcome::Failed { status, code } => {
                        let error = format!("HTTP {status} {code}");
                        store::record(
                            pool,
                            change.id,
                            "pending",
                            Some(&error),
                            jittered(config, change.attempts),
                            true,
                        )
                        .await?;
                    }
                }
            }
            if expired {
                salesforce.expire_token();
            }
        }
        Ok(Batch::SessionExpired) => {
            salesforce.expire_token();
            release(pool, &leased, "the session expired twice in a row", 1_000, false).await?;
        }
        Ok(Batch::Limited) => {
            release(pool, &leased, "REQUEST_LIMIT_EXCEEDED", jittered(config, 3), false).await?;
        }
        Err(error) => {
            // Nothing reached the org, or it is failing: no attempt is used for the first.
            let attempted = error.may_have_acted() && !matches!(error, OutboundError::Failing { status: 429, .. });
            let attempts = leased.iter().map(|change| change.attempts).max().unwrap_or(0);
            release(pool, &leased, &error.to_string(), jittered(config, attempts), attempted).await?;
        }
    }
    Ok(leased.len())
}

async fn release(
    pool: &PgPool,
    leased: &[Leased],
    why: &str,
    retry_ms: i64,
    attempted: bool,
) -> Result<(), sqlx::Error> {
    for change in leased {
        store::record(pool, change.id, "pending", Some(why), retry_ms, attempted).await?;
    }
    Ok(())
}
