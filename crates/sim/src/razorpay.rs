//! Razorpay, as far as Till's gateway adapter and Razorpay's own SDKs use it: orders,
//! UPI collect payments (server to server), capture, refunds, payment fetches, and
//! settlements with their recon. JSON bodies, `Authorization: Basic
//! rzp_test_…:{any secret}`, Razorpay's error object.
//!
//! Behaviour follows Razorpay's documentation (razorpay.com/docs/api; providers.md):
//! - `POST /v1/orders` makes an order (`created`); `payment.capture` (`automatic` by
//!   default, or `manual`) says whether its payments are captured on authorisation.
//! - `POST /v1/payments/create/upi` starts a collect request on an order and answers
//!   `{"razorpay_payment_id"}` at once; the payment is `created` until the customer
//!   answers in their UPI app. The test VPAs answer after [`APPROVAL_MS`]:
//!   `success@razorpay` approves (`authorized`, then `captured` if the order captures
//!   automatically), `failure@razorpay` declines (`failed`, with `error_code`,
//!   `error_description`, `error_reason`). Any other VPA is refused as invalid.
//! - capture takes exactly the authorised amount (Razorpay has no partial capture), once.
//! - refunds, partial and several, never more in total than was captured; processed at
//!   once (test mode). A payment fully refunded is `refunded`.
//! - There is no idempotency key (Razorpay's payments API has none): the same request
//!   twice does it twice, as at Razorpay. The adapter finds earlier effects by `receipt`
//!   and `notes`.
//! - Webhooks (`payment.authorized`, `payment.captured`, `payment.failed`, `order.paid`,
//!   `refund.created`, `refund.processed`, `settlement.processed`), signed with
//!   `X-Razorpay-Signature` (hex HMAC-SHA256 of the body with the webhook secret; no
//!   timestamp) and numbered by `X-Razorpay-Event-Id`.
//!
//! Fees are Razorpay's standard plan: 2 % of the amount, half up to the paisa, plus 18 %
//! GST on the fee; the payment's `fee` includes the `tax`, as Razorpay reports it.
//!
//! Settlement: each captured payment and refund settles [`SETTLE_AFTER_SECONDS`] after
//! it was made (T+2 days at Razorpay, seconds here); each [`Provider::tick`] makes one
//! `processed` settlement (`setl_…`) of everything due, its lines listed by
//! `GET /v1/settlements/recon/combined?year&month&day` (dated in India Standard Time).
//! `POST /_sim/razorpay/settle` settles everything at once.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

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
use crate::{Provider, Sim};

const NAME: &str = "razorpay";
/// How long the test VPAs take to answer a collect request.
pub const APPROVAL_MS: u64 = 300;
/// How long a captured payment's funds wait before a settlement may include them.
pub const SETTLE_AFTER_SECONDS: i64 = 2;
/// Razorpay's largest amount in one payment: ₹5,00,00,000 in paise.
const AMOUNT_MAX: i64 = 500_000_000;
/// Razorpay's smallest: ₹1.
const AMOUNT_MIN: i64 = 100;
const PAGE_MAX: usize = 100;
const IST_OFFSET_SECONDS: i32 = 5 * 3600 + 30 * 60;

#[derive(Default)]
pub struct Razorpay {
    state: Arc<Mutex<Objects>>,
    sim: std::sync::OnceLock<Sim>,
}

impl Provider for Razorpay {
    fn name(&self) -> &'static str {
        NAME
    }

    fn routes(&self, sim: Sim) -> Router {
        let _ = self.sim.set(sim.clone());
        let context = Context { sim, objects: self.state.clone() };
        Router::new()
            .route("/v1/orders", post(create_order).get(list_orders))
            .route("/v1/orders/{id}", get(fetch_order))
            .route("/v1/orders/{id}/payments", get(order_payments))
            .route("/v1/payments/create/upi", post(create_upi))
            .route("/v1/payments/{id}", get(fetch_payment))
            .route("/v1/payments/{id}/capture", post(capture_payment))
            .route("/v1/payments/{id}/refund", post(refund_payment))
            .route("/v1/payments/{id}/refunds", get(payment_refunds))
            .route("/v1/refunds/{id}", get(fetch_refund))
            .route("/v1/settlements", get(list_settlements))
            .route("/v1/settlements/recon/combined", get(recon))
            .route("/v1/settlements/{id}", get(fetch_settlement))
            .with_state(context)
    }

    fn object(&self, id: &str) -> Option<Value> {
        lock(&self.state).find(id)
    }

    fn tick(&self) {
        let made = lock(&self.state).settle(now(), false);
        self.announce_settlements(made);
    }

    fn settle(&self) -> usize {
        let made = lock(&self.state).settle(now(), true);
        let count = made.len();
        self.announce_settlements(made);
        count
    }
}

impl Razorpay {
    fn announce_settlements(&self, settlements: Vec<Value>) {
        if let Some(sim) = self.sim.get() {
            for settlement in settlements {
                announce(sim, "settlement.processed", json!({ "settlement": { "entity": settlement } }));
            }
        }
    }
}

/// Sends Razorpay's event of `kind` with `payload`, signed as Razorpay signs.
fn announce(sim: &Sim, kind: &str, payload: Value) {
    let Some(secret) = sim.webhooks.secret(NAME) else { return };
    let contains: Vec<&String> = payload.as_object().map(|map| map.keys().collect()).unwrap_or_default();
    let event = json!({
        "entity": "event",
        "account_id": "acc_SimulatorTill1",
        "event": kind,
        "contains": contains,
        "payload": payload,
        "created_at": now(),
    });
    let body = event.to_string().into_bytes();
    let headers = vec![
        ("content-type", "application/json".to_string()),
        ("x-razorpay-signature", sign(&secret, &body)),
        ("x-razorpay-event-id", new_id("")),
    ];
    sim.webhooks.send(&sim.faults, NAME, kind, crate::webhooks::Webhook { body, headers });
}

/// Razorpay's scheme: hex HMAC-SHA256 of the raw body, keyed with the webhook secret.
pub fn sign(secret: &str, body: &[u8]) -> String {
    use hmac::Mac;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes a key of any length"));
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

#[derive(Clone)]
struct Context {
    sim: Sim,
    objects: Arc<Mutex<Objects>>,
}

#[derive(Default)]
struct Objects {
    orders: HashMap<String, Order>,
    payments: HashMap<String, Payment>,
    refunds: HashMap<String, Refund>,
    settlements: HashMap<String, Settlement>,
    /// Every line a settlement paid, in order.
    recon: Vec<ReconItem>,
}

#[derive(Clone)]
struct Order {
    id: String,
    amount: i64,
    currency: String,
    receipt: Option<String>,
    automatic: bool,
    notes: Value,
    attempts: u32,
    created_at: i64,
}

#[derive(Clone)]
struct Payment {
    id: String,
    order_id: String,
    amount: i64,
    currency: String,
    status: &'static str,
    vpa: String,
    email: Option<String>,
    notes: Value,
    amount_refunded: i64,
    fee: Option<i64>,
    tax: Option<i64>,
    error: Option<(&'static str, &'static str)>,
    captured_at: Option<i64>,
    settled: bool,
    created_at: i64,
}

#[derive(Clone)]
struct Refund {
    id: String,
    payment_id: String,
    amount: i64,
    currency: String,
    notes: Value,
    settled: bool,
    created_at: i64,
}

#[derive(Clone)]
struct Settlement {
    id: String,
    amount: i64,
    fees: i64,
    tax: i64,
    utr: String,
    created_at: i64,
}

#[derive(Clone)]
struct ReconItem {
    entity_id: String,
    kind: &'static str,
    debit: i64,
    credit: i64,
    amount: i64,
    currency: String,
    fee: i64,
    tax: i64,
    payment_id: String,
    order_id: String,
    settlement_id: String,
    settlement_utr: String,
    created_at: i64,
    settled_at: i64,
}

impl Order {
    fn json(&self, objects: &Objects) -> Value {
        let paid: i64 = objects
            .payments
            .values()
            .filter(|payment| payment.order_id == self.id && payment.captured_at.is_some())
            .map(|payment| payment.amount)
            .sum();
        let status = if paid > 0 {
            "paid"
        } else if self.attempts > 0 {
            "attempted"
        } else {
            "created"
        };
        json!({
            "id": self.id,
            "entity": "order",
            "amount": self.amount,
            "amount_paid": paid,
            "amount_due": self.amount - paid,
            "currency": self.currency,
            "receipt": self.receipt,
            "offer_id": null,
            "status": status,
            "attempts": self.attempts,
            "notes": notes_json(&self.notes),
            "created_at": self.created_at,
        })
    }
}

impl Payment {
    fn json(&self) -> Value {
        let (error_code, error_description, error_reason, error_source, error_step) = match self.error {
            Some((description, reason)) => (
                json!("BAD_REQUEST_ERROR"),
                json!(description),
                json!(reason),
                json!("customer"),
                json!("payment_authorization"),
            ),
            None => (Value::Null, Value::Null, Value::Null, Value::Null, Value::Null),
        };
        json!({
            "id": self.id,
            "entity": "payment",
            "amount": self.amount,
            "currency": self.currency,
            "status": self.status,
            "order_id": self.order_id,
            "invoice_id": null,
            "international": false,
            "method": "upi",
            "amount_refunded": self.amount_refunded,
            "refund_status": if self.amount_refunded == 0 { Value::Null }
                             else if self.amount_refunded == self.amount { json!("full") } else { json!("partial") },
            "captured": self.captured_at.is_some(),
            "description": null,
            "card_id": null,
            "bank": null,
            "wallet": null,
            "vpa": self.vpa,
            "email": self.email,
            "contact": null,
            "notes": notes_json(&self.notes),
            "fee": self.fee,
            "tax": self.tax,
            "error_code": error_code,
            "error_description": error_description,
            "error_source": error_source,
            "error_step": error_step,
            "error_reason": error_reason,
            "acquirer_data": { "rrn": null, "upi_transaction_id": null },
            "created_at": self.created_at,
        })
    }
}

impl Refund {
    fn json(&self) -> Value {
        json!({
            "id": self.id,
            "entity": "refund",
            "amount": self.amount,
            "currency": self.currency,
            "payment_id": self.payment_id,
            "notes": notes_json(&self.notes),
            "receipt": null,
            "acquirer_data": { "arn": null },
            "created_at": self.created_at,
            "batch_id": null,
            "status": "processed",
            "speed_processed": "normal",
            "speed_requested": "normal",
        })
    }
}

impl Settlement {
    fn json(&self) -> Value {
        json!({
            "id": self.id,
            "entity": "settlement",
            "amount": self.amount,
            "status": "processed",
            "fees": self.fees,
            "tax": self.tax,
            "utr": self.utr,
            "created_at": self.created_at,
        })
    }
}

impl ReconItem {
    fn json(&self) -> Value {
        json!({
            "entity_id": self.entity_id,
            "type": self.kind,
            "debit": self.debit,
            "credit": self.credit,
            "amount": self.amount,
            "currency": self.currency,
            "fee": self.fee,
            "tax": self.tax,
            "on_hold": false,
            "settled": true,
            "created_at": self.created_at,
            "settled_at": self.settled_at,
            "settlement_id": self.settlement_id,
            "description": null,
            "notes": [],
            "payment_id": self.payment_id,
            "settlement_utr": self.settlement_utr,
            "order_id": self.order_id,
            "order_receipt": null,
            "method": "upi",
            "card_network": null,
            "card_issuer": null,
            "card_type": null,
            "dispute_id": null,
        })
    }
}

/// Razorpay writes empty notes as `[]`.
fn notes_json(notes: &Value) -> Value {
    match notes.as_object() {
        Some(map) if !map.is_empty() => notes.clone(),
        _ => json!([]),
    }
}

impl Objects {
    fn find(&self, id: &str) -> Option<Value> {
        if let Some(order) = self.orders.get(id) {
            return Some(order.json(self));
        }
        if let Some(payment) = self.payments.get(id) {
            return Some(payment.json());
        }
        if let Some(refund) = self.refunds.get(id) {
            return Some(refund.json());
        }
        self.settlements.get(id).map(Settlement::json)
    }

    /// Settles what is due at `at` (or everything), as one settlement if its net is
    /// positive (a negative balance waits for more payments, as Razorpay's does).
    fn settle(&mut self, at: i64, everything: bool) -> Vec<Value> {
        let due = |made: i64| everything || made + SETTLE_AFTER_SECONDS <= at;
        let payments: Vec<String> = self
            .payments
            .values()
            .filter(|payment| !payment.settled && payment.captured_at.is_some_and(due))
            .map(|payment| payment.id.clone())
            .collect();
        let refunds: Vec<String> = self
            .refunds
            .values()
            .filter(|refund| !refund.settled && due(refund.created_at))
            .map(|refund| refund.id.clone())
            .collect();
        let credit: i64 =
            payments.iter().map(|id| &self.payments[id]).map(|payment| payment.amount - payment.fee.unwrap_or(0)).sum();
        let debit: i64 = refunds.iter().map(|id| self.refunds[id].amount).sum();
        let net = credit - debit;
        if net <= 0 {
            return Vec::new();
        }
        let settlement = Settlement {
            id: new_id("setl_"),
            amount: net,
            fees: payments.iter().map(|id| self.payments[id].fee.unwrap_or(0)).sum(),
            tax: payments.iter().map(|id| self.payments[id].tax.unwrap_or(0)).sum(),
            utr: new_id(""),
            created_at: at,
        };
        for id in &payments {
            let Some(payment) = self.payments.get_mut(id) else { continue };
            payment.settled = true;
            let fee = payment.fee.unwrap_or(0);
            self.recon.push(ReconItem {
                entity_id: payment.id.clone(),
                kind: "payment",
                debit: 0,
                credit: payment.amount - fee,
                amount: payment.amount,
                currency: payment.currency.clone(),
                fee,
                tax: payment.tax.unwrap_or(0),
                payment_id: payment.id.clone(),
                order_id: payment.order_id.clone(),
                settlement_id: settlement.id.clone(),
                settlement_utr: settlement.utr.clone(),
                created_at: payment.created_at,
                settled_at: at,
            });
        }
        for id in &refunds {
            let Some(refund) = self.refunds.get_mut(id) else { continue };
            refund.settled = true;
            let order_id = self.payments.get(&refund.payment_id).map(|payment| payment.order_id.clone());
            self.recon.push(ReconItem {
                entity_id: refund.id.clone(),
                kind: "refund",
                debit: refund.amount,
                credit: 0,
                amount: refund.amount,
                currency: refund.currency.clone(),
                fee: 0,
                tax: 0,
                payment_id: refund.payment_id.clone(),
                order_id: order_id.unwrap_or_default(),
                settlement_id: settlement.id.clone(),
                settlement_utr: settlement.utr.clone(),
                created_at: refund.created_at,
                settled_at: at,
            });
        }
        let made = settlement.json();
        self.settlements.insert(settlement.id.clone(), settlement);
        vec![made]
    }

    /// The customer answered the collect request of `id`: approved (`authorized`, and
    /// captured at once when its order captures automatically) or declined. Returns the
    /// events to send.
    fn answer_collect(&mut self, id: &str) -> Vec<(&'static str, Value)> {
        let Some(payment) = self.payments.get(id).cloned() else { return Vec::new() };
        if payment.status != "created" {
            return Vec::new();
        }
        let automatic = self.orders.get(&payment.order_id).is_some_and(|order| order.automatic);
        let mut events = Vec::new();
        if payment.vpa == "success@razorpay" {
            if let Some(payment) = self.payments.get_mut(id) {
                payment.status = "authorized";
                events.push(("payment.authorized", json!({ "payment": { "entity": payment.json() } })));
            }
            if automatic {
                events.extend(self.capture(id));
            }
        } else if let Some(payment) = self.payments.get_mut(id) {
            payment.status = "failed";
            payment.error = Some(("Payment was declined by the customer in the UPI app.", "payment_failed"));
            events.push(("payment.failed", json!({ "payment": { "entity": payment.json() } })));
        }
        events
    }

    /// Captures an authorised payment, with its fee; returns the events to send.
    fn capture(&mut self, id: &str) -> Vec<(&'static str, Value)> {
        let Some(payment) = self.payments.get_mut(id) else { return Vec::new() };
        let (fee, tax) = fee(payment.amount);
        payment.status = "captured";
        payment.captured_at = Some(now());
        payment.fee = Some(fee + tax);
        payment.tax = Some(tax);
        let payment = payment.json();
        let order = payment["order_id"].as_str().and_then(|order| self.orders.get(order)).map(|order| order.json(self));
        vec![
            ("payment.captured", json!({ "payment": { "entity": payment.clone() } })),
            ("order.paid", json!({ "payment": { "entity": payment }, "order": { "entity": order } })),
        ]
    }
}

/// The fee and its GST: 2 % half up, and 18 % of that half up.
fn fee(amount: i64) -> (i64, i64) {
    let fee = (amount * 200 + 5_000) / 10_000;
    let tax = (fee * 1_800 + 5_000) / 10_000;
    (fee, tax)
}

/// Razorpay's error object, with its status.
struct RazorpayError {
    status: StatusCode,
    body: Value,
}

impl RazorpayError {
    fn bad(description: impl Into<String>, field: Option<&str>) -> RazorpayError {
        RazorpayError {
            status: StatusCode::BAD_REQUEST,
            body: json!({ "error": {
                "code": "BAD_REQUEST_ERROR",
                "description": description.into(),
                "source": "business",
                "step": "payment_initiation",
                "reason": "input_validation_failed",
                "metadata": {},
                "field": field,
            }}),
        }
    }

    fn missing(kind: &str) -> RazorpayError {
        RazorpayError::bad(format!("The id provided does not exist ({kind})"), Some("id"))
    }
}

fn lock(objects: &Mutex<Objects>) -> std::sync::MutexGuard<'_, Objects> {
    objects.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn now() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

/// Razorpay's ids: a prefix and 14 letters and digits.
pub(crate) fn new_id(prefix: &str) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut bytes = [0_u8; 14];
    rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut bytes);
    let tail: String = bytes.iter().map(|byte| char::from(ALPHABET[usize::from(*byte) % ALPHABET.len()])).collect();
    format!("{prefix}{tail}")
}

/// The faults that answer before any effect (`timeout`, `error_500`, `error_429`), as
/// Razorpay and RazorpayX answer them: the status to record (none for a call never
/// answered) and the response, after the delay a timeout takes. `None`: go on.
pub(crate) async fn before_effect(kind: Option<FaultKind>, delay: Duration) -> Option<(Option<StatusCode>, Response)> {
    match kind? {
        FaultKind::Timeout => {
            tokio::time::sleep(delay).await;
            Some((None, StatusCode::GATEWAY_TIMEOUT.into_response()))
        }
        FaultKind::Error500 => {
            let body = json!({ "error": { "code": "SERVER_ERROR",
                "description": "The server encountered an error. The incident has been reported to admins." } });
            Some((
                Some(StatusCode::INTERNAL_SERVER_ERROR),
                (StatusCode::INTERNAL_SERVER_ERROR, Json(body)).into_response(),
            ))
        }
        FaultKind::Error429 => {
            let body = json!({ "error": { "code": "BAD_REQUEST_ERROR", "description": "Too many requests" } });
            let mut response = (StatusCode::TOO_MANY_REQUESTS, Json(body)).into_response();
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            Some((Some(StatusCode::TOO_MANY_REQUESTS), response))
        }
        _ => None,
    }
}

/// A test key: Basic `rzp_test_…` with any non-empty secret.
pub(crate) fn authorised(headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(header::AUTHORIZATION).and_then(|value| value.to_str().ok()) else { return false };
    let Some(encoded) = value.strip_prefix("Basic ") else { return false };
    let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded.trim()) else { return false };
    let Ok(text) = String::from_utf8(decoded) else { return false };
    let Some((key, secret)) = text.split_once(':') else { return false };
    key.starts_with("rzp_test_") && key.len() > "rzp_test_".len() && !secret.is_empty()
}

type Effect<'a> =
    Box<dyn FnOnce(&mut Objects, &Value) -> Result<(Value, Vec<(&'static str, Value)>), RazorpayError> + Send + 'a>;

/// One call: authentication, the fault armed for it, the effect, its webhooks, the reply.
async fn call(
    context: Context,
    operation: &'static str,
    headers: HeaderMap,
    body: Bytes,
    effect: Effect<'_>,
) -> Response {
    let fault = context.sim.faults.take(NAME, operation);
    let record = |status: Option<StatusCode>, fault: Option<FaultKind>| {
        context.sim.calls.record(Call {
            provider: NAME,
            operation,
            idempotency_key: None,
            body: String::from_utf8_lossy(&body).into_owned(),
            status: status.map(|status| status.as_u16()),
            fault: fault.map(FaultKind::name),
            at: OffsetDateTime::now_utc(),
        });
    };
    if !authorised(&headers) {
        record(Some(StatusCode::UNAUTHORIZED), None);
        let body = json!({ "error": { "code": "BAD_REQUEST_ERROR", "description": "Authentication failed" } });
        return (StatusCode::UNAUTHORIZED, Json(body)).into_response();
    }
    let kind = fault.as_ref().map(|fault| fault.fault);
    let delay = Duration::from_millis(fault.as_ref().and_then(|fault| fault.delay_ms).unwrap_or(TIMEOUT_DEFAULT_MS));
    if let Some((status, response)) = before_effect(kind, delay).await {
        record(status, kind);
        return response;
    }
    let parsed: Value = if body.is_empty() {
        json!({})
    } else {
        match serde_json::from_slice(&body) {
            Ok(value @ Value::Object(_)) => value,
            _ => {
                record(Some(StatusCode::BAD_REQUEST), None);
                let error = RazorpayError::bad("The request body is not a JSON object", None);
                return (error.status, Json(error.body)).into_response();
            }
        }
    };
    let (status, reply) = {
        let mut objects = lock(&context.objects);
        match effect(&mut objects, &parsed) {
            Ok((reply, events)) => {
                // The events tell the truth, whatever the reply is made to say below.
                for (event, payload) in events {
                    announce(&context.sim, event, payload);
                }
                (StatusCode::OK, reply)
            }
            Err(error) => (error.status, error.body),
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
            return (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], "{\"entity\": \"pay")
                .into_response();
        }
        Some(FaultKind::WrongAmount) => lie(reply, |object| {
            if let Some(amount) = object.get("amount").and_then(Value::as_i64) {
                object["amount"] = json!(amount + 1);
            }
            // A recon lies about its first payment: one paisa more, and its credit with it.
            if object.get("entity") == Some(&json!("collection")) {
                let items = object.get_mut("items").and_then(Value::as_array_mut);
                let first = items.and_then(|items| {
                    items.iter_mut().find(|item| item["type"] == "payment" || item["entity"] == "payment")
                });
                if let Some(item) = first {
                    for field in ["amount", "credit"] {
                        if let Some(amount) = item.get(field).and_then(Value::as_i64) {
                            item[field] = json!(amount + 1);
                        }
                    }
                }
            }
        }),
        Some(FaultKind::WrongCurrency) => lie(reply, |object| {
            let other = if object.get("currency") == Some(&json!("USD")) { "EUR" } else { "USD" };
            object["currency"] = json!(other);
            if let Some(items) = object.get_mut("items").and_then(Value::as_array_mut) {
                for item in items {
                    item["currency"] = json!(other);
                }
            }
        }),
        Some(FaultKind::UnknownStatus) => lie(reply, |object| {
            object["status"] = json!("requires_reconsideration");
            if let Some(items) = object.get_mut("items").and_then(Value::as_array_mut) {
                for item in items {
                    item["status"] = json!("requires_reconsideration");
                }
            }
        }),
        _ => reply,
    };
    record(Some(status), kind);
    (status, Json(reply)).into_response()
}

/// A reply altered by a lying fault; an error reply is left as it is.
fn lie(mut reply: Value, alter: impl FnOnce(&mut Value)) -> Value {
    if reply.get("error").is_none() {
        alter(&mut reply);
    }
    reply
}

/// Razorpay refuses fields it does not know.
fn refuse_unknown(body: &Value, known: &[&str]) -> Result<(), RazorpayError> {
    let unknown = body.as_object().and_then(|map| map.keys().find(|key| !known.contains(&key.as_str())));
    match unknown {
        Some(field) => {
            Err(RazorpayError::bad(format!("{field} is/are not required and should not be sent"), Some(field)))
        }
        None => Ok(()),
    }
}

fn amount_of(body: &Value, field: &str) -> Result<Option<i64>, RazorpayError> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(value) => match value.as_i64().or_else(|| value.as_str().and_then(|text| text.parse().ok())) {
            Some(amount) if (AMOUNT_MIN..=AMOUNT_MAX).contains(&amount) => Ok(Some(amount)),
            Some(_) => Err(RazorpayError::bad(
                format!("The amount must be atleast INR 1.00 and at most INR {}", AMOUNT_MAX / 100),
                Some(field),
            )),
            None => Err(RazorpayError::bad(format!("The {field} must be an integer."), Some(field))),
        },
    }
}

fn notes_of(body: &Value) -> Result<Value, RazorpayError> {
    match body.get("notes") {
        None | Some(Value::Null) => Ok(json!({})),
        Some(Value::Array(items)) if items.is_empty() => Ok(json!({})),
        Some(Value::Object(map))
            if map.len() <= 15
                && map
                    .values()
                    .all(|value| value.as_str().is_some_and(|text| text.len() <= 256) || value.is_number()) =>
        {
            Ok(Value::Object(map.clone()))
        }
        Some(_) => Err(RazorpayError::bad("notes: at most 15 keys, each value at most 256 characters", Some("notes"))),
    }
}

fn currency_of(body: &Value) -> Result<String, RazorpayError> {
    match body.get("currency").and_then(Value::as_str).unwrap_or("INR") {
        "INR" => Ok(String::from("INR")),
        other => Err(RazorpayError::bad(format!("The currency {other} is not supported."), Some("currency"))),
    }
}

async fn create_order(State(context): State<Context>, headers: HeaderMap, body: Bytes) -> Response {
    call(
        context,
        "create",
        headers,
        body,
        Box::new(|objects, body| {
            refuse_unknown(body, &["amount", "currency", "receipt", "notes", "partial_payment", "payment"])?;
            let amount = amount_of(body, "amount")?
                .ok_or_else(|| RazorpayError::bad("The amount field is required.", Some("amount")))?;
            let currency = currency_of(body)?;
            let receipt = match body.get("receipt") {
                None | Some(Value::Null) => None,
                Some(Value::String(text)) if text.len() <= 40 => Some(text.clone()),
                Some(_) => {
                    return Err(RazorpayError::bad(
                        "The receipt may not be greater than 40 characters.",
                        Some("receipt"),
                    ))
                }
            };
            let automatic = match body.pointer("/payment/capture").and_then(Value::as_str).unwrap_or("automatic") {
                "automatic" => true,
                "manual" => false,
                _ => {
                    return Err(RazorpayError::bad(
                        "payment.capture must be automatic or manual",
                        Some("payment.capture"),
                    ))
                }
            };
            let order = Order {
                id: new_id("order_"),
                amount,
                currency,
                receipt,
                automatic,
                notes: notes_of(body)?,
                attempts: 0,
                created_at: now(),
            };
            let json = order.json(objects);
            objects.orders.insert(order.id.clone(), order);
            Ok((json, Vec::new()))
        }),
    )
    .await
}

/// A read: the call's authentication, faults and log, no effect and no webhook.
async fn read(
    context: Context,
    headers: HeaderMap,
    view: impl FnOnce(&Objects) -> Result<Value, RazorpayError> + Send + 'static,
) -> Response {
    call(context, "retrieve", headers, Bytes::new(), Box::new(move |objects, _| Ok((view(objects)?, Vec::new())))).await
}

/// `count` (1–100, default 10) and `skip` of a list's query, and its other pairs.
fn page_of(query: Option<&str>) -> Result<(usize, usize, BTreeMap<String, String>), RazorpayError> {
    let mut pairs: BTreeMap<String, String> =
        form_urlencoded::parse(query.unwrap_or_default().as_bytes()).into_owned().collect();
    let number = |pairs: &mut BTreeMap<String, String>, field: &str, default: usize| -> Result<usize, RazorpayError> {
        match pairs.remove(field) {
            None => Ok(default),
            Some(text) => {
                text.parse().map_err(|_| RazorpayError::bad(format!("The {field} must be an integer."), Some(field)))
            }
        }
    };
    let count = number(&mut pairs, "count", 10)?;
    if !(1..=PAGE_MAX).contains(&count) {
        return Err(RazorpayError::bad("The count must be between 1 and 100.", Some("count")));
    }
    let skip = number(&mut pairs, "skip", 0)?;
    Ok((count, skip, pairs))
}

fn collection(items: Vec<Value>) -> Value {
    json!({ "entity": "collection", "count": items.len(), "items": items })
}

/// Newest first, then `skip` and `count`.
fn paged(mut items: Vec<(i64, Value)>, count: usize, skip: usize) -> Value {
    items.sort_by_key(|item| std::cmp::Reverse(item.0));
    collection(items.into_iter().skip(skip).take(count).map(|(_, item)| item).collect())
}

async fn list_orders(State(context): State<Context>, RawQuery(query): RawQuery, headers: HeaderMap) -> Response {
    read(context, headers, move |objects| {
        let (count, skip, filters) = page_of(query.as_deref())?;
        let receipt = filters.get("receipt");
        let items = objects
            .orders
            .values()
            .filter(|order| receipt.is_none_or(|receipt| order.receipt.as_ref() == Some(receipt)))
            .map(|order| (order.created_at, order.json(objects)))
            .collect();
        Ok(paged(items, count, skip))
    })
    .await
}

async fn fetch_order(State(context): State<Context>, Path(id): Path<String>, headers: HeaderMap) -> Response {
    read(context, headers, move |objects| {
        let order = objects.orders.get(&id).ok_or_else(|| RazorpayError::missing("order"))?;
        Ok(order.json(objects))
    })
    .await
}

async fn order_payments(State(context): State<Context>, Path(id): Path<String>, headers: HeaderMap) -> Response {
    read(context, headers, move |objects| {
        if !objects.orders.contains_key(&id) {
            return Err(RazorpayError::missing("order"));
        }
        let items = objects
            .payments
            .values()
            .filter(|payment| payment.order_id == id)
            .map(|payment| (payment.created_at, payment.json()))
            .collect();
        Ok(paged(items, PAGE_MAX, 0))
    })
    .await
}

async fn create_upi(State(context): State<Context>, headers: HeaderMap, body: Bytes) -> Response {
    let shared = context.objects.clone();
    let sim = context.sim.clone();
    call(
        context,
        "confirm",
        headers,
        body,
        Box::new(move |objects, body| {
            refuse_unknown(
                body,
                &["amount", "currency", "order_id", "email", "contact", "method", "upi", "vpa", "notes", "description",
                  "customer_id", "ip", "referer", "user_agent", "save", "callback_url"],
            )?;
            if body.get("method").and_then(Value::as_str) != Some("upi") {
                return Err(RazorpayError::bad("The method must be upi.", Some("method")));
            }
            let order_id = body.get("order_id").and_then(Value::as_str).unwrap_or_default().to_string();
            let order = objects.orders.get_mut(&order_id).ok_or_else(|| RazorpayError::missing("order"))?;
            let amount = amount_of(body, "amount")?
                .ok_or_else(|| RazorpayError::bad("The amount field is required.", Some("amount")))?;
            if amount != order.amount {
                return Err(RazorpayError::bad("Order amount does not match the payment amount.", Some("amount")));
            }
            let currency = currency_of(body)?;
            let vpa = body
                .pointer("/upi/vpa")
                .or_else(|| body.get("vpa"))
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            if !matches!(vpa.as_str(), "success@razorpay" | "failure@razorpay") {
                return Err(RazorpayError::bad("Invalid VPA. Please enter a valid Virtual Payment Address", Some("vpa")));
            }
            order.attempts += 1;
            let payment = Payment {
                id: new_id("pay_"),
                order_id,
                amount,
                currency,
                status: "created",
                vpa,
                email: body.get("email").and_then(Value::as_str).map(str::to_string),
                notes: notes_of(body)?,
                amount_refunded: 0,
                fee: None,
                tax: None,
                error: None,
                captured_at: None,
                settled: false,
                created_at: now(),
            };
            let id = payment.id.clone();
            objects.payments.insert(id.clone(), payment);
            // The customer answers the collect request a moment after it was made,
            // whatever becomes of the reply.
            let (answered, shared, sim) = (id.clone(), shared.clone(), sim.clone());
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(APPROVAL_MS)).await;
                let events = lock(&shared).answer_collect(&answered);
                for (event, payload) in events {
                    announce(&sim, event, payload);
                }
            });
            Ok((json!({ "razorpay_payment_id": id, "next": [{ "action": "poll", "url": format!("https://api.razorpay.com/v1/payments/{id}/upi/status") }] }), Vec::new()))
        }),
    )
    .await
}

async fn fetch_payment(State(context): State<Context>, Path(id): Path<String>, headers: HeaderMap) -> Response {
    read(context, headers, move |objects| {
        let payment = objects.payments.get(&id).ok_or_else(|| RazorpayError::missing("payment"))?;
        Ok(payment.json())
    })
    .await
}

async fn capture_payment(
    State(context): State<Context>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    call(
        context,
        "capture",
        headers,
        body,
        Box::new(move |objects, body| {
            refuse_unknown(body, &["amount", "currency"])?;
            let payment = objects.payments.get(&id).ok_or_else(|| RazorpayError::missing("payment"))?;
            if payment.captured_at.is_some() {
                return Err(RazorpayError::bad("This payment has already been captured", None));
            }
            if payment.status != "authorized" {
                return Err(RazorpayError::bad(
                    "Only payments which have been authorized and not yet captured can be captured",
                    None,
                ));
            }
            let amount = amount_of(body, "amount")?
                .ok_or_else(|| RazorpayError::bad("The amount field is required.", Some("amount")))?;
            if amount != payment.amount {
                return Err(RazorpayError::bad(
                    "Capture amount must be equal to the amount authorized",
                    Some("amount"),
                ));
            }
            currency_of(body)?;
            let events = objects.capture(&id);
            let reply = objects.payments[&id].json();
            Ok((reply, events))
        }),
    )
    .await
}

async fn refund_payment(
    State(context): State<Context>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    call(
        context,
        "refund",
        headers,
        body,
        Box::new(move |objects, body| {
            refuse_unknown(body, &["amount", "speed", "notes", "receipt"])?;
            let payment = objects.payments.get(&id).ok_or_else(|| RazorpayError::missing("payment"))?;
            if payment.captured_at.is_none() {
                return Err(RazorpayError::bad("The payment has not been captured", None));
            }
            let left = payment.amount - payment.amount_refunded;
            let amount = amount_of(body, "amount")?.unwrap_or(left);
            if left == 0 {
                return Err(RazorpayError::bad("The payment has been fully refunded already", None));
            }
            if amount > left {
                return Err(RazorpayError::bad(
                    "The refund amount provided is greater than amount captured",
                    Some("amount"),
                ));
            }
            if !matches!(body.get("speed").and_then(Value::as_str).unwrap_or("normal"), "normal" | "optimum") {
                return Err(RazorpayError::bad("speed must be normal or optimum", Some("speed")));
            }
            let refund = Refund {
                id: new_id("rfnd_"),
                payment_id: id.clone(),
                amount,
                currency: payment.currency.clone(),
                notes: notes_of(body)?,
                settled: false,
                created_at: now(),
            };
            let payment = objects.payments.get_mut(&id).ok_or_else(|| RazorpayError::missing("payment"))?;
            payment.amount_refunded += amount;
            if payment.amount_refunded == payment.amount {
                payment.status = "refunded";
            }
            let payload = json!({ "refund": { "entity": refund.json() }, "payment": { "entity": payment.json() } });
            let reply = refund.json();
            objects.refunds.insert(refund.id.clone(), refund);
            Ok((reply, vec![("refund.created", payload.clone()), ("refund.processed", payload)]))
        }),
    )
    .await
}

async fn payment_refunds(
    State(context): State<Context>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    read(context, headers, move |objects| {
        let (count, skip, _) = page_of(query.as_deref())?;
        if !objects.payments.contains_key(&id) {
            return Err(RazorpayError::missing("payment"));
        }
        let items = objects
            .refunds
            .values()
            .filter(|refund| refund.payment_id == id)
            .map(|refund| (refund.created_at, refund.json()))
            .collect();
        Ok(paged(items, count, skip))
    })
    .await
}

async fn fetch_refund(State(context): State<Context>, Path(id): Path<String>, headers: HeaderMap) -> Response {
    read(context, headers, move |objects| {
        let refund = objects.refunds.get(&id).ok_or_else(|| RazorpayError::missing("refund"))?;
        Ok(refund.json())
    })
    .await
}

async fn list_settlements(State(context): State<Context>, RawQuery(query): RawQuery, headers: HeaderMap) -> Response {
    read(context, headers, move |objects| {
        let (count, skip, _) = page_of(query.as_deref())?;
        let items = objects.settlements.values().map(|settlement| (settlement.created_at, settlement.json())).collect();
        Ok(paged(items, count, skip))
    })
    .await
}

async fn fetch_settlement(State(context): State<Context>, Path(id): Path<String>, headers: HeaderMap) -> Response {
    read(context, headers, move |objects| {
        let settlement = objects.settlements.get(&id).ok_or_else(|| RazorpayError::missing("settlement"))?;
        Ok(settlement.json())
    })
    .await
}

/// `GET /v1/settlements/recon/combined?year&month[&day]`: every line settled on that day
/// (or month), in India Standard Time, in the order settled.
async fn recon(State(context): State<Context>, RawQuery(query): RawQuery, headers: HeaderMap) -> Response {
    call(
        context,
        "settlement_report",
        headers,
        Bytes::new(),
        Box::new(move |objects, _| {
            let (count, skip, filters) = page_of(query.as_deref())?;
            let number = |field: &str| -> Result<Option<i64>, RazorpayError> {
                filters
                    .get(field)
                    .map(|text| {
                        text.parse()
                            .map_err(|_| RazorpayError::bad(format!("The {field} must be an integer."), Some(field)))
                    })
                    .transpose()
            };
            let (Some(year), Some(month)) = (number("year")?, number("month")?) else {
                return Err(RazorpayError::bad("The year and month fields are required.", Some("year")));
            };
            let day = number("day")?;
            let offset = time::UtcOffset::from_whole_seconds(IST_OFFSET_SECONDS)
                .unwrap_or_else(|_| unreachable!("+05:30 is an offset"));
            let on_the_day = |at: i64| {
                let Ok(date) = OffsetDateTime::from_unix_timestamp(at).map(|at| at.to_offset(offset).date()) else {
                    return false;
                };
                i64::from(date.year()) == year
                    && i64::from(u8::from(date.month())) == month
                    && day.is_none_or(|day| i64::from(date.day()) == day)
            };
            let items: Vec<Value> = objects
                .recon
                .iter()
                .filter(|item| on_the_day(item.settled_at))
                .skip(skip)
                .take(count)
                .map(ReconItem::json)
                .collect();
            Ok((collection(items), Vec::new()))
        }),
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fee_is_two_percent_half_up_with_eighteen_percent_gst_on_it() {
        assert_eq!(fee(50_000), (1_000, 180));
        assert_eq!(fee(125), (3, 1));
        assert_eq!(fee(10_025), (201, 36));
    }

    #[test]
    fn only_basic_auth_with_a_test_key_and_a_secret_is_let_in() {
        let with = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::AUTHORIZATION, HeaderValue::from_str(value).expect("header"));
            headers
        };
        let basic = |text: &str| format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(text));
        assert!(authorised(&with(&basic("rzp_test_abc:secret"))));
        assert!(!authorised(&with(&basic("rzp_live_abc:secret"))));
        assert!(!authorised(&with(&basic("rzp_test_abc:"))));
        assert!(!authorised(&with(&basic("rzp_test_:secret"))));
        assert!(!authorised(&with("Bearer rzp_test_abc")));
        assert!(!authorised(&HeaderMap::new()));
    }
}
