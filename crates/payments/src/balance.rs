//! What the merchant's payments come to: `GET /v1/balance` (read from the ledger), the
//! settlements of the gateway's payouts, and the reconciliation exceptions.

use serde::Serialize;
use till_http::auth::Principal;
use till_http::extract::ApiQuery;
use till_http::pagination::{ListParams, Page};
use till_http::unit_of_work::Tx;
use till_http::{ApiError, Problem};
use till_kit::Currency;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::settlement::{ExceptionRow, ReconciliationExceptionBody, SettlementBody, SettlementRow};
use crate::{ReconciliationExceptionId, SettlementId};

pub fn routes() -> OpenApiRouter {
    OpenApiRouter::new().routes(routes!(get_balance)).routes(routes!(list_settlements)).routes(routes!(list_exceptions))
}

/// An amount in one currency.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct BalanceAmount {
    /// In minor units of `currency`.
    pub amount: i64,
    pub currency: Currency,
}

/// The merchant's payments balance, per currency, as the ledger holds it.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(example = json!({
    "available": [{"amount": 9660, "currency": "GBP"}],
    "pending": [{"amount": 1465, "currency": "GBP"}]
}))]
pub struct MerchantBalanceBody {
    /// Settled by the gateway: the merchant's to pay out.
    pub available: Vec<BalanceAmount>,
    /// Captured, less fees and refunds, and not yet settled.
    pub pending: Vec<BalanceAmount>,
}

/// The merchant's available and pending balance per currency, read from the ledger.
#[utoipa::path(get, path = "/v1/balance", tag = "payments",
    responses((status = 200, body = MerchantBalanceBody)),
    security(("bearer" = [])))]
async fn get_balance(principal: Principal, mut tx: Tx) -> Result<axum::Json<MerchantBalanceBody>, ApiError> {
    let balances = crate::ledger::balances(&mut tx, principal.business_id).await?;
    let (available, pending) = balances
        .iter()
        .map(|balance| {
            (
                BalanceAmount { amount: balance.available, currency: balance.currency },
                BalanceAmount { amount: balance.pending, currency: balance.currency },
            )
        })
        .unzip();
    Ok(axum::Json(MerchantBalanceBody { available, pending }))
}

/// List settlements (the business's part of each gateway payout), newest first.
#[utoipa::path(get, path = "/v1/settlements", tag = "payments", params(ListParams),
    responses(
        (status = 200, body = Page<SettlementBody>),
        (status = 400, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
async fn list_settlements(
    principal: Principal,
    mut tx: Tx,
    ApiQuery(params): ApiQuery<ListParams>,
) -> Result<axum::Json<Page<SettlementBody>>, ApiError> {
    let page = params.page(|text| SettlementId::parse(text).ok())?;
    let rows: Vec<SettlementRow> = sqlx::query_as(
        "SELECT id, business_id, gateway, gateway_payout_id, currency, charges, fees, refunds, net, matched_lines,
                exceptions, created_at
           FROM payments.settlements
          WHERE business_id = $1 AND ($2::uuid IS NULL OR id < $2) ORDER BY id DESC LIMIT $3",
    )
    .bind(principal.business_id.as_uuid())
    .bind(page.starting_after.map(|id| id.as_uuid()))
    .bind(page.fetch_limit())
    .fetch_all(&mut *tx)
    .await?;
    let bodies = rows.iter().map(SettlementRow::body).collect::<Result<Vec<_>, _>>()?;
    Ok(axum::Json(Page::from_rows(bodies, page.limit, |settlement| settlement.id.to_string())))
}

/// List reconciliation exceptions: settlement lines that did not match Till's record.
#[utoipa::path(get, path = "/v1/reconciliation/exceptions", tag = "payments", params(ListParams),
    responses(
        (status = 200, body = Page<ReconciliationExceptionBody>),
        (status = 400, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
async fn list_exceptions(
    principal: Principal,
    mut tx: Tx,
    ApiQuery(params): ApiQuery<ListParams>,
) -> Result<axum::Json<Page<ReconciliationExceptionBody>>, ApiError> {
    let page = params.page(|text| ReconciliationExceptionId::parse(text).ok())?;
    let rows: Vec<ExceptionRow> = sqlx::query_as(
        "SELECT id, business_id, gateway, gateway_payout_id, gateway_line_id, kind, intent_id, refund_id, expected,
                actual, detail, created_at
           FROM payments.reconciliation_exceptions
          WHERE business_id = $1 AND ($2::uuid IS NULL OR id < $2) ORDER BY id DESC LIMIT $3",
    )
    .bind(principal.business_id.as_uuid())
    .bind(page.starting_after.map(|id| id.as_uuid()))
    .bind(page.fetch_limit())
    .fetch_all(&mut *tx)
    .await?;
    let bodies = rows.iter().map(ExceptionRow::body).collect();
    Ok(axum::Json(Page::from_rows(bodies, page.limit, |exception| exception.id.to_string())))
}
