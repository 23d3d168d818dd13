//! The Salesforce sync end to end: real payments and refunds, the `crm` consumer, the
//! worker, and the simulator's org, read back through its own view of each record.

use std::time::Duration;

use serde_json::{json, Value};
use till_testkit::{spawn_app, TestApp, TestBusiness};

use crate::payments::create;

async fn pay(app: &TestApp, business: &TestBusiness, key: &str, amount: i64) -> String {
    let body = json!({"amount": amount, "currency": "GBP", "payment_method": "pm_card_visa", "confirm": true});
    let (status, intent) = create(app, &business.owner_key, key, body).await;
    assert_eq!((status, intent["status"].as_str()), (201, Some("succeeded")), "{intent}");
    intent["id"].as_str().expect("id").to_string()
}

async fn record(app: &TestApp, id: &str) -> Option<Value> {
    let response = app.client.get(format!("{}/_sim/salesforce/objects/{id}", app.sim)).send().await.expect("get");
    (response.status().as_u16() == 200).then_some(response.json().await.expect("json"))
}

/// Waits until the org's record `id` satisfies `done`.
async fn org_has(app: &TestApp, id: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let found = record(app, id).await;
        if let Some(found) = found.as_ref().filter(|found| done(found)) {
            return found.clone();
        }
        assert!(tokio::time::Instant::now() < deadline, "the org never had {id} as expected: {found:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every subrequest the org answered, as `(external field/value, body)`, oldest first.
async fn upserts(app: &TestApp) -> Vec<(String, Value)> {
    let mut all = Vec::new();
    for call in app.sim_calls("salesforce", "composite").await {
        if call["status"] != 200 {
            continue;
        }
        let request: Value = serde_json::from_str(call["body"].as_str().unwrap_or_default()).unwrap_or_default();
        for subrequest in request["compositeRequest"].as_array().cloned().unwrap_or_default() {
            let url = subrequest["url"].as_str().unwrap_or_default();
            let mut parts = url.rsplit('/');
            let (value, field) = (parts.next().unwrap_or_default(), parts.next().unwrap_or_default());
            all.push((format!("{field}/{value}"), subrequest["body"].clone()));
        }
    }
    all
}

#[tokio::test]
async fn payments_and_refunds_are_mirrored_once_each_in_order_however_often_events_arrive() {
    let app = spawn_app().await;
    let business = app.create_business("GB").await;
    let first = pay(&app, &business, "pay-1", 1250).await;
    let second = pay(&app, &business, "pay-2", 700).await;
    for (n, amount) in [(1, 200), (2, 300)] {
        let response = app
            .post(
                "/v1/refunds",
                &business.owner_key,
                &format!("refund-{n}"),
                &json!({"payment_intent_id": first, "amount": amount}),
            )
            .await;
        assert!(response.status().is_success(), "{:?}", response.text().await);
    }
    let account = org_has(&app, &format!("Account:Till_Business_Id__c:{}", business.id), |_| true).await;
    assert_eq!((account["Name"].as_str(), account["BillingCountryCode"].as_str()), (Some("Test GB Ltd"), Some("GB")));
    let opportunity = org_has(&app, &format!("Opportunity:Till_Payment_Id__c:{first}"), |o| {
        o["Till_Amount_Refunded__c"] == json!(5.0)
    })
    .await;
    assert_eq!((opportunity["Amount"].clone(), opportunity["StageName"].as_str()), (json!(12.5), Some("Closed Won")));
    assert_eq!(opportunity["Account"]["Till_Business_Id__c"], business.id.as_str());
    org_has(&app, &format!("Opportunity:Till_Payment_Id__c:{second}"), |o| o["Amount"] == json!(7.0)).await;

    // Every event again, three times each, shuffled, beside the running consumer.
    let page: Value = app.get("/v1/events?limit=100", &business.owner_key).await.json().await.expect("json");
    let events: Vec<till_outbox::envelope::EventBody> = page["data"]
        .as_array()
        .expect("events")
        .iter()
        .filter(|event| matches!(event["type"].as_str(), Some("payment_intent.succeeded" | "refund.succeeded")))
        .map(|event| serde_json::from_value(event.clone()).expect("an event"))
        .collect();
    assert_eq!(events.len(), 4);
    let mut deliveries: Vec<&till_outbox::envelope::EventBody> = events.iter().chain(&events).chain(&events).collect();
    for index in (1..deliveries.len()).rev() {
        deliveries.swap(index, rand::random::<usize>() % (index + 1));
    }
    let handler = till_crm::consumer::Mirror;
    for event in deliveries {
        till_events::consumer::handle_once(&app.pool, till_crm::consumer::CONSUMER, event, &handler)
            .await
            .expect("handled");
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    // One upsert per change: the Account twice (one per payment), the first payment's
    // Opportunity three times (made, then each refund), in that order, the second's once.
    let sent = upserts(&app).await;
    let of =
        |record: &str| sent.iter().filter(|(name, _)| name == record).map(|(_, body)| body.clone()).collect::<Vec<_>>();
    assert_eq!(of(&format!("Till_Business_Id__c/{}", business.id)).len(), 2, "{sent:#?}");
    let first_changes = of(&format!("Till_Payment_Id__c/{first}"));
    assert_eq!(first_changes.len(), 3, "{sent:#?}");
    assert_eq!(first_changes[0]["Amount"], json!(12.5));
    assert_eq!(first_changes[1]["Till_Amount_Refunded__c"], json!(2.0));
    assert_eq!(first_changes[2]["Till_Amount_Refunded__c"], json!(5.0));
    assert_eq!(of(&format!("Till_Payment_Id__c/{second}")).len(), 1);
    let status = till_crm::store::status(&app.owner_pool).await.expect("status");
    assert_eq!((status.pending, status.parked), (0, 0));
}

#[tokio::test]
async fn an_expired_session_is_refreshed_once_mid_batch_and_nothing_is_lost() {
    let app = spawn_app().await;
    let business = app.create_business("GB").await;
    let first = pay(&app, &business, "pay-1", 100).await;
    org_has(&app, &format!("Opportunity:Till_Payment_Id__c:{first}"), |_| true).await;
    assert_eq!(app.sim_calls("salesforce", "token").await.len(), 1);
    // The org ends every session; the next batch meets a 401, refreshes, and goes through.
    app.arm_fault("salesforce", "composite", "session_expired", 1, None).await;
    let second = pay(&app, &business, "pay-2", 200).await;
    org_has(&app, &format!("Opportunity:Till_Payment_Id__c:{second}"), |o| o["Amount"] == json!(2.0)).await;
    assert_eq!(app.sim_calls("salesforce", "token").await.len(), 2, "one refresh");
    let refused = app.sim_calls("salesforce", "composite").await.iter().filter(|call| call["status"] == 401).count();
    assert_eq!(refused, 1);
}

#[tokio::test]
async fn a_record_the_org_refuses_is_parked_without_holding_up_the_rest_and_replays_in_order() {
    let app = spawn_app().await;
    let refused = app.create_business("GB").await;
    let other = app.create_business("GB").await;
    // The org's validation rule refuses the first business's Account, once.
    app.arm_fault("salesforce", &format!("upsert:Account/{}", refused.id), "validation_error", 1, None).await;
    let parked_payment = pay(&app, &refused, "pay-1", 100).await;
    let elsewhere = pay(&app, &other, "pay-2", 200).await;
    // The other business's records go through.
    org_has(&app, &format!("Opportunity:Till_Payment_Id__c:{elsewhere}"), |_| true).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let status = loop {
        let status = till_crm::store::status(&app.owner_pool).await.expect("status");
        if status.parked == 2 || tokio::time::Instant::now() > deadline {
            break status;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // The Account refused, and the Opportunity that needs it refused in turn: both parked
    // with the org's error, neither in the org.
    assert_eq!((status.parked, status.pending), (2, 0), "{status:?}");
    assert!(
        status
            .last_error
            .as_deref()
            .is_some_and(|why| why.contains("FIELD_CUSTOM_VALIDATION_EXCEPTION") || why.contains("NOT_FOUND")),
        "{status:?}"
    );
    assert!(record(&app, &format!("Account:Till_Business_Id__c:{}", refused.id)).await.is_none());
    let parked = till_crm::store::parked(&app.owner_pool, 20).await.expect("parked");
    assert_eq!(parked[0].external_id, refused.id);
    assert!(
        parked[0].last_error.as_deref().is_some_and(|why| why.starts_with("FIELD_CUSTOM_VALIDATION_EXCEPTION")),
        "{parked:?}"
    );
    assert_eq!((parked[1].sobject.as_str(), parked[1].external_id.as_str()), ("Opportunity", parked_payment.as_str()));
    // A later change of the parked Account waits behind it; the new payment's
    // Opportunity, a record of its own, is sent, and refused in turn (no Account yet).
    let waiting = pay(&app, &refused, "pay-3", 300).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let status = loop {
        let status = till_crm::store::status(&app.owner_pool).await.expect("status");
        if status.parked == 3 || tokio::time::Instant::now() > deadline {
            break status;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!((status.parked, status.pending), (3, 1), "{status:?}");
    // Replayed (the rule was fixed): all of it lands, the Account first.
    assert_eq!(till_crm::store::replay_parked(&app.owner_pool).await.expect("replay"), 3);
    org_has(&app, &format!("Opportunity:Till_Payment_Id__c:{parked_payment}"), |_| true).await;
    org_has(&app, &format!("Opportunity:Till_Payment_Id__c:{waiting}"), |_| true).await;
    org_has(&app, &format!("Account:Till_Business_Id__c:{}", refused.id), |_| true).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let status = till_crm::store::status(&app.owner_pool).await.expect("status");
        if (status.pending, status.parked) == (0, 0) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{status:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn an_org_over_its_request_limit_backs_the_batch_off_without_using_attempts() {
    let app = spawn_app().await;
    let business = app.create_business("GB").await;
    // The org refuses the next two Composite requests: its API limit is used up.
    app.arm_fault("salesforce", "composite", "request_limit", 2, None).await;
    let payment = pay(&app, &business, "pay-1", 400).await;
    org_has(&app, &format!("Opportunity:Till_Payment_Id__c:{payment}"), |o| o["Amount"] == json!(4.0)).await;
    let limited = app.sim_calls("salesforce", "composite").await.iter().filter(|call| call["status"] == 403).count();
    assert_eq!(limited, 2);
    let attempts: Vec<i32> = sqlx::query_scalar("SELECT attempts FROM crm.changes ORDER BY id")
        .fetch_all(&app.owner_pool)
        .await
        .expect("attempts");
    assert_eq!(attempts, vec![1, 1], "a refused batch is not an attempt; the one that landed is");
}
