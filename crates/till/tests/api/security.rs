//! What a black-box probe of the OWASP API Top 10 found, each finding with the test that
//! failed before its fix (issue 13). Findings tested elsewhere say where.
//!
//! - Idempotent replay across principals: `idempotency::another_principal_…`,
//!   `idempotency::an_admin_repeating_an_owners_key_request_…`,
//!   `idempotency::a_lower_roles_stored_refusal_…`.

use futures::future::join_all;
use serde_json::{json, Value};
use till_testkit::{problem, spawn_app, TestApp, TestBusiness};

use crate::ledger_helpers::{key, posted, source, transfer_body, transfer_count, wallet};

/// Text that is not human text, in the spellings the probe used.
const HOSTILE: [&str; 5] = ["nul\u{0}byte", "esc\u{1b}[2J", "line\r\nbreak", "\u{202e}fdp.exe", "bell\u{7}"];

async fn assert_refused(response: reqwest::Response, param: &str, what: &str) {
    assert_eq!(response.status().as_u16(), 400, "{what}");
    let body = problem(response).await;
    assert_eq!(body["param"], param, "{what}: {body}");
}

#[tokio::test]
async fn text_with_controls_or_bidi_overrides_is_a_400_naming_the_field_in_every_text_field() {
    let app = spawn_app().await;
    let business = app.create_business("GB").await;
    let k = &business.owner_key;
    let (bank, alice) = (source(&app, k, "GBP").await, wallet(&app, k, "GBP").await);
    let payment = posted(&app, k, &bank, &alice, 500).await;
    let account_body = |name: &str| json!({ "name": name, "currency": "GBP", "normal_balance": "credit" });
    let (accounts_before, transfers_before) = (accounts(&app).await, transfer_count(&app).await);
    for text in HOSTILE {
        let what = format!("{text:?}");
        assert_refused(app.post("/v1/accounts", k, &key(), &account_body(text)).await, "name", &what).await;
        let with_metadata = json!({ "name": "ok", "currency": "GBP", "normal_balance": "credit",
                                    "metadata": { "note": text } });
        assert_refused(app.post("/v1/accounts", k, &key(), &with_metadata).await, "metadata", &what).await;
        let metadata_key = json!({ "name": "ok", "currency": "GBP", "normal_balance": "credit",
                                   "metadata": { text: "v" } });
        assert_refused(app.post("/v1/accounts", k, &key(), &metadata_key).await, "metadata", &what).await;
        let rename = app
            .request(reqwest::Method::PATCH, &format!("/v1/accounts/{alice}"), k)
            .json(&json!({ "name": text }))
            .send()
            .await
            .expect("patch");
        assert_refused(rename, "name", &what).await;
        let mut transfer = transfer_body(&bank, &alice, 1);
        transfer["description"] = json!(text);
        assert_refused(app.post("/v1/transfers", k, &key(), &transfer).await, "description", &what).await;
        let batch = json!({ "transfers": [transfer_body(&bank, &alice, 1), transfer] });
        let refused = app.post("/v1/transfers/batch", k, &key(), &batch).await;
        assert_refused(refused, "transfers[1].description", &what).await;
        let reverse =
            app.post(&format!("/v1/transfers/{payment}/reverse"), k, &key(), &json!({ "description": text })).await;
        assert_refused(reverse, "description", &what).await;
        let api_key = json!({ "name": text, "role": "viewer" });
        assert_refused(app.post("/v1/api_keys", k, &key(), &api_key).await, "name", &what).await;
        let business_body = json!({ "legal_name": text, "country": "GB" });
        let onboarding = app.post("/v1/platform/businesses", &app.admin_token, &key(), &business_body).await;
        assert_refused(onboarding, "legal_name", &what).await;
        let endpoint = json!({ "url": "https://hooks.example.com/x", "enabled_events": ["*"], "description": text });
        assert_refused(app.post("/v1/webhook_endpoints", k, &key(), &endpoint).await, "description", &what).await;
    }
    for resource_id in ["tr_\u{0}", "tr_x%00", "' OR 1=1 --", &"a".repeat(65)] {
        let url = reqwest::Url::parse_with_params(&app.url("/v1/events"), [("resource_id", resource_id)]).expect("url");
        let response = app.client.get(url).bearer_auth(k).send().await.expect("get");
        assert_refused(response, "resource_id", resource_id).await;
    }
    assert_eq!(accounts(&app).await, accounts_before, "nothing was stored");
    assert_eq!(transfer_count(&app).await, transfers_before, "nothing was stored");
    assert_eq!(name_of(&app, k, &alice).await, "Wallet", "the rename changed nothing");
}

async fn accounts(app: &TestApp) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM ledger.accounts").fetch_one(&app.owner_pool).await.expect("count")
}

async fn name_of(app: &TestApp, credential: &str, account: &str) -> String {
    let body: Value = app.get(&format!("/v1/accounts/{account}"), credential).await.json().await.expect("json");
    body["name"].as_str().unwrap_or_default().to_string()
}

/// 24 transfers sent at once, held back by a fail point so that they form one batch, one
/// of them carrying a value the database refuses (as it refused a NUL): it alone fails.
#[tokio::test]
async fn a_command_the_database_refuses_fails_alone_never_its_batch() {
    let app = spawn_app().await;
    let business = app.create_business("GB").await;
    let k = &business.owner_key;
    let (bank, alice) = (source(&app, k, "GBP").await, wallet(&app, k, "GBP").await);
    let before = transfer_count(&app).await;
    arm(&business, &["ledger::gather_batch", "ledger::refuse_poisoned_description"]);
    let requests = (0..24).map(|index| {
        let mut body = transfer_body(&bank, &alice, 10);
        if index == 13 {
            body["description"] = json!("poison");
        }
        let app = &app;
        async move { (index, app.post("/v1/transfers", k, &key(), &body).await) }
    });
    let responses = join_all(requests).await;
    disarm(&["ledger::gather_batch", "ledger::refuse_poisoned_description"]);
    for (index, response) in responses {
        let status = response.status().as_u16();
        if index == 13 {
            assert_eq!(status, 400, "the poisoned command is the client's 400");
            assert_eq!(problem(response).await["code"], "invalid_request");
        } else {
            assert_eq!(status, 201, "transfer {index} failed with its batch");
        }
    }
    assert_eq!(transfer_count(&app).await, before + 23);
}

fn arm(business: &TestBusiness, points: &[&str]) {
    for point in points {
        fail::cfg(*point, &format!("return({})", business.id)).expect("arming");
    }
}

fn disarm(points: &[&str]) {
    for point in points {
        fail::remove(*point);
    }
}

#[tokio::test]
async fn data_after_the_json_body_is_refused() {
    let app = spawn_app().await;
    let business = app.create_business("GB").await;
    let before = accounts(&app).await;
    for body in [
        r#"{"name": "a", "currency": "GBP", "normal_balance": "credit"} trailing garbage"#,
        r#"{"name": "a", "currency": "GBP", "normal_balance": "credit"}{"name": "b"}"#,
        r#"{"name": "a", "currency": "GBP", "normal_balance": "credit"} 1"#,
    ] {
        let response = app
            .request(reqwest::Method::POST, "/v1/accounts", &business.owner_key)
            .header("Idempotency-Key", key())
            .header("Content-Type", "application/json")
            .body(body)
            .send()
            .await
            .expect("post");
        assert_eq!(response.status().as_u16(), 400, "{body}");
        assert_eq!(problem(response).await["code"], "invalid_json", "{body}");
    }
    let spaced = app
        .request(reqwest::Method::POST, "/v1/accounts", &business.owner_key)
        .header("Idempotency-Key", key())
        .header("Content-Type", "application/json")
        .body("{\"name\": \"a\", \"currency\": \"GBP\", \"normal_balance\": \"credit\"}\n \t\r\n")
        .send()
        .await
        .expect("post");
    assert_eq!(spaced.status().as_u16(), 201, "whitespace after the document is fine");
    assert_eq!(accounts(&app).await, before + 1);
}
