//! `GET /v1/payouts/check`: the payout invariants, checked against the ledger.
//!
//! The ledger's own checker proves the ledger balances; this one proves that every
//! payout and its hold tell the same story:
//! - every payout has its hold, of its amount and currency, from the available balance;
//! - a payout not yet final (`processing`) holds its amount: the hold is pending;
//! - `paid`: the hold is posted in full and not reversed;
//! - `failed` or `canceled`: the hold is voided (never posted: nothing left);
//! - `returned`: the hold is posted in full and reversed;
//! - `paid_out:{rail}` holds what the paid payouts add up to, less nothing else;
//! - nothing is `processing` past [`PROCESSING_AFTER_DAYS`] (RazorpayX keeps IMPS
//!   processing up to T+3 working days; a week is a stuck payout).
//!
//! It reads in one transaction (a snapshot), a page of payouts at a time.

use serde::Serialize;
use till_http::auth::Principal;
use till_http::unit_of_work::Tx;
use till_http::ApiError;
use till_ledger::domain::TransferStatus;
use till_ledger::{AccountId, TransferId};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::PayoutId;

pub const PROCESSING_AFTER_DAYS: i64 = 7;
const PAGE: i64 = 1_000;

pub fn routes() -> OpenApiRouter {
    OpenApiRouter::new().routes(routes!(check_payouts))
}

/// One broken invariant.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PayoutViolation {
    /// `hold_missing`, `hold_mismatch`, `hold_state`, `paid_out_mismatch`,
    /// `stuck_processing`.
    pub kind: String,
    pub payout_id: Option<PayoutId>,
    pub detail: String,
}

/// What the check found.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PayoutCheckBody {
    pub ok: bool,
    pub payouts_checked: i64,
    pub violations: Vec<PayoutViolation>,
}

#[derive(sqlx::FromRow)]
struct Row {
    id: Uuid,
    amount: i64,
    currency: String,
    status: String,
    hold_id: Uuid,
    stuck: bool,
}

/// What a payout's status says its hold must be: (status, reversed).
fn expected(status: &str) -> Option<(TransferStatus, bool)> {
    match status {
        "requires_approval" | "scheduled" | "processing" => Some((TransferStatus::Pending, false)),
        "paid" => Some((TransferStatus::Posted, false)),
        "returned" => Some((TransferStatus::Posted, true)),
        "failed" | "canceled" => Some((TransferStatus::Voided, false)),
        _ => None,
    }
}

/// Check the payout invariants against the ledger.
#[utoipa::path(get, path = "/v1/payouts/check", tag = "payouts",
    responses((status = 200, body = PayoutCheckBody)),
    security(("bearer" = [])))]
async fn check_payouts(principal: Principal, mut tx: Tx) -> Result<axum::Json<PayoutCheckBody>, ApiError> {
    let business = principal.business_id;
    let ledger = |error: till_ledger::posting::LedgerError| ApiError::internal(&error);
    let mut violations = Vec::new();
    let mut checked = 0_i64;
    let mut paid_by_currency: std::collections::BTreeMap<String, i64> = std::collections::BTreeMap::new();
    let mut after: Option<Uuid> = None;
    let violation = |kind: &str, payout: Option<Uuid>, detail: String| PayoutViolation {
        kind: kind.to_string(),
        payout_id: payout.map(PayoutId::from_uuid),
        detail,
    };
    loop {
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT id, amount, currency, status, hold_id,
                    status = 'processing' AND created_at < now() - make_interval(days => $3::integer) AS stuck
               FROM payouts.payouts
              WHERE business_id = $1 AND ($2::uuid IS NULL OR id > $2)
              ORDER BY id LIMIT $4",
        )
        .bind(business.as_uuid())
        .bind(after)
        .bind(i32::try_from(PROCESSING_AFTER_DAYS).unwrap_or(i32::MAX))
        .bind(PAGE)
        .fetch_all(&mut *tx)
        .await?;
        let Some(last) = rows.last() else { break };
        after = Some(last.id);
        let holds: Vec<TransferId> = rows.iter().map(|row| TransferId::from_uuid(row.hold_id)).collect();
        let found = till_ledger::posting::transfers_of(&mut tx, business, &holds).await.map_err(ledger)?;
        for row in &rows {
            checked += 1;
            if row.stuck {
                violations.push(violation(
                    "stuck_processing",
                    Some(row.id),
                    format!("processing for more than {PROCESSING_AFTER_DAYS} days"),
                ));
            }
            let Some(hold) = found.get(&TransferId::from_uuid(row.hold_id)) else {
                violations.push(violation("hold_missing", Some(row.id), format!("no transfer {}", row.hold_id)));
                continue;
            };
            if hold.amount.minor() != row.amount || hold.amount.currency().code() != row.currency || !hold.pending {
                violations.push(violation(
                    "hold_mismatch",
                    Some(row.id),
                    format!(
                        "the hold is {} (pending: {}), the payout {} {}",
                        hold.amount, hold.pending, row.amount, row.currency
                    ),
                ));
                continue;
            }
            let Some((status, reversed)) = expected(&row.status) else {
                violations.push(violation("hold_state", Some(row.id), format!("unknown status {}", row.status)));
                continue;
            };
            let posted_in_full = status != TransferStatus::Posted || hold.posted_amount() == hold.amount;
            if hold.status() != status || hold.reversed_by.is_some() != reversed || !posted_in_full {
                violations.push(violation(
                    "hold_state",
                    Some(row.id),
                    format!(
                        "a {} payout's hold is {:?}, posted {}, reversed: {}",
                        row.status,
                        hold.status(),
                        hold.posted_amount(),
                        hold.reversed_by.is_some()
                    ),
                ));
            }
            if row.status == "paid" {
                *paid_by_currency.entry(row.currency.clone()).or_default() += row.amount;
            }
        }
    }
    // What left through each rail is what the paid payouts add up to.
    let accounts: Vec<(String, String, Uuid)> = sqlx::query_as(
        "SELECT currency, role, account_id FROM payouts.ledger_accounts WHERE business_id = $1 ORDER BY currency, role",
    )
    .bind(business.as_uuid())
    .fetch_all(&mut *tx)
    .await?;
    let ids: Vec<AccountId> = accounts.iter().map(|(_, _, id)| AccountId::from_uuid(*id)).collect();
    let balances = till_ledger::posting::balances_of(&mut tx, business, &ids).await.map_err(ledger)?;
    let mut paid_out: std::collections::BTreeMap<String, i64> = std::collections::BTreeMap::new();
    for (currency, _, id) in &accounts {
        *paid_out.entry(currency.clone()).or_default() +=
            balances.get(&AccountId::from_uuid(*id)).copied().unwrap_or(0);
    }
    for currency in paid_out.keys().chain(paid_by_currency.keys()).collect::<std::collections::BTreeSet<_>>() {
        let (ledger, payouts) =
            (paid_out.get(currency).copied().unwrap_or(0), paid_by_currency.get(currency).copied().unwrap_or(0));
        if ledger != payouts {
            violations.push(violation(
                "paid_out_mismatch",
                None,
                format!("{currency}: the ledger has {ledger} paid out, the paid payouts add up to {payouts}"),
            ));
        }
    }
    Ok(axum::Json(PayoutCheckBody { ok: violations.is_empty(), payouts_checked: checked, violations }))
}
