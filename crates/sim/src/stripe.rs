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
//!
//! Settlement follows Stripe's automatic payouts: each charge and refund is a balance
//! transaction that becomes available [`AVAILABLE_AFTER_SECONDS`] after it was made
//! (days at Stripe, seconds here); each [`Provider::tick`] pays out every available
//! transaction not yet paid out, per currency, as one `payout` (`po_…`, status `paid`)
//! whose lines are listed by `GET /v1/balance_transactions?payout=po_…` (the payout's
//! own transaction among them, as at Stripe). `POST /_sim/stripe/settle` pays out
//! everything at once, available or not, for tests that should not wait.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
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
/// How long a charge's funds stay pending before a payout may include them.
pub const AVAILABLE_AFTER_SECONDS: i64 = 2;
/// Stripe's largest page.
const PAGE_MAX: usize = 100;

#[derive(Default)]
pub struct Stripe {
    state: Arc<Mutex<Objects>>,
    /// The shared parts, once mounted (payouts made on a tick send webhooks).
    sim: std::sync::OnceLock<Sim>,
}

impl Provider for Stripe {
    fn name(&self) -> &'static str {
        NAME
    }

    fn routes(&self, sim: Sim) -> Router {
        let _ = self.sim.set(sim.clone());
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
            .route("/v1/balance_transactions", get(list_balance_transactions))
            .route("/v1/balance_transactions/{id}", get(retrieve_balance_transaction))
            .route("/v1/payouts", get(list_payouts))
            .route("/v1/payouts/{id}", get(retrieve_payout))
            .with_state(context)
    }

    fn tick(&self) {
        let payouts = lock(&self.state).pay_out(now(), false);
        self.announce_payouts(payouts);
    }

    fn settle(&self) -> usize {
        let payouts = lock(&self.state).pay_out(now(), true);
        let made = payouts.len();
        self.announce_payouts(payouts);
        made
    }

    fn object(&self, id: &str) -> Option<Value> {
        let objects = lock(&self.state);
        objects.find(id)
    }
}

impl Stripe {
    fn announce_payouts(&self, payouts: Vec<Value>) {
        if let Some(sim) = self.sim.get() {
            for payout in payouts {
                announce(sim, "payout.paid", payout, None);
            }
        }
    }
}

/// Sends Stripe's event of `kind` about `object`, signed as Stripe signs:
/// `Stripe-Signature: t={unix seconds},v1={hex HMAC-SHA256 of "{t}.{body}" with the
/// endpoint's secret}` (providers.md §1.1).
fn announce(sim: &Sim, kind: &str, object: Value, idempotency_key: Option<&str>) {
    let Some(secret) = sim.webhooks.secret(NAME) else { return };
    let created = now();
    let event = json!({
        "id": new_id("evt"),
        "object": "event",
        "api_version": "2024-06-20",
        "created": created,
        "data": { "object": object },
        "livemode": false,
        "pending_webhooks": 1,
        "request": { "id": null, "idempotency_key": idempotency_key },
        "type": kind,
    });
    let body = event.to_string().into_bytes();
    let signature = sign(&secret, created, &body);
    let headers = vec![
        ("content-type", "application/json".to_string()),
        ("stripe-signature", format!("t={created},v1={signature}")),
    ];
    sim.webhooks.send(&sim.faults, NAME, kind, crate::webhooks::Webhook { body, headers });
}

/// Stripe's v1 scheme: hex HMAC-SHA256 of `"{timestamp}.{body}"`, keyed with the secret's
/// bytes as they are (`whsec_…` included).
pub fn sign(secret: &str, timestamp: i64, body: &[u8]) -> String {
    use hmac::Mac;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes a key of any length"));
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// The events Stripe sends after a call's effect, in order (a create that confirms sends
/// `payment_intent.created`, then the event of the status it reached).
fn events_of(operation: &str, status: StatusCode, reply: &Value) -> Vec<(&'static str, Value)> {
    if status == StatusCode::PAYMENT_REQUIRED {
        let Some(intent) = reply.pointer("/error/payment_intent") else { return Vec::new() };
        let mut events = Vec::new();
        if operation == "create" {
            events.push(("payment_intent.created", intent.clone()));
        }
        events.push(("payment_intent.payment_failed", intent.clone()));
        return events;
    }
    if status != StatusCode::OK || operation == "retrieve" {
        return Vec::new();
    }
    match reply.get("object").and_then(Value::as_str) {
        Some("payment_intent") => {
            let mut events = Vec::new();
            if operation == "create" {
                events.push(("payment_intent.created", reply.clone()));
            }
            let kind = match reply.get("status").and_then(Value::as_str) {
                Some("requires_capture") => Some("payment_intent.amount_capturable_updated"),
                Some("succeeded") => Some("payment_intent.succeeded"),
                Some("canceled") => Some("payment_intent.canceled"),
                _ => None,
            };
            events.extend(kind.map(|kind| (kind, reply.clone())));
            events
        }
        Some("refund") if operation == "refund" => vec![("refund.created", reply.clone())],
        _ => Vec::new(),
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
    payouts: HashMap<String, Payout>,
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
        if let Some(payout) = self.payouts.get(id) {
            return Some(payout.json());
        }
        self.balance_transactions.get(id).map(|transaction| transaction.json(now()))
    }

    /// Pays out the transactions not yet paid out (those available at `at`, or all of
    /// them with `everything`), one payout per currency whose net is positive (a negative
    /// balance waits for more charges, as Stripe's does). Returns the payouts it made.
    fn pay_out(&mut self, at: i64, everything: bool) -> Vec<Value> {
        let mut due: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for transaction in self.balance_transactions.values() {
            if transaction.payout.is_none()
                && transaction.kind != "payout"
                && (everything || transaction.available_on <= at)
            {
                due.entry(transaction.currency.clone()).or_default().push(transaction.id.clone());
            }
        }
        let mut made = Vec::new();
        for (currency, ids) in due {
            let net: i64 = ids.iter().map(|id| self.balance_transactions[id].net()).sum();
            if net <= 0 {
                continue;
            }
            let payout = Payout {
                id: new_id("po"),
                amount: net,
                currency: currency.clone(),
                balance_transaction: new_id("txn"),
                created: at,
            };
            for id in &ids {
                if let Some(transaction) = self.balance_transactions.get_mut(id) {
                    transaction.payout = Some(payout.id.clone());
                }
            }
            let own = BalanceTransaction {
                id: payout.balance_transaction.clone(),
                amount: -net,
                fee: 0,
                currency,
                kind: "payout",
                source: payout.id.clone(),
                created: at,
                available_on: at,
                payout: Some(payout.id.clone()),
            };
            self.balance_transactions.insert(own.id.clone(), own);
            made.push(payout.json());
            self.payouts.insert(payout.id.clone(), payout);
        }
        made
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
    /// The charge (`ch_…`), refund (`re_…`) or payout (`po_…`) it records.
    source: String,
    created: i64,
    available_on: i64,
    /// The payout that paid it out (Stripe lists it by `?payout=`; not a field there).
    payout: Option<String>,
}

impl BalanceTransaction {
    fn new(amount: i64, fee: i64, currency: String, kind: &'static str, source: String) -> BalanceTransaction {
        let created = now();
        BalanceTransaction {
            id: new_id("txn"),
            amount,
            fee,
            currency,
            kind,
            source,
            created,
            available_on: created + AVAILABLE_AFTER_SECONDS,
            payout: None,
        }
    }

    fn net(&self) -> i64 {
        self.amount - self.fee
    }

    fn json(&self, at: i64) -> Value {
        json!({
            "id": self.id,
            "object": "balance_transaction",
            "amount": self.amount,
            "fee": self.fee,
            "net": self.net(),
            "currency": self.currency,
            "type": self.kind,
            "source": self.source,
            "status": if self.available_on <= at { "available" } else { "pending" },
            "available_on": self.available_on,
            "fee_details": if self.fee > 0 {
                json!([{ "amount": self.fee, "currency": self.currency, "type": "stripe_fee", "description": "Stripe processing fees" }])
            } else {
                json!([])
            },
            "created": self.created,
        })
    }
}

/// An automatic payout to the account's bank: what a settlement report lists.
#[derive(Clone)]
struct Payout {
    id: String,
    amount: i64,
    currency: String,
    balance_transaction: String,
    created: i64,
}

impl Payout {
    fn json(&self) -> Value {
        json!({
            "id": self.id,
            "object": "payout",
            "amount": self.amount,
            "currency": self.currency,
            "arrival_date": self.created,
            "automatic": true,
            "balance_transaction": self.balance_transaction,
            "created": self.created,
            "method": "standard",
            "status": "paid",
            "type": "bank_account",
            "livemode": false,
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
                // The event tells the truth, whatever the reply is made to say below.
                for (kind, object) in events_of(operation, status, &reply) {
                    announce(&context.sim, kind, object, idempotency_key.as_deref());
                }
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
            // A settlement report lies about its first charge: one unit more than was
            // captured, and its net with it.
            if object.get("object") == Some(&json!("list")) {
                let lines = object.get_mut("data").and_then(Value::as_array_mut);
                if let Some(line) = lines.and_then(|lines| lines.iter_mut().find(|line| line["type"] == "charge")) {
                    for field in ["amount", "net"] {
                        if let Some(amount) = line.get(field).and_then(Value::as_i64) {
                            line[field] = json!(amount + 1);
                        }
                    }
                }
                return;
            }
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
    let transaction = BalanceTransaction::new(amount, fee(amount, &currency), currency, "charge", charge_id.clone());
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
    let refund_id = new_id("re");
    let transaction = BalanceTransaction::new(-amount, 0, charge.currency.clone(), "refund", refund_id.clone());
    let refund = Refund {
        id: refund_id,
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
            "payout" => objects.payouts.get(&id).map(Payout::json),
            _ => objects.balance_transactions.get(&id).map(|transaction| transaction.json(now())),
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

async fn retrieve_payout(State(context): State<Context>, Path(id): Path<String>, headers: HeaderMap) -> Response {
    retrieve(context, format!("/v1/payouts/{id}"), headers, "payout", id).await
}

/// `limit` (1–100, default 10) and `starting_after` of a Stripe list.
fn page_of(form: &Form) -> Result<(usize, Option<String>), StripeError> {
    let limit = match form.get("limit") {
        None => 10,
        Some(text) => text
            .parse::<usize>()
            .ok()
            .filter(|limit| (1..=PAGE_MAX).contains(limit))
            .ok_or_else(|| StripeError::invalid("Invalid limit: must be between 1 and 100", Some("limit"), None))?,
    };
    Ok((limit, form.get("starting_after").map(str::to_string)))
}

/// A Stripe list object: newest first (by `created`, then id), from after `starting_after`.
fn list_of(mut items: Vec<(i64, String, Value)>, url: &str, limit: usize, after: Option<&str>) -> Value {
    items.sort_by(|a, b| (b.0, &b.1).cmp(&(a.0, &a.1)));
    let start = match after {
        Some(after) => items.iter().position(|item| item.1 == after).map_or(items.len(), |index| index + 1),
        None => 0,
    };
    let rest: Vec<Value> = items.into_iter().skip(start).map(|item| item.2).collect();
    let has_more = rest.len() > limit;
    let data: Vec<Value> = rest.into_iter().take(limit).collect();
    json!({ "object": "list", "data": data, "has_more": has_more, "url": url })
}

/// A list call (a GET with its query in place of a body), through [`call`] so that
/// faults, the log and authentication apply as to any other call.
async fn list(
    context: Context,
    operation: &'static str,
    path: &'static str,
    query: Option<String>,
    headers: HeaderMap,
    effect: impl FnOnce(&mut Objects, &Form) -> Result<Value, StripeError>,
) -> Response {
    let body = Bytes::from(query.unwrap_or_default());
    call(context, operation, path.into(), headers, body, effect).await
}

async fn list_payouts(State(context): State<Context>, RawQuery(query): RawQuery, headers: HeaderMap) -> Response {
    list(context, "list_payouts", "/v1/payouts", query, headers, |objects, form| {
        refuse_unknown(form, &["limit", "starting_after"])?;
        let (limit, after) = page_of(form)?;
        let items = objects.payouts.values().map(|payout| (payout.created, payout.id.clone(), payout.json())).collect();
        Ok(list_of(items, "/v1/payouts", limit, after.as_deref()))
    })
    .await
}

async fn list_balance_transactions(
    State(context): State<Context>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    list(context, "settlement_report", "/v1/balance_transactions", query, headers, |objects, form| {
        refuse_unknown(form, &["limit", "starting_after", "payout"])?;
        let (limit, after) = page_of(form)?;
        let payout = form.get("payout");
        if let Some(payout) = payout {
            if !objects.payouts.contains_key(payout) {
                return Err(StripeError::missing("payout", payout, "payout"));
            }
        }
        let at = now();
        let items = objects
            .balance_transactions
            .values()
            .filter(|transaction| payout.is_none() || transaction.payout.as_deref() == payout)
            .map(|transaction| (transaction.created, transaction.id.clone(), transaction.json(at)))
            .collect();
        Ok(list_of(items, "/v1/balance_transactions", limit, after.as_deref()))
    })
    .await
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
