//! Settlement and reconciliation: the gateway's payouts, matched line by line with what
//! Till recorded.
//!
//! A job ([`run`]) reads each configured gateway's paid payouts newest first until a page
//! holds only payouts it has reconciled, then reconciles the new ones oldest first. For each payout it reads the
//! whole settlement report (every line, all pages) before it writes anything, then:
//! 1. in a platform transaction, records the payout as `reconciling` and finds the
//!    business of each line (`payments.owner_of_line`, the one cross-business read);
//! 2. in one transaction per business, records that business's lines (keyed by the
//!    gateway's line id, so a report read twice records nothing twice) and matches each
//!    with Till's record: a charge with its intent's captured amount and fee, a refund
//!    with a succeeded refund of that amount. What matches is settled: its net moves from
//!    pending to available in the ledger, in that same transaction, with the
//!    `settlement.reconciled` event. What does not is a reconciliation exception with its
//!    event, and nothing is posted for it: never a silent adjustment;
//! 3. in a platform transaction, records the lines no business owns and a report whose
//!    lines do not add up to its payout as exceptions of the platform's, and marks the
//!    payout `reconciled`.
//!
//! A charge or refund line that no business owns yet (a capture whose reply was lost
//! when the gateway paid out, so Till has not recorded its charge) defers the whole
//! payout while it is younger than `unowned_line_grace` (15 minutes by default): the
//! next pass reads it again, and once the step that was in flight records the charge,
//! every line is placed. After the grace it is an `unknown_line` exception.
//!
//! A crash anywhere leaves the payout `reconciling`; the next pass reads it again, and
//! the businesses already done record nothing twice (their settlement row exists).
//!
//! A capture whose fee could not be read when it was made (the fee call failed) takes
//! its fee from its settlement line: the gateway's report is the authority on the fee,
//! and it is posted with the capture's own fee key, so never twice.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;
use sqlx::{PgConnection, PgPool};
use till_http::ApiError;
use till_kit::{BusinessId, Currency, Money};
use till_outbox::EventType;
use time::OffsetDateTime;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::gateway::{Gateway, GatewayKind, GatewayPayout, LineKind, SettlementLine};
use crate::store::{self, IntentRow, RefundRow};
use crate::{PaymentIntentId, ReconciliationExceptionId, RefundId, SettlementId};

/// Pages of payouts read per pass at most, looking for the last reconciled one.
const PAYOUT_PAGES_MAX: usize = 10;

/// One business's part of a gateway payout, as the API and its event show it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SettlementBody {
    pub id: SettlementId,
    pub gateway: String,
    /// The gateway's payout (`po_…`).
    pub gateway_payout_id: String,
    pub currency: Currency,
    /// Of the matched lines: captured amounts, their fees, refunds, and the net that moved
    /// from pending to available (`charges - fees - refunds`).
    pub charges: i64,
    pub fees: i64,
    pub refunds: i64,
    pub net: i64,
    pub matched_lines: i32,
    /// Lines that became reconciliation exceptions (nothing posted for them).
    pub exceptions: i32,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

/// A settlement line that did not match Till's record, or a report that did not add up.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ReconciliationExceptionBody {
    pub id: ReconciliationExceptionId,
    pub gateway: String,
    pub gateway_payout_id: String,
    /// The line (`txn_…`); absent for the report as a whole.
    pub gateway_line_id: Option<String>,
    /// `unknown_line`, `amount_mismatch`, `fee_mismatch`, `currency_mismatch`,
    /// `refund_not_succeeded` or `report_total_mismatch`.
    pub kind: String,
    pub payment_intent_id: Option<PaymentIntentId>,
    pub refund_id: Option<RefundId>,
    /// What Till recorded, and what the gateway reported, in minor units.
    pub expected: Option<i64>,
    pub actual: Option<i64>,
    pub detail: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ExceptionRow {
    pub id: Uuid,
    pub business_id: Option<Uuid>,
    pub gateway: String,
    pub gateway_payout_id: String,
    pub gateway_line_id: Option<String>,
    pub kind: String,
    pub intent_id: Option<Uuid>,
    pub refund_id: Option<Uuid>,
    pub expected: Option<i64>,
    pub actual: Option<i64>,
    pub detail: String,
    pub created_at: OffsetDateTime,
}

impl ExceptionRow {
    pub fn body(&self) -> ReconciliationExceptionBody {
        ReconciliationExceptionBody {
            id: ReconciliationExceptionId::from_uuid(self.id),
            gateway: self.gateway.clone(),
            gateway_payout_id: self.gateway_payout_id.clone(),
            gateway_line_id: self.gateway_line_id.clone(),
            kind: self.kind.clone(),
            payment_intent_id: self.intent_id.map(PaymentIntentId::from_uuid),
            refund_id: self.refund_id.map(RefundId::from_uuid),
            expected: self.expected,
            actual: self.actual,
            detail: self.detail.clone(),
            created_at: self.created_at,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SettleError {
    #[error(transparent)]
    Gateway(#[from] till_outbound::OutboundError),
    #[error("{0}")]
    Api(String),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Announce(#[from] store::AnnounceError),
}

impl From<ApiError> for SettleError {
    fn from(error: ApiError) -> SettleError {
        SettleError::Api(format!("{}: {}", error.code.as_str(), error.detail))
    }
}

/// Reconciles new payouts every `interval` until shutdown.
pub async fn run(
    pool: PgPool,
    gateways: Vec<std::sync::Arc<dyn Gateway>>,
    interval: Duration,
    grace: Duration,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            _ = tick.tick() => for gateway in &gateways {
                let name = gateway.kind().as_str();
                match reconcile_new_payouts(&pool, gateway.as_ref(), grace).await {
                    Ok(0) => {}
                    Ok(reconciled) => tracing::info!(gateway = name, reconciled, "reconciled gateway payouts"),
                    // The next pass reads the payouts again; nothing half-done is lost.
                    Err(error) => tracing::warn!(gateway = name, %error, "reconciling gateway payouts failed"),
                }
            },
        }
    }
}

/// One pass: every paid payout not yet reconciled, oldest first. Returns how many.
///
/// Pages are read newest first until a page holds only reconciled payouts: a payout
/// paid out of order (an older one that turned `paid` after a newer one was reconciled)
/// is still found on the pages before that one.
pub async fn reconcile_new_payouts(
    pool: &PgPool,
    gateway: &dyn Gateway,
    grace: Duration,
) -> Result<usize, SettleError> {
    let mut fresh: Vec<GatewayPayout> = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..PAYOUT_PAGES_MAX {
        let page = gateway.payouts(cursor.as_deref()).await?;
        let known = reconciled(pool, gateway, page.payouts.iter().map(|payout| payout.id.as_str())).await?;
        let before = fresh.len();
        fresh.extend(page.payouts.iter().filter(|payout| !known.contains(&payout.id)).cloned());
        let all_known = fresh.len() == before && !page.payouts.is_empty();
        match page.next {
            Some(next) if !all_known => cursor = Some(next),
            _ => break,
        }
    }
    let mut count = 0;
    for payout in fresh.into_iter().rev() {
        if reconcile_payout(pool, gateway, &payout, grace).await? == Reconciled::Done {
            count += 1;
        }
    }
    Ok(count)
}

/// Which of `ids` are reconciled already.
async fn reconciled<'a>(
    pool: &PgPool,
    gateway: &dyn Gateway,
    ids: impl Iterator<Item = &'a str>,
) -> Result<Vec<String>, SettleError> {
    let ids: Vec<&str> = ids.collect();
    let mut transaction = till_db::begin_platform(pool).await?;
    let known: Vec<String> = sqlx::query_scalar(
        "SELECT gateway_payout_id FROM payments.gateway_payouts
          WHERE gateway = $2 AND gateway_payout_id = ANY ($1) AND status = 'reconciled'",
    )
    .bind(&ids)
    .bind(gateway.kind().as_str())
    .fetch_all(&mut *transaction)
    .await?;
    transaction.commit().await?;
    Ok(known)
}

/// What became of a payout in one pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reconciled {
    Done,
    /// A charge or refund line has no owner yet, and the payout is younger than the
    /// grace: nothing of it is written but its `reconciling` row, and the next pass reads
    /// it again. A business's lines are matched in one go (its settlement row makes a
    /// second pass skip it), so no business is settled before every line is placed.
    Deferred,
}

/// Reconciles one payout: its whole report read first, then written per business.
pub async fn reconcile_payout(
    pool: &PgPool,
    gateway: &dyn Gateway,
    payout: &GatewayPayout,
    grace: Duration,
) -> Result<Reconciled, SettleError> {
    let lines = gateway.payout_lines(payout).await?;
    let name = gateway.kind().as_str();
    let currency = payout.amount.currency();
    let paid_at = OffsetDateTime::from_unix_timestamp(payout.created).unwrap_or_else(|_| OffsetDateTime::now_utc());

    let mut platform = till_db::begin_platform(pool).await?;
    sqlx::query(
        "INSERT INTO payments.gateway_payouts (gateway, gateway_payout_id, amount, currency, status, lines, paid_at)
         VALUES ($6, $1, $2, $3, 'reconciling', $4, $5) ON CONFLICT DO NOTHING",
    )
    .bind(&payout.id)
    .bind(payout.amount.minor())
    .bind(currency.code())
    .bind(i32::try_from(lines.len()).unwrap_or(i32::MAX))
    .bind(paid_at)
    .bind(name)
    .execute(&mut *platform)
    .await?;
    let mut by_business: BTreeMap<Uuid, Vec<&SettlementLine>> = BTreeMap::new();
    let mut unowned: Vec<&SettlementLine> = Vec::new();
    for line in &lines {
        let kind = match line.kind {
            LineKind::Charge => "charge",
            LineKind::Refund => "refund",
            LineKind::Payout => continue,
            LineKind::Other => {
                unowned.push(line);
                continue;
            }
        };
        let owner: Option<Uuid> = sqlx::query_scalar("SELECT payments.owner_of_line($3, $1, $2)")
            .bind(kind)
            .bind(&line.source)
            .bind(name)
            .fetch_one(&mut *platform)
            .await?;
        match owner {
            Some(business) => by_business.entry(business).or_default().push(line),
            None => unowned.push(line),
        }
    }
    platform.commit().await?;
    let age = OffsetDateTime::now_utc() - paid_at;
    let placeable = unowned.iter().any(|line| matches!(line.kind, LineKind::Charge | LineKind::Refund));
    if placeable && age < grace {
        tracing::info!(
            gateway = name,
            payout = %payout.id,
            unowned = unowned.len(),
            "a payout has lines Till cannot place yet; it is read again on the next pass"
        );
        return Ok(Reconciled::Deferred);
    }

    for (business, lines) in &by_business {
        let business = BusinessId::from_uuid(*business);
        let mut transaction = till_db::begin_tenant(pool, business).await?;
        reconcile_business(&mut transaction, gateway, business, payout, lines).await?;
        transaction.commit().await?;
    }

    let mut platform = till_db::begin_platform(pool).await?;
    for line in unowned {
        let detail = format!("Till has no record of {} ({}).", line.source, line.id);
        let exception = NewException {
            business: None,
            line: Some(&line.id),
            kind: "unknown_line",
            intent: None,
            refund: None,
            expected: None,
            actual: Some(line.net.minor()),
            detail,
        };
        insert_exception(&mut platform, name, payout, &exception).await?;
    }
    let total = lines
        .iter()
        .filter(|line| line.kind != LineKind::Payout)
        .try_fold(0_i64, |sum, line| sum.checked_add(line.net.minor()));
    if total != Some(payout.amount.minor()) {
        let exception = NewException {
            business: None,
            line: None,
            kind: "report_total_mismatch",
            intent: None,
            refund: None,
            expected: Some(payout.amount.minor()),
            actual: total,
            detail: format!("The report's lines add up to {total:?}, the payout paid {}.", payout.amount.minor()),
        };
        insert_exception(&mut platform, name, payout, &exception).await?;
    }
    sqlx::query(
        "UPDATE payments.gateway_payouts SET status = 'reconciled', reconciled_at = now()
          WHERE gateway = $2 AND gateway_payout_id = $1",
    )
    .bind(&payout.id)
    .bind(name)
    .execute(&mut *platform)
    .await?;
    platform.commit().await?;
    Ok(Reconciled::Done)
}

struct NewException<'a> {
    business: Option<BusinessId>,
    line: Option<&'a str>,
    kind: &'static str,
    intent: Option<Uuid>,
    refund: Option<Uuid>,
    expected: Option<i64>,
    actual: Option<i64>,
    detail: String,
}

/// Records an exception once (a report read again finds it there); a business's gets its
/// event.
async fn insert_exception(
    connection: &mut PgConnection,
    gateway: &str,
    payout: &GatewayPayout,
    new: &NewException<'_>,
) -> Result<(), SettleError> {
    let row: Option<ExceptionRow> = sqlx::query_as(
        "INSERT INTO payments.reconciliation_exceptions
                (id, business_id, gateway, gateway_payout_id, gateway_line_id, kind, intent_id, refund_id,
                 expected, actual, detail)
         VALUES ($1, $2, $11, $3, $4, $5, $6, $7, $8, $9, $10)
         ON CONFLICT DO NOTHING RETURNING *",
    )
    .bind(ReconciliationExceptionId::generate().as_uuid())
    .bind(new.business.map(|business| business.as_uuid()))
    .bind(&payout.id)
    .bind(new.line)
    .bind(new.kind)
    .bind(new.intent)
    .bind(new.refund)
    .bind(new.expected)
    .bind(new.actual)
    .bind(&new.detail)
    .bind(gateway)
    .fetch_optional(&mut *connection)
    .await?;
    let Some(row) = row else { return Ok(()) };
    tracing::warn!(payout = %payout.id, line = ?new.line, kind = new.kind, detail = %new.detail, "reconciliation exception");
    if let Some(business) = row.business_id {
        let body = row.body();
        store::announce(
            connection,
            business,
            body.id.to_string(),
            1,
            row.created_at,
            EventType::ReconciliationExceptionCreated,
            &body,
        )
        .await?;
    }
    Ok(())
}

/// What one line settles, once matched.
struct Matched {
    charge: i64,
    fee: i64,
    refund: i64,
}

/// One business's lines of a payout, in its own transaction.
async fn reconcile_business(
    connection: &mut PgConnection,
    gateway: &dyn Gateway,
    business: BusinessId,
    payout: &GatewayPayout,
    lines: &[&SettlementLine],
) -> Result<(), SettleError> {
    let currency = payout.amount.currency();
    let name = gateway.kind().as_str();
    let id = SettlementId::generate();
    // The settlement row first: a business already reconciled for this payout (an
    // earlier pass that crashed later) has it, and is left as it is.
    let inserted = sqlx::query(
        "INSERT INTO payments.settlements (id, business_id, gateway, gateway_payout_id, currency, charges, fees,
                                           refunds, net, matched_lines, exceptions)
         VALUES ($1, $2, $5, $3, $4, 0, 0, 0, 0, 0, 0) ON CONFLICT DO NOTHING",
    )
    .bind(id.as_uuid())
    .bind(business.as_uuid())
    .bind(&payout.id)
    .bind(currency.code())
    .bind(name)
    .execute(&mut *connection)
    .await?;
    if inserted.rows_affected() == 0 {
        return Ok(());
    }
    let settlement = id.to_string();
    let (mut charges, mut fees, mut refunds, mut matched_lines, mut exceptions) = (0_i64, 0_i64, 0_i64, 0, 0);
    for line in lines {
        let (intent, refund, outcome) = match line.kind {
            LineKind::Charge => {
                let intent: Option<IntentRow> = sqlx::query_as(
                    "SELECT * FROM payments.intents WHERE gateway = $2 AND gateway_charge_id = $1 FOR UPDATE",
                )
                .bind(&line.source)
                .bind(name)
                .fetch_optional(&mut *connection)
                .await?;
                match intent {
                    Some(intent) => {
                        let outcome = match_charge(connection, business, &intent, line).await?;
                        (Some(intent.id), None, outcome)
                    }
                    None => (None, None, Err(vanished(line))),
                }
            }
            LineKind::Refund => {
                let refund: Option<RefundRow> =
                    sqlx::query_as("SELECT * FROM payments.refunds WHERE gateway_refund_id = $1 FOR UPDATE")
                        .bind(&line.source)
                        .fetch_optional(&mut *connection)
                        .await?;
                match refund {
                    Some(refund) => {
                        let outcome = match_refund(&refund, line, currency);
                        (Some(refund.intent_id), Some(refund.id), outcome)
                    }
                    None => (None, None, Err(vanished(line))),
                }
            }
            LineKind::Payout | LineKind::Other => continue,
        };
        let kind = if line.kind == LineKind::Charge { "charge" } else { "refund" };
        sqlx::query(
            "INSERT INTO payments.settlement_lines (gateway, gateway_line_id, settlement_id, business_id, kind, source,
                                                    intent_id, refund_id, amount, fee, net, matched)
             VALUES ($12, $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(&line.id)
        .bind(id.as_uuid())
        .bind(business.as_uuid())
        .bind(kind)
        .bind(&line.source)
        .bind(intent)
        .bind(refund)
        .bind(line.amount.minor())
        .bind(line.fee.minor())
        .bind(line.net.minor())
        .bind(outcome.is_ok())
        .bind(name)
        .execute(&mut *connection)
        .await?;
        match outcome {
            Ok(matched) => {
                matched_lines += 1;
                let overflow = || SettleError::Api(format!("settlement {settlement}'s totals overflowed"));
                charges = charges.checked_add(matched.charge).ok_or_else(overflow)?;
                fees = fees.checked_add(matched.fee).ok_or_else(overflow)?;
                refunds = refunds.checked_add(matched.refund).ok_or_else(overflow)?;
                let table = if refund.is_some() { "refunds" } else { "intents" };
                sqlx::query(&format!("UPDATE payments.{table} SET settled_at = now() WHERE id = $1"))
                    .bind(refund.or(intent))
                    .execute(&mut *connection)
                    .await?;
            }
            Err(mismatch) => {
                exceptions += 1;
                let exception = NewException {
                    business: Some(business),
                    line: Some(&line.id),
                    kind: mismatch.kind,
                    intent,
                    refund,
                    expected: mismatch.expected,
                    actual: mismatch.actual,
                    detail: mismatch.detail,
                };
                insert_exception(connection, name, payout, &exception).await?;
            }
        }
    }
    let net = charges
        .checked_sub(fees)
        .and_then(|net| net.checked_sub(refunds))
        .ok_or_else(|| SettleError::Api("a settlement's net overflowed".into()))?;
    let request = till_http::request_id::current();
    if let Err(refused) = crate::ledger::settle(
        connection,
        business,
        gateway.kind(),
        &settlement,
        Money::from_minor(net, currency),
        request.as_deref(),
    )
    .await?
    {
        // The ledger's accounts are unbounded here; a refusal is a bug, and the whole
        // business's part stays unrecorded until it is fixed.
        return Err(SettleError::Api(format!("the ledger refused settlement {settlement}: {}", refused.0)));
    }
    let row: SettlementRow = sqlx::query_as(
        "UPDATE payments.settlements SET charges = $2, fees = $3, refunds = $4, net = $5, matched_lines = $6,
                exceptions = $7
          WHERE id = $1 RETURNING *",
    )
    .bind(id.as_uuid())
    .bind(charges)
    .bind(fees)
    .bind(refunds)
    .bind(net)
    .bind(matched_lines)
    .bind(exceptions)
    .fetch_one(&mut *connection)
    .await?;
    let body = row.body()?;
    store::announce(connection, row.business_id, settlement, 1, row.created_at, EventType::SettlementReconciled, &body)
        .await?;
    Ok(())
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SettlementRow {
    pub id: Uuid,
    pub business_id: Uuid,
    pub gateway: String,
    pub gateway_payout_id: String,
    pub currency: String,
    pub charges: i64,
    pub fees: i64,
    pub refunds: i64,
    pub net: i64,
    pub matched_lines: i32,
    pub exceptions: i32,
    pub created_at: OffsetDateTime,
}

impl SettlementRow {
    pub fn body(&self) -> Result<SettlementBody, ApiError> {
        Ok(SettlementBody {
            id: SettlementId::from_uuid(self.id),
            gateway: self.gateway.clone(),
            gateway_payout_id: self.gateway_payout_id.clone(),
            currency: Currency::parse(&self.currency).map_err(|error| ApiError::internal(&error))?,
            charges: self.charges,
            fees: self.fees,
            refunds: self.refunds,
            net: self.net,
            matched_lines: self.matched_lines,
            exceptions: self.exceptions,
            created_at: self.created_at,
        })
    }
}

/// Why a line did not match.
struct Mismatch {
    kind: &'static str,
    expected: Option<i64>,
    actual: Option<i64>,
    detail: String,
}

/// A line whose owner was found and whose record this business's transaction cannot
/// see: it cannot happen while the owner lookup and the tables agree, and if it does it
/// is reported, not skipped.
fn vanished(line: &SettlementLine) -> Mismatch {
    let detail = format!("{} was owned by this business a moment ago and is not found now.", line.source);
    Mismatch { kind: "unknown_line", expected: None, actual: Some(line.net.minor()), detail }
}

fn mismatch(kind: &'static str, expected: i64, actual: i64, detail: String) -> Mismatch {
    Mismatch { kind, expected: Some(expected), actual: Some(actual), detail }
}

/// A charge line against its intent: the captured amount, and the fee Till recorded (or,
/// if the fee was never read, the line's, posted now under the capture's fee key).
async fn match_charge(
    connection: &mut PgConnection,
    business: BusinessId,
    intent: &IntentRow,
    line: &SettlementLine,
) -> Result<Result<Matched, Mismatch>, SettleError> {
    let name = PaymentIntentId::from_uuid(intent.id).to_string();
    let currency = intent.currency().map_err(|error| SettleError::Api(error.to_string()))?;
    if currency != line.amount.currency() {
        let detail = format!("{name} is in {}, its line in {}.", currency.code(), line.amount.currency().code());
        return Ok(Err(Mismatch { kind: "currency_mismatch", expected: None, actual: None, detail }));
    }
    if line.amount.minor() != intent.amount_received {
        let detail =
            format!("{name} captured {}, the gateway settled {}.", intent.amount_received, line.amount.minor());
        return Ok(Err(mismatch("amount_mismatch", intent.amount_received, line.amount.minor(), detail)));
    }
    match intent.fee {
        Some(fee) if fee != line.fee.minor() => {
            let detail = format!("Till recorded a fee of {fee} on {name}, the gateway charged {}.", line.fee.minor());
            return Ok(Err(mismatch("fee_mismatch", fee, line.fee.minor(), detail)));
        }
        Some(_) => {}
        None => {
            let request = till_http::request_id::current();
            if let Err(refused) = crate::ledger::fee(
                connection,
                business,
                GatewayKind::of_stored(&intent.gateway),
                &name,
                line.fee,
                request.as_deref(),
            )
            .await?
            {
                return Err(SettleError::Api(format!("the ledger refused the fee of {name}: {}", refused.0)));
            }
            sqlx::query("UPDATE payments.intents SET fee = $2, updated_at = now() WHERE id = $1")
                .bind(intent.id)
                .bind(line.fee.minor())
                .execute(&mut *connection)
                .await?;
        }
    }
    Ok(Ok(Matched { charge: line.amount.minor(), fee: line.fee.minor(), refund: 0 }))
}

/// A refund line against its refund: succeeded, the same amount (the line's is negative),
/// no fee.
fn match_refund(refund: &RefundRow, line: &SettlementLine, currency: Currency) -> Result<Matched, Mismatch> {
    let name = RefundId::from_uuid(refund.id).to_string();
    if refund.currency != currency.code() {
        let detail = format!("{name} is in {}, its line in {}.", refund.currency, currency.code());
        return Err(Mismatch { kind: "currency_mismatch", expected: None, actual: None, detail });
    }
    if refund.status != "succeeded" {
        let detail = format!("{name} is {} in Till, the gateway settled it.", refund.status);
        return Err(Mismatch { kind: "refund_not_succeeded", expected: None, actual: Some(line.net.minor()), detail });
    }
    let refunded = line.amount.minor().checked_neg().unwrap_or(i64::MAX);
    if refunded != refund.amount || !line.fee.is_zero() {
        let detail =
            format!("{name} refunded {}, the gateway settled {} (fee {}).", refund.amount, refunded, line.fee.minor());
        return Err(mismatch("amount_mismatch", refund.amount, refunded, detail));
    }
    Ok(Matched { charge: 0, fee: 0, refund: refund.amount })
}
