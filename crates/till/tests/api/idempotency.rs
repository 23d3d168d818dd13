//! The Idempotency-Key conformance suite (API.md, "Idempotency").
//!
//! Every POST route has a case below; `every_post_route_has_a_case` fails when a new route
//! is added without one. Each case is run through the same checks: missing and invalid
//! keys, byte-identical replay, reuse with another request, 20 concurrent identical
//! requests, keys scoped per business, and keys scoped per credential within a business
//! (another principal's same key and body is never replayed the first one's response).

use std::collections::BTreeSet;

use futures::future::join_all;
use serde_json::{json, Value};
use till_testkit::{problem, spawn_app, spawn_app_with, test_config, TestApp, TestBusiness};

use crate::ledger_helpers as ledger;
use crate::support;

/// One mutating route: how to prepare a valid request, and how to count its effect.
struct Case {
    /// The route as documented.
    path: &'static str,
    /// Whose credential: the platform admin token or the business's owner key.
    platform: bool,
    /// SQL counting the route's effects.
    effects: &'static str,
    prepare: for<'a> fn(&'a TestApp, &'a TestBusiness) -> BoxFuture<'a, Target>,
}

/// A concrete request for a case: its path, and a body for variant `n` (variants 1 and 2
/// are different requests, where the route's body allows it).
struct Target {
    path: String,
    body: Box<dyn Fn(u32) -> Value + Send + Sync>,
}

type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

fn target(path: impl Into<String>, body: impl Fn(u32) -> Value + Send + Sync + 'static) -> Target {
    Target { path: path.into(), body: Box::new(body) }
}

/// Two funded wallets of the business.
async fn funded_pair(app: &TestApp, business: &TestBusiness) -> (String, String) {
    let k = &business.owner_key;
    let (bank, payer, payee) =
        (ledger::source(app, k, "GBP").await, ledger::wallet(app, k, "GBP").await, ledger::wallet(app, k, "GBP").await);
    ledger::posted(app, k, &bank, &payer, 1_000_000).await;
    (payer, payee)
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            path: "/v1/api_keys",
            platform: false,
            effects: "SELECT count(*) FROM access.api_keys",
            prepare: |_, _| {
                Box::pin(async {
                    target("/v1/api_keys", |n| json!({ "name": format!("conformance {n}"), "role": "viewer" }))
                })
            },
        },
        Case {
            path: "/v1/platform/businesses",
            platform: true,
            effects: "SELECT count(*) FROM access.businesses",
            prepare: |_, _| {
                Box::pin(async {
                    target(
                        "/v1/platform/businesses",
                        |n| json!({ "legal_name": format!("Conformance {n} Ltd"), "country": "GB" }),
                    )
                })
            },
        },
        Case {
            path: "/v1/platform/token_revocations",
            platform: true,
            effects: "SELECT count(*) FROM access.token_revocations",
            prepare: |_, _| {
                Box::pin(async {
                    target("/v1/platform/token_revocations", |n| json!({ "token_id": format!("conformance-{n}") }))
                })
            },
        },
        Case {
            path: "/v1/accounts",
            platform: false,
            effects: "SELECT count(*) FROM ledger.accounts",
            prepare: |_, _| {
                Box::pin(async {
                    target(
                        "/v1/accounts",
                        |n| json!({ "name": format!("Account {n}"), "currency": "GBP", "normal_balance": "credit" }),
                    )
                })
            },
        },
        Case {
            path: "/v1/transfers",
            platform: false,
            effects: "SELECT count(*) FROM ledger.transfers",
            prepare: |app, business| {
                Box::pin(async move {
                    let (payer, payee) = funded_pair(app, business).await;
                    target("/v1/transfers", move |n| ledger::transfer_body(&payer, &payee, i64::from(n)))
                })
            },
        },
        Case {
            path: "/v1/transfers/batch",
            platform: false,
            effects: "SELECT count(*) FROM ledger.transfers",
            prepare: |app, business| {
                Box::pin(async move {
                    let (payer, payee) = funded_pair(app, business).await;
                    target(
                        "/v1/transfers/batch",
                        move |n| json!({ "transfers": [ledger::transfer_body(&payer, &payee, i64::from(n))] }),
                    )
                })
            },
        },
        Case {
            path: "/v1/transfers/{id}/post",
            platform: false,
            effects: "SELECT count(*) FROM ledger.hold_resolutions",
            prepare: |app, business| {
                Box::pin(async move {
                    let (payer, payee) = funded_pair(app, business).await;
                    let held = ledger::hold(app, &business.owner_key, &payer, &payee, 1_000, None).await;
                    target(format!("/v1/transfers/{held}/post"), |n| json!({ "amount": n }))
                })
            },
        },
        Case {
            path: "/v1/transfers/{id}/void",
            platform: false,
            effects: "SELECT count(*) FROM ledger.hold_resolutions",
            prepare: |app, business| {
                Box::pin(async move {
                    let (payer, payee) = funded_pair(app, business).await;
                    let held = ledger::hold(app, &business.owner_key, &payer, &payee, 1_000, None).await;
                    target(format!("/v1/transfers/{held}/void"), |_| json!({}))
                })
            },
        },
        Case {
            path: "/v1/transfers/{id}/reverse",
            platform: false,
            effects: "SELECT count(*) FROM ledger.transfers WHERE reverses_id IS NOT NULL",
            prepare: |app, business| {
                Box::pin(async move {
                    let (payer, payee) = funded_pair(app, business).await;
                    let payment = ledger::posted(app, &business.owner_key, &payer, &payee, 500).await;
                    target(
                        format!("/v1/transfers/{payment}/reverse"),
                        |n| json!({ "description": format!("refund {n}") }),
                    )
                })
            },
        },
        Case {
            path: "/v1/webhook_endpoints",
            platform: false,
            effects: "SELECT count(*) FROM webhooks.endpoints",
            prepare: |_, _| {
                Box::pin(async {
                    target(
                        "/v1/webhook_endpoints",
                        |n| json!({ "url": format!("https://hooks{n}.example.com/till"), "enabled_events": ["*"] }),
                    )
                })
            },
        },
        Case {
            path: "/v1/webhook_endpoints/{id}/rotate_secret",
            platform: false,
            effects: "SELECT coalesce(sum(version), 0) FROM webhooks.endpoints",
            prepare: |app, business| {
                Box::pin(async move {
                    let endpoint = webhook_endpoint(app, business).await;
                    target(format!("/v1/webhook_endpoints/{endpoint}/rotate_secret"), |n| json!({ "grace_seconds": n }))
                })
            },
        },
        Case {
            path: "/v1/webhook_endpoints/{id}/replay",
            platform: false,
            effects: "SELECT count(DISTINCT (endpoint_id, generation)) FROM webhooks.deliveries WHERE generation > 0",
            prepare: |app, business| {
                Box::pin(async move {
                    let endpoint = webhook_endpoint(app, business).await;
                    // A replay needs an event to replay: wait until the business has one.
                    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
                    loop {
                        let page: Value =
                            app.get("/v1/events?limit=1", &business.owner_key).await.json().await.expect("json");
                        if !page["data"].as_array().is_none_or(Vec::is_empty) {
                            break;
                        }
                        assert!(std::time::Instant::now() < deadline, "an event arrives");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    }
                    // Variants are different times within the replay window (30 days).
                    let base = time::OffsetDateTime::now_utc() - time::Duration::hours(1);
                    target(format!("/v1/webhook_endpoints/{endpoint}/replay"), move |n| {
                        let since = base - time::Duration::seconds(i64::from(n));
                        let since =
                            since.format(&time::format_description::well_known::Rfc3339).expect("an RFC 3339 time");
                        json!({ "since": since })
                    })
                })
            },
        },
        Case {
            path: "/v1/payment_intents",
            platform: false,
            effects: "SELECT count(*) FROM payments.intents",
            prepare: |_, _| {
                Box::pin(async {
                    target(
                        "/v1/payment_intents",
                        |n| json!({ "amount": 100 + n, "currency": "GBP", "payment_method": "pm_card_visa", "confirm": true }),
                    )
                })
            },
        },
        Case {
            path: "/v1/payment_intents/{id}/confirm",
            platform: false,
            effects: "SELECT count(*) FROM payments.intents WHERE status = 'succeeded'",
            prepare: |app, business| {
                Box::pin(async move {
                    let intent = payment_intent(app, business, json!({ "amount": 500, "currency": "GBP" })).await;
                    target(
                        format!("/v1/payment_intents/{intent}/confirm"),
                        |n| json!({ "payment_method": if n == 1 { "pm_card_visa" } else { "pm_card_mastercard" } }),
                    )
                })
            },
        },
        Case {
            path: "/v1/payment_intents/{id}/capture",
            platform: false,
            effects: "SELECT count(*) FROM payments.intents WHERE status = 'succeeded'",
            prepare: |app, business| {
                Box::pin(async move {
                    let body = json!({ "amount": 500, "currency": "GBP", "capture_method": "manual",
                                       "payment_method": "pm_card_visa", "confirm": true });
                    let intent = payment_intent(app, business, body).await;
                    target(format!("/v1/payment_intents/{intent}/capture"), |n| json!({ "amount_to_capture": n }))
                })
            },
        },
        Case {
            path: "/v1/payment_intents/{id}/cancel",
            platform: false,
            effects: "SELECT count(*) FROM payments.intents WHERE status = 'canceled'",
            prepare: |app, business| {
                Box::pin(async move {
                    let intent = payment_intent(app, business, json!({ "amount": 500, "currency": "GBP" })).await;
                    target(
                        format!("/v1/payment_intents/{intent}/cancel"),
                        |n| json!({ "cancellation_reason": if n == 1 { "duplicate" } else { "abandoned" } }),
                    )
                })
            },
        },
        Case {
            path: "/v1/refunds",
            platform: false,
            effects: "SELECT count(*) FROM payments.refunds",
            prepare: |app, business| {
                Box::pin(async move {
                    let body = json!({ "amount": 5_000, "currency": "GBP", "payment_method": "pm_card_visa", "confirm": true });
                    let intent = payment_intent(app, business, body).await;
                    target("/v1/refunds", move |n| json!({ "payment_intent_id": intent, "amount": n }))
                })
            },
        },
        Case {
            path: "/v1/beneficiaries",
            platform: false,
            effects: "SELECT count(*) FROM payouts.beneficiaries",
            prepare: |_, _| {
                Box::pin(async {
                    target("/v1/beneficiaries", |n| {
                        json!({ "type": "uk_account", "name": format!("Acme {n}"), "sort_code": "089999",
                                "account_number": "66374958" })
                    })
                })
            },
        },
        Case {
            path: "/v1/payouts",
            platform: false,
            effects: "SELECT count(*) FROM payouts.payouts",
            prepare: |app, business| {
                Box::pin(async move {
                    crate::payouts::fund(app, &business.owner_key, 10_000).await;
                    let body = json!({ "type": "uk_account", "name": "Acme", "sort_code": "089999",
                                       "account_number": "66374958" });
                    let response = app
                        .post("/v1/beneficiaries", &business.owner_key, &uuid::Uuid::now_v7().to_string(), &body)
                        .await;
                    assert_eq!(response.status().as_u16(), 201);
                    let created: Value = response.json().await.expect("json");
                    let beneficiary = created["id"].as_str().expect("id").to_string();
                    target(
                        "/v1/payouts",
                        move |n| json!({ "beneficiary_id": beneficiary, "amount": n, "currency": "GBP", "reference": "CONFORMANCE" }),
                    )
                })
            },
        },
        Case {
            path: "/v1/products",
            platform: false,
            effects: "SELECT count(*) FROM commerce.products",
            prepare: |_, _| {
                Box::pin(async {
                    target("/v1/products", |n| {
                        json!({ "name": format!("Mug {n}"), "sku": format!("MUG-{n}"), "tax_treatment": "standard",
                                "prices": [{"currency": "GBP", "unit_amount": 1200, "tax_inclusive": true}] })
                    })
                })
            },
        },
        Case {
            path: "/v1/inventory/{sku}/adjustments",
            platform: false,
            effects: "SELECT count(*) FROM commerce.stock_movements",
            prepare: |app, business| {
                Box::pin(async move {
                    let product = crate::commerce::product(app, &business.owner_key, "standard", 1200).await;
                    let sku = product["sku"].as_str().expect("sku").to_string();
                    target(format!("/v1/inventory/{sku}/adjustments"), |n| json!({ "delta": n, "reason": "delivery" }))
                })
            },
        },
        Case {
            path: "/v1/reservations",
            platform: false,
            effects: "SELECT count(*) FROM commerce.reservations",
            prepare: |app, business| {
                Box::pin(async move {
                    let sku = crate::commerce::stocked(app, &business.owner_key, 1_000).await;
                    target("/v1/reservations", move |n| json!({ "lines": [{"sku": sku, "quantity": n}] }))
                })
            },
        },
        Case {
            path: "/v1/reservations/{id}/commit",
            platform: false,
            effects: "SELECT count(*) FROM commerce.reservations WHERE status = 'committed'",
            prepare: |app, business| {
                Box::pin(async move {
                    let id = crate::commerce::reservation(app, &business.owner_key).await;
                    target(format!("/v1/reservations/{id}/commit"), |_| json!({}))
                })
            },
        },
        Case {
            path: "/v1/reservations/{id}/release",
            platform: false,
            effects: "SELECT count(*) FROM commerce.reservations WHERE status = 'released'",
            prepare: |app, business| {
                Box::pin(async move {
                    let id = crate::commerce::reservation(app, &business.owner_key).await;
                    target(format!("/v1/reservations/{id}/release"), |_| json!({}))
                })
            },
        },
        Case {
            path: "/v1/notification_templates",
            platform: false,
            effects: "SELECT count(*) FROM notify.templates",
            prepare: |_, _| {
                Box::pin(async {
                    target("/v1/notification_templates", |n| {
                        json!({ "name": format!("Receipt {n}"), "event_type": "payment_intent.succeeded", "channel": "email",
                                "subject": "Receipt", "text": "Paid {{ payment.amount }}" })
                    })
                })
            },
        },
        Case {
            path: "/v1/coupons",
            platform: false,
            effects: "SELECT count(*) FROM commerce.coupons",
            prepare: |_, _| {
                Box::pin(async { target("/v1/coupons", |n| json!({ "code": format!("SAVE{n}"), "percent_bps": n })) })
            },
        },
        Case {
            path: "/v1/quotes",
            platform: false,
            effects: "SELECT count(*) FROM commerce.quotes",
            prepare: |app, business| {
                Box::pin(async move {
                    let product = crate::commerce::product(app, &business.owner_key, "standard", 1200).await;
                    let id = product["id"].as_str().expect("id").to_string();
                    target("/v1/quotes", move |n| {
                        json!({ "currency": "GBP", "lines": [{"product_id": id, "quantity": n}],
                                "buyer": {"type": "consumer", "country": "GB"} })
                    })
                })
            },
        },
        Case {
            path: "/v1/checkouts",
            platform: false,
            effects: "SELECT count(*) FROM commerce.orders",
            prepare: |app, business| {
                Box::pin(async move {
                    let key = &business.owner_key;
                    crate::checkout::invoice_settings(app, key).await;
                    let product = json!({"name": "Mug", "sku": format!("MUG-{}", uuid::Uuid::now_v7().simple()),
                                         "tax_treatment": "standard",
                                         "prices": [{"currency": "GBP", "unit_amount": 100, "tax_inclusive": false}]});
                    let (id, _) = crate::checkout::stocked(app, key, 1_000, product).await;
                    target("/v1/checkouts", move |n| crate::checkout::uk_checkout(&id, i64::from(n), "pm_card_visa"))
                })
            },
        },
        Case {
            path: "/v1/orders/{id}/cancel",
            platform: false,
            effects: "SELECT count(*) FROM commerce.order_steps WHERE step = 'cancel'",
            prepare: |app, business| {
                Box::pin(async move {
                    // An order whose payment is with the gateway for a while: its first
                    // confirm hangs past the attempt timeout, so a cancel is recorded (202).
                    let key = &business.owner_key;
                    crate::checkout::invoice_settings(app, key).await;
                    let product = json!({"name": "Mug", "sku": format!("MUG-{}", uuid::Uuid::now_v7().simple()),
                                         "tax_treatment": "standard",
                                         "prices": [{"currency": "GBP", "unit_amount": 100, "tax_inclusive": false}]});
                    let (id, _) = crate::checkout::stocked(app, key, 10, product).await;
                    app.arm_fault("stripe", "confirm", "timeout", 1, Some(2_500)).await;
                    let order = app
                        .post(
                            "/v1/checkouts",
                            key,
                            &uuid::Uuid::now_v7().to_string(),
                            &crate::checkout::uk_checkout(&id, 1, "pm_card_visa"),
                        )
                        .await;
                    let order: Value = order.json().await.expect("order");
                    let order = order["id"].as_str().expect("id").to_string();
                    crate::checkout::sent(app, &order).await;
                    target(format!("/v1/orders/{order}/cancel"), |_| json!({}))
                })
            },
        },
        Case {
            path: "/v1/orders/{id}/refund",
            platform: false,
            effects: "SELECT count(*) FROM commerce.order_refunds",
            prepare: |app, business| {
                Box::pin(async move {
                    let key = &business.owner_key;
                    crate::checkout::invoice_settings(app, key).await;
                    let (order, _) = crate::checkout::paid_order(app, key, 100, 100).await;
                    let (id, product) =
                        (order["id"].as_str().expect("id").to_string(), order["lines"][0]["product_id"].clone());
                    target(
                        format!("/v1/orders/{id}/refund"),
                        move |n| json!({"lines": [{"product_id": product, "quantity": n}]}),
                    )
                })
            },
        },
        Case {
            path: "/v1/payouts/{id}/approve",
            platform: false,
            effects: "SELECT count(*) FROM payouts.payouts WHERE approved_by IS NOT NULL",
            prepare: |app, business| {
                Box::pin(async move {
                    let policy = json!({"limits": {"GBP": {"per_payout_max": 10_000, "daily_max": 100_000,
                                                           "monthly_max": 100_000, "approval_threshold": 1}}});
                    let payout = waiting_payout(app, business, policy).await;
                    // Approved by a second admin: the case's credential is the owner's, who
                    // did not make this payout (the helper's admin key did).
                    target(format!("/v1/payouts/{payout}/approve"), |_| json!({}))
                })
            },
        },
        Case {
            path: "/v1/payouts/{id}/cancel",
            platform: false,
            effects: "SELECT count(*) FROM payouts.payouts WHERE status = 'canceled'",
            prepare: |app, business| {
                Box::pin(async move {
                    let payout =
                        waiting_payout(app, business, json!({"new_beneficiary_cooling_off_seconds": 3600})).await;
                    target(format!("/v1/payouts/{payout}/cancel"), |_| json!({}))
                })
            },
        },
    ]
}

/// A payout that waits (for approval, or a cooling-off, as `policy` says), made by a
/// second admin key of the business so that its owner may approve it.
async fn waiting_payout(app: &TestApp, business: &TestBusiness, policy: Value) -> String {
    let owner = &business.owner_key;
    crate::payouts::fund(app, owner, 10_000).await;
    let response =
        app.request(reqwest::Method::PUT, "/v1/payout_policy", owner).json(&policy).send().await.expect("put");
    assert_eq!(response.status().as_u16(), 200);
    let key = app
        .post("/v1/api_keys", owner, &uuid::Uuid::now_v7().to_string(), &json!({"name": "maker", "role": "admin"}))
        .await;
    let maker: Value = key.json().await.expect("json");
    let maker = maker["secret"].as_str().expect("secret").to_string();
    let body = json!({ "type": "uk_account", "name": "Acme", "sort_code": "089999", "account_number": "66374958" });
    let response = app.post("/v1/beneficiaries", &maker, &uuid::Uuid::now_v7().to_string(), &body).await;
    let created: Value = response.json().await.expect("json");
    let body = json!({ "beneficiary_id": created["id"], "amount": 100, "currency": "GBP", "reference": "CONFORMANCE" });
    let response = app.post("/v1/payouts", &maker, &uuid::Uuid::now_v7().to_string(), &body).await;
    assert_eq!(response.status().as_u16(), 201);
    let payout: Value = response.json().await.expect("json");
    assert_ne!(payout["status"], "processing", "{payout}");
    payout["id"].as_str().expect("id").to_string()
}

async fn payment_intent(app: &TestApp, business: &TestBusiness, body: Value) -> String {
    let response = app.post("/v1/payment_intents", &business.owner_key, &uuid::Uuid::now_v7().to_string(), &body).await;
    assert_eq!(response.status().as_u16(), 201);
    let created: Value = response.json().await.expect("json");
    created["id"].as_str().expect("id").to_string()
}

async fn webhook_endpoint(app: &TestApp, business: &TestBusiness) -> String {
    let body = json!({ "url": "https://hooks.example.com/till", "enabled_events": ["*"] });
    let response =
        app.post("/v1/webhook_endpoints", &business.owner_key, &uuid::Uuid::now_v7().to_string(), &body).await;
    let created: Value = response.json().await.expect("json");
    created["id"].as_str().expect("id").to_string()
}

fn credential(app: &TestApp, business: &TestBusiness, case: &Case) -> String {
    if case.platform {
        app.admin_token.clone()
    } else {
        business.owner_key.clone()
    }
}

async fn effects(app: &TestApp, case: &Case) -> i64 {
    sqlx::query_scalar(case.effects).fetch_one(&app.owner_pool).await.expect("counting effects")
}

#[tokio::test]
async fn every_post_route_has_a_case() {
    let app = spawn_app().await;
    let documented: BTreeSet<String> = app.openapi["paths"]
        .as_object()
        .expect("paths")
        .iter()
        .filter(|(_, item)| item.get("post").is_some())
        .map(|(path, _)| path.clone())
        // An outside party's webhooks are deduplicated by its own event ids (their tests
        // are in gateway_webhooks.rs), not by an Idempotency-Key.
        .filter(|path| !path.starts_with("/v1/providers/"))
        .collect();
    let covered: BTreeSet<String> = cases().iter().map(|case| case.path.to_string()).collect();
    assert_eq!(documented, covered, "every POST route needs an idempotency conformance case");
    for path in &documented {
        let parameters = app.openapi["paths"][path]["post"]["parameters"].as_array().cloned().unwrap_or_default();
        assert!(
            parameters.iter().any(|p| p["name"] == "Idempotency-Key" && p["in"] == "header"),
            "{path} documents its Idempotency-Key header"
        );
    }
}

#[tokio::test]
async fn missing_or_invalid_keys_are_refused_and_nothing_runs() {
    let app = spawn_app().await;
    let business = app.create_business("GB").await;
    for case in cases() {
        let target = (case.prepare)(&app, &business).await;
        let before = effects(&app, &case).await;
        let credential = credential(&app, &business, &case);
        let missing =
            app.request(reqwest::Method::POST, &target.path, &credential).json(&(target.body)(1)).send().await;
        let missing = missing.expect("post");
        assert_eq!(missing.status().as_u16(), 400, "{}", case.path);
        assert_eq!(problem(missing).await["code"], "idempotency_key_missing");
        for bad in ["x".repeat(256), "tab\there".to_string(), "é".to_string()] {
            let response = app
                .request(reqwest::Method::POST, &target.path, &credential)
                .header("Idempotency-Key", reqwest::header::HeaderValue::from_bytes(bad.as_bytes()).expect("header"))
                .json(&(target.body)(1))
                .send()
                .await
                .expect("post");
            assert_eq!(response.status().as_u16(), 400, "{} with {bad:?}", case.path);
            assert_eq!(problem(response).await["code"], "idempotency_key_invalid");
        }
        assert_eq!(effects(&app, &case).await, before, "{}", case.path);
    }
}

#[tokio::test]
async fn a_retry_replays_the_stored_response_byte_for_byte() {
    let app = spawn_app().await;
    let business = app.create_business("GB").await;
    for case in cases() {
        let target = (case.prepare)(&app, &business).await;
        let before = effects(&app, &case).await;
        let credential = credential(&app, &business, &case);
        let first = app.post(&target.path, &credential, &format!("replay-1-{}", case.path), &(target.body)(1)).await;
        let status = first.status().as_u16();
        // 202: a decision too where a route says so (a cancel recorded for the saga).
        assert!((200..=202).contains(&status), "{}: {status}", case.path);
        assert!(first.headers().get("idempotent-replayed").is_none());
        let first_body = first.bytes().await.expect("body");
        for _ in 0..3 {
            let again =
                app.post(&target.path, &credential, &format!("replay-1-{}", case.path), &(target.body)(1)).await;
            assert_eq!(again.status().as_u16(), status, "{}", case.path);
            assert_eq!(again.headers()["idempotent-replayed"], "true");
            assert_eq!(again.headers()["content-type"], "application/json");
            assert_eq!(again.bytes().await.expect("body"), first_body, "{} replays byte for byte", case.path);
        }
        assert_eq!(effects(&app, &case).await, before + 1, "{} ran once", case.path);
    }
}

#[tokio::test]
async fn reusing_a_key_for_another_request_is_422_and_runs_nothing() {
    let app = spawn_app().await;
    let business = app.create_business("GB").await;
    for case in cases() {
        let target = (case.prepare)(&app, &business).await;
        let credential = credential(&app, &business, &case);
        let first = app.post(&target.path, &credential, &format!("reuse-1-{}", case.path), &(target.body)(1)).await;
        assert!(first.status().is_success(), "{}", case.path);
        let before = effects(&app, &case).await;
        if (target.body)(1) != (target.body)(2) {
            let other_body =
                app.post(&target.path, &credential, &format!("reuse-1-{}", case.path), &(target.body)(2)).await;
            assert_eq!(other_body.status().as_u16(), 422, "{}", case.path);
            assert_eq!(problem(other_body).await["code"], "idempotency_key_reused");
        }
        let other_path = app
            .post(&format!("{}?x=1", target.path), &credential, &format!("reuse-1-{}", case.path), &(target.body)(1))
            .await;
        assert_eq!(other_path.status().as_u16(), 422, "{} with a query string", case.path);
        assert_eq!(effects(&app, &case).await, before, "{}", case.path);
    }
}

#[tokio::test]
async fn twenty_concurrent_identical_requests_have_one_effect() {
    let app = spawn_app().await;
    let business = app.create_business("GB").await;
    for case in cases() {
        let target = (case.prepare)(&app, &business).await;
        let before = effects(&app, &case).await;
        let credential = credential(&app, &business, &case);
        let body = (target.body)(7);
        let race_key = format!("race-1-{}", case.path);
        let responses = join_all((0..20).map(|_| app.post(&target.path, &credential, &race_key, &body))).await;
        let mut originals = Vec::new();
        let mut replays = Vec::new();
        let mut in_flight = 0;
        for response in responses {
            match (response.status().as_u16(), response.headers().contains_key("idempotent-replayed")) {
                (200..=202, false) => originals.push(response.bytes().await.expect("body")),
                (200..=202, true) => replays.push(response.bytes().await.expect("body")),
                (409, _) => {
                    assert_eq!(problem(response).await["code"], "idempotency_key_in_use");
                    in_flight += 1;
                }
                (status, _) => panic!("{}: unexpected {status}", case.path),
            }
        }
        assert_eq!(
            originals.len(),
            1,
            "{}: exactly one request ran ({} replays, {in_flight} in flight)",
            case.path,
            replays.len()
        );
        assert!(replays.iter().all(|replay| replay == &originals[0]), "replays equal the original");
        assert_eq!(effects(&app, &case).await, before + 1, "{}: one effect", case.path);
    }
}

#[tokio::test]
async fn the_same_key_in_two_businesses_stays_separate() {
    let app = spawn_app().await;
    let first = app.create_business("GB").await;
    let second = app.create_business("IN").await;
    let body = json!({ "name": "shared key name", "role": "viewer" });
    let a = app.post("/v1/api_keys", &first.owner_key, "shared-key", &body).await;
    let b = app.post("/v1/api_keys", &second.owner_key, "shared-key", &body).await;
    assert_eq!((a.status().as_u16(), b.status().as_u16()), (201, 201));
    assert!(a.headers().get("idempotent-replayed").is_none() && b.headers().get("idempotent-replayed").is_none());
    let a: Value = a.json().await.expect("json");
    let b: Value = b.json().await.expect("json");
    assert_ne!(a["id"], b["id"]);
    let other_body = json!({ "name": "different", "role": "viewer" });
    let c = app.post("/v1/api_keys", &second.owner_key, "another", &other_body).await;
    assert_eq!(c.status().as_u16(), 201);
    let reused_elsewhere = app.post("/v1/api_keys", &first.owner_key, "another", &other_body).await;
    assert_eq!(reused_elsewhere.status().as_u16(), 201, "a key used by one business means nothing to another");
}

#[tokio::test]
async fn a_refusal_is_stored_and_its_partial_effect_rolled_back() {
    let app = spawn_app_with(test_config(), support::extension(Default::default())).await;
    let business = app.create_business("GB").await;
    let first = app.post(support::REFUSE_PATH, &business.owner_key, "refuse-1", &json!({})).await;
    assert_eq!(first.status().as_u16(), 422);
    let first_body = first.bytes().await.expect("body");
    assert_eq!(
        support::count_actions(&app.owner_pool, "test.before_refusal").await,
        0,
        "nothing of the refused effect stays"
    );
    let again = app.post(support::REFUSE_PATH, &business.owner_key, "refuse-1", &json!({})).await;
    assert_eq!(again.status().as_u16(), 422);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(again.headers()["content-type"], "application/problem+json");
    assert_eq!(again.bytes().await.expect("body"), first_body);
}

#[tokio::test]
async fn a_transient_failure_is_not_stored_and_the_retry_runs() {
    let budget = support::FlakyBudget::default();
    budget.0.store(2, std::sync::atomic::Ordering::SeqCst);
    let app = spawn_app_with(test_config(), support::extension(budget)).await;
    let business = app.create_business("GB").await;
    for attempt in 0..2 {
        let response = app.post(support::FLAKY_PATH, &business.owner_key, "flaky-1", &json!({})).await;
        assert_eq!(response.status().as_u16(), 503, "attempt {attempt}");
        assert!(response.headers().get("idempotent-replayed").is_none());
    }
    assert_eq!(support::count_actions(&app.owner_pool, "test.flaky_effect").await, 0, "failed attempts left nothing");
    let success = app.post(support::FLAKY_PATH, &business.owner_key, "flaky-1", &json!({})).await;
    assert_eq!(success.status().as_u16(), 201);
    let replay = app.post(support::FLAKY_PATH, &business.owner_key, "flaky-1", &json!({})).await;
    assert_eq!(replay.status().as_u16(), 201);
    assert_eq!(replay.headers()["idempotent-replayed"], "true");
    assert_eq!(support::count_actions(&app.owner_pool, "test.flaky_effect").await, 1, "the effect happened once");
}

#[tokio::test]
async fn keys_are_kept_a_day_and_then_purged() {
    let app = spawn_app().await;
    let business = app.create_business("GB").await;
    assert_eq!(
        app.post("/v1/api_keys", &business.owner_key, "fresh", &json!({"name": "a", "role": "viewer"})).await.status(),
        201
    );
    assert_eq!(
        app.post("/v1/api_keys", &business.owner_key, "stale", &json!({"name": "b", "role": "viewer"})).await.status(),
        201
    );
    sqlx::query("UPDATE api.idempotency_keys SET created_at = now() - interval '25 hours' WHERE key = 'stale'")
        .execute(&app.owner_pool)
        .await
        .expect("age a key");
    assert!(till_http::unit_of_work::purge_expired_keys(&app.pool, 1, 100).await.is_err(), "under 24 hours is refused");
    // The server's purge job may get there first; either way the stale key goes.
    let purged = till_http::unit_of_work::purge_expired_keys(&app.pool, 24, 100).await.expect("purge");
    assert!(purged <= 1);
    let left: Vec<String> = sqlx::query_scalar("SELECT key FROM api.idempotency_keys ORDER BY key")
        .fetch_all(&app.owner_pool)
        .await
        .expect("keys");
    assert!(left.contains(&"fresh".to_string()) && !left.contains(&"stale".to_string()));
    // A purged key is new again.
    let reused = app.post("/v1/api_keys", &business.owner_key, "stale", &json!({"name": "c", "role": "viewer"})).await;
    assert_eq!(reused.status().as_u16(), 201);
    assert!(reused.headers().get("idempotent-replayed").is_none());
}

#[tokio::test]
async fn another_principal_of_the_business_is_never_replayed_the_first_ones_response() {
    let app = spawn_app().await;
    let business = app.create_business("GB").await;
    // A second owner key: it may call every route, so any difference is the key's scope.
    let second = app.create_key(&business, "owner").await;
    for case in cases() {
        if case.platform {
            // The platform has one credential (the admin token): no second principal.
            continue;
        }
        let target = (case.prepare)(&app, &business).await;
        let key = format!("shared-{}", case.path);
        let first = app.post(&target.path, &business.owner_key, &key, &(target.body)(1)).await;
        assert!(first.status().is_success(), "{}: {}", case.path, first.status());
        let first_body = first.bytes().await.expect("body");
        let before = effects(&app, &case).await;

        let other = app.post(&target.path, &second, &key, &(target.body)(1)).await;
        assert!(
            other.headers().get("idempotent-replayed").is_none(),
            "{}: another credential's key was replayed",
            case.path
        );
        let status = other.status();
        // It ran as a request of its own: a new effect, or a refusal of its own (a hold
        // the first request already posted cannot be posted again). (Bodies may be equal
        // by coincidence: a replay of the same events counts the same number.)
        let after = effects(&app, &case).await;
        assert!(
            (status.is_success() && after == before + 1) || (status.is_client_error() && after == before),
            "{}: {status} with effects {before} -> {after}",
            case.path
        );
        // The first credential's key still replays its own response.
        let again = app.post(&target.path, &business.owner_key, &key, &(target.body)(1)).await;
        assert_eq!(again.headers()["idempotent-replayed"], "true", "{}", case.path);
        assert_eq!(again.bytes().await.expect("body"), first_body, "{}", case.path);
    }
}

#[tokio::test]
async fn an_admin_repeating_an_owners_key_request_is_refused_and_never_sees_the_owner_key() {
    let app = spawn_app().await;
    let business = app.create_business("GB").await;
    let admin = app.create_key(&business, "admin").await;
    let body = json!({ "name": "second owner", "role": "owner" });
    let created = app.post("/v1/api_keys", &business.owner_key, "k1", &body).await;
    assert_eq!(created.status().as_u16(), 201);
    let created: Value = created.json().await.expect("json");
    let owner_secret = created["secret"].as_str().expect("secret").to_string();

    let replayed = app.post("/v1/api_keys", &admin, "k1", &body).await;
    assert_eq!(replayed.status().as_u16(), 403, "the admin's own request, refused");
    assert!(replayed.headers().get("idempotent-replayed").is_none());
    let text = replayed.text().await.expect("body");
    assert!(!text.contains(&owner_secret), "the owner key's secret leaked to an admin: {text}");
    let owners: i64 =
        sqlx::query_scalar("SELECT count(*) FROM access.api_keys WHERE role = 'owner' AND business_id = $1::uuid")
            .bind(till_kit::BusinessId::parse(&business.id).expect("id").as_uuid())
            .fetch_one(&app.owner_pool)
            .await
            .expect("count");
    assert_eq!(owners, 2, "the first owner key and the one the owner created");
}

#[tokio::test]
async fn a_lower_roles_stored_refusal_is_never_replayed_to_the_owner() {
    let app = spawn_app().await;
    let business = app.create_business("GB").await;
    let admin = app.create_key(&business, "admin").await;
    let body = json!({ "name": "pre-empted", "role": "owner" });
    let refused = app.post("/v1/api_keys", &admin, "k2", &body).await;
    assert_eq!(refused.status().as_u16(), 403);
    // The same key and body from the owner is the owner's own request, and runs.
    let owner = app.post("/v1/api_keys", &business.owner_key, "k2", &body).await;
    assert_eq!(owner.status().as_u16(), 201, "the admin's stored 403 was replayed to the owner");
    assert!(owner.headers().get("idempotent-replayed").is_none());
    // And the admin's retry still gets its own stored refusal.
    let again = app.post("/v1/api_keys", &admin, "k2", &body).await;
    assert_eq!(again.status().as_u16(), 403);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
}

#[tokio::test]
async fn a_key_stored_before_keys_had_principals_is_neither_replayed_nor_run_again() {
    let app = spawn_app().await;
    let business = app.create_business("GB").await;
    let body = json!({ "name": "before the upgrade", "role": "viewer" });
    let first = app.post("/v1/api_keys", &business.owner_key, "legacy-1", &body).await;
    assert_eq!(first.status().as_u16(), 201);
    // As the migration leaves a row written before principals: no principal, no body.
    sqlx::query(
        "UPDATE api.idempotency_keys SET principal = '', principal_role = NULL, response_body = ''::bytea
          WHERE key = 'legacy-1'",
    )
    .execute(&app.owner_pool)
    .await
    .expect("make the row a legacy one");
    let before: i64 =
        sqlx::query_scalar("SELECT count(*) FROM access.api_keys").fetch_one(&app.owner_pool).await.expect("count");
    let retry = app.post("/v1/api_keys", &business.owner_key, "legacy-1", &body).await;
    assert_eq!(retry.status().as_u16(), 422);
    assert_eq!(problem(retry).await["code"], "idempotency_key_reused");
    let after: i64 =
        sqlx::query_scalar("SELECT count(*) FROM access.api_keys").fetch_one(&app.owner_pool).await.expect("count");
    assert_eq!(after, before, "nothing ran again");
}
