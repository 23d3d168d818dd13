//! Checkout through the API, payments through the simulator: an order's saga from the
//! cart to a numbered invoice, and each way it can fail — a decline, a reservation that
//! expires while the gateway is slow, a cancel while the payment is with the gateway —
//! ending with the stock, the payment and the invoices agreeing. And the last units
//! sold to exactly as many checkouts as there are units, with nobody else charged.

use std::time::Duration;

use futures::future::join_all;
use serde_json::{json, Value};
use till_testkit::{problem, spawn_app, TestApp};

/// A business with a tax registration and invoice settings; returns its owner key.
pub async fn seller(app: &TestApp, country: &str, registration: &str) -> String {
    let body = json!({"legal_name": format!("Seller <{country}> & Co"), "country": country,
                      "tax_registration": registration});
    let response =
        app.post("/v1/platform/businesses", &app.admin_token, &uuid::Uuid::now_v7().to_string(), &body).await;
    assert_eq!(response.status().as_u16(), 201, "creating a registered business");
    let created: Value = response.json().await.expect("json");
    let key = created["api_key"]["secret"].as_str().expect("secret").to_string();
    invoice_settings(app, &key).await;
    key
}

pub async fn invoice_settings(app: &TestApp, key: &str) {
    let settings = json!({"address": ["1 High Street", "London", "EC1A 1AA"]});
    let response = app.request(reqwest::Method::PUT, "/v1/invoice_settings", key).json(&settings).send().await;
    assert_eq!(response.expect("put").status().as_u16(), 200, "invoice settings");
}

async fn post(app: &TestApp, key: &str, path: &str, body: &Value) -> (u16, Value) {
    let response = app.post(path, key, &uuid::Uuid::now_v7().to_string(), body).await;
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn get(app: &TestApp, key: &str, path: &str) -> Value {
    let response = app.get(path, key).await;
    assert_eq!(response.status().as_u16(), 200, "GET {path}");
    response.json().await.expect("json")
}

/// A product with `units` in stock; returns its id and SKU.
pub async fn stocked(app: &TestApp, key: &str, units: i64, product: Value) -> (String, String) {
    let (status, created) = post(app, key, "/v1/products", &product).await;
    assert_eq!(status, 201, "{created}");
    let sku = created["sku"].as_str().expect("sku").to_string();
    let (status, adjusted) =
        post(app, key, &format!("/v1/inventory/{sku}/adjustments"), &json!({"delta": units, "reason": "count"})).await;
    assert_eq!(status, 201, "{adjusted}");
    (created["id"].as_str().expect("id").to_string(), sku)
}

fn uk_product(unit_amount: i64) -> Value {
    json!({"name": "Mug <b>blue</b>", "sku": format!("MUG-{}", uuid::Uuid::now_v7().simple()),
           "tax_treatment": "standard",
           "prices": [{"currency": "GBP", "unit_amount": unit_amount, "tax_inclusive": false}]})
}

pub fn uk_checkout(product: &str, quantity: i64, payment_method: &str) -> Value {
    json!({"lines": [{"product_id": product, "quantity": quantity}],
           "customer": {"name": "Ada <script>alert(1)</script>", "email": "ada@example.com",
                        "address": ["2 Low Road", "Leeds"], "country": "GB"},
           "payment_method": payment_method})
}

/// The order once its saga has ended (or the test fails after 30 s).
pub async fn settled(app: &TestApp, key: &str, order: &str) -> Value {
    settled_within(app, key, order, 30).await
}

/// The order once its saga has ended (or the test fails after `seconds`).
async fn settled_within(app: &TestApp, key: &str, order: &str, seconds: u32) -> Value {
    for _ in 0..seconds * 20 {
        let body = get(app, key, &format!("/v1/orders/{order}")).await;
        if body["status"] != "pending" {
            return body;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("order {order} is still pending after {seconds} s: {}", get(app, key, &format!("/v1/orders/{order}")).await)
}

async fn stock(app: &TestApp, key: &str, sku: &str) -> (i64, i64) {
    let inventory = get(app, key, &format!("/v1/inventory/{sku}")).await;
    (inventory["on_hand"].as_i64().expect("on_hand"), inventory["reserved"].as_i64().expect("reserved"))
}

fn steps(order: &Value) -> Vec<(String, String)> {
    order["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .map(|step| {
            (step["step"].as_str().expect("step").to_string(), step["outcome"].as_str().expect("outcome").to_string())
        })
        .collect()
}

fn pairs(expected: &[(&str, &str)]) -> Vec<(String, String)> {
    expected.iter().map(|(step, outcome)| (step.to_string(), outcome.to_string())).collect()
}

/// Waits until the saga has sent the order's payment (it counts the attempt first).
pub async fn sent(app: &TestApp, order: &str) {
    let id = uuid::Uuid::parse_str(order.trim_start_matches("ord_")).expect("an order id");
    for _ in 0..250 {
        let attempts: i32 = sqlx::query_scalar("SELECT attempts FROM commerce.orders WHERE id = $1")
            .bind(id)
            .fetch_one(&app.owner_pool)
            .await
            .expect("attempts");
        if attempts > 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the saga never sent order {order}'s payment");
}

#[tokio::test]
async fn a_uk_checkout_is_captured_its_stock_sold_and_its_invoice_numbered() {
    let app = spawn_app().await;
    let key = seller(&app, "GB", "GB999999973").await;
    let (product, sku) = stocked(&app, &key, 5, uk_product(1000)).await;

    let (status, order) = post(&app, &key, "/v1/checkouts", &uk_checkout(&product, 2, "pm_card_visa")).await;
    assert_eq!(status, 201, "{order}");
    assert_eq!(order["status"], "pending");
    assert_eq!(
        (order["net_total"].as_i64(), order["tax_total"].as_i64(), order["total"].as_i64()),
        (Some(2000), Some(400), Some(2400))
    );
    let id = order["id"].as_str().expect("id");
    let paid = settled(&app, &key, id).await;
    assert_eq!(paid["status"], "paid", "{paid}");
    assert_eq!(
        steps(&paid),
        pairs(&[
            ("quote", "succeeded"),
            ("reserve", "succeeded"),
            ("authorize", "succeeded"),
            ("capture", "succeeded"),
            ("commit", "succeeded"),
            ("invoice", "succeeded")
        ])
    );
    assert_eq!(stock(&app, &key, &sku).await, (3, 0), "two sold, nothing held");

    let intent =
        get(&app, &key, &format!("/v1/payment_intents/{}", paid["payment_intent_id"].as_str().expect("pi"))).await;
    assert_eq!((intent["status"].as_str(), intent["amount_received"].as_i64()), (Some("succeeded"), Some(2400)));
    assert_eq!(intent["capture_method"], "manual");

    let invoice_id = paid["invoice_id"].as_str().expect("invoice");
    let invoice = get(&app, &key, &format!("/v1/invoices/{invoice_id}")).await;
    assert_eq!(invoice["number"], "INV-000001");
    assert_eq!(invoice["kind"], "vat_invoice");
    assert_eq!(invoice["order_id"], paid["id"]);
    assert_eq!(invoice["supplier"]["vat_number"], "GB999999973");
    assert_eq!(invoice["supplier"]["address"][0], "1 High Street");
    assert_eq!(invoice["customer"]["address"], json!(["2 Low Road", "Leeds"]));
    assert_eq!(invoice["lines"][0]["quantity"], 2);
    assert_eq!(invoice["lines"][0]["rate_bps"], 2000);
    assert_eq!(invoice["lines"][0]["taxes"][0]["amount"], 400);
    assert_eq!(
        (invoice["net_total"].as_i64(), invoice["tax_total"].as_i64(), invoice["total"].as_i64()),
        (Some(2000), Some(400), Some(2400))
    );

    let document = app.get(&format!("/v1/invoices/{invoice_id}/document"), &key).await;
    assert_eq!(document.status().as_u16(), 200);
    assert!(document.headers()["content-type"].to_str().expect("type").starts_with("text/html"));
    let html = document.text().await.expect("html");
    assert!(html.contains("INV-000001") && html.contains("GB999999973") && html.contains("GBP 24.00"), "{html}");
    assert!(!html.contains("<script>") && html.contains("Ada &lt;script&gt;"), "customer text is escaped");
    assert!(html.contains("Seller &lt;GB&gt; &amp; Co"), "the supplier's name is escaped");

    // A second sale takes the next number; with simplified invoices chosen, a consumer's
    // sale of £250 or less gets one. A paid order is refunded, not canceled.
    let settings = json!({"address": ["1 High Street"], "simplified_invoices": true});
    let put = app.request(reqwest::Method::PUT, "/v1/invoice_settings", &key).json(&settings).send().await;
    assert_eq!(put.expect("put").status().as_u16(), 200);
    let (_, second) = post(&app, &key, "/v1/checkouts", &uk_checkout(&product, 1, "pm_card_visa")).await;
    let second = settled(&app, &key, second["id"].as_str().expect("id")).await;
    let invoice = get(&app, &key, &format!("/v1/invoices/{}", second["invoice_id"].as_str().expect("invoice"))).await;
    assert_eq!(invoice["number"], "INV-000002");
    assert_eq!(invoice["kind"], "simplified_vat_invoice");
    let cancel = app.post(&format!("/v1/orders/{id}/cancel"), &key, "cancel-paid", &json!({})).await;
    assert_eq!(cancel.status().as_u16(), 409);
    assert_eq!(problem(cancel).await["code"], "state_conflict");
    let listed = get(&app, &key, "/v1/orders?status=paid").await;
    assert_eq!(listed["data"].as_array().map(Vec::len), Some(2));
}

#[tokio::test]
async fn an_indian_checkout_is_paid_by_upi_with_a_tax_invoice_numbered_for_the_financial_year() {
    let app = spawn_app().await;
    let key = seller(&app, "IN", "27AAPFU0939F1ZV").await;
    let product = json!({"name": "Kurta", "sku": format!("KURTA-{}", uuid::Uuid::now_v7().simple()),
                         "tax_treatment": "gst", "hsn_code": "6109", "gst_rate_bps": 500,
                         "prices": [{"currency": "INR", "unit_amount": 100_000, "tax_inclusive": false}]});
    let (product, _) = stocked(&app, &key, 3, product).await;
    let body = json!({"lines": [{"product_id": product, "quantity": 1}],
                      "customer": {"name": "Ravi", "email": "ravi@example.in", "address": ["MG Road", "Bengaluru"],
                                   "country": "IN", "state_code": "29"},
                      "payment_method": {"type": "upi", "vpa": "success@razorpay"}});
    let (status, order) = post(&app, &key, "/v1/checkouts", &body).await;
    assert_eq!(status, 201, "{order}");
    let paid = settled(&app, &key, order["id"].as_str().expect("id")).await;
    assert_eq!(paid["status"], "paid", "{paid}");
    let invoice = get(&app, &key, &format!("/v1/invoices/{}", paid["invoice_id"].as_str().expect("invoice"))).await;
    let today = time::OffsetDateTime::now_utc().to_offset(time::macros::offset!(+5:30)).date();
    // India's financial year starts on 1 April.
    let year = if today.month() >= time::Month::April { today.year() } else { today.year() - 1 };
    assert_eq!(invoice["number"], format!("INV/{year}-{:02}/0001", (year + 1) % 100));
    assert_eq!(invoice["kind"], "tax_invoice");
    assert_eq!(invoice["supplier"]["gstin"], "27AAPFU0939F1ZV");
    assert_eq!(invoice["supplier"]["state"]["name"], "Maharashtra");
    assert_eq!(invoice["place_of_supply"]["code"], "29");
    assert_eq!(invoice["lines"][0]["hsn_code"], "6109");
    // Karnataka from Maharashtra: inter-state, IGST at 5 %.
    assert_eq!(
        invoice["lines"][0]["taxes"],
        json!([{"kind": "igst", "rate_bps": 500, "share_bps": 10000, "amount": 5000}])
    );
    assert_eq!(invoice["total"], 105_000);
}

#[tokio::test]
async fn a_declined_card_fails_the_order_releases_the_stock_and_charges_nothing() {
    let app = spawn_app().await;
    let key = seller(&app, "GB", "GB999999973").await;
    let (product, sku) = stocked(&app, &key, 4, uk_product(1000)).await;
    let (status, order) =
        post(&app, &key, "/v1/checkouts", &uk_checkout(&product, 3, "pm_card_chargeDeclinedInsufficientFunds")).await;
    assert_eq!(status, 201, "{order}");
    let failed = settled(&app, &key, order["id"].as_str().expect("id")).await;
    assert_eq!(failed["status"], "payment_failed", "{failed}");
    assert_eq!(failed["failure"]["code"], "card_declined");
    assert!(failed["failure"]["message"].as_str().expect("message").contains("insufficient_funds"));
    assert!(failed["invoice_id"].is_null());
    assert_eq!(
        steps(&failed),
        pairs(&[("quote", "succeeded"), ("reserve", "succeeded"), ("authorize", "failed"), ("release", "compensated")])
    );
    assert_eq!(stock(&app, &key, &sku).await, (4, 0), "everything available again");
    let reservation =
        get(&app, &key, &format!("/v1/reservations/{}", failed["reservation_id"].as_str().expect("rsv"))).await;
    assert_eq!(reservation["status"], "released");
    let intents = get(&app, &key, "/v1/payment_intents?limit=100").await;
    assert!(intents["data"].as_array().expect("data").iter().all(|intent| intent["amount_received"] == 0));
    let invoices = get(&app, &key, "/v1/invoices").await;
    assert_eq!(invoices["data"], json!([]));
}

#[tokio::test]
async fn fifty_checkouts_for_ten_units_sell_ten_with_consecutive_invoices_and_charge_nobody_else() {
    let app = spawn_app().await;
    let key = seller(&app, "GB", "GB999999973").await;
    let (product, sku) = stocked(&app, &key, 10, uk_product(500)).await;
    let body = uk_checkout(&product, 1, "pm_card_visa");
    let answers = join_all((0..50).map(|_| post(&app, &key, "/v1/checkouts", &body))).await;
    let created: Vec<&Value> = answers.iter().filter(|(status, _)| *status == 201).map(|(_, body)| body).collect();
    let refused: Vec<&Value> = answers.iter().filter(|(status, _)| *status == 409).map(|(_, body)| body).collect();
    assert_eq!((created.len(), refused.len()), (10, 40), "{answers:?}");
    assert!(refused.iter().all(|body| body["code"] == "out_of_stock" && body["param"] == "lines[0].quantity"));
    let mut numbers = Vec::new();
    for order in created {
        let paid = settled(&app, &key, order["id"].as_str().expect("id")).await;
        assert_eq!(paid["status"], "paid", "{paid}");
        let invoice = get(&app, &key, &format!("/v1/invoices/{}", paid["invoice_id"].as_str().expect("invoice"))).await;
        numbers.push(invoice["number"].as_str().expect("number").to_string());
    }
    numbers.sort();
    let expected: Vec<String> = (1..=10).map(|n| format!("INV-{n:06}")).collect();
    assert_eq!(numbers, expected, "ten consecutive numbers, none repeated or skipped");
    assert_eq!(stock(&app, &key, &sku).await, (0, 0));
    let intents = get(&app, &key, "/v1/payment_intents?limit=100").await;
    assert_eq!(intents["data"].as_array().map(Vec::len), Some(10), "only the ten reserved were charged");
    assert!(intents["data"].as_array().expect("data").iter().all(|intent| intent["status"] == "succeeded"));
}

#[tokio::test]
async fn a_reservation_that_expires_while_the_gateway_is_slow_cancels_the_order_and_voids_its_authorisation() {
    let app = spawn_app().await;
    let key = seller(&app, "GB", "GB999999973").await;
    let (product, sku) = stocked(&app, &key, 2, uk_product(1000)).await;
    // The first confirm hangs past the attempt timeout; the retry authorises after the
    // one-second reservation has run out.
    app.arm_fault("stripe", "confirm", "timeout", 1, Some(2_500)).await;
    let mut body = uk_checkout(&product, 2, "pm_card_visa");
    body["expires_in_seconds"] = json!(1);
    let (status, order) = post(&app, &key, "/v1/checkouts", &body).await;
    assert_eq!(status, 201, "{order}");
    let canceled = settled(&app, &key, order["id"].as_str().expect("id")).await;
    assert_eq!(canceled["status"], "canceled", "{canceled}");
    assert_eq!(canceled["failure"]["code"], "reservation_expired");
    let outcomes = steps(&canceled);
    assert!(outcomes.contains(&(String::from("authorize"), String::from("succeeded"))), "{outcomes:?}");
    assert!(outcomes.contains(&(String::from("void"), String::from("compensated"))), "{outcomes:?}");
    let intent =
        get(&app, &key, &format!("/v1/payment_intents/{}", canceled["payment_intent_id"].as_str().expect("pi"))).await;
    assert_eq!((intent["status"].as_str(), intent["amount_received"].as_i64()), (Some("canceled"), Some(0)));
    assert_eq!(stock(&app, &key, &sku).await, (2, 0), "the stock came back with the expiry");
    let reservation =
        get(&app, &key, &format!("/v1/reservations/{}", canceled["reservation_id"].as_str().expect("rsv"))).await;
    assert_eq!(reservation["status"], "expired");
}

#[tokio::test]
async fn a_cancel_while_the_payment_is_with_the_gateway_voids_it_once_it_is_known() {
    let app = spawn_app().await;
    let key = seller(&app, "GB", "GB999999973").await;
    let (product, sku) = stocked(&app, &key, 2, uk_product(1000)).await;
    app.arm_fault("stripe", "confirm", "timeout", 1, Some(2_500)).await;
    let (_, order) = post(&app, &key, "/v1/checkouts", &uk_checkout(&product, 1, "pm_card_visa")).await;
    let id = order["id"].as_str().expect("id");
    sent(&app, id).await;
    let (status, asked) = post(&app, &key, &format!("/v1/orders/{id}/cancel"), &json!({})).await;
    assert_eq!(status, 202, "{asked}");
    assert_eq!(asked["cancel_requested"], true);
    let (again, refused) = post(&app, &key, &format!("/v1/orders/{id}/cancel"), &json!({})).await;
    assert_eq!((again, refused["code"].as_str()), (409, Some("state_conflict")));
    let canceled = settled(&app, &key, id).await;
    assert_eq!(canceled["status"], "canceled", "{canceled}");
    assert_eq!(canceled["failure"]["code"], "canceled_by_request");
    let intent =
        get(&app, &key, &format!("/v1/payment_intents/{}", canceled["payment_intent_id"].as_str().expect("pi"))).await;
    assert_eq!((intent["status"].as_str(), intent["amount_received"].as_i64()), (Some("canceled"), Some(0)));
    assert_eq!(stock(&app, &key, &sku).await, (2, 0));
}

#[tokio::test]
async fn a_bad_checkout_is_refused_naming_its_field_and_nothing_is_kept() {
    let app = spawn_app().await;
    let key = seller(&app, "GB", "GB999999973").await;
    let (product, _) = stocked(&app, &key, 2, uk_product(1000)).await;
    let with = |field: &str, value: Value| {
        let mut body = uk_checkout(&product, 1, "pm_card_visa");
        match field.split_once('.') {
            Some((outer, inner)) => body[outer][inner] = value,
            None => body[field] = value,
        }
        body
    };
    let cases = [
        (with("customer.email", json!("not an email")), 400, "customer.email"),
        (with("customer.name", json!("  ")), 400, "customer.name"),
        (with("customer.address", json!([])), 400, "customer.address"),
        (with("payment_method", json!("card_visa")), 400, "payment_method"),
        (with("payment_method", json!({"type": "upi", "vpa": "success@razorpay"})), 422, "payment_method"),
        (with("lines", json!([{"product_id": product, "quantity": 3}])), 409, "lines[0].quantity"),
        (
            with("lines", json!([{"product_id": "prod_0193aa11bb22cc33dd44ee55ff667788", "quantity": 1}])),
            404,
            "lines[0].product_id",
        ),
        (with("customer.gstin", json!("27AAPFU0939F1ZV")), 422, "customer.gstin"),
    ];
    for (body, status, param) in cases {
        let (got, answer) = post(&app, &key, "/v1/checkouts", &body).await;
        assert_eq!((got, answer["param"].as_str()), (status, Some(param)), "{answer}");
    }
    let orders: i64 =
        sqlx::query_scalar("SELECT count(*) FROM commerce.orders").fetch_one(&app.owner_pool).await.expect("count");
    assert_eq!(orders, 0, "nothing was kept");
    let reserved: i64 = sqlx::query_scalar("SELECT count(*) FROM commerce.reservations")
        .fetch_one(&app.owner_pool)
        .await
        .expect("count");
    assert_eq!(reserved, 0);
    // Without invoice settings a checkout cannot end in an invoice: refused before anything.
    let other = app.create_business("GB").await;
    let (other_product, _) = stocked(&app, &other.owner_key, 2, uk_product(1000)).await;
    let (status, answer) =
        post(&app, &other.owner_key, "/v1/checkouts", &uk_checkout(&other_product, 1, "pm_card_visa")).await;
    assert_eq!((status, answer["code"].as_str()), (422, Some("rule_violated")), "{answer}");
}

/// The order once its last refund has ended (or the test fails after 30 s).
async fn refund_settled(app: &TestApp, key: &str, order: &str) -> Value {
    for _ in 0..600 {
        let body = get(app, key, &format!("/v1/orders/{order}")).await;
        let refunds = body["refunds"].as_array().cloned().unwrap_or_default();
        if refunds.last().is_some_and(|refund| refund["status"] != "pending") {
            return body;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("order {order}'s refund is still pending after 30 s")
}

/// A paid UK order of `quantity` units of a new product at `unit_amount` (VAT 20 %);
/// returns the order and the product's SKU.
pub async fn paid_order(app: &TestApp, key: &str, quantity: i64, unit_amount: i64) -> (Value, String) {
    let (product, sku) = stocked(app, key, quantity, uk_product(unit_amount)).await;
    let (status, order) = post(app, key, "/v1/checkouts", &uk_checkout(&product, quantity, "pm_card_visa")).await;
    assert_eq!(status, 201, "{order}");
    let paid = settled(app, key, order["id"].as_str().expect("id")).await;
    assert_eq!(paid["status"], "paid", "{paid}");
    (paid, sku)
}

#[tokio::test]
async fn a_refund_in_parts_credits_each_unit_once_restocks_and_ends_refunded() {
    let app = spawn_app().await;
    let key = seller(&app, "GB", "GB999999973").await;
    // 3 units at £3.33: net £9.99, VAT £2.00 (1.998 rounded half up), total £11.99.
    let (paid, sku) = paid_order(&app, &key, 3, 333).await;
    let id = paid["id"].as_str().expect("id");
    assert_eq!((paid["net_total"].as_i64(), paid["tax_total"].as_i64()), (Some(999), Some(200)));
    let product = paid["lines"][0]["product_id"].clone();
    assert_eq!(stock(&app, &key, &sku).await, (0, 0));

    let partial = json!({"lines": [{"product_id": product, "quantity": 1}], "restock": true});
    let (status, asked) = post(&app, &key, &format!("/v1/orders/{id}/refund"), &partial).await;
    assert_eq!(status, 202, "{asked}");
    assert_eq!(asked["refunds"][0]["status"], "pending");
    // One unit of three: a third of each amount, half up: 333 net and 67 VAT.
    assert_eq!(asked["refunds"][0]["amount"], 400);
    let order = refund_settled(&app, &key, id).await;
    let refund = &order["refunds"][0];
    assert_eq!(refund["status"], "succeeded", "{order}");
    assert_eq!((order["status"].as_str(), order["amount_refunded"].as_i64()), (Some("paid"), Some(400)));
    assert_eq!(stock(&app, &key, &sku).await, (1, 0), "the unit is back in stock");
    let note = get(&app, &key, &format!("/v1/credit_notes/{}", refund["credit_note_id"].as_str().expect("cn"))).await;
    assert_eq!(note["number"], "CN-000001");
    assert_eq!(note["invoice_id"], paid["invoice_id"]);
    assert_eq!(note["invoice_number"], "INV-000001");
    assert_eq!(
        (note["net_total"].as_i64(), note["tax_total"].as_i64(), note["total"].as_i64()),
        (Some(333), Some(67), Some(400))
    );
    assert_eq!(note["lines"][0]["quantity"], 1);
    let intent =
        get(&app, &key, &format!("/v1/payment_intents/{}", paid["payment_intent_id"].as_str().expect("pi"))).await;
    assert_eq!(intent["amount_refunded"], 400);

    // The rest, not restocked: the two remaining units are worth what the invoice had
    // left, so the credit notes add up to the invoice exactly.
    let (status, _) = post(&app, &key, &format!("/v1/orders/{id}/refund"), &json!({})).await;
    assert_eq!(status, 202);
    let order = refund_settled(&app, &key, id).await;
    assert_eq!((order["status"].as_str(), order["amount_refunded"].as_i64()), (Some("refunded"), Some(1199)));
    let second =
        get(&app, &key, &format!("/v1/credit_notes/{}", order["refunds"][1]["credit_note_id"].as_str().expect("cn")))
            .await;
    assert_eq!(second["number"], "CN-000002");
    assert_eq!(
        (second["net_total"].as_i64(), second["tax_total"].as_i64(), second["total"].as_i64()),
        (Some(666), Some(133), Some(799))
    );
    assert_eq!(stock(&app, &key, &sku).await, (1, 0), "not restocked");
    let document = app.get(&format!("/v1/credit_notes/{}/document", second["id"].as_str().expect("id")), &key).await;
    let html = document.text().await.expect("html");
    assert!(html.contains("Credit note") && html.contains("CN-000002") && html.contains("INV-000001"), "{html}");

    // Nothing is left to refund, and a refunded order is not paid any more.
    let (status, refused) = post(&app, &key, &format!("/v1/orders/{id}/refund"), &json!({})).await;
    assert_eq!((status, refused["code"].as_str()), (409, Some("state_conflict")));
    let movements = get(&app, &key, &format!("/v1/inventory/{sku}/movements")).await;
    let kinds: Vec<&str> =
        movements["data"].as_array().expect("data").iter().filter_map(|m| m["kind"].as_str()).collect();
    assert!(kinds.contains(&"restock") && kinds.contains(&"sale"), "{kinds:?}");
}

#[tokio::test]
async fn a_refund_asking_for_more_than_is_left_is_refused_and_nothing_is_kept() {
    let app = spawn_app().await;
    let key = seller(&app, "GB", "GB999999973").await;
    let (paid, _) = paid_order(&app, &key, 2, 1000).await;
    let id = paid["id"].as_str().expect("id");
    let product = paid["lines"][0]["product_id"].clone();
    let cases = [
        (json!({"lines": [{"product_id": product, "quantity": 3}]}), 422, "lines[0].quantity"),
        (
            json!({"lines": [{"product_id": "prod_0193aa11bb22cc33dd44ee55ff667788", "quantity": 1}]}),
            422,
            "lines[0].product_id",
        ),
        (json!({"lines": [{"product_id": product, "quantity": 0}]}), 400, "lines[0].quantity"),
        (json!({"reason": "bored"}), 400, "reason"),
    ];
    for (body, status, param) in cases {
        let (got, answer) = post(&app, &key, &format!("/v1/orders/{id}/refund"), &body).await;
        assert_eq!((got, answer["param"].as_str()), (status, Some(param)), "{answer}");
    }
    let refunds: i64 = sqlx::query_scalar("SELECT count(*) FROM commerce.order_refunds")
        .fetch_one(&app.owner_pool)
        .await
        .expect("count");
    assert_eq!(refunds, 0);
    // Four concurrent refunds of one unit each, of two: two are taken, one unit each,
    // and the others find nothing left (422), never the same unit twice.
    let one = json!({"lines": [{"product_id": product, "quantity": 1}]});
    let path = format!("/v1/orders/{id}/refund");
    let answers = join_all((0..4).map(|_| post(&app, &key, &path, &one))).await;
    let accepted = answers.iter().filter(|(status, _)| *status == 202).count();
    assert_eq!(accepted, 2, "{answers:?}");
    assert!(answers.iter().all(|(status, _)| *status == 202 || *status == 422));
}

#[tokio::test]
async fn the_vat_return_adds_up_the_invoices_less_the_credit_notes_of_its_period() {
    let app = spawn_app().await;
    let key = seller(&app, "GB", "GB999999973").await;
    let (standard, _) = stocked(&app, &key, 5, uk_product(1000)).await;
    let mut zero = uk_product(500);
    zero["tax_treatment"] = json!("zero");
    let (zero, _) = stocked(&app, &key, 5, zero).await;
    let mut body = uk_checkout(&standard, 2, "pm_card_visa");
    body["lines"] = json!([{"product_id": standard, "quantity": 2}, {"product_id": zero, "quantity": 1}]);
    let (_, order) = post(&app, &key, "/v1/checkouts", &body).await;
    let id = order["id"].as_str().expect("id");
    let paid = settled(&app, &key, id).await;
    assert_eq!((paid["net_total"].as_i64(), paid["tax_total"].as_i64()), (Some(2500), Some(400)), "{paid}");
    let one = json!({"lines": [{"product_id": standard, "quantity": 1}]});
    let (status, _) = post(&app, &key, &format!("/v1/orders/{id}/refund"), &one).await;
    assert_eq!(status, 202);
    refund_settled(&app, &key, id).await;

    let today = time::OffsetDateTime::now_utc().date();
    let (from, to) = (today.previous_day().expect("yesterday"), today.next_day().expect("tomorrow"));
    let report = get(&app, &key, &format!("/v1/reports/vat_return?from={from}&to={to}")).await;
    let boxes = &report["boxes"];
    // VAT: 400 on the invoice less 200 on the credit note; sales: 25.00 less 10.00 net.
    assert_eq!(
        (boxes["box_1"].as_i64(), boxes["box_3"].as_i64(), boxes["box_5"].as_i64()),
        (Some(200), Some(200), Some(200))
    );
    assert_eq!(boxes["box_6"], 1500);
    for zero_box in ["box_2", "box_4", "box_7", "box_8", "box_9"] {
        assert_eq!(boxes[zero_box], 0, "{zero_box}");
    }
    let documents = report["documents"].as_array().expect("documents");
    assert_eq!(documents.len(), 2);
    assert_eq!((documents[0]["kind"].as_str(), documents[0]["vat_amount"].as_i64()), (Some("invoice"), Some(400)));
    assert_eq!((documents[1]["kind"].as_str(), documents[1]["vat_amount"].as_i64()), (Some("credit_note"), Some(-200)));

    // A day with nothing issued has nothing in its boxes.
    let before = today.saturating_sub(time::Duration::days(30));
    let empty = get(&app, &key, &format!("/v1/reports/vat_return?from={before}&to={before}")).await;
    assert_eq!(empty["boxes"]["box_1"], 0);
    for (query, status) in [(format!("from={to}&to={from}"), 422), (String::from("from=2026-13-01&to=2026-12-31"), 400)]
    {
        let response = app.get(&format!("/v1/reports/vat_return?{query}"), &key).await;
        assert_eq!(response.status().as_u16(), status, "{query}");
    }
}

#[tokio::test]
async fn gstr1_sorts_a_months_invoices_into_b2b_b2c_large_and_b2c_small_with_the_hsn_summary() {
    let app = spawn_app().await;
    let key = seller(&app, "IN", "27AAPFU0939F1ZV").await;
    let product = json!({"name": "Kurta", "sku": format!("KURTA-{}", uuid::Uuid::now_v7().simple()),
                         "tax_treatment": "gst", "hsn_code": "6109", "gst_rate_bps": 500,
                         "prices": [{"currency": "INR", "unit_amount": 100_000, "tax_inclusive": false}]});
    let (product, _) = stocked(&app, &key, 200, product).await;
    let checkout = |quantity: i64, customer: Value| {
        json!({"lines": [{"product_id": product, "quantity": quantity}], "customer": customer,
               "payment_method": {"type": "upi", "vpa": "success@razorpay"}})
    };
    let registered = json!({"name": "Bengaluru Traders", "email": "a@b.in", "address": ["Bengaluru"], "country": "IN",
                            "gstin": "29AAPFU0939F1ZR"});
    let far = json!({"name": "Ravi", "email": "r@b.in", "address": ["Mysuru"], "country": "IN", "state_code": "29"});
    let near = json!({"name": "Asha", "email": "s@b.in", "address": ["Pune"], "country": "IN", "state_code": "27"});
    let mut orders = Vec::new();
    for body in [checkout(1, registered), checkout(100, far), checkout(2, near)] {
        let (status, order) = post(&app, &key, "/v1/checkouts", &body).await;
        assert_eq!(status, 201, "{order}");
        let paid = settled(&app, &key, order["id"].as_str().expect("id")).await;
        assert_eq!(paid["status"], "paid", "{paid}");
        orders.push(paid);
    }
    let small = orders[2]["id"].as_str().expect("id");
    let one = json!({"lines": [{"product_id": product, "quantity": 1}]});
    let (status, _) = post(&app, &key, &format!("/v1/orders/{small}/refund"), &one).await;
    assert_eq!(status, 202);
    refund_settled(&app, &key, small).await;

    let month = time::OffsetDateTime::now_utc().to_offset(time::macros::offset!(+5:30)).date();
    let period = format!("{}-{:02}", month.year(), u8::from(month.month()));
    let report = get(&app, &key, &format!("/v1/reports/gstr1?period={period}")).await;
    assert_eq!(report["gstin"], "27AAPFU0939F1ZV");
    let b2b = report["b2b"].as_array().expect("b2b");
    assert_eq!(b2b.len(), 1);
    assert_eq!(b2b[0]["gstin"], "29AAPFU0939F1ZR");
    assert_eq!(
        b2b[0]["items"],
        json!([{"rate_bps": 500, "taxable_value": 100_000, "igst": 5_000, "cgst": 0, "sgst": 0}])
    );
    // Inter-state to an unregistered buyer above ₹1,00,000: B2C large, invoice by invoice.
    let b2cl = report["b2cl"].as_array().expect("b2cl");
    assert_eq!(
        (b2cl.len(), b2cl[0]["value"].as_i64(), b2cl[0]["place_of_supply"].as_str()),
        (1, Some(10_500_000), Some("29"))
    );
    // Within the state: B2C small, net of its credit note (2 units less 1).
    assert_eq!(
        report["b2cs"],
        json!([{"place_of_supply": "27", "supply_type": "intra", "rate_bps": 500, "taxable_value": 100_000,
                "igst": 0, "cgst": 2_500, "sgst": 2_500}])
    );
    assert_eq!(report["cdnr"], json!([]));
    let hsn = report["hsn"].as_array().expect("hsn");
    assert_eq!((hsn.len(), hsn[0]["hsn_code"].as_str(), hsn[0]["quantity"].as_i64()), (1, Some("6109"), Some(102)));
    assert_eq!(hsn[0]["taxable_value"], 10_200_000);
    // A UK business has no GSTR-1, an Indian one no VAT return.
    let uk = seller(&app, "GB", "GB999999973").await;
    assert_eq!(app.get(&format!("/v1/reports/gstr1?period={period}"), &uk).await.status().as_u16(), 422);
    assert_eq!(app.get("/v1/reports/vat_return?from=2026-12-01&to=2026-12-31", &key).await.status().as_u16(), 422);
}

#[tokio::test]
async fn a_capture_whose_reply_is_lost_is_settled_with_the_same_key_and_captured_once() {
    let app = spawn_app().await;
    let key = seller(&app, "GB", "GB999999973").await;
    let (product, _) = stocked(&app, &key, 2, uk_product(1000)).await;
    app.arm_fault("stripe", "capture", "timeout_after_effect", 1, Some(2_500)).await;
    let (_, order) = post(&app, &key, "/v1/checkouts", &uk_checkout(&product, 1, "pm_card_visa")).await;
    let paid = settled(&app, &key, order["id"].as_str().expect("id")).await;
    assert_eq!(paid["status"], "paid", "{paid}");
    let captures = app.sim_calls("stripe", "capture").await;
    assert!(captures.len() >= 2, "the lost reply was asked for again: {captures:?}");
    let keys: std::collections::BTreeSet<&str> =
        captures.iter().filter_map(|call| call["idempotency_key"].as_str()).collect();
    assert_eq!(keys.len(), 1, "every capture call had the same key: {keys:?}");
    let intent =
        get(&app, &key, &format!("/v1/payment_intents/{}", paid["payment_intent_id"].as_str().expect("pi"))).await;
    assert_eq!((intent["status"].as_str(), intent["amount_received"].as_i64()), (Some("succeeded"), Some(1200)));
}

#[tokio::test]
async fn invoice_numbers_restart_each_financial_year_and_a_rolled_back_number_is_given_again() {
    let app = spawn_app().await;
    let business = app.create_business("IN").await;
    let id = till_kit::BusinessId::parse(&business.id).expect("a business id");
    let next = |period: i32, commit: bool| {
        let pool = app.pool.clone();
        async move {
            let mut tx = till_db::begin_tenant(&pool, id).await.expect("tx");
            let number =
                till_commerce::store::next_sequence(&mut tx, id, "invoice", "INV", period).await.expect("next");
            if commit {
                tx.commit().await.expect("commit");
            } else {
                tx.rollback().await.expect("rollback");
            }
            number
        }
    };
    assert_eq!((next(2025, true).await, next(2025, true).await), (1, 2));
    // A new financial year starts at 1; the old one goes on from where it was.
    assert_eq!((next(2026, true).await, next(2025, true).await), (1, 3));
    // A transaction that rolls back takes its number with it: no gap.
    assert_eq!(next(2026, false).await, 2);
    assert_eq!(next(2026, true).await, 2);
    // 20 at once: 20 consecutive numbers.
    let mut numbers = join_all((0..20).map(|_| next(2027, true))).await;
    numbers.sort_unstable();
    assert_eq!(numbers, (1..=20).collect::<Vec<i64>>());
    let texts: Vec<String> = [1, 9_999]
        .iter()
        .map(|n| {
            till_commerce::invoices::document_number(till_access::domain::Country::IN, "INV", 2026, *n).expect("fits")
        })
        .collect();
    assert_eq!(texts, ["INV/2026-27/0001", "INV/2026-27/9999"]);
}

#[tokio::test]
async fn a_cancel_that_meets_a_capture_already_made_leaves_the_order_paid_once() {
    let mut config = till_testkit::test_config();
    // Payments' recovery job settles a capture nobody retried within seconds.
    config.recovery =
        till_http::recovery::RecoveryConfig { lease: Duration::from_secs(3), grace: Duration::from_secs(1) };
    let app = till_testkit::spawn_app_with(config, Default::default()).await;
    let key = seller(&app, "GB", "GB999999973").await;
    let (product, sku) = stocked(&app, &key, 2, uk_product(1000)).await;
    // Every capture attempt applies the capture and loses the reply, so payments cannot
    // say whether it happened (202): twice three attempts, so that the saga's own retry
    // of the capture is still undecided when the cancel arrives; payments' recovery job
    // then settles it.
    app.arm_fault("stripe", "capture", "timeout_after_effect", 6, Some(2_500)).await;
    let (_, order) = post(&app, &key, "/v1/checkouts", &uk_checkout(&product, 1, "pm_card_visa")).await;
    let id = order["id"].as_str().expect("id");
    for _ in 0..300 {
        let current = get(&app, &key, &format!("/v1/orders/{id}")).await;
        if steps(&current).iter().any(|(step, outcome)| step == "capture" && outcome == "retrying") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, asked) = post(&app, &key, &format!("/v1/orders/{id}/cancel"), &json!({})).await;
    assert_eq!(status, 202, "{asked}");
    let paid = settled_within(&app, &key, id, 90).await;
    assert_eq!(paid["status"], "paid", "the customer paid: {paid}");
    assert!(steps(&paid).contains(&(String::from("void"), String::from("failed"))), "{paid}");
    assert!(paid["invoice_id"].is_string());
    let intent =
        get(&app, &key, &format!("/v1/payment_intents/{}", paid["payment_intent_id"].as_str().expect("pi"))).await;
    assert_eq!((intent["status"].as_str(), intent["amount_received"].as_i64()), (Some("succeeded"), Some(1200)));
    assert_eq!(stock(&app, &key, &sku).await, (1, 0), "sold once");
}

#[tokio::test]
async fn a_capture_the_gateway_refuses_fails_the_order_releases_the_stock_and_charges_nothing() {
    let app = spawn_app().await;
    let key = seller(&app, "GB", "GB999999973").await;
    let (product, sku) = stocked(&app, &key, 2, uk_product(1000)).await;
    // The first two capture requests time out (no effect) on each of their three
    // attempts, and meanwhile the authorisation is canceled at the gateway itself (as an
    // expired one is): the capture after them is refused. (Two, so that the saga's short
    // first backoff cannot capture before the cancel lands.)
    app.arm_fault("stripe", "capture", "timeout", 6, Some(2_500)).await;
    let (_, order) = post(&app, &key, "/v1/checkouts", &uk_checkout(&product, 1, "pm_card_visa")).await;
    let id = order["id"].as_str().expect("id");
    let mut intent_id = String::new();
    for _ in 0..600 {
        let current = get(&app, &key, &format!("/v1/orders/{id}")).await;
        if steps(&current).iter().any(|(step, outcome)| step == "capture" && outcome == "retrying") {
            intent_id = current["payment_intent_id"].as_str().expect("pi").to_string();
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!intent_id.is_empty(), "the capture never waited");
    let intent = get(&app, &key, &format!("/v1/payment_intents/{intent_id}")).await;
    let at_stripe = intent["gateway_intent_id"].as_str().expect("Stripe's id");
    let canceled = app
        .client
        .post(format!("{}/stripe/v1/payment_intents/{at_stripe}/cancel", app.sim))
        .bearer_auth("sk_test_till_testkit")
        .send()
        .await
        .expect("cancel at Stripe");
    assert!(canceled.status().is_success(), "{:?}", canceled.status());

    let failed = settled_within(&app, &key, id, 90).await;
    assert_eq!(failed["status"], "payment_failed", "{failed}");
    assert_eq!(failed["failure"]["code"], "capture_failed");
    let outcomes = steps(&failed);
    assert!(outcomes.contains(&(String::from("capture"), String::from("failed"))), "{outcomes:?}");
    assert!(outcomes.iter().any(|(step, _)| step == "void"), "{outcomes:?}");
    assert!(failed["invoice_id"].is_null());
    assert_eq!(stock(&app, &key, &sku).await, (2, 0), "the stock is available again");
    let intent = get(&app, &key, &format!("/v1/payment_intents/{intent_id}")).await;
    assert_eq!(intent["amount_received"], 0, "nothing was charged");
}
