//! `/v1/orders`: what a checkout made, where its saga stands, and its cancellation.
//!
//! An order is `pending` while its saga runs (see [`crate::saga`]) and ends once:
//! `paid` (captured, its stock sold, its invoice issued), `payment_failed` (declined, or
//! the capture failed: nothing charged, the authorisation voided, the stock released)
//! or `canceled` (asked for, or its reservation expired before the payment was
//! authorised). Every change to an order takes its row lock first, so a cancel and the
//! saga's steps are applied one after the other, never both on the same state.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use till_http::auth::Principal;
use till_http::extract::{ApiJsonOrEmpty, ApiPath, ApiQuery};
use till_http::pagination::{ListParams, Page};
use till_http::unit_of_work::Tx;
use till_http::{ApiError, ErrorCode, Problem};
use till_outbox::EventType;
use time::OffsetDateTime;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::invoices::StoredCustomer;
use crate::quotes::{QuoteBody, QuoteLineBody};
use crate::store::{self, OrderRow, OrderState, OrderStepRow};
use crate::{InvoiceId, OrderId, QuoteId, ReservationId};

pub fn routes() -> OpenApiRouter {
    OpenApiRouter::new().routes(routes!(list_orders)).routes(routes!(get_order)).routes(routes!(cancel_order))
}

/// One step of the checkout saga, as it went.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct OrderStepBody {
    /// `quote`, `reserve`, `authorize`, `capture`, `void`, `release`, `commit`,
    /// `invoice`, `cancel` or `refund`.
    pub step: String,
    /// `succeeded`, `failed`, `retrying` (nothing decided yet; the saga tries again with
    /// the same idempotency key) or `compensated` (undone after a later step failed).
    pub outcome: String,
    pub detail: String,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct FailureBody {
    /// `card_declined`, `payment_refused`, `capture_failed`, `reservation_expired`,
    /// `canceled_by_request`, … .
    pub code: String,
    pub message: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct OrderCustomerBody {
    pub name: String,
    pub email: String,
    pub address: Vec<String>,
    pub country: String,
    pub state_code: Option<String>,
    pub gstin: Option<String>,
}

/// An order and where its checkout saga stands.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({
    "id": "ord_01936f0e6c2a7cc2b0a6a4e5f3d2c1b0", "status": "paid", "currency": "GBP", "total": 1200,
    "payment_intent_id": "pi_01936f0e6c2a7cc2b0a6a4e5f3d2c1b1", "invoice_id": "inv_01936f0e6c2a7cc2b0a6a4e5f3d2c1b2",
    "steps": [{"step": "quote", "outcome": "succeeded", "detail": "total 1200 GBP", "at": "2026-12-04T10:00:00Z"}]
}))]
pub struct OrderBody {
    pub id: OrderId,
    /// `pending`, `paid`, `payment_failed`, `canceled` or `refunded`.
    pub status: String,
    pub currency: till_kit::Currency,
    pub net_total: i64,
    pub tax_total: i64,
    pub total: i64,
    pub lines: Vec<QuoteLineBody>,
    /// The quote the order charges (`GET /v1/quotes/{id}` shows its rules).
    pub quote_id: QuoteId,
    pub reservation_id: ReservationId,
    pub customer: OrderCustomerBody,
    pub discount_codes: Vec<String>,
    pub payment_intent_id: Option<String>,
    pub invoice_id: Option<InvoiceId>,
    /// Why it did not end paid.
    pub failure: Option<FailureBody>,
    /// A cancel was asked for while the payment was with the gateway: the saga voids the
    /// authorisation once it is known, unless the capture was already under way.
    pub cancel_requested: bool,
    /// Refunded of `total` so far (status `refunded` once all of it is).
    pub amount_refunded: i64,
    /// Its refunds, oldest first (`POST /v1/orders/{id}/refund`).
    pub refunds: Vec<crate::credit_notes::OrderRefundBody>,
    pub steps: Vec<OrderStepBody>,
    pub version: i32,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

/// The order's body: its row, its quote and its steps.
pub async fn body_of(connection: &mut PgConnection, row: &OrderRow) -> Result<OrderBody, ApiError> {
    let quote = quote_of(connection, row).await?;
    let steps = store::order_steps(connection, row.id).await?;
    let refunds = store::refunds_of_order(connection, row.id)
        .await?
        .iter()
        .map(crate::credit_notes::OrderRefundBody::of)
        .collect::<Result<Vec<_>, ApiError>>()?;
    body_with(row, &quote, &steps, refunds)
}

pub async fn quote_of(connection: &mut PgConnection, row: &OrderRow) -> Result<QuoteBody, ApiError> {
    let quote = store::find_quote(connection, row.quote_id)
        .await?
        .ok_or_else(|| ApiError::internal(&format_args!("order {} without its quote", row.id)))?;
    serde_json::from_value(quote).map_err(|error| ApiError::internal(&error))
}

pub fn customer_of(row: &OrderRow) -> Result<StoredCustomer, ApiError> {
    serde_json::from_value(row.customer.clone()).map_err(|error| ApiError::internal(&error))
}

fn body_with(
    row: &OrderRow,
    quote: &QuoteBody,
    steps: &[OrderStepRow],
    refunds: Vec<crate::credit_notes::OrderRefundBody>,
) -> Result<OrderBody, ApiError> {
    let customer = customer_of(row)?;
    Ok(OrderBody {
        id: OrderId::from_uuid(row.id),
        status: row.status.clone(),
        currency: quote.currency,
        net_total: quote.net_total,
        tax_total: quote.tax_total,
        total: quote.total,
        lines: quote.lines.clone(),
        quote_id: quote.id,
        reservation_id: ReservationId::from_uuid(row.reservation_id),
        customer: OrderCustomerBody {
            name: customer.name,
            email: customer.email,
            address: customer.address,
            country: customer.country,
            state_code: customer.state_code,
            gstin: customer.gstin,
        },
        discount_codes: quote.discount_codes.clone(),
        payment_intent_id: row.payment_intent_id.clone(),
        invoice_id: row.invoice_id.map(InvoiceId::from_uuid),
        failure: match (&row.failure_code, &row.failure_message) {
            (Some(code), Some(message)) => Some(FailureBody { code: code.clone(), message: message.clone() }),
            _ => None,
        },
        cancel_requested: row.cancel_requested_at.is_some(),
        amount_refunded: row.amount_refunded,
        refunds,
        steps: steps
            .iter()
            .map(|step| OrderStepBody {
                step: step.step.clone(),
                outcome: step.outcome.clone(),
                detail: step.detail.clone(),
                at: step.at,
            })
            .collect(),
        version: row.version,
        created_at: row.created_at,
        updated_at: row.updated_at,
    })
}

/// Announces the order as it now is, with its next sequence number.
pub async fn announce(connection: &mut PgConnection, row: &OrderRow, event_type: EventType) -> Result<(), ApiError> {
    let body = body_of(connection, row).await?;
    Ok(store::announce(
        connection,
        row.business_id,
        body.id.to_string(),
        row.events_announced,
        row.updated_at,
        event_type,
        &body,
    )
    .await?)
}

/// Ends an order that was not paid, in the caller's transaction: its stock is released
/// (unless the reservation ended already: expired), its coupons given back, and the
/// order is `status` with `failure`, announced. The caller holds the order's lock and
/// has voided any authorisation first.
pub async fn end_unpaid(
    connection: &mut PgConnection,
    row: &OrderRow,
    status: &str,
    failure: (&str, &str),
) -> Result<OrderRow, ApiError> {
    let released = store::end_reservation(connection, row.reservation_id, store::Ending::Released, "checkout").await?;
    let detail =
        if released.is_some() { "the stock is available again" } else { "the reservation had ended already (expired)" };
    if let Some(reservation) = &released {
        crate::reservations::announce_row(connection, reservation, EventType::ReservationReleased).await?;
    }
    store::add_order_step(connection, row, "release", "compensated", detail).await?;
    store::unredeem_coupons(connection, &row.coupon_ids).await?;
    let state = OrderState {
        status: status.to_string(),
        step: String::from("done"),
        void_to: None,
        failure_code: Some(failure.0.to_string()),
        failure_message: Some(failure.1.to_string()),
        next_step_in_ms: None,
        announced: true,
        ..OrderState::of(row)
    };
    let ended = store::set_order(connection, row.id, &state).await?;
    let event_type = if status == "canceled" { EventType::OrderCanceled } else { EventType::OrderPaymentFailed };
    announce(connection, &ended, event_type).await?;
    Ok(ended)
}

/// Retrieve an order, with each step of its saga.
#[utoipa::path(get, path = "/v1/orders/{id}", tag = "commerce", params(("id" = OrderId, Path)),
    responses((status = 200, body = OrderBody), (status = 404, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
async fn get_order(
    _principal: Principal,
    mut tx: Tx,
    ApiPath(id): ApiPath<OrderId>,
) -> Result<axum::Json<OrderBody>, ApiError> {
    let row = store::find_order(&mut tx, id.as_uuid()).await?.ok_or_else(|| ApiError::not_found("order"))?;
    Ok(axum::Json(body_of(&mut tx, &row).await?))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct OrderListParams {
    /// Page size, 1 to 100 (default 20).
    pub limit: Option<u32>,
    /// The id of the last order of the previous page.
    pub starting_after: Option<String>,
    #[param(pattern = "^(pending|paid|payment_failed|canceled|refunded)$")]
    pub status: Option<String>,
}

/// List orders, newest first.
#[utoipa::path(get, path = "/v1/orders", tag = "commerce", params(OrderListParams),
    responses((status = 200, body = Page<OrderBody>), (status = 400, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
async fn list_orders(
    principal: Principal,
    mut tx: Tx,
    ApiQuery(params): ApiQuery<OrderListParams>,
) -> Result<axum::Json<Page<OrderBody>>, ApiError> {
    let status = match params.status.as_deref() {
        None => None,
        Some(status @ ("pending" | "paid" | "payment_failed" | "canceled" | "refunded")) => Some(status),
        Some(_) => {
            return Err(ApiError::invalid("status", "status is pending, paid, payment_failed, canceled or refunded."))
        }
    };
    let page = ListParams { limit: params.limit, starting_after: params.starting_after }
        .page(|text| OrderId::parse(text).ok())?;
    let rows = store::list_orders(
        &mut tx,
        principal.business_id,
        status,
        page.starting_after.map(|id| id.as_uuid()),
        page.fetch_limit(),
    )
    .await?;
    // A page in four reads, not three per order.
    let ids: Vec<uuid::Uuid> = rows.iter().map(|row| row.id).collect();
    let quote_ids: Vec<uuid::Uuid> = rows.iter().map(|row| row.quote_id).collect();
    let quotes: std::collections::HashMap<uuid::Uuid, QuoteBody> = store::quotes_by_id(&mut tx, &quote_ids)
        .await?
        .into_iter()
        .map(|(id, body)| Ok((id, serde_json::from_value(body).map_err(|error| ApiError::internal(&error))?)))
        .collect::<Result<_, ApiError>>()?;
    let steps = store::steps_of_orders(&mut tx, &ids).await?;
    let refunds = store::refunds_of_orders(&mut tx, &ids).await?;
    let mut bodies = Vec::with_capacity(rows.len());
    for row in &rows {
        let quote = quotes
            .get(&row.quote_id)
            .ok_or_else(|| ApiError::internal(&format_args!("order {} without its quote", row.id)))?;
        let own_steps: Vec<OrderStepRow> = steps.iter().filter(|step| step.order_id == row.id).cloned().collect();
        let own_refunds = refunds
            .iter()
            .filter(|refund| refund.order_id == row.id)
            .map(crate::credit_notes::OrderRefundBody::of)
            .collect::<Result<Vec<_>, ApiError>>()?;
        bodies.push(body_with(row, quote, &own_steps, own_refunds)?);
    }
    Ok(axum::Json(Page::from_rows(bodies, page.limit, |body| body.id.to_string())))
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CancelOrderRequest {}

/// Cancel an order that is not paid. Before its payment has gone to the gateway it is
/// canceled at once (200). Once the payment is with the gateway, the cancel is recorded
/// (202, `cancel_requested`) and the saga voids the authorisation as soon as it is
/// known and releases the stock; an order whose capture was already under way is paid
/// anyway (refund it then).
#[utoipa::path(post, path = "/v1/orders/{id}/cancel", tag = "commerce", params(("id" = OrderId, Path),
        ("Idempotency-Key" = String, Header, description = "1–255 printable ASCII characters; makes the request safe to retry.")),
    responses(
        (status = 200, body = OrderBody, description = "Canceled: nothing was charged and the stock is available again."),
        (status = 202, body = OrderBody, description = "The payment is with the gateway: the cancel is recorded and the saga finishes it."),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json", description = "state_conflict: the order has ended (paid orders are refunded, not canceled), or a cancel was asked for already."),
    ),
    security(("bearer" = [])))]
async fn cancel_order(
    _principal: Principal,
    mut tx: Tx,
    ApiPath(id): ApiPath<OrderId>,
    ApiJsonOrEmpty(_request): ApiJsonOrEmpty<CancelOrderRequest>,
) -> Result<Response, ApiError> {
    let row = store::lock_order(&mut tx, id.as_uuid()).await?.ok_or_else(|| ApiError::not_found("order"))?;
    if row.status != "pending" {
        let why = match row.status.as_str() {
            "paid" => String::from("The order is paid: refund it instead."),
            status => format!("The order is {status}."),
        };
        return Err(ApiError::new(ErrorCode::StateConflict, why));
    }
    // The saga has not called payments yet (it counts an attempt, under this lock,
    // before each call): nothing can be authorised, so the order ends here.
    if row.step == "authorize" && row.attempts == 0 {
        store::add_order_step(&mut tx, &row, "cancel", "succeeded", "canceled before the payment was sent").await?;
        let ended =
            end_unpaid(&mut tx, &row, "canceled", ("canceled_by_request", "The order was canceled before payment."))
                .await?;
        return Ok((StatusCode::OK, axum::Json(body_of(&mut tx, &ended).await?)).into_response());
    }
    // A second cancel would change nothing: it is a request of its own (a retry of the
    // first is answered by its Idempotency-Key), refused as the reservations' ends are.
    if row.cancel_requested_at.is_some() {
        return Err(ApiError::new(
            ErrorCode::StateConflict,
            "A cancel was asked for already; the saga is finishing it.",
        ));
    }
    store::add_order_step(&mut tx, &row, "cancel", "retrying", "asked for while the payment is with the gateway")
        .await?;
    let state = OrderState {
        cancel_requested_at: Some(OffsetDateTime::now_utc()),
        next_step_in_ms: Some(0),
        ..OrderState::of(&row)
    };
    let updated = store::set_order(&mut tx, row.id, &state).await?;
    crate::saga::wake(&mut tx).await?;
    Ok((StatusCode::ACCEPTED, axum::Json(body_of(&mut tx, &updated).await?)).into_response())
}
