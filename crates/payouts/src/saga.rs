//! The payout saga: every payout `processing` moves on through the rail until it ends
//! exactly once, and a paid one is watched for a return.
//!
//! Its state is the payout row (`rail_payout_id`, `next_step_at`, `attempts`,
//! `watch_until`): nothing lives only in memory. The worker leases due payouts
//! (`payouts.lease_due`, `FOR UPDATE SKIP LOCKED`, so two workers or two Tills never take
//! the same one) and runs each step:
//!
//! 1. Not at the rail yet: send it, with the payout's id as the rail's idempotency key,
//!    the same on every attempt, so a retry after a timeout or a crash makes no second
//!    payment. Nothing sent (the breaker is open, no connection): it stays `processing`
//!    (`queued_for_rail`) and is tried again later; nothing is lost and nothing is
//!    refused (docs/DECISIONS.md). The outcome unknown (a timeout, a reply that could not
//!    be trusted): sent again later under the same key, which answers what it made.
//! 2. At the rail: ask where it stands, on a backing-off schedule, until a final status.
//! 3. A final status, in one transaction with the payout's change and its event: `paid`
//!    posts the hold, `failed` voids it, `returned` reverses the posted hold (or, if the
//!    payout was never seen paid, posts and reverses it: the money left and came back).
//!
//! Each step re-reads the payout under its row lock before it writes, and writes only a
//! transition the state machine allows from what it finds: a stale answer (the rail says
//! `VALIDATED` of a payout already paid) changes nothing, and `paid` then `returned`
//! is honoured however late it comes.

use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use till_kit::{BusinessId, Currency, Money};
use till_ledger::TransferId;
use till_outbound::OutboundError;
use till_outbox::EventType;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::api::{announce_payout, Payouts};
use crate::ledger::Ending;
use crate::rail::{Outgoing, RailKind, RailPayment, RailStatus, Sent};
use crate::store::{self, Step};
use crate::PayoutId;

/// How the saga runs.
#[derive(Debug, Clone)]
pub struct SagaConfig {
    /// How often the worker looks for due payouts (it is also woken by new ones).
    pub interval: Duration,
    /// How long a leased payout is the worker's before another may take it.
    pub lease: Duration,
    /// When to ask the rail again about a payout it holds, by attempt; the last repeats.
    /// Modulr's guidance: 3 minutes, 10 minutes, 30 minutes, 2 hours, 4 hours.
    pub poll_schedule: Vec<Duration>,
    /// How long a paid payout is watched for a return, and how often.
    pub return_watch: Duration,
    pub return_poll: Duration,
    /// Payouts stepped at once.
    pub batch: i32,
}

impl Default for SagaConfig {
    fn default() -> SagaConfig {
        let minutes = |m: u64| Duration::from_secs(m * 60);
        SagaConfig {
            interval: Duration::from_millis(200),
            lease: Duration::from_secs(60),
            poll_schedule: vec![minutes(3), minutes(10), minutes(30), minutes(120), minutes(240)],
            return_watch: Duration::from_secs(5 * 24 * 3600),
            return_poll: minutes(240),
            batch: 32,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SagaError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("{0}")]
    Api(String),
}

impl From<till_http::ApiError> for SagaError {
    fn from(error: till_http::ApiError) -> SagaError {
        SagaError::Api(error.to_string())
    }
}

/// Runs the saga until `shutdown`.
pub async fn run(pool: PgPool, payouts: Payouts, config: SagaConfig, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let config = Arc::new(config);
    loop {
        if *shutdown.borrow() {
            return;
        }
        match pass(&pool, &payouts, &config).await {
            // A full batch: more may be due at once.
            Ok(stepped) if stepped >= usize::try_from(config.batch).unwrap_or(usize::MAX) => continue,
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "a payout saga pass failed; it runs again"),
        }
        tokio::select! {
            _ = shutdown.changed() => return,
            () = tokio::time::sleep(config.interval) => {}
            () = payouts.wake.notified() => {}
        }
    }
}

/// Leases the due payouts and steps each; returns how many it took.
pub async fn pass(pool: &PgPool, payouts: &Payouts, config: &SagaConfig) -> Result<usize, SagaError> {
    let lease = i32::try_from(config.lease.as_secs()).unwrap_or(i32::MAX);
    let due = store::lease_due(pool, config.batch, lease).await?;
    let count = due.len();
    let steps = due.into_iter().map(|due| async move {
        let payout = due.payout.id;
        if let Err(error) = step(pool, payouts, config, due).await {
            // The lease runs out and the payout is taken again: nothing is lost.
            tracing::warn!(%error, payout = %PayoutId::from_uuid(payout), "a payout step failed; it is retried");
        }
    });
    futures::future::join_all(steps).await;
    Ok(count)
}

/// One step of one payout, from what its lease read (under the lease: no other step
/// runs on it, and a change the API made since is caught by `apply`'s row lock).
async fn step(pool: &PgPool, payouts: &Payouts, config: &SagaConfig, due: store::Due) -> Result<(), SagaError> {
    let store::Due { business, payout, beneficiary } = due;
    let id = payout.id;
    let Some(beneficiary) = beneficiary else {
        return Err(SagaError::Api(format!("payout {id} has no beneficiary")));
    };
    match payout.status.as_str() {
        "scheduled" => return release(pool, business, id).await,
        "processing" | "paid" => {}
        // Nothing to send or watch (waiting for approval, or final): let the lease go.
        _ => return idle(pool, business, id).await,
    }
    let rail_kind = RailKind::parse(&payout.rail).ok_or_else(|| SagaError::Api(format!("rail {:?}", payout.rail)))?;
    let destination =
        beneficiary.destination().ok_or_else(|| SagaError::Api("a beneficiary without a destination".into()))?;
    let currency = Currency::parse(&payout.currency).map_err(|error| SagaError::Api(error.to_string()))?;
    let key = PayoutId::from_uuid(payout.id).to_string();
    let outgoing = Outgoing {
        key: &key,
        amount: Money::from_minor(payout.amount, currency),
        reference: &payout.reference,
        name: &beneficiary.name,
        destination: &destination,
        rail_account: beneficiary.rail_account.as_deref(),
    };
    let rail = payouts.rail(rail_kind);
    let heard = match &payout.rail_payout_id {
        None => match rail.send(&outgoing).await {
            Ok(Sent::Accepted(payment)) => Heard::Status(payment),
            Ok(Sent::Refused { reason }) => Heard::Refused(reason),
            Err(error) => Heard::Nothing(error),
        },
        Some(rail_id) => match rail.retrieve(rail_id, &outgoing).await {
            Ok(payment) => Heard::Status(payment),
            Err(error) => Heard::Nothing(error),
        },
    };
    apply(pool, config, business, id, currency, heard).await
}

/// A scheduled payout whose cooling-off ended: queued for the rail, with its event.
async fn release(pool: &PgPool, business: BusinessId, id: Uuid) -> Result<(), SagaError> {
    let mut tx = till_db::begin_tenant(pool, business).await?;
    let Some(row) = store::lock_payout(&mut tx, id).await? else { return Ok(()) };
    if row.status != "scheduled" {
        return Ok(());
    }
    let now = OffsetDateTime::now_utc();
    let released = store::transition(&mut tx, id, "processing", Some("queued_for_rail"), Some(now), None).await?;
    announce_payout(&mut tx, &released, EventType::PayoutProcessing).await?;
    tx.commit().await?;
    Ok(())
}

/// A payout with nothing due: not due again, and its lease let go.
async fn idle(pool: &PgPool, business: BusinessId, id: Uuid) -> Result<(), SagaError> {
    let mut tx = till_db::begin_tenant(pool, business).await?;
    store::idle(&mut tx, id).await?;
    tx.commit().await?;
    Ok(())
}

/// What the rail said, or that it said nothing usable.
enum Heard {
    Status(RailPayment),
    Refused(String),
    Nothing(OutboundError),
}

fn after(delay: Duration) -> OffsetDateTime {
    OffsetDateTime::now_utc() + delay
}

fn poll_delay(config: &SagaConfig, attempts: i32) -> Duration {
    let index = usize::try_from(attempts).unwrap_or(0);
    config.poll_schedule.get(index).or(config.poll_schedule.last()).copied().unwrap_or(Duration::from_secs(60))
}

/// Writes what was heard, under the payout's row lock, if the state machine allows it.
async fn apply(
    pool: &PgPool,
    config: &SagaConfig,
    business: BusinessId,
    id: Uuid,
    currency: Currency,
    heard: Heard,
) -> Result<(), SagaError> {
    let mut tx = till_db::begin_tenant(pool, business).await?;
    let Some(row) = store::lock_payout(&mut tx, id).await? else { return Ok(()) };
    let text = PayoutId::from_uuid(id).to_string();
    let hold = TransferId::from_uuid(row.hold_id);
    let request_id = None;
    let attempts = row.attempts.saturating_add(1);
    let now = OffsetDateTime::now_utc();
    // Unchanged unless a branch below says otherwise; the lease is let go either way.
    let mut step = Step {
        status: &row.status,
        status_detail: row.status_detail.as_deref(),
        failure_reason: row.failure_reason.as_deref(),
        rail_payout_id: row.rail_payout_id.as_deref(),
        rail_status: row.rail_status.as_deref(),
        next_step_at: None,
        attempts,
        watch_until: row.watch_until,
        paid_at: row.paid_at,
        transition: false,
    };
    let mut event = None;
    let detail: String;
    let reason: String;
    match (row.status.as_str(), &heard) {
        ("processing", Heard::Nothing(error)) => {
            let (why, delay) = if error.may_have_acted() {
                ("rail_outcome_unknown", poll_delay(config, row.attempts))
            } else {
                let wait = match error {
                    OutboundError::Unavailable { retry_after, .. } => *retry_after,
                    _ => poll_delay(config, row.attempts),
                };
                ("queued_for_rail", wait)
            };
            tracing::warn!(%error, payout = %text, why, "the rail gave no usable answer");
            // A payout already at the rail keeps its own detail (the rail's status).
            if row.rail_payout_id.is_none() {
                step.status_detail = Some(why);
            }
            step.next_step_at = Some(after(delay));
        }
        ("processing", Heard::Refused(why)) => {
            crate::ledger::end(&mut tx, business, &text, hold, currency, Ending::Void, request_id).await?;
            reason = format!("the rail refused it: {why}");
            step.status = "failed";
            step.status_detail = None;
            step.failure_reason = Some(&reason);
            step.transition = true;
            event = Some(EventType::PayoutFailed);
        }
        ("processing", Heard::Status(payment)) => {
            step.rail_payout_id = Some(&payment.id);
            match &payment.status {
                RailStatus::Pending { detail: pending } => {
                    detail = pending.clone();
                    step.status_detail = Some(&detail);
                    step.rail_status = Some(&detail);
                    step.next_step_at = Some(after(poll_delay(config, row.attempts)));
                }
                RailStatus::Paid => {
                    crate::ledger::end(&mut tx, business, &text, hold, currency, Ending::Post, request_id).await?;
                    step.status = "paid";
                    step.status_detail = None;
                    step.rail_status = Some("paid");
                    step.paid_at = Some(now);
                    step.watch_until = Some(now + config.return_watch);
                    step.next_step_at = Some(after(config.return_poll));
                    step.transition = true;
                    event = Some(EventType::PayoutPaid);
                }
                RailStatus::Failed { reason: why } => {
                    crate::ledger::end(&mut tx, business, &text, hold, currency, Ending::Void, request_id).await?;
                    reason = why.clone();
                    step.status = "failed";
                    step.status_detail = None;
                    step.rail_status = Some("failed");
                    step.failure_reason = Some(&reason);
                    step.transition = true;
                    event = Some(EventType::PayoutFailed);
                }
                RailStatus::Returned { reason: why } => {
                    // Never seen paid: the money left and came back, both in the ledger.
                    crate::ledger::end(&mut tx, business, &text, hold, currency, Ending::Post, request_id).await?;
                    crate::ledger::end(&mut tx, business, &text, hold, currency, Ending::Reverse, request_id).await?;
                    reason = why.clone();
                    step.status = "returned";
                    step.status_detail = None;
                    step.rail_status = Some("returned");
                    step.failure_reason = Some(&reason);
                    step.transition = true;
                    event = Some(EventType::PayoutReturned);
                }
            }
        }
        ("paid", Heard::Status(payment)) if Some(payment.id.as_str()) == row.rail_payout_id.as_deref() => {
            match &payment.status {
                RailStatus::Returned { reason: why } => {
                    crate::ledger::end(&mut tx, business, &text, hold, currency, Ending::Reverse, request_id).await?;
                    reason = why.clone();
                    step.status = "returned";
                    step.rail_status = Some("returned");
                    step.failure_reason = Some(&reason);
                    step.watch_until = None;
                    step.transition = true;
                    event = Some(EventType::PayoutReturned);
                }
                // Paid still, or a stale answer (`VALIDATED` after paid): nothing changes;
                // watched until the window closes.
                other => {
                    if !matches!(other, RailStatus::Paid) {
                        tracing::warn!(payout = %text, status = ?other, "a stale rail status of a paid payout is ignored");
                    }
                    if row.watch_until.is_some_and(|until| until > now) {
                        step.next_step_at = Some(after(config.return_poll));
                    }
                }
            }
        }
        ("paid", _) if row.watch_until.is_some_and(|until| until > now) => {
            step.next_step_at = Some(after(config.return_poll));
        }
        // Final: nothing is due, whatever was heard.
        _ => {}
    }
    // A failed payout no longer counts toward the velocity limits.
    if event == Some(EventType::PayoutFailed) {
        let uncounted = row.amount.checked_neg().ok_or_else(|| SagaError::Api("an amount of i64::MIN".into()))?;
        store::count_velocity(&mut tx, row.business_id, &row.currency, row.created_at, uncounted).await?;
    }
    let written = store::write_step(&mut tx, id, &step).await?;
    if let Some(event_type) = event {
        announce_payout(&mut tx, &written, event_type).await?;
    }
    tx.commit().await?;
    Ok(())
}
