//! Payment intents end to end: the real server, its real Stripe adapter, the simulator
//! playing Stripe, and the ledger inside every money-moving step.

use serde_json::{json, Value};
use till_testkit::{problem, spawn_app, TestApp, TestBusiness};

use crate::ledger_helpers::{account, check};

pub(crate) async fn create(app: &TestApp, key: &str, idempotency: &str, body: Value) -> (u16, Value) {
    let response = app.post("/v1/payment_intents", key, idempotency, &body).await;
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

pub(crate) async fn step(
    app: &TestApp,
    key: &str,
    intent: &str,
    action: &str,
    idempotency: &str,
    body: Value,
) -> (u16, Value) {
    let response = app.post(&format!("/v1/payment_intents/{intent}/{action}"), key, idempotency, &body).await;
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

pub(crate) async fn fault(app: &TestApp, operation: &str, fault: &str, delay_ms: Option<u64>) {
    let body = json!({"provider": "stripe", "operation": operation, "fault": fault, "delay_ms": delay_ms});
    let response = app.client.post(format!("{}/_sim/faults", app.sim)).json(&body).send().await.expect("fault");
    assert_eq!(response.status().as_u16(), 201);
}

pub(crate) async fn sim_calls(app: &TestApp, operation: &str) -> Vec<Value> {
    app.sim_calls("stripe", operation).await
}

pub(crate) async fn sim_object(app: &TestApp, id: &str) -> Value {
    app.client
        .get(format!("{}/_sim/stripe/objects/{id}", app.sim))
        .send()
        .await
        .expect("object")
        .json()
        .await
        .expect("json")
}

/// The business's payments accounts, by role, as the ledger shows them.
pub(crate) async fn ledger_account(app: &TestApp, business: &TestBusiness, role: &str) -> Value {
    let business_id = uuid::Uuid::parse_str(business.id.trim_start_matches("biz_")).expect("uuid");
    let id: uuid::Uuid =
        sqlx::query_scalar("SELECT account_id FROM payments.ledger_accounts WHERE business_id = $1 AND role = $2")
            .bind(business_id)
            .bind(role)
            .fetch_one(&app.owner_pool)
            .await
            .unwrap_or_else(|error| panic!("{role}: {error}"));
    account(app, &business.owner_key, &format!("acct_{}", id.simple())).await
}

pub(crate) async fn refundable(app: &TestApp, business: &TestBusiness, intent: &str) -> Value {
    let id: uuid::Uuid = sqlx::query_scalar("SELECT refundable_account FROM payments.intents WHERE id = $1")
        .bind(uuid::Uuid::parse_str(intent.trim_start_matches("pi_")).expect("uuid"))
        .fetch_one(&app.owner_pool)
        .await
        .expect("refundable account");
    account(app, &business.owner_key, &format!("acct_{}", id.simple())).await
}

/// The payment invariants against the ledger (`GET /v1/payments/check`) hold.
pub(crate) async fn payments_check(app: &TestApp, key: &str) {
    let report: Value = app.get("/v1/payments/check", key).await.json().await.expect("json");
    assert_eq!(report["ok"], true, "{report}");
}

/// The intent's events once `count` have arrived, as (type, sequence), oldest first.
pub(crate) async fn intent_events(app: &TestApp, key: &str, intent: &str, count: usize) -> Vec<(String, i64)> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let page: Value = app.get("/v1/events?limit=100", key).await.json().await.expect("json");
        let mut events: Vec<(String, i64)> = page["data"]
            .as_array()
            .expect("events")
            .iter()
            .filter(|event| event["resource_id"] == intent)
            .map(|event| {
                (event["type"].as_str().unwrap_or_default().to_string(), event["sequence"].as_i64().unwrap_or(0))
            })
            .collect();
        if events.len() >= count {
            events.sort_by_key(|(_, sequence)| *sequence);
            return events;
        }
        assert!(std::time::Instant::now() < deadline, "the intent's events never arrived: {events:?}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn an_automatic_payment_is_captured_with_its_fee_in_the_ledger() {
    let app = spawn_app().await;
    let business = app.create_business("GB").await;
    let key = &business.owner_key;
    let (status, intent) = create(
        &app,
        key,
        "pay-1",
        json!({"amount": 1000, "currency": "GBP", "payment_method": "pm_card_visa", "confirm": true,
               "description": "Order 42", "metadata": {"order": "42"}, "customer_email": "buyer@example.com"}),
    )
    .await;
    assert_eq!(status, 201, "{intent}");
    assert_eq!((intent["status"].as_str(), intent["amount_received"].as_i64()), (Some("succeeded"), Some(1000)));
    assert_eq!(intent["fee"], 35, "1.5 % of 1 000p, plus 20p");
    assert!(intent["id"].as_str().expect("id").starts_with("pi_"));
    // The money: captured into the merchant's pending balance, less the fee; owed by Stripe.
    assert_eq!(ledger_account(&app, &business, "merchant_pending").await["balance"], 965);
    assert_eq!(ledger_account(&app, &business, "receivable:stripe").await["balance"], 965);
    assert_eq!(refundable(&app, &business, intent["id"].as_str().expect("id")).await["balance"], 1000);
    assert_eq!(check(&app, key).await["ok"], true);
    // Stripe holds the same.
    let gateway = sim_object(&app, intent["gateway_intent_id"].as_str().expect("gateway id")).await;
    assert_eq!((gateway["status"].as_str(), gateway["amount_received"].as_i64()), (Some("succeeded"), Some(1000)));
    // A retry of the same request is the same answer, and Stripe is not called again.
    let (status, again) = create(
        &app,
        key,
        "pay-1",
        json!({"amount": 1000, "currency": "GBP", "payment_method": "pm_card_visa", "confirm": true,
               "description": "Order 42", "metadata": {"order": "42"}, "customer_email": "buyer@example.com"}),
    )
    .await;
    assert_eq!((status, &again), (201, &intent));
    assert_eq!(sim_calls(&app, "create").await.len(), 1);
    assert_eq!(sim_calls(&app, "confirm").await.len(), 1);
    let fetched: Value = app
        .get(&format!("/v1/payment_intents/{}", intent["id"].as_str().expect("id")), key)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(fetched["status"], "succeeded");
}

#[tokio::test]
async fn a_manual_payment_is_held_then_captured_once_in_part() {
    let app = spawn_app().await;
    let business = app.create_business("GB").await;
    let key = &business.owner_key;
    let (status, intent) = create(
        &app,
        key,
        "man-1",
        json!({"amount": 1000, "currency": "GBP", "capture_method": "manual", "payment_method": "pm_card_visa", "confirm": true}),
    )
    .await;
    assert_eq!(status, 201, "{intent}");
    assert_eq!(
        (intent["status"].as_str(), intent["amount_capturable"].as_i64()),
        (Some("requires_capture"), Some(1000))
    );
    let id = intent["id"].as_str().expect("id").to_string();
    // The authorisation is a hold: pending, nothing in the balance yet.
    let pending = ledger_account(&app, &business, "merchant_pending").await;
    assert_eq!((pending["balance"].as_i64(), pending["credits_pending"].as_i64()), (Some(0), Some(1000)));

    let (status, over) = step(&app, key, &id, "capture", "cap-over", json!({"amount_to_capture": 1001})).await;
    assert_eq!((status, over["param"].as_str()), (422, Some("amount_to_capture")), "{over}");
    let (status, captured) = step(&app, key, &id, "capture", "cap-1", json!({"amount_to_capture": 800})).await;
    assert_eq!(status, 200, "{captured}");
    assert_eq!((captured["status"].as_str(), captured["amount_received"].as_i64()), (Some("succeeded"), Some(800)));
    assert_eq!(captured["fee"], 32);
    let pending = ledger_account(&app, &business, "merchant_pending").await;
    assert_eq!(
        (pending["balance"].as_i64(), pending["credits_pending"].as_i64()),
        (Some(768), Some(0)),
        "the rest released"
    );
    assert_eq!(refundable(&app, &business, &id).await["balance"], 800);
    let (status, twice) = step(&app, key, &id, "capture", "cap-2", json!({})).await;
    assert_eq!((status, twice["code"].as_str()), (409, Some("state_conflict")));
    assert_eq!(sim_calls(&app, "capture").await.len(), 1, "nothing refused was sent to Stripe");
    assert_eq!(check(&app, key).await["ok"], true);
    // One event per status, in sequence without a gap (a step in flight is not one).
    let events = intent_events(&app, key, &id, 3).await;
    let expected = [
        ("payment_intent.created", 1),
        ("payment_intent.amount_capturable_updated", 2),
        ("payment_intent.succeeded", 3),
    ];
    assert_eq!(events, expected.map(|(kind, sequence)| (kind.to_string(), sequence)));
}

#[tokio::test]
async fn a_decline_waits_for_another_card() {
    let app = spawn_app().await;
    let business = app.create_business("GB").await;
    let key = &business.owner_key;
    let (status, declined) = create(
        &app,
        key,
        "dec-1",
        json!({"amount": 500, "currency": "GBP", "payment_method": "pm_card_visa_chargeDeclined", "confirm": true}),
    )
    .await;
    assert_eq!(status, 201, "{declined}");
    assert_eq!(declined["status"], "requires_payment_method");
    assert_eq!(declined["last_payment_error"]["decline_code"], "generic_decline");
    let id = declined["id"].as_str().expect("id").to_string();
    let (status, paid) = step(&app, key, &id, "confirm", "dec-2", json!({"payment_method": "pm_card_visa"})).await;
    assert_eq!((status, paid["status"].as_str()), (200, Some("succeeded")), "{paid}");
    assert_eq!(paid["last_payment_error"], Value::Null);
    let (status, again) = step(&app, key, &id, "confirm", "dec-3", json!({})).await;
    assert_eq!((status, again["code"].as_str()), (409, Some("state_conflict")));

    // A payment method the gateway does not know is refused: nothing happened, and the
    // intent waits for another, as after a decline.
    let (_, unknown) = create(&app, key, "dec-4", json!({"amount": 700, "currency": "GBP"})).await;
    let unknown = unknown["id"].as_str().expect("id").to_string();
    let (status, refused) =
        step(&app, key, &unknown, "confirm", "dec-5", json!({"payment_method": "pm_unheard_of"})).await;
    assert_eq!((status, refused["param"].as_str()), (422, Some("payment_method")), "{refused}");
    let waiting: Value = app.get(&format!("/v1/payment_intents/{unknown}"), key).await.json().await.expect("json");
    assert_eq!(waiting["status"], "requires_payment_method");
    assert_eq!(waiting["last_payment_error"]["code"], "resource_missing");
}

#[tokio::test]
async fn a_lying_gateway_puts_the_intent_in_review_and_posts_nothing() {
    let app = spawn_app().await;
    let business = app.create_business("GB").await;
    let key = &business.owner_key;
    for (n, lie) in ["wrong_amount", "wrong_currency", "unknown_status", "malformed"].into_iter().enumerate() {
        fault(&app, "confirm", lie, None).await;
        let (status, answer) = create(
            &app,
            key,
            &format!("lie-{n}"),
            json!({"amount": 1000, "currency": "GBP", "payment_method": "pm_card_visa", "confirm": true}),
        )
        .await;
        assert_eq!((status, answer["code"].as_str()), (502, Some("gateway_reply_invalid")), "{lie}: {answer}");
    }
    let reviewed: Vec<(String, Option<String>)> = sqlx::query_as("SELECT status, review_reason FROM payments.intents")
        .fetch_all(&app.owner_pool)
        .await
        .expect("intents");
    assert_eq!(reviewed.len(), 4);
    assert!(reviewed.iter().all(|(status, reason)| status == "requires_review" && reason.is_some()), "{reviewed:?}");
    let transfers: i64 =
        sqlx::query_scalar("SELECT count(*) FROM ledger.transfers").fetch_one(&app.owner_pool).await.expect("count");
    assert_eq!(transfers, 0, "nothing was posted on a reply that could not be trusted");
}

/// A capture whose reply is lost after Stripe applied it: Till retries with the same
/// key, Stripe holds exactly one capture and the ledger exactly one posting.
#[tokio::test]
async fn a_capture_whose_reply_is_lost_is_captured_and_posted_once() {
    let app = spawn_app().await;
    let business = app.create_business("GB").await;
    let key = &business.owner_key;
    let (_, intent) = create(
        &app,
        key,
        "lost-1",
        json!({"amount": 2000, "currency": "GBP", "capture_method": "manual", "payment_method": "pm_card_visa", "confirm": true}),
    )
    .await;
    let id = intent["id"].as_str().expect("id").to_string();
    fault(&app, "capture", "timeout_after_effect", Some(3_000)).await;
    let (status, captured) = step(&app, key, &id, "capture", "lost-cap", json!({})).await;
    assert_eq!((status, captured["status"].as_str()), (200, Some("succeeded")), "{captured}");
    let calls = sim_calls(&app, "capture").await;
    assert_eq!(calls.len(), 2, "the attempt whose reply was lost, and its retry");
    assert_eq!(calls[0]["idempotency_key"], calls[1]["idempotency_key"], "one key for one effect");
    let charge = sim_object(&app, captured["gateway_intent_id"].as_str().expect("gateway")).await;
    assert_eq!(charge["amount_received"], 2000);
    let posted: i64 = sqlx::query_scalar("SELECT count(*) FROM ledger.transfers WHERE metadata->>'kind' = 'capacity'")
        .fetch_one(&app.owner_pool)
        .await
        .expect("count");
    assert_eq!(posted, 1);
    assert_eq!(ledger_account(&app, &business, "merchant_pending").await["balance"], 2000 - 50);
}

#[tokio::test]
async fn bad_input_is_a_4xx_naming_the_field_and_reaches_no_gateway() {
    let app = spawn_app().await;
    let business = app.create_business("GB").await;
    let key = &business.owner_key;
    for (n, (body, param)) in [
        (json!({"amount": 0, "currency": "GBP"}), "amount"),
        (json!({"amount": -5, "currency": "GBP"}), "amount"),
        (json!({"amount": 100000000, "currency": "GBP"}), "amount"),
        (json!({"amount": 10.5, "currency": "GBP"}), "amount"),
        (json!({"amount": 100, "currency": "XYZ"}), "currency"),
        (json!({"amount": 100, "currency": "GBP", "capture_method": "later"}), "capture_method"),
        (json!({"amount": 100, "currency": "GBP", "payment_method": "pm_../../x"}), "payment_method"),
        (json!({"amount": 100, "currency": "GBP", "customer_email": "not an email"}), "customer_email"),
        (json!({"amount": 100, "currency": "GBP", "description": "bad\u{202e}text"}), "description"),
        (json!({"amount": 100, "currency": "GBP", "colour": "red"}), "colour"),
    ]
    .into_iter()
    .enumerate()
    {
        let response = app.post("/v1/payment_intents", key, &format!("bad-{n}"), &body).await;
        let status = response.status().as_u16();
        let problem = problem(response).await;
        assert_eq!(status, 400, "{body}: {problem}");
        assert_eq!(problem["param"].as_str(), Some(param), "{body}: {problem}");
    }
    // Two fields that do not go together break a rule, not the schema: 422.
    let response = app
        .post("/v1/payment_intents", key, "bad-rule", &json!({"amount": 100, "currency": "GBP", "confirm": true}))
        .await;
    assert_eq!(response.status().as_u16(), 422);
    assert_eq!(problem(response).await["param"], "payment_method");
    assert!(sim_calls(&app, "create").await.is_empty(), "nothing reached Stripe");
    let intents: i64 =
        sqlx::query_scalar("SELECT count(*) FROM payments.intents").fetch_one(&app.owner_pool).await.expect("count");
    assert_eq!(intents, 0, "nothing was stored");
    // Another business's intent is not found.
    let (_, intent) = create(&app, key, "mine", json!({"amount": 100, "currency": "GBP"})).await;
    let other = app.create_business("GB").await;
    let id = intent["id"].as_str().expect("id");
    assert_eq!(app.get(&format!("/v1/payment_intents/{id}"), &other.owner_key).await.status().as_u16(), 404);
    let (status, _) =
        step(&app, &other.owner_key, id, "confirm", "theirs", json!({"payment_method": "pm_card_visa"})).await;
    assert_eq!(status, 404);
}

/// A captured intent of `amount` (automatic capture), and its id.
pub(crate) async fn captured(app: &TestApp, key: &str, idempotency: &str, amount: i64) -> String {
    let (status, intent) = create(
        app,
        key,
        idempotency,
        json!({"amount": amount, "currency": "GBP", "payment_method": "pm_card_visa", "confirm": true}),
    )
    .await;
    assert_eq!((status, intent["status"].as_str()), (201, Some("succeeded")), "{intent}");
    intent["id"].as_str().expect("id").to_string()
}

pub(crate) async fn refund(app: &TestApp, key: &str, idempotency: &str, body: Value) -> (u16, Value) {
    let response = app.post("/v1/refunds", key, idempotency, &body).await;
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn refunds_are_partial_and_several_up_to_what_was_captured() {
    let app = spawn_app().await;
    let business = app.create_business("GB").await;
    let key = &business.owner_key;
    let id = captured(&app, key, "ref-pay", 1000).await;
    let (status, first) =
        refund(&app, key, "ref-1", json!({"payment_intent_id": id, "amount": 300, "reason": "requested_by_customer"}))
            .await;
    assert_eq!((status, first["status"].as_str()), (201, Some("succeeded")), "{first}");
    assert!(first["id"].as_str().expect("id").starts_with("re_"));
    let (status, rest) = refund(&app, key, "ref-2", json!({"payment_intent_id": id})).await;
    assert_eq!((status, rest["amount"].as_i64()), (201, Some(700)), "left out, the amount is what is left: {rest}");
    let (status, over) = refund(&app, key, "ref-3", json!({"payment_intent_id": id, "amount": 1})).await;
    assert_eq!(
        (status, over["code"].as_str(), over["param"].as_str()),
        (422, Some("insufficient_funds"), Some("amount"))
    );
    assert_eq!(sim_calls(&app, "refund").await.len(), 2, "the refused one never reached Stripe");
    let intent: Value = app.get(&format!("/v1/payment_intents/{id}"), key).await.json().await.expect("json");
    assert_eq!(intent["amount_refunded"], 1000);
    // 1 000 captured, 35 fee, 1 000 refunded: the merchant's pending balance is the fee
    // short, and the refundable amount is spent.
    assert_eq!(ledger_account(&app, &business, "merchant_pending").await["balance"], -35);
    assert_eq!(refundable(&app, &business, &id).await["balance"], 0);
    assert_eq!(check(&app, key).await["ok"], true);
    let fetched: Value =
        app.get(&format!("/v1/refunds/{}", first["id"].as_str().expect("id")), key).await.json().await.expect("json");
    assert_eq!((fetched["amount"].as_i64(), fetched["status"].as_str()), (Some(300), Some("succeeded")));
    let events = intent_events(&app, key, first["id"].as_str().expect("id"), 2).await;
    assert_eq!(events, [("refund.created".to_string(), 1), ("refund.succeeded".to_string(), 2)]);

    let (_, manual) = create(&app, key, "ref-manual", json!({"amount": 500, "currency": "GBP", "capture_method": "manual", "payment_method": "pm_card_visa", "confirm": true})).await;
    let (status, uncaptured) = refund(&app, key, "ref-4", json!({"payment_intent_id": manual["id"]})).await;
    assert_eq!((status, uncaptured["code"].as_str()), (409, Some("state_conflict")));
    payments_check(&app, key).await;
}

/// Over-refund is impossible by construction: 50 refunds of 10 at once against a capture
/// of 100 give exactly 10 refunds, and Stripe sees exactly 10.
#[tokio::test]
async fn fifty_concurrent_refunds_of_ten_against_a_hundred_make_exactly_ten() {
    let app = spawn_app().await;
    let business = app.create_business("GB").await;
    let key = business.owner_key.clone();
    let id = captured(&app, &key, "race-pay", 100).await;
    let attempts = (0..50).map(|n| {
        let (app, key, id) = (&app, key.clone(), id.clone());
        async move { refund(app, &key, &format!("race-{n}"), json!({"payment_intent_id": id, "amount": 10})).await.0 }
    });
    let statuses = futures::future::join_all(attempts).await;
    let made = statuses.iter().filter(|status| **status == 201).count();
    let refused = statuses.iter().filter(|status| **status == 422).count();
    assert_eq!((made, refused), (10, 40), "{statuses:?}");
    assert_eq!(sim_calls(&app, "refund").await.len(), 10);
    assert_eq!(refundable(&app, &business, &id).await["balance"], 0);
    let gateway_id: String = sqlx::query_scalar("SELECT gateway_intent_id FROM payments.intents WHERE id = $1")
        .bind(uuid::Uuid::parse_str(id.trim_start_matches("pi_")).expect("uuid"))
        .fetch_one(&app.owner_pool)
        .await
        .expect("gateway id");
    let gateway = sim_object(&app, &gateway_id).await;
    let charge = sim_object(&app, gateway["latest_charge"].as_str().expect("charge")).await;
    assert_eq!(charge["amount_refunded"], 100);
    payments_check(&app, &business.owner_key).await;
}

#[tokio::test]
async fn a_refund_whose_reply_cannot_be_trusted_needs_review_and_keeps_its_reservation() {
    let app = spawn_app().await;
    let business = app.create_business("GB").await;
    let key = &business.owner_key;
    let id = captured(&app, key, "rev-pay", 1000).await;
    fault(&app, "refund", "wrong_amount", None).await;
    let (status, answer) = refund(&app, key, "rev-1", json!({"payment_intent_id": id, "amount": 400})).await;
    assert_eq!((status, answer["code"].as_str()), (502, Some("gateway_reply_invalid")), "{answer}");
    let refunds: Vec<(String, Option<String>)> = sqlx::query_as("SELECT status, failure_reason FROM payments.refunds")
        .fetch_all(&app.owner_pool)
        .await
        .expect("refunds");
    assert_eq!(refunds.len(), 1);
    assert_eq!(refunds[0].0, "requires_review");
    // The money may have moved at Stripe: the 400 stays reserved, and no refund's money
    // was posted.
    assert_eq!(refundable(&app, &business, &id).await["balance"], 600);
    assert_eq!(ledger_account(&app, &business, "merchant_pending").await["balance"], 965);
    payments_check(&app, &business.owner_key).await;
}

#[tokio::test]
async fn canceling_an_authorisation_releases_its_hold() {
    let app = spawn_app().await;
    let business = app.create_business("GB").await;
    let key = &business.owner_key;
    let (_, intent) = create(
        &app,
        key,
        "can-1",
        json!({"amount": 1200, "currency": "GBP", "capture_method": "manual", "payment_method": "pm_card_visa", "confirm": true}),
    )
    .await;
    let id = intent["id"].as_str().expect("id").to_string();
    let (status, canceled) =
        step(&app, key, &id, "cancel", "can-2", json!({"cancellation_reason": "requested_by_customer"})).await;
    assert_eq!(
        (status, canceled["status"].as_str(), canceled["amount_capturable"].as_i64()),
        (200, Some("canceled"), Some(0)),
        "{canceled}"
    );
    let pending = ledger_account(&app, &business, "merchant_pending").await;
    assert_eq!(
        (pending["balance"].as_i64(), pending["credits_pending"].as_i64()),
        (Some(0), Some(0)),
        "the hold is void"
    );
    let gateway = sim_object(&app, canceled["gateway_intent_id"].as_str().expect("gateway")).await;
    assert_eq!(gateway["status"], "canceled");
    let (status, capture) = step(&app, key, &id, "capture", "can-3", json!({})).await;
    assert_eq!((status, capture["code"].as_str()), (409, Some("state_conflict")));
    let (status, again) = step(&app, key, &id, "cancel", "can-4", json!({})).await;
    assert_eq!((status, again["code"].as_str()), (409, Some("state_conflict")));
    let (status, bad) = step(&app, key, &id, "cancel", "can-5", json!({"cancellation_reason": "bored"})).await;
    assert_eq!((status, bad["param"].as_str()), (400, Some("cancellation_reason")));
    let events = intent_events(&app, key, &id, 3).await;
    let kinds: Vec<&str> = events.iter().map(|(kind, _)| kind.as_str()).collect();
    assert_eq!(
        kinds,
        ["payment_intent.created", "payment_intent.amount_capturable_updated", "payment_intent.canceled"]
    );
    assert_eq!(check(&app, key).await["ok"], true);
}

/// A confirm whose every attempt times out: the gateway may or may not have acted, so
/// the API answers 202 with the intent `processing` and decides nothing. A retry of the
/// same Idempotency-Key gets the outcome; with nobody retrying, the recovery job settles
/// it; either way with the one gateway key, so the gateway captures once.
#[tokio::test]
async fn a_confirm_whose_outcome_is_unknown_answers_202_and_is_settled_later() {
    let mut config = till_testkit::test_config();
    config.recovery.grace = std::time::Duration::from_millis(500);
    let app = till_testkit::spawn_app_with(config, Default::default()).await;
    let business = app.create_business("GB").await;
    let key = &business.owner_key;
    let body = json!({"amount": 1500, "currency": "GBP", "payment_method": "pm_card_visa", "confirm": true});

    for (attempt, retried_by_client) in [("by-client", true), ("by-job", false)] {
        let arm =
            json!({"provider": "stripe", "operation": "confirm", "fault": "timeout", "count": 3, "delay_ms": 2_500});
        let armed = app.client.post(format!("{}/_sim/faults", app.sim)).json(&arm).send().await.expect("fault");
        assert_eq!(armed.status().as_u16(), 201);
        let (status, intent) = create(&app, key, attempt, body.clone()).await;
        assert_eq!((status, intent["status"].as_str()), (202, Some("processing")), "{intent}");
        let id = intent["id"].as_str().expect("id").to_string();
        let cleared = app.client.delete(format!("{}/_sim/faults", app.sim)).send().await.expect("clear");
        assert_eq!(cleared.status().as_u16(), 204);

        let settled = if retried_by_client {
            // The recovery job may have taken the key over after the grace (this test's
            // is short): then the retry is a 409 "still running", and a client retries
            // again until it has finished, as the contract says.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
            loop {
                let (status, settled) = create(&app, key, attempt, body.clone()).await;
                if status != 409 {
                    assert_eq!(status, 201, "{settled}");
                    break settled;
                }
                assert!(std::time::Instant::now() < deadline, "still running: {settled}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        } else {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
            loop {
                let current: Value =
                    app.get(&format!("/v1/payment_intents/{id}"), key).await.json().await.expect("json");
                if current["status"] != "processing" {
                    break current;
                }
                assert!(std::time::Instant::now() < deadline, "still processing: {current}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        };
        assert_eq!((settled["status"].as_str(), settled["amount_received"].as_i64()), (Some("succeeded"), Some(1500)));
        let gateway = sim_object(&app, settled["gateway_intent_id"].as_str().expect("gateway id")).await;
        assert_eq!(gateway["amount_received"], 1500);
    }
    let confirms = sim_calls(&app, "confirm").await;
    let keys: std::collections::BTreeSet<String> =
        confirms.iter().map(|call| call["idempotency_key"].as_str().unwrap_or_default().to_string()).collect();
    assert_eq!(keys.len(), 2, "one gateway key per intent's confirm, however often it was tried: {confirms:?}");
    assert_eq!(ledger_account(&app, &business, "merchant_pending").await["balance"], 2 * (1500 - 43));
    check(&app, key).await;
    payments_check(&app, key).await;
}

/// Stripe answering 500 to everything: the breaker opens, and then the API answers 503
/// `gateway_unavailable` with Retry-After without calling Stripe (the simulator's log
/// proves it); once Stripe is back and the breaker's open time is over, its half-open
/// trials succeed and payments go through again. A 429 is retried after its Retry-After.
#[tokio::test]
async fn an_outage_opens_the_breaker_and_refuses_without_calling_stripe() {
    let sim = till_testkit::start_simulator(None).await.expect("simulator");
    let mut stripe = till_testkit::stripe_settings(&sim);
    stripe.breaker.minimum_calls = 6;
    stripe.breaker.open_for = std::time::Duration::from_secs(2);
    let mut config = till_testkit::test_config();
    config.payments.stripe = Some(stripe);
    let app = till_testkit::spawn_app_with(config, Default::default()).await;
    let business = app.create_business("GB").await;
    let key = &business.owner_key;
    let body = json!({"amount": 1000, "currency": "GBP"});
    let arm = json!({"provider": "stripe", "operation": "create", "fault": "error_500", "count": 1000});
    let armed = app.client.post(format!("{}/_sim/faults", app.sim)).json(&arm).send().await.expect("fault");
    assert_eq!(armed.status().as_u16(), 201);

    let mut refused_without_a_call = false;
    for attempt in 0..30 {
        let calls_before = sim_calls(&app, "create").await.len();
        let response = app.post("/v1/payment_intents", key, &format!("outage-{attempt}"), &body).await;
        let status = response.status().as_u16();
        let retry_after = response.headers().get("retry-after").cloned();
        let problem: Value = response.json().await.expect("json");
        assert_eq!((status, problem["code"].as_str()), (503, Some("gateway_unavailable")), "{problem}");
        assert!(retry_after.is_some(), "a 503 says when to retry");
        if sim_calls(&app, "create").await.len() == calls_before {
            refused_without_a_call = true;
            break;
        }
    }
    assert!(refused_without_a_call, "the breaker never opened");

    // Stripe is back; after the open time, the half-open trials close the breaker.
    let cleared = app.client.delete(format!("{}/_sim/faults", app.sim)).send().await.expect("clear");
    assert_eq!(cleared.status().as_u16(), 204);
    tokio::time::sleep(std::time::Duration::from_millis(2_200)).await;
    // The half-open trials may be taken by other calls to Stripe (the settlement job
    // reads its payouts every 200 ms here): until their verdict, a create is refused
    // with Retry-After. It goes through within a few seconds, and then every one does.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    let mut attempt = 0;
    loop {
        let (status, intent) = create(&app, key, &format!("trial-{attempt}"), body.clone()).await;
        if status == 201 {
            break;
        }
        assert_eq!((status, intent["code"].as_str()), (503, Some("gateway_unavailable")), "{intent}");
        assert!(std::time::Instant::now() < deadline, "the breaker never closed again: {intent}");
        attempt += 1;
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    for attempt in 0..3 {
        let (status, intent) = create(&app, key, &format!("back-{attempt}"), body.clone()).await;
        assert_eq!(status, 201, "{intent}");
    }

    // A 429 is retried after Retry-After, with the same key, within the request.
    let arm = json!({"provider": "stripe", "operation": "create", "fault": "error_429", "count": 1});
    let armed = app.client.post(format!("{}/_sim/faults", app.sim)).json(&arm).send().await.expect("fault");
    assert_eq!(armed.status().as_u16(), 201);
    let (status, intent) = create(&app, key, "after-429", body.clone()).await;
    assert_eq!(status, 201, "{intent}");
    let calls = sim_calls(&app, "create").await;
    let last_two: Vec<_> = calls.iter().rev().take(2).collect();
    assert_eq!((last_two[1]["status"].as_u64(), last_two[0]["status"].as_u64()), (Some(429), Some(200)));
    assert_eq!(last_two[0]["idempotency_key"], last_two[1]["idempotency_key"]);
}

/// Stripe refunds, and the ledger will not take the money out of the pending balance
/// (the account was frozen in between): the refund needs review, keeps its reservation,
/// and the request ends with a 409 instead of retrying the same refusal forever.
#[tokio::test]
async fn a_refund_the_ledger_refuses_to_follow_needs_review() {
    let app = spawn_app().await;
    let business = app.create_business("GB").await;
    let key = &business.owner_key;
    let id = captured(&app, key, "pay-1", 1000).await;
    let pending = ledger_account(&app, &business, "merchant_pending").await;
    let pending_id = pending["id"].as_str().expect("id");
    let frozen = app
        .request(reqwest::Method::PATCH, &format!("/v1/accounts/{pending_id}"), key)
        .json(&json!({"status": "frozen"}))
        .send()
        .await
        .expect("patch");
    assert_eq!(frozen.status().as_u16(), 200);
    let (status, problem) = refund(&app, key, "refund-1", json!({"payment_intent_id": id, "amount": 400})).await;
    assert_eq!((status, problem["code"].as_str()), (409, Some("state_conflict")), "{problem}");
    let (again, replayed) = refund(&app, key, "refund-1", json!({"payment_intent_id": id, "amount": 400})).await;
    assert_eq!((again, &replayed["code"]), (409, &problem["code"]), "the decision is stored, not retried");
    let refunds: Value = app.get(&format!("/v1/refunds?payment_intent_id={id}"), key).await.json().await.expect("json");
    let made = &refunds["data"][0];
    assert_eq!(made["status"], "requires_review", "{made}");
    assert!(made["gateway_refund_id"].as_str().is_some_and(|gateway| gateway.starts_with("re_")), "{made}");
    assert_eq!(refundable(&app, &business, &id).await["balance"], 600, "the reservation stays");
    assert_eq!(ledger_account(&app, &business, "merchant_pending").await["balance"], 965, "no money was posted");
    payments_check(&app, key).await;
}
