//! The checkout saga: from a `pending` order to `paid`, or to a compensated end.
//!
//! Its state is the order row (`step`, with `void_to` on the way back), advanced by a
//! worker that leases due orders (`commerce.lease_due_orders`, `FOR UPDATE SKIP LOCKED`,
//! so two instances never work one order at once) and is woken by the commit of a
//! checkout or a cancel (`pg_notify`, delivered at commit). Each step is:
//!
//! 1. a transaction that locks the order and counts the attempt (so a cancel knows
//!    whether the payment may have gone out);
//! 2. a call to payments with a key made of the order and the step (`ord_…:authorize`),
//!    outside any transaction;
//! 3. a transaction that locks the order again, checks it is still at that step, and
//!    records what the call decided with the next step — or, when nothing was decided
//!    (a timeout, an outage), the time to try again, with the same key.
//!
//! A crash between 1 and 3 leaves the order at its step with its lease running out; the
//! next lease repeats the call with the same key, which payments answers with the
//! effect it already had (replayed, or resumed from its recovery point). The steps:
//!
//! - `authorize`: create and confirm a manual-capture intent. Authorised → pin the
//!   reservation (it no longer expires) and go to `capture`; if the reservation has
//!   expired meanwhile → `void` to `canceled`. Declined or refused → release the stock,
//!   `payment_failed`.
//! - `capture`: capture it all. Captured → `complete`. Refused → `void` to
//!   `payment_failed`; a reply that cannot be trusted → read the intent and follow it.
//! - `void`: cancel the intent (its authorisation is released), then release the stock
//!   and end in `void_to`.
//! - `complete`: in one transaction, commit the reservation (the stock is sold), issue
//!   the invoice and make the order `paid`.

use std::time::Duration;

use futures::StreamExt;
use sqlx::{PgConnection, PgPool};
use till_kit::{BusinessId, Currency};
use till_outbox::EventType;

use crate::payment_intents::{Answer, Expected, Intent, IntentStatus, PaymentIntents};
use crate::payment_intents::{RefundAnswer, RefundStatus};
use crate::store::{self, OrderRow, OrderState};
use crate::store::{RefundRow, RefundState};
use crate::{OrderId, OrderRefundId};

/// The channel a checkout's commit notifies.
pub const CHANNEL: &str = "commerce_orders";

/// How the saga worker runs.
#[derive(Debug, Clone)]
pub struct SagaConfig {
    /// How often it looks for due orders without being woken.
    pub interval: Duration,
    /// Orders leased at once.
    pub batch: i32,
    /// Orders worked at once.
    pub concurrency: usize,
    /// How long a lease lasts: longer than a step's call to payments with its retries.
    pub lease_seconds: i32,
    /// The first retry's delay bound; each retry doubles it, up to `retry_cap`, and the
    /// delay is drawn uniformly below the bound (full jitter).
    pub retry_base: Duration,
    pub retry_cap: Duration,
}

impl Default for SagaConfig {
    fn default() -> SagaConfig {
        SagaConfig {
            interval: Duration::from_secs(1),
            batch: 64,
            concurrency: 8,
            lease_seconds: 120,
            retry_base: Duration::from_millis(500),
            retry_cap: Duration::from_secs(60),
        }
    }
}

/// Wakes the saga worker when the caller's transaction commits.
pub async fn wake(connection: &mut PgConnection) -> Result<(), sqlx::Error> {
    store::notify(connection, CHANNEL).await
}

/// The worker, until `shutdown` flips.
pub async fn run(
    pool: PgPool,
    payments: PaymentIntents,
    config: SagaConfig,
    links: crate::links::DocumentLinks,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let mut listener = match sqlx::postgres::PgListener::connect_with(&pool).await {
        Ok(mut listener) => match listener.listen(CHANNEL).await {
            Ok(()) => Some(listener),
            Err(error) => {
                tracing::warn!(%error, "the checkout saga cannot LISTEN; polling only");
                None
            }
        },
        Err(error) => {
            tracing::warn!(%error, "the checkout saga cannot LISTEN; polling only");
            None
        }
    };
    loop {
        if *shutdown.borrow() {
            return;
        }
        let due = store::lease_due_orders(&pool, config.batch, config.lease_seconds).await;
        let orders_full = work_due(due, &config, "order", |business, order| {
            advance(&pool, &payments, &config, &links, business, order)
        })
        .await;
        let due = store::lease_due_refunds(&pool, config.batch, config.lease_seconds).await;
        let refunds_full = work_due(due, &config, "refund", |business, refund| {
            advance_refund(&pool, &payments, &config, business, refund)
        })
        .await;
        let full = orders_full || refunds_full;
        if full {
            continue;
        }
        let notified = async {
            match listener.as_mut() {
                Some(listener) => listener.recv().await.map(|_| ()),
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = shutdown.changed() => return,
            () = tokio::time::sleep(config.interval) => {}
            outcome = notified => {
                if let Err(error) = outcome {
                    tracing::warn!(%error, "the checkout saga's listener failed; polling only");
                    listener = None;
                }
            }
        }
    }
}

/// Works what a lease took, `config.concurrency` at a time; whether the lease was full
/// (more may be due at once). A step that fails is logged and left to its lease, which
/// runs out and lets the next pass retry it.
async fn work_due<F, Fut>(
    due: Result<Vec<(uuid::Uuid, uuid::Uuid)>, sqlx::Error>,
    config: &SagaConfig,
    what: &'static str,
    work: F,
) -> bool
where
    F: Fn(BusinessId, uuid::Uuid) -> Fut,
    Fut: std::future::Future<Output = Result<(), StepError>>,
{
    let due = match due {
        Ok(due) => due,
        Err(error) => {
            tracing::warn!(%error, what, "leasing due work failed; retrying");
            return false;
        }
    };
    let full = due.len() >= usize::try_from(config.batch).unwrap_or(usize::MAX);
    futures::stream::iter(due)
        .for_each_concurrent(config.concurrency, |(business, id)| {
            let step = work(BusinessId::from_uuid(business), id);
            async move {
                if let Err(error) = step.await {
                    tracing::warn!(%error, what, id = %id, "a checkout saga step failed; it is retried");
                }
            }
        })
        .await;
    full
}

#[derive(Debug, thiserror::Error)]
pub enum StepError {
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error("{0}")]
    Api(String),
}

impl From<till_http::ApiError> for StepError {
    fn from(error: till_http::ApiError) -> StepError {
        StepError::Api(format!("{error:?}"))
    }
}

impl From<till_outbox::AnnounceError> for StepError {
    fn from(error: till_outbox::AnnounceError) -> StepError {
        StepError::Api(error.to_string())
    }
}

impl From<crate::invoices::IssueError> for StepError {
    fn from(error: crate::invoices::IssueError) -> StepError {
        StepError::Api(error.to_string())
    }
}

/// Steps one order can take in one lease (authorise, capture, complete, and a void).
const STEPS_PER_LEASE_MAX: usize = 6;

/// Works one leased order until it is done or waits for a retry.
pub async fn advance(
    pool: &PgPool,
    payments: &PaymentIntents,
    config: &SagaConfig,
    links: &crate::links::DocumentLinks,
    business: BusinessId,
    order: uuid::Uuid,
) -> Result<(), StepError> {
    for _ in 0..STEPS_PER_LEASE_MAX {
        let Some(row) = start_step(pool, business, order).await? else {
            return Ok(());
        };
        let expected = expected_of(&row)?;
        let id = OrderId::from_uuid(row.id);
        let more = match row.step.as_str() {
            "authorize" => {
                let customer = crate::orders::customer_of(&row)?;
                let answer = payments
                    .authorize(
                        business,
                        &format!("{id}:authorize"),
                        expected,
                        &row.payment_method,
                        &customer.email,
                        &format!("Order {id}"),
                    )
                    .await;
                authorized(pool, config, business, &row, answer).await?
            }
            "capture" => {
                let intent = intent_of(&row)?;
                let answer = payments.capture(business, &format!("{id}:capture"), &intent, expected).await;
                let answer = match answer {
                    // What payments could not trust, it recorded as its own state: read it.
                    Answer::Refused { status: 502, .. } | Answer::Unusable(_) => {
                        payments.retrieve(business, &intent, expected).await
                    }
                    answer => answer,
                };
                captured(pool, config, business, &row, answer).await?
            }
            "void" => {
                let intent = intent_of(&row)?;
                let answer = payments.cancel(business, &format!("{id}:void"), &intent, expected).await;
                let answer = match answer {
                    // Canceled already, or never authorised: read where it stands.
                    Answer::Refused { status: 409 | 502, .. } | Answer::Unusable(_) => {
                        payments.retrieve(business, &intent, expected).await
                    }
                    answer => answer,
                };
                voided(pool, config, business, &row, answer).await?
            }
            "complete" => complete(pool, business, &row, links).await?,
            _ => false,
        };
        if !more {
            return Ok(());
        }
    }
    Ok(())
}

fn expected_of(row: &OrderRow) -> Result<Expected, StepError> {
    let currency = Currency::parse(&row.currency).map_err(|error| StepError::Api(error.to_string()))?;
    Ok(Expected { amount: row.total, currency })
}

fn intent_of(row: &OrderRow) -> Result<String, StepError> {
    row.payment_intent_id
        .clone()
        .ok_or_else(|| StepError::Api(format!("order {} is at {} without its payment intent", row.id, row.step)))
}

/// Phase 1 of a step: the order, locked, with the attempt counted; `None` if it is done.
/// A cancel asked for before a capture turns the capture into a void here.
async fn start_step(pool: &PgPool, business: BusinessId, order: uuid::Uuid) -> Result<Option<OrderRow>, StepError> {
    let mut tx = till_db::begin_tenant(pool, business).await?;
    let Some(row) = store::lock_order(&mut tx, order).await? else {
        return Ok(None);
    };
    if row.step == "done" {
        return Ok(None);
    }
    if row.step == "authorize" && row.cancel_requested_at.is_some() && row.attempts == 0 {
        store::add_order_step(&mut tx, &row, "cancel", "succeeded", "canceled before the payment was sent").await?;
        crate::orders::end_unpaid(
            &mut tx,
            &row,
            "canceled",
            ("canceled_by_request", "The order was canceled before payment."),
        )
        .await?;
        tx.commit().await?;
        return Ok(None);
    }
    let mut state = OrderState { attempts: row.attempts.saturating_add(1), ..OrderState::of(&row) };
    if row.step == "capture" && row.cancel_requested_at.is_some() {
        store::add_order_step(
            &mut tx,
            &row,
            "capture",
            "compensated",
            "a cancel was asked for: the authorisation is voided instead",
        )
        .await?;
        state = OrderState {
            step: String::from("void"),
            void_to: Some(String::from("canceled")),
            failure_code: Some(String::from("canceled_by_request")),
            failure_message: Some(String::from("The order was canceled before its payment was captured.")),
            attempts: 1,
            ..state
        };
    }
    let row = store::set_order(&mut tx, row.id, &state).await?;
    tx.commit().await?;
    Ok(Some(row))
}

/// The locked order, if it is still at the step this call was for (a second worker
/// whose lease ran out may have moved it on).
async fn still_at(connection: &mut PgConnection, row: &OrderRow) -> Result<Option<OrderRow>, StepError> {
    Ok(store::lock_order(connection, row.id).await?.filter(|current| current.step == row.step))
}

/// Nothing decided: the same step later, with the same key. The first retry of a step
/// is recorded with its reason; the ones after only count.
async fn retry_later(
    pool: &PgPool,
    config: &SagaConfig,
    business: BusinessId,
    row: &OrderRow,
    why: &str,
) -> Result<bool, StepError> {
    let mut tx = till_db::begin_tenant(pool, business).await?;
    let Some(current) = still_at(&mut tx, row).await? else {
        return Ok(false);
    };
    if current.attempts <= 1 {
        store::add_order_step(&mut tx, &current, &current.step, "retrying", why).await?;
    }
    let state = OrderState {
        next_step_in_ms: Some(backoff_ms(config, current.attempts)),
        release_lease: true,
        ..OrderState::of(&current)
    };
    store::set_order(&mut tx, current.id, &state).await?;
    tx.commit().await?;
    Ok(false)
}

/// Full jitter: uniform below `min(cap, base × 2^(attempts-1))`.
fn backoff_ms(config: &SagaConfig, attempts: i32) -> i64 {
    let exponent = u32::try_from(attempts.saturating_sub(1)).unwrap_or(0).min(20);
    let base = u64::try_from(config.retry_base.as_millis()).unwrap_or(u64::MAX);
    let cap = u64::try_from(config.retry_cap.as_millis()).unwrap_or(u64::MAX);
    let bound = base.saturating_mul(1_u64 << exponent).min(cap).max(1);
    i64::try_from(rand::random::<u64>() % bound).unwrap_or(0)
}

/// Moves the order to `step` (attempts start again), recording what decided it.
fn next(row: &OrderRow, step: &str) -> OrderState {
    OrderState { step: step.to_string(), attempts: 0, next_step_in_ms: Some(0), ..OrderState::of(row) }
}

fn to_void(row: &OrderRow, void_to: &str, code: &str, message: &str) -> OrderState {
    OrderState {
        void_to: Some(void_to.to_string()),
        failure_code: Some(code.to_string()),
        failure_message: Some(message.to_string()),
        ..next(row, "void")
    }
}

async fn authorized(
    pool: &PgPool,
    config: &SagaConfig,
    business: BusinessId,
    row: &OrderRow,
    answer: Answer,
) -> Result<bool, StepError> {
    let (intent, failure) = match answer {
        Answer::NotYet(why) => return retry_later(pool, config, business, row, &why).await,
        Answer::Intent(intent) if intent.status == IntentStatus::RequiresCapture => (Some(intent), None),
        Answer::Intent(Intent { status: IntentStatus::RequiresPaymentMethod, decline: Some(decline), .. }) => {
            (None, Some(("card_declined", decline)))
        }
        // A UPI collect or 3-D Secure the customer has not answered: the same call later
        // finds the same payment, until it is decided.
        Answer::Intent(intent) if matches!(intent.status, IntentStatus::Processing | IntentStatus::RequiresAction) => {
            return retry_later(pool, config, business, row, "the payment waits for the customer").await
        }
        Answer::Intent(intent) => {
            (None, Some(("payment_refused", format!("the payment is {:?} after its confirm", intent.status))))
        }
        Answer::Refused { status, code, detail } => {
            (None, Some(("payment_refused", format!("payments refused it ({status} {code}): {detail}"))))
        }
        Answer::Unusable(why) => (None, Some(("payment_refused", format!("payments' answer was unusable: {why}")))),
    };
    let mut tx = till_db::begin_tenant(pool, business).await?;
    let Some(current) = still_at(&mut tx, row).await? else {
        return Ok(false);
    };
    if let (Some(intent), _) = (&intent, &failure) {
        let with_intent = OrderState { payment_intent_id: Some(intent.id.clone()), ..OrderState::of(&current) };
        let current = store::set_order(&mut tx, current.id, &with_intent).await?;
        store::add_order_step(&mut tx, &current, "authorize", "succeeded", &format!("{} authorised", intent.id))
            .await?;
        let state = if current.cancel_requested_at.is_some() {
            to_void(
                &current,
                "canceled",
                "canceled_by_request",
                "The order was canceled before its payment was captured.",
            )
        } else if store::pin_reservation(&mut tx, current.reservation_id).await?.is_some() {
            next(&current, "capture")
        } else {
            store::add_order_step(
                &mut tx,
                &current,
                "reserve",
                "failed",
                "the reservation expired before the payment was authorised",
            )
            .await?;
            to_void(
                &current,
                "canceled",
                "reservation_expired",
                "The stock's reservation expired before the payment was authorised.",
            )
        };
        store::set_order(&mut tx, current.id, &state).await?;
        tx.commit().await?;
        return Ok(true);
    }
    let (code, message) = failure.unwrap_or(("payment_refused", String::from("no intent")));
    store::add_order_step(&mut tx, &current, "authorize", "failed", &message).await?;
    crate::orders::end_unpaid(&mut tx, &current, "payment_failed", (code, &message)).await?;
    tx.commit().await?;
    Ok(false)
}

async fn captured(
    pool: &PgPool,
    config: &SagaConfig,
    business: BusinessId,
    row: &OrderRow,
    answer: Answer,
) -> Result<bool, StepError> {
    // What the capture decided: `None` to complete, or why the authorisation is voided.
    let (failed, detail): (Option<String>, String) = match answer {
        Answer::NotYet(why) => return retry_later(pool, config, business, row, &why).await,
        Answer::Intent(intent) if intent.status == IntentStatus::Succeeded && intent.amount_received == row.total => {
            (None, format!("{} captured", intent.id))
        }
        Answer::Intent(intent) if intent.status == IntentStatus::RequiresCapture => {
            return retry_later(pool, config, business, row, "the intent is still authorised, not captured").await
        }
        Answer::Intent(intent) if intent.status == IntentStatus::Canceled => {
            let why = String::from("the authorisation was canceled before it was captured");
            (Some(why.clone()), format!("{}: {why}", intent.id))
        }
        Answer::Intent(intent) => {
            let why = format!("the intent is {:?}: waiting for it to settle", intent.status);
            return retry_later(pool, config, business, row, &why).await;
        }
        Answer::Refused { status, code, detail } => {
            let why = format!("payments refused the capture ({status} {code}): {detail}");
            (Some(why.clone()), why)
        }
        Answer::Unusable(why) => return retry_later(pool, config, business, row, &why).await,
    };
    let mut tx = till_db::begin_tenant(pool, business).await?;
    let Some(current) = still_at(&mut tx, row).await? else {
        return Ok(false);
    };
    let (state, outcome) = match &failed {
        None => (next(&current, "complete"), "succeeded"),
        Some(why) => (to_void(&current, "payment_failed", "capture_failed", why), "failed"),
    };
    store::add_order_step(&mut tx, &current, "capture", outcome, &detail).await?;
    store::set_order(&mut tx, current.id, &state).await?;
    tx.commit().await?;
    Ok(true)
}

async fn voided(
    pool: &PgPool,
    config: &SagaConfig,
    business: BusinessId,
    row: &OrderRow,
    answer: Answer,
) -> Result<bool, StepError> {
    // An authorisation that cannot be voided is left to lapse (the gateway releases an
    // uncaptured one by itself, Stripe's after 7 days): nothing was captured, and nothing
    // will be, since only this saga captures an order's payment, so the order ends.
    let lapse = |why: String| ("failed", format!("{why}: the authorisation is left to lapse"));
    let (outcome, detail) = match answer {
        Answer::NotYet(why) => return retry_later(pool, config, business, row, &why).await,
        Answer::Intent(intent) if intent.status == IntentStatus::Canceled => {
            ("compensated", format!("{} voided", intent.id))
        }
        Answer::Intent(intent) if intent.status == IntentStatus::RequiresPaymentMethod => {
            ("compensated", format!("{} holds no authorisation", intent.id))
        }
        // The gateway refused the void while payments still holds the authorisation (it
        // lapsed or was canceled at the gateway).
        Answer::Intent(intent) if intent.status == IntentStatus::RequiresCapture => {
            lapse(format!("the gateway refused to void {}", intent.id))
        }
        // Captured after all (a capture whose answer was not in when a cancel turned
        // the step into a void): the customer has paid, so the order completes with its
        // stock, which stays pinned; a refund undoes it if the seller wants.
        Answer::Intent(intent) if intent.status == IntentStatus::Succeeded && intent.amount_received == row.total => {
            let mut tx = till_db::begin_tenant(pool, business).await?;
            let Some(current) = still_at(&mut tx, row).await? else {
                return Ok(false);
            };
            let reservation = store::find_reservation(&mut tx, current.reservation_id).await?;
            if !reservation.is_some_and(|held| held.status == "active" && held.pinned_at.is_some()) {
                // Its stock is gone (the reservation expired before the authorisation):
                // captured money with nothing to sell is a person's to refund.
                tx.rollback().await?;
                let why = format!("{} was captured, but its stock is no longer held: refund it", intent.id);
                return retry_later(pool, config, business, row, &why).await;
            }
            let why =
                format!("{} was captured before it could be voided: the order is paid (refund it to undo)", intent.id);
            store::add_order_step(&mut tx, &current, "void", "failed", &why).await?;
            let state =
                OrderState { void_to: None, failure_code: None, failure_message: None, ..next(&current, "complete") };
            store::set_order(&mut tx, current.id, &state).await?;
            tx.commit().await?;
            return Ok(true);
        }
        Answer::Intent(intent) => {
            // Held for review, or a step in flight: no money may be left behind, and none
            // given back without a person: wait, and say so on the order.
            return retry_later(
                pool,
                config,
                business,
                row,
                &format!("the intent is {:?}: it cannot be voided now", intent.status),
            )
            .await;
        }
        Answer::Refused { status, code, detail } => {
            lapse(format!("payments refused the void ({status} {code}): {detail}"))
        }
        Answer::Unusable(why) => return retry_later(pool, config, business, row, &why).await,
    };
    let mut tx = till_db::begin_tenant(pool, business).await?;
    let Some(current) = still_at(&mut tx, row).await? else {
        return Ok(false);
    };
    store::add_order_step(&mut tx, &current, "void", outcome, &detail).await?;
    let status = current.void_to.clone().unwrap_or_else(|| String::from("payment_failed"));
    let code = current.failure_code.clone().unwrap_or_else(|| String::from("payment_refused"));
    let message = current.failure_message.clone().unwrap_or_default();
    crate::orders::end_unpaid(&mut tx, &current, &status, (&code, &message)).await?;
    tx.commit().await?;
    Ok(false)
}

/// The paid transaction: the reservation committed, the invoice issued, the order paid.
async fn complete(
    pool: &PgPool,
    business: BusinessId,
    row: &OrderRow,
    links: &crate::links::DocumentLinks,
) -> Result<bool, StepError> {
    let mut tx = till_db::begin_tenant(pool, business).await?;
    let Some(current) = still_at(&mut tx, row).await? else {
        return Ok(false);
    };
    let intent = intent_of(&current)?;
    let committed =
        store::end_reservation(&mut tx, current.reservation_id, store::Ending::Committed, "checkout").await?;
    let Some(reservation) = committed else {
        // A pinned reservation ends only here or by a release after a failed payment.
        return Err(StepError::Api(format!("order {} is captured but its reservation is not active", current.id)));
    };
    let reservation_body =
        crate::reservations::announce_row(&mut tx, &reservation, EventType::ReservationCommitted).await?;
    store::add_order_step(
        &mut tx,
        &current,
        "commit",
        "succeeded",
        &format!("{} committed: the stock is sold", reservation_body.id),
    )
    .await?;
    let profile = crate::products::seller(&mut tx, business).await?;
    let settings = store::find_settings(&mut tx, business)
        .await?
        .ok_or_else(|| StepError::Api(String::from("the business's invoice settings are gone")))?;
    let quote = crate::orders::quote_of(&mut tx, &current).await?;
    let customer = crate::orders::customer_of(&current)?;
    let invoice = crate::invoices::issue(
        &mut tx,
        &crate::invoices::Issue {
            business,
            order: OrderId::from_uuid(current.id),
            profile: &profile,
            settings: &settings,
            quote: &quote,
            customer: &customer,
            payment_intent_id: &intent,
            links,
        },
    )
    .await?;
    store::add_order_step(
        &mut tx,
        &current,
        "invoice",
        "succeeded",
        &format!("{} issued as {}", invoice.id, invoice.number),
    )
    .await?;
    let state = OrderState {
        status: String::from("paid"),
        step: String::from("done"),
        invoice_id: Some(invoice.id.as_uuid()),
        next_step_in_ms: None,
        announced: true,
        ..OrderState::of(&current)
    };
    let paid = store::set_order(&mut tx, current.id, &state).await?;
    crate::orders::announce(&mut tx, &paid, EventType::OrderPaid).await?;
    tx.commit().await?;
    Ok(false)
}

/// Works one leased refund: asks payments for it (or, once asked, reads it) and, once
/// the money is back, issues the credit note.
pub async fn advance_refund(
    pool: &PgPool,
    payments: &PaymentIntents,
    config: &SagaConfig,
    business: BusinessId,
    refund: uuid::Uuid,
) -> Result<(), StepError> {
    // Phase 1: the refund, locked, with the attempt counted.
    let mut tx = till_db::begin_tenant(pool, business).await?;
    let Some(row) = store::lock_refund(&mut tx, refund).await? else {
        return Ok(());
    };
    if row.status != "pending" {
        return Ok(());
    }
    let order = store::find_order(&mut tx, row.order_id)
        .await?
        .ok_or_else(|| StepError::Api(format!("refund {} without its order", row.id)))?;
    let attempts = row.attempts.saturating_add(1);
    let row =
        store::set_refund(&mut tx, row.id, &RefundState { attempts, next_step_in_ms: Some(0), ..refund_state(&row) })
            .await?;
    tx.commit().await?;

    // Phase 2: payments, outside any transaction.
    let intent = intent_of(&order)?;
    let currency = Currency::parse(&order.currency).map_err(|error| StepError::Api(error.to_string()))?;
    let expected = Expected { amount: row.amount, currency };
    let answer = match &row.refund_id {
        None => {
            let key = format!("{}:refund", OrderRefundId::from_uuid(row.id));
            payments.refund(business, &key, &intent, expected, &row.reason).await
        }
        Some(refund_id) => payments.retrieve_refund(business, refund_id, &intent, expected).await,
    };

    // Phase 3: what it decided.
    let mut tx = till_db::begin_tenant(pool, business).await?;
    let Some(order) = store::lock_order(&mut tx, row.order_id).await? else {
        return Ok(());
    };
    let Some(current) = store::lock_refund(&mut tx, row.id).await?.filter(|current| current.status == "pending") else {
        return Ok(());
    };
    let later = |current: &RefundRow, refund_id: Option<&str>| {
        let refund_id = refund_id.map(str::to_string).or_else(|| current.refund_id.clone());
        (refund_id, Some(backoff_ms(config, current.attempts)))
    };
    match answer {
        RefundAnswer::Refund(refund) if refund.status == RefundStatus::Succeeded => {
            refunded(&mut tx, business, &order, &current, &refund.id).await?;
        }
        RefundAnswer::Refund(refund) if refund.status == RefundStatus::Failed => {
            let why = refund.failure.unwrap_or_else(|| String::from("the gateway refused the refund"));
            refund_failed(&mut tx, &order, &current, Some(&refund.id), &why).await?;
        }
        RefundAnswer::Refused { status, code, detail } => {
            let why = format!("payments refused the refund ({status} {code}): {detail}");
            refund_failed(&mut tx, &order, &current, None, &why).await?;
        }
        // Pending at the gateway, held for review, unknown, or an answer that cannot be
        // trusted: the same step later (with the refund's id, once known, it is read).
        RefundAnswer::Refund(refund) => {
            let (refund_id, next) = later(&current, Some(&refund.id));
            let state = RefundState {
                refund_id: refund_id.as_deref(),
                next_step_in_ms: next,
                release_lease: true,
                ..refund_state(&current)
            };
            store::set_refund(&mut tx, current.id, &state).await?;
        }
        RefundAnswer::NotYet(_) | RefundAnswer::Unusable(_) => {
            let (refund_id, next) = later(&current, None);
            let state = RefundState {
                refund_id: refund_id.as_deref(),
                next_step_in_ms: next,
                release_lease: true,
                ..refund_state(&current)
            };
            store::set_refund(&mut tx, current.id, &state).await?;
        }
    }
    tx.commit().await?;
    Ok(())
}

fn refund_state(row: &RefundRow) -> RefundState<'_> {
    RefundState {
        status: &row.status,
        refund_id: row.refund_id.as_deref(),
        credit_note_id: row.credit_note_id,
        failure_message: row.failure_message.as_deref(),
        attempts: row.attempts,
        next_step_in_ms: Some(0),
        release_lease: false,
    }
}

async fn refund_failed(
    connection: &mut PgConnection,
    order: &OrderRow,
    refund: &RefundRow,
    refund_id: Option<&str>,
    why: &str,
) -> Result<(), StepError> {
    let state = RefundState {
        status: "failed",
        refund_id: refund_id.or(refund.refund_id.as_deref()),
        failure_message: Some(why),
        next_step_in_ms: None,
        release_lease: true,
        ..refund_state(refund)
    };
    store::set_refund(connection, refund.id, &state).await?;
    let detail = format!("{} failed: {why}", OrderRefundId::from_uuid(refund.id));
    store::add_order_step(connection, order, "refund", "failed", &detail).await?;
    Ok(())
}

/// The money is back: the credit note, the restock and the order's refunded amount, in
/// the caller's transaction.
async fn refunded(
    connection: &mut PgConnection,
    business: BusinessId,
    order: &OrderRow,
    refund: &RefundRow,
    refund_id: &str,
) -> Result<(), StepError> {
    let profile = crate::products::seller(connection, business).await?;
    let settings = store::find_settings(connection, business)
        .await?
        .ok_or_else(|| StepError::Api(String::from("the business's invoice settings are gone")))?;
    let quote = crate::orders::quote_of(connection, order).await?;
    let invoice_id =
        order.invoice_id.ok_or_else(|| StepError::Api(format!("paid order {} without an invoice", order.id)))?;
    let invoice: crate::invoices::InvoiceBody = store::find_invoice(connection, invoice_id)
        .await?
        .map(serde_json::from_value)
        .transpose()
        .map_err(|error| StepError::Api(error.to_string()))?
        .ok_or_else(|| StepError::Api(format!("invoice {invoice_id} is missing")))?;
    let note = crate::credit_notes::issue(
        connection,
        &crate::credit_notes::CreditIssue {
            business,
            profile: &profile,
            settings: &settings,
            order,
            quote: &quote,
            invoice: &invoice,
            refund,
            refund_id,
        },
    )
    .await?;
    if refund.restock {
        let tracked: Vec<String> = store::reservation_lines(connection, order.reservation_id)
            .await?
            .into_iter()
            .map(|line| line.sku)
            .collect();
        let reason = format!("refund {}", OrderRefundId::from_uuid(refund.id));
        for line in note.lines.iter().filter(|line| tracked.contains(&line.sku)) {
            store::restock(connection, business, &line.sku, i64::from(line.quantity), &reason, "checkout")
                .await?
                .ok_or_else(|| StepError::Api(format!("restocking {} failed", line.sku)))?;
        }
    }
    let state = RefundState {
        status: "succeeded",
        refund_id: Some(refund_id),
        credit_note_id: Some(note.id.as_uuid()),
        next_step_in_ms: None,
        release_lease: true,
        ..refund_state(refund)
    };
    store::set_refund(connection, refund.id, &state).await?;
    let detail =
        format!("{} refunded by {refund_id}; credit note {}", OrderRefundId::from_uuid(refund.id), note.number);
    store::add_order_step(connection, order, "refund", "succeeded", &detail).await?;
    let updated = store::add_refunded(connection, order.id, refund.amount).await?;
    crate::orders::announce(connection, &updated, EventType::OrderRefunded).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_jittered_below_a_doubling_bound_with_a_cap() {
        let config = SagaConfig::default();
        for attempts in 1..40 {
            let bound = (500_i64 << (attempts - 1).min(20)).min(60_000);
            for _ in 0..50 {
                let delay = backoff_ms(&config, attempts);
                assert!((0..bound).contains(&delay), "attempt {attempts}: {delay} not below {bound}");
            }
        }
    }
}
