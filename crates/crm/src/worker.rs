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
    let record = |change: &Leased, outcome: &'static str, error: Option<String>, retry_ms: i64, attempted: bool| {
        store::Recorded { id: change.id, outcome, error, retry_ms, attempted }
    };
    let recorded: Vec<store::Recorded> = match answer {
        Ok(Batch::Answered(outcomes)) => {
            let mut expired = false;
            let recorded = leased
                .iter()
                .zip(outcomes)
                .map(|(change, outcome)| match outcome {
                    Outcome::Done => record(change, "synced", None, 0, true),
                    Outcome::Refused { code, message } => {
                        let error = format!("{code}: {message}");
                        tracing::warn!(change = %change.id, sobject = change.sobject, %error, "Salesforce refused a record; parked");
                        record(change, "parked", Some(error), 0, true)
                    }
                    Outcome::SessionExpired => {
                        expired = true;
                        record(change, "pending", Some(String::from("the session expired")), 0, false)
                    }
                    Outcome::Failed { status, code } => {
                        let error = format!("HTTP {status} {code}");
                        record(change, "pending", Some(error), jittered(config, change.attempts), true)
                    }
                })
                .collect();
            if expired {
                salesforce.expire_token();
            }
            recorded
        }
        Ok(Batch::SessionExpired) => {
            salesforce.expire_token();
            let why = "the session expired twice in a row";
            leased.iter().map(|change| record(change, "pending", Some(why.into()), 1_000, false)).collect()
        }
        Ok(Batch::Limited) => {
            let retry_ms = jittered(config, 3);
            leased
                .iter()
                .map(|change| record(change, "pending", Some("REQUEST_LIMIT_EXCEEDED".into()), retry_ms, false))
                .collect()
        }
        Err(error) => {
            // Nothing reached the org, or it is failing: no attempt is used for the first.
            let attempted = error.may_have_acted() && !matches!(error, OutboundError::Failing { status: 429, .. });
            let attempts = leased.iter().map(|change| change.attempts).max().unwrap_or(0);
            let retry_ms = jittered(config, attempts);
            leased
                .iter()
                .map(|change| record(change, "pending", Some(error.to_string()), retry_ms, attempted))
                .collect()
        }
    };
    store::record_all(pool, &recorded).await?;
    Ok(leased.len())
}
