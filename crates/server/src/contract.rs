//! The parts of the API contract that every operation shares, written into the OpenAPI
//! document once instead of on every handler: the statuses the shared layers can answer
//! (authentication, the permission table, the rate limiter, the body limits, the
//! Idempotency-Key protocol, a database that is down), with the error codes behind each
//! from the registry (`till_http::problem::ErrorCode`), and the `Idempotency-Key` header's
//! own constraints. What only one handler can answer stays in that handler's annotation.
//!
//! Checked from outside by schemathesis in `.ci/run`, and from inside by the contract
//! tests (`crates/till/tests/api/conventions.rs`).

use serde_json::{json, Map, Value};
use till_http::problem::DependencyFailure;
use till_http::ErrorCode;

/// The document with the shared statuses and constraints added to every operation, as
/// JSON (served as it is: utoipa's types are for building a document, not editing one).
pub fn completed(openapi: &utoipa::openapi::OpenApi) -> Result<Value, serde_json::Error> {
    let mut document = serde_json::to_value(openapi)?;
    complete(&mut document);
    Ok(document)
}

/// Adds the shared statuses and constraints to every operation of `document`.
pub fn complete(document: &mut Value) {
    let schemas = document.pointer("/components/schemas").cloned().unwrap_or(Value::Null);
    add_links(document);
    let Some(paths) = document.get_mut("paths").and_then(Value::as_object_mut) else { return };
    for (path, item) in paths.iter_mut() {
        let Some(item) = item.as_object_mut() else { continue };
        for (method, operation) in item.iter_mut() {
            if !matches!(method.as_str(), "get" | "post" | "patch" | "put" | "delete") {
                continue;
            }
            let Some(operation) = operation.as_object_mut() else { continue };
            complete_operation(path, method, operation);
            constrain_pagination(operation, &schemas);
        }
    }
}

/// Where the routes outside parties call live (`Access::Provider`).
pub const PROVIDER_PATHS: &str = "/v1/providers/";

fn complete_operation(path: &str, method: &str, operation: &mut Map<String, Value>) {
    let secured = operation.get("security").and_then(Value::as_array).is_some_and(|schemes| !schemes.is_empty());
    let has_body = operation.contains_key("requestBody");
    let has_path_params = path.contains('{');
    let has_query = operation
        .get("parameters")
        .and_then(Value::as_array)
        .is_some_and(|params| params.iter().any(|param| param["in"] == "query"));
    // An outside party's webhook carries its own signature and event id, not an
    // Idempotency-Key: it is not one of Till's writes.
    let from_provider = path.starts_with(PROVIDER_PATHS);
    let is_post = method == "post" && !from_provider;
    if is_post {
        constrain_idempotency_key(operation);
    }
    constrain_if_match(operation);
    let mut statuses: Vec<u16> = Vec::new();
    if secured {
        // A second Authorization header is a 400 on every authenticated route.
        statuses.extend([400, 401, 403, 429, 503]);
    }
    if has_query || has_body || is_post {
        statuses.push(400);
    }
    if has_path_params {
        statuses.push(404);
    }
    if has_body {
        statuses.extend([408, 413, 415]);
    }
    if is_post {
        statuses.extend([409, 422]);
    }
    let responses = operation.entry("responses").or_insert_with(|| json!({}));
    let Some(responses) = responses.as_object_mut() else { return };
    for status in statuses {
        responses.entry(status.to_string()).or_insert_with(|| problem_response(status));
    }
    // A handler's own problem responses get the registry's codes for their status too,
    // when the handler says nothing more of them.
    for (status, response) in responses.iter_mut() {
        let Ok(status) = status.parse::<u16>() else { continue };
        let is_problem = response.pointer("/content/application~1problem+json").is_some();
        let undescribed = response["description"].as_str().is_none_or(str::is_empty);
        if is_problem && undescribed {
            response["description"] = problem_response(status)["description"].clone();
        }
    }
}

/// A problem+json response for `status`, listing the registry's codes for it.
fn problem_response(status: u16) -> Value {
    let codes: Vec<String> = ErrorCode::ALL
        .iter()
        .filter(|code| code.status().as_u16() == status)
        .map(|code| format!("`{}`: {}", code.as_str(), code.description()))
        .chain(
            DependencyFailure::ALL
                .iter()
                .filter(|failure| failure.status().as_u16() == status)
                .map(|failure| failure.description().to_string()),
        )
        .collect();
    let description = match codes.as_slice() {
        [] => String::from("A problem."),
        codes => codes.join(" "),
    };
    let example = ErrorCode::ALL.iter().find(|code| code.status().as_u16() == status).map(|code| {
        json!({
            "type": format!("https://till.example/problems/{}", code.as_str().replace('_', "-")),
            "title": code.title(),
            "status": status,
            "code": code.as_str(),
            "detail": code.description(),
            "request_id": "req_01936f0e6c2a7cc2b0a6a4e5f3d2c1b0",
        })
    });
    let mut content = json!({ "schema": { "$ref": "#/components/schemas/Problem" } });
    if let Some(example) = example {
        content["example"] = example;
    }
    json!({ "description": description, "content": { "application/problem+json": content } })
}

/// `If-Match` carries a resource's `version` (quoted or not); another version is 412.
fn constrain_if_match(operation: &mut Map<String, Value>) {
    let Some(params) = operation.get_mut("parameters").and_then(Value::as_array_mut) else { return };
    for param in params {
        if param["in"] == "header" && param["name"] == "If-Match" {
            param["schema"] = json!({ "type": "string", "pattern": "^\"?[0-9]{1,18}\"?$" });
        }
    }
}

/// The `Idempotency-Key` header as the unit of work checks it.
fn constrain_idempotency_key(operation: &mut Map<String, Value>) {
    let Some(params) = operation.get_mut("parameters").and_then(Value::as_array_mut) else { return };
    for param in params {
        if param["in"] == "header" && param["name"] == "Idempotency-Key" {
            param["required"] = json!(true);
            param["schema"] = json!({
                "type": "string",
                "minLength": 1,
                "maxLength": till_http::unit_of_work::IDEMPOTENCY_KEY_CHARS_MAX,
                "pattern": "^[\\x20-\\x7e]+$",
            });
        }
    }
}

/// The pagination parameters as `till_http::pagination` checks them: `limit` 1 to 100,
/// `starting_after` an id of the list's own items (its schema, found from the page the
/// operation answers).
fn constrain_pagination(operation: &mut Map<String, Value>, schemas: &Value) {
    let item_id = page_item_id(operation, schemas);
    let Some(params) = operation.get_mut("parameters").and_then(Value::as_array_mut) else { return };
    for param in params.iter_mut().filter(|param| param["in"] == "query") {
        if param["name"] == "limit" {
            param["schema"] = json!({
                "type": "integer",
                "minimum": 1,
                "maximum": till_http::pagination::PAGE_SIZE_MAX,
                "default": till_http::pagination::PAGE_SIZE_DEFAULT,
            });
        } else if param["name"] == "starting_after" {
            // Inline, not a `$ref`: some clients ignore a parameter's referenced schema.
            let schema = item_id.as_deref().and_then(|id| schemas.get(id.strip_prefix("#/components/schemas/")?));
            if let Some(schema) = schema {
                param["schema"] = schema.clone();
            }
        }
    }
}

/// The `$ref` of the id of the items of the page an operation answers with, if it does.
fn page_item_id(operation: &Map<String, Value>, schemas: &Value) -> Option<String> {
    // A schema, or the one its `$ref` names.
    let resolve = |schema: &Value| -> Option<Value> {
        match schema.get("$ref").and_then(Value::as_str) {
            Some(reference) => schemas.get(reference.strip_prefix("#/components/schemas/")?).cloned(),
            None => Some(schema.clone()),
        }
    };
    let page = operation.get("responses")?.pointer("/200/content/application~1json/schema")?;
    let page = resolve(page)?;
    let item = resolve(page.pointer("/properties/data/items")?)?;
    Some(item.pointer("/properties/id/$ref")?.as_str()?.to_string())
}

/// OpenAPI links from each operation that creates a resource (a POST answering 201 on a
/// collection) to the operations on that resource (`{collection}/{id}…`), with the new
/// resource's `id`: what a stateful client (schemathesis's stateful phase) follows.
fn add_links(document: &mut Value) {
    let Some(paths) = document.get("paths").and_then(Value::as_object) else { return };
    let mut links: Vec<(String, String, String)> = Vec::new();
    for (collection, item) in paths {
        let creates = item.pointer("/post/responses/201").is_some() && !collection.contains('{');
        if !creates {
            continue;
        }
        let prefix = format!("{collection}/{{id}}");
        for (path, target) in paths.iter().filter(|(path, _)| path.starts_with(&prefix)) {
            let Some(target) = target.as_object() else { continue };
            for operation in target.values() {
                if let Some(operation_id) = operation.get("operationId").and_then(Value::as_str) {
                    links.push((collection.clone(), path.clone(), operation_id.to_string()));
                }
            }
        }
    }
    for (collection, _, operation_id) in links {
        let Some(response) = document
            .get_mut("paths")
            .and_then(|paths| paths.get_mut(&collection))
            .and_then(|item| item.pointer_mut("/post/responses/201"))
            .and_then(Value::as_object_mut)
        else {
            continue;
        };
        let entry = response.entry("links").or_insert_with(|| json!({}));
        if let Some(entry) = entry.as_object_mut() {
            entry.insert(
                operation_id.clone(),
                json!({ "operationId": operation_id, "parameters": { "id": "$response.body#/id" } }),
            );
        }
    }
}
