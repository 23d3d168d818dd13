//! An SMS provider, shaped on Twilio's Programmable Messaging REST API (the Message
//! resource, API version 2010-04-01), under `/sms/…`:
//!
//! - `POST /2010-04-01/Accounts/{AccountSid}/Messages.json`, HTTP Basic auth with the
//!   account SID (`AC…`, the one in the path) and any non-empty auth token; a form body
//!   with `To` (E.164), `From` (E.164) or `MessagingServiceSid` (`MG…`), `Body` (1 to
//!   1 600 characters) and optionally `StatusCallback` (a URL). The answer is 201 with the
//!   Message resource (`sid` `SM` + 32 hex digits, `status: "queued"`, `to`, `from`,
//!   `body`, `num_segments`, `date_created`, …). Errors are Twilio's error object
//!   `{code, message, more_info, status}`: 21211 for a `To` that is not a phone number,
//!   21614 for one that cannot receive SMS (`+15005550009`, Twilio's magic test number),
//!   21602 for a missing `Body`, 20003 for bad credentials. Twilio takes no idempotency
//!   key: a create sent twice is two messages.
//! - `GET /2010-04-01/Accounts/{AccountSid}/Messages/{Sid}.json`: the message now.
//! - `GET /2010-04-01/Accounts/{AccountSid}/Messages.json?To=…&PageSize=…`: the account's
//!   messages, newest first, as Twilio pages them (`messages`, `page`, `page_size`,
//!   `next_page_uri`), filtered by `To` and `From`.
//! - After [`STEP_MS`] a message is `sent`, and after another `delivered` — or
//!   `undelivered` with `ErrorCode` 30003 (unreachable handset) for [`UNREACHABLE`].
//!   Each change is POSTed to the message's `StatusCallback` as Twilio does: a form body
//!   (`MessageSid`, `SmsSid`, `AccountSid`, `From`, `To`, `MessageStatus`, `SmsStatus`,
//!   `ApiVersion`, and `ErrorCode` when it failed), signed in `X-Twilio-Signature`:
//!   base64 of HMAC-SHA1, keyed with the auth token, over the callback URL followed by
//!   each parameter's name and value, sorted by name ([`signature`]). The auth token the
//!   simulator signs with is the webhook target's secret for `sms`
//!   (`POST /_sim/webhooks`); without one, no callbacks are sent.
//!
//! Operations in the call log and for faults: `create`, `retrieve`, `list`, `webhook`.

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
use crate::{Provider, Sim};

const NAME: &str = "sms";
/// How long each step of a message (queued → sent → delivered) takes.
pub const STEP_MS: u64 = 200;
/// A number that takes the message but whose handset is never reached: `undelivered`, 30003.
pub const UNREACHABLE: &str = "+447700900999";
/// Twilio's magic test number that cannot receive SMS: the create is refused, 21614.
pub const NOT_MOBILE: &str = "+15005550009";
const BODY_CHARS_MAX: usize = 1_600;

#[derive(Default)]
pub struct Sms {
    messages: Arc<Mutex<HashMap<String, Value>>>,
}

#[derive(Clone)]
struct Context {
    sim: Sim,
    messages: Arc<Mutex<HashMap<String, Value>>>,
}

impl Provider for Sms {
    fn name(&self) -> &'static str {
        NAME
    }

    fn routes(&self, sim: Sim) -> Router {
        let context = Context { sim, messages: self.messages.clone() };
        Router::new()
            .route("/2010-04-01/Accounts/{account}/Messages.json", post(create_message).get(list_messages))
            .route("/2010-04-01/Accounts/{account}/Messages/{sid}", get(retrieve_message))
            .with_state(context)
    }

    fn object(&self, id: &str) -> Option<Value> {
        let mut message = lock(&self.messages).get(id).cloned()?;
        message.as_object_mut()?.remove("created_order");
        Some(message)
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Twilio's error object.
fn error(status: StatusCode, code: u32, message: &str) -> Response {
    let body = json!({ "code": code, "message": message, "more_info": format!("https://www.twilio.com/docs/errors/{code}"),
                       "status": status.as_u16() });
    (status, Json(body)).into_response()
}

/// The account SID and token of HTTP Basic auth, if the account is the path's.
fn authenticated(headers: &HeaderMap, account: &str) -> bool {
    use base64::Engine;
    let Some(value) = headers.get(header::AUTHORIZATION).and_then(|value| value.to_str().ok()) else { return false };
    let Some(encoded) = value.strip_prefix("Basic ") else { return false };
    let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded.trim()) else { return false };
    let Ok(decoded) = String::from_utf8(decoded) else { return false };
    let Some((user, token)) = decoded.split_once(':') else { return false };
    user == account && !token.is_empty()
}

fn e164(text: &str) -> bool {
    text.strip_prefix('+').is_some_and(|digits| {
        (8..=15).contains(&digits.len()) && digits.bytes().all(|byte| byte.is_ascii_digit()) && !digits.starts_with('0')
    })
}

/// Twilio's `X-Twilio-Signature`: base64(HMAC-SHA1(auth token, URL + each parameter's
/// name and value, sorted by name)).
pub fn signature(auth_token: &str, url: &str, params: &[(String, String)]) -> String {
    use base64::Engine;
    use hmac::Mac;
    let mut sorted: Vec<&(String, String)> = params.iter().collect();
    sorted.sort();
    let mut mac = hmac::Hmac::<sha1::Sha1>::new_from_slice(auth_token.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes a key of any length"));
    mac.update(url.as_bytes());
    for (name, value) in sorted {
        mac.update(name.as_bytes());
        mac.update(value.as_bytes());
    }
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

fn now() -> String {
    // Twilio writes RFC 2822 dates.
    OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc2822).unwrap_or_default()
}

async fn create_message(
    State(context): State<Context>,
    Path(account): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let fault = context.sim.faults.take(NAME, "create");
    let kind = fault.as_ref().map(|fault| fault.fault);
    let record = |status: Option<StatusCode>| {
        context.sim.calls.record(Call {
            provider: NAME,
            operation: "create",
            idempotency_key: None,
            body: String::from_utf8_lossy(&body).into_owned(),
            status: status.map(|status| status.as_u16()),
            fault: kind.map(FaultKind::name),
            at: OffsetDateTime::now_utc(),
        });
    };
    if !authenticated(&headers, &account) {
        record(Some(StatusCode::UNAUTHORIZED));
        return error(StatusCode::UNAUTHORIZED, 20003, "Authenticate");
    }
    let delay = Duration::from_millis(fault.as_ref().and_then(|fault| fault.delay_ms).unwrap_or(TIMEOUT_DEFAULT_MS));
    match kind {
        Some(FaultKind::Timeout) => {
            record(None);
            tokio::time::sleep(delay).await;
            return StatusCode::GATEWAY_TIMEOUT.into_response();
        }
        Some(FaultKind::Error500) => {
            record(Some(StatusCode::INTERNAL_SERVER_ERROR));
            return error(StatusCode::INTERNAL_SERVER_ERROR, 20500, "Internal Server Error");
        }
        Some(FaultKind::Error429) => {
            record(Some(StatusCode::TOO_MANY_REQUESTS));
            let mut response = error(StatusCode::TOO_MANY_REQUESTS, 20429, "Too Many Requests");
            response.headers_mut().insert(header::RETRY_AFTER, axum::http::HeaderValue::from_static("1"));
            return response;
        }
        _ => {}
    }
    let params: Vec<(String, String)> = form_urlencoded::parse(&body).into_owned().collect();
    let param = |name: &str| params.iter().find(|(key, _)| key == name).map(|(_, value)| value.clone());
    let to = param("To").unwrap_or_default();
    let from = param("From");
    let service = param("MessagingServiceSid");
    let text = param("Body").unwrap_or_default();
    let refusal = if !e164(&to) {
        Some((21211, format!("The 'To' number {to} is not a valid phone number.")))
    } else if to == NOT_MOBILE {
        Some((21614, format!("'To' number {to} is not a valid mobile number")))
    } else if from.as_deref().is_none_or(|from| !e164(from))
        && service.as_deref().is_none_or(|sid| !sid.starts_with("MG"))
    {
        Some((21606, String::from("The From phone number is not a valid, SMS-capable number for your account.")))
    } else if text.is_empty() {
        Some((21602, String::from("Message body is required.")))
    } else if text.chars().count() > BODY_CHARS_MAX {
        Some((21617, String::from("The concatenated message body exceeds the 1600 character limit.")))
    } else {
        None
    };
    if let Some((code, message)) = refusal {
        record(Some(StatusCode::BAD_REQUEST));
        return error(StatusCode::BAD_REQUEST, code, &message);
    }
    record(Some(StatusCode::CREATED));
    let sid = format!("SM{}", hex::encode(rand::random::<[u8; 16]>()));
    let segments = text.chars().count().div_ceil(153).max(1);
    let message = json!({
        "sid": sid, "account_sid": account, "messaging_service_sid": service,
        "to": to, "from": from, "body": text, "status": "queued", "direction": "outbound-api",
        "num_segments": segments.to_string(), "num_media": "0", "error_code": null, "error_message": null,
        "price": null, "price_unit": "USD", "api_version": "2010-04-01",
        "date_created": now(), "date_updated": now(), "date_sent": null,
        "uri": format!("/2010-04-01/Accounts/{account}/Messages/{sid}.json"),
    });
    {
        let mut messages = lock(&context.messages);
        let mut kept = message.clone();
        kept["created_order"] = json!(messages.len());
        messages.insert(sid.clone(), kept);
    }
    deliver(&context, sid, param("StatusCallback"));
    match kind {
        Some(FaultKind::TimeoutAfterEffect) => {
            tokio::time::sleep(delay).await;
            StatusCode::GATEWAY_TIMEOUT.into_response()
        }
        Some(FaultKind::Malformed) => {
            (StatusCode::CREATED, [(header::CONTENT_TYPE, "application/json")], "{\"sid\": \"SM").into_response()
        }
        Some(FaultKind::UnknownStatus) => {
            let mut lying = message;
            lying["status"] = json!("teleported");
            (StatusCode::CREATED, Json(lying)).into_response()
        }
        _ => (StatusCode::CREATED, Json(message)).into_response(),
    }
}

/// Moves a message on (sent, then delivered or undelivered), telling its callback each time.
fn deliver(context: &Context, sid: String, callback: Option<String>) {
    let context = context.clone();
    tokio::spawn(async move {
        for status in ["sent", "final"] {
            tokio::time::sleep(Duration::from_millis(STEP_MS)).await;
            let message = {
                let mut messages = lock(&context.messages);
                let Some(message) = messages.get_mut(&sid) else { return };
                let unreachable = message["to"] == UNREACHABLE;
                let status = match status {
                    "final" if unreachable => "undelivered",
                    "final" => "delivered",
                    other => other,
                };
                message["status"] = json!(status);
                message["date_updated"] = json!(now());
                if status == "sent" {
                    message["date_sent"] = json!(now());
                }
                if status == "undelivered" {
                    message["error_code"] = json!(30003);
                    message["error_message"] = json!("Unreachable destination handset");
                }
                message.clone()
            };
            if let Some(url) = &callback {
                status_callback(&context.sim, url, &message);
            }
        }
    });
}

fn status_callback(sim: &Sim, url: &str, message: &Value) {
    let Some(auth_token) = sim.webhooks.secret(NAME) else { return };
    let text = |field: &str| message[field].as_str().unwrap_or_default().to_string();
    let mut params = vec![
        (String::from("MessageSid"), text("sid")),
        (String::from("SmsSid"), text("sid")),
        (String::from("AccountSid"), text("account_sid")),
        (String::from("From"), text("from")),
        (String::from("To"), text("to")),
        (String::from("MessageStatus"), text("status")),
        (String::from("SmsStatus"), text("status")),
        (String::from("ApiVersion"), String::from("2010-04-01")),
    ];
    if let Some(code) = message["error_code"].as_i64() {
        params.push((String::from("ErrorCode"), code.to_string()));
    }
    let signed = signature(&auth_token, url, &params);
    let body = form_urlencoded::Serializer::new(String::new()).extend_pairs(&params).finish().into_bytes();
    let headers = vec![
        ("content-type", String::from("application/x-www-form-urlencoded")),
        ("x-twilio-signature", signed),
        ("i-twilio-idempotency-token", format!("{}-{}", text("sid"), text("status"))),
    ];
    let kind = format!("message.{}", text("status"));
    sim.webhooks.send_to(&sim.faults, NAME, &kind, url, crate::webhooks::Webhook { body, headers });
}

#[derive(serde::Deserialize)]
struct ListQuery {
    #[serde(rename = "To")]
    to: Option<String>,
    #[serde(rename = "From")]
    from: Option<String>,
    #[serde(rename = "PageSize")]
    page_size: Option<usize>,
}

async fn list_messages(
    State(context): State<Context>,
    Path(account): Path<String>,
    axum::extract::Query(query): axum::extract::Query<ListQuery>,
    headers: HeaderMap,
) -> Response {
    let fault = context.sim.faults.take(NAME, "list");
    context.sim.calls.record(Call {
        provider: NAME,
        operation: "list",
        idempotency_key: None,
        body: String::new(),
        status: Some(200),
        fault: fault.as_ref().map(|fault| fault.fault.name()),
        at: OffsetDateTime::now_utc(),
    });
    if !authenticated(&headers, &account) {
        return error(StatusCode::UNAUTHORIZED, 20003, "Authenticate");
    }
    let page_size = query.page_size.unwrap_or(50).clamp(1, 1000);
    let mut messages: Vec<Value> = lock(&context.messages)
        .values()
        .filter(|message| message["account_sid"] == account.as_str())
        .filter(|message| query.to.as_deref().is_none_or(|to| message["to"] == to))
        .filter(|message| query.from.as_deref().is_none_or(|from| message["from"] == from))
        .cloned()
        .collect();
    // Newest first; the SIDs are random, so order by when each was made.
    messages.sort_by_key(|message| std::cmp::Reverse(message["created_order"].as_u64().unwrap_or(0)));
    messages.truncate(page_size);
    for message in &mut messages {
        if let Some(object) = message.as_object_mut() {
            object.remove("created_order");
        }
    }
    Json(json!({ "messages": messages, "page": 0, "page_size": page_size, "next_page_uri": null,
                 "uri": format!("/2010-04-01/Accounts/{account}/Messages.json?PageSize={page_size}") }))
    .into_response()
}

async fn retrieve_message(
    State(context): State<Context>,
    Path((account, sid)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let fault = context.sim.faults.take(NAME, "retrieve");
    context.sim.calls.record(Call {
        provider: NAME,
        operation: "retrieve",
        idempotency_key: None,
        body: String::new(),
        status: Some(200),
        fault: fault.as_ref().map(|fault| fault.fault.name()),
        at: OffsetDateTime::now_utc(),
    });
    if !authenticated(&headers, &account) {
        return error(StatusCode::UNAUTHORIZED, 20003, "Authenticate");
    }
    let sid = sid.trim_end_matches(".json");
    match lock(&context.messages).get(sid) {
        Some(message) if message["account_sid"] == account.as_str() => {
            let mut message = message.clone();
            if let Some(object) = message.as_object_mut() {
                object.remove("created_order");
            }
            Json(message).into_response()
        }
        _ => error(StatusCode::NOT_FOUND, 20404, "The requested resource was not found"),
    }
}

#[cfg(test)]
mod tests {
    use super::signature;

    /// The known answer Twilio's own SDKs test their request validators with (twilio-java's
    /// and twilio-csharp's `RequestValidatorTest`): token `12345`, this URL and these
    /// parameters.
    #[test]
    fn the_signature_is_twilios() {
        let params: Vec<(String, String)> = [
            ("CallSid", "CA1234567890ABCDE"),
            ("Caller", "+14158675309"),
            ("Digits", "1234"),
            ("From", "+14158675309"),
            ("To", "+18005551212"),
        ]
        .iter()
        .map(|(name, value)| (name.to_string(), value.to_string()))
        .collect();
        assert_eq!(
            signature("12345", "https://mycompany.com/myapp.php?foo=1&bar=2", &params),
            "RSOYDt4T1cUTdK1PDd93/VVr8B8="
        );
    }
}
