//! `GET /v1/payments/check`: the payment invariants, checked against the ledger.
//!
//! The ledger's own checker (`GET /v1/ledger/check`) proves the ledger balances; this one
//! proves the payments service and the ledger tell the same story:
//! - every captured intent's refundable account holds what was captured less every
//!   refund that reserved from it (pending, succeeded, or in review), and its
//!   `amount_refunded` is the sum of its succeeded refunds;
//! - per currency, what the gateways owe (`receivable:{gateway}`, summed) is the
//!   merchant's pending balance, and what they paid out (`settled:{gateway}`) is the
//!   available balance;
//! - every settlement's net is the net of its matched lines;
//! - nothing is pending forever: no capture unsettled after [`UNSETTLED_AFTER_DAYS`],
//!   no intent `processing` after [`PROCESSING_AFTER_MINUTES`].
//!
//! It reads in one transaction (a snapshot), a page of intents at a time.

use std::collections::HashMap;

use serde::Serialize;
use till_http::auth::Principal;
use till_http::unit_of_work::Tx;
use till_http::ApiError;
use till_kit::Currency;
use till_ledger::AccountId;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::{PaymentIntentId, SettlementId};

/// Days after which a capture Stripe has not settled is reported (Stripe's slowest
/// standard payout schedule is 7 days; providers.md §1.1).
pub const UNSETTLED_AFTER_DAYS: i32 = 14;
/// Minutes after which an intent still `processing` is reported: the recovery job
/// resumes a step within its grace (30 s by default), so an hour is a stuck step.
pub const PROCESSING_AFTER_MINUTES: i32 = 60;
const PAGE: i64 = 1_000;

pub fn routes() -> OpenApiRouter {
    OpenApiRouter::new().routes(routes!(check_payments))
}

/// One broken invariant.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PaymentViolation {
    /// `refundable_mismatch`, `refunded_mismatch`, `receivable_not_pending`,
    /// `settled_not_available`, `settlement_net_mismatch`, `unsettled`,
    /// `stuck_processing`.
    pub kind: String,
    pub payment_intent_id: Option<PaymentIntentId>,
    pub settlement_id: Option<SettlementId>,
    pub currency: Option<Currency>,
    pub detail: String,
}

/// What the check found.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PaymentCheckBody {
    pub ok: bool,
    pub intents_checked: i64,
    pub violations: Vec<PaymentViolation>,
}

#[derive(sqlx::FromRow)]
struct CapturedRow {
    id: Uuid,
    amount_received: i64,
    amount_refunded: i64,
    refundable_account: Uuid,
    refunded: i64,
    reserved: i64,
}

fn violation(kind: &str, intent: Option<Uuid>, currency: Option<Currency>, detail: String) -> PaymentViolation {
    PaymentViolation {
        kind: kind.to_string(),
        payment_intent_id: intent.map(PaymentIntentId::from_uuid),
        settlement_id: None,
        currency,
        detail,
    }
}

/// Check the payment invariants against the ledger.
#[utoipa::path(get, path = "/v1/payments/check", tag = "payments",
    responses((status = 200, body = PaymentCheckBody)),
    security(("bearer" = [])))]
async fn check_payments(principal: Principal, mut tx: Tx) -> Result<axum::Json<PaymentCheckBody>, ApiError> {
    let business = principal.business_id;
    let internal = |error: till_ledger::posting::LedgerError| ApiError::internal(&error);
    let mut violations = Vec::new();
    let mut checked = 0_i64;
    let mut after: Option<Uuid> = None;
    loop {
        let rows: Vec<CapturedRow> = sqlx::query_as(
            "SELECT i.id, i.amount_received, i.amount_refunded, i.refundable_account,
                    coalesce(sum(r.amount) FILTER (WHERE r.status = 'succeeded'), 0)::bigint AS refunded,
                    coalesce(sum(r.amount) FILTER (WHERE r.status IN ('pending', 'succeeded', 'requires_review')), 0)::bigint
                        AS reserved
               FROM payments.intents i LEFT JOIN payments.refunds r ON r.intent_id = i.id
              WHERE i.business_id = $1 AND i.refundable_account IS NOT NULL AND ($2::uuid IS NULL OR i.id > $2)
              GROUP BY i.id ORDER BY i.id LIMIT $3",
        )
        .bind(business.as_uuid())
        .bind(after)
        .bind(PAGE)
        .fetch_all(&mut *tx)
        .await?;
        let Some(last) = rows.last() else { break };
        after = Some(last.id);
        let accounts: Vec<AccountId> = rows.iter().map(|row| AccountId::from_uuid(row.refundable_account)).collect();
        let balances = till_ledger::posting::balances_of(&mut tx, business, &accounts).await.map_err(internal)?;
        for row in &rows {
            checked += 1;
            let expected = row.amount_received.checked_sub(row.reserved);
            match balances.get(&AccountId::from_uuid(row.refundable_account)) {
                Some(&balance) if Some(balance) == expected => {}
                found => violations.push(violation(
                    "refundable_mismatch",
                    Some(row.id),
                    None,
                    format!(
                        "captured {} less {} reserved by refunds is {expected:?}; the ledger holds {found:?}",
                        row.amount_received, row.reserved
                    ),
                )),
            }
            if row.amount_refunded != row.refunded {
                violations.push(violation(
                    "refunded_mismatch",
                    Some(row.id),
                    None,
                    format!(
                        "amount_refunded is {}, its succeeded refunds add up to {}",
                        row.amount_refunded, row.refunded
                    ),
                ));
            }
        }
        if rows.len() < PAGE as usize {
            break;
        }
    }

    // Per currency: the service's accounts, pairwise.
    let roles: Vec<(String, String, Uuid)> = sqlx::query_as(
        "SELECT currency, role, account_id FROM payments.ledger_accounts WHERE business_id = $1 ORDER BY currency",
    )
    .bind(business.as_uuid())
    .fetch_all(&mut *tx)
    .await?;
    let accounts: Vec<AccountId> = roles.iter().map(|(_, _, id)| AccountId::from_uuid(*id)).collect();
    let balances = till_ledger::posting::balances_of(&mut tx, business, &accounts).await.map_err(internal)?;
    let mut by_currency: HashMap<&str, HashMap<&str, i64>> = HashMap::new();
    for (currency, role, id) in &roles {
        let balance = balances.get(&AccountId::from_uuid(*id)).copied().unwrap_or(0);
        by_currency.entry(currency).or_default().insert(role, balance);
    }
    for (currency, roles) in &by_currency {
        let code = Currency::parse(currency).ok();
        let of = |role: &str| roles.get(role).copied().unwrap_or(0);
        // Every gateway's part together: a currency may be taken through more than one.
        let all = |prefix: &str| -> Option<i64> {
            roles
                .iter()
                .filter(|(role, _)| role.starts_with(prefix))
                .try_fold(0_i64, |sum, (_, balance)| sum.checked_add(*balance))
        };
        let (owed, paid) = (all("receivable:"), all("settled:"));
        if owed != Some(of("merchant_pending")) {
            violations.push(violation(
                "receivable_not_pending",
                None,
                code,
                format!("the gateways owe {owed:?}, the pending balance is {}", of("merchant_pending")),
            ));
        }
        if paid != Some(of("merchant_available")) {
            violations.push(violation(
                "settled_not_available",
                None,
                code,
                format!("the gateways paid out {paid:?}, the available balance is {}", of("merchant_available")),
            ));
        }
    }

    let nets: Vec<(Uuid, i64, i64)> = sqlx::query_as(
        "SELECT s.id, s.net, coalesce(sum(l.net) FILTER (WHERE l.matched), 0)::bigint
           FROM payments.settlements s LEFT JOIN payments.settlement_lines l ON l.settlement_id = s.id
          WHERE s.business_id = $1 GROUP BY s.id HAVING s.net <> coalesce(sum(l.net) FILTER (WHERE l.matched), 0)",
    )
    .bind(business.as_uuid())
    .fetch_all(&mut *tx)
    .await?;
    for (settlement, net, lines) in nets {
        violations.push(PaymentViolation {
            kind: String::from("settlement_net_mismatch"),
            payment_intent_id: None,
            settlement_id: Some(SettlementId::from_uuid(settlement)),
            currency: None,
            detail: format!("the settlement moved {net}, its matched lines add up to {lines}"),
        });
    }

    let stale: Vec<(Uuid, String)> = sqlx::query_as(
        "SELECT id, status FROM payments.intents
          WHERE business_id = $1
            AND ((status = 'succeeded' AND settled_at IS NULL AND updated_at < now() - make_interval(days => $2))
              OR (status = 'processing' AND updated_at < now() - make_interval(mins => $3)))
          ORDER BY id LIMIT 100",
    )
    .bind(business.as_uuid())
    .bind(UNSETTLED_AFTER_DAYS)
    .bind(PROCESSING_AFTER_MINUTES)
    .fetch_all(&mut *tx)
    .await?;
    for (intent, status) in stale {
        let (kind, detail) = if status == "processing" {
            ("stuck_processing", format!("processing for more than {PROCESSING_AFTER_MINUTES} minutes"))
        } else {
            ("unsettled", format!("captured and not settled for more than {UNSETTLED_AFTER_DAYS} days"))
        };
        violations.push(violation(kind, Some(intent), None, detail));
    }
    Ok(axum::Json(PaymentCheckBody { ok: violations.is_empty(), intents_checked: checked, violations }))
}
