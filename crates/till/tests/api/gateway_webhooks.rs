//! Stripe's webhooks at `POST /v1/providers/stripe/webhooks`: verified, recorded once,
//! order-safe, and never posted from.

use serde_json::{json, Value};
use till_testkit::{problem, spawn_app, TestApp, STRIPE_WEBHOOK_SECRET};

use crate::ledger_helpers::check;
use crate::payments::{create, fault, ledger_account, sim_object, step};

const PATH: &str = "/v1/providers/stripe/webhooks";

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn event(id: &str, kind: &str, object: Value) -> Vec<u8> {
    json!({"id": id, "object": "event", "type": kind, "created": now(), "data": {"object": object},
           "livemode": false, "api_version": "2024-06-20"})
    .to_string()
    .into_bytes()
}

async fn deliver(app: &TestApp, body: &[u8], signature: Option<String>) -> (u16, Value) {
    let mut request = app
        .client
        .post(format!("{}{PATH}", app.address))
        .header("content-type", "application/json")
        .body(body.to_vec());
    if let Some(signature) = signature {
        request = request.header("stripe-signature", signature);
    }
    let response = request.send().await.expect("webhook");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn signed(body: &[u8], secret: &str, at: i64) -> String {
    format!("t={at},v1={}", till_sim::stripe::sign(secret, at, body))
}

async fn recorded(app: &TestApp, event_id: &str) -> Vec<Option<String>> {
    sqlx::query_scalar("SELECT outcome FROM payments.gateway_events WHERE event_id = $1")
        .bind(event_id)
        .fetch_all(&app.owner_pool)
        .await
        .expect("gateway events")
}

/// The outcome of each event Stripe sent about `gateway_id`, once `count` have come.
async fn outcomes(app: &TestApp, gateway_id: &str, count: usize) -> Vec<(String, Option<String>)> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let rows: Vec<(String, Option<String>)> = sqlx::query_as(
            "SELECT type, outcome FROM payments.gateway_events WHERE object_id = $1 ORDER BY received_at",
        )
        .bind(gateway_id)
        .fetch_all(&app.owner_pool)
        .await
        .expect("gateway events");
        if rows.len() >= count {
            return rows;
        }
        assert!(std::time::Instant::now() < deadline, "only {rows:?} arrived");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

async fn authorised(app: &TestApp, key: &str, idempotency: &str) -> Value {
    let (status, intent) = create(
        app,
        key,
        idempotency,
        json!({"amount": 1000, "currency": "GBP", "capture_method": "manual", "payment_method": "pm_card_visa", "confirm": true}),
    )
    .await;
    assert_eq!((status, intent["status"].as_str()), (201, Some("requires_capture")), "{intent}");
    intent
}

#[tokio::test]
async fn a_webhook_that_does_not_verify_is_refused_and_records_nothing() {
    let app = spawn_app().await;
    let business = app.create_business("GB").await;
    let intent = authorised(&app, &business.owner_key, "auth-1").await;
    let gateway_id = intent["gateway_intent_id"].as_str().expect("gateway id");
    let object = sim_object(&app, gateway_id).await;
    let body = event("evt_forged_1", "payment_intent.succeeded", object);

    let mut tampered = body.clone();
    tampered.extend_from_slice(b" ");
    let cases: Vec<(&str, &[u8], Option<String>)> = vec![
        ("no signature", &body, None),
        ("another secret", &body, Some(signed(&body, "whsec_someone_else", now()))),
        ("stale", &body, Some(signed(&body, STRIPE_WEBHOOK_SECRET, now() - 301))),
        // A minute past the 300 s tolerance: the cases are signed before any is sent, and
        // on a slow machine one second past it had become inside it by the time it went.
        ("from the future", &body, Some(signed(&body, STRIPE_WEBHOOK_SECRET, now() + 360))),
        ("not the header's shape", &body, Some(String::from("v1=abc"))),
        ("hostile", &body, Some(String::from("t=\u{0}\u{7f}ü,v1=zz"))),
        ("the body changed after signing", &tampered, Some(signed(&body, STRIPE_WEBHOOK_SECRET, now()))),
    ];
    for (case, body, signature) in cases {
        let mut request = app
            .client
            .post(format!("{}{PATH}", app.address))
            .header("content-type", "application/json")
            .body(body.to_vec());
        if let Some(signature) = signature {
            match reqwest::header::HeaderValue::from_bytes(signature.as_bytes()) {
                Ok(value) => request = request.header("stripe-signature", value),
                Err(_) => continue,
            }
        }
        let response = request.send().await.expect("webhook");
        assert_eq!(response.status().as_u16(), 400, "{case}");
        let problem = problem(response).await;
        assert_eq!(
            (problem["code"].as_str(), problem["param"].as_str()),
            (Some("webhook_signature_invalid"), Some("Stripe-Signature")),
            "{case}"
        );
    }
    assert!(recorded(&app, "evt_forged_1").await.is_empty());
    let current: Value = app
        .get(&format!("/v1/payment_intents/{}", intent["id"].as_str().expect("id")), &business.owner_key)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!((current["status"].as_str(), &current["version"]), (Some("requires_capture"), &intent["version"]));

    // Signed, but not an event: 400 naming the body, nothing recorded.
    let junk = b"{\"id\": \"evt_1\", \"object\": \"charge\"}".to_vec();
    let (status, refused) = deliver(&app, &junk, Some(signed(&junk, STRIPE_WEBHOOK_SECRET, now()))).await;
    assert_eq!((status, refused["param"].as_str()), (400, Some("body")), "{refused}");
}

#[tokio::test]
async fn a_webhook_delivered_twice_or_late_changes_nothing() {
    let app = spawn_app().await;
    let business = app.create_business("GB").await;
    let key = &business.owner_key;
    // Stripe sends the authorisation's event late, after the capture's.
    fault(&app, "webhook:payment_intent.amount_capturable_updated", "webhook_delay", Some(1_500)).await;
    let intent = authorised(&app, key, "auth-1").await;
    let id = intent["id"].as_str().expect("id").to_string();
    let gateway_id = intent["gateway_intent_id"].as_str().expect("gateway id").to_string();
    let (status, captured) = step(&app, key, &id, "capture", "cap-1", json!({})).await;
    assert_eq!((status, captured["status"].as_str()), (200, Some("succeeded")), "{captured}");
    let arrived = outcomes(&app, &gateway_id, 3).await;
    assert_eq!(arrived.last().map(|(kind, _)| kind.as_str()), Some("payment_intent.amount_capturable_updated"));
    let outcome_of =
        |kind: &str| arrived.iter().find(|(seen, _)| seen == kind).and_then(|(_, outcome)| outcome.clone());
    // The capture's own event came while the capture ran (the request, not the event,
    // finished it) or after it; the authorisation's came after the capture: stale.
    assert!(matches!(outcome_of("payment_intent.succeeded").as_deref(), Some("stale" | "expedited")), "{arrived:?}");
    assert_eq!(outcome_of("payment_intent.amount_capturable_updated").as_deref(), Some("stale"), "{arrived:?}");
    let current: Value = app.get(&format!("/v1/payment_intents/{id}"), key).await.json().await.expect("json");
    assert_eq!((current["status"].as_str(), &current["version"]), (Some("succeeded"), &captured["version"]));

    // The same event again, and again: recorded once, done once.
    let object = sim_object(&app, &gateway_id).await;
    let body = event("evt_twice_1", "payment_intent.succeeded", object);
    for attempt in 0..3 {
        let (status, receipt) = deliver(&app, &body, Some(signed(&body, STRIPE_WEBHOOK_SECRET, now()))).await;
        assert_eq!((status, receipt["duplicate"].as_bool()), (200, Some(attempt > 0)), "{receipt}");
    }
    assert_eq!(recorded(&app, "evt_twice_1").await, vec![Some(String::from("stale"))]);
    assert_eq!(ledger_account(&app, &business, "merchant_pending").await["balance"], 1000 - 35);
    check(&app, key).await;
    crate::payments::payments_check(&app, key).await;
}

#[tokio::test]
async fn a_move_made_outside_till_puts_the_intent_in_review_and_posts_nothing() {
    let app = spawn_app().await;
    let business = app.create_business("GB").await;
    let key = &business.owner_key;
    let intent = authorised(&app, key, "auth-1").await;
    let id = intent["id"].as_str().expect("id");
    let gateway_id = intent["gateway_intent_id"].as_str().expect("gateway id");
    // Captured in Stripe's dashboard, say: Stripe says succeeded, Till never asked.
    let mut object = sim_object(&app, gateway_id).await;
    object["status"] = json!("succeeded");
    object["amount_received"] = json!(1000);
    object["amount_capturable"] = json!(0);
    let body = event("evt_outside_1", "payment_intent.succeeded", object);
    let (status, receipt) = deliver(&app, &body, Some(signed(&body, STRIPE_WEBHOOK_SECRET, now()))).await;
    assert_eq!((status, receipt["outcome"].as_str()), (200, Some("review")), "{receipt}");
    let current: Value = app.get(&format!("/v1/payment_intents/{id}"), key).await.json().await.expect("json");
    assert_eq!(current["status"], "requires_review", "{current}");
    assert!(current["review_reason"].as_str().expect("reason").contains("payment_intent.succeeded"));
    assert_eq!(ledger_account(&app, &business, "merchant_pending").await["balance"], 0, "nothing posted");

    // An event about an object Till does not know is received and ignored.
    let body =
        event("evt_unknown_1", "payment_intent.succeeded", json!({"id": "pi_not_ours", "object": "payment_intent"}));
    let (status, receipt) = deliver(&app, &body, Some(signed(&body, STRIPE_WEBHOOK_SECRET, now()))).await;
    assert_eq!((status, receipt["outcome"].as_str()), (200, Some("ignored")), "{receipt}");
}

/// A capture whose reply was lost: the request answers 202 and, with a grace of a
/// minute, the recovery job would wait that long; Stripe's webhook about the capture
/// makes the job resume it at once.
#[tokio::test]
async fn a_webhook_hurries_a_step_whose_outcome_was_unknown() {
    let mut config = till_testkit::test_config();
    config.recovery.grace = std::time::Duration::from_secs(120);
    let app = till_testkit::spawn_app_with(config, Default::default()).await;
    let business = app.create_business("GB").await;
    let key = &business.owner_key;
    let intent = authorised(&app, key, "auth-1").await;
    let id = intent["id"].as_str().expect("id").to_string();
    let arm = json!({"provider": "stripe", "operation": "capture", "fault": "timeout_after_effect", "count": 3, "delay_ms": 2_500});
    let armed = app.client.post(format!("{}/_sim/faults", app.sim)).json(&arm).send().await.expect("fault");
    assert_eq!(armed.status().as_u16(), 201);
    let (status, pending) = step(&app, key, &id, "capture", "cap-1", json!({})).await;
    assert_eq!((status, pending["status"].as_str()), (202, Some("processing")), "{pending}");
    let started = std::time::Instant::now();
    loop {
        let current: Value = app.get(&format!("/v1/payment_intents/{id}"), key).await.json().await.expect("json");
        if current["status"] == "succeeded" {
            break;
        }
        assert!(started.elapsed() < std::time::Duration::from_secs(30), "not hurried: {current}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let arrived = outcomes(&app, intent["gateway_intent_id"].as_str().expect("gateway id"), 2).await;
    assert!(
        arrived
            .iter()
            .any(|(kind, outcome)| kind == "payment_intent.succeeded" && outcome.as_deref() == Some("expedited")),
        "{arrived:?}"
    );
    // The client's retry gets what the job stored.
    let (status, replayed) = step(&app, key, &id, "capture", "cap-1", json!({})).await;
    assert_eq!((status, replayed["status"].as_str()), (200, Some("succeeded")), "{replayed}");
    assert_eq!(ledger_account(&app, &business, "merchant_pending").await["balance"], 1000 - 35);
    check(&app, key).await;
    crate::payments::payments_check(&app, key).await;
}
