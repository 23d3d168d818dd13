//! Stripe, as far as Till's gateway adapter uses it: PaymentIntents (create, confirm,
//! capture with `amount_to_capture`, cancel, retrieve), refunds, and the charge and
//! balance transaction that carry the fee. Form-encoded requests, `Authorization:
//! Bearer sk_test_…` (or Basic with the key as the user, as curl's `-u` sends it),
//! `Idempotency-Key`, Stripe's error object, and its test payment methods.
//!
//! Behaviour follows Stripe's documentation (../shared/research/providers.md §1.1):
//! - a confirm with `pm_card_visa` authorises: `requires_capture` for
//!   `capture_method=manual`, `succeeded` (captured) for `automatic`;
//!   `pm_card_visa_chargeDeclined` and `pm_card_chargeDeclinedInsufficientFunds` decline
//!   with a 402 `card_error` and return the intent to `requires_payment_method` with
//!   `last_payment_error`;
//! - one capture, up to `amount_capturable`; the rest is released;
//! - cancel from any status before `processing`/`succeeded`;
//! - refunds, partial and several, never more in total than was captured.
//! - Idempotency: the first result for a key (per API key) is saved, successes and 4xx
//!   alike, and replayed with `Idempotent-Replayed: true`; the same key with other
//!   parameters is a 400 `idempotency_error`. A fault's 500 or 429 models a failure in
//!   front of the API (nothing executed), so it is not saved: a retry executes.
//!
//! Fees are UK standard pricing (1.5 % + 20p; EUR 1.5 % + 25c; USD 2.9 % + 30c), half up
//! to the minor unit, on the captured amount.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use serde_json::{json, Value};
use time::OffsetDateTime;

use crate::calls::Call;
use crate::faults::{FaultKind, TIMEOUT_DEFAULT_MS};
use crate::form::Form;
use crate::{Provider, Sim};

const NAME: &str = "stripe";
/// Stripe's largest amount: eight digits of minor units.
const AMOUNT_MAX: i64 = 99_999_999;
const CURRENCIES: [&str; 4] = ["gbp", "eur", "usd", "inr"];

#[derive(Default)]
pub struct Stripe {
    state: Arc<Mutex<Objects>>,
}

impl Provider for Stripe {
    fn name(&self) -> &'static str {
        NAME
    }

    fn routes(&self, sim: Sim) -> Router {
        let context = Context { sim, objects: self.state.clone() };
        Router::new()
            .route("/v1/payment_intents", post(create_intent))
            .route("/v1/payment_intents/{id}", get(retrieve_intent))
            .route("/v1/payment_intents/{id}/confirm", post(confirm_intent))
            .route("/v1/payment_intents/{id}/capture", post(capture_intent))
            .route("/v1/payment_intents/{id}/cancel", post(cancel_intent))
            .route("/v1/refunds", post(create_refund))
            .route("/v1/refunds/{id}", get(retrieve_refund))
            .route("/v1/charges/{id}", get(retrieve_charge))
            .route("/v1/balance_transactions/{id}", get(retrieve_balance_transaction))
            .with_state(context)
    }

    fn object(&self, id: &str) -> Option<Value> {
        let objects = lock(&self.state);
        objects.find(id)
    }
}

#[derive(Clone)]
struct Context {
    sim: Sim,
    objects: Arc<Mutex<Objects>>,
}

#[derive(Default)]
struct Objects {
    intents: HashMap<String, Intent>,
    refunds: HashMap<String, Refund>,
    charges: HashMap<String, Charge>,
    balance_transactions: HashMap<String, BalanceTransaction>,
    /// Saved results by (API key, Idempotency-Key).
    idempotency: HashMap<(String, String), Saved>,
}

impl Objects {
    fn find(&self, id: &str) -> Option<Value> {
        if let Some(intent) = self.intents.get(id) {
            return Some(intent.json());
        }
        if let Some(refund) = self.refunds.get(id) {
            return Some(refund.json());
        }
        if let Some(charge) = self.charges.get(id) {
            return Some(charge.json());
        }
        self.balance_transactions.get(id).map(BalanceTransaction::json)
    }
}

struct Saved {
    /// The operation, the path and the body: the same key with anything else is refused.
    request: String,
    status: StatusCode,
    body: Value,
}

#[derive(Clone)]
struct Intent {
    id: String,
    amount: i64,
    currency: String,
    capture_method: String,
    status: &'static str,
    payment_method: Option<String>,
    amount_capturable: i64,
    amount_received: i64,
    latest_charge: Option<String>,
    last_payment_error: Option<Value>,
    cancellation_reason: Option<String>,
    canceled_at: Option<i64>,
    description: Option<String>,
    metadata: BTreeMap<String, String>,
    created: i64,
}

impl Intent {
    fn json(&self) -> Value {
        json!({
            "id": self.id,
            "object": "payment_intent",
            "amount": self.amount,
            "amount_capturable": self.amount_capturable,
            "amount_received": self.amount_received,
            "currency": self.currency,
            "capture_method": self.capture_method,
            "confirmation_method": "automatic",
            "status": self.status,
            "payment_method": self.payment_method,
            "latest_charge": self.latest_charge,
            "last_payment_error": self.last_payment_error,
            "cancellation_reason": self.cancellation_reason,
            "canceled_at": self.canceled_at,
            "client_secret": format!("{}_secret_sim", self.id),
            "created": self.created,
            "description": self.description,
            "metadata": self.metadata,
            "livemode": false,
        })
    }
}

#[derive(Clone)]
struct Charge {
    id: String,
    payment_intent: String,
    amount: i64,
    currency: String,
    amount_captured: i64,
    amount_refunded: i64,
    balance_transaction: Option<String>,
    created: i64,
}

impl Charge {
    fn json(&self) -> Value {
        json!({
            "id": self.id,
            "object": "charge",
            "amount": self.amount,
            "amount_captured": self.amount_captured,
            "amount_refunded": self.amount_refunded,
            "captured": self.amount_captured > 0,
            "refunded": self.amount_captured > 0 && self.amount_refunded == self.amount_captured,
            "paid": true,
            "status": "succeeded",
            "currency": self.currency,
            "payment_intent": self.payment_intent,
            "balance_transaction": self.balance_transaction,
            "created": self.created,
            "livemode": false,
        })
    }
}

#[derive(Clone)]
struct BalanceTransaction {
    id: String,
    amount: i64,
    fee: i64,
    currency: String,
    kind: &'static str,
    source: String,
    created: i64,
}

impl BalanceTransaction {
    fn json(&self) -> Value {
        json!({
            "id": self.id,
            "object": "balance_transaction",
            "amount": self.amount,
            "fee": self.fee,
            "net": self.amount - self.fee,
            "currency": self.currency,
            "type": self.kind,
            "source": self.source,
            "status": "pending",
            "fee_details": if self.fee > 0 {
                json!([{ "amount": self.fee, "currency": self.currency, "type": "stripe_fee", "description": "Stripe processing fees" }])
            } else {
                json!([])
            },
            "created": self.created,
        })
    }
}

#[derive(Clone)]
struct Refund {
    id: String,
    amount: i64,
    currency: String,
    payment_intent: String,
    charge: String,
    reason: Option<String>,
    balance_transaction: String,
    created: i64,
}

impl Refund {
    fn json(&self) -> Value {
        json!({
            "id": self.id,
            "object": "refund",
            "amount": self.amount,
            "currency": self.currency,
            "payment_intent": self.payment_intent,
            "charge": self.charge,
            "reason": self.reason,
            "status": "succeeded",
            "balance_transaction": self.balance_transaction,
            "created": self.created,
        })
    }
}

/// Stripe's error object, with its status.
struct StripeError {
    status: StatusCode,
    body: Value,
}

impl StripeError {
    fn invalid(message: impl Into<String>, param: Option<&str>, code: Option<&str>) -> StripeError {
        let mut error = json!({ "type": "invalid_request_error", "message": message.into() });
        if let Some(param) = param {
            error["param"] = json!(param);
        }
        if let Some(code) = code {
            error["code"] = json!(code);
        }
        StripeError { status: StatusCode::BAD_REQUEST, body: json!({ "error": error }) }
    }

    fn missing(kind: &str, id: &str, param: &str) -> StripeError {
        let mut error = StripeError::invalid(format!("No such {kind}: '{id}'"), Some(param), Some("resource_missing"));
        error.status = StatusCode::NOT_FOUND;
        error
    }

    fn unexpected_state(intent: &Intent, action: &str) -> StripeError {
        StripeError::invalid(
            format!("You cannot {action} this PaymentIntent because it has a status of {}.", intent.status),
            None,
            Some("payment_intent_unexpected_state"),
        )
    }

    fn response(self) -> Response {
        (self.status, Json(self.body)).into_response()
    }
}

fn lock(objects: &Mutex<Objects>) -> std::sync::MutexGuard<'_, Objects> {
    objects.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn now() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

fn new_id(prefix: &str) -> String {
    let mut bytes = [0_u8; 12];
    rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut bytes);
    format!("{prefix}_{}", hex::encode(bytes))
}

/// The test key of the request: `Bearer sk_test_…`, or Basic with it as the user.
fn api_key(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let key = if let Some(bearer) = value.strip_prefix("Bearer ") {
        bearer.trim().to_string()
    } else {
        let encoded = value.strip_prefix("Basic ")?;
        let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).ok()?;
        String::from_utf8(decoded).ok()?.split(':').next()?.to_string()
    };
    (key.starts_with("sk_test_") && key.len() > "sk_test_".len()).then_some(key)
}

fn fee(amount: i64, currency: &str) -> i64 {
    let (bps, fixed) = match currency {
        "gbp" => (150, 20),
        "eur" => (150, 25),
        "inr" => (200, 0),
        _ => (290, 30),
    };
    (amount * bps + 5_000) / 10_000 + fixed
}

/// One call: authentication, the fault armed for it, idempotency, the effect, the reply.
async fn call(
    context: Context,
    operation: &'static str,
    path: String,
    headers: HeaderMap,
    body: Bytes,
    effect: impl FnOnce(&mut Objects, &Form) -> Result<Value, StripeError>,
) -> Response {
    let idempotency_key = headers.get("idempotency-key").and_then(|value| value.to_str().ok()).map(str::to_string);
    let fault = context.sim.faults.take(NAME, operation);
    let record = |status: Option<StatusCode>, fault: Option<FaultKind>| {
        context.sim.calls.record(Call {
            provider: NAME,
            operation,
            idempotency_key: idempotency_key.clone(),
            body: String::from_utf8_lossy(&body).into_owned(),
            status: status.map(|status| status.as_u16()),
            fault: fault.map(FaultKind::name),
            at: OffsetDateTime::now_utc(),
        });
    };
    let Some(key) = api_key(&headers) else {
        let error = StripeError {
            status: StatusCode::UNAUTHORIZED,
            body: json!({ "error": { "type": "invalid_request_error", "message": "Invalid API Key provided." } }),
        };
        record(Some(error.status), None);
        return error.response();
    };
    let kind = fault.as_ref().map(|fault| fault.fault);
    let delay =
        std::time::Duration::from_millis(fault.as_ref().and_then(|fault| fault.delay_ms).unwrap_or(TIMEOUT_DEFAULT_MS));
    match kind {
        Some(FaultKind::Timeout) => {
            // Logged on arrival, so the log is in the order calls came.
            record(None, kind);
            tokio::time::sleep(delay).await;
            return StatusCode::GATEWAY_TIMEOUT.into_response();
        }
        Some(FaultKind::Error500) => {
            record(Some(StatusCode::INTERNAL_SERVER_ERROR), kind);
            let body = json!({ "error": { "type": "api_error", "message": "An unknown error occurred." } });
            return (StatusCode::INTERNAL_SERVER_ERROR, Json(body)).into_response();
        }
        Some(FaultKind::Error429) => {
            record(Some(StatusCode::TOO_MANY_REQUESTS), kind);
            let body = json!({ "error": { "type": "invalid_request_error", "code": "rate_limit",
                                          "message": "Too many requests hit the API too quickly." } });
            let mut response = (StatusCode::TOO_MANY_REQUESTS, Json(body)).into_response();
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            return response;
        }
        _ => {}
    }
    let request = format!("{operation} {path} {}", String::from_utf8_lossy(&body));
    let (status, reply, replayed) = {
        let mut objects = lock(&context.objects);
        let saved = idempotency_key
            .as_ref()
            .and_then(|idempotency| objects.idempotency.get(&(key.clone(), idempotency.clone())));
        match saved {
            Some(saved) if saved.request == request => (saved.status, saved.body.clone(), true),
            Some(_) => {
                let error = StripeError::invalid(
                    "Keys for idempotent requests can only be used with the same parameters they were first used with.",
                    None,
                    None,
                );
                let mut body = error.body;
                body["error"]["type"] = json!("idempotency_error");
                (StatusCode::BAD_REQUEST, body, true)
            }
            None => {
                let form = Form::parse(&body);
                let (status, reply) = match effect(&mut objects, &form) {
                    Ok(object) => (StatusCode::OK, object),
                    Err(error) => (error.status, error.body),
                };
                if let Some(idempotency) = &idempotency_key {
                    objects
                        .idempotency
                        .insert((key, idempotency.clone()), Saved { request, status, body: reply.clone() });
                }
                (status, reply, false)
            }
        }
    };
    let reply = match kind {
        Some(FaultKind::TimeoutAfterEffect) => {
            record(None, kind);
            tokio::time::sleep(delay).await;
            return StatusCode::GATEWAY_TIMEOUT.into_response();
        }
        Some(FaultKind::Malformed) => {
            record(Some(StatusCode::OK), kind);
            return (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], "{\"object\": \"payment_in")
                .into_response();
        }
        Some(FaultKind::WrongAmount) => lie(reply, |object| {
            if let Some(amount) = object.get("amount").and_then(Value::as_i64) {
                object["amount"] = json!(amount + 1);
            }
            for field in ["amount_received", "amount_capturable"] {
                if let Some(amount) = object.get(field).and_then(Value::as_i64).filter(|&amount| amount > 0) {
                    object[field] = json!(amount + 1);
                }
            }
        }),
        Some(FaultKind::WrongCurrency) => lie(reply, |object| {
            let other = if object.get("currency") == Some(&json!("usd")) { "eur" } else { "usd" };
            object["currency"] = json!(other);
        }),
        Some(FaultKind::UnknownStatus) => lie(reply, |object| object["status"] = json!("requires_reconsideration")),
        _ => reply,
    };
    record(Some(status), kind);
    let mut response = (status, Json(reply)).into_response();
    if replayed {
        response.headers_mut().insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    response
}

/// A reply altered by a lying fault; an error reply is left as it is.
fn lie(mut reply: Value, alter: impl FnOnce(&mut Value)) -> Value {
    if reply.get("error").is_none() {
        alter(&mut reply);
    }
    reply
}

fn parse_amount(form: &Form, param: &str) -> Result<Option<i64>, StripeError> {
    let Some(text) = form.get(param) else { return Ok(None) };
    match text.parse::<i64>() {
        Ok(amount) if (1..=AMOUNT_MAX).contains(&amount) => Ok(Some(amount)),
        Ok(_) => Err(StripeError::invalid(
            format!("This value must be between 1 and {AMOUNT_MAX}."),
            Some(param),
            Some("parameter_invalid_integer"),
        )),
        Err(_) => Err(StripeError::invalid(
            format!("Invalid integer: {text}"),
            Some(param),
            Some("parameter_invalid_integer"),
        )),
    }
}

fn refuse_unknown(form: &Form, known: &[&str]) -> Result<(), StripeError> {
    match form.unknown(known) {
        Some(field) => Err(StripeError::invalid(
            format!("Received unknown parameter: {field}"),
            Some(field),
            Some("parameter_unknown"),
        )),
        None => Ok(()),
    }
}

fn parse_bool(form: &Form, param: &str) -> Result<bool, StripeError> {
    match form.get(param) {
        None | Some("false") => Ok(false),
        Some("true") => Ok(true),
        Some(other) => Err(StripeError::invalid(format!("Invalid boolean: {other}"), Some(param), None)),
    }
}

fn create(objects: &mut Objects, form: &Form) -> Result<Value, StripeError> {
    refuse_unknown(form, &["amount", "currency", "capture_method", "payment_method", "confirm", "description"])?;
    let amount = parse_amount(form, "amount")?.ok_or_else(|| {
        StripeError::invalid("Missing required param: amount.", Some("amount"), Some("parameter_missing"))
    })?;
    let currency = form
        .get("currency")
        .ok_or_else(|| {
            StripeError::invalid("Missing required param: currency.", Some("currency"), Some("parameter_missing"))
        })?
        .to_ascii_lowercase();
    if !CURRENCIES.contains(&currency.as_str()) {
        return Err(StripeError::invalid(format!("Invalid currency: {currency}."), Some("currency"), None));
    }
    let capture_method = match form.get("capture_method").unwrap_or("automatic") {
        "automatic" | "automatic_async" => "automatic",
        "manual" => "manual",
        other => {
            return Err(StripeError::invalid(format!("Invalid capture_method: {other}"), Some("capture_method"), None))
        }
    };
    let payment_method = form.get("payment_method").map(str::to_string);
    if let Some(method) = &payment_method {
        known_payment_method(method)?;
    }
    let confirm = parse_bool(form, "confirm")?;
    let intent = Intent {
        id: new_id("pi"),
        amount,
        currency,
        capture_method: capture_method.to_string(),
        status: if payment_method.is_some() { "requires_confirmation" } else { "requires_payment_method" },
        payment_method,
        amount_capturable: 0,
        amount_received: 0,
        latest_charge: None,
        last_payment_error: None,
        cancellation_reason: None,
        canceled_at: None,
        description: form.get("description").map(str::to_string),
        metadata: form.metadata.clone(),
        created: now(),
    };
    let id = intent.id.clone();
    objects.intents.insert(id.clone(), intent);
    if confirm {
        return authorise(objects, &id, None);
    }
    Ok(objects.intents[&id].json())
}

/// How a test payment method answers an authorisation.
enum Card {
    Approves,
    Declines { decline_code: &'static str, message: &'static str },
}

fn known_payment_method(method: &str) -> Result<Card, StripeError> {
    match method {
        "pm_card_visa" | "pm_card_mastercard" => Ok(Card::Approves),
        "pm_card_visa_chargeDeclined" => {
            Ok(Card::Declines { decline_code: "generic_decline", message: "Your card was declined." })
        }
        "pm_card_chargeDeclinedInsufficientFunds" => {
            Ok(Card::Declines { decline_code: "insufficient_funds", message: "Your card has insufficient funds." })
        }
        other => Err(StripeError::missing("PaymentMethod", other, "payment_method")),
    }
}

fn authorise(objects: &mut Objects, id: &str, payment_method: Option<String>) -> Result<Value, StripeError> {
    let intent = objects.intents.get_mut(id).ok_or_else(|| StripeError::missing("payment_intent", id, "intent"))?;
    if !matches!(intent.status, "requires_payment_method" | "requires_confirmation") {
        return Err(StripeError::unexpected_state(intent, "confirm"));
    }
    if let Some(method) = payment_method {
        intent.payment_method = Some(method);
    }
    let Some(method) = intent.payment_method.clone() else {
        return Err(StripeError::invalid(
            "You cannot confirm this PaymentIntent because it's missing a payment method.",
            Some("payment_method"),
            Some("payment_intent_unexpected_state"),
        ));
    };
    match known_payment_method(&method)? {
        Card::Declines { decline_code, message } => {
            let error = json!({
                "type": "card_error", "code": "card_declined", "decline_code": decline_code,
                "message": message, "payment_method": { "id": method },
            });
            intent.status = "requires_payment_method";
            intent.last_payment_error = Some(error.clone());
            let mut body = json!({ "error": error });
            body["error"]["payment_intent"] = intent.json();
            Err(StripeError { status: StatusCode::PAYMENT_REQUIRED, body })
        }
        Card::Approves => {
            let charge = Charge {
                id: new_id("ch"),
                payment_intent: intent.id.clone(),
                amount: intent.amount,
                currency: intent.currency.clone(),
                amount_captured: 0,
                amount_refunded: 0,
                balance_transaction: None,
                created: now(),
            };
            intent.latest_charge = Some(charge.id.clone());
            intent.last_payment_error = None;
            let (automatic, amount) = (intent.capture_method == "automatic", intent.amount);
            intent.status = "requires_capture";
            intent.amount_capturable = amount;
            objects.charges.insert(charge.id.clone(), charge);
            if automatic {
                return settle_capture(objects, id, amount);
            }
            Ok(objects.intents[id].json())
        }
    }
}

/// Captures `amount` of an authorised intent: the charge is captured, the fee charged in
/// its balance transaction, and whatever was not captured released.
fn settle_capture(objects: &mut Objects, id: &str, amount: i64) -> Result<Value, StripeError> {
    let intent = objects.intents.get_mut(id).ok_or_else(|| StripeError::missing("payment_intent", id, "intent"))?;
    intent.status = "succeeded";
    intent.amount_received = amount;
    intent.amount_capturable = 0;
    let charge_id = intent.latest_charge.clone().unwrap_or_default();
    let currency = intent.currency.clone();
    let transaction = BalanceTransaction {
        id: new_id("txn"),
        amount,
        fee: fee(amount, &currency),
        currency,
        kind: "charge",
        source: charge_id.clone(),
        created: now(),
    };
    if let Some(charge) = objects.charges.get_mut(&charge_id) {
        charge.amount_captured = amount;
        charge.balance_transaction = Some(transaction.id.clone());
    }
    objects.balance_transactions.insert(transaction.id.clone(), transaction);
    Ok(objects.intents[id].json())
}

fn capture(objects: &mut Objects, id: &str, form: &Form) -> Result<Value, StripeError> {
    refuse_unknown(form, &["amount_to_capture"])?;
    let requested = parse_amount(form, "amount_to_capture")?;
    let intent = objects.intents.get(id).ok_or_else(|| StripeError::missing("payment_intent", id, "intent"))?;
    if intent.status != "requires_capture" {
        return Err(StripeError::unexpected_state(intent, "capture"));
    }
    let amount = requested.unwrap_or(intent.amount_capturable);
    if amount > intent.amount_capturable {
        return Err(StripeError::invalid(
            format!(
                "The amount_to_capture ({amount}) is greater than the amount_capturable ({}).",
                intent.amount_capturable
            ),
            Some("amount_to_capture"),
            Some("amount_too_large"),
        ));
    }
    settle_capture(objects, id, amount)
}

fn cancel(objects: &mut Objects, id: &str, form: &Form) -> Result<Value, StripeError> {
    refuse_unknown(form, &["cancellation_reason"])?;
    let reason = form.get("cancellation_reason").map(str::to_string);
    if let Some(reason) = &reason {
        if !["duplicate", "fraudulent", "requested_by_customer", "abandoned"].contains(&reason.as_str()) {
            return Err(StripeError::invalid(
                format!("Invalid cancellation_reason: {reason}"),
                Some("cancellation_reason"),
                None,
            ));
        }
    }
    let intent = objects.intents.get_mut(id).ok_or_else(|| StripeError::missing("payment_intent", id, "intent"))?;
    if !matches!(
        intent.status,
        "requires_payment_method" | "requires_confirmation" | "requires_action" | "requires_capture"
    ) {
        return Err(StripeError::unexpected_state(intent, "cancel"));
    }
    intent.status = "canceled";
    intent.amount_capturable = 0;
    intent.cancellation_reason = reason;
    intent.canceled_at = Some(now());
    Ok(intent.json())
}

fn refund(objects: &mut Objects, form: &Form) -> Result<Value, StripeError> {
    refuse_unknown(form, &["payment_intent", "amount", "reason"])?;
    let id = form.get("payment_intent").ok_or_else(|| {
        StripeError::invalid(
            "Missing required param: payment_intent.",
            Some("payment_intent"),
            Some("parameter_missing"),
        )
    })?;
    let requested = parse_amount(form, "amount")?;
    let reason = form.get("reason").map(str::to_string);
    if let Some(reason) = &reason {
        if !["duplicate", "fraudulent", "requested_by_customer"].contains(&reason.as_str()) {
            return Err(StripeError::invalid(format!("Invalid reason: {reason}"), Some("reason"), None));
        }
    }
    let intent = objects.intents.get(id).ok_or_else(|| StripeError::missing("payment_intent", id, "payment_intent"))?;
    let charge_id = intent.latest_charge.clone().unwrap_or_default();
    let charge = objects.charges.get(&charge_id).filter(|charge| charge.amount_captured > 0).ok_or_else(|| {
        StripeError::invalid(
            format!("This PaymentIntent ({id}) does not have a successful charge to refund."),
            Some("payment_intent"),
            Some("charge_not_refundable"),
        )
    })?;
    let unrefunded = charge.amount_captured - charge.amount_refunded;
    let amount = requested.unwrap_or(unrefunded);
    if amount > unrefunded || unrefunded == 0 {
        return Err(StripeError::invalid(
            format!("Refund amount ({amount}) is greater than unrefunded amount on charge ({unrefunded})"),
            Some("amount"),
            Some(if unrefunded == 0 { "charge_already_refunded" } else { "amount_too_large" }),
        ));
    }
    let transaction = BalanceTransaction {
        id: new_id("txn"),
        amount: -amount,
        fee: 0,
        currency: charge.currency.clone(),
        kind: "refund",
        source: charge_id.clone(),
        created: now(),
    };
    let refund = Refund {
        id: new_id("re"),
        amount,
        currency: charge.currency.clone(),
        payment_intent: id.to_string(),
        charge: charge_id.clone(),
        reason,
        balance_transaction: transaction.id.clone(),
        created: now(),
    };
    if let Some(charge) = objects.charges.get_mut(&charge_id) {
        charge.amount_refunded += amount;
    }
    objects.balance_transactions.insert(transaction.id.clone(), transaction);
    let json = refund.json();
    objects.refunds.insert(refund.id.clone(), refund);
    Ok(json)
}

async fn create_intent(State(context): State<Context>, headers: HeaderMap, body: Bytes) -> Response {
    call(context, "create", "/v1/payment_intents".into(), headers, body, create).await
}

async fn confirm_intent(
    State(context): State<Context>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = format!("/v1/payment_intents/{id}/confirm");
    call(context, "confirm", path, headers, body, move |objects, form| {
        refuse_unknown(form, &["payment_method"])?;
        let method = form.get("payment_method").map(str::to_string);
        if let Some(method) = &method {
            known_payment_method(method)?;
        }
        authorise(objects, &id, method)
    })
    .await
}

async fn capture_intent(
    State(context): State<Context>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = format!("/v1/payment_intents/{id}/capture");
    call(context, "capture", path, headers, body, move |objects, form| capture(objects, &id, form)).await
}

async fn cancel_intent(
    State(context): State<Context>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = format!("/v1/payment_intents/{id}/cancel");
    call(context, "cancel", path, headers, body, move |objects, form| cancel(objects, &id, form)).await
}

async fn create_refund(State(context): State<Context>, headers: HeaderMap, body: Bytes) -> Response {
    call(context, "refund", "/v1/refunds".into(), headers, body, refund).await
}

/// A retrieve of one kind of object, by id.
async fn retrieve(context: Context, path: String, headers: HeaderMap, kind: &'static str, id: String) -> Response {
    call(context, "retrieve", path, headers, Bytes::new(), move |objects, _| {
        let found = match kind {
            "payment_intent" => objects.intents.get(&id).map(Intent::json),
            "refund" => objects.refunds.get(&id).map(Refund::json),
            "charge" => objects.charges.get(&id).map(Charge::json),
            _ => objects.balance_transactions.get(&id).map(BalanceTransaction::json),
        };
        found.ok_or_else(|| StripeError::missing(kind, &id, "id"))
    })
    .await
}

async fn retrieve_intent(State(context): State<Context>, Path(id): Path<String>, headers: HeaderMap) -> Response {
    retrieve(context, format!("/v1/payment_intents/{id}"), headers, "payment_intent", id).await
}

async fn retrieve_refund(State(context): State<Context>, Path(id): Path<String>, headers: HeaderMap) -> Response {
    retrieve(context, format!("/v1/refunds/{id}"), headers, "refund", id).await
}

async fn retrieve_charge(State(context): State<Context>, Path(id): Path<String>, headers: HeaderMap) -> Response {
    retrieve(context, format!("/v1/charges/{id}"), headers, "charge", id).await
}

async fn retrieve_balance_transaction(
    State(context): State<Context>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    retrieve(context, format!("/v1/balance_transactions/{id}"), headers, "balance_transaction", id).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fees_are_half_up_to_the_minor_unit() {
        // 1.5 % of 1 000p is 15p, plus 20p.
        assert_eq!(fee(1_000, "gbp"), 35);
        // 1.5 % of 1 030p is 15.45p, so 15p; of 1 034p 15.51p, so 16p.
        assert_eq!(fee(1_030, "gbp"), 35);
        assert_eq!(fee(1_034, "gbp"), 36);
    }

    #[test]
    fn the_key_comes_from_bearer_or_basic_and_must_be_a_test_key() {
        let headers = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::AUTHORIZATION, HeaderValue::from_str(value).expect("header"));
            headers
        };
        assert_eq!(api_key(&headers("Bearer sk_test_abc")).as_deref(), Some("sk_test_abc"));
        assert_eq!(api_key(&headers("Basic c2tfdGVzdF9hYmM6")).as_deref(), Some("sk_test_abc"));
        assert_eq!(api_key(&headers("Bearer sk_live_abc")), None);
        assert_eq!(api_key(&headers("Bearer sk_test_")), None);
        assert_eq!(api_key(&headers("Basic not base64!")), None);
    }
}
