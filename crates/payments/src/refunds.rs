//! `/v1/refunds`: refund a captured payment intent, in part or in full, as often as the
//! captured amount allows.
//!
//! A phased route. Phase 1 reserves the amount from the intent's refundable account
//! (floor 0) with the refund row and its `refund.created` event: of 50 refunds of 10
//! against a capture of 100 sent at once, the ledger lets exactly 10 reserve, and the
//! other 40 are 422 with nothing sent to the gateway. Then the gateway is called with the
//! refund's own key; phase 2 records its answer: succeeded (the money leaves the
//! merchant's pending balance), refused (the reservation is given back), or a reply that
//! cannot be trusted (the refund needs review; the reservation stays, since the money
//! may have moved).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::json;
use till_http::auth::Principal;
use till_http::extract::{ApiPath, ApiQuery};
use till_http::pagination::{ListParams, Page};
use till_http::recovery::{Phased, RecoveryPoint};
use till_http::unit_of_work::Tx;
use till_http::{ApiError, ErrorCode, Problem};
use till_kit::{BusinessId, Currency, Money};
use till_outbound::OutboundError;
use till_outbox::EventType;
use time::OffsetDateTime;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::api::{Payments, AMOUNT_MAX};
use crate::domain::IntentStatus;
use crate::gateway::{Answer, RefundStatus};
use crate::store::{self, RefundRow};
use crate::{PaymentIntentId, RefundId};

pub const REFUNDS_PATH: &str = "/v1/refunds";

pub fn routes(payments: Payments) -> OpenApiRouter {
    OpenApiRouter::new().routes(routes!(create_refund, list_refunds)).routes(routes!(get_refund)).with_state(payments)
}

/// A refund of a payment intent.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(example = json!({
    "id": "re_01936f0e6c2a7cc2b0a6a4e5f3d2c1b0", "payment_intent_id": "pi_01936f0e6c2a7cc2b0a6a4e5f3d2c1b1",
    "amount": 300, "currency": "GBP", "status": "succeeded", "reason": "requested_by_customer",
    "gateway_refund_id": "re_3Q…", "failure_reason": null, "version": 2,
    "created_at": "2026-12-02T10:00:00Z", "updated_at": "2026-12-02T10:00:01Z"
}))]
pub struct RefundBody {
    pub id: RefundId,
    pub payment_intent_id: PaymentIntentId,
    pub amount: i64,
    pub currency: Currency,
    /// `pending` (with the gateway), `succeeded`, `failed` (the gateway refused; see
    /// `failure_reason`), or `requires_review` (its reply could not be trusted).
    pub status: String,
    pub reason: Option<String>,
    pub gateway_refund_id: Option<String>,
    pub failure_reason: Option<String>,
    pub version: i32,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

impl RefundBody {
    fn of(row: &RefundRow) -> Result<RefundBody, ApiError> {
        Ok(RefundBody {
            id: RefundId::from_uuid(row.id),
            payment_intent_id: PaymentIntentId::from_uuid(row.intent_id),
            amount: row.amount,
            currency: Currency::parse(&row.currency).map_err(|error| ApiError::internal(&error))?,
            status: row.status.clone(),
            reason: row.reason.clone(),
            gateway_refund_id: row.gateway_refund_id.clone(),
            failure_reason: row.failure_reason.clone(),
            version: row.version,
            created_at: row.created_at,
            updated_at: row.updated_at,
        })
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRefundRequest {
    #[schema(value_type = PaymentIntentId)]
    pub payment_intent_id: String,
    /// At most what is left to refund; left out, all of it.
    #[schema(minimum = 1, maximum = 99_999_999)]
    pub amount: Option<i64>,
    #[schema(pattern = "^(duplicate|fraudulent|requested_by_customer)$")]
    pub reason: Option<String>,
}

async fn announce(connection: &mut sqlx::PgConnection, row: &RefundRow, event_type: EventType) -> Result<(), ApiError> {
    let body = RefundBody::of(row)?;
    Ok(store::announce(
        connection,
        row.business_id,
        body.id.to_string(),
        row.version,
        row.updated_at,
        event_type,
        &body,
    )
    .await?)
}

/// Refund a captured payment intent.
#[utoipa::path(post, path = "/v1/refunds", tag = "payments",
    request_body = CreateRefundRequest,
    params(("Idempotency-Key" = String, Header, description = "1–255 printable ASCII characters; makes the request safe to retry.")),
    responses(
        (status = 201, body = RefundBody, description = "Refunded (`succeeded`), or refused by the gateway (`failed`)."),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
        (status = 502, body = Problem, content_type = "application/problem+json"),
        (status = 503, body = Problem, content_type = "application/problem+json"),
        (status = 202, body = RefundBody, description = "The gateway's answer is not known yet (it timed out): the refund is `pending`. Retry with the same Idempotency-Key for the outcome; if nobody does, Till settles it by itself."),
    ),
    security(("bearer" = [])))]
async fn create_refund(State(payments): State<Payments>, phased: Phased) -> Response {
    run_refund(payments, phased).await.unwrap_or_else(IntoResponse::into_response)
}

/// The refund, from wherever the request stands: the handler and the resumer run this.
pub async fn run_refund(payments: Payments, mut phased: Phased) -> Result<Response, ApiError> {
    let business = phased.business().ok_or_else(|| ApiError::internal(&"a refund without a business"))?;
    let request: CreateRefundRequest = till_http::extract::parse_json(phased.body())?;
    let intent = PaymentIntentId::parse(&request.payment_intent_id)
        .map_err(|_| ApiError::invalid("payment_intent_id", "payment_intent_id is a pi_ id."))?;
    let requested = match request.amount {
        Some(amount) if (1..=AMOUNT_MAX).contains(&amount) => Some(amount),
        Some(_) => {
            return Err(ApiError::invalid("amount", format!("amount must be from 1 to {AMOUNT_MAX} minor units.")))
        }
        None => None,
    };
    let reason = match request.reason.as_deref() {
        None => None,
        Some(reason @ ("duplicate" | "fraudulent" | "requested_by_customer")) => Some(reason.to_string()),
        Some(_) => {
            return Err(ApiError::invalid("reason", "reason is duplicate, fraudulent or requested_by_customer."));
        }
    };
    let request_id = till_http::request_id::current();
    if phased.point().is_started() {
        let mut phase = phased.begin().await?;
        let row = store::find_intent(&mut phase, intent.as_uuid())
            .await?
            .ok_or_else(|| ApiError::not_found("payment intent").with_param("payment_intent_id"))?;
        let status = row.status().map_err(|error| ApiError::internal(&error))?;
        let (Some(refundable), IntentStatus::Succeeded) = (row.refundable_account, status) else {
            let problem = ApiError::new(
                ErrorCode::StateConflict,
                format!("Only a captured payment intent can be refunded; this one is {}.", status.as_str()),
            )
            .with_param("payment_intent_id");
            return phase.finish_problem(problem).await;
        };
        let currency = row.currency().map_err(|error| ApiError::internal(&error))?;
        // Left out, the amount is what is left: captured less every refund reserved.
        let left = refundable_left(&mut phase, business, refundable).await?;
        let amount = Money::from_minor(requested.unwrap_or(left), currency);
        let refund = RefundId::generate();
        let insufficient = || {
            ApiError::new(ErrorCode::InsufficientFunds, format!("The payment intent has {left} left to refund."))
                .with_param("amount")
        };
        if amount.minor() < 1 {
            return phase.finish_problem(insufficient()).await;
        }
        let reserved = crate::ledger::reserve_refund(
            &mut phase,
            business,
            &refund.to_string(),
            &intent.to_string(),
            refundable,
            amount,
            request_id.as_deref(),
        )
        .await?;
        if reserved.is_err() {
            // The ledger refused: more than is left. Nothing is kept of this phase but
            // the answer, and nothing is sent to the gateway.
            phase.rollback().await;
            let phase = phased.begin().await?;
            return phase.finish_problem(insufficient()).await;
        }
        let created =
            store::insert_refund(&mut phase, refund.as_uuid(), business, row.id, amount, reason.as_deref()).await?;
        announce(&mut phase, &created, EventType::RefundCreated).await?;
        let data = json!({ "refund": refund.to_string(), "key": format!("{refund}:refund") });
        phase.commit(RecoveryPoint::new("reserved", data)).await?;
    }
    let data = phased.point().data.clone();
    let (Some(refund), Some(key)) =
        (data["refund"].as_str().and_then(|id| RefundId::parse(id).ok()), data["key"].as_str())
    else {
        return Err(ApiError::internal(&"a reserved point without its refund"));
    };
    let (refund_row, intent_row) = {
        let mut phase = phased.begin().await?;
        let refund_row =
            store::find_refund(&mut phase, refund.as_uuid()).await?.ok_or_else(|| ApiError::not_found("refund"))?;
        let intent_row = store::find_intent(&mut phase, refund_row.intent_id)
            .await?
            .ok_or_else(|| ApiError::internal(&"a refund of a missing intent"))?;
        phase.rollback().await;
        (refund_row, intent_row)
    };
    let currency = intent_row.currency().map_err(|error| ApiError::internal(&error))?;
    let amount = Money::from_minor(refund_row.amount, currency);
    let gateway_intent = intent_row.gateway_intent_id.clone().ok_or_else(|| ApiError::internal(&"no gateway id"))?;
    let (refund_text, intent_text) = (refund.to_string(), PaymentIntentId::from_uuid(intent_row.id).to_string());
    let adapter = payments.gateway_of(&intent_row)?;
    let names = adapter.names();
    let answer = adapter.refund(&gateway_intent, intent_row.gateway_charge_id.as_deref(), amount, key).await;
    let mut phase = phased.begin().await?;
    // The intent's row before any ledger account, in the order the reconciler takes them
    // (it locks the intent of each line, then settles): accounts first, then the intent
    // (as `add_refunded` below would on its own) could deadlock a refund against a
    // settlement of the same intent.
    store::lock_intent(&mut phase, intent_row.id).await?;
    let ended = match answer {
        Ok(Answer::Done(made)) if matches!(made.status, RefundStatus::Succeeded | RefundStatus::Pending) => {
            let moved = crate::ledger::refund_money(
                &mut phase,
                business,
                adapter.kind(),
                &refund_text,
                &intent_text,
                amount,
                request_id.as_deref(),
            )
            .await?;
            if let Err(refused) = moved {
                // Stripe refunded and the ledger will not follow (an account frozen since):
                // the two disagree and a person must reconcile them. An error here would
                // keep the point and retry the same refusal forever.
                let why = format!("the gateway refunded but the ledger refused the money: {}", refused.0);
                tracing::error!(refund = %refund_text, why, "the ledger refused a gateway's refund");
                store::end_refund(&mut phase, refund.as_uuid(), "requires_review", Some(&made.id), Some(&why)).await?;
                let problem = ApiError::new(ErrorCode::StateConflict, format!("{why}; the refund needs review."));
                return phase.finish_problem(problem.with_param("payment_intent_id")).await;
            }
            store::add_refunded(&mut phase, intent_row.id, refund_row.amount).await?;
            let ended = store::end_refund(&mut phase, refund.as_uuid(), "succeeded", Some(&made.id), None).await?;
            (ended, EventType::RefundSucceeded, StatusCode::CREATED)
        }
        Ok(Answer::Done(made)) => {
            let why = format!("the gateway answered the refund {:?}", made.status);
            release(&mut phase, business, &refund_text, &intent_text, &intent_row, amount).await?;
            let ended = store::end_refund(&mut phase, refund.as_uuid(), "failed", Some(&made.id), Some(&why)).await?;
            (ended, EventType::RefundFailed, StatusCode::CREATED)
        }
        Ok(Answer::Refused(refusal)) => {
            release(&mut phase, business, &refund_text, &intent_text, &intent_row, amount).await?;
            let why = format!("the gateway refused: {}", refusal.message);
            let ended = store::end_refund(&mut phase, refund.as_uuid(), "failed", None, Some(&why)).await?;
            (ended, EventType::RefundFailed, StatusCode::CREATED)
        }
        Ok(Answer::Declined { .. }) => {
            let why = "a decline answered a refund";
            store::end_refund(&mut phase, refund.as_uuid(), "requires_review", None, Some(why)).await?;
            return phase.finish_problem(invalid(names, why)).await;
        }
        Err(OutboundError::InvalidReply { reason, .. }) => {
            // The money may have moved at the gateway: the reservation stays.
            let why = format!("{}: {}", reason.field, reason.why);
            store::end_refund(&mut phase, refund.as_uuid(), "requires_review", None, Some(&why)).await?;
            return phase.finish_problem(invalid(names, &why)).await;
        }
        // Timed out: the gateway may have refunded. The refund stays `pending` and the
        // answer says so (202) without deciding anything: the point stays for a retry
        // with the same key, or for the recovery job, which asks again with the
        // refund's own gateway key.
        Err(error @ OutboundError::TimedOut { .. }) => {
            phase.rollback().await;
            tracing::warn!(%error, refund = %refund, "the gateway's outcome of a refund is unknown");
            let body = RefundBody::of(&refund_row)?;
            return Ok(till_http::recovery::undecided((StatusCode::ACCEPTED, axum::Json(body)).into_response()));
        }
        // Unavailable (nothing was sent) or failing: nothing recorded; the point stays
        // for a retry with the same key, or for the recovery job.
        Err(error) => {
            phase.rollback().await;
            return Err(error.into());
        }
    };
    let (Some(ended), event_type, status) = ended else {
        return Err(ApiError::internal(&"a refund ended twice"));
    };
    announce(&mut phase, &ended, event_type).await?;
    phase.finish(status, &RefundBody::of(&ended)?).await
}

fn invalid(names: till_outbound::Names, why: &str) -> ApiError {
    OutboundError::InvalidReply { names, reason: till_outbound::InvalidReply::new("body", why.to_string()) }.into()
}

async fn release(
    connection: &mut sqlx::PgConnection,
    business: BusinessId,
    refund: &str,
    intent: &str,
    intent_row: &store::IntentRow,
    amount: Money,
) -> Result<(), ApiError> {
    let refundable = intent_row.refundable_account.ok_or_else(|| ApiError::internal(&"no refundable account"))?;
    let request_id = till_http::request_id::current();
    crate::ledger::release_refund(connection, business, refund, intent, refundable, amount, request_id.as_deref())
        .await?
        .map_err(|refused| ApiError::internal(&format_args!("the ledger refused a release: {}", refused.0)))
}

/// What is left to refund: the refundable account's available balance.
async fn refundable_left(
    connection: &mut sqlx::PgConnection,
    business: BusinessId,
    account: uuid::Uuid,
) -> Result<i64, ApiError> {
    till_ledger::posting::available(connection, business, till_ledger::AccountId::from_uuid(account))
        .await?
        .ok_or_else(|| ApiError::internal(&"an intent's refundable account is missing"))
}

/// Retrieve a refund.
#[utoipa::path(get, path = "/v1/refunds/{id}", tag = "payments",
    params(("id" = RefundId, Path)),
    responses(
        (status = 200, body = RefundBody),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
async fn get_refund(_principal: Principal, mut tx: Tx, ApiPath(id): ApiPath<RefundId>) -> Result<Response, ApiError> {
    let row = store::find_refund(&mut tx, id.as_uuid()).await?.ok_or_else(|| ApiError::not_found("refund"))?;
    Ok((StatusCode::OK, axum::Json(RefundBody::of(&row)?)).into_response())
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct RefundListParams {
    /// Page size, 1 to 100 (default 20).
    pub limit: Option<u32>,
    /// The id of the last refund of the previous page.
    pub starting_after: Option<String>,
    /// Only the refunds of this payment intent.
    #[param(value_type = Option<PaymentIntentId>)]
    pub payment_intent_id: Option<String>,
}

/// List refunds, newest first; of one payment intent with `payment_intent_id`.
#[utoipa::path(get, path = "/v1/refunds", tag = "payments", params(RefundListParams),
    responses(
        (status = 200, body = Page<RefundBody>),
        (status = 400, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
async fn list_refunds(
    principal: Principal,
    mut tx: Tx,
    ApiQuery(params): ApiQuery<RefundListParams>,
) -> Result<axum::Json<Page<RefundBody>>, ApiError> {
    let page = ListParams { limit: params.limit, starting_after: params.starting_after }
        .page(|text| RefundId::parse(text).ok())?;
    let intent = params
        .payment_intent_id
        .as_deref()
        .map(|text| {
            PaymentIntentId::parse(text)
                .map_err(|_| ApiError::invalid("payment_intent_id", "payment_intent_id is a payment intent id (pi_…)."))
        })
        .transpose()?;
    let rows = store::list_refunds(
        &mut tx,
        principal.business_id,
        intent.map(|id| id.as_uuid()),
        page.starting_after.map(|id| id.as_uuid()),
        page.fetch_limit(),
    )
    .await?;
    let bodies = rows.iter().map(RefundBody::of).collect::<Result<Vec<_>, _>>()?;
    Ok(axum::Json(Page::from_rows(bodies, page.limit, |refund| refund.id.to_string())))
}
