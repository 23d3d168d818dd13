//! A UK Faster Payments provider, shaped on Modulr's public payments API (providers.md
//! §2.1): outbound payments to a sort code and account number, their statuses, and
//! Confirmation of Payee (§2.2). JSON bodies under `/fps/api/…`; any non-empty
//! `Authorization` is a test key (Modulr's HMAC request signing is not modelled).
//!
//! - `POST /api/payments` `{sourceAccountId, destination: {type: "SCAN", sortCode,
//!   accountNumber, name}, currency: "GBP", amount, reference, externalReference}`:
//!   `amount` is a JSON number in pounds (`10.5`), as Modulr takes it; `reference` is
//!   6 to 18 characters of letters, digits, `-`, `.`, `&`, `/` and space, not all the
//!   same. The answer is 201 with the payment `VALIDATED` (accepted, queued to the
//!   scheme). The header `x-mod-nonce` makes the create idempotent: the same nonce
//!   answers what the first request made, a different body with it is a 400.
//! - `GET /api/payments?id=P…` answers `{content: [payment]}`.
//! - After [`PROCESS_MS`] a payment is `PROCESSED` (final: the money left), or
//!   `ER_EXTFAIL` when the destination account does not exist (the CoP trigger account
//!   `00934897` below). The fault `return_after_paid` on `create` makes it `PROCESSED`,
//!   then `RETURNED` by the beneficiary's bank [`RETURN_MS`] later (Faster Payments
//!   cannot be recalled, but the receiving bank can return one it cannot apply). The
//!   fault `deemed` keeps it `VALIDATED` until `POST /_sim/fps/settle`.
//! - `POST /api/account-name-check` `{sortCode, accountNumber, name, accountType:
//!   "PERSONAL"|"BUSINESS"}` answers `{id, code, name}`: the Pay.UK CoP response code
//!   (`MATC`, `ANNM`, `MBAM`, `BANM`, `PANM`, `BAMM`, `PAMM`, `AC01`, `IVCR`, `ACNS`,
//!   `OPTO`, `CASS`, `SCNS`) and, for the close matches that return one, the name the
//!   bank holds. Sort code `123456` with accounts `00934891` to `00934902` answer
//!   those codes after `MATC`, in that order (Weavr's sandbox range; the order is the
//!   simulator's own); every other account matches the name asked.
//! - Webhooks, as Modulr's `PAYOUT` notification (docs/DECISIONS.md, "UK payouts hear
//!   from the rail too"): when a payment reaches `PROCESSED` or fails (`ER_…`), a JSON
//!   body `{EventName: "PAYOUT",
//!   EventTime, PaymentId, TransactionId, AccountId, Amount, Currency, Status,
//!   PaymentReference, ExternalReference}` is POSTed to the target, signed in
//!   `x-mod-signature` (hex HMAC-SHA256 of the body with the subscription's secret), with
//!   `x-mod-nonce` and `x-mod-retry: false`. A return is not a `PAYOUT`: Modulr reports
//!   it as a `PAYIN` of type `PO_REV` naming only the original's scheme id, so the
//!   simulator sends none and a return is found by asking (`GET /api/payments`).
//!
//! Operations in the call log and for faults: `cop`, `create`, `retrieve`, `webhook`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};
use time::OffsetDateTime;

use crate::calls::Call;
use crate::faults::{FaultKind, TIMEOUT_DEFAULT_MS};
use crate::{Provider, Sim};

const NAME: &str = "fps";
/// How long a validated payment takes to reach its final status.
pub const PROCESS_MS: u64 = 200;
/// How long after it was processed a `return_after_paid` payment comes back.
pub const RETURN_MS: u64 = 500;
/// The Faster Payments scheme limit: £1,000,000 (providers.md §2.1), in pence.
pub const SCHEME_LIMIT_PENCE: i64 = 100_000_000;
/// The CoP trigger sort code and the first trigger account (Weavr's sandbox range).
pub const TRIGGER_SORT_CODE: &str = "123456";
const TRIGGER_CODES: [&str; 12] =
    ["ANNM", "MBAM", "BANM", "PANM", "BAMM", "PAMM", "AC01", "IVCR", "ACNS", "OPTO", "CASS", "SCNS"];
const TRIGGER_FIRST: u32 = 934_891;
/// The account that does not exist: CoP answers `AC01`, a payment to it fails.
pub const MISSING_ACCOUNT: &str = "00934897";

#[derive(Default)]
pub struct Fps {
    state: Arc<Mutex<Objects>>,
    /// Set when the routes are made: the settle of the control API sends webhooks.
    sim: Arc<std::sync::OnceLock<Sim>>,
}

#[derive(Default)]
struct Objects {
    payments: HashMap<String, Value>,
    /// Saved answers by (API key, nonce): the request body and the reply.
    nonces: HashMap<(String, String), (Bytes, StatusCode, Value)>,
    /// Payments held `VALIDATED` by the `deemed` fault until a settle.
    held: Vec<String>,
}

#[derive(Clone)]
struct Context {
    sim: Sim,
    objects: Arc<Mutex<Objects>>,
}

impl Provider for Fps {
    fn name(&self) -> &'static str {
        NAME
    }

    fn routes(&self, sim: Sim) -> Router {
        let _ = self.sim.set(sim.clone());
        let context = Context { sim, objects: self.state.clone() };
        Router::new()
            .route("/api/payments", post(create_payment).get(list_payments))
            .route("/api/account-name-check", post(name_check))
            .with_state(context)
    }

    fn object(&self, id: &str) -> Option<Value> {
        lock(&self.state).payments.get(id).cloned()
    }

    /// Releases the payments the `deemed` fault held: each reaches its final status.
    fn settle(&self) -> usize {
        let finished: Vec<Value> = {
            let mut objects = lock(&self.state);
            let held = std::mem::take(&mut objects.held);
            held.iter()
                .filter_map(|id| {
                    let payment = objects.payments.get_mut(id)?;
                    finish(payment);
                    Some(payment.clone())
                })
                .collect()
        };
        if let Some(sim) = self.sim.get() {
            for payment in &finished {
                send_payout_webhook(sim, payment);
            }
        }
        finished.len()
    }
}

fn lock(objects: &Mutex<Objects>) -> std::sync::MutexGuard<'_, Objects> {
    objects.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn error(status: StatusCode, code: &str, message: impl Into<String>, field: Option<&str>) -> (StatusCode, Value) {
    // Modulr answers errors as a list of {field, code, message}.
    (status, json!([{ "field": field, "code": code, "message": message.into() }]))
}

fn new_id(prefix: char) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let mut bytes = [0_u8; 8];
    rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut bytes);
    let tail: String = bytes.iter().map(|byte| char::from(ALPHABET[usize::from(*byte) % ALPHABET.len()])).collect();
    format!("{prefix}{tail}")
}

fn api_key(headers: &HeaderMap) -> Option<String> {
    let key = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    (!key.is_empty()).then(|| key.to_string())
}

/// An amount in pounds as JSON writes it (`10`, `10.5`, `10.50`), in pence; never
/// through a float.
pub fn pence(text: &str) -> Option<i64> {
    let (whole, fraction) = match text.split_once('.') {
        Some((_, "")) => return None,
        Some(parts) => parts,
        None => (text, ""),
    };
    if whole.is_empty() || whole.len() > 12 || fraction.len() > 2 || !whole.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let pounds: i64 = whole.parse().ok()?;
    let pennies: i64 = format!("{fraction:0<2}").parse().ok()?;
    pounds.checked_mul(100)?.checked_add(pennies)
}

fn valid_reference(reference: &str) -> bool {
    let chars: Vec<char> = reference.chars().collect();
    (6..=18).contains(&chars.len())
        && chars.iter().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '&' | '/' | ' '))
        && chars.iter().any(|c| *c != chars[0])
}

/// The payment's final status, as the scheme decides it.
fn finish(payment: &mut Value) {
    let missing = payment["details"]["destination"]["accountNumber"] == MISSING_ACCOUNT;
    payment["status"] = json!(if missing { "ER_EXTFAIL" } else { "PROCESSED" });
    payment["approvalStatus"] = json!("NOTNEEDED");
}

/// Records the call, applies the fault armed for it before any effect, and answers it.
async fn preamble(
    context: &Context,
    operation: &'static str,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Option<FaultKind>, Response> {
    let fault = context.sim.faults.take(NAME, operation);
    let kind = fault.as_ref().map(|fault| fault.fault);
    let record = |status: Option<StatusCode>| {
        context.sim.calls.record(Call {
            provider: NAME,
            operation,
            idempotency_key: headers.get("x-mod-nonce").and_then(|value| value.to_str().ok()).map(str::to_string),
            body: String::from_utf8_lossy(body).into_owned(),
            status: status.map(|status| status.as_u16()),
            fault: kind.map(FaultKind::name),
            at: OffsetDateTime::now_utc(),
        });
    };
    if api_key(headers).is_none() {
        record(Some(StatusCode::UNAUTHORIZED));
        let (status, body) = error(StatusCode::UNAUTHORIZED, "UNAUTHORIZED", "Authorization is required", None);
        return Err((status, Json(body)).into_response());
    }
    let delay = Duration::from_millis(fault.as_ref().and_then(|fault| fault.delay_ms).unwrap_or(TIMEOUT_DEFAULT_MS));
    match kind {
        Some(FaultKind::Timeout) => {
            record(None);
            tokio::time::sleep(delay).await;
            Err(StatusCode::GATEWAY_TIMEOUT.into_response())
        }
        Some(FaultKind::Error500) => {
            record(Some(StatusCode::INTERNAL_SERVER_ERROR));
            let (status, body) = error(StatusCode::INTERNAL_SERVER_ERROR, "GENERAL_ERROR", "Internal error", None);
            Err((status, Json(body)).into_response())
        }
        Some(FaultKind::Error429) => {
            record(Some(StatusCode::TOO_MANY_REQUESTS));
            let mut response = (StatusCode::TOO_MANY_REQUESTS, Json(json!([]))).into_response();
            response.headers_mut().insert(header::RETRY_AFTER, axum::http::HeaderValue::from_static("1"));
            Err(response)
        }
        _ => {
            record(Some(StatusCode::OK));
            Ok(kind)
        }
    }
}

/// The reply after the effect, as the armed fault makes it.
async fn reply(kind: Option<FaultKind>, status: StatusCode, mut body: Value) -> Response {
    match kind {
        Some(FaultKind::TimeoutAfterEffect) => {
            tokio::time::sleep(Duration::from_millis(TIMEOUT_DEFAULT_MS)).await;
            StatusCode::GATEWAY_TIMEOUT.into_response()
        }
        Some(FaultKind::Malformed) => {
            (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], "{\"id\": \"P").into_response()
        }
        Some(FaultKind::UnknownStatus) if status.is_success() => {
            // A payment's status, or a name check's code, that the API does not have.
            if body.get("status").is_some() {
                body["status"] = json!("PENDING_FOR_REVIEW");
            }
            if body.get("code").is_some() {
                body["code"] = json!("XXXX");
            }
            (status, Json(body)).into_response()
        }
        _ => (status, Json(body)).into_response(),
    }
}

async fn create_payment(State(context): State<Context>, headers: HeaderMap, body: Bytes) -> Response {
    let kind = match preamble(&context, "create", &headers, &body).await {
        Ok(kind) => kind,
        Err(response) => return response,
    };
    let key = api_key(&headers).unwrap_or_default();
    let nonce = headers.get("x-mod-nonce").and_then(|value| value.to_str().ok()).map(str::to_string);
    let (status, answer) = {
        let mut objects = lock(&context.objects);
        let saved = nonce.as_ref().and_then(|nonce| objects.nonces.get(&(key.clone(), nonce.clone())).cloned());
        match saved {
            Some((first, status, answer)) if first == body => (status, answer),
            Some(_) => error(
                StatusCode::BAD_REQUEST,
                "DUPLICATE_NONCE",
                "x-mod-nonce was used for a different request",
                Some("x-mod-nonce"),
            ),
            None => {
                let (status, answer) = match new_payment(&body) {
                    Ok(payment) => {
                        let id = payment["id"].as_str().unwrap_or_default().to_string();
                        objects.payments.insert(id.clone(), payment.clone());
                        if kind == Some(FaultKind::Deemed) {
                            // Held undecided until a settle (under the lock this holds).
                            objects.held.push(id);
                        } else {
                            schedule(&context, id, kind);
                        }
                        (StatusCode::CREATED, payment)
                    }
                    Err(refused) => refused,
                };
                if let Some(nonce) = &nonce {
                    objects.nonces.insert((key, nonce.clone()), (body.clone(), status, answer.clone()));
                }
                (status, answer)
            }
        }
    };
    reply(kind, status, answer).await
}

/// Moves a new payment on to its final status, as the fault armed for its create says.
/// Called under the objects' lock: it only spawns what takes the lock later.
fn schedule(context: &Context, id: String, kind: Option<FaultKind>) {
    let objects = context.objects.clone();
    let sim = context.sim.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(PROCESS_MS)).await;
        let payment = {
            let mut objects = lock(&objects);
            let Some(payment) = objects.payments.get_mut(&id) else { return };
            finish(payment);
            payment.clone()
        };
        send_payout_webhook(&sim, &payment);
        let processed = payment["status"] == "PROCESSED";
        if processed && kind == Some(FaultKind::ReturnAfterPaid) {
            tokio::time::sleep(Duration::from_millis(RETURN_MS)).await;
            if let Some(payment) = lock(&objects).payments.get_mut(&id) {
                payment["status"] = json!("RETURNED");
                payment["returnReason"] = json!("BENEFICIARY_ACCOUNT_CLOSED");
            }
        }
    });
}

/// Sends Modulr's `PAYOUT` notification about `payment`'s final status, signed.
fn send_payout_webhook(sim: &Sim, payment: &Value) {
    let Some(secret) = sim.webhooks.secret(NAME) else { return };
    let now = OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).unwrap_or_default();
    let status = payment["status"].as_str().unwrap_or_default();
    let event = json!({
        "EventName": "PAYOUT",
        "EventTime": now,
        "PaymentId": payment["id"],
        "TransactionId": (status == "PROCESSED").then(|| new_id('T')),
        "AccountId": payment["details"]["sourceAccountId"],
        "Amount": payment["details"]["amount"],
        "Currency": "GBP",
        "Status": status,
        "PaymentReference": payment["details"]["reference"],
        "ExternalReference": payment["externalReference"],
    });
    let body = event.to_string().into_bytes();
    let headers = vec![
        ("content-type", "application/json".to_string()),
        ("x-mod-signature", crate::razorpay::sign(&secret, &body)),
        ("x-mod-nonce", new_id('N')),
        ("x-mod-retry", "false".to_string()),
    ];
    sim.webhooks.send(&sim.faults, NAME, "PAYOUT", crate::webhooks::Webhook { body, headers });
}

fn new_payment(body: &[u8]) -> Result<Value, (StatusCode, Value)> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    struct Destination {
        r#type: String,
        sort_code: String,
        account_number: String,
        name: String,
    }
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    struct Request {
        source_account_id: String,
        destination: Destination,
        currency: String,
        amount: Box<serde_json::value::RawValue>,
        reference: String,
        external_reference: Option<String>,
    }
    let bad = |field: &str, message: &str| error(StatusCode::BAD_REQUEST, "FIELD_INVALID", message, Some(field));
    let request: Request = serde_json::from_slice(body).map_err(|e| bad("body", &format!("not a payment: {e}")))?;
    if request.destination.r#type != "SCAN" {
        return Err(bad("destination.type", "only SCAN destinations are supported"));
    }
    let digits = |text: &str, n: usize| text.len() == n && text.bytes().all(|b| b.is_ascii_digit());
    if !digits(&request.destination.sort_code, 6) {
        return Err(bad("destination.sortCode", "a sort code is 6 digits"));
    }
    if !digits(&request.destination.account_number, 8) {
        return Err(bad("destination.accountNumber", "an account number is 8 digits"));
    }
    if request.destination.name.trim().is_empty() || request.destination.name.chars().count() > 140 {
        return Err(bad("destination.name", "a name is 1 to 140 characters"));
    }
    if request.currency != "GBP" {
        return Err(bad("currency", "Faster Payments are in GBP"));
    }
    let Some(amount) = pence(request.amount.get()).filter(|amount| (1..=SCHEME_LIMIT_PENCE).contains(amount)) else {
        return Err(bad("amount", "amount is 0.01 to 1000000.00 pounds"));
    };
    if !valid_reference(&request.reference) {
        return Err(bad("reference", "reference is 6 to 18 letters, digits, - . & / or spaces, not all the same"));
    }
    if request.external_reference.as_ref().is_some_and(|text| text.chars().count() > 50) {
        return Err(bad("externalReference", "externalReference is at most 50 characters"));
    }
    let id = new_id('P');
    let created = OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).unwrap_or_default();
    Ok(json!({
        "id": id,
        "status": "VALIDATED",
        "createdDate": created,
        "externalReference": request.external_reference,
        "details": {
            "sourceAccountId": request.source_account_id,
            "destinationType": "SCAN",
            "destination": {
                "type": "SCAN",
                "sortCode": request.destination.sort_code,
                "accountNumber": request.destination.account_number,
                "name": request.destination.name,
            },
            "currency": "GBP",
            "amount": serde_json::from_str::<Value>(&format!("{}.{:02}", amount / 100, amount % 100)).unwrap_or(Value::Null),
            "reference": request.reference,
        },
    }))
}

async fn list_payments(State(context): State<Context>, RawQuery(query): RawQuery, headers: HeaderMap) -> Response {
    let kind = match preamble(&context, "retrieve", &headers, &Bytes::new()).await {
        Ok(kind) => kind,
        Err(response) => return response,
    };
    let id = query.as_deref().unwrap_or_default().split('&').find_map(|pair| pair.strip_prefix("id="));
    let Some(id) = id.filter(|id| !id.is_empty()) else {
        let (status, body) = error(StatusCode::BAD_REQUEST, "FIELD_REQUIRED", "id is required", Some("id"));
        return (status, Json(body)).into_response();
    };
    let found: Vec<Value> = lock(&context.objects).payments.get(id).cloned().into_iter().collect();
    let mut page = json!({ "content": found, "size": found.len(), "totalSize": found.len() });
    if kind == Some(FaultKind::UnknownStatus) {
        if let Some(first) = page["content"].get_mut(0) {
            first["status"] = json!("PENDING_FOR_REVIEW");
        }
        return (StatusCode::OK, Json(page)).into_response();
    }
    reply(kind, StatusCode::OK, page).await
}

async fn name_check(State(context): State<Context>, headers: HeaderMap, body: Bytes) -> Response {
    let kind = match preamble(&context, "cop", &headers, &body).await {
        Ok(kind) => kind,
        Err(response) => return response,
    };
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    struct Request {
        sort_code: String,
        account_number: String,
        name: String,
        account_type: String,
    }
    let request: Request = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(problem) => {
            let (status, body) =
                error(StatusCode::BAD_REQUEST, "FIELD_INVALID", format!("not a name check: {problem}"), None);
            return (status, Json(body)).into_response();
        }
    };
    if !matches!(request.account_type.as_str(), "PERSONAL" | "BUSINESS") {
        let (status, body) =
            error(StatusCode::BAD_REQUEST, "FIELD_INVALID", "accountType is PERSONAL or BUSINESS", Some("accountType"));
        return (status, Json(body)).into_response();
    }
    let trigger = (request.sort_code == TRIGGER_SORT_CODE)
        .then(|| request.account_number.parse::<u32>().ok())
        .flatten()
        .and_then(|number| number.checked_sub(TRIGGER_FIRST))
        .and_then(|index| TRIGGER_CODES.get(usize::try_from(index).ok()?));
    let code = trigger.copied().unwrap_or("MATC");
    // The close matches that return the name the bank holds: the name asked, as a bank
    // would hold it for a near miss.
    let name = matches!(code, "MBAM" | "BAMM" | "PAMM").then(|| format!("{} Limited", request.name.trim()));
    let answer = json!({ "id": new_id('C'), "code": code, "name": name });
    reply(kind, StatusCode::OK, answer).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pounds_read_as_pence_without_floats() {
        assert_eq!(pence("10"), Some(1000));
        assert_eq!(pence("10.5"), Some(1050));
        assert_eq!(pence("10.05"), Some(1005));
        assert_eq!(pence("0.01"), Some(1));
        for bad in ["", ".5", "10.", "1.005", "-1", "1e3", "1,00", "99999999999999"] {
            assert_eq!(pence(bad), None, "{bad}");
        }
    }

    #[test]
    fn references_follow_the_scheme() {
        assert!(valid_reference("INV-2026/001"));
        assert!(!valid_reference("short"));
        assert!(!valid_reference("aaaaaaaa"));
        assert!(!valid_reference("nineteen characters"));
        assert!(!valid_reference("bad_underscore"));
    }
}
