//! Helpers for ledger tests: accounts and transfers through the HTTP API.

use serde_json::{json, Value};
use till_testkit::TestApp;

pub fn key() -> String {
    uuid::Uuid::now_v7().to_string()
}

pub async fn create_account(app: &TestApp, credential: &str, body: Value) -> String {
    let response = app.post("/v1/accounts", credential, &key(), &body).await;
    assert_eq!(response.status().as_u16(), 201, "creating an account");
    let created: Value = response.json().await.expect("json");
    created["id"].as_str().expect("id").to_string()
}

/// A debit-normal account with no bounds: where money enters the ledger from outside.
pub async fn source(app: &TestApp, credential: &str, currency: &str) -> String {
    create_account(
        app,
        credential,
        json!({"name": "Funding source", "currency": currency, "normal_balance": "debit", "min_balance": null}),
    )
    .await
}

/// A credit-normal account that cannot go below zero: a customer's balance.
pub async fn wallet(app: &TestApp, credential: &str, currency: &str) -> String {
    create_account(app, credential, json!({"name": "Wallet", "currency": currency, "normal_balance": "credit"})).await
}

pub fn transfer_body(debit: &str, credit: &str, amount: i64) -> Value {
    json!({"debit_account_id": debit, "credit_account_id": credit, "amount": amount, "currency": "GBP"})
}

pub async fn transfer(app: &TestApp, credential: &str, debit: &str, credit: &str, amount: i64) -> reqwest::Response {
    app.post("/v1/transfers", credential, &key(), &transfer_body(debit, credit, amount)).await
}

/// Creates a posted transfer and returns its id.
pub async fn posted(app: &TestApp, credential: &str, debit: &str, credit: &str, amount: i64) -> String {
    let response = transfer(app, credential, debit, credit, amount).await;
    assert_eq!(response.status().as_u16(), 201, "a transfer");
    let body: Value = response.json().await.expect("json");
    body["id"].as_str().expect("id").to_string()
}

/// Creates a hold and returns its id.
pub async fn hold(
    app: &TestApp,
    credential: &str,
    debit: &str,
    credit: &str,
    amount: i64,
    timeout: Option<i64>,
) -> String {
    let mut body = transfer_body(debit, credit, amount);
    body["pending"] = json!(true);
    if let Some(seconds) = timeout {
        body["timeout_seconds"] = json!(seconds);
    }
    let response = app.post("/v1/transfers", credential, &key(), &body).await;
    assert_eq!(response.status().as_u16(), 201, "a hold");
    let created: Value = response.json().await.expect("json");
    assert_eq!(created["status"], "pending");
    created["id"].as_str().expect("id").to_string()
}

pub async fn account(app: &TestApp, credential: &str, id: &str) -> Value {
    let response = app.get(&format!("/v1/accounts/{id}"), credential).await;
    assert_eq!(response.status().as_u16(), 200);
    response.json().await.expect("json")
}

pub async fn balance(app: &TestApp, credential: &str, id: &str) -> i64 {
    account(app, credential, id).await["balance"].as_i64().expect("balance")
}

pub async fn transfer_count(app: &TestApp) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM ledger.transfers").fetch_one(&app.owner_pool).await.expect("count")
}

pub async fn check(app: &TestApp, credential: &str) -> Value {
    let response = app.get("/v1/ledger/check", credential).await;
    assert_eq!(response.status().as_u16(), 200);
    response.json().await.expect("json")
}

/// The invariant named `name` in a checker report.
pub fn invariant<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["invariants"]
        .as_array()
        .expect("invariants")
        .iter()
        .find(|invariant| invariant["name"] == name)
        .unwrap_or_else(|| panic!("no invariant {name} in {report}"))
}
