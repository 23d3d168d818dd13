//! A Salesforce org, shaped on the REST API (providers' public docs: OAuth 2.0 client
//! credentials flow, sObject upsert by external id, the Composite resource), under
//! `/salesforce/…`:
//!
//! - `POST /services/oauth2/token` (form: `grant_type=client_credentials`, `client_id`,
//!   `client_secret`; any `client_id` with the secret [`CLIENT_SECRET`]): 200
//!   `{access_token, instance_url, id, token_type: "Bearer", issued_at, signature}`; a
//!   wrong secret is 400 `{error: "invalid_client", error_description}`.
//! - `PATCH /services/data/v{version}/sobjects/{sObject}/{field}/{value}` with a JSON
//!   body of fields: an upsert by the external id `field`. 201
//!   `{id, success: true, errors: [], created: true}` when it made the record, 200 with
//!   `created: false` when it updated it. A field named `Account` may be a relationship by
//!   external id (`{"Till_Business_Id__c": "biz_…"}`): the account must exist.
//! - `POST /services/data/v{version}/composite` `{allOrNone, compositeRequest: [{method,
//!   url, referenceId, body}]}`, at most 25 subrequests (each an upsert as above): always
//!   200 with `compositeResponse: [{body, httpHeaders, httpStatusCode, referenceId}]`, one
//!   per subrequest, each with its own status; with `allOrNone` a failed one rolls back the
//!   rest (their status becomes 400 `PROCESSING_HALTED`).
//! - Errors are Salesforce's list `[{message, errorCode, fields}]`. Tokens are checked on
//!   every data call: an unknown or expired one is 401 `INVALID_SESSION_ID`.
//!
//! Faults (operations `token`, `upsert`, `composite`, and `upsert:{sObject}/{value}` for
//! one record, in or out of a composite): `session_expired` expires every token issued so
//! far (the call answers 401, as an org whose session timed out); `request_limit` answers
//! 403 `REQUEST_LIMIT_EXCEEDED`; `validation_error` refuses the record with
//! `FIELD_CUSTOM_VALIDATION_EXCEPTION`; `duplicate_value` with `DUPLICATE_VALUE`; and the
//! common `timeout`, `error_500`, `error_429`.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{patch, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use time::OffsetDateTime;

use crate::calls::Call;
use crate::faults::{FaultKind, TIMEOUT_DEFAULT_MS};
use crate::{Provider, Sim};

const NAME: &str = "salesforce";
/// The connected app's secret the simulated org accepts.
pub const CLIENT_SECRET: &str = "till_simulator_salesforce_secret";
/// The most subrequests a composite request may carry.
pub const COMPOSITE_MAX: usize = 25;

#[derive(Default)]
pub struct Salesforce {
    org: Arc<Mutex<Org>>,
}

#[derive(Default)]
struct Org {
    /// Live access tokens.
    tokens: HashSet<String>,
    /// Records by `{sObject}/{field}/{value}`, with their Salesforce id.
    records: HashMap<String, Value>,
    next_id: u64,
}

#[derive(Clone)]
struct Context {
    sim: Sim,
    org: Arc<Mutex<Org>>,
}

impl Provider for Salesforce {
    fn name(&self) -> &'static str {
        NAME
    }

    fn routes(&self, sim: Sim) -> Router {
        let context = Context { sim, org: self.org.clone() };
        Router::new()
            .route("/services/oauth2/token", post(token))
            .route("/services/data/{version}/sobjects/{sobject}/{field}/{value}", patch(upsert).get(retrieve))
            .route("/services/data/{version}/composite", post(composite))
            .with_state(context)
    }

    /// A record by `{sObject}:{field}:{value}` (`Account:Till_Business_Id__c:biz_…`).
    fn object(&self, id: &str) -> Option<Value> {
        lock(&self.org).records.get(&id.replace(':', "/")).cloned()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn errors(code: &str, message: &str, fields: &[&str]) -> Value {
    json!([{ "message": message, "errorCode": code, "fields": fields }])
}

fn record_call(
    context: &Context,
    operation: &'static str,
    body: &Bytes,
    status: Option<StatusCode>,
    fault: Option<FaultKind>,
) {
    context.sim.calls.record(Call {
        provider: NAME,
        operation,
        idempotency_key: None,
        body: String::from_utf8_lossy(body).into_owned(),
        status: status.map(|status| status.as_u16()),
        fault: fault.map(FaultKind::name),
        at: OffsetDateTime::now_utc(),
    });
}

/// Marks the org served at the root of a TLS listener (its `instance_url` is then
/// `https://{host}`), rather than under `/salesforce` on the simulator's HTTP port.
#[derive(Debug, Clone, Copy)]
pub struct AtRoot;

async fn token(
    State(context): State<Context>,
    at_root: Option<axum::Extension<AtRoot>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let fault = context.sim.faults.take(NAME, "token").map(|fault| fault.fault);
    if let Some(response) = common_fault(&context, "token", &body, fault).await {
        return response;
    }
    let form: HashMap<String, String> = form_urlencoded::parse(&body).into_owned().collect();
    let ok = form.get("grant_type").map(String::as_str) == Some("client_credentials")
        && form.get("client_id").is_some_and(|id| !id.is_empty())
        && form.get("client_secret").map(String::as_str) == Some(CLIENT_SECRET);
    if !ok {
        record_call(&context, "token", &body, Some(StatusCode::BAD_REQUEST), fault);
        let body = json!({ "error": "invalid_client", "error_description": "invalid client credentials" });
        return (StatusCode::BAD_REQUEST, Json(body)).into_response();
    }
    record_call(&context, "token", &body, Some(StatusCode::OK), fault);
    let access_token = format!("00DSIM!{}", hex::encode(rand::random::<[u8; 24]>()));
    lock(&context.org).tokens.insert(access_token.clone());
    let issued_at = (OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000).to_string();
    // Where the org's API is, as the caller reached the simulator.
    let host = headers.get(header::HOST).and_then(|host| host.to_str().ok()).unwrap_or("127.0.0.1");
    let instance_url = if at_root.is_some() { format!("https://{host}") } else { format!("http://{host}/salesforce") };
    Json(json!({
        "access_token": access_token,
        "instance_url": instance_url,
        "id": "https://login.salesforce.com/id/00DSIM0000000000/005SIM0000000000",
        "token_type": "Bearer",
        "issued_at": issued_at,
        "signature": hex::encode(rand::random::<[u8; 16]>()),
    }))
    .into_response()
}

/// The faults every operation shares, answered before any effect.
async fn common_fault(
    context: &Context,
    operation: &'static str,
    body: &Bytes,
    fault: Option<FaultKind>,
) -> Option<Response> {
    match fault? {
        FaultKind::Timeout => {
            record_call(context, operation, body, None, fault);
            tokio::time::sleep(Duration::from_millis(TIMEOUT_DEFAULT_MS)).await;
            Some(StatusCode::GATEWAY_TIMEOUT.into_response())
        }
        FaultKind::Error500 => {
            record_call(context, operation, body, Some(StatusCode::INTERNAL_SERVER_ERROR), fault);
            let body = errors("UNKNOWN_EXCEPTION", "An unexpected error occurred.", &[]);
            Some((StatusCode::INTERNAL_SERVER_ERROR, Json(body)).into_response())
        }
        FaultKind::Error429 => {
            record_call(context, operation, body, Some(StatusCode::TOO_MANY_REQUESTS), fault);
            let mut response =
                (StatusCode::TOO_MANY_REQUESTS, Json(errors("REQUEST_LIMIT_EXCEEDED", "Too many requests.", &[])))
                    .into_response();
            response.headers_mut().insert(header::RETRY_AFTER, axum::http::HeaderValue::from_static("1"));
            Some(response)
        }
        FaultKind::RequestLimit => {
            record_call(context, operation, body, Some(StatusCode::FORBIDDEN), fault);
            let body = errors("REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded.", &[]);
            Some((StatusCode::FORBIDDEN, Json(body)).into_response())
        }
        _ => None,
    }
}

/// The bearer token, if it is live; a `session_expired` fault ends every live one first.
fn authorized(context: &Context, headers: &HeaderMap, fault: Option<FaultKind>) -> bool {
    let mut org = lock(&context.org);
    if fault == Some(FaultKind::SessionExpired) {
        org.tokens.clear();
    }
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "));
    token.is_some_and(|token| org.tokens.contains(token.trim()))
}

fn session_invalid() -> Response {
    (StatusCode::UNAUTHORIZED, Json(errors("INVALID_SESSION_ID", "Session expired or invalid", &[]))).into_response()
}

async fn upsert(
    State(context): State<Context>,
    Path((_version, sobject, field, value)): Path<(String, String, String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let fault = context.sim.faults.take(NAME, "upsert").map(|fault| fault.fault);
    if let Some(response) = common_fault(&context, "upsert", &body, fault).await {
        return response;
    }
    if !authorized(&context, &headers, fault) {
        record_call(&context, "upsert", &body, Some(StatusCode::UNAUTHORIZED), fault);
        return session_invalid();
    }
    let (status, answer) = apply_upsert(&context, &sobject, &field, &value, &body);
    record_call(&context, "upsert", &body, Some(status), fault);
    (status, Json(answer)).into_response()
}

/// One upsert, as a call or a composite subrequest would make it.
fn apply_upsert(context: &Context, sobject: &str, field: &str, value: &str, body: &[u8]) -> (StatusCode, Value) {
    let record_fault = context.sim.faults.take(NAME, &format!("upsert:{sobject}/{value}")).map(|fault| fault.fault);
    match record_fault {
        Some(FaultKind::ValidationError) => {
            let body =
                errors("FIELD_CUSTOM_VALIDATION_EXCEPTION", "The record failed a validation rule of the org.", &[]);
            return (StatusCode::BAD_REQUEST, body);
        }
        Some(FaultKind::DuplicateValue) => {
            let body = errors("DUPLICATE_VALUE", "duplicate value found: an external id is used twice", &[field]);
            return (StatusCode::BAD_REQUEST, body);
        }
        _ => {}
    }
    let Ok(Value::Object(fields)) = serde_json::from_slice::<Value>(body) else {
        return (StatusCode::BAD_REQUEST, errors("JSON_PARSER_ERROR", "The request body is not a JSON object.", &[]));
    };
    if fields.contains_key(field) {
        return (
            StatusCode::BAD_REQUEST,
            errors("INVALID_FIELD", "The external id is in the URL, not the body.", &[field]),
        );
    }
    let mut org = lock(&context.org);
    // A relationship by external id must name a record that exists.
    for (name, related) in &fields {
        if let Value::Object(reference) = related {
            let Some((related_field, related_value)) = reference.iter().next() else { continue };
            let key = format!("{name}/{related_field}/{}", related_value.as_str().unwrap_or_default());
            if !org.records.contains_key(&key) {
                let message = format!(
                    "Foreign key external ID: {} not found for field {related_field} in entity {name}",
                    related_value
                );
                return (StatusCode::NOT_FOUND, errors("NOT_FOUND", &message, &[name]));
            }
        }
    }
    let key = format!("{sobject}/{field}/{value}");
    let created = !org.records.contains_key(&key);
    if created {
        org.next_id += 1;
        let id = format!("001SIM{:012}", org.next_id);
        org.records.insert(key.clone(), json!({ "Id": id, field: value }));
    }
    let record = org.records.get_mut(&key).and_then(Value::as_object_mut);
    let Some(record) = record else {
        return (StatusCode::INTERNAL_SERVER_ERROR, errors("UNKNOWN_EXCEPTION", "lost the record", &[]));
    };
    for (name, value) in fields {
        record.insert(name, value);
    }
    let id = record.get("Id").cloned().unwrap_or(Value::Null);
    let status = if created { StatusCode::CREATED } else { StatusCode::OK };
    (status, json!({ "id": id, "success": true, "errors": [], "created": created }))
}

/// `GET /sobjects/{sObject}/{field}/{value}`: the record by its external id.
async fn retrieve(
    State(context): State<Context>,
    Path((_version, sobject, field, value)): Path<(String, String, String, String)>,
    headers: HeaderMap,
) -> Response {
    let fault = context.sim.faults.take(NAME, "retrieve").map(|fault| fault.fault);
    if !authorized(&context, &headers, fault) {
        record_call(&context, "retrieve", &Bytes::new(), Some(StatusCode::UNAUTHORIZED), fault);
        return session_invalid();
    }
    let found = lock(&context.org).records.get(&format!("{sobject}/{field}/{value}")).cloned();
    record_call(
        &context,
        "retrieve",
        &Bytes::new(),
        Some(if found.is_some() { StatusCode::OK } else { StatusCode::NOT_FOUND }),
        fault,
    );
    match found {
        Some(mut record) => {
            record["attributes"] = json!({ "type": sobject });
            Json(record).into_response()
        }
        None => (StatusCode::NOT_FOUND, Json(errors("NOT_FOUND", "The requested resource does not exist", &[])))
            .into_response(),
    }
}

async fn composite(
    State(context): State<Context>,
    Path(version): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let fault = context.sim.faults.take(NAME, "composite").map(|fault| fault.fault);
    if let Some(response) = common_fault(&context, "composite", &body, fault).await {
        return response;
    }
    if !authorized(&context, &headers, fault) {
        record_call(&context, "composite", &body, Some(StatusCode::UNAUTHORIZED), fault);
        return session_invalid();
    }
    let request: Value = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(_) => {
            record_call(&context, "composite", &body, Some(StatusCode::BAD_REQUEST), fault);
            return (StatusCode::BAD_REQUEST, Json(errors("JSON_PARSER_ERROR", "not JSON", &[]))).into_response();
        }
    };
    let subrequests = request["compositeRequest"].as_array().cloned().unwrap_or_default();
    if subrequests.is_empty() || subrequests.len() > COMPOSITE_MAX {
        record_call(&context, "composite", &body, Some(StatusCode::BAD_REQUEST), fault);
        let message = format!("compositeRequest takes 1 to {COMPOSITE_MAX} subrequests");
        return (StatusCode::BAD_REQUEST, Json(errors("INVALID_API_INPUT", &message, &[]))).into_response();
    }
    let all_or_none = request["allOrNone"].as_bool().unwrap_or(false);
    let prefix = format!("/services/data/{version}/sobjects/");
    let mut responses = Vec::with_capacity(subrequests.len());
    // allOrNone: apply to a copy, and keep it only if every subrequest succeeded.
    let before = all_or_none.then(|| lock(&context.org).records.clone());
    let mut failed = false;
    for subrequest in &subrequests {
        let reference = subrequest["referenceId"].clone();
        let url = subrequest["url"].as_str().unwrap_or_default();
        let target: Vec<&str> =
            url.strip_prefix(prefix.as_str()).map(|rest| rest.split('/').collect()).unwrap_or_default();
        let (status, answer) = match (subrequest["method"].as_str(), target.as_slice()) {
            (Some("PATCH"), [sobject, field, value]) => {
                let body = serde_json::to_vec(&subrequest["body"]).unwrap_or_default();
                apply_upsert(&context, sobject, field, value, &body)
            }
            _ => (
                StatusCode::BAD_REQUEST,
                errors("INVALID_API_INPUT", "the simulator takes PATCH upserts by external id", &[]),
            ),
        };
        failed |= !status.is_success();
        responses.push(
            json!({ "body": answer, "httpHeaders": {}, "httpStatusCode": status.as_u16(), "referenceId": reference }),
        );
    }
    if let (true, Some(before)) = (failed, before) {
        lock(&context.org).records = before;
        for response in &mut responses {
            if response["httpStatusCode"].as_u64().is_some_and(|status| status < 300) {
                response["httpStatusCode"] = json!(400);
                response["body"] = errors(
                    "PROCESSING_HALTED",
                    "The transaction was rolled back since another operation in the same transaction failed.",
                    &[],
                );
            }
        }
    }
    record_call(&context, "composite", &body, Some(StatusCode::OK), fault);
    Json(json!({ "compositeResponse": responses })).into_response()
}
