//! Rupee payments end to end through the Razorpay adapter and the simulator playing
//! Razorpay: an order per intent, a UPI collect the customer answers later (the webhook
//! expedites the step, the recovery job asks again), capture, refunds, settlement.

use serde_json::{json, Value};
use till_testkit::{problem, spawn_app, TestApp};

use crate::ledger_helpers::check;
use crate::payments::{create, ledger_account, payments_check, refund, step};

fn upi(vpa: &str) -> Value {
    json!({"type": "upi", "vpa": vpa})
}

async fn razorpay_calls(app: &TestApp, operation: &str) -> Vec<Value> {
    app.sim_calls("razorpay", operation).await
}

async fn razorpay_object(app: &TestApp, id: &str) -> Value {
    app.sim_object("razorpay", id).await
}

async fn razorpay_fault(app: &TestApp, operation: &str, fault: &str) {
    let body = json!({"provider": "razorpay", "operation": operation, "fault": fault, "delay_ms": 2_500});
    let response = app.client.post(format!("{}/_sim/faults", app.sim)).json(&body).send().await.expect("fault");
    assert_eq!(response.status().as_u16(), 201);
}

/// The intent once it has left `processing` (within `seconds`).
async fn decided(app: &TestApp, key: &str, intent: &str, seconds: u64) -> Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(seconds);
    loop {
        let current: Value = app.get(&format!("/v1/payment_intents/{intent}"), key).await.json().await.expect("json");
        if current["status"] != "processing" {
            return current;
        }
        assert!(std::time::Instant::now() < deadline, "still processing after {seconds} s: {current}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// The collect is answered in the customer's app a moment after the confirm: the confirm
/// answers 202 `processing`, and Razorpay's webhook expedites the step (long before the
/// recovery job's 30 s grace), which asks again and records the capture with its fee.
/// A refund and a settlement follow, each matched and in the ledger.
#[tokio::test]
async fn a_upi_payment_is_captured_when_the_customer_approves_and_settles_less_fee_and_refund() {
    let app = spawn_app().await;
    let business = app.create_business("IN").await;
    let key = &business.owner_key;
    let body = json!({"amount": 50_000, "currency": "INR", "payment_method": upi("success@razorpay"), "confirm": true,
                      "customer_email": "buyer@example.in"});
    let (status, intent) = create(&app, key, "upi-1", body).await;
    assert_eq!(
        (status, intent["status"].as_str(), intent["gateway"].as_str()),
        (202, Some("processing"), Some("razorpay")),
        "{intent}"
    );
    assert_eq!(intent["payment_method"], upi("success@razorpay"));
    let id = intent["id"].as_str().expect("id");
    let order = intent["gateway_intent_id"].as_str().expect("order").to_string();
    assert!(order.starts_with("order_"), "{order}");

    let settled = decided(&app, key, id, 10).await;
    // 2 % of ₹500 is ₹10.00, and 18 % GST on it ₹1.80: a fee of 1 180 paise.
    assert_eq!(
        (settled["status"].as_str(), settled["amount_received"].as_i64(), settled["fee"].as_i64()),
        (Some("succeeded"), Some(50_000), Some(1_180)),
        "{settled}"
    );
    assert_eq!(ledger_account(&app, &business, "receivable:razorpay").await["balance"], 50_000 - 1_180);
    assert_eq!(ledger_account(&app, &business, "merchant_pending").await["balance"], 50_000 - 1_180);
    // The retry of the create with its key answers as the step ended.
    let (status, replayed) = create(
        &app,
        key,
        "upi-1",
        json!({"amount": 50_000, "currency": "INR",
        "payment_method": upi("success@razorpay"), "confirm": true, "customer_email": "buyer@example.in"}),
    )
    .await;
    assert_eq!((status, replayed["status"].as_str()), (201, Some("succeeded")), "{replayed}");
    // One order, one collect: the step asked again without paying again.
    assert_eq!(razorpay_calls(&app, "create").await.len(), 1);
    assert_eq!(razorpay_calls(&app, "confirm").await.len(), 1);

    let (status, refunded) = refund(&app, key, "upi-refund", json!({"payment_intent_id": id, "amount": 20_000})).await;
    assert_eq!((status, refunded["status"].as_str()), (201, Some("succeeded")), "{refunded}");
    assert!(refunded["gateway_refund_id"].as_str().is_some_and(|refund| refund.starts_with("rfnd_")), "{refunded}");
    let payment = razorpay_object(&app, settled["gateway_charge_id"].as_str().unwrap_or_default()).await;
    assert_eq!((&payment["status"], &payment["amount_refunded"]), (&json!("captured"), &json!(20_000)), "{payment}");

    let settle = app.client.post(format!("{}/_sim/razorpay/settle", app.sim)).send().await.expect("settle");
    assert_eq!(settle.json::<Value>().await.expect("json")["settlements"], 1);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let settlement = loop {
        let page: Value = app.get("/v1/settlements", key).await.json().await.expect("json");
        if let Some(first) = page["data"].as_array().and_then(|items| items.first()) {
            break first.clone();
        }
        assert!(std::time::Instant::now() < deadline, "never settled");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert_eq!(
        (
            &settlement["gateway"],
            &settlement["charges"],
            &settlement["fees"],
            &settlement["refunds"],
            &settlement["net"]
        ),
        (&json!("razorpay"), &json!(50_000), &json!(1_180), &json!(20_000), &json!(28_820)),
        "{settlement}"
    );
    assert!(settlement["gateway_payout_id"].as_str().is_some_and(|id| id.starts_with("setl_")));
    assert_eq!(ledger_account(&app, &business, "settled:razorpay").await["balance"], 28_820);
    let balance: Value = app.get("/v1/balance", key).await.json().await.expect("json");
    assert_eq!(
        balance,
        json!({"available": [{"amount": 28_820, "currency": "INR"}],
                                "pending": [{"amount": 0, "currency": "INR"}]})
    );
    let exceptions: Value = app.get("/v1/reconciliation/exceptions", key).await.json().await.expect("json");
    assert_eq!(exceptions["data"], json!([]), "{exceptions}");
    check(&app, key).await;
    payments_check(&app, key).await;
}

/// A collect the customer declines returns the intent to `requires_payment_method` with
/// Razorpay's reason; another VPA is authorised (manual capture), then captured whole:
/// Razorpay cannot capture part of an authorisation, so a partial capture is a 422 that
/// reaches no gateway.
#[tokio::test]
async fn a_declined_collect_waits_for_another_vpa_and_capture_is_all_or_nothing() {
    let app = spawn_app().await;
    let business = app.create_business("IN").await;
    let key = &business.owner_key;
    let body = json!({"amount": 25_000, "currency": "INR", "capture_method": "manual",
                      "payment_method": upi("failure@razorpay"), "confirm": true});
    let (status, intent) = create(&app, key, "declined", body).await;
    assert_eq!(status, 202, "{intent}");
    let id = intent["id"].as_str().expect("id");
    let declined = decided(&app, key, id, 10).await;
    assert_eq!(declined["status"], "requires_payment_method", "{declined}");
    assert_eq!(declined["last_payment_error"]["code"], "payment_failed", "{declined}");

    let (status, confirmed) =
        step(&app, key, id, "confirm", "again", json!({"payment_method": upi("success@razorpay")})).await;
    assert_eq!((status, confirmed["status"].as_str()), (202, Some("processing")), "{confirmed}");
    let authorised = decided(&app, key, id, 10).await;
    assert_eq!(
        (authorised["status"].as_str(), authorised["amount_capturable"].as_i64()),
        (Some("requires_capture"), Some(25_000))
    );
    assert_eq!(authorised["last_payment_error"], Value::Null);

    let captures = razorpay_calls(&app, "capture").await.len();
    let (status, partial) = step(&app, key, id, "capture", "part", json!({"amount_to_capture": 10_000})).await;
    assert_eq!(status, 422, "{partial}");
    assert_eq!(partial["param"], "amount_to_capture");
    assert_eq!(razorpay_calls(&app, "capture").await.len(), captures, "a partial capture reached Razorpay");
    let (status, captured) = step(&app, key, id, "capture", "whole", json!({})).await;
    assert_eq!(
        (status, captured["status"].as_str(), captured["amount_received"].as_i64()),
        (200, Some("succeeded"), Some(25_000)),
        "{captured}"
    );
    assert_eq!(captured["fee"], 590);
    assert_eq!(ledger_account(&app, &business, "merchant_pending").await["balance"], 25_000 - 590);
    check(&app, key).await;
    payments_check(&app, key).await;
}

/// INR goes through Razorpay and takes UPI; GBP through Stripe and takes cards. A method
/// that does not fit, or a VPA that is not one, is a 400 naming the field, and nothing
/// reaches a gateway.
#[tokio::test]
async fn a_payment_method_the_route_does_not_take_is_refused_before_any_gateway() {
    let app = spawn_app().await;
    let business = app.create_business("IN").await;
    let key = &business.owner_key;
    let cases = [
        // The currency routes the gateway: a method the route does not take breaks a rule.
        (json!({"amount": 1000, "currency": "INR", "payment_method": "pm_card_visa"}), 422, "payment_method"),
        (json!({"amount": 1000, "currency": "GBP", "payment_method": upi("success@razorpay")}), 422, "payment_method"),
        (json!({"amount": 1000, "currency": "INR", "payment_method": upi("no-handle")}), 400, "payment_method.vpa"),
        (json!({"amount": 1000, "currency": "INR", "payment_method": upi("a@b\u{202e}c")}), 400, "payment_method.vpa"),
        (
            json!({"amount": 1000, "currency": "INR", "payment_method": {"type": "card", "vpa": "x@y"}}),
            400,
            "payment_method.type",
        ),
    ];
    for (index, (body, status, param)) in cases.into_iter().enumerate() {
        let response = app.post("/v1/payment_intents", key, &format!("bad-{index}"), &body).await;
        let found = problem(response).await;
        assert_eq!((found["status"].as_u64(), found["param"].as_str()), (Some(status), Some(param)), "{body}: {found}");
    }
    // A valid VPA the simulator's Razorpay does not know is refused there: the intent
    // waits for another method.
    let (status, intent) = create(
        &app,
        key,
        "unknown-vpa",
        json!({"amount": 1000, "currency": "INR", "payment_method": upi("someone@okbank"), "confirm": true}),
    )
    .await;
    assert_eq!(status, 422, "{intent}");
    assert_eq!(intent["param"], "payment_method");
    assert_eq!(razorpay_calls(&app, "confirm").await.len(), 1, "only the last case reached Razorpay");
    let calls: Value = app
        .client
        .get(format!("{}/_sim/calls?provider=stripe", app.sim))
        .send()
        .await
        .expect("calls")
        .json()
        .await
        .expect("json");
    let payment_calls: Vec<&Value> =
        calls["data"].as_array().expect("calls").iter().filter(|call| call["operation"] != "list_payouts").collect();
    assert!(payment_calls.is_empty(), "nothing but the reconciler's reads reached Stripe: {payment_calls:?}");
}

/// The collect's reply is lost after Razorpay made the payment: the confirm answers 202,
/// and the retry of the same key finds that payment by its note instead of making a
/// second one (Razorpay's payments API has no idempotency key).
#[tokio::test]
async fn a_collect_whose_reply_is_lost_is_found_again_not_made_twice() {
    let app = spawn_app().await;
    let business = app.create_business("IN").await;
    let key = &business.owner_key;
    razorpay_fault(&app, "confirm", "timeout_after_effect").await;
    // No webhook expedites the step to the recovery job, which would hold the key while
    // it runs (a retry then is a 409): here the client's retry is what asks again.
    let arm = json!({"provider": "razorpay", "operation": "webhook", "fault": "webhook_drop", "count": 100});
    let armed = app.client.post(format!("{}/_sim/faults", app.sim)).json(&arm).send().await.expect("fault");
    assert_eq!(armed.status().as_u16(), 201);
    let body = json!({"amount": 30_000, "currency": "INR", "payment_method": upi("success@razorpay"), "confirm": true});
    let (status, intent) = create(&app, key, "lost", body.clone()).await;
    assert_eq!((status, intent["status"].as_str()), (202, Some("processing")), "{intent}");
    let id = intent["id"].as_str().expect("id").to_string();
    tokio::time::sleep(std::time::Duration::from_millis(800)).await;
    let (status, again) = create(&app, key, "lost", body).await;
    assert_eq!((status, again["status"].as_str()), (201, Some("succeeded")), "{again}");
    assert_eq!(razorpay_calls(&app, "confirm").await.len(), 1, "one collect request, however often it was asked");
    let order = razorpay_object(&app, intent["gateway_intent_id"].as_str().expect("order")).await;
    assert_eq!((&order["amount_paid"], &order["attempts"]), (&json!(30_000), &json!(1)), "{order}");
    assert_eq!(decided(&app, key, &id, 1).await["status"], "succeeded");
    check(&app, key).await;
    payments_check(&app, key).await;
}

/// Razorpay's webhooks: the signature is HMAC-SHA256 of the body with the webhook
/// secret; a bad one is 400 and records nothing, and the same event id twice is one
/// event.
#[tokio::test]
async fn razorpay_webhooks_are_verified_and_deduplicated_by_event_id() {
    let app = spawn_app().await;
    let body = json!({"entity": "event", "account_id": "acc_x", "event": "payment.captured", "contains": ["payment"],
                      "payload": {"payment": {"entity": {"id": "pay_NotTillsOwn001", "order_id": "order_NotTillsOwn01"}}},
                      "created_at": 1_764_000_000})
    .to_string();
    let sign = |secret: &str| till_sim::razorpay::sign(secret, body.as_bytes());
    let send = |signature: String, event_id: &'static str| {
        app.client
            .post(app.url(till_payments::provider_webhooks::RAZORPAY_WEBHOOKS_PATH))
            .header("content-type", "application/json")
            .header("x-razorpay-signature", signature)
            .header("x-razorpay-event-id", event_id)
            .body(body.clone())
            .send()
    };
    let refused = send(sign("another secret"), "EvtTill0000001").await.expect("send");
    assert_eq!(refused.status().as_u16(), 400);
    let found = problem(refused).await;
    assert_eq!(found["param"], "X-Razorpay-Signature");
    let first: Value = send(sign(till_testkit::RAZORPAY_WEBHOOK_SECRET), "EvtTill0000001")
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert_eq!((&first["duplicate"], &first["outcome"]), (&json!(false), &json!("ignored")), "{first}");
    let second: Value = send(sign(till_testkit::RAZORPAY_WEBHOOK_SECRET), "EvtTill0000001")
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert_eq!(second["duplicate"], true, "{second}");
    let recorded: i64 = sqlx::query_scalar("SELECT count(*) FROM payments.gateway_events WHERE gateway = 'razorpay'")
        .fetch_one(&app.owner_pool)
        .await
        .expect("count");
    assert_eq!(recorded, 1);
}

/// Every webhook lost: nothing tells Till that the customer approved, so the recovery
/// job asks Razorpay again once the grace has passed, and the payment is recorded all
/// the same, once.
#[tokio::test]
async fn a_collect_whose_webhooks_are_all_lost_is_settled_by_the_recovery_job() {
    let mut config = till_testkit::test_config();
    config.recovery.grace = std::time::Duration::from_millis(500);
    let app = till_testkit::spawn_app_with(config, Default::default()).await;
    let business = app.create_business("IN").await;
    let key = &business.owner_key;
    let arm = json!({"provider": "razorpay", "operation": "webhook", "fault": "webhook_drop", "count": 100});
    let armed = app.client.post(format!("{}/_sim/faults", app.sim)).json(&arm).send().await.expect("fault");
    assert_eq!(armed.status().as_u16(), 201);
    let body = json!({"amount": 12_000, "currency": "INR", "payment_method": upi("success@razorpay"), "confirm": true});
    let (status, intent) = create(&app, key, "no-webhooks", body).await;
    assert_eq!(status, 202, "{intent}");
    let settled = decided(&app, key, intent["id"].as_str().expect("id"), 20).await;
    assert_eq!((settled["status"].as_str(), settled["fee"].as_i64()), (Some("succeeded"), Some(283)), "{settled}");
    let received: i64 = sqlx::query_scalar("SELECT count(*) FROM payments.gateway_events WHERE gateway = 'razorpay'")
        .fetch_one(&app.owner_pool)
        .await
        .expect("count");
    assert_eq!(received, 0, "no webhook arrived");
    assert_eq!(razorpay_calls(&app, "confirm").await.len(), 1);
    assert_eq!(ledger_account(&app, &business, "merchant_pending").await["balance"], 12_000 - 283);
    check(&app, key).await;
    payments_check(&app, key).await;
}
