//! The simulator's Salesforce org, from outside: what the CRM sync will be written
//! against — the client-credentials token, upsert by external id, Composite with a
//! status per subrequest, and its faults.

use serde_json::{json, Value};
use till_testkit::TestApp;

async fn token(app: &TestApp, secret: &str) -> (u16, Value) {
    let response = app
        .client
        .post(format!("{}/salesforce/services/oauth2/token", app.sim))
        .form(&[("grant_type", "client_credentials"), ("client_id", "3MVG9till"), ("client_secret", secret)])
        .send()
        .await
        .expect("token");
    (response.status().as_u16(), response.json().await.expect("json"))
}

async fn upsert(app: &TestApp, token: &str, path: &str, body: Value) -> (u16, Value) {
    let response = app
        .client
        .patch(format!("{}/salesforce/services/data/v60.0/sobjects/{path}", app.sim))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .expect("upsert");
    (response.status().as_u16(), response.json().await.expect("json"))
}

async fn composite(app: &TestApp, token: &str, body: Value) -> (u16, Value) {
    let response = app
        .client
        .post(format!("{}/salesforce/services/data/v60.0/composite", app.sim))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .expect("composite");
    (response.status().as_u16(), response.json().await.expect("json"))
}

fn account(n: u32) -> Value {
    json!({"method": "PATCH", "url": format!("/services/data/v60.0/sobjects/Account/Till_Business_Id__c/biz_{n}"),
           "referenceId": format!("account{n}"), "body": {"Name": format!("Business {n}")}})
}

#[tokio::test]
async fn the_simulated_org_upserts_by_external_id_and_answers_each_subrequest() {
    let app = till_testkit::spawn_app().await;
    let (status, refused) = token(&app, "wrong").await;
    assert_eq!((status, refused["error"].as_str()), (400, Some("invalid_client")));
    let (status, granted) = token(&app, till_sim::salesforce::CLIENT_SECRET).await;
    assert_eq!(status, 200, "{granted}");
    assert_eq!(granted["token_type"], "Bearer");
    assert!(granted["instance_url"].as_str().is_some_and(|url| url.ends_with("/salesforce")), "{granted}");
    let bearer = granted["access_token"].as_str().expect("token").to_string();

    // Upsert: made, then updated; a relationship by external id must exist.
    let (status, made) = upsert(&app, &bearer, "Account/Till_Business_Id__c/biz_1", json!({"Name": "Acme"})).await;
    assert_eq!((status, made["created"].as_bool(), made["success"].as_bool()), (201, Some(true), Some(true)));
    let (status, again) = upsert(&app, &bearer, "Account/Till_Business_Id__c/biz_1", json!({"Name": "Acme Ltd"})).await;
    assert_eq!((status, again["created"].as_bool(), &again["id"]), (200, Some(false), &made["id"]));
    assert_eq!(app.sim_object("salesforce", "Account:Till_Business_Id__c:biz_1").await["Name"], "Acme Ltd");
    let orphan = json!({"Name": "Payment", "Account": {"Till_Business_Id__c": "biz_none"}});
    let (status, missing) = upsert(&app, &bearer, "Opportunity/Till_Payment_Id__c/pi_1", orphan).await;
    assert_eq!((status, missing[0]["errorCode"].as_str()), (404, Some("NOT_FOUND")));

    // Composite: always 200, a status per subrequest; one record refused by the org.
    app.arm_fault("salesforce", "upsert:Account/biz_3", "validation_error", 1, None).await;
    let (status, answer) =
        composite(&app, &bearer, json!({"allOrNone": false, "compositeRequest": [account(2), account(3), account(4)]}))
            .await;
    assert_eq!(status, 200, "{answer}");
    let statuses: Vec<u64> = answer["compositeResponse"]
        .as_array()
        .expect("responses")
        .iter()
        .filter_map(|r| r["httpStatusCode"].as_u64())
        .collect();
    assert_eq!(statuses, vec![201, 400, 201]);
    assert_eq!(answer["compositeResponse"][1]["body"][0]["errorCode"], "FIELD_CUSTOM_VALIDATION_EXCEPTION");
    assert_eq!(answer["compositeResponse"][1]["referenceId"], "account3");
    // allOrNone: one refusal rolls the others back.
    app.arm_fault("salesforce", "upsert:Account/biz_6", "duplicate_value", 1, None).await;
    let (_, halted) =
        composite(&app, &bearer, json!({"allOrNone": true, "compositeRequest": [account(5), account(6)]})).await;
    assert_eq!(halted["compositeResponse"][0]["body"][0]["errorCode"], "PROCESSING_HALTED");
    assert_eq!(halted["compositeResponse"][1]["body"][0]["errorCode"], "DUPLICATE_VALUE");
    let response =
        app.client.get(format!("{}/_sim/salesforce/objects/Account:Till_Business_Id__c:biz_5", app.sim)).send().await;
    assert_eq!(response.expect("get").status().as_u16(), 404, "rolled back");
    // At most 25 subrequests.
    let (status, _) = composite(
        &app,
        &bearer,
        json!({"allOrNone": false, "compositeRequest": (0..26).map(account).collect::<Vec<_>>()}),
    )
    .await;
    assert_eq!(status, 400);

    // The org's limits and sessions.
    app.arm_fault("salesforce", "composite", "request_limit", 1, None).await;
    let (status, limited) = composite(&app, &bearer, json!({"compositeRequest": [account(7)]})).await;
    assert_eq!((status, limited[0]["errorCode"].as_str()), (403, Some("REQUEST_LIMIT_EXCEEDED")));
    app.arm_fault("salesforce", "composite", "session_expired", 1, None).await;
    let (status, expired) = composite(&app, &bearer, json!({"compositeRequest": [account(7)]})).await;
    assert_eq!((status, expired[0]["errorCode"].as_str()), (401, Some("INVALID_SESSION_ID")));
    let (status, _) = upsert(&app, &bearer, "Account/Till_Business_Id__c/biz_7", json!({"Name": "x"})).await;
    assert_eq!(status, 401, "the old token stays expired");
    let (_, fresh) = token(&app, till_sim::salesforce::CLIENT_SECRET).await;
    let fresh = fresh["access_token"].as_str().expect("token");
    let (status, _) = composite(&app, fresh, json!({"compositeRequest": [account(7)]})).await;
    assert_eq!(status, 200);
    assert!(app.sim_calls("salesforce", "composite").await.len() >= 5);
}
