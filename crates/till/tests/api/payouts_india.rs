//! Payouts in India end to end against the simulator playing RazorpayX: a beneficiary
//! registered as a contact and a fund account and validated before its first payout,
//! IMPS to an account and UPI to a VPA under their limits, one payout per
//! `X-Payout-Idempotency` key, RazorpayX's processed → reversed honoured, and its
//! webhooks verified, recorded once and used only to ask the rail sooner.

use serde_json::{json, Value};
use till_testkit::{spawn_app, TestApp, TestBusiness};

use crate::ledger_helpers::check;
use crate::payments::{create, intent_events};
use crate::payouts::settled;

/// Makes rupees available to pay out: a UPI payment of ₹500 through Razorpay, settled
/// (less its 2 % fee and GST on it, 1 180 paise). Returns what is available.
async fn fund_inr(app: &TestApp, key: &str) -> i64 {
    let body = json!({"amount": 50_000, "currency": "INR", "confirm": true,
                      "payment_method": {"type": "upi", "vpa": "success@razorpay"}});
    let (status, intent) = create(app, key, &uuid::Uuid::now_v7().to_string(), body).await;
    assert!(status == 201 || status == 202, "{intent}");
    let id = intent["id"].as_str().expect("id").to_string();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let current: Value = app.get(&format!("/v1/payment_intents/{id}"), key).await.json().await.expect("json");
        if current["status"] == "succeeded" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never captured: {current}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let settle = app.client.post(format!("{}/_sim/razorpay/settle", app.sim)).send().await.expect("settle");
    assert_eq!(settle.status().as_u16(), 200);
    while available(app, key).await < 48_820 {
        assert!(std::time::Instant::now() < deadline, "the settlement never made the rupees available");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    available(app, key).await
}

async fn available(app: &TestApp, key: &str) -> i64 {
    let balance: Value = app.get("/v1/balance", key).await.json().await.expect("json");
    balance["available"]
        .as_array()
        .and_then(|amounts| amounts.iter().find(|amount| amount["currency"] == "INR"))
        .and_then(|amount| amount["amount"].as_i64())
        .unwrap_or(0)
}

async fn post(app: &TestApp, key: &str, path: &str, body: Value) -> (u16, Value) {
    let response = app.post(path, key, &uuid::Uuid::now_v7().to_string(), &body).await;
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn rail_calls(app: &TestApp, operation: &str) -> Vec<Value> {
    app.sim_calls("razorpayx", operation).await
}

/// The balance of the business's `paid_out:razorpayx` account in rupees.
async fn paid_out(app: &TestApp, business: &TestBusiness) -> i64 {
    let business_id = uuid::Uuid::parse_str(business.id.trim_start_matches("biz_")).expect("uuid");
    let id: uuid::Uuid = sqlx::query_scalar(
        "SELECT account_id FROM payouts.ledger_accounts WHERE business_id = $1 AND role = 'paid_out:razorpayx'",
    )
    .bind(business_id)
    .fetch_one(&app.owner_pool)
    .await
    .expect("paid_out:razorpayx");
    let account: Value =
        app.get(&format!("/v1/accounts/acct_{}", id.simple()), &business.owner_key).await.json().await.expect("json");
    account["balance"].as_i64().expect("balance")
}

fn account(name: &str, number: &str) -> Value {
    json!({"type": "in_account", "name": name, "ifsc": "HDFC0001234", "account_number": number})
}

fn vpa(name: &str, address: &str) -> Value {
    json!({"type": "in_vpa", "name": name, "vpa": address})
}

fn payout_body(beneficiary: &Value, amount: i64) -> Value {
    json!({"beneficiary_id": beneficiary["id"], "amount": amount, "currency": "INR", "reference": "INV 2026 001"})
}

#[tokio::test]
async fn an_imps_payout_is_registered_validated_sent_once_and_paid() {
    let app = spawn_app().await;
    let business = app.create_business("IN").await;
    let key = &business.owner_key;
    assert_eq!(fund_inr(&app, key).await, 48_820);

    let (status, beneficiary) = post(&app, key, "/v1/beneficiaries", account("Asha Rao", "123456789012")).await;
    assert_eq!(status, 201, "{beneficiary}");
    assert_eq!(
        (&beneficiary["rail"], &beneficiary["verification"]["result"]),
        (&json!("razorpayx"), &json!("match")),
        "{beneficiary}"
    );
    for operation in ["contact", "fund_account", "validate"] {
        assert_eq!(rail_calls(&app, operation).await.len(), 1, "one {operation}");
    }
    // The same payee again: RazorpayX answers the contact and fund account it made.
    let (status, again) = post(&app, key, "/v1/beneficiaries", account("Asha Rao", "123456789012")).await;
    assert_eq!(status, 201, "{again}");
    let fund_accounts: Vec<Value> = rail_calls(&app, "fund_account").await;
    assert_eq!(fund_accounts.iter().map(|call| call["status"].as_u64()).collect::<Vec<_>>(), [Some(201), Some(200)]);

    let (status, created) = post(&app, key, "/v1/payouts", payout_body(&beneficiary, 20_000)).await;
    assert_eq!((status, created["status"].as_str()), (201, Some("processing")), "{created}");
    let id = created["id"].as_str().expect("id").to_string();
    let paid = settled(&app, key, &id, "paid").await;
    let rail_id = paid["rail_payout_id"].as_str().expect("rail id");
    assert!(rail_id.starts_with("pout_"), "{paid}");
    let at_rail = app.sim_object("razorpayx", rail_id).await;
    assert_eq!(
        (&at_rail["status"], &at_rail["mode"], &at_rail["amount"]),
        (&json!("processed"), &json!("IMPS"), &json!(20_000))
    );
    assert_eq!(at_rail["narration"], "INV 2026 001");
    let creates = rail_calls(&app, "create").await;
    assert_eq!(creates.len(), 1);
    assert_eq!(creates[0]["idempotency_key"], json!(id), "the payout's id is its X-Payout-Idempotency");
    assert_eq!(available(&app, key).await, 28_820);
    assert_eq!(paid_out(&app, &business).await, 20_000);
    let events = intent_events(&app, key, &id, 2).await;
    assert_eq!(events.last().map(|(kind, _)| kind.as_str()), Some("payout.paid"));
    assert_eq!(check(&app, key).await["ok"], true);
}

#[tokio::test]
async fn a_vpa_is_validated_and_upi_carries_at_most_one_lakh() {
    let app = spawn_app().await;
    let business = app.create_business("IN").await;
    let key = &business.owner_key;
    fund_inr(&app, key).await;

    let (status, other) = post(&app, key, "/v1/beneficiaries", vpa("Asha Rao", "othername@ybl")).await;
    assert_eq!(status, 201, "{other}");
    assert_eq!(
        other["verification"],
        json!({"result": "close_match", "code": "NAME_MISMATCH", "name": "Asha Rao Traders",
               "checked_at": other["verification"]["checked_at"]})
    );
    let (status, invalid) = post(&app, key, "/v1/beneficiaries", vpa("Asha Rao", "invalid@ybl")).await;
    assert_eq!((status, invalid["verification"]["result"].as_str()), (201, Some("no_match")), "{invalid}");
    let (status, bad) = post(&app, key, "/v1/beneficiaries", vpa("Asha Rao", "no-at-sign")).await;
    assert_eq!((status, bad["param"].as_str()), (400, Some("vpa")), "{bad}");

    let (status, good) = post(&app, key, "/v1/beneficiaries", vpa("Asha Rao", "asha@okhdfc")).await;
    assert_eq!((status, good["verification"]["result"].as_str()), (201, Some("match")), "{good}");
    // UPI carries ₹1 lakh at most: refused before anything is held or sent.
    let (status, refused) = post(&app, key, "/v1/payouts", payout_body(&good, 10_000_001)).await;
    assert_eq!((status, refused["code"].as_str()), (422, Some("payout_limit_exceeded")), "{refused}");
    // RazorpayX pays at least ₹1: 99 paise is refused here, not by the rail later.
    let (status, refused) = post(&app, key, "/v1/payouts", payout_body(&good, 99)).await;
    assert_eq!((status, refused["param"].as_str()), (422, Some("amount")), "{refused}");
    // A close match is paid only when the caller accepts it.
    let (status, refused) = post(&app, key, "/v1/payouts", payout_body(&other, 1_000)).await;
    assert_eq!((status, refused["code"].as_str()), (422, Some("cop_result_not_accepted")), "{refused}");
    assert!(rail_calls(&app, "create").await.is_empty());

    let (status, created) = post(&app, key, "/v1/payouts", payout_body(&good, 1_000)).await;
    assert_eq!(status, 201, "{created}");
    let paid = settled(&app, key, created["id"].as_str().expect("id"), "paid").await;
    let at_rail = app.sim_object("razorpayx", paid["rail_payout_id"].as_str().expect("rail id")).await;
    assert_eq!(at_rail["mode"], "UPI");
    assert_eq!(available(&app, key).await, 48_820 - 1_000);
}

#[tokio::test]
async fn a_processed_payout_reversed_later_gives_the_funds_back_once() {
    let app = spawn_app().await;
    let business = app.create_business("IN").await;
    let key = &business.owner_key;
    fund_inr(&app, key).await;
    let (_, beneficiary) = post(&app, key, "/v1/beneficiaries", account("Asha Rao", "123456789012")).await;
    app.arm_fault("razorpayx", "create", "return_after_paid", 1, None).await;
    // Every webhook about it twice: the second delivery of each changes nothing.
    app.arm_fault("razorpayx", "webhook", "webhook_duplicate", 10, None).await;
    let (status, created) = post(&app, key, "/v1/payouts", payout_body(&beneficiary, 5_000)).await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().expect("id").to_string();
    let returned = settled(&app, key, &id, "returned").await;
    assert!(returned["failure_reason"].as_str().is_some_and(|why| !why.is_empty()), "{returned}");
    // Reversed once: the money is back, and nothing stays paid out.
    tokio::time::sleep(std::time::Duration::from_millis(800)).await;
    assert_eq!(available(&app, key).await, 48_820);
    assert_eq!(paid_out(&app, &business).await, 0);
    let events = intent_events(&app, key, &id, 3).await;
    let kinds: Vec<&str> = events.iter().map(|(kind, _)| kind.as_str()).collect();
    assert_eq!(kinds.iter().filter(|kind| **kind == "payout.returned").count(), 1, "{kinds:?}");
    let (rows, distinct): (i64, i64) =
        sqlx::query_as("SELECT count(*), count(DISTINCT event_id) FROM payouts.rail_events WHERE rail = 'razorpayx'")
            .fetch_one(&app.owner_pool)
            .await
            .expect("events");
    assert!(rows >= 3 && rows == distinct, "initiated, processed and reversed, each once: {rows} rows");
    assert_eq!(check(&app, key).await["ok"], true);
}

/// A webhook signed with another secret is refused and recorded nowhere; a stale one
/// (`payout.initiated` about a paid payout) only makes the saga ask, and the rail's
/// answer changes nothing.
#[tokio::test]
async fn razorpayx_webhooks_are_verified_and_a_stale_one_changes_nothing() {
    let app = spawn_app().await;
    let business = app.create_business("IN").await;
    let key = &business.owner_key;
    fund_inr(&app, key).await;
    let (_, beneficiary) = post(&app, key, "/v1/beneficiaries", account("Asha Rao", "123456789012")).await;
    let (_, created) = post(&app, key, "/v1/payouts", payout_body(&beneficiary, 2_000)).await;
    let id = created["id"].as_str().expect("id").to_string();
    let paid = settled(&app, key, &id, "paid").await;
    let rail_id = paid["rail_payout_id"].as_str().expect("rail id");

    let event = json!({"entity": "event", "account_id": "acc_SimulatorTill1", "event": "payout.initiated",
        "contains": ["payout"], "payload": {"payout": {"entity": {"id": rail_id, "status": "processing"}}},
        "created_at": 1});
    let body = serde_json::to_vec(&event).expect("body");
    let send = |secret: &str, event_id: &str| {
        let signature = till_sim::razorpay::sign(secret, &body);
        app.client
            .post(format!("{}/v1/providers/razorpayx/webhooks", app.address))
            .header("content-type", "application/json")
            .header("x-razorpay-signature", signature)
            .header("x-razorpay-event-id", event_id)
            .body(body.clone())
            .send()
    };
    let forged = send("not the secret", "evt_stale_1").await.expect("send");
    assert_eq!(forged.status().as_u16(), 400);
    let stale = send(till_testkit::RAZORPAYX_WEBHOOK_SECRET, "evt_stale_1").await.expect("send");
    assert_eq!(stale.status().as_u16(), 200);
    let receipt: Value = stale.json().await.expect("json");
    assert_eq!((receipt["duplicate"].as_bool(), receipt["outcome"].as_str()), (Some(false), Some("expedited")));
    let again: Value =
        send(till_testkit::RAZORPAYX_WEBHOOK_SECRET, "evt_stale_1").await.expect("send").json().await.expect("json");
    assert_eq!(again["duplicate"], true);
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let after: Value = app.get(&format!("/v1/payouts/{id}"), key).await.json().await.expect("json");
    assert_eq!(
        (after["status"].as_str(), after["version"].as_i64()),
        (Some("paid"), paid["version"].as_i64()),
        "{after}"
    );
    assert_eq!(available(&app, key).await, 48_820 - 2_000);
    assert_eq!(check(&app, key).await["ok"], true);
}
