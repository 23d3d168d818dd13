//! `/v1/payment_intents`: create (and confirm), confirm, capture, retrieve.
//!
//! The writes are phased routes (`till_http::recovery`): no transaction is held across a
//! gateway call. Each step runs, from wherever its request stands:
//! 1. a phase moves the intent into the step under its row lock (`processing`; a second
//!    request for the same step finds it moved) and records the step's gateway
//!    idempotency key in the recovery point;
//! 2. the gateway is called once through the adapter, with that key;
//! 3. a phase records the validated answer: the intent's new state, its ledger postings
//!    and its event, together; and stores the response.
//!
//! If the gateway is unreachable or times out, nothing is recorded: the request answers
//! 503/504 and keeps its point, and a retry of the same Idempotency-Key (or the recovery
//! job, if the client never comes back) calls again with the same gateway key, so the
//! gateway makes the effect once. A reply that fails validation puts the intent in
//! `requires_review` with the reason, posts nothing, and answers 502.

use std::collections::BTreeMap;
use std::sync::Arc;

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
use till_http::{ApiError, Problem};
use till_kit::schema::Text500;
use till_kit::{BusinessId, Currency, HumanText, Metadata, Money};
use till_outbound::OutboundError;
use till_outbox::EventType;
use time::OffsetDateTime;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::domain::IntentStatus;
use crate::gateway::{
    Answer, CaptureMethod, Decline, Gateway, GatewayIntent, GatewayKind, GatewayStatus, Gateways, NewIntent,
    PaymentMethod,
};
use crate::store::{self, IntentRow, Outcome};
use crate::PaymentIntentId;

/// Stripe's largest amount: eight digits of minor units.
pub const AMOUNT_MAX: i64 = 99_999_999;
const DESCRIPTION_CHARS_MAX: usize = 500;
const EMAIL_CHARS_MAX: usize = 254;

pub const CREATE_PATH: &str = "/v1/payment_intents";
pub const CONFIRM_PATH: &str = "/v1/payment_intents/{id}/confirm";
pub const CAPTURE_PATH: &str = "/v1/payment_intents/{id}/capture";
pub const CANCEL_PATH: &str = "/v1/payment_intents/{id}/cancel";

/// What the handlers share: the gateways.
#[derive(Clone)]
pub struct Payments {
    pub gateways: Arc<Gateways>,
}

impl Payments {
    /// The adapter of the gateway an intent is with.
    pub fn gateway_of(&self, row: &IntentRow) -> Result<&dyn Gateway, ApiError> {
        let kind = GatewayKind::parse(&row.gateway)
            .ok_or_else(|| ApiError::internal(&format_args!("an intent with gateway {:?}", row.gateway)))?;
        Ok(self.gateways.get(kind).as_ref())
    }
}

pub fn routes(payments: Payments) -> OpenApiRouter {
    OpenApiRouter::new()
        .routes(routes!(create_intent, list_intents))
        .routes(routes!(get_intent))
        .routes(routes!(confirm_intent))
        .routes(routes!(capture_intent))
        .routes(routes!(cancel_intent))
        .with_state(payments)
}

/// A payment's decline, as the gateway gave it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PaymentErrorBody {
    /// The gateway's code (`card_declined`).
    pub code: String,
    /// The issuer's reason (`insufficient_funds`), when there is one.
    pub decline_code: Option<String>,
    pub message: String,
}

/// A payment intent.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(example = json!({
    "id": "pi_01936f0e6c2a7cc2b0a6a4e5f3d2c1b0", "amount": 1000, "currency": "GBP", "capture_method": "manual",
    "status": "requires_capture", "amount_capturable": 1000, "amount_received": 0, "fee": null,
    "payment_method": "pm_card_visa", "last_payment_error": null, "review_reason": null, "description": null,
    "metadata": {}, "customer_email": null, "gateway": "stripe", "gateway_intent_id": "pi_3Q…", "gateway_charge_id": null, "version": 3,
    "created_at": "2026-12-02T10:00:00Z", "updated_at": "2026-12-02T10:00:01Z"
}))]
pub struct PaymentIntentBody {
    pub id: PaymentIntentId,
    /// In minor units of `currency`.
    pub amount: i64,
    pub currency: Currency,
    #[schema(pattern = "^(automatic|manual)$")]
    pub capture_method: String,
    /// `requires_payment_method`, `requires_confirmation`, `requires_action`,
    /// `processing`, `requires_capture`, `canceled`, `succeeded`, or `requires_review`
    /// (the gateway's reply could not be trusted; see `review_reason`).
    pub status: String,
    /// Authorised and not yet captured.
    pub amount_capturable: i64,
    /// Captured.
    pub amount_received: i64,
    /// Refunded, of what was captured.
    pub amount_refunded: i64,
    /// The gateway's fee on the capture, once known.
    pub fee: Option<i64>,
    pub payment_method: Option<PaymentMethodInput>,
    pub last_payment_error: Option<PaymentErrorBody>,
    pub review_reason: Option<String>,
    pub description: Option<String>,
    #[schema(value_type = Object)]
    pub metadata: serde_json::Value,
    pub customer_email: Option<String>,
    pub gateway: String,
    /// The gateway's intent: Stripe's PaymentIntent (`pi_…`), Razorpay's order (`order_…`).
    pub gateway_intent_id: Option<String>,
    /// What carries the captured money: Stripe's charge (`ch_…`), Razorpay's payment
    /// (`pay_…`); what settlement lines name.
    pub gateway_charge_id: Option<String>,
    /// Moves with each status change; each event's `sequence` is the version it made.
    pub version: i32,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

impl PaymentIntentBody {
    pub fn of(row: &IntentRow) -> Result<PaymentIntentBody, ApiError> {
        let last_payment_error = match &row.last_payment_error {
            Some(error) => Some(serde_json::from_value(error.clone()).map_err(|error| ApiError::internal(&error))?),
            None => None,
        };
        Ok(PaymentIntentBody {
            id: PaymentIntentId::from_uuid(row.id),
            amount: row.amount,
            currency: row.currency().map_err(|error| ApiError::internal(&error))?,
            capture_method: row.capture_method.clone(),
            status: row.status.clone(),
            amount_capturable: row.amount_capturable,
            amount_received: row.amount_received,
            amount_refunded: row.amount_refunded,
            fee: row.fee,
            payment_method: row
                .payment_method
                .as_deref()
                .map(|text| PaymentMethodInput::of(&PaymentMethod::from_stored(text))),
            last_payment_error,
            review_reason: row.review_reason.clone(),
            description: row.description.clone(),
            metadata: row.metadata.clone(),
            customer_email: row.customer_email.clone(),
            gateway: row.gateway.clone(),
            gateway_intent_id: row.gateway_intent_id.clone(),
            gateway_charge_id: row.gateway_charge_id.clone(),
            version: row.version,
            created_at: row.created_at,
            updated_at: row.updated_at,
        })
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateIntentRequest {
    /// In minor units of `currency`, 1 to 99 999 999.
    #[schema(minimum = 1, maximum = 99_999_999, example = 1000)]
    pub amount: i64,
    #[schema(value_type = Currency, example = "GBP")]
    pub currency: String,
    /// `automatic` (default): captured when confirmed. `manual`: authorised, captured later.
    #[schema(pattern = "^(automatic|manual)$", example = "automatic")]
    pub capture_method: Option<String>,
    /// How the customer pays: a card payment method id for Stripe (`pm_card_visa` in test
    /// mode), or a UPI collect request for Razorpay (`{"type": "upi", "vpa":
    /// "success@razorpay"}` in test mode). INR intents go through Razorpay and take UPI;
    /// GBP, EUR and USD go through Stripe and take cards.
    pub payment_method: Option<PaymentMethodInput>,
    /// Confirm at once (needs `payment_method`).
    pub confirm: Option<bool>,
    #[schema(value_type = Option<Text500>)]
    pub description: Option<String>,
    #[schema(value_type = Option<Metadata>)]
    pub metadata: Option<BTreeMap<String, String>>,
    /// Where the receipt goes.
    #[schema(
        max_length = 254,
        pattern = "^[^@\\s\\x00-\\x1f\\x7f-\\x9f]+@[^@\\s\\x00-\\x1f\\x7f-\\x9f]+$",
        example = "buyer@example.com"
    )]
    pub customer_email: Option<String>,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConfirmIntentRequest {
    pub payment_method: Option<PaymentMethodInput>,
}

/// A payment method: a gateway's id (`pm_card_visa`), or a UPI collect request.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum PaymentMethodInput {
    Id(PaymentMethodId),
    Upi(UpiMethod),
}

/// A Stripe payment method id, `pm_` and up to 100 letters, digits or underscores.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PaymentMethodId(pub String);

// By hand: utoipa derives no `pattern` for a newtype or an enum's tuple variant.
impl utoipa::PartialSchema for PaymentMethodId {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .pattern(Some("^pm_[A-Za-z0-9_]{1,100}$"))
            .examples([json!("pm_card_visa")])
            .into()
    }
}

impl utoipa::ToSchema for PaymentMethodId {}

impl PaymentMethodInput {
    fn of(method: &PaymentMethod) -> PaymentMethodInput {
        match method {
            PaymentMethod::Card(id) => PaymentMethodInput::Id(PaymentMethodId(id.clone())),
            PaymentMethod::Upi { vpa } => {
                PaymentMethodInput::Upi(UpiMethod { kind: String::from("upi"), vpa: vpa.clone() })
            }
        }
    }
}

/// A UPI collect request to the customer's virtual payment address.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpiMethod {
    #[serde(rename = "type")]
    #[schema(pattern = "^upi$", example = "upi")]
    pub kind: String,
    /// `name@handle` (`success@razorpay` and `failure@razorpay` in test mode).
    #[schema(pattern = "^[A-Za-z0-9._-]{2,256}@[A-Za-z]{2,64}$", example = "success@razorpay")]
    pub vpa: String,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CaptureIntentRequest {
    /// At most the authorised amount; left out, all of it. The rest is released.
    #[schema(minimum = 1, maximum = 99_999_999)]
    pub amount_to_capture: Option<i64>,
}

fn parse_amount(amount: i64, param: &str) -> Result<i64, ApiError> {
    if (1..=AMOUNT_MAX).contains(&amount) {
        Ok(amount)
    } else {
        Err(ApiError::invalid(param, format!("{param} must be an integer from 1 to {AMOUNT_MAX} minor units.")))
    }
}

fn parse_payment_method(method: Option<&PaymentMethodInput>) -> Result<Option<PaymentMethod>, ApiError> {
    match method {
        None => Ok(None),
        Some(PaymentMethodInput::Id(PaymentMethodId(id))) => {
            let valid = id.len() <= 103
                && id.strip_prefix("pm_").is_some_and(|rest| {
                    !rest.is_empty() && rest.bytes().all(|byte| byte.is_ascii_alphanumeric() || byte == b'_')
                });
            if valid {
                Ok(Some(PaymentMethod::Card(id.clone())))
            } else {
                Err(ApiError::invalid(
                    "payment_method",
                    "payment_method is a gateway payment method id, such as pm_card_visa, or {\"type\": \"upi\", \"vpa\": \"name@bank\"}.",
                ))
            }
        }
        Some(PaymentMethodInput::Upi(upi)) => {
            if upi.kind != "upi" {
                return Err(ApiError::invalid("payment_method.type", "payment_method.type is upi."));
            }
            if !till_kit::bank::is_vpa(&upi.vpa) {
                return Err(ApiError::invalid(
                    "payment_method.vpa",
                    "payment_method.vpa is a UPI address: 2 to 256 letters, digits, dots, hyphens or underscores, @, and a handle of 2 to 64 letters.",
                ));
            }
            Ok(Some(PaymentMethod::Upi { vpa: upi.vpa.clone() }))
        }
    }
}

/// Refuses a payment method the intent's gateway does not take, naming the route.
fn check_method_fits(gateway: &dyn Gateway, method: &PaymentMethod, currency: Currency) -> Result<(), ApiError> {
    if gateway.accepts(method, currency) {
        return Ok(());
    }
    let takes = match gateway.kind() {
        GatewayKind::Stripe => "card payment methods (pm_…)",
        GatewayKind::Razorpay => "UPI ({\"type\": \"upi\", \"vpa\": \"name@bank\"})",
    };
    // A rule of two fields together (the currency routes the gateway), which the schema
    // cannot state: 422.
    Err(ApiError::rule(
        "payment_method",
        format!("{} payments go through {}, which takes {takes}.", currency.code(), gateway.kind().title()),
    ))
}

fn parse_email(email: Option<&str>) -> Result<Option<String>, ApiError> {
    let Some(email) = email else { return Ok(None) };
    // Exactly what the schema's pattern says: one `@` between two non-empty parts, no
    // white space or control characters. Whether the address receives mail is for the
    // mail server to say.
    let plain = email.chars().count() <= EMAIL_CHARS_MAX
        && !email.chars().any(|c| c.is_control() || c.is_whitespace())
        && email
            .split_once('@')
            .is_some_and(|(local, domain)| !local.is_empty() && !domain.is_empty() && !domain.contains('@'));
    if plain {
        Ok(Some(email.to_string()))
    } else {
        Err(ApiError::invalid("customer_email", "customer_email must be an e-mail address (at most 254 characters)."))
    }
}

struct ParsedCreate {
    amount: Money,
    capture_method: CaptureMethod,
    gateway: GatewayKind,
    payment_method: Option<PaymentMethod>,
    confirm: bool,
    description: Option<String>,
    metadata: Metadata,
    customer_email: Option<String>,
}

fn parse_create(bytes: &[u8]) -> Result<ParsedCreate, ApiError> {
    let request: CreateIntentRequest = till_http::extract::parse_json(bytes)?;
    let currency =
        Currency::parse(&request.currency).map_err(|error| ApiError::invalid("currency", error.to_string()))?;
    let amount = Money::from_minor(parse_amount(request.amount, "amount")?, currency);
    let capture_method = match request.capture_method.as_deref() {
        None | Some("automatic") => CaptureMethod::Automatic,
        Some("manual") => CaptureMethod::Manual,
        Some(_) => return Err(ApiError::invalid("capture_method", "capture_method must be automatic or manual.")),
    };
    let payment_method = parse_payment_method(request.payment_method.as_ref())?;
    let gateway = GatewayKind::for_currency(currency);
    let confirm = request.confirm.unwrap_or(false);
    if confirm && payment_method.is_none() {
        return Err(ApiError::rule("payment_method", "confirm: true needs a payment_method."));
    }
    let description = request
        .description
        .map(|text| {
            HumanText::parse(&text, DESCRIPTION_CHARS_MAX)
                .map(|text| text.as_str().to_string())
                .map_err(|refusal| ApiError::text("description", refusal))
        })
        .transpose()?;
    let metadata = Metadata::parse(request.metadata.unwrap_or_default())
        .map_err(|error| ApiError::invalid("metadata", error.to_string()))?;
    let customer_email = parse_email(request.customer_email.as_deref())?;
    Ok(ParsedCreate { amount, capture_method, gateway, payment_method, confirm, description, metadata, customer_email })
}

fn business_of(phased: &Phased) -> Result<BusinessId, ApiError> {
    phased.business().ok_or_else(|| ApiError::internal(&"a payments route ran without a business"))
}

fn request_id() -> Option<String> {
    till_http::request_id::current()
}

/// The intent's event for its current status, in the caller's transaction.
async fn announce(connection: &mut sqlx::PgConnection, row: &IntentRow, event_type: EventType) -> Result<(), ApiError> {
    let body = PaymentIntentBody::of(row)?;
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

/// The event that announces `status`, when a status change has one.
fn event_for(status: IntentStatus) -> Option<EventType> {
    match status {
        IntentStatus::RequiresCapture => Some(EventType::PaymentIntentAmountCapturableUpdated),
        IntentStatus::Succeeded => Some(EventType::PaymentIntentSucceeded),
        IntentStatus::Canceled => Some(EventType::PaymentIntentCanceled),
        IntentStatus::RequiresReview => Some(EventType::PaymentIntentRequiresReview),
        IntentStatus::Processing => Some(EventType::PaymentIntentProcessing),
        _ => None,
    }
}

fn json_response(status: StatusCode, row: &IntentRow) -> Result<Response, ApiError> {
    Ok((status, axum::Json(PaymentIntentBody::of(row)?)).into_response())
}

/// Create a payment intent; with `confirm: true`, confirm it too.
#[utoipa::path(post, path = "/v1/payment_intents", tag = "payments",
    request_body = CreateIntentRequest,
    params(("Idempotency-Key" = String, Header, description = "1–255 printable ASCII characters; makes the request safe to retry.")),
    responses(
        (status = 201, body = PaymentIntentBody, description = "Created (and, with `confirm`, confirmed: see `status`)."),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
        (status = 502, body = Problem, content_type = "application/problem+json"),
        (status = 503, body = Problem, content_type = "application/problem+json"),
        (status = 202, body = PaymentIntentBody, description = "The gateway's answer is not known yet (it timed out): the intent stands as shown (`processing` for a step with the gateway). Retry with the same Idempotency-Key for the outcome; if nobody does, Till settles it by itself."),
    ),
    security(("bearer" = [])))]
async fn create_intent(State(payments): State<Payments>, phased: Phased) -> Response {
    run_create(payments, phased).await.unwrap_or_else(IntoResponse::into_response)
}

/// Create, from wherever the request stands: the handler and the resumer run this.
pub async fn run_create(payments: Payments, mut phased: Phased) -> Result<Response, ApiError> {
    let business = business_of(&phased)?;
    let parsed = parse_create(phased.body())?;
    let gateway = payments.gateways.get(parsed.gateway).clone();
    if let Some(method) = &parsed.payment_method {
        check_method_fits(gateway.as_ref(), method, parsed.amount.currency())?;
    }
    if phased.point().is_started() {
        let id = PaymentIntentId::generate();
        let status = if parsed.payment_method.is_some() {
            IntentStatus::RequiresConfirmation
        } else {
            IntentStatus::RequiresPaymentMethod
        };
        let mut phase = phased.begin().await?;
        let row = store::insert_intent(
            &mut phase,
            &store::NewIntent {
                id: id.as_uuid(),
                business,
                amount: parsed.amount,
                capture_method: parsed.capture_method,
                status,
                gateway: parsed.gateway,
                payment_method: parsed.payment_method.as_ref().map(PaymentMethod::stored).as_deref(),
                description: parsed.description.as_deref(),
                metadata: &parsed.metadata,
                customer_email: parsed.customer_email.as_deref(),
            },
        )
        .await?;
        announce(&mut phase, &row, EventType::PaymentIntentCreated).await?;
        phase.commit(RecoveryPoint::new("recorded", json!({ "intent": id.to_string() }))).await?;
    }
    let intent = intent_of_point(&phased)?;
    let mut row = load(&mut phased, intent).await?;
    if phased.point().name == "recorded" {
        let new = NewIntent {
            amount: parsed.amount,
            capture_method: parsed.capture_method,
            reference: intent.to_string(),
            description: parsed.description.clone(),
        };
        let answer = gateway.create(&new, &format!("{intent}:create")).await;
        let created = match answer {
            Ok(Answer::Done(created)) => created,
            Ok(Answer::Refused(refusal)) => {
                let mut phase = phased.begin().await?;
                let problem = ApiError::rule("amount", format!("The gateway refused the payment: {}", refusal.message));
                review(&mut phase, &row, &format!("the gateway refused to create it: {}", refusal.message)).await?;
                return phase_problem(phase, problem).await;
            }
            Ok(Answer::Declined { .. }) => {
                return invalid_reply(&mut phased, &row, "a decline answered a create").await
            }
            Err(error) => return outbound_failure(&mut phased, &row, error).await,
        };
        if moved_past_creation(created.status) {
            return invalid_reply(&mut phased, &row, "a new intent was already past confirmation").await;
        }
        let mut phase = phased.begin().await?;
        row =
            store::record(&mut phase, row.id, &Outcome { gateway_intent_id: Some(&created.id), ..Outcome::default() })
                .await?;
        if !parsed.confirm {
            return phase.finish(StatusCode::CREATED, &PaymentIntentBody::of(&row)?).await;
        }
        let started = store::start_step(
            &mut phase,
            row.id,
            &[IntentStatus::RequiresConfirmation],
            IntentStatus::Processing,
            None,
        )
        .await?
        .ok_or_else(|| ApiError::internal(&"a new intent could not start its confirm"))?;
        let key = format!("{intent}:confirm:{}", started.version);
        phase.commit(RecoveryPoint::new("confirming", json!({ "intent": intent.to_string(), "key": key }))).await?;
    }
    confirm_step(&payments, &mut phased, StatusCode::CREATED).await
}

/// Whether a create's answer is past confirmation, which a new intent cannot be.
fn moved_past_creation(status: GatewayStatus) -> bool {
    !matches!(status, GatewayStatus::RequiresPaymentMethod | GatewayStatus::RequiresConfirmation)
}

fn intent_of_point(phased: &Phased) -> Result<PaymentIntentId, ApiError> {
    phased.point().data["intent"]
        .as_str()
        .and_then(|text| PaymentIntentId::parse(text).ok())
        .ok_or_else(|| ApiError::internal(&"a recovery point without its intent"))
}

async fn load(phased: &mut Phased, intent: PaymentIntentId) -> Result<IntentRow, ApiError> {
    let mut phase = phased.begin().await?;
    let row =
        store::find_intent(&mut phase, intent.as_uuid()).await?.ok_or_else(|| ApiError::not_found("payment intent"))?;
    phase.rollback().await;
    Ok(row)
}

/// Puts the intent in `requires_review` with `reason`, with its event.
pub(crate) async fn review(
    connection: &mut sqlx::PgConnection,
    row: &IntentRow,
    reason: &str,
) -> Result<IntentRow, ApiError> {
    let reviewed = store::record(
        connection,
        row.id,
        &Outcome { status: Some(IntentStatus::RequiresReview), review_reason: Some(reason), ..Outcome::default() },
    )
    .await?;
    announce(connection, &reviewed, EventType::PaymentIntentRequiresReview).await?;
    Ok(reviewed)
}

/// Finishes the request with a problem, stored under its key like any answer.
async fn phase_problem(phase: till_http::recovery::Phase<'_>, problem: ApiError) -> Result<Response, ApiError> {
    phase.finish_problem(problem).await
}

fn state_conflict(detail: String) -> ApiError {
    ApiError::new(till_http::ErrorCode::StateConflict, detail).with_param("id")
}

/// A reply that cannot be trusted: review, nothing posted, 502.
async fn invalid_reply(phased: &mut Phased, row: &IntentRow, reason: &str) -> Result<Response, ApiError> {
    let mut phase = phased.begin().await?;
    review(&mut phase, row, reason).await?;
    let problem: ApiError = OutboundError::InvalidReply {
        names: GatewayKind::of_stored(&row.gateway).names(),
        reason: till_outbound::InvalidReply::new("body", reason.to_string()),
    }
    .into();
    phase_problem(phase, problem).await
}

/// The outbound kit gave no answer to act on.
async fn outbound_failure(phased: &mut Phased, row: &IntentRow, error: OutboundError) -> Result<Response, ApiError> {
    match &error {
        OutboundError::InvalidReply { reason, .. } => {
            let reason = format!("{}: {}", reason.field, reason.why);
            invalid_reply(phased, row, &reason).await
        }
        // Timed out: the gateway may have acted. The intent is `processing`, and the
        // answer says so (202) without deciding anything: the point stays, and a retry of
        // the same Idempotency-Key (or the recovery job, if nobody retries) calls again
        // with the same gateway key, so the gateway makes the effect once.
        OutboundError::TimedOut { .. } => {
            tracing::warn!(%error, intent = %PaymentIntentId::from_uuid(row.id), "the gateway's outcome is unknown");
            let current = load(phased, PaymentIntentId::from_uuid(row.id)).await?;
            Ok(till_http::recovery::undecided(json_response(StatusCode::ACCEPTED, &current)?))
        }
        // Unavailable (nothing was sent) or failing: nothing is recorded, the point
        // stays, and a retry resumes from it.
        _ => Err(error.into()),
    }
}

/// Confirm, from the point `confirming` (the intent is `processing`, the key recorded).
async fn confirm_step(payments: &Payments, phased: &mut Phased, success: StatusCode) -> Result<Response, ApiError> {
    let business = business_of(phased)?;
    let intent = intent_of_point(phased)?;
    let key = phased.point().data["key"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| ApiError::internal(&"a confirming point without its key"))?;
    let row = load(phased, intent).await?;
    let amount = row.money().map_err(|error| ApiError::internal(&error))?;
    let (Some(gateway_id), Some(method)) = (row.gateway_intent_id.clone(), row.payment_method.as_deref()) else {
        return Err(ApiError::internal(&"a confirm without the gateway's intent or a payment method"));
    };
    let adapter = payments.gateway_of(&row)?;
    let method = PaymentMethod::from_stored(method);
    let answer = adapter.confirm(&gateway_id, amount, &method, row.customer_email.as_deref(), &key).await;
    let gateway = match answer {
        Ok(Answer::Done(gateway)) => gateway,
        Ok(Answer::Declined { decline, intent: gateway }) => {
            let mut phase = phased.begin().await?;
            let declined = declined(&mut phase, &row, &decline, &gateway).await?;
            return phase.finish(success, &PaymentIntentBody::of(&declined)?).await;
        }
        Ok(Answer::Refused(refusal)) => {
            // Nothing happened at the gateway (a payment method it does not know): the
            // intent waits for another, as after a decline, with the gateway's reason.
            let mut phase = phased.begin().await?;
            let decline = Decline {
                code: refusal.code.clone().unwrap_or_else(|| String::from("payment_method_refused")),
                decline_code: None,
                message: refusal.message.clone(),
            };
            let waiting = GatewayIntent { status: GatewayStatus::RequiresPaymentMethod, ..gateway_view(&row)? };
            declined(&mut phase, &row, &decline, &waiting).await?;
            let problem = ApiError::rule(
                "payment_method",
                format!("The gateway refused the payment method: {}", refusal.message),
            );
            return phase_problem(phase, problem).await;
        }
        Err(error) => return outbound_failure(phased, &row, error).await,
    };
    match gateway.status {
        GatewayStatus::RequiresCapture | GatewayStatus::Succeeded => {}
        // An asynchronous payment (a UPI collect the customer has not answered yet):
        // nothing is decided, as after a timeout. The point stays; the gateway's webhook
        // expedites it, or the recovery job asks again after the grace, with this step's
        // key, which finds this same payment.
        GatewayStatus::Processing => {
            let current = load(phased, intent).await?;
            return Ok(till_http::recovery::undecided(json_response(StatusCode::ACCEPTED, &current)?));
        }
        _ => {
            let reason = format!("a confirm answered {:?}", gateway.status);
            return invalid_reply(phased, &row, &reason).await;
        }
    }
    // A capture's fee is read before the phase, so that the phase posts it with the
    // capture (one more call; if it fails, the fee is left for the status sync).
    let fee = match (gateway.status, gateway.charge.as_deref()) {
        (GatewayStatus::Succeeded, Some(charge)) => match adapter.fee(charge, amount.currency()).await {
            Ok(fee) => Some(fee),
            Err(error) => {
                tracing::warn!(%error, intent = %intent, "reading the fee failed; the capture is recorded without it");
                None
            }
        },
        _ => None,
    };
    finish_with_gateway_state(phased, business, &row, &gateway, fee, success).await
}

/// The intent as Till knows it, in the gateway's terms (for an answer that has none).
fn gateway_view(row: &IntentRow) -> Result<GatewayIntent, ApiError> {
    let amount = row.money().map_err(|error| ApiError::internal(&error))?;
    Ok(GatewayIntent {
        id: row.gateway_intent_id.clone().unwrap_or_default(),
        status: GatewayStatus::RequiresPaymentMethod,
        amount,
        capturable: Money::from_minor(row.amount_capturable, amount.currency()),
        received: Money::from_minor(row.amount_received, amount.currency()),
        charge: None,
        decline: None,
    })
}

/// A decline: the intent waits for another payment method, with the reason.
async fn declined(
    connection: &mut sqlx::PgConnection,
    row: &IntentRow,
    decline: &Decline,
    gateway: &GatewayIntent,
) -> Result<IntentRow, ApiError> {
    let error = json!({ "code": decline.code, "decline_code": decline.decline_code, "message": decline.message });
    let declined = store::record(
        connection,
        row.id,
        &Outcome {
            status: Some(IntentStatus::of_gateway(gateway.status)),
            last_payment_error: Some(Some(error)),
            ..Outcome::default()
        },
    )
    .await?;
    announce(connection, &declined, EventType::PaymentIntentPaymentFailed).await?;
    Ok(declined)
}

/// Records what the gateway holds after a confirm or a capture: authorised (a ledger
/// hold) or captured (the money, the refundable amount and the fee), with the event.
async fn settle_gateway_state(
    connection: &mut sqlx::PgConnection,
    business: BusinessId,
    row: &IntentRow,
    gateway: &GatewayIntent,
    fee: Option<Money>,
) -> Result<Result<IntentRow, String>, ApiError> {
    let intent = PaymentIntentId::from_uuid(row.id).to_string();
    let gateway_kind = GatewayKind::of_stored(&row.gateway);
    let request = request_id();
    let request = request.as_deref();
    let mut outcome = Outcome {
        status: Some(IntentStatus::of_gateway(gateway.status)),
        amount_capturable: Some(gateway.capturable.minor()),
        amount_received: Some(gateway.received.minor()),
        last_payment_error: Some(None),
        ..Outcome::default()
    };
    let posted = match gateway.status {
        GatewayStatus::RequiresCapture => {
            crate::ledger::authorise(connection, business, gateway_kind, &intent, gateway.capturable, request)
                .await?
                .map(|hold| {
                    outcome.authorisation_hold = Some(hold);
                })
        }
        GatewayStatus::Succeeded => {
            let captured = crate::ledger::capture(
                connection,
                business,
                gateway_kind,
                &intent,
                row.authorisation_hold,
                gateway.received,
                request,
            )
            .await?;
            match captured {
                Ok(refundable) => {
                    outcome.refundable_account = Some(refundable);
                    outcome.gateway_charge_id = gateway.charge.as_deref();
                    match fee {
                        Some(fee) => crate::ledger::fee(connection, business, gateway_kind, &intent, fee, request)
                            .await?
                            .map(|()| outcome.fee = Some(fee.minor())),
                        None => Ok(()),
                    }
                }
                Err(refused) => Err(refused),
            }
        }
        _ => Ok(()),
    };
    if let Err(refused) = posted {
        return Ok(Err(format!("the gateway moved but the ledger refused the postings: {}", refused.0)));
    }
    let recorded = store::record(connection, row.id, &outcome).await?;
    if let Some(event_type) = event_for(IntentStatus::of_gateway(gateway.status)) {
        announce(connection, &recorded, event_type).await?;
    }
    Ok(Ok(recorded))
}

/// Records the gateway's state in a phase of its own and finishes; if the ledger will
/// not follow the gateway (an authorisation that expired in the ledger first), that
/// phase is rolled back and another records the review instead: the gateway and the
/// ledger disagree, and a person must reconcile them.
async fn finish_with_gateway_state(
    phased: &mut Phased,
    business: BusinessId,
    row: &IntentRow,
    gateway: &GatewayIntent,
    fee: Option<Money>,
    success: StatusCode,
) -> Result<Response, ApiError> {
    let mut phase = phased.begin().await?;
    match settle_gateway_state(&mut phase, business, row, gateway, fee).await? {
        Ok(recorded) => phase.finish(success, &PaymentIntentBody::of(&recorded)?).await,
        Err(reason) => {
            phase.rollback().await;
            tracing::error!(intent = %PaymentIntentId::from_uuid(row.id), reason, "the ledger refused a gateway's effect");
            let mut phase = phased.begin().await?;
            review(&mut phase, row, &reason).await?;
            phase_problem(phase, state_conflict(format!("{reason}; the payment intent needs review."))).await
        }
    }
}

/// The id in a route's path (`/v1/payment_intents/{id}/…`), read from the request's
/// path so that the resumer, which has no extractors, reads it the same way.
fn intent_of_path(phased: &Phased) -> Result<PaymentIntentId, ApiError> {
    let path = &phased.idempotency().path;
    path.split('/')
        .nth(3)
        .and_then(|text| PaymentIntentId::parse(text).ok())
        .ok_or_else(|| ApiError::not_found("payment intent"))
}

/// Confirm a payment intent: authorise (manual capture) or capture (automatic).
#[utoipa::path(post, path = "/v1/payment_intents/{id}/confirm", tag = "payments",
    request_body = ConfirmIntentRequest,
    params(("id" = PaymentIntentId, Path), ("Idempotency-Key" = String, Header, description = "1–255 printable ASCII characters; makes the request safe to retry.")),
    responses(
        (status = 200, body = PaymentIntentBody, description = "Confirmed, or declined (`status`, `last_payment_error`)."),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
        (status = 502, body = Problem, content_type = "application/problem+json"),
        (status = 503, body = Problem, content_type = "application/problem+json"),
        (status = 202, body = PaymentIntentBody, description = "The gateway's answer is not known yet (it timed out): the intent stands as shown (`processing` for a step with the gateway). Retry with the same Idempotency-Key for the outcome; if nobody does, Till settles it by itself."),
    ),
    security(("bearer" = [])))]
async fn confirm_intent(State(payments): State<Payments>, phased: Phased) -> Response {
    run_confirm(payments, phased).await.unwrap_or_else(IntoResponse::into_response)
}

pub async fn run_confirm(payments: Payments, mut phased: Phased) -> Result<Response, ApiError> {
    let request: ConfirmIntentRequest = till_http::extract::parse_json_or_empty(phased.body())?;
    let method = parse_payment_method(request.payment_method.as_ref())?;
    if phased.point().is_started() {
        let intent = intent_of_path(&phased)?;
        let mut phase = phased.begin().await?;
        let row = store::find_intent(&mut phase, intent.as_uuid())
            .await?
            .ok_or_else(|| ApiError::not_found("payment intent"))?;
        let status = row.status().map_err(|error| ApiError::internal(&error))?;
        if !status.confirmable() {
            let problem =
                state_conflict(format!("A payment intent in status {} cannot be confirmed.", status.as_str()));
            return phase_problem(phase, problem).await;
        }
        if let Some(method) = &method {
            let currency = row.currency().map_err(|error| ApiError::internal(&error))?;
            if let Err(problem) = check_method_fits(payments.gateway_of(&row)?, method, currency) {
                return phase_problem(phase, problem).await;
            }
        }
        if method.is_none() && row.payment_method.is_none() {
            return phase_problem(phase, ApiError::invalid("payment_method", "This intent has no payment_method yet."))
                .await;
        }
        if row.gateway_intent_id.is_none() {
            return Err(ApiError::internal(&"an intent past its create without the gateway's id"));
        }
        let started = store::start_step(
            &mut phase,
            row.id,
            &[IntentStatus::RequiresPaymentMethod, IntentStatus::RequiresConfirmation],
            IntentStatus::Processing,
            method.as_ref().map(PaymentMethod::stored).as_deref(),
        )
        .await?
        .ok_or_else(|| state_conflict("The payment intent was confirmed by another request.".into()))?;
        let key = format!("{intent}:confirm:{}", started.version);
        phase.commit(RecoveryPoint::new("confirming", json!({ "intent": intent.to_string(), "key": key }))).await?;
    }
    confirm_step(&payments, &mut phased, StatusCode::OK).await
}

/// Capture an authorised payment intent, in full or in part; the rest is released.
#[utoipa::path(post, path = "/v1/payment_intents/{id}/capture", tag = "payments",
    request_body = CaptureIntentRequest,
    params(("id" = PaymentIntentId, Path), ("Idempotency-Key" = String, Header, description = "1–255 printable ASCII characters; makes the request safe to retry.")),
    responses(
        (status = 200, body = PaymentIntentBody),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
        (status = 502, body = Problem, content_type = "application/problem+json"),
        (status = 503, body = Problem, content_type = "application/problem+json"),
        (status = 202, body = PaymentIntentBody, description = "The gateway's answer is not known yet (it timed out): the intent stands as shown (`processing` for a step with the gateway). Retry with the same Idempotency-Key for the outcome; if nobody does, Till settles it by itself."),
    ),
    security(("bearer" = [])))]
async fn capture_intent(State(payments): State<Payments>, phased: Phased) -> Response {
    run_capture(payments, phased).await.unwrap_or_else(IntoResponse::into_response)
}

pub async fn run_capture(payments: Payments, mut phased: Phased) -> Result<Response, ApiError> {
    let business = business_of(&phased)?;
    let request: CaptureIntentRequest = till_http::extract::parse_json_or_empty(phased.body())?;
    let requested = request.amount_to_capture.map(|amount| parse_amount(amount, "amount_to_capture")).transpose()?;
    if phased.point().is_started() {
        let intent = intent_of_path(&phased)?;
        let mut phase = phased.begin().await?;
        let row = store::find_intent(&mut phase, intent.as_uuid())
            .await?
            .ok_or_else(|| ApiError::not_found("payment intent"))?;
        let status = row.status().map_err(|error| ApiError::internal(&error))?;
        if status != IntentStatus::RequiresCapture {
            let problem = state_conflict(format!("A payment intent in status {} cannot be captured.", status.as_str()));
            return phase_problem(phase, problem).await;
        }
        let amount = requested.unwrap_or(row.amount_capturable);
        if amount > row.amount_capturable {
            let problem = ApiError::rule(
                "amount_to_capture",
                format!("amount_to_capture is more than the {} authorised.", row.amount_capturable),
            );
            return phase_problem(phase, problem).await;
        }
        store::start_step(&mut phase, row.id, &[IntentStatus::RequiresCapture], IntentStatus::Processing, None)
            .await?
            .ok_or_else(|| state_conflict("The payment intent was captured by another request.".into()))?;
        let data = json!({ "intent": intent.to_string(), "amount": amount, "key": format!("{intent}:capture") });
        phase.commit(RecoveryPoint::new("capturing", data)).await?;
    }
    let intent = intent_of_point(&phased)?;
    let data = phased.point().data.clone();
    let (Some(amount), Some(key)) = (data["amount"].as_i64(), data["key"].as_str()) else {
        return Err(ApiError::internal(&"a capturing point without its amount or key"));
    };
    let row = load(&mut phased, intent).await?;
    let total = row.money().map_err(|error| ApiError::internal(&error))?;
    let to_capture = Money::from_minor(amount, total.currency());
    let gateway_id =
        row.gateway_intent_id.clone().ok_or_else(|| ApiError::internal(&"a capture without the gateway's id"))?;
    let adapter = payments.gateway_of(&row)?;
    let gateway = match adapter.capture(&gateway_id, total, Some(to_capture), key).await {
        Ok(Answer::Done(gateway)) => gateway,
        Ok(Answer::Refused(refusal)) => {
            // Nothing was captured: the authorisation stands, and the intent with it.
            let mut phase = phased.begin().await?;
            store::restore(&mut phase, row.id, IntentStatus::RequiresCapture).await?;
            let problem =
                ApiError::rule("amount_to_capture", format!("The gateway refused the capture: {}", refusal.message));
            return phase_problem(phase, problem).await;
        }
        Ok(Answer::Declined { .. }) => return invalid_reply(&mut phased, &row, "a decline answered a capture").await,
        Err(error) => return outbound_failure(&mut phased, &row, error).await,
    };
    if gateway.status != GatewayStatus::Succeeded || gateway.received != to_capture {
        let reason =
            format!("a capture of {amount} answered {:?} with {} received", gateway.status, gateway.received.minor());
        return invalid_reply(&mut phased, &row, &reason).await;
    }
    let fee = match gateway.charge.as_deref() {
        Some(charge) => adapter.fee(charge, total.currency()).await.ok(),
        None => None,
    };
    finish_with_gateway_state(&mut phased, business, &row, &gateway, fee, StatusCode::OK).await
}

/// Retrieve a payment intent.
#[utoipa::path(get, path = "/v1/payment_intents/{id}", tag = "payments",
    params(("id" = PaymentIntentId, Path)),
    responses(
        (status = 200, body = PaymentIntentBody),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
async fn get_intent(
    _principal: Principal,
    mut tx: Tx,
    ApiPath(id): ApiPath<PaymentIntentId>,
) -> Result<Response, ApiError> {
    let row = store::find_intent(&mut tx, id.as_uuid()).await?.ok_or_else(|| ApiError::not_found("payment intent"))?;
    json_response(StatusCode::OK, &row)
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct IntentListParams {
    /// Page size, 1 to 100 (default 20).
    pub limit: Option<u32>,
    /// The id of the last intent of the previous page.
    pub starting_after: Option<String>,
    /// Only intents in this status.
    #[param(
        pattern = "^(requires_payment_method|requires_confirmation|requires_action|processing|requires_capture|canceled|succeeded|requires_review)$"
    )]
    pub status: Option<String>,
}

/// List payment intents, newest first.
#[utoipa::path(get, path = "/v1/payment_intents", tag = "payments", params(IntentListParams),
    responses(
        (status = 200, body = Page<PaymentIntentBody>),
        (status = 400, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
async fn list_intents(
    principal: Principal,
    mut tx: Tx,
    ApiQuery(params): ApiQuery<IntentListParams>,
) -> Result<axum::Json<Page<PaymentIntentBody>>, ApiError> {
    let page = ListParams { limit: params.limit, starting_after: params.starting_after }
        .page(|text| PaymentIntentId::parse(text).ok())?;
    let status = params
        .status
        .as_deref()
        .map(|text| {
            IntentStatus::parse(text)
                .ok_or_else(|| ApiError::invalid("status", "status is one of the payment intent statuses."))
        })
        .transpose()?;
    let rows = store::list_intents(
        &mut tx,
        principal.business_id,
        status,
        page.starting_after.map(|id| id.as_uuid()),
        page.fetch_limit(),
    )
    .await?;
    let bodies = rows.iter().map(PaymentIntentBody::of).collect::<Result<Vec<_>, _>>()?;
    Ok(axum::Json(Page::from_rows(bodies, page.limit, |intent| intent.id.to_string())))
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CancelIntentRequest {
    #[schema(pattern = "^(duplicate|fraudulent|requested_by_customer|abandoned)$")]
    pub cancellation_reason: Option<String>,
}

/// Cancel a payment intent before it is captured; an authorisation is released.
#[utoipa::path(post, path = "/v1/payment_intents/{id}/cancel", tag = "payments",
    request_body = CancelIntentRequest,
    params(("id" = PaymentIntentId, Path), ("Idempotency-Key" = String, Header, description = "1–255 printable ASCII characters; makes the request safe to retry.")),
    responses(
        (status = 200, body = PaymentIntentBody),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json"),
        (status = 502, body = Problem, content_type = "application/problem+json"),
        (status = 503, body = Problem, content_type = "application/problem+json"),
        (status = 202, body = PaymentIntentBody, description = "The gateway's answer is not known yet (it timed out): the intent stands as shown (`processing` for a step with the gateway). Retry with the same Idempotency-Key for the outcome; if nobody does, Till settles it by itself."),
    ),
    security(("bearer" = [])))]
async fn cancel_intent(State(payments): State<Payments>, phased: Phased) -> Response {
    run_cancel(payments, phased).await.unwrap_or_else(IntoResponse::into_response)
}

pub async fn run_cancel(payments: Payments, mut phased: Phased) -> Result<Response, ApiError> {
    let business = business_of(&phased)?;
    let request: CancelIntentRequest = till_http::extract::parse_json_or_empty(phased.body())?;
    if let Some(reason) = request.cancellation_reason.as_deref() {
        if !["duplicate", "fraudulent", "requested_by_customer", "abandoned"].contains(&reason) {
            return Err(ApiError::invalid(
                "cancellation_reason",
                "cancellation_reason is duplicate, fraudulent, requested_by_customer or abandoned.",
            ));
        }
    }
    if phased.point().is_started() {
        let intent = intent_of_path(&phased)?;
        let mut phase = phased.begin().await?;
        let row = store::find_intent(&mut phase, intent.as_uuid())
            .await?
            .ok_or_else(|| ApiError::not_found("payment intent"))?;
        let from = row.status().map_err(|error| ApiError::internal(&error))?;
        let cancelable =
            [IntentStatus::RequiresPaymentMethod, IntentStatus::RequiresConfirmation, IntentStatus::RequiresCapture];
        if !cancelable.contains(&from) {
            return phase_problem(
                phase,
                state_conflict(format!("A payment intent in status {} cannot be canceled.", from.as_str())),
            )
            .await;
        }
        store::start_step(&mut phase, row.id, &[from], IntentStatus::Processing, None)
            .await?
            .ok_or_else(|| state_conflict("The payment intent was changed by another request.".into()))?;
        let data = json!({ "intent": intent.to_string(), "key": format!("{intent}:cancel"), "from": from.as_str() });
        phase.commit(RecoveryPoint::new("canceling", data)).await?;
    }
    let intent = intent_of_point(&phased)?;
    let data = phased.point().data.clone();
    let (Some(key), Some(from)) = (data["key"].as_str(), data["from"].as_str().and_then(IntentStatus::parse)) else {
        return Err(ApiError::internal(&"a canceling point without its key"));
    };
    let row = load(&mut phased, intent).await?;
    let amount = row.money().map_err(|error| ApiError::internal(&error))?;
    let gateway_id =
        row.gateway_intent_id.clone().ok_or_else(|| ApiError::internal(&"a cancel without the gateway's id"))?;
    match payments.gateway_of(&row)?.cancel(&gateway_id, amount, key).await {
        Ok(Answer::Done(gateway)) if gateway.status == GatewayStatus::Canceled => {
            let mut phase = phased.begin().await?;
            let intent_text = intent.to_string();
            if let Some(hold) = row.authorisation_hold {
                let request = request_id();
                if let Err(refused) =
                    crate::ledger::release(&mut phase, business, &intent_text, hold, request.as_deref()).await?
                {
                    phase.rollback().await;
                    let mut phase = phased.begin().await?;
                    let reason = format!("the gateway canceled but the ledger refused the release: {}", refused.0);
                    review(&mut phase, &row, &reason).await?;
                    return phase_problem(phase, state_conflict(reason)).await;
                }
            }
            let canceled = store::record(
                &mut phase,
                row.id,
                &Outcome { status: Some(IntentStatus::Canceled), amount_capturable: Some(0), ..Outcome::default() },
            )
            .await?;
            announce(&mut phase, &canceled, EventType::PaymentIntentCanceled).await?;
            phase.finish(StatusCode::OK, &PaymentIntentBody::of(&canceled)?).await
        }
        Ok(Answer::Done(gateway)) => {
            let reason = format!("a cancel answered {:?}", gateway.status);
            invalid_reply(&mut phased, &row, &reason).await
        }
        Ok(Answer::Refused(refusal)) => {
            // Nothing changed at the gateway: the intent is as it was.
            let mut phase = phased.begin().await?;
            store::restore(&mut phase, row.id, from).await?;
            phase_problem(phase, state_conflict(format!("The gateway refused the cancel: {}", refusal.message))).await
        }
        Ok(Answer::Declined { .. }) => invalid_reply(&mut phased, &row, "a decline answered a cancel").await,
        Err(error) => outbound_failure(&mut phased, &row, error).await,
    }
}
