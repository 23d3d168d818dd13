//! `/v1/beneficiaries` and `/v1/payouts`.
//!
//! A beneficiary is checked offline first (its fields, modulus checking), then the rail
//! asks the payee's bank about the name (Confirmation of Payee) and the answer is stored
//! on it. A CoP check is a question, not an effect on the outside party, so the route
//! runs it inside the request's unit of work rather than in phases: a retry of the same
//! Idempotency-Key that finds no stored answer simply asks again.
//!
//! A payout's creation is local: in one transaction it checks the beneficiary and the
//! rail's limit, writes the payout `processing` (queued for the rail) and places the
//! ledger hold, or refuses with nothing kept. The saga ([`crate::saga`]) sends it.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use till_http::auth::Principal;
use till_http::extract::{ApiJson, ApiJsonOrEmpty, ApiPath, ApiQuery};
use till_http::pagination::{ListParams, Page};
use till_http::unit_of_work::Tx;
use till_http::{ApiError, ErrorCode, Problem};
use till_kit::{Currency, HumanText, Money};
use till_ledger::TransferId;
use till_outbound::OutboundError;
use till_outbox::EventType;
use time::OffsetDateTime;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::beneficiary::{self, Destination, Fields};
use crate::policy;
use crate::rail::{PayeeCheck, Rail, RailKind};
use crate::store::{self, BeneficiaryRow, PayoutRow};
use crate::{BeneficiaryId, PayoutId};

pub const BENEFICIARIES_PATH: &str = "/v1/beneficiaries";
pub const PAYOUTS_PATH: &str = "/v1/payouts";

/// The rails, and the saga's wake-up call.
#[derive(Clone)]
pub struct Payouts {
    pub fps: Arc<dyn Rail>,
    pub razorpayx: Arc<dyn Rail>,
    pub wake: Arc<tokio::sync::Notify>,
}

impl Payouts {
    pub fn rail(&self, kind: RailKind) -> &dyn Rail {
        match kind {
            RailKind::Fps => self.fps.as_ref(),
            RailKind::RazorpayX => self.razorpayx.as_ref(),
        }
    }
}

pub fn routes(payouts: Payouts) -> OpenApiRouter {
    OpenApiRouter::new()
        .routes(routes!(create_beneficiary, list_beneficiaries))
        .routes(routes!(get_beneficiary, disable_beneficiary))
        .routes(routes!(create_payout, list_payouts))
        .routes(routes!(get_payout))
        .routes(routes!(approve_payout))
        .routes(routes!(cancel_payout))
        .routes(routes!(get_policy, put_policy))
        .with_state(payouts)
}

fn internal(cause: impl std::fmt::Display) -> ApiError {
    ApiError::internal(&cause)
}

/// What the payee's bank said of the name.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct VerificationBody {
    /// `match`, `close_match`, `no_match` or `unavailable`.
    pub result: String,
    /// The scheme's reason code (Pay.UK CoP: `MBAM`, `ANNM`, `AC01`, `OPTO`, …), or
    /// Till's own when no answer came (`RAIL_UNAVAILABLE`, `RAIL_REPLY_INVALID`).
    pub code: Option<String>,
    /// For a close match, the name the bank holds, when it says.
    pub name: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub checked_at: OffsetDateTime,
}

/// Someone a business pays.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(example = json!({
    "id": "ben_01936f0e6c2a7cc2b0a6a4e5f3d2c1b0", "type": "uk_account", "name": "Acme Supplies Ltd",
    "account_type": "business", "sort_code": "089999", "account_number_last4": "4958", "ifsc": null, "vpa": null,
    "rail": "fps", "verification": {"result": "match", "code": null, "name": null, "checked_at": "2026-12-02T10:00:00Z"},
    "status": "active", "version": 1, "created_at": "2026-12-02T10:00:00Z", "updated_at": "2026-12-02T10:00:00Z"
}))]
pub struct BeneficiaryBody {
    pub id: BeneficiaryId,
    /// `uk_account`, `in_account` or `in_vpa`.
    pub r#type: String,
    pub name: String,
    /// `business` or `personal`: what CoP was asked.
    pub account_type: String,
    pub sort_code: Option<String>,
    /// The account number is never shown whole.
    pub account_number_last4: Option<String>,
    pub ifsc: Option<String>,
    pub vpa: Option<String>,
    /// The rail that pays it: `fps`.
    pub rail: String,
    pub verification: VerificationBody,
    /// `active`, or `disabled` (no new payouts; those made keep it).
    pub status: String,
    pub version: i32,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

impl BeneficiaryBody {
    pub fn of(row: &BeneficiaryRow) -> BeneficiaryBody {
        let last4 = row.destination().as_ref().and_then(|destination| destination.last4().map(str::to_string));
        BeneficiaryBody {
            id: BeneficiaryId::from_uuid(row.id),
            r#type: row.r#type.clone(),
            name: row.name.clone(),
            account_type: row.account_type.clone(),
            sort_code: row.sort_code.clone(),
            account_number_last4: last4,
            ifsc: row.ifsc.clone(),
            vpa: row.vpa.clone(),
            rail: row.rail.clone(),
            verification: VerificationBody {
                result: row.verification.clone(),
                code: row.verification_code.clone(),
                name: row.verified_name.clone(),
                checked_at: row.verified_at,
            },
            status: row.status.clone(),
            version: row.version,
            created_at: row.created_at,
            updated_at: row.updated_at,
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateBeneficiaryRequest {
    #[schema(pattern = "^(uk_account|in_account|in_vpa)$")]
    pub r#type: String,
    /// The account holder's name, as their bank holds it: 1 to 140 characters.
    #[schema(min_length = 1, max_length = 140)]
    pub name: String,
    /// `business` (the default) or `personal`: what Confirmation of Payee is asked.
    #[schema(pattern = "^(business|personal)$")]
    pub account_type: Option<String>,
    /// A UK account's sort code: 6 digits.
    #[schema(pattern = "^[0-9]{6}$")]
    pub sort_code: Option<String>,
    /// A UK account number (8 digits) or an Indian one (9 to 18).
    #[schema(pattern = "^[0-9]{8,18}$")]
    pub account_number: Option<String>,
    #[schema(pattern = "^[A-Z]{4}0[A-Z0-9]{6}$")]
    pub ifsc: Option<String>,
    /// A UPI address, `name@handle`.
    #[schema(max_length = 321)]
    pub vpa: Option<String>,
}

async fn announce_beneficiary(tx: &mut Tx, row: &BeneficiaryRow, event_type: EventType) -> Result<(), ApiError> {
    let body = BeneficiaryBody::of(row);
    Ok(store::announce(tx, row.business_id, body.id.to_string(), row.version, row.updated_at, event_type, &body)
        .await?)
}

/// What a rail failure means for a CoP check: no answer, with Till's reason.
fn unanswered(error: &OutboundError) -> PayeeCheck {
    let code = match error {
        OutboundError::InvalidReply { .. } => "RAIL_REPLY_INVALID",
        OutboundError::TimedOut { .. } => "RAIL_TIMEOUT",
        _ => "RAIL_UNAVAILABLE",
    };
    PayeeCheck::Unavailable { code: code.into() }
}

/// Add a beneficiary: checked, then confirmed with the payee's bank (UK) or registered
/// and validated with RazorpayX (India).
#[utoipa::path(post, path = "/v1/beneficiaries", tag = "payouts",
    request_body = CreateBeneficiaryRequest,
    params(("Idempotency-Key" = String, Header, description = "1–255 printable ASCII characters; makes the request safe to retry.")),
    responses(
        (status = 201, body = BeneficiaryBody, description = "Stored, with what Confirmation of Payee (UK) or RazorpayX's fund-account validation (India) answered."),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
        (status = 502, body = Problem, content_type = "application/problem+json", description = "rail_reply_invalid: RazorpayX's answer to the payee's registration could not be trusted; nothing was stored."),
        (status = 503, body = Problem, content_type = "application/problem+json", description = "rail_unavailable: RazorpayX could not register the payee (an Indian beneficiary); nothing was stored, and a retry answers the same contact and fund account."),
        (status = 504, body = Problem, content_type = "application/problem+json", description = "rail_timeout: RazorpayX did not answer the registration in time; nothing was stored, and a retry answers what it made."),
    ),
    security(("bearer" = [])))]
async fn create_beneficiary(
    principal: Principal,
    State(payouts): State<Payouts>,
    mut tx: Tx,
    ApiJson(request): ApiJson<CreateBeneficiaryRequest>,
) -> Result<Response, ApiError> {
    let fields = Fields {
        kind: &request.r#type,
        name: Some(&request.name),
        sort_code: request.sort_code.as_deref(),
        account_number: request.account_number.as_deref(),
        ifsc: request.ifsc.as_deref(),
        vpa: request.vpa.as_deref(),
    };
    // A field wrong in itself (a 7-digit sort code, a failed modulus check) is a 400; a
    // field the type needs and lacks, or has and does not take, a 422 rule.
    let checked = beneficiary::parse(&fields).map_err(|refusal| {
        if refusal.between_fields {
            ApiError::rule(refusal.field, refusal.message)
        } else {
            ApiError::invalid(refusal.field, refusal.message)
        }
    })?;
    let account_type = match request.account_type.as_deref() {
        None | Some("business") => "business",
        Some("personal") => "personal",
        Some(_) => return Err(ApiError::invalid("account_type", "account_type is business or personal.")),
    };
    let rail_kind = RailKind::of(&checked.destination);
    let rail = payouts.rail(rail_kind);
    let payee = rail.confirm_payee(checked.name.as_str(), &checked.destination, account_type == "business").await;
    let (check, rail_account) = match payee {
        Ok(payee) => (payee.check, payee.rail_account),
        // A rail that pays only payees it has registered cannot pay this one: the caller
        // tries again (503, nothing stored), and RazorpayX answers the same contact and
        // fund account, not new ones.
        Err(error) if rail_kind.registers_payees() => return Err(ApiError::from(error)),
        Err(error) => {
            tracing::warn!(%error, "Confirmation of Payee had no answer");
            (unanswered(&error), None)
        }
    };
    if rail_kind.registers_payees() && rail_account.is_none() {
        return Err(internal("the rail registered no payee"));
    }
    let verified_name = match &check {
        PayeeCheck::CloseMatch { name, .. } => name.as_deref(),
        _ => None,
    };
    let row = store::insert_beneficiary(
        &mut tx,
        &store::NewBeneficiaryRow {
            id: BeneficiaryId::generate().as_uuid(),
            business: principal.business_id,
            name: checked.name.as_str(),
            account_type,
            destination: &checked.destination,
            rail: rail_kind.as_str(),
            verification: check.result(),
            verification_code: check.code(),
            verified_name,
            rail_account: rail_account.as_deref(),
        },
    )
    .await?;
    announce_beneficiary(&mut tx, &row, EventType::BeneficiaryCreated).await?;
    Ok((StatusCode::CREATED, axum::Json(BeneficiaryBody::of(&row))).into_response())
}

/// Retrieve a beneficiary.
#[utoipa::path(get, path = "/v1/beneficiaries/{id}", tag = "payouts", params(("id" = BeneficiaryId, Path)),
    responses((status = 200, body = BeneficiaryBody), (status = 404, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
async fn get_beneficiary(
    _principal: Principal,
    mut tx: Tx,
    ApiPath(id): ApiPath<BeneficiaryId>,
) -> Result<axum::Json<BeneficiaryBody>, ApiError> {
    let row =
        store::find_beneficiary(&mut tx, id.as_uuid()).await?.ok_or_else(|| ApiError::not_found("beneficiary"))?;
    Ok(axum::Json(BeneficiaryBody::of(&row)))
}

/// Disable a beneficiary: no new payouts to it; those made keep it.
#[utoipa::path(delete, path = "/v1/beneficiaries/{id}", tag = "payouts", params(("id" = BeneficiaryId, Path)),
    responses((status = 200, body = BeneficiaryBody), (status = 404, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
async fn disable_beneficiary(
    _principal: Principal,
    mut tx: Tx,
    ApiPath(id): ApiPath<BeneficiaryId>,
) -> Result<axum::Json<BeneficiaryBody>, ApiError> {
    let existing =
        store::find_beneficiary(&mut tx, id.as_uuid()).await?.ok_or_else(|| ApiError::not_found("beneficiary"))?;
    // Disabling twice answers the disabled beneficiary, as a DELETE may be repeated.
    let Some(row) = store::disable_beneficiary(&mut tx, id.as_uuid()).await? else {
        return Ok(axum::Json(BeneficiaryBody::of(&existing)));
    };
    announce_beneficiary(&mut tx, &row, EventType::BeneficiaryDisabled).await?;
    Ok(axum::Json(BeneficiaryBody::of(&row)))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct BeneficiaryListParams {
    /// Page size, 1 to 100 (default 20).
    pub limit: Option<u32>,
    /// The id of the last beneficiary of the previous page.
    pub starting_after: Option<String>,
}

/// List beneficiaries, newest first.
#[utoipa::path(get, path = "/v1/beneficiaries", tag = "payouts", params(BeneficiaryListParams),
    responses((status = 200, body = Page<BeneficiaryBody>), (status = 400, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
async fn list_beneficiaries(
    principal: Principal,
    mut tx: Tx,
    ApiQuery(params): ApiQuery<BeneficiaryListParams>,
) -> Result<axum::Json<Page<BeneficiaryBody>>, ApiError> {
    let page = ListParams { limit: params.limit, starting_after: params.starting_after }
        .page(|text| BeneficiaryId::parse(text).ok())?;
    let rows = store::list_beneficiaries(
        &mut tx,
        principal.business_id,
        page.starting_after.map(|id| id.as_uuid()),
        page.fetch_limit(),
    )
    .await?;
    let bodies: Vec<BeneficiaryBody> = rows.iter().map(BeneficiaryBody::of).collect();
    Ok(axum::Json(Page::from_rows(bodies, page.limit, |body| body.id.to_string())))
}

/// Money paid out of the business's available balance to a beneficiary.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(example = json!({
    "id": "po_01936f0e6c2a7cc2b0a6a4e5f3d2c1b0", "beneficiary_id": "ben_01936f0e6c2a7cc2b0a6a4e5f3d2c1b1",
    "amount": 2500, "currency": "GBP", "reference": "INV-2026-001", "description": null,
    "status": "paid", "status_detail": null, "failure_reason": null, "rail": "fps", "rail_payout_id": "P0000ABCD",
    "accepted_cop_result": null, "version": 2, "created_at": "2026-12-02T10:00:00Z",
    "updated_at": "2026-12-02T10:00:01Z", "paid_at": "2026-12-02T10:00:01Z"
}))]
pub struct PayoutBody {
    pub id: PayoutId,
    pub beneficiary_id: BeneficiaryId,
    /// In minor units of `currency`.
    pub amount: i64,
    pub currency: Currency,
    /// What the beneficiary's statement shows.
    pub reference: String,
    pub description: Option<String>,
    /// `requires_approval`, `scheduled`, `processing`, `paid`, `failed`, `canceled` or
    /// `returned` (paid, then sent back by the beneficiary's bank).
    pub status: String,
    /// While `processing`: where it stands (`queued_for_rail`, `rail_outcome_unknown`,
    /// or the rail's own transient status, such as `validated`).
    pub status_detail: Option<String>,
    /// For `failed` and `returned`: why.
    pub failure_reason: Option<String>,
    pub rail: String,
    /// The rail's id, once it accepted the payout.
    pub rail_payout_id: Option<String>,
    /// The CoP result the caller accepted, for a beneficiary that is not a match.
    pub accepted_cop_result: Option<String>,
    pub version: i32,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub paid_at: Option<OffsetDateTime>,
}

impl PayoutBody {
    pub fn of(row: &PayoutRow) -> Result<PayoutBody, ApiError> {
        Ok(PayoutBody {
            id: PayoutId::from_uuid(row.id),
            beneficiary_id: BeneficiaryId::from_uuid(row.beneficiary_id),
            amount: row.amount,
            currency: Currency::parse(&row.currency).map_err(internal)?,
            reference: row.reference.clone(),
            description: row.description.clone(),
            status: row.status.clone(),
            status_detail: row.status_detail.clone(),
            failure_reason: row.failure_reason.clone(),
            rail: row.rail.clone(),
            rail_payout_id: row.rail_payout_id.clone(),
            accepted_cop_result: row.accepted_verification.clone(),
            version: row.version,
            created_at: row.created_at,
            updated_at: row.updated_at,
            paid_at: row.paid_at,
        })
    }
}

pub async fn announce_payout(
    connection: &mut sqlx::PgConnection,
    row: &PayoutRow,
    event_type: EventType,
) -> Result<(), ApiError> {
    let body = PayoutBody::of(row)?;
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

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreatePayoutRequest {
    #[schema(value_type = BeneficiaryId)]
    pub beneficiary_id: String,
    /// In minor units of `currency`: at least 1, at most the rail's limit.
    #[schema(minimum = 1, maximum = 100_000_000_000_i64)]
    pub amount: i64,
    pub currency: Currency,
    /// What the beneficiary's statement shows: 6 to 18 letters, digits, spaces or
    /// `- . & /`, not all the same character (Faster Payments).
    #[schema(min_length = 6, max_length = 18, pattern = "^[A-Za-z0-9 .&/-]{6,18}$")]
    pub reference: String,
    #[schema(max_length = 500)]
    pub description: Option<String>,
    /// Pay a beneficiary whose Confirmation of Payee result is not a match.
    pub accept_cop_result: Option<bool>,
}

/// The Faster Payments reference rules (Modulr's, which follow the scheme's field): the
/// schema's pattern (a 400), and not all one character, which no pattern here states
/// (a 422 rule).
fn check_reference(reference: &str) -> Result<(), ApiError> {
    let chars: Vec<char> = reference.chars().collect();
    let allowed = chars.iter().all(|c| c.is_ascii_alphanumeric() || matches!(c, ' ' | '.' | '&' | '/' | '-'));
    if !(6..=18).contains(&chars.len()) || !allowed {
        return Err(ApiError::invalid("reference", "reference is 6 to 18 letters, digits, spaces or - . & /."));
    }
    if chars.iter().all(|c| *c == chars[0]) {
        return Err(ApiError::rule("reference", "reference must not be one character repeated."));
    }
    Ok(())
}

/// The most one payment to `destination` may carry, in minor units of its currency.
pub fn rail_limit(destination: &Destination) -> (Currency, i64) {
    match destination {
        // Faster Payments: £1,000,000 since 8 Feb 2022 (providers.md §2.1).
        Destination::UkAccount { .. } => (Currency::GBP, 100_000_000),
        // IMPS: ₹5 lakh per transaction since RBI's 8 Oct 2021 statement (§3.1).
        Destination::InAccount { .. } => (Currency::INR, 50_000_000),
        // UPI to a person: ₹1 lakh (§3.1; the higher P2M limits are for merchants).
        Destination::InVpa { .. } => (Currency::INR, 10_000_000),
    }
}

/// The least one payment to `destination` may carry: RazorpayX pays at least ₹1 (100
/// paise; providers.md §3.2, its payout entity); Faster Payments carries a penny.
pub fn rail_minimum(destination: &Destination) -> i64 {
    match destination {
        Destination::UkAccount { .. } => 1,
        Destination::InAccount { .. } | Destination::InVpa { .. } => 100,
    }
}

/// The most any rail of `currency` carries in one payment: what a policy's per-payout
/// limit may reach (a payout to a UPI VPA meets UPI's lower limit on its own).
fn currency_rail_limit(currency: Currency) -> Option<i64> {
    match currency.code() {
        "GBP" => Some(100_000_000),
        "INR" => Some(50_000_000),
        _ => None,
    }
}

/// Pay a beneficiary out of the available balance.
#[utoipa::path(post, path = "/v1/payouts", tag = "payouts",
    request_body = CreatePayoutRequest,
    params(("Idempotency-Key" = String, Header, description = "1–255 printable ASCII characters; makes the request safe to retry.")),
    responses(
        (status = 201, body = PayoutBody, description = "Accepted: the amount is held, and the payout is `processing` (queued for the rail)."),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json", description = "insufficient_funds, payout_limit_exceeded, cop_result_not_accepted, or a rule of two fields."),
    ),
    security(("bearer" = [])))]
async fn create_payout(
    principal: Principal,
    State(payouts): State<Payouts>,
    mut tx: Tx,
    ApiJson(request): ApiJson<CreatePayoutRequest>,
) -> Result<Response, ApiError> {
    let beneficiary_id = BeneficiaryId::parse(&request.beneficiary_id)
        .map_err(|_| ApiError::invalid("beneficiary_id", "beneficiary_id is a ben_ id."))?;
    if request.amount < 1 {
        return Err(ApiError::invalid("amount", "amount is at least 1 minor unit."));
    }
    check_reference(&request.reference)?;
    let description = request
        .description
        .as_deref()
        .map(|text| HumanText::parse(text, 500))
        .transpose()
        .map_err(|error| ApiError::invalid("description", format!("description {error}.")))?;
    let beneficiary = store::find_beneficiary(&mut tx, beneficiary_id.as_uuid())
        .await?
        .ok_or_else(|| ApiError::not_found("beneficiary").with_param("beneficiary_id"))?;
    if beneficiary.status != "active" {
        return Err(
            ApiError::new(ErrorCode::StateConflict, "The beneficiary is disabled.").with_param("beneficiary_id")
        );
    }
    let destination: Destination =
        beneficiary.destination().ok_or_else(|| internal("a beneficiary without a destination"))?;
    let rail = RailKind::of(&destination);
    let (currency, limit) = rail_limit(&destination);
    if request.currency != currency {
        return Err(ApiError::rule(
            "currency",
            format!("{} pays in {}; the beneficiary is paid through it.", rail.title(), currency.code()),
        ));
    }
    let minimum = rail_minimum(&destination);
    if request.amount < minimum {
        // Refused here, before anything is held: the rail would refuse it after.
        return Err(ApiError::rule(
            "amount",
            format!("{} pays at least {} per payout.", rail.title(), Money::from_minor(minimum, currency)),
        ));
    }
    let accepted = match beneficiary.verification.as_str() {
        "match" => None,
        result if request.accept_cop_result == Some(true) => Some(result.to_string()),
        result => {
            return Err(ApiError::new(
                ErrorCode::CopResultNotAccepted,
                format!(
                    "The payee's bank answered {result} for this name{}; pay it only with accept_cop_result: true.",
                    beneficiary.verification_code.as_deref().map(|code| format!(" ({code})")).unwrap_or_default()
                ),
            )
            .with_param("accept_cop_result"));
        }
    };
    let id = PayoutId::generate();
    let hold = TransferId::generate();
    let amount = Money::from_minor(request.amount, currency);
    let request_id = till_http::request_id::current();
    // The policy, under the available balance's lock: payouts of one business and
    // currency decide one at a time, so two cannot both fit under a velocity limit that
    // only one fits under.
    let policy = load_policy(&mut tx, principal.business_id).await?;
    let locked = crate::ledger::lock_balance(&mut tx, principal.business_id, currency, request_id.as_deref()).await?;
    let spent = store::spent(&mut tx, principal.business_id, currency.code()).await?;
    let now = OffsetDateTime::now_utc();
    let decision =
        policy::decide(&policy, amount, Money::from_minor(limit, currency), spent, beneficiary.created_at, now);
    let (status, detail, next_step_at) = match &decision {
        policy::Decision::Send => ("processing", Some("queued_for_rail"), Some(now)),
        policy::Decision::RequiresApproval => ("requires_approval", None, None),
        policy::Decision::Scheduled { until } => ("scheduled", Some("cooling_off"), Some(*until)),
        policy::Decision::Refused { rule, detail } => {
            return Err(
                ApiError::new(ErrorCode::PayoutLimitExceeded, format!("{detail} (rule: {rule})")).with_param("amount")
            );
        }
    };
    // The row first, then its hold, in one transaction: a refused hold answers 422 and
    // the unit of work rolls the row back with it.
    let row = store::insert_payout(
        &mut tx,
        &store::NewPayoutRow {
            id: id.as_uuid(),
            business: principal.business_id,
            beneficiary: beneficiary.id,
            amount: amount.minor(),
            currency: currency.code(),
            reference: &request.reference,
            description: description.as_ref().map(HumanText::as_str),
            rail: rail.as_str(),
            hold: hold.as_uuid(),
            accepted_verification: accepted.as_deref(),
            created_by: &principal.actor(),
            status,
            status_detail: detail,
            next_step_at,
            policy_decision: decision.name(),
        },
    )
    .await?;
    let held = crate::ledger::hold(
        &mut tx,
        principal.business_id,
        locked,
        &id.to_string(),
        hold,
        amount,
        rail,
        request_id.as_deref(),
    )
    .await?;
    if let Err(short) = held {
        return Err(ApiError::new(
            ErrorCode::InsufficientFunds,
            format!("The available balance is {}.", Money::from_minor(short.available, currency)),
        )
        .with_param("amount"));
    }
    store::count_velocity(&mut tx, row.business_id, &row.currency, row.created_at, row.amount).await?;
    // The policy's decision, in the audit log with the payout.
    let details = serde_json::json!({ "payout": id.to_string(), "decision": decision.name(),
                                      "amount": amount.minor(), "currency": currency.code() });
    till_access::audit::record(&mut tx, principal.business_id, "payout.policy", &principal.actor(), details).await?;
    announce_payout(&mut tx, &row, EventType::PayoutCreated).await?;
    // The saga may look before this commits; it looks again on its next tick.
    payouts.wake.notify_one();
    Ok((StatusCode::CREATED, axum::Json(PayoutBody::of(&row)?)).into_response())
}

/// Retrieve a payout.
#[utoipa::path(get, path = "/v1/payouts/{id}", tag = "payouts", params(("id" = PayoutId, Path)),
    responses((status = 200, body = PayoutBody), (status = 404, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
async fn get_payout(
    _principal: Principal,
    mut tx: Tx,
    ApiPath(id): ApiPath<PayoutId>,
) -> Result<axum::Json<PayoutBody>, ApiError> {
    let row = store::find_payout(&mut tx, id.as_uuid()).await?.ok_or_else(|| ApiError::not_found("payout"))?;
    Ok(axum::Json(PayoutBody::of(&row)?))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PayoutListParams {
    /// Page size, 1 to 100 (default 20).
    pub limit: Option<u32>,
    /// The id of the last payout of the previous page.
    pub starting_after: Option<String>,
    /// Only payouts in this status.
    #[param(pattern = "^(requires_approval|scheduled|processing|paid|failed|canceled|returned)$")]
    pub status: Option<String>,
    /// Only payouts to this beneficiary.
    #[param(value_type = Option<BeneficiaryId>)]
    pub beneficiary_id: Option<String>,
}

pub const STATUSES: [&str; 7] =
    ["requires_approval", "scheduled", "processing", "paid", "failed", "canceled", "returned"];

/// List payouts, newest first.
#[utoipa::path(get, path = "/v1/payouts", tag = "payouts", params(PayoutListParams),
    responses((status = 200, body = Page<PayoutBody>), (status = 400, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
async fn list_payouts(
    principal: Principal,
    mut tx: Tx,
    ApiQuery(params): ApiQuery<PayoutListParams>,
) -> Result<axum::Json<Page<PayoutBody>>, ApiError> {
    let page = ListParams { limit: params.limit, starting_after: params.starting_after }
        .page(|text| PayoutId::parse(text).ok())?;
    let status = params.status.as_deref();
    if status.is_some_and(|status| !STATUSES.contains(&status)) {
        return Err(ApiError::invalid("status", "status is one of the payout statuses."));
    }
    let beneficiary = params
        .beneficiary_id
        .as_deref()
        .map(|text| {
            BeneficiaryId::parse(text).map_err(|_| ApiError::invalid("beneficiary_id", "beneficiary_id is a ben_ id."))
        })
        .transpose()?;
    let rows = store::list_payouts(
        &mut tx,
        principal.business_id,
        status,
        beneficiary.map(|id| id.as_uuid()),
        page.starting_after.map(|id| id.as_uuid()),
        page.fetch_limit(),
    )
    .await?;
    let bodies = rows.iter().map(PayoutBody::of).collect::<Result<Vec<_>, _>>()?;
    Ok(axum::Json(Page::from_rows(bodies, page.limit, |payout| payout.id.to_string())))
}

/// The business's policy: its saved limits over the defaults.
pub async fn load_policy(
    connection: &mut sqlx::PgConnection,
    business: till_kit::BusinessId,
) -> Result<policy::Policy, ApiError> {
    let Some(row) = store::find_policy(connection, business).await? else {
        return Ok(policy::Policy::with(&std::collections::BTreeMap::new(), 0));
    };
    let overrides: std::collections::BTreeMap<String, policy::Limits> =
        serde_json::from_value(row.limits).map_err(internal)?;
    Ok(policy::Policy::with(&overrides, i64::from(row.cooling_off_seconds)))
}

/// One currency's payout limits, in its minor units.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LimitsBody {
    /// The most one payout may be (at most the rail's limit).
    #[schema(minimum = 1)]
    pub per_payout_max: i64,
    /// The most paid out in a day (UTC), counting every payout not failed or canceled.
    #[schema(minimum = 1)]
    pub daily_max: i64,
    /// The most paid out in a calendar month (UTC).
    #[schema(minimum = 1)]
    pub monthly_max: i64,
    /// Payouts above this need approval by a second person (an admin or owner).
    #[schema(minimum = 0)]
    pub approval_threshold: i64,
}

/// The business's payout policy.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(example = json!({
    "limits": {"GBP": {"per_payout_max": 100000000, "daily_max": 100000000, "monthly_max": 1000000000, "approval_threshold": 1000000},
               "INR": {"per_payout_max": 50000000, "daily_max": 200000000, "monthly_max": 2000000000, "approval_threshold": 10000000}},
    "new_beneficiary_cooling_off_seconds": 0, "version": 0
}))]
pub struct PolicyBody {
    /// Per currency (`GBP`, `INR`).
    pub limits: std::collections::BTreeMap<String, LimitsBody>,
    /// How long after a beneficiary is added its payouts wait (`scheduled`).
    pub new_beneficiary_cooling_off_seconds: i64,
    /// 0 while the business has only the defaults.
    pub version: i32,
}

fn policy_body(policy: &policy::Policy, version: i32) -> PolicyBody {
    let limits = policy
        .limits
        .iter()
        .map(|(code, limits)| {
            (
                (*code).to_string(),
                LimitsBody {
                    per_payout_max: limits.per_payout_max,
                    daily_max: limits.daily_max,
                    monthly_max: limits.monthly_max,
                    approval_threshold: limits.approval_threshold,
                },
            )
        })
        .collect();
    PolicyBody { limits, new_beneficiary_cooling_off_seconds: policy.cooling_off_seconds, version }
}

/// Retrieve the payout policy.
#[utoipa::path(get, path = "/v1/payout_policy", tag = "payouts",
    responses((status = 200, body = PolicyBody)),
    security(("bearer" = [])))]
async fn get_policy(principal: Principal, mut tx: Tx) -> Result<axum::Json<PolicyBody>, ApiError> {
    let policy = load_policy(&mut tx, principal.business_id).await?;
    let version = store::find_policy(&mut tx, principal.business_id).await?.map_or(0, |row| row.version);
    Ok(axum::Json(policy_body(&policy, version)))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutPolicyRequest {
    /// Per currency; a currency left out keeps its defaults.
    pub limits: Option<std::collections::BTreeMap<String, LimitsBody>>,
    #[schema(minimum = 0, maximum = 2592000)]
    pub new_beneficiary_cooling_off_seconds: Option<i64>,
}

/// Set the payout policy (admins and owners).
#[utoipa::path(put, path = "/v1/payout_policy", tag = "payouts",
    request_body = PutPolicyRequest,
    responses(
        (status = 200, body = PolicyBody),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json", description = "A currency Till pays out in no rail, or a per-payout limit above the rail's."),
    ),
    security(("bearer" = [])))]
async fn put_policy(
    principal: Principal,
    mut tx: Tx,
    ApiJson(request): ApiJson<PutPolicyRequest>,
) -> Result<axum::Json<PolicyBody>, ApiError> {
    let mut overrides = std::collections::BTreeMap::new();
    for (code, limits) in request.limits.unwrap_or_default() {
        // Named by the key as sent, but only its letters (a key is the caller's text).
        let shown: String = code.chars().filter(char::is_ascii_alphanumeric).take(8).collect();
        let param = if shown.is_empty() { String::from("limits") } else { format!("limits.{shown}") };
        let currency = Currency::parse(&code)
            .ok()
            .filter(|currency| policy::defaults(*currency).is_some())
            .ok_or_else(|| ApiError::rule(param.clone(), "Payout limits are for GBP or INR."))?;
        let rail = currency_rail_limit(currency);
        let positive = [limits.per_payout_max, limits.daily_max, limits.monthly_max].iter().all(|amount| *amount >= 1);
        if !positive || limits.approval_threshold < 0 {
            return Err(ApiError::invalid(param, "Limits are at least 1 (approval_threshold at least 0)."));
        }
        if rail.is_some_and(|rail| limits.per_payout_max > rail) {
            return Err(ApiError::rule(
                format!("{param}.per_payout_max"),
                "per_payout_max is at most the rail's limit per payment.",
            ));
        }
        overrides.insert(
            currency.code().to_string(),
            policy::Limits {
                per_payout_max: limits.per_payout_max,
                daily_max: limits.daily_max,
                monthly_max: limits.monthly_max,
                approval_threshold: limits.approval_threshold,
            },
        );
    }
    let current = load_policy(&mut tx, principal.business_id).await?;
    let cooling = request.new_beneficiary_cooling_off_seconds.unwrap_or(current.cooling_off_seconds);
    if !(0..=policy::COOLING_OFF_SECONDS_MAX).contains(&cooling) {
        return Err(ApiError::invalid(
            "new_beneficiary_cooling_off_seconds",
            "new_beneficiary_cooling_off_seconds is 0 to 2592000 (30 days).",
        ));
    }
    let limits = serde_json::to_value(&overrides).map_err(internal)?;
    let row =
        store::save_policy(&mut tx, principal.business_id, &limits, i32::try_from(cooling).map_err(internal)?).await?;
    let details = serde_json::json!({ "limits": limits, "new_beneficiary_cooling_off_seconds": cooling });
    till_access::audit::record(&mut tx, principal.business_id, "payout_policy.updated", &principal.actor(), details)
        .await?;
    Ok(axum::Json(policy_body(&policy::Policy::with(&overrides, cooling), row.version)))
}

/// The body of an approval or a cancellation: none, or `{}`.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PayoutActionRequest {}

/// Approve a payout that needs it: an admin or owner other than its creator.
#[utoipa::path(post, path = "/v1/payouts/{id}/approve", tag = "payouts", params(("id" = PayoutId, Path),
        ("Idempotency-Key" = String, Header, description = "1–255 printable ASCII characters; makes the request safe to retry.")),
    responses(
        (status = 200, body = PayoutBody, description = "Approved: `processing` (queued for the rail), or `scheduled` while its beneficiary's cooling-off runs."),
        (status = 403, body = Problem, content_type = "application/problem+json", description = "The payout's creator cannot approve it."),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
async fn approve_payout(
    principal: Principal,
    State(payouts): State<Payouts>,
    mut tx: Tx,
    ApiPath(id): ApiPath<PayoutId>,
    ApiJsonOrEmpty(_request): ApiJsonOrEmpty<PayoutActionRequest>,
) -> Result<axum::Json<PayoutBody>, ApiError> {
    let row = store::lock_payout(&mut tx, id.as_uuid()).await?.ok_or_else(|| ApiError::not_found("payout"))?;
    if row.status != "requires_approval" {
        return Err(ApiError::new(
            ErrorCode::StateConflict,
            format!("The payout is {}; only one that requires approval can be approved.", row.status),
        ));
    }
    let approver = principal.actor();
    if approver == row.created_by {
        return Err(ApiError::new(ErrorCode::Forbidden, "A payout is approved by someone other than its creator."));
    }
    let beneficiary = store::find_beneficiary(&mut tx, row.beneficiary_id)
        .await?
        .ok_or_else(|| internal("a payout without its beneficiary"))?;
    let policy = load_policy(&mut tx, principal.business_id).await?;
    let (status, detail, next) = match policy::cooling(&policy, beneficiary.created_at, OffsetDateTime::now_utc()) {
        policy::Decision::Scheduled { until } => ("scheduled", Some("cooling_off"), Some(until)),
        _ => ("processing", Some("queued_for_rail"), Some(OffsetDateTime::now_utc())),
    };
    let approved = store::transition(&mut tx, row.id, status, detail, next, Some(&approver)).await?;
    let details = serde_json::json!({ "payout": id.to_string(), "created_by": row.created_by, "now": status });
    till_access::audit::record(&mut tx, principal.business_id, "payout.approved", &approver, details).await?;
    announce_payout(&mut tx, &approved, EventType::PayoutApproved).await?;
    payouts.wake.notify_one();
    Ok(axum::Json(PayoutBody::of(&approved)?))
}

/// Cancel a payout the rail does not have yet.
#[utoipa::path(post, path = "/v1/payouts/{id}/cancel", tag = "payouts", params(("id" = PayoutId, Path),
        ("Idempotency-Key" = String, Header, description = "1–255 printable ASCII characters; makes the request safe to retry.")),
    responses(
        (status = 200, body = PayoutBody, description = "Canceled: its hold is voided and the amount available again."),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json", description = "The rail has it (or may have it): it can no longer be canceled."),
    ),
    security(("bearer" = [])))]
async fn cancel_payout(
    principal: Principal,
    mut tx: Tx,
    ApiPath(id): ApiPath<PayoutId>,
    ApiJsonOrEmpty(_request): ApiJsonOrEmpty<PayoutActionRequest>,
) -> Result<axum::Json<PayoutBody>, ApiError> {
    // The row lock keeps the saga from leasing it while this decides (it skips locked
    // rows); a lease already taken, or any attempt made, means the rail may have it.
    let row = store::lock_payout(&mut tx, id.as_uuid()).await?.ok_or_else(|| ApiError::not_found("payout"))?;
    let now = OffsetDateTime::now_utc();
    let leased = row.lease_until.is_some_and(|until| until > now);
    let before_rail = match row.status.as_str() {
        "requires_approval" | "scheduled" => !leased,
        "processing" => row.rail_payout_id.is_none() && row.attempts == 0 && !leased,
        _ => false,
    };
    if !before_rail {
        return Err(ApiError::new(
            ErrorCode::StateConflict,
            format!("The payout is {} and the rail has it (or may have it); it can no longer be canceled.", row.status),
        ));
    }
    let currency = Currency::parse(&row.currency).map_err(internal)?;
    let request_id = till_http::request_id::current();
    crate::ledger::end(
        &mut tx,
        principal.business_id,
        &id.to_string(),
        TransferId::from_uuid(row.hold_id),
        currency,
        crate::ledger::Ending::Void,
        request_id.as_deref(),
    )
    .await?;
    let canceled = store::transition(&mut tx, row.id, "canceled", None, None, None).await?;
    let uncounted = row.amount.checked_neg().ok_or_else(|| internal("an amount of i64::MIN"))?;
    store::count_velocity(&mut tx, row.business_id, &row.currency, row.created_at, uncounted).await?;
    announce_payout(&mut tx, &canceled, EventType::PayoutCanceled).await?;
    Ok(axum::Json(PayoutBody::of(&canceled)?))
}
