//! Settlement and reconciliation end to end: the simulator pays out what it captured
//! (less fees and refunds), Till reads the payout's report, matches every line and
//! moves what matches from pending to available; what does not match is an exception.

use serde_json::{json, Value};
use till_testkit::{spawn_app, TestApp};

use crate::ledger_helpers::check;
use crate::payments::{captured, fault, ledger_account, refund};

/// Asks the simulator's Stripe to pay out everything now; returns how many payouts.
async fn settle(app: &TestApp) -> i64 {
    let response = app.client.post(format!("{}/_sim/stripe/settle", app.sim)).send().await.expect("settle");
    assert_eq!(response.status().as_u16(), 200);
    let body: Value = response.json().await.expect("json");
    body["settlements"].as_i64().expect("count")
}

/// The business's list at `path` once it has `count` items.
async fn listed(app: &TestApp, key: &str, path: &str, count: usize) -> Vec<Value> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let page: Value = app.get(path, key).await.json().await.expect("json");
        let items = page["data"].as_array().cloned().unwrap_or_default();
        if items.len() >= count {
            return items;
        }
        assert!(std::time::Instant::now() < deadline, "{path} never had {count} items: {page}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

async fn balance(app: &TestApp, key: &str) -> Value {
    let response = app.get("/v1/balance", key).await;
    assert_eq!(response.status().as_u16(), 200);
    response.json().await.expect("json")
}

#[tokio::test]
async fn a_payout_moves_captures_less_fees_and_refunds_from_pending_to_available() {
    let app = spawn_app().await;
    let business = app.create_business("GB").await;
    let key = &business.owner_key;
    let first = captured(&app, key, "pay-1", 1000).await;
    let second = captured(&app, key, "pay-2", 2000).await;
    let (status, refunded) = refund(&app, key, "refund-1", json!({"payment_intent_id": first, "amount": 300})).await;
    assert_eq!((status, refunded["status"].as_str()), (201, Some("succeeded")), "{refunded}");
    // Before the payout: 3 000 captured, 35 + 50 in fees, 300 refunded, all pending.
    assert_eq!(
        balance(&app, key).await,
        json!({"available": [{"amount": 0, "currency": "GBP"}],
                                                   "pending": [{"amount": 2615, "currency": "GBP"}]})
    );

    assert_eq!(settle(&app).await, 1);
    let settlements = listed(&app, key, "/v1/settlements", 1).await;
    let settlement = &settlements[0];
    assert_eq!(
        (&settlement["charges"], &settlement["fees"], &settlement["refunds"], &settlement["net"]),
        (&json!(3000), &json!(85), &json!(300), &json!(2615)),
        "{settlement}"
    );
    assert_eq!((&settlement["matched_lines"], &settlement["exceptions"]), (&json!(3), &json!(0)));
    assert!(settlement["id"].as_str().expect("id").starts_with("stl_"));
    assert!(settlement["gateway_payout_id"].as_str().expect("payout").starts_with("po_"));

    // Settled: available, nothing pending; the gateway owes nothing more and has paid it.
    assert_eq!(
        balance(&app, key).await,
        json!({"available": [{"amount": 2615, "currency": "GBP"}],
                                                   "pending": [{"amount": 0, "currency": "GBP"}]})
    );
    assert_eq!(ledger_account(&app, &business, "receivable:stripe").await["balance"], 0);
    assert_eq!(ledger_account(&app, &business, "settled:stripe").await["balance"], 2615);
    let exceptions: Value = app.get("/v1/reconciliation/exceptions", key).await.json().await.expect("json");
    assert_eq!(exceptions["data"], json!([]), "{exceptions}");

    // Nothing new to pay out, and the reconciler's next passes change nothing.
    assert_eq!(settle(&app).await, 0);
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    assert_eq!(listed(&app, key, "/v1/settlements", 1).await.len(), 1);
    assert_eq!(balance(&app, key).await["available"], json!([{"amount": 2615, "currency": "GBP"}]));
    let settled: Vec<Option<bool>> =
        sqlx::query_scalar("SELECT settled_at IS NOT NULL FROM payments.intents WHERE id = ANY ($1) ORDER BY id")
            .bind(
                [&first, &second]
                    .iter()
                    .map(|id| uuid::Uuid::parse_str(id.trim_start_matches("pi_")).expect("uuid"))
                    .collect::<Vec<_>>(),
            )
            .fetch_all(&app.owner_pool)
            .await
            .expect("settled");
    assert_eq!(settled, vec![Some(true), Some(true)]);
    check(&app, key).await;
    crate::payments::payments_check(&app, key).await;

    // The lists: both intents newest first, the refund under its intent.
    let intents = listed(&app, key, "/v1/payment_intents?status=succeeded", 2).await;
    assert_eq!(
        intents.iter().map(|intent| intent["id"].clone()).collect::<Vec<_>>(),
        vec![json!(second), json!(first)]
    );
    let refunds = listed(&app, key, &format!("/v1/refunds?payment_intent_id={first}"), 1).await;
    assert_eq!(refunds[0]["amount"], 300);
    let none: Value =
        app.get(&format!("/v1/refunds?payment_intent_id={second}"), key).await.json().await.expect("json");
    assert_eq!(none["data"], json!([]));
}

#[tokio::test]
async fn a_line_that_does_not_match_is_an_exception_and_nothing_is_adjusted() {
    let app = spawn_app().await;
    let business = app.create_business("GB").await;
    let key = &business.owner_key;
    let intent = captured(&app, key, "pay-1", 1000).await;
    // The report says the charge was 1 001, not the 1 000 captured.
    fault(&app, "settlement_report", "wrong_amount", None).await;
    assert_eq!(settle(&app).await, 1);

    let exceptions = listed(&app, key, "/v1/reconciliation/exceptions", 1).await;
    assert_eq!(exceptions.len(), 1, "{exceptions:?}");
    let exception = &exceptions[0];
    assert_eq!(
        (&exception["kind"], &exception["expected"], &exception["actual"], &exception["payment_intent_id"]),
        (&json!("amount_mismatch"), &json!(1000), &json!(1001), &json!(intent)),
        "{exception}"
    );
    assert!(exception["id"].as_str().expect("id").starts_with("rcx_"));
    let settlements = listed(&app, key, "/v1/settlements", 1).await;
    assert_eq!((&settlements[0]["matched_lines"], &settlements[0]["exceptions"]), (&json!(0), &json!(1)));
    // Nothing moved: the capture is still pending, less its fee.
    assert_eq!(
        balance(&app, key).await,
        json!({"available": [{"amount": 0, "currency": "GBP"}],
                                                   "pending": [{"amount": 965, "currency": "GBP"}]})
    );
    // The exception is an event, as every state change is.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let page: Value =
            app.get("/v1/events?type=reconciliation_exception.created", key).await.json().await.expect("json");
        if page["data"].as_array().is_some_and(|events| events.len() == 1) {
            assert_eq!(page["data"][0]["data"]["kind"], "amount_mismatch");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no exception event: {page}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // The report's lines do not add up to its payout either: the platform's exception, no
    // business's (this business sees only its own line).
    let report: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM payments.reconciliation_exceptions WHERE kind = 'report_total_mismatch' AND business_id IS NULL",
    )
    .fetch_one(&app.owner_pool)
    .await
    .expect("count");
    assert_eq!(report, 1);
    // Read again (the next passes, a restart), nothing is recorded twice.
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    let page: Value = app.get("/v1/reconciliation/exceptions", key).await.json().await.expect("json");
    assert_eq!(page["data"].as_array().map(Vec::len), Some(1));
}

/// The gateway pays out a capture whose reply Till never got (the capture is still
/// `processing` in Till, its charge unknown): the reconciler cannot place the line, so it
/// leaves the whole payout for a later pass instead of calling it unknown; once the
/// capture's retry records the charge, the payout is matched in full.
#[tokio::test]
async fn a_payout_of_a_capture_till_has_not_recorded_yet_waits_for_it() {
    let app = spawn_app().await;
    let business = app.create_business("GB").await;
    let key = &business.owner_key;
    // No webhook may finish the capture first, so that the payout comes before it.
    let arm = json!({"provider": "stripe", "operation": "webhook", "fault": "webhook_drop", "count": 100});
    let armed = app.client.post(format!("{}/_sim/faults", app.sim)).json(&arm).send().await.expect("fault");
    assert_eq!(armed.status().as_u16(), 201);
    let body = json!({"amount": 1000, "currency": "GBP", "capture_method": "manual", "payment_method": "pm_card_visa",
                      "confirm": true});
    let (status, intent) = crate::payments::create(&app, key, "held", body).await;
    assert_eq!((status, intent["status"].as_str()), (201, Some("requires_capture")), "{intent}");
    let id = intent["id"].as_str().expect("id");
    // Every attempt of the kit's times out (it retries a keyed call by itself).
    let arm = json!({"provider": "stripe", "operation": "capture", "fault": "timeout_after_effect", "count": 3,
                     "delay_ms": 2_500});
    let armed = app.client.post(format!("{}/_sim/faults", app.sim)).json(&arm).send().await.expect("fault");
    assert_eq!(armed.status().as_u16(), 201);
    let (status, pending) = crate::payments::step(&app, key, id, "capture", "capture", json!({})).await;
    assert_eq!((status, pending["status"].as_str()), (202, Some("processing")), "{pending}");

    assert_eq!(settle(&app).await, 1);
    tokio::time::sleep(std::time::Duration::from_millis(1_000)).await;
    let none: Value = app.get("/v1/settlements", key).await.json().await.expect("json");
    assert_eq!(none["data"], json!([]), "nothing is settled while a line has no owner");
    let unknown: i64 = sqlx::query_scalar("SELECT count(*) FROM payments.reconciliation_exceptions")
        .fetch_one(&app.owner_pool)
        .await
        .expect("count");
    assert_eq!(unknown, 0, "and nothing is called unknown yet");

    let (status, captured) = crate::payments::step(&app, key, id, "capture", "capture", json!({})).await;
    assert_eq!((status, captured["status"].as_str()), (200, Some("succeeded")), "{captured}");
    let settlements = listed(&app, key, "/v1/settlements", 1).await;
    assert_eq!(
        (&settlements[0]["matched_lines"], &settlements[0]["exceptions"], &settlements[0]["net"]),
        (&json!(1), &json!(0), &json!(965)),
        "{settlements:?}"
    );
    assert_eq!(balance(&app, key).await["available"], json!([{"amount": 965, "currency": "GBP"}]));
    check(&app, key).await;
    crate::payments::payments_check(&app, key).await;
}

/// A charge Till never made (made at the gateway by someone else): once the grace has
/// passed, it is the platform's `unknown_line` exception, and the payout is reconciled.
#[tokio::test]
async fn a_line_nobody_owns_becomes_an_exception_once_the_grace_has_passed() {
    let mut config = till_testkit::test_config();
    config.payments.unowned_line_grace = std::time::Duration::from_secs(1);
    let app = till_testkit::spawn_app_with(config, Default::default()).await;
    let made = app
        .client
        .post(format!("{}/stripe/v1/payment_intents", app.sim))
        .basic_auth("sk_test_someone_else", None::<&str>)
        .form(&[("amount", "700"), ("currency", "gbp"), ("payment_method", "pm_card_visa"), ("confirm", "true")])
        .send()
        .await
        .expect("intent");
    assert_eq!(made.status().as_u16(), 200);
    assert_eq!(settle(&app).await, 1);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let kinds: Vec<String> = sqlx::query_scalar(
            "SELECT e.kind FROM payments.reconciliation_exceptions e
               JOIN payments.gateway_payouts p USING (gateway, gateway_payout_id) WHERE p.status = 'reconciled'",
        )
        .fetch_all(&app.owner_pool)
        .await
        .expect("exceptions");
        if !kinds.is_empty() {
            assert_eq!(kinds, vec![String::from("unknown_line")]);
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the line never became an exception");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}
