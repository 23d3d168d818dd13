//! Payouts end to end against the simulator's Faster Payments rail: beneficiaries checked
//! by modulus and Confirmation of Payee, payouts held in the ledger, sent with one
//! idempotency key, and ended exactly once (paid, failed with the funds back, returned).

use serde_json::{json, Value};
use till_testkit::{spawn_app, TestApp, TestBusiness};

use crate::ledger_helpers::check;
use crate::payments::captured;

/// A UK account that passes modulus checking (Vocalink's first test case).
const SORT_CODE: &str = "089999";
const ACCOUNT: &str = "66374958";

/// Makes `net` available to pay out: a Stripe payment of whatever leaves `net` after its
/// fee (1.5 % + 20p), settled by the simulator and reconciled by Till.
pub(crate) async fn fund(app: &TestApp, key: &str, net: i64) {
    let gross = (1..=net * 2)
        .map(|extra| net + extra)
        .find(|gross| gross - ((gross * 150 + 5_000) / 10_000 + 20) == net)
        .expect("a gross that leaves the net");
    captured(app, key, &format!("fund-{net}-{}", uuid::Uuid::now_v7()), gross).await;
    let response = app.client.post(format!("{}/_sim/stripe/settle", app.sim)).send().await.expect("settle");
    assert_eq!(response.status().as_u16(), 200);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while available(app, key).await < net {
        assert!(std::time::Instant::now() < deadline, "the settlement never made {net} available");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

async fn available(app: &TestApp, key: &str) -> i64 {
    let balance: Value = app.get("/v1/balance", key).await.json().await.expect("json");
    balance["available"]
        .as_array()
        .and_then(|amounts| amounts.iter().find(|amount| amount["currency"] == "GBP"))
        .and_then(|amount| amount["amount"].as_i64())
        .unwrap_or(0)
}

async fn beneficiary(app: &TestApp, key: &str, body: Value) -> (u16, Value) {
    let response = app.post("/v1/beneficiaries", key, &uuid::Uuid::now_v7().to_string(), &body).await;
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn uk_beneficiary(app: &TestApp, key: &str, sort_code: &str, account: &str) -> Value {
    let body =
        json!({"type": "uk_account", "name": "Acme Supplies", "sort_code": sort_code, "account_number": account});
    let (status, created) = beneficiary(app, key, body).await;
    assert_eq!(status, 201, "{created}");
    created
}

async fn payout(app: &TestApp, key: &str, idempotency: &str, body: Value) -> (u16, Value) {
    let response = app.post("/v1/payouts", key, idempotency, &body).await;
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn payout_body(beneficiary: &Value, amount: i64) -> Value {
    json!({"beneficiary_id": beneficiary["id"], "amount": amount, "currency": "GBP", "reference": "INV-2026-001"})
}

/// The payout once its status is `status` (within 20 s).
pub(crate) async fn settled(app: &TestApp, key: &str, id: &str, status: &str) -> Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let payout: Value = app.get(&format!("/v1/payouts/{id}"), key).await.json().await.expect("json");
        if payout["status"] == status {
            return payout;
        }
        assert!(std::time::Instant::now() < deadline, "payout {id} never became {status}: {payout}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

async fn rail_calls(app: &TestApp, operation: &str) -> Vec<Value> {
    app.sim_calls("fps", operation).await
}

async fn arm(app: &TestApp, operation: &str, fault: &str, count: u32, delay_ms: Option<u64>) {
    app.arm_fault("fps", operation, fault, count, delay_ms).await;
}

/// The business's `paid_out:fps` ledger account.
async fn paid_out(app: &TestApp, business: &TestBusiness) -> Value {
    let business_id = uuid::Uuid::parse_str(business.id.trim_start_matches("biz_")).expect("uuid");
    let id: uuid::Uuid = sqlx::query_scalar(
        "SELECT account_id FROM payouts.ledger_accounts WHERE business_id = $1 AND role = 'paid_out:fps'",
    )
    .bind(business_id)
    .fetch_one(&app.owner_pool)
    .await
    .expect("paid_out:fps");
    app.get(&format!("/v1/accounts/acct_{}", id.simple()), &business.owner_key).await.json().await.expect("json")
}

/// The payout invariants against the ledger (`GET /v1/payouts/check`) hold.
async fn payouts_check(app: &TestApp, key: &str) {
    let report: Value = app.get("/v1/payouts/check", key).await.json().await.expect("json");
    assert_eq!(report["ok"], true, "{report}");
    assert!(report["payouts_checked"].as_i64().unwrap_or(0) >= 1, "{report}");
}

/// The payout's events once `count` have arrived, as (type, sequence), oldest first.
async fn payout_events(app: &TestApp, key: &str, id: &str, count: usize) -> Vec<(String, i64)> {
    crate::payments::intent_events(app, key, id, count).await
}

#[tokio::test]
async fn a_uk_payout_is_confirmed_held_sent_once_and_paid() {
    let app = spawn_app().await;
    let business = app.create_business("GB").await;
    let key = &business.owner_key;
    fund(&app, key, 10_000).await;

    let beneficiary = uk_beneficiary(&app, key, SORT_CODE, ACCOUNT).await;
    assert!(beneficiary["id"].as_str().expect("id").starts_with("ben_"));
    assert_eq!(beneficiary["verification"]["result"], "match", "{beneficiary}");
    assert_eq!(beneficiary["account_number_last4"], "4958");
    assert!(!beneficiary.to_string().contains(ACCOUNT), "the account number is never shown whole: {beneficiary}");
    assert_eq!(rail_calls(&app, "cop").await.len(), 1);

    let (status, created) = payout(&app, key, "po-1", payout_body(&beneficiary, 2_500)).await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().expect("id").to_string();
    assert!(id.starts_with("po_"));
    assert_eq!(
        (created["status"].as_str(), created["status_detail"].as_str()),
        (Some("processing"), Some("queued_for_rail"))
    );
    // Held at once: no longer available, not yet gone.
    assert_eq!(available(&app, key).await, 7_500);

    let paid = settled(&app, key, &id, "paid").await;
    assert!(paid["rail_payout_id"].as_str().expect("rail id").starts_with('P'), "{paid}");
    assert!(paid["paid_at"].is_string());
    assert_eq!(available(&app, key).await, 7_500);
    assert_eq!(paid_out(&app, &business).await["balance"], 2_500);
    // One payment at the rail, its nonce the payout's id; the retry of the same
    // Idempotency-Key replays the payout and sends nothing.
    let creates = rail_calls(&app, "create").await;
    assert_eq!(creates.len(), 1, "{creates:?}");
    assert_eq!(creates[0]["idempotency_key"], id.as_str());
    let (status, again) = payout(&app, key, "po-1", payout_body(&beneficiary, 2_500)).await;
    assert_eq!((status, again["id"].as_str()), (201, Some(id.as_str())));
    let rail = app.sim_object("fps", paid["rail_payout_id"].as_str().expect("id")).await;
    // The adapter read the rail's amount back and checked it against the payout's.
    assert_eq!(rail["status"], "PROCESSED");
    assert_eq!(rail["details"]["reference"], "INV-2026-001");

    assert_eq!(
        payout_events(&app, key, &id, 2).await,
        vec![("payout.created".to_string(), 1), ("payout.paid".to_string(), 2)]
    );
    let listed: Value = app.get("/v1/payouts?status=paid", key).await.json().await.expect("json");
    assert_eq!(listed["data"][0]["id"], id.as_str());
    let report = check(&app, key).await;
    assert_eq!(report["ok"], true, "{report}");
    payouts_check(&app, key).await;
}

#[tokio::test]
async fn bad_beneficiaries_are_400_naming_the_field_and_nothing_is_stored() {
    let app = spawn_app().await;
    let business = app.create_business("GB").await;
    let key = &business.owner_key;
    let uk = |sort_code: &str, account: &str, name: &str| json!({"type": "uk_account", "name": name, "sort_code": sort_code, "account_number": account});
    let long = "x".repeat(200);
    let cases = [
        (uk("0899991", ACCOUNT, "Acme"), "sort_code"),
        (uk("08999", ACCOUNT, "Acme"), "sort_code"),
        (uk(SORT_CODE, "6637495a", "Acme"), "account_number"),
        (uk(SORT_CODE, "66374959", "Acme"), "account_number"),
        (uk(SORT_CODE, ACCOUNT, ""), "name"),
        (uk(SORT_CODE, ACCOUNT, &long), "name"),
        (uk(SORT_CODE, ACCOUNT, "Acme\u{0}Ltd"), "name"),
        (
            json!({"type": "in_account", "name": "Sharma", "ifsc": "HDFC1000001", "account_number": "50100012345678"}),
            "ifsc",
        ),
        (json!({"type": "in_vpa", "name": "Ravi", "vpa": "ravi@ok@x"}), "vpa"),
        (json!({"type": "iban", "name": "X"}), "type"),
    ];
    for (body, field) in cases {
        let (status, problem) = beneficiary(&app, key, body.clone()).await;
        assert_eq!((status, problem["param"].as_str()), (400, Some(field)), "{body} → {problem}");
    }
    let listed: Value = app.get("/v1/beneficiaries", key).await.json().await.expect("json");
    assert_eq!(listed["data"], json!([]));
    assert!(rail_calls(&app, "cop").await.is_empty(), "nothing reached the rail");
}

#[tokio::test]
async fn a_close_or_no_match_is_paid_only_when_the_caller_accepts_it() {
    let app = spawn_app().await;
    let business = app.create_business("GB").await;
    let key = &business.owner_key;
    fund(&app, key, 1_000).await;
    // The simulator's CoP trigger accounts: 00934892 is a close match (MBAM), 00934891 no
    // match (ANNM). Sort code 123456 is in no modulus range, so it passes.
    let close = uk_beneficiary(&app, key, "123456", "00934892").await;
    assert_eq!(
        (close["verification"]["result"].as_str(), close["verification"]["code"].as_str()),
        (Some("close_match"), Some("MBAM"))
    );
    assert_eq!(close["verification"]["name"], "Acme Supplies Limited");
    let none = uk_beneficiary(&app, key, "123456", "00934891").await;
    assert_eq!(none["verification"]["result"], "no_match");

    for target in [&close, &none] {
        let (status, refused) = payout(&app, key, &uuid::Uuid::now_v7().to_string(), payout_body(target, 100)).await;
        assert_eq!(
            (status, refused["code"].as_str(), refused["param"].as_str()),
            (422, Some("cop_result_not_accepted"), Some("accept_cop_result")),
            "{refused}"
        );
    }
    assert_eq!(available(&app, key).await, 1_000, "a refused payout holds nothing");
    let mut body = payout_body(&close, 100);
    body["accept_cop_result"] = json!(true);
    let (status, accepted) = payout(&app, key, "po-close", body).await;
    assert_eq!((status, accepted["accepted_cop_result"].as_str()), (201, Some("close_match")), "{accepted}");
    settled(&app, key, accepted["id"].as_str().expect("id"), "paid").await;
}

#[tokio::test]
async fn twenty_payouts_of_ten_at_once_against_a_hundred_accept_exactly_ten() {
    let app = spawn_app().await;
    let business = app.create_business("GB").await;
    let key = business.owner_key.clone();
    fund(&app, &key, 100).await;
    assert_eq!(available(&app, &key).await, 100);
    let target = uk_beneficiary(&app, &key, SORT_CODE, ACCOUNT).await;
    let app = std::sync::Arc::new(app);
    let tasks: Vec<_> = (0..20)
        .map(|n| {
            let (app, key, body) = (app.clone(), key.clone(), payout_body(&target, 10));
            tokio::spawn(async move { payout(&app, &key, &format!("race-{n}"), body).await })
        })
        .collect();
    let mut accepted = Vec::new();
    let mut refused = 0;
    for task in tasks {
        let (status, body) = task.await.expect("task");
        match status {
            201 => accepted.push(body["id"].as_str().expect("id").to_string()),
            422 => {
                assert_eq!(body["code"], "insufficient_funds", "{body}");
                refused += 1;
            }
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert_eq!((accepted.len(), refused), (10, 10));
    assert_eq!(available(&app, &key).await, 0);
    for id in &accepted {
        settled(&app, &key, id, "paid").await;
    }
    assert_eq!(available(&app, &key).await, 0);
    assert_eq!(paid_out(&app, &business).await["balance"], 100);
    let stored: i64 =
        sqlx::query_scalar("SELECT count(*) FROM payouts.payouts").fetch_one(&app.owner_pool).await.expect("count");
    assert_eq!(stored, 10, "a refused payout leaves no row");
    assert_eq!(check(&app, &key).await["ok"], true);
    payouts_check(&app, &key).await;
}

#[tokio::test]
async fn a_create_whose_reply_is_lost_makes_one_payment_under_one_key() {
    let app = spawn_app().await;
    let business = app.create_business("GB").await;
    let key = &business.owner_key;
    fund(&app, key, 1_000).await;
    let target = uk_beneficiary(&app, key, SORT_CODE, ACCOUNT).await;
    // The rail makes the payment, then never answers (longer than an attempt's 2 s).
    arm(&app, "create", "timeout_after_effect", 1, Some(3_000)).await;
    let (status, created) = payout(&app, key, "lost-reply", payout_body(&target, 400)).await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().expect("id");
    settled(&app, key, id, "paid").await;
    let creates = rail_calls(&app, "create").await;
    assert!(creates.len() >= 2, "the create was sent again: {creates:?}");
    assert!(creates.iter().all(|call| call["idempotency_key"] == id), "{creates:?}");
    assert_eq!(paid_out(&app, &business).await["balance"], 400, "one posting");
    assert_eq!(available(&app, key).await, 600);
    assert_eq!(check(&app, key).await["ok"], true);
    payouts_check(&app, key).await;
}

#[tokio::test]
async fn a_payout_the_rail_fails_gives_the_funds_back_once() {
    let app = spawn_app().await;
    let business = app.create_business("GB").await;
    let key = &business.owner_key;
    fund(&app, key, 1_000).await;
    // 00934897: CoP says the account does not exist (AC01), and a payment to it fails.
    let missing = uk_beneficiary(&app, key, "123456", "00934897").await;
    assert_eq!(
        (missing["verification"]["result"].as_str(), missing["verification"]["code"].as_str()),
        (Some("no_match"), Some("AC01"))
    );
    let mut body = payout_body(&missing, 300);
    body["accept_cop_result"] = json!(true);
    let (status, created) = payout(&app, key, "to-fail", body).await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(available(&app, key).await, 700);
    let failed = settled(&app, key, created["id"].as_str().expect("id"), "failed").await;
    assert!(failed["failure_reason"].as_str().expect("reason").contains("ER_EXTFAIL"), "{failed}");
    assert_eq!(available(&app, key).await, 1_000);
    // Nor does it count toward the day's limit any more.
    let counted: i64 = sqlx::query_scalar("SELECT coalesce(sum(amount), 0)::bigint FROM payouts.velocity")
        .fetch_one(&app.owner_pool)
        .await
        .expect("velocity");
    assert_eq!(counted, 0);
    assert_eq!(paid_out(&app, &business).await["balance"], 0);
    assert_eq!(
        payout_events(&app, key, created["id"].as_str().expect("id"), 2).await,
        vec![("payout.created".to_string(), 1), ("payout.failed".to_string(), 2)]
    );
    assert_eq!(check(&app, key).await["ok"], true);
    payouts_check(&app, key).await;
}

#[tokio::test]
async fn a_paid_payout_returned_by_the_bank_is_reversed_once() {
    let app = spawn_app().await;
    let business = app.create_business("GB").await;
    let key = &business.owner_key;
    fund(&app, key, 1_000).await;
    let target = uk_beneficiary(&app, key, SORT_CODE, ACCOUNT).await;
    arm(&app, "create", "return_after_paid", 1, None).await;
    let (status, created) = payout(&app, key, "to-return", payout_body(&target, 250)).await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().expect("id");
    let returned = settled(&app, key, id, "returned").await;
    assert_eq!(returned["failure_reason"], "BENEFICIARY_ACCOUNT_CLOSED");
    assert_eq!(available(&app, key).await, 1_000);
    assert_eq!(paid_out(&app, &business).await["balance"], 0);
    // Watched on: the rail keeps answering RETURNED, and nothing is reversed twice.
    tokio::time::sleep(std::time::Duration::from_millis(800)).await;
    assert_eq!(available(&app, key).await, 1_000);
    let events = payout_events(&app, key, id, 2).await;
    assert_eq!(events.first(), Some(&("payout.created".to_string(), 1)));
    assert_eq!(events.last().map(|(kind, _)| kind.as_str()), Some("payout.returned"));
    assert_eq!(check(&app, key).await["ok"], true);
    payouts_check(&app, key).await;
}

#[tokio::test]
async fn a_failing_rail_opens_the_breaker_keeps_payouts_queued_and_loses_none() {
    let app = spawn_app().await;
    let business = app.create_business("GB").await;
    let key = &business.owner_key;
    fund(&app, key, 1_000).await;
    let target = uk_beneficiary(&app, key, SORT_CODE, ACCOUNT).await;
    // Every create fails (500s: the rail may or may not have acted) until the faults go.
    arm(&app, "create", "error_500", 1_000, None).await;
    let mut ids = Vec::new();
    for n in 0..3 {
        let (status, created) = payout(&app, key, &format!("queued-{n}"), payout_body(&target, 100)).await;
        assert_eq!(status, 201, "{created}");
        ids.push(created["id"].as_str().expect("id").to_string());
    }
    // The testkit's breaker opens after 6 calls at 50 % failures and stays open 2 s; the
    // saga retries each payout within 800 ms, so a whole second without a call to the
    // rail is the breaker refusing them without calling it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    let mut seen = rail_calls(&app, "create").await.len();
    loop {
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        let now = rail_calls(&app, "create").await.len();
        if now >= 6 && now == seen {
            break;
        }
        seen = now;
        assert!(std::time::Instant::now() < deadline, "the breaker never opened ({now} calls)");
    }
    for id in &ids {
        let waiting: Value = app.get(&format!("/v1/payouts/{id}"), key).await.json().await.expect("json");
        assert_eq!(waiting["status"], "processing", "queued, not failed: {waiting}");
    }
    assert_eq!(available(&app, key).await, 700, "held while the rail is down");

    // The rail is back: the half-open trials close the breaker and every payout is paid once.
    let cleared = app.client.delete(format!("{}/_sim/faults", app.sim)).send().await.expect("clear");
    assert_eq!(cleared.status().as_u16(), 204);
    for id in &ids {
        settled(&app, key, id, "paid").await;
    }
    let calls = rail_calls(&app, "create").await;
    let accepted = calls.iter().filter(|call| call["fault"].is_null()).count();
    assert_eq!(accepted, 3, "one accepted create per payout: {calls:?}");
    assert_eq!(available(&app, key).await, 700);
    assert_eq!(paid_out(&app, &business).await["balance"], 300);
    assert_eq!(check(&app, key).await["ok"], true);
    payouts_check(&app, key).await;
}

/// A second key of the business, with `role`.
async fn key_with_role(app: &TestApp, owner: &str, role: &str) -> String {
    let body = json!({"name": format!("{role} key"), "role": role});
    let response = app.post("/v1/api_keys", owner, &uuid::Uuid::now_v7().to_string(), &body).await;
    assert_eq!(response.status().as_u16(), 201);
    let created: Value = response.json().await.expect("json");
    created["secret"].as_str().expect("secret").to_string()
}

async fn put_policy(app: &TestApp, key: &str, body: Value) -> Value {
    let response = app.request(reqwest::Method::PUT, "/v1/payout_policy", key).json(&body).send().await.expect("put");
    assert_eq!(response.status().as_u16(), 200);
    response.json().await.expect("json")
}

async fn post_action(app: &TestApp, key: &str, path: &str) -> (u16, Value) {
    let response = app.post(path, key, &uuid::Uuid::now_v7().to_string(), &json!({})).await;
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn a_payout_above_the_threshold_waits_for_a_second_persons_approval() {
    let app = spawn_app().await;
    let business = app.create_business("GB").await;
    let owner = &business.owner_key;
    fund(&app, owner, 2_000).await;
    let policy = put_policy(
        &app,
        owner,
        json!({"limits": {"GBP": {"per_payout_max": 1_500, "daily_max": 1_800, "monthly_max": 10_000, "approval_threshold": 500}}}),
    )
    .await;
    assert_eq!(policy["limits"]["GBP"]["approval_threshold"], 500);
    assert_eq!(policy["limits"]["INR"]["per_payout_max"], 50_000_000, "a currency left out keeps its defaults");
    let target = uk_beneficiary(&app, owner, SORT_CODE, ACCOUNT).await;

    // Over the per-payout limit: refused, nothing held.
    let (status, refused) = payout(&app, owner, "too-big", payout_body(&target, 1_600)).await;
    assert_eq!((status, refused["code"].as_str()), (422, Some("payout_limit_exceeded")), "{refused}");
    assert!(refused["detail"].as_str().expect("detail").contains("per_payout_max"));

    let (status, held) = payout(&app, owner, "big", payout_body(&target, 600)).await;
    assert_eq!((status, held["status"].as_str()), (201, Some("requires_approval")), "{held}");
    let id = held["id"].as_str().expect("id").to_string();
    assert_eq!(available(&app, owner).await, 1_400, "held while it waits");
    // Nothing goes to the rail while it waits.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(rail_calls(&app, "create").await.is_empty());

    // The creator cannot approve it, nor can a finance key; a second admin can, once.
    let (status, forbidden) = post_action(&app, owner, &format!("/v1/payouts/{id}/approve")).await;
    assert_eq!((status, forbidden["code"].as_str()), (403, Some("forbidden")), "{forbidden}");
    let finance = key_with_role(&app, owner, "finance").await;
    let (status, _) = post_action(&app, &finance, &format!("/v1/payouts/{id}/approve")).await;
    assert_eq!(status, 403, "approval is an admin's");
    let admin = key_with_role(&app, owner, "admin").await;
    let (status, approved) = post_action(&app, &admin, &format!("/v1/payouts/{id}/approve")).await;
    assert_eq!((status, approved["status"].as_str()), (200, Some("processing")), "{approved}");
    let (status, again) = post_action(&app, &admin, &format!("/v1/payouts/{id}/approve")).await;
    assert_eq!(status, 409, "{again}");
    settled(&app, owner, &id, "paid").await;
    assert_eq!(
        payout_events(&app, owner, &id, 3).await,
        vec![("payout.created".to_string(), 1), ("payout.approved".to_string(), 2), ("payout.paid".to_string(), 3)]
    );
    // The policy's decision and the approver are in the audit log.
    let actions: Vec<(String, String)> = sqlx::query_as(
        "SELECT action, actor FROM access.audit_log WHERE action IN ('payout.policy', 'payout.approved') ORDER BY id",
    )
    .fetch_all(&app.owner_pool)
    .await
    .expect("audit");
    assert_eq!(
        actions.iter().map(|(action, _)| action.as_str()).collect::<Vec<_>>(),
        ["payout.policy", "payout.approved"]
    );
    assert_ne!(actions[0].1, actions[1].1, "made by one principal, approved by another");

    // Velocity: 600 paid today of 1 800; 1 300 more is past the day's limit.
    let (status, refused) = payout(&app, owner, "past-daily", payout_body(&target, 1_300)).await;
    assert_eq!((status, refused["code"].as_str()), (422, Some("payout_limit_exceeded")), "{refused}");
    assert!(refused["detail"].as_str().expect("detail").contains("daily_max"), "{refused}");
    payouts_check(&app, owner).await;
}

#[tokio::test]
async fn a_new_beneficiary_is_paid_after_its_cooling_off_and_a_waiting_payout_can_be_canceled() {
    let app = spawn_app().await;
    let business = app.create_business("GB").await;
    let key = &business.owner_key;
    fund(&app, key, 1_000).await;
    put_policy(&app, key, json!({"new_beneficiary_cooling_off_seconds": 2})).await;
    let target = uk_beneficiary(&app, key, SORT_CODE, ACCOUNT).await;
    let (status, scheduled) = payout(&app, key, "cooling", payout_body(&target, 300)).await;
    assert_eq!((status, scheduled["status"].as_str()), (201, Some("scheduled")), "{scheduled}");
    let (status, waiting) = payout(&app, key, "cooling-2", payout_body(&target, 200)).await;
    assert_eq!(status, 201, "{waiting}");
    // One is canceled while it waits: its hold is voided.
    let waiting_id = waiting["id"].as_str().expect("id");
    let (status, canceled) = post_action(&app, key, &format!("/v1/payouts/{waiting_id}/cancel")).await;
    assert_eq!((status, canceled["status"].as_str()), (200, Some("canceled")), "{canceled}");
    assert_eq!(available(&app, key).await, 700);
    // The other goes once the beneficiary is 2 s old.
    let id = scheduled["id"].as_str().expect("id");
    settled(&app, key, id, "paid").await;
    let events = payout_events(&app, key, id, 3).await;
    assert_eq!(events[1], ("payout.processing".to_string(), 2), "{events:?}");
    // A paid payout cannot be canceled.
    let (status, refused) = post_action(&app, key, &format!("/v1/payouts/{id}/cancel")).await;
    assert_eq!((status, refused["code"].as_str()), (409, Some("state_conflict")), "{refused}");
    assert_eq!(available(&app, key).await, 700);
    assert_eq!(rail_calls(&app, "create").await.len(), 1, "the canceled one never reached the rail");
    payouts_check(&app, key).await;
}

#[tokio::test]
async fn a_payout_the_rail_holds_undecided_stays_processing_until_it_decides() {
    let app = spawn_app().await;
    let business = app.create_business("GB").await;
    let key = &business.owner_key;
    fund(&app, key, 1_000).await;
    let target = uk_beneficiary(&app, key, SORT_CODE, ACCOUNT).await;
    // The rail accepts it and then says nothing final (as IMPS's "deemed" does).
    arm(&app, "create", "deemed", 1, None).await;
    let (status, created) = payout(&app, key, "deemed", payout_body(&target, 100)).await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().expect("id");
    // Asked again and again, it stays processing with the rail's own status.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while rail_calls(&app, "retrieve").await.len() < 3 {
        assert!(std::time::Instant::now() < deadline, "the saga never asked the rail again");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let waiting: Value = app.get(&format!("/v1/payouts/{id}"), key).await.json().await.expect("json");
    assert_eq!(
        (waiting["status"].as_str(), waiting["status_detail"].as_str()),
        (Some("processing"), Some("validated"))
    );
    assert_eq!(available(&app, key).await, 900, "still held");
    // The rail decides: paid, once.
    let response = app.client.post(format!("{}/_sim/fps/settle", app.sim)).send().await.expect("settle");
    assert_eq!(response.status().as_u16(), 200);
    settled(&app, key, id, "paid").await;
    assert_eq!(paid_out(&app, &business).await["balance"], 100);
    payouts_check(&app, key).await;
}

/// The provider's `PAYOUT` webhook sends the saga to ask at once, where its poll would
/// wait a minute; a dropped one leaves the payout to the poll, a duplicated one is
/// recorded once, and a forged one is refused.
#[tokio::test]
async fn a_uk_payout_is_paid_on_the_rails_webhook_without_waiting_for_the_poll() {
    let mut config = till_testkit::test_config();
    config.payouts.saga.poll_schedule = vec![std::time::Duration::from_secs(60)];
    let app = till_testkit::spawn_app_with(config, till_server::Extension::default()).await;
    let business = app.create_business("GB").await;
    let key = &business.owner_key;
    fund(&app, key, 1_000).await;
    let target = uk_beneficiary(&app, key, SORT_CODE, ACCOUNT).await;

    // Duplicated: both deliveries arrive; one is recorded, one step is made due.
    arm(&app, "webhook", "webhook_duplicate", 1, None).await;
    let (status, created) = payout(&app, key, "webhooked", payout_body(&target, 100)).await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().expect("id");
    let started = std::time::Instant::now();
    let paid = settled(&app, key, id, "paid").await;
    assert!(started.elapsed() < std::time::Duration::from_secs(30), "paid before the first poll was due");
    // The saga asked the rail once, because of the webhook (the poll was a minute away).
    assert_eq!(rail_calls(&app, "retrieve").await.len(), 1);
    let rail_id = paid["rail_payout_id"].as_str().expect("rail id").to_string();
    let (rows, outcome): (i64, Option<String>) = sqlx::query_as(
        "SELECT count(*), max(outcome) FROM payouts.rail_events WHERE rail = 'fps' AND rail_payout_id = $1",
    )
    .bind(&rail_id)
    .fetch_one(&app.owner_pool)
    .await
    .expect("events");
    assert_eq!((rows, outcome.as_deref()), (1, Some("expedited")), "one PROCESSED, recorded once");

    // Dropped: nothing makes the step due, so the payout waits for its poll.
    arm(&app, "webhook", "webhook_drop", 1, None).await;
    let (status, created) = payout(&app, key, "dropped", payout_body(&target, 100)).await;
    assert_eq!(status, 201, "{created}");
    let waiting = created["id"].as_str().expect("id");
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let still: Value = app.get(&format!("/v1/payouts/{waiting}"), key).await.json().await.expect("json");
    assert_eq!(
        (still["status"].as_str(), still["status_detail"].as_str()),
        (Some("processing"), Some("validated")),
        "{still}"
    );
    assert_eq!(available(&app, key).await, 800, "both held, one of them paid");

    // Forged, or stale and signed: the first is refused; the second (PROCESSED again for
    // the paid payout, under a new signature) is a duplicate and changes nothing.
    let body =
        serde_json::to_vec(&json!({"EventName": "PAYOUT", "PaymentId": rail_id, "Status": "PROCESSED"})).expect("body");
    let send = |secret: &str| {
        app.client
            .post(format!("{}/v1/providers/fps/webhooks", app.address))
            .header("content-type", "application/json")
            .header("x-mod-signature", till_sim::razorpay::sign(secret, &body))
            .body(body.clone())
            .send()
    };
    let forged = send("not the secret").await.expect("send");
    assert_eq!(forged.status().as_u16(), 400);
    let problem: Value = forged.json().await.expect("json");
    assert_eq!(problem["code"], "webhook_signature_invalid", "{problem}");
    let again: Value = send(till_testkit::FPS_WEBHOOK_SECRET).await.expect("send").json().await.expect("json");
    assert_eq!(again["duplicate"], true, "{again}");
    let after: Value = app.get(&format!("/v1/payouts/{id}"), key).await.json().await.expect("json");
    assert_eq!((after["status"].as_str(), after["version"].as_i64()), (Some("paid"), paid["version"].as_i64()));
    assert_eq!(paid_out(&app, &business).await["balance"], 100);
    payouts_check(&app, key).await;
}

/// The rail's webhook outruns its reply to the create: Till has no rail id for the
/// payout yet, so the webhook finds it by the payout's own id (the external reference),
/// and, since the step sending it holds its lease, marks it so that the step asks again
/// as soon as it is done, not a minute later.
#[tokio::test]
async fn a_webhook_that_outruns_the_creates_reply_still_finds_and_hurries_its_payout() {
    let mut config = till_testkit::test_config();
    config.payouts.saga.poll_schedule = vec![std::time::Duration::from_secs(60)];
    let app = till_testkit::spawn_app_with(config, till_server::Extension::default()).await;
    let business = app.create_business("GB").await;
    let key = &business.owner_key;
    fund(&app, key, 1_000).await;
    let target = uk_beneficiary(&app, key, SORT_CODE, ACCOUNT).await;
    // The payment is made and processed at once; its reply takes longer than an attempt.
    arm(&app, "create", "timeout_after_effect", 1, Some(2_500)).await;
    let (status, created) = payout(&app, key, "outrun", payout_body(&target, 300)).await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().expect("id");
    let paid = settled(&app, key, id, "paid").await;
    let rail_id = paid["rail_payout_id"].as_str().expect("rail id");
    let (kind, outcome, owner): (String, Option<String>, Option<uuid::Uuid>) = sqlx::query_as(
        "SELECT type, outcome, business_id FROM payouts.rail_events WHERE rail = 'fps' AND rail_payout_id = $1",
    )
    .bind(rail_id)
    .fetch_one(&app.owner_pool)
    .await
    .expect("the webhook was recorded");
    assert_eq!((kind.as_str(), outcome.as_deref()), ("PAYOUT", Some("expedited")));
    assert_eq!(owner.map(|owner| format!("biz_{}", owner.simple())), Some(business.id.clone()));
    let creates = rail_calls(&app, "create").await;
    assert!(creates.iter().all(|call| call["idempotency_key"] == id), "{creates:?}");
    assert_eq!(paid_out(&app, &business).await["balance"], 300, "one posting");
    payouts_check(&app, key).await;
}
