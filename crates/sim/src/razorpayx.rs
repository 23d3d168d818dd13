//! RazorpayX Payouts, for India (providers.md §3): contacts, fund accounts, fund-account
//! validation and payouts over IMPS or UPI, under `/razorpayx/v1/…`, with Razorpay's
//! Basic auth (`rzp_test_…` and any secret) and error object.
//!
//! - `POST /v1/contacts` `{name, type?, reference_id?, email?, contact?}` and
//!   `POST /v1/fund_accounts` `{contact_id, account_type: "bank_account", bank_account:
//!   {name, ifsc, account_number}}` or `{…, account_type: "vpa", vpa: {address}}`: as
//!   RazorpayX does, the same details again answer the object already made (200), so a
//!   retry makes nothing twice.
//! - `POST /v1/fund_accounts/validations` `{account_number, fund_account: {id}, amount,
//!   currency: "INR"}` (a penny drop, or a VPA check) answers `completed` with
//!   `results: {account_status: "active"|"invalid", registered_name}`. The simulator's
//!   own triggers: an account number starting `000`, or a VPA whose username is
//!   `invalid`, is `invalid`; one ending `9999`, or a VPA username `othername`, is held
//!   by "{name} Traders" (a name that is not the one given).
//! - `POST /v1/payouts` `{account_number, fund_account_id, amount (paise, ≥ 100),
//!   currency: "INR", mode: "IMPS"|"UPI", purpose, reference_id?, narration?, notes?,
//!   queue_if_low_balance?}` with `X-Payout-Idempotency` (mandatory since 15 Mar 2025;
//!   4 to 36 of `A-Z a-z 0-9 - _` and space; the same key with another body is a 400):
//!   `processing`, then after [`PROCESS_MS`] `processed` with a UTR, fees and tax, or
//!   `reversed` when the account is one the validation calls invalid. IMPS takes up to
//!   ₹5 lakh and UPI ₹1 lakh (§3.1). Faults on `create`: `return_after_paid` makes it
//!   `processed`, then `reversed` [`REVERSE_MS`] later (RazorpayX's processed → reversed);
//!   `deemed` keeps it `processing` (`beneficiary_bank_confirmation_pending`) until
//!   `POST /_sim/razorpayx/settle`.
//! - `GET /v1/payouts/{id}`.
//! - Webhooks `payout.initiated`, `payout.processed`, `payout.reversed`, signed as
//!   Razorpay signs (`X-Razorpay-Signature`, `X-Razorpay-Event-Id`).
//!
//! Operations in the call log and for faults: `contact`, `fund_account`, `validate`,
//! `create`, `retrieve`, `webhook`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use time::OffsetDateTime;

use crate::calls::Call;
use crate::faults::{FaultKind, TIMEOUT_DEFAULT_MS};
use crate::razorpay::{authorised, before_effect, new_id, sign};
use crate::{Provider, Sim};

const NAME: &str = "razorpayx";
/// How long a payout takes to reach its final status.
pub const PROCESS_MS: u64 = 200;
/// How long after it was processed a `return_after_paid` payout is reversed.
pub const REVERSE_MS: u64 = 500;
/// IMPS's limit per payout: ₹5 lakh (providers.md §3.1), in paise.
pub const IMPS_LIMIT_PAISE: i64 = 50_000_000;
/// UPI's limit per payment to a person: ₹1 lakh (§3.1), in paise.
pub const UPI_LIMIT_PAISE: i64 = 10_000_000;

#[derive(Default)]
pub struct RazorpayX {
    state: Arc<Mutex<Objects>>,
    /// Set when the routes are made: the settle of the control API sends webhooks.
    sim: Arc<std::sync::OnceLock<Sim>>,
}

#[derive(Default)]
struct Objects {
    contacts: HashMap<String, Value>,
    fund_accounts: HashMap<String, Value>,
    validations: HashMap<String, Value>,
    payouts: HashMap<String, Value>,
    /// Saved answers by idempotency key: the request body and the reply.
    keys: HashMap<String, (Value, StatusCode, Value)>,
    /// Payouts the `deemed` fault holds in `processing` until a settle.
    held: Vec<String>,
}

#[derive(Clone)]
struct Context {
    sim: Sim,
    objects: Arc<Mutex<Objects>>,
}

impl Provider for RazorpayX {
    fn name(&self) -> &'static str {
        NAME
    }

    fn routes(&self, sim: Sim) -> Router {
        let _ = self.sim.set(sim.clone());
        let context = Context { sim, objects: self.state.clone() };
        Router::new()
            .route("/v1/contacts", post(create_contact))
            .route("/v1/fund_accounts", post(create_fund_account))
            .route("/v1/fund_accounts/validations", post(validate))
            .route("/v1/payouts", post(create_payout))
            .route("/v1/payouts/{id}", get(fetch_payout))
            .with_state(context)
    }

    fn object(&self, id: &str) -> Option<Value> {
        let objects = lock(&self.state);
        [&objects.payouts, &objects.fund_accounts, &objects.contacts, &objects.validations]
            .iter()
            .find_map(|map| map.get(id).cloned())
    }

    /// Releases the payouts the `deemed` fault held: each is processed.
    fn settle(&self) -> usize {
        let held = std::mem::take(&mut lock(&self.state).held);
        let Some(sim) = self.sim.get() else { return 0 };
        for id in &held {
            finish(sim, &self.state, id, false);
        }
        held.len()
    }
}

fn lock(objects: &Mutex<Objects>) -> std::sync::MutexGuard<'_, Objects> {
    objects.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn now() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

/// Razorpay's error object.
struct Refusal {
    status: StatusCode,
    body: Value,
}

fn bad(description: impl Into<String>, field: Option<&str>) -> Refusal {
    Refusal {
        status: StatusCode::BAD_REQUEST,
        body: json!({ "error": {
            "code": "BAD_REQUEST_ERROR", "description": description.into(), "source": "business",
            "step": "payout_initiation", "reason": "input_validation_failed", "metadata": {}, "field": field,
        } }),
    }
}

fn text<'a>(body: &'a Value, field: &str) -> Result<&'a str, Refusal> {
    body.get(field)
        .and_then(Value::as_str)
        .filter(|text| !text.trim().is_empty())
        .ok_or_else(|| bad(format!("The {field} field is required."), Some(field)))
}

fn refuse_unknown(body: &Value, known: &[&str]) -> Result<(), Refusal> {
    let unknown = body.as_object().into_iter().flat_map(|map| map.keys()).find(|key| !known.contains(&key.as_str()));
    match unknown {
        Some(key) => Err(bad(format!("{key} is/are not required and should not be sent"), Some(key))),
        None => Ok(()),
    }
}

/// What a call does to the objects, knowing the fault armed for it.
type Effect<'a> =
    Box<dyn FnOnce(&mut Objects, &Value, Option<FaultKind>) -> Result<(StatusCode, Value), Refusal> + Send + 'a>;

/// One call: authentication, the fault armed for it, the effect, the reply.
async fn call(
    context: &Context,
    operation: &'static str,
    headers: &HeaderMap,
    body: &Bytes,
    effect: Effect<'_>,
) -> Response {
    let fault = context.sim.faults.take(NAME, operation);
    let kind = fault.as_ref().map(|fault| fault.fault);
    let key = headers.get("x-payout-idempotency").and_then(|value| value.to_str().ok()).map(str::to_string);
    let record = |status: Option<StatusCode>| {
        context.sim.calls.record(Call {
            provider: NAME,
            operation,
            idempotency_key: key.clone(),
            body: String::from_utf8_lossy(body).into_owned(),
            status: status.map(|status| status.as_u16()),
            fault: kind.map(FaultKind::name),
            at: OffsetDateTime::now_utc(),
        });
    };
    if !authorised(headers) {
        record(Some(StatusCode::UNAUTHORIZED));
        let body = json!({ "error": { "code": "BAD_REQUEST_ERROR", "description": "Authentication failed" } });
        return (StatusCode::UNAUTHORIZED, Json(body)).into_response();
    }
    let delay = Duration::from_millis(fault.as_ref().and_then(|fault| fault.delay_ms).unwrap_or(TIMEOUT_DEFAULT_MS));
    if let Some((status, response)) = before_effect(kind, delay).await {
        record(status);
        return response;
    }
    let parsed: Value = if body.is_empty() {
        json!({})
    } else {
        match serde_json::from_slice(body) {
            Ok(value @ Value::Object(_)) => value,
            _ => {
                record(Some(StatusCode::BAD_REQUEST));
                let refusal = bad("The request body is not a JSON object", None);
                return (refusal.status, Json(refusal.body)).into_response();
            }
        }
    };
    let (status, mut reply) = {
        let mut objects = lock(&context.objects);
        effect(&mut objects, &parsed, kind).unwrap_or_else(|refusal| (refusal.status, refusal.body))
    };
    record(Some(status));
    match kind {
        Some(FaultKind::TimeoutAfterEffect) => {
            tokio::time::sleep(delay).await;
            return StatusCode::GATEWAY_TIMEOUT.into_response();
        }
        Some(FaultKind::Malformed) => {
            return (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], "{\"entity\": \"pay")
                .into_response();
        }
        _ if reply.get("error").is_some() => {}
        Some(FaultKind::WrongAmount) => {
            if let Some(amount) = reply.get("amount").and_then(Value::as_i64) {
                reply["amount"] = json!(amount + 1);
            }
        }
        Some(FaultKind::WrongCurrency) => reply["currency"] = json!("USD"),
        Some(FaultKind::UnknownStatus) => reply["status"] = json!("requires_reconsideration"),
        _ => {}
    }
    (status, Json(reply)).into_response()
}

async fn create_contact(State(context): State<Context>, headers: HeaderMap, body: Bytes) -> Response {
    call(
        &context,
        "contact",
        &headers,
        &body,
        Box::new(|objects, body, _| {
            refuse_unknown(body, &["name", "type", "reference_id", "email", "contact", "notes"])?;
            let name = text(body, "name")?;
            if name.chars().count() > 50 {
                return Err(bad("The name may not be greater than 50 characters.", Some("name")));
            }
            let same = |contact: &&Value| {
                ["name", "type", "reference_id", "email", "contact"].iter().all(|field| contact[*field] == body[*field])
            };
            if let Some(existing) = objects.contacts.values().find(same) {
                return Ok((StatusCode::OK, existing.clone()));
            }
            let id = new_id("cont_");
            let contact = json!({
                "id": id, "entity": "contact", "name": name, "type": body["type"],
                "reference_id": body["reference_id"], "email": body["email"], "contact": body["contact"],
                "notes": body.get("notes").cloned().unwrap_or(json!([])), "active": true, "created_at": now(),
            });
            objects.contacts.insert(id, contact.clone());
            Ok((StatusCode::CREATED, contact))
        }),
    )
    .await
}

fn ifsc_ok(ifsc: &str) -> bool {
    let bytes = ifsc.as_bytes();
    bytes.len() == 11
        && bytes[..4].iter().all(u8::is_ascii_uppercase)
        && bytes[4] == b'0'
        && bytes[5..].iter().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
}

async fn create_fund_account(State(context): State<Context>, headers: HeaderMap, body: Bytes) -> Response {
    call(
        &context,
        "fund_account",
        &headers,
        &body,
        Box::new(|objects, body, _| {
            refuse_unknown(body, &["contact_id", "account_type", "bank_account", "vpa"])?;
            let contact_id = text(body, "contact_id")?;
            if !objects.contacts.contains_key(contact_id) {
                return Err(bad("The id provided does not exist", Some("contact_id")));
            }
            let mut account = json!({ "contact_id": contact_id, "account_type": body["account_type"] });
            match text(body, "account_type")? {
                "bank_account" => {
                    let bank = &body["bank_account"];
                    let (name, ifsc, number) =
                        (text(bank, "name")?, text(bank, "ifsc")?, text(bank, "account_number")?);
                    if !ifsc_ok(ifsc) {
                        return Err(bad("The ifsc must be 11 characters, a valid IFSC code", Some("ifsc")));
                    }
                    if !(5..=35).contains(&number.len()) || !number.bytes().all(|b| b.is_ascii_alphanumeric()) {
                        return Err(bad("The account number is invalid", Some("account_number")));
                    }
                    account["bank_account"] = json!({
                        "ifsc": ifsc, "bank_name": format!("{} Bank", ifsc.get(..4).unwrap_or_default()), "name": name,
                        "account_number": number, "notes": [],
                    });
                }
                "vpa" => {
                    let address = text(&body["vpa"], "address")?;
                    let Some((username, handle)) = address.split_once('@') else {
                        return Err(bad("Invalid VPA. Please enter a valid Virtual Payment Address", Some("address")));
                    };
                    account["vpa"] = json!({ "username": username, "handle": handle, "address": address });
                }
                _ => return Err(bad("Invalid account type", Some("account_type"))),
            }
            let same = |existing: &&Value| {
                ["contact_id", "account_type", "bank_account", "vpa"].iter().all(|field| {
                    let theirs = existing.get(*field).cloned().unwrap_or(Value::Null);
                    let ours = account.get(*field).cloned().unwrap_or(Value::Null);
                    theirs == ours
                })
            };
            if let Some(existing) = objects.fund_accounts.values().find(same) {
                return Ok((StatusCode::OK, existing.clone()));
            }
            let id = new_id("fa_");
            account["id"] = json!(id);
            account["entity"] = json!("fund_account");
            account["active"] = json!(true);
            account["created_at"] = json!(now());
            objects.fund_accounts.insert(id, account.clone());
            Ok((StatusCode::CREATED, account))
        }),
    )
    .await
}

/// Whether the account behind a fund account exists, and whose it is (the triggers).
fn holder(account: &Value, contact: Option<&Value>) -> (bool, String) {
    let given = account["bank_account"]["name"]
        .as_str()
        .or_else(|| contact.and_then(|contact| contact["name"].as_str()))
        .unwrap_or("Account Holder")
        .to_string();
    if let Some(number) = account["bank_account"]["account_number"].as_str() {
        if number.starts_with("000") {
            return (false, String::new());
        }
        if number.ends_with("9999") {
            return (true, format!("{given} Traders"));
        }
    }
    match account["vpa"]["username"].as_str() {
        Some("invalid") => (false, String::new()),
        Some("othername") => (true, format!("{given} Traders")),
        _ => (true, given),
    }
}

async fn validate(State(context): State<Context>, headers: HeaderMap, body: Bytes) -> Response {
    call(
        &context,
        "validate",
        &headers,
        &body,
        Box::new(|objects, body, _| {
            refuse_unknown(body, &["account_number", "fund_account", "amount", "currency", "notes"])?;
            text(body, "account_number")?;
            let fund_account_id = text(&body["fund_account"], "id")?;
            let Some(account) = objects.fund_accounts.get(fund_account_id).cloned() else {
                return Err(bad("The id provided does not exist", Some("fund_account.id")));
            };
            if body.get("currency").is_some_and(|currency| currency != "INR") {
                return Err(bad("Currency must be INR", Some("currency")));
            }
            let contact = account["contact_id"].as_str().and_then(|id| objects.contacts.get(id));
            let (active, registered) = holder(&account, contact);
            let id = new_id("fav_");
            let validation = json!({
                "id": id, "entity": "fund_account.validation", "fund_account": account,
                "status": "completed", "amount": body.get("amount").cloned().unwrap_or(json!(100)),
                "currency": "INR", "notes": body.get("notes").cloned().unwrap_or(json!([])),
                "results": {
                    "account_status": if active { "active" } else { "invalid" },
                    "registered_name": if active { json!(registered) } else { Value::Null },
                },
                "created_at": now(), "utr": new_id(""),
            });
            objects.validations.insert(id, validation.clone());
            Ok((StatusCode::OK, validation))
        }),
    )
    .await
}

fn key_ok(key: &str) -> bool {
    (4..=36).contains(&key.len()) && key.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b' '))
}

async fn create_payout(State(context): State<Context>, headers: HeaderMap, body: Bytes) -> Response {
    let key = headers.get("x-payout-idempotency").and_then(|value| value.to_str().ok()).map(str::to_string);
    let sim = context.sim.clone();
    let objects_handle = context.objects.clone();
    call(
        &context,
        "create",
        &headers,
        &body,
        Box::new(move |objects, body, fault| {
            let Some(key) = key else {
                return Err(bad("The X-Payout-Idempotency header is required", Some("X-Payout-Idempotency")));
            };
            if !key_ok(&key) {
                return Err(bad(
                    "The X-Payout-Idempotency must be 4 to 36 letters, digits, - _ or spaces",
                    Some("X-Payout-Idempotency"),
                ));
            }
            if let Some((first, status, answer)) = objects.keys.get(&key) {
                if first != body {
                    return Err(bad(
                        "Different request body sent for the same Idempotency Header",
                        Some("X-Payout-Idempotency"),
                    ));
                }
                return Ok((*status, answer.clone()));
            }
            let (status, answer) = match new_payout(objects, body) {
                Ok(payout) => {
                    let id = payout["id"].as_str().unwrap_or_default().to_string();
                    objects.payouts.insert(id.clone(), payout.clone());
                    send(&sim, "payout.initiated", &payout);
                    if fault == Some(FaultKind::Deemed) {
                        objects.held.push(id);
                    } else {
                        schedule(sim.clone(), objects_handle, id, fault);
                    }
                    (StatusCode::OK, payout)
                }
                Err(refusal) => (refusal.status, refusal.body),
            };
            objects.keys.insert(key, (body.clone(), status, answer.clone()));
            Ok((status, answer))
        }),
    )
    .await
}

fn new_payout(objects: &Objects, body: &Value) -> Result<Value, Refusal> {
    refuse_unknown(
        body,
        &[
            "account_number",
            "fund_account_id",
            "amount",
            "currency",
            "mode",
            "purpose",
            "queue_if_low_balance",
            "reference_id",
            "narration",
            "notes",
        ],
    )?;
    text(body, "account_number")?;
    let fund_account_id = text(body, "fund_account_id")?;
    let Some(account) = objects.fund_accounts.get(fund_account_id) else {
        return Err(bad("The id provided does not exist", Some("fund_account_id")));
    };
    let Some(amount) = body.get("amount").and_then(Value::as_i64).filter(|amount| *amount >= 100) else {
        return Err(bad("The amount must be at least 100 (in paise)", Some("amount")));
    };
    if body.get("currency") != Some(&json!("INR")) {
        return Err(bad("Currency must be INR", Some("currency")));
    }
    let mode = text(body, "mode")?;
    let (limit, wants) = match mode {
        "IMPS" => (IMPS_LIMIT_PAISE, "bank_account"),
        "UPI" => (UPI_LIMIT_PAISE, "vpa"),
        _ => return Err(bad("The mode must be IMPS or UPI", Some("mode"))),
    };
    if account["account_type"] != wants {
        return Err(bad(format!("{mode} pays a fund account of type {wants}"), Some("mode")));
    }
    if amount > limit {
        return Err(bad(format!("The amount is more than {mode} takes ({limit} paise)"), Some("amount")));
    }
    text(body, "purpose")?;
    if let Some(narration) = body.get("narration").and_then(Value::as_str) {
        if narration.chars().count() > 30 || !narration.chars().all(|c| c.is_ascii_alphanumeric() || c == ' ') {
            return Err(bad("The narration is at most 30 letters, digits or spaces", Some("narration")));
        }
    }
    if body.get("reference_id").and_then(Value::as_str).is_some_and(|reference| reference.chars().count() > 40) {
        return Err(bad("The reference_id may not be greater than 40 characters.", Some("reference_id")));
    }
    Ok(json!({
        "id": new_id("pout_"), "entity": "payout", "fund_account_id": fund_account_id,
        "amount": amount, "currency": "INR", "notes": body.get("notes").cloned().unwrap_or(json!([])),
        "fees": 0, "tax": 0, "status": "processing", "purpose": body["purpose"], "utr": null, "mode": mode,
        "reference_id": body["reference_id"], "narration": body["narration"], "batch_id": null,
        "failure_reason": null,
        "status_details": { "reason": "payout_bank_processing", "description": "Payout is being processed by the bank.", "source": "beneficiary_bank" },
        "created_at": now(),
    }))
}

/// Moves a new payout on to its final status, as the fault armed for its create says.
fn schedule(sim: Sim, objects: Arc<Mutex<Objects>>, id: String, fault: Option<FaultKind>) {
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(PROCESS_MS)).await;
        let processed = finish(&sim, &objects, &id, false);
        if processed && fault == Some(FaultKind::ReturnAfterPaid) {
            tokio::time::sleep(Duration::from_millis(REVERSE_MS)).await;
            finish(&sim, &objects, &id, true);
        }
    });
}

/// The payout's final status as the bank decides it (`reverse`: a processed payout the
/// bank sends back); true when it was processed.
fn finish(sim: &Sim, objects: &Mutex<Objects>, id: &str, reverse: bool) -> bool {
    let (event, payout) = {
        let mut objects = lock(objects);
        let Some(payout) = objects.payouts.get(id).cloned() else { return false };
        let account = payout["fund_account_id"].as_str().and_then(|id| objects.fund_accounts.get(id)).cloned();
        let exists = account.as_ref().is_some_and(|account| holder(account, None).0);
        let Some(payout) = objects.payouts.get_mut(id) else { return false };
        let (fees, tax) = (if payout["mode"] == "UPI" { 300 } else { 500 }, 90);
        if reverse || !exists {
            payout["status"] = json!("reversed");
            payout["failure_reason"] = json!("Beneficiary bank rejected the credit");
            payout["status_details"] = json!({ "reason": "beneficiary_bank_rejected",
                "description": "The beneficiary bank rejected the credit.", "source": "beneficiary_bank" });
            ("payout.reversed", payout.clone())
        } else {
            payout["status"] = json!("processed");
            payout["utr"] = json!(new_id(""));
            payout["fees"] = json!(fees);
            payout["tax"] = json!(tax);
            payout["status_details"] = Value::Null;
            ("payout.processed", payout.clone())
        }
    };
    send(sim, event, &payout);
    event == "payout.processed"
}

/// Sends RazorpayX's event of `kind` about `payout`, signed as Razorpay signs.
fn send(sim: &Sim, kind: &str, payout: &Value) {
    let Some(secret) = sim.webhooks.secret(NAME) else { return };
    let event = json!({
        "entity": "event", "account_id": "acc_SimulatorTill1", "event": kind, "contains": ["payout"],
        "payload": { "payout": { "entity": payout } }, "created_at": now(),
    });
    let body = event.to_string().into_bytes();
    let headers = vec![
        ("content-type", "application/json".to_string()),
        ("x-razorpay-signature", sign(&secret, &body)),
        ("x-razorpay-event-id", new_id("")),
    ];
    sim.webhooks.send(&sim.faults, NAME, kind, crate::webhooks::Webhook { body, headers });
}

async fn fetch_payout(State(context): State<Context>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    call(
        &context,
        "retrieve",
        &headers,
        &Bytes::new(),
        Box::new(move |objects, _, _| match objects.payouts.get(&id) {
            Some(payout) => Ok((StatusCode::OK, payout.clone())),
            None => Err(Refusal {
                status: StatusCode::BAD_REQUEST,
                body: json!({ "error": { "code": "BAD_REQUEST_ERROR", "description": "The id provided does not exist",
                    "field": "id" } }),
            }),
        }),
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idempotency_keys_follow_razorpayx() {
        assert!(key_ok("po_0193"));
        assert!(key_ok("a b-c_d"));
        assert!(!key_ok("abc"), "3 characters");
        assert!(!key_ok(&"a".repeat(37)), "37 characters");
        assert!(!key_ok("abc#d"), "a #");
    }

    #[test]
    fn the_triggers_decide_the_holder() {
        let bank = |number: &str| json!({"bank_account": {"name": "Asha Rao", "account_number": number}});
        assert_eq!(holder(&bank("123456789"), None), (true, "Asha Rao".to_string()));
        assert!(!holder(&bank("000123456"), None).0);
        assert_eq!(holder(&bank("123459999"), None), (true, "Asha Rao Traders".to_string()));
        let vpa = |username: &str| json!({"vpa": {"username": username}});
        let contact = json!({"name": "Asha Rao"});
        assert!(!holder(&vpa("invalid"), Some(&contact)).0);
        assert_eq!(holder(&vpa("asha"), Some(&contact)), (true, "Asha Rao".to_string()));
    }
}
