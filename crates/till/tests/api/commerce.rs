//! Commerce through the API: the catalog with tax treatments checked against the
//! seller's country, stock that the database keeps from going below what is reserved
//! under concurrent adjustments, and quotes priced and taxed by the engine for UK VAT
//! and India GST, with every bad field named.

use futures::future::join_all;
use serde_json::{json, Value};
use till_testkit::{problem, spawn_app, TestApp};

/// A business with a tax registration: `GB999999973` or a GSTIN.
async fn registered(app: &TestApp, country: &str, registration: &str) -> String {
    let body = json!({"legal_name": format!("Registered {country} Ltd"), "country": country,
                      "tax_registration": registration});
    let response =
        app.post("/v1/platform/businesses", &app.admin_token, &uuid::Uuid::now_v7().to_string(), &body).await;
    assert_eq!(response.status().as_u16(), 201, "creating a registered business");
    let created: Value = response.json().await.expect("json");
    created["api_key"]["secret"].as_str().expect("secret").to_string()
}

async fn post(app: &TestApp, key: &str, path: &str, body: &Value) -> (u16, Value) {
    let response = app.post(path, key, &uuid::Uuid::now_v7().to_string(), body).await;
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Creates a product of a UK business from `extra` fields over a default body.
async fn create(app: &TestApp, key: &str, extra: Value) -> Value {
    let mut body = json!({"name": "Mug", "sku": format!("SKU-{}", uuid::Uuid::now_v7().simple()),
                          "tax_treatment": "standard",
                          "prices": [{"currency": "GBP", "unit_amount": 1000, "tax_inclusive": false}]});
    for (field, value) in extra.as_object().expect("an object") {
        body[field] = value.clone();
    }
    let (status, product) = post(app, key, "/v1/products", &body).await;
    assert_eq!(status, 201, "{product}");
    product
}

/// A UK product at `unit_amount` pence, VAT-exclusive, with treatment `treatment`.
pub async fn product(app: &TestApp, key: &str, treatment: &str, unit_amount: i64) -> Value {
    create(
        app,
        key,
        json!({"tax_treatment": treatment,
               "prices": [{"currency": "GBP", "unit_amount": unit_amount, "tax_inclusive": false}]}),
    )
    .await
}

async fn quote(app: &TestApp, key: &str, body: Value) -> (u16, Value) {
    post(app, key, "/v1/quotes", &body).await
}

fn line(product: &Value, quantity: i64) -> Value {
    json!({"product_id": product["id"], "quantity": quantity})
}

fn taxes(line: &Value) -> Vec<(String, i64)> {
    line["taxes"]
        .as_array()
        .expect("taxes")
        .iter()
        .map(|tax| (tax["kind"].as_str().expect("kind").to_string(), tax["amount"].as_i64().expect("amount")))
        .collect()
}

#[tokio::test]
async fn products_are_created_read_listed_and_updated_with_their_version() {
    let app = spawn_app().await;
    let business = app.create_business("GB").await;
    let key = &business.owner_key;
    let created = create(
        &app,
        key,
        json!({"sku": "MUG-BLUE", "description": "Stoneware, 350 ml", "metadata": {"colour": "blue"},
               "prices": [{"currency": "GBP", "unit_amount": 1200, "tax_inclusive": true},
                          {"currency": "EUR", "unit_amount": 1400, "tax_inclusive": true}]}),
    )
    .await;
    assert!(created["id"].as_str().is_some_and(|id| id.starts_with("prod_")), "{created}");
    assert_eq!(created["version"], 1);
    assert_eq!(created["track_inventory"], true);
    assert_eq!(created["prices"].as_array().map(Vec::len), Some(2));
    let id = created["id"].as_str().expect("id");

    let read: Value = app.get(&format!("/v1/products/{id}"), key).await.json().await.expect("json");
    assert_eq!(read, created, "read back as created");
    let list: Value = app.get("/v1/products?limit=10", key).await.json().await.expect("json");
    assert_eq!(list["data"][0]["id"], created["id"]);
    create(&app, key, json!({})).await;
    let by_sku: Value = app.get("/v1/products?sku=MUG-BLUE", key).await.json().await.expect("json");
    assert_eq!(by_sku["data"].as_array().map(Vec::len), Some(1));
    assert_eq!(by_sku["data"][0]["id"], created["id"]);
    assert_eq!(app.get("/v1/products?sku=..%2Fx", key).await.status().as_u16(), 400);

    // One SKU per business; another business may use it.
    let (status, duplicate) = post(
        &app,
        key,
        "/v1/products",
        &json!({"name": "Mug", "sku": "MUG-BLUE",
        "tax_treatment": "standard", "prices": [{"currency": "GBP", "unit_amount": 1}]}),
    )
    .await;
    assert_eq!(
        (status, duplicate["code"].as_str(), duplicate["param"].as_str()),
        (409, Some("state_conflict"), Some("sku"))
    );
    let other = app.create_business("GB").await;
    create(&app, &other.owner_key, json!({"sku": "MUG-BLUE"})).await;
    let foreign = app.get(&format!("/v1/products/{id}"), &other.owner_key).await;
    assert_eq!(foreign.status().as_u16(), 404, "another business's product is not found");

    let patch = |version: &str, body: Value| {
        app.request(reqwest::Method::PATCH, &format!("/v1/products/{id}"), key)
            .header("If-Match", version)
            .json(&body)
            .send()
    };
    let stale = patch("7", json!({"name": "Blue mug"})).await.expect("patch");
    assert_eq!(stale.status().as_u16(), 412);
    let updated: Value = patch(
        "1",
        json!({"name": "Blue mug", "tax_treatment": "reduced", "description": null,
                                           "prices": [{"currency": "GBP", "unit_amount": 1500}]}),
    )
    .await
    .expect("patch")
    .json()
    .await
    .expect("json");
    assert_eq!(updated["version"], 2, "{updated}");
    assert_eq!(updated["name"], "Blue mug");
    assert_eq!(updated["tax_treatment"], "reduced");
    assert_eq!(updated["description"], Value::Null);
    assert_eq!(updated["sku"], "MUG-BLUE");
    assert_eq!(updated["metadata"]["colour"], "blue", "metadata left out is kept");
    assert_eq!(updated["prices"], json!([{"currency": "GBP", "unit_amount": 1500, "tax_inclusive": false}]));
    let sku_change = patch("2", json!({"sku": "OTHER"})).await.expect("patch");
    assert_eq!(sku_change.status().as_u16(), 400, "a SKU names its stock and never changes");

    // A viewer reads the catalog and cannot change it.
    let viewer = app.create_key(&business, "viewer").await;
    assert_eq!(app.get(&format!("/v1/products/{id}"), &viewer).await.status().as_u16(), 200);
    let (status, _) = post(&app, &viewer, "/v1/products", &json!({})).await;
    assert_eq!(status, 403);
}

#[tokio::test]
async fn a_bad_product_is_refused_naming_its_field_and_nothing_is_kept() {
    let app = spawn_app().await;
    let uk = app.create_business("GB").await;
    let india = registered(&app, "IN", "27AAPFU0939F1ZV").await;
    let good = json!({"name": "Mug", "sku": "MUG-1", "tax_treatment": "standard",
                      "prices": [{"currency": "GBP", "unit_amount": 1000}]});
    let with = |field: &str, value: Value| {
        let mut body = good.clone();
        body[field] = value;
        body
    };
    let cases: Vec<(Value, u16, &str)> = vec![
        (with("name", json!("")), 400, "name"),
        (with("name", json!("   ")), 400, "name"),
        (with("name", json!("Mug\r\nBcc: x@example.com")), 400, "name"),
        (with("name", json!("Mug \u{202E}gpj.exe")), 400, "name"),
        (with("name", json!("x".repeat(100_000))), 400, "name"),
        (with("description", json!("a\u{0}b")), 400, "description"),
        (with("sku", json!("../../etc")), 400, "sku"),
        (with("sku", json!("mug blue")), 400, "sku"),
        (with("sku", json!("ÜBER")), 400, "sku"),
        (with("tax_treatment", json!("luxury")), 400, "tax_treatment"),
        (with("tax_treatment", json!("gst")), 422, "tax_treatment"),
        (with("hsn_code", json!("6109")), 422, "hsn_code"),
        (with("prices", json!([])), 400, "prices"),
        (
            with("prices", json!([{"currency": "GBP", "unit_amount": 1}, {"currency": "GBP", "unit_amount": 2}])),
            422,
            "prices[1].currency",
        ),
        (with("prices", json!([{"currency": "gbp", "unit_amount": 1}])), 400, "prices[0].currency"),
        (with("prices", json!([{"currency": "GBP", "unit_amount": -1}])), 400, "prices[0].unit_amount"),
        (
            with("prices", json!([{"currency": "GBP", "unit_amount": 100_000_000_001_i64}])),
            400,
            "prices[0].unit_amount",
        ),
        (with("metadata", json!({"k": "v\u{0007}"})), 400, "metadata"),
    ];
    for (body, status, param) in cases {
        let response = app.post("/v1/products", &uk.owner_key, &uuid::Uuid::now_v7().to_string(), &body).await;
        assert_eq!(response.status().as_u16(), status, "{body}");
        let refusal = problem(response).await;
        assert_eq!(refusal["param"].as_str(), Some(param), "{refusal}");
    }
    // A float amount and an unknown field are refused before anything is checked.
    for body in [with("prices", json!([{"currency": "GBP", "unit_amount": 10.5}])), with("colour", json!("red"))] {
        let (status, _) = post(&app, &uk.owner_key, "/v1/products", &body).await;
        assert_eq!(status, 400, "{body}");
    }
    let list: Value = app.get("/v1/products", &uk.owner_key).await.json().await.expect("json");
    assert_eq!(list["data"], json!([]), "nothing refused was kept");

    // India: GST with an HSN code and a rate from the table, never a UK treatment.
    let gst = json!({"name": "T-shirt", "sku": "TEE-M", "tax_treatment": "gst", "hsn_code": "61091000",
                     "gst_rate_bps": 500, "prices": [{"currency": "INR", "unit_amount": 49_900, "tax_inclusive": true}]});
    let gst_with = |field: &str, value: Value| {
        let mut body = gst.clone();
        body[field] = value;
        body
    };
    for (body, status, param) in [
        (gst_with("tax_treatment", json!("standard")), 422, "tax_treatment"),
        (gst_with("hsn_code", Value::Null), 422, "hsn_code"),
        (gst_with("hsn_code", json!("61091")), 400, "hsn_code"),
        (gst_with("gst_rate_bps", json!(1000)), 400, "gst_rate_bps"),
        (gst_with("gst_rate_bps", json!(-500)), 400, "gst_rate_bps"),
        (gst_with("gst_rate_bps", Value::Null), 422, "gst_rate_bps"),
    ] {
        let response = app.post("/v1/products", &india, &uuid::Uuid::now_v7().to_string(), &body).await;
        assert_eq!(response.status().as_u16(), status, "{body}");
        assert_eq!(problem(response).await["param"].as_str(), Some(param));
    }
    let (status, tee) = post(&app, &india, "/v1/products", &gst).await;
    assert_eq!(status, 201, "{tee}");
    assert_eq!((tee["hsn_code"].as_str(), tee["gst_rate_bps"].as_i64()), (Some("61091000"), Some(500)));
    // Its rate may change alone; the HSN code stays.
    let id = tee["id"].as_str().expect("id");
    let response = app
        .request(reqwest::Method::PATCH, &format!("/v1/products/{id}"), &india)
        .json(&json!({"gst_rate_bps": 1800}))
        .send()
        .await
        .expect("patch");
    let changed: Value = response.json().await.expect("json");
    assert_eq!((changed["hsn_code"].as_str(), changed["gst_rate_bps"].as_i64()), (Some("61091000"), Some(1800)));
}

#[tokio::test]
async fn stock_never_goes_below_what_is_there_under_concurrent_adjustments() {
    let app = spawn_app().await;
    let business = app.create_business("GB").await;
    let key = &business.owner_key;
    let mug = create(&app, key, json!({"sku": "MUG-STOCK"})).await;
    let inventory: Value = app.get("/v1/inventory/MUG-STOCK", key).await.json().await.expect("json");
    assert_eq!((inventory["on_hand"].as_i64(), inventory["available"].as_i64()), (Some(0), Some(0)));
    assert_eq!(inventory["product_id"], mug["id"]);

    let (status, initial) =
        post(&app, key, "/v1/inventory/MUG-STOCK/adjustments", &json!({"delta": 10, "reason": "initial count"})).await;
    assert_eq!(status, 201, "{initial}");
    assert!(initial["id"].as_str().is_some_and(|id| id.starts_with("mov_")));
    assert_eq!(initial["inventory"]["on_hand"], 10);

    // Twenty concurrent write-offs of one unit: exactly ten can be taken.
    let write_off = json!({"delta": -1, "reason": "damaged"});
    let attempts = (0..20).map(|_| post(&app, key, "/v1/inventory/MUG-STOCK/adjustments", &write_off));
    let outcomes = join_all(attempts).await;
    let taken = outcomes.iter().filter(|(status, _)| *status == 201).count();
    let refused: Vec<&Value> = outcomes.iter().filter(|(status, _)| *status == 409).map(|(_, body)| body).collect();
    assert_eq!((taken, refused.len()), (10, 10), "{outcomes:?}");
    assert!(refused.iter().all(|body| body["code"] == "insufficient_stock" && body["param"] == "delta"));
    let inventory: Value = app.get("/v1/inventory/MUG-STOCK", key).await.json().await.expect("json");
    assert_eq!((inventory["on_hand"].as_i64(), inventory["available"].as_i64()), (Some(0), Some(0)));
    let movements: i64 = sqlx::query_scalar("SELECT count(*) FROM commerce.stock_movements")
        .fetch_one(&app.owner_pool)
        .await
        .expect("count");
    assert_eq!(movements, 11, "one movement per adjustment taken, none for a refusal");
    let history: Value = app.get("/v1/inventory/MUG-STOCK/movements?limit=5", key).await.json().await.expect("json");
    assert_eq!(history["data"].as_array().map(Vec::len), Some(5));
    assert_eq!(history["has_more"], true);
    assert_eq!((history["data"][0]["on_hand"].as_i64(), history["data"][0]["delta"].as_i64()), (Some(0), Some(-1)));
    let cursor = history["next_cursor"].as_str().expect("a cursor");
    let rest: Value = app
        .get(&format!("/v1/inventory/MUG-STOCK/movements?limit=100&starting_after={cursor}"), key)
        .await
        .json()
        .await
        .expect("json");
    let oldest = rest["data"].as_array().and_then(|data| data.last()).cloned().unwrap_or_default();
    assert_eq!((rest["data"].as_array().map(Vec::len), oldest["reason"].as_str()), (Some(6), Some("initial count")));
    let events: i64 = sqlx::query_scalar("SELECT count(*) FROM commerce.outbox WHERE type = 'inventory.adjusted'")
        .fetch_one(&app.owner_pool)
        .await
        .expect("count");
    let logged: i64 = sqlx::query_scalar("SELECT count(*) FROM events.log WHERE type = 'inventory.adjusted'")
        .fetch_one(&app.owner_pool)
        .await
        .expect("count");
    assert_eq!(events + logged, 11, "one event per adjustment taken");

    // The database itself refuses a row that would sell what is not there.
    let forged = sqlx::query("UPDATE commerce.stock SET reserved = on_hand + 1 WHERE sku = 'MUG-STOCK'")
        .execute(&app.owner_pool)
        .await;
    assert!(forged.is_err(), "reserved can never exceed on hand");

    for (body, param, status) in [
        (json!({"delta": 0, "reason": "nothing"}), "delta", 422),
        (json!({"delta": 1_000_000_001_i64, "reason": "a lot"}), "delta", 400),
        (json!({"delta": 1, "reason": ""}), "reason", 400),
        (json!({"delta": 1, "reason": "ok\nforged log line"}), "reason", 400),
    ] {
        let response =
            app.post("/v1/inventory/MUG-STOCK/adjustments", key, &uuid::Uuid::now_v7().to_string(), &body).await;
        assert_eq!(response.status().as_u16(), status, "{body}");
        assert_eq!(problem(response).await["param"].as_str(), Some(param));
    }
    // No stock for a product that does not track it, an unknown SKU or a path that is no SKU.
    create(&app, key, json!({"sku": "GIFT-WRAP", "track_inventory": false})).await;
    for path in ["/v1/inventory/GIFT-WRAP", "/v1/inventory/NOPE", "/v1/inventory/%2E%2E%2Fadmin"] {
        assert_eq!(app.get(path, key).await.status().as_u16(), 404, "{path}");
    }
    let other = app.create_business("GB").await;
    assert_eq!(app.get("/v1/inventory/MUG-STOCK", &other.owner_key).await.status().as_u16(), 404);
}

#[tokio::test]
async fn uk_quotes_round_vat_per_line_half_up_and_report_zero_and_exempt_apart() {
    let app = spawn_app().await;
    let key = registered(&app, "GB", "GB999999973").await;
    let standard = product(&app, &key, "standard", 1000).await;
    let inclusive =
        create(&app, &key, json!({"prices": [{"currency": "GBP", "unit_amount": 1199, "tax_inclusive": true}]})).await;
    let reduced = create(
        &app,
        &key,
        json!({"tax_treatment": "reduced",
        "prices": [{"currency": "GBP", "unit_amount": 1050, "tax_inclusive": true}]}),
    )
    .await;
    let zero = product(&app, &key, "zero", 500).await;
    let exempt = product(&app, &key, "exempt", 700).await;
    let (status, quoted) = quote(
        &app,
        &key,
        json!({"currency": "GBP", "buyer": {"type": "consumer", "country": "GB"},
               "lines": [line(&standard, 3), line(&inclusive, 1), line(&reduced, 1), line(&zero, 2), line(&exempt, 1)]}),
    )
    .await;
    assert_eq!(status, 201, "{quoted}");
    assert!(quoted["id"].as_str().is_some_and(|id| id.starts_with("qt_")));
    let lines = quoted["lines"].as_array().expect("lines");
    // £10.00 × 3 at 20 %: £6.00.
    assert_eq!((lines[0]["net_amount"].as_i64(), lines[0]["tax_amount"].as_i64()), (Some(3000), Some(600)));
    assert_eq!(taxes(&lines[0]), vec![(String::from("vat"), 600)]);
    // £11.99 including VAT: its VAT is 1/6, 199.83p, rounded half up to 200p.
    assert_eq!((lines[1]["net_amount"].as_i64(), lines[1]["tax_amount"].as_i64()), (Some(999), Some(200)));
    assert_eq!(lines[1]["total_amount"], 1199, "an inclusive price is what the buyer pays");
    // £10.50 including VAT at 5 %: 1/21, 50p.
    assert_eq!((lines[2]["net_amount"].as_i64(), lines[2]["tax_amount"].as_i64()), (Some(1000), Some(50)));
    assert_eq!((lines[3]["category"].as_str(), lines[3]["tax_amount"].as_i64()), (Some("zero_rated"), Some(0)));
    assert_eq!((lines[4]["category"].as_str(), lines[4]["rate_bps"].as_i64()), (Some("exempt"), None));
    assert_eq!(lines[4]["tax_amount"], 0);
    assert_eq!(
        (quoted["net_total"].as_i64(), quoted["tax_total"].as_i64(), quoted["total"].as_i64()),
        (Some(6699), Some(850), Some(7549))
    );
    let categories: Vec<&str> = quoted["breakdown"]
        .as_array()
        .expect("breakdown")
        .iter()
        .filter_map(|group| group["category"].as_str())
        .collect();
    for category in ["standard", "reduced", "zero_rated", "exempt"] {
        assert!(categories.contains(&category), "{category} is reported apart: {categories:?}");
    }
    assert_eq!(quoted["vat_rounding"], "line_half_up");
    assert_eq!(quoted["place_of_supply"], Value::Null);
    let id = quoted["id"].as_str().expect("id");
    let read: Value = app.get(&format!("/v1/quotes/{id}"), &key).await.json().await.expect("json");
    assert_eq!(read, quoted, "a quote reads back as it was given");

    // A discount comes off before the tax; the round-down concession is for businesses.
    let (_, discounted) = quote(
        &app,
        &key,
        json!({"currency": "GBP", "buyer": {"type": "consumer", "country": "GB"},
               "lines": [{"product_id": standard["id"], "quantity": 3, "discount": {"percent_bps": 1000}}]}),
    )
    .await;
    let first = &discounted["lines"][0];
    assert_eq!(
        (
            first["gross_amount"].as_i64(),
            first["discount_amount"].as_i64(),
            first["net_amount"].as_i64(),
            first["tax_amount"].as_i64()
        ),
        (Some(3000), Some(300), Some(2700), Some(540))
    );
    let body = |buyer: &str| {
        json!({"currency": "GBP", "buyer": {"type": buyer, "country": "GB"}, "vat_rounding": "invoice_round_down",
               "lines": [line(&standard, 1)]})
    };
    let (status, refusal) = quote(&app, &key, body("consumer")).await;
    assert_eq!((status, refusal["param"].as_str()), (422, Some("vat_rounding")), "{refusal}");
    let (status, concession) = quote(&app, &key, body("business")).await;
    assert_eq!((status, concession["vat_rounding"].as_str()), (201, Some("invoice_round_down")), "{concession}");
}

#[tokio::test]
async fn indian_quotes_charge_cgst_and_sgst_within_a_state_and_igst_across() {
    let app = spawn_app().await;
    // Maharashtra (27).
    let key = registered(&app, "IN", "27AAPFU0939F1ZV").await;
    let (_, tee) = post(
        &app,
        &key,
        "/v1/products",
        &json!({"name": "T-shirt", "sku": "TEE", "tax_treatment": "gst",
        "hsn_code": "61091000", "gst_rate_bps": 500, "prices": [{"currency": "INR", "unit_amount": 1050}]}),
    )
    .await;
    let body = |buyer: Value| json!({"currency": "INR", "buyer": buyer, "lines": [line(&tee, 1)]});

    // ₹10.50 at 5 % within Maharashtra: 2.5 % twice, 26.25 paise each, rounded to 26.
    let (status, intra) =
        quote(&app, &key, body(json!({"type": "consumer", "country": "IN", "state_code": "27"}))).await;
    assert_eq!(status, 201, "{intra}");
    let first = &intra["lines"][0];
    assert_eq!(taxes(first), vec![(String::from("cgst"), 26), (String::from("sgst"), 26)]);
    assert_eq!(first["taxes"][0]["share_bps"], 5000);
    assert_eq!(first["hsn_code"], "61091000");
    assert_eq!(intra["place_of_supply"], json!({"code": "27", "name": "Maharashtra"}));
    assert_eq!(intra["total"], 1102);

    // To a registered buyer in Karnataka (its GSTIN's state): IGST at 5 %, 52.5 → 53 paise,
    // a paisa more than the two halves.
    let (_, inter) =
        quote(&app, &key, body(json!({"type": "business", "country": "IN", "gstin": "29AAPFU0939F1ZR"}))).await;
    assert_eq!(taxes(&inter["lines"][0]), vec![(String::from("igst"), 53)]);
    assert_eq!(inter["place_of_supply"]["code"], "29");
    assert_eq!(inter["buyer"]["state_code"], "29", "the place of supply follows the GSTIN");
    assert_eq!(inter["total"], 1103);

    // An SEZ unit in the seller's own state is still inter-state.
    let (_, sez) =
        quote(&app, &key, body(json!({"type": "business", "country": "IN", "state_code": "27", "sez": true}))).await;
    assert_eq!(taxes(&sez["lines"][0]), vec![(String::from("igst"), 53)]);
    // An export carries no GST.
    let (_, export) = quote(&app, &key, body(json!({"type": "business", "country": "US"}))).await;
    assert_eq!((export["lines"][0]["category"].as_str(), export["tax_total"].as_i64()), (Some("gst_export"), Some(0)));
    assert_eq!(export["place_of_supply"]["code"], "97");

    // A GSTIN and a state code that disagree, or a place of supply not given.
    for (buyer, status, param) in [
        (
            json!({"type": "business", "country": "IN", "gstin": "29AAPFU0939F1ZR", "state_code": "27"}),
            422,
            "buyer.state_code",
        ),
        (json!({"type": "consumer", "country": "IN", "gstin": "29AAPFU0939F1ZR"}), 422, "buyer.gstin"),
        (json!({"type": "business", "country": "IN", "gstin": "29AAPFU0939F1ZX"}), 422, "buyer.gstin"),
        (json!({"type": "consumer", "country": "IN", "state_code": "40"}), 400, "buyer.state_code"),
        (json!({"type": "consumer", "country": "IN"}), 422, "buyer.state_code"),
    ] {
        let (got, refusal) = quote(&app, &key, body(buyer.clone())).await;
        assert_eq!((got, refusal["param"].as_str()), (status, Some(param)), "{buyer}: {refusal}");
    }

    // The September 2025 change, by tax point: 12 % is right on 21 Sep 2025 and refused
    // from the 22nd.
    let (_, laptop) = post(
        &app,
        &key,
        "/v1/products",
        &json!({"name": "Bag", "sku": "BAG", "tax_treatment": "gst",
        "hsn_code": "4202", "gst_rate_bps": 1200, "prices": [{"currency": "INR", "unit_amount": 1000}]}),
    )
    .await;
    let dated = |tax_point: &str| {
        json!({"currency": "INR", "tax_point": tax_point, "lines": [line(&laptop, 1)],
               "buyer": {"type": "consumer", "country": "IN", "state_code": "27"}})
    };
    let (status, before) = quote(&app, &key, dated("2025-09-21")).await;
    assert_eq!(status, 201, "{before}");
    assert_eq!(taxes(&before["lines"][0]), vec![(String::from("cgst"), 60), (String::from("sgst"), 60)]);
    assert_eq!(before["tax_point"], "2025-09-21");
    let (status, after) = quote(&app, &key, dated("2025-09-22")).await;
    assert_eq!((status, after["param"].as_str()), (422, Some("lines[0].product_id")), "{after}");
    // Quoting in another currency than the rupee is refused for a registered seller.
    let (_, dual) = post(
        &app,
        &key,
        "/v1/products",
        &json!({"name": "Cap", "sku": "CAP", "tax_treatment": "gst",
        "hsn_code": "6505", "gst_rate_bps": 500,
        "prices": [{"currency": "INR", "unit_amount": 1000}, {"currency": "USD", "unit_amount": 100}]}),
    )
    .await;
    let (status, refusal) = quote(
        &app,
        &key,
        json!({"currency": "USD", "lines": [line(&dual, 1)],
        "buyer": {"type": "consumer", "country": "IN", "state_code": "27"}}),
    )
    .await;
    assert_eq!((status, refusal["param"].as_str()), (422, Some("currency")), "{refusal}");
}

#[tokio::test]
async fn a_bad_quote_is_refused_naming_its_field_and_nothing_is_kept() {
    let app = spawn_app().await;
    let key = registered(&app, "GB", "GB999999973").await;
    let mug = product(&app, &key, "standard", 1000).await;
    let dear = product(&app, &key, "standard", 100_000_000_000).await;
    let unknown = format!("prod_{}", uuid::Uuid::now_v7().simple());
    let buyer = json!({"type": "consumer", "country": "GB"});
    let with_line = |line: Value| json!({"currency": "GBP", "buyer": buyer, "lines": [line]});
    let mut cases: Vec<(Value, u16, &str)> = vec![
        (with_line(json!({"product_id": mug["id"], "quantity": 0})), 400, "lines[0].quantity"),
        (with_line(json!({"product_id": mug["id"], "quantity": -1})), 400, "lines[0].quantity"),
        (with_line(json!({"product_id": mug["id"], "quantity": 1_000_001})), 400, "lines[0].quantity"),
        (
            with_line(json!({"product_id": mug["id"], "quantity": 1, "discount": {"amount": 1001}})),
            422,
            "lines[0].discount.amount",
        ),
        (
            with_line(json!({"product_id": mug["id"], "quantity": 1, "discount": {"amount": -1}})),
            400,
            "lines[0].discount.amount",
        ),
        (
            with_line(json!({"product_id": mug["id"], "quantity": 1, "discount": {"percent_bps": 10_001}})),
            400,
            "lines[0].discount.percent_bps",
        ),
        (
            with_line(json!({"product_id": mug["id"], "quantity": 1, "discount": {"percent_bps": 10, "amount": 1}})),
            422,
            "lines[0].discount",
        ),
        (with_line(json!({"product_id": unknown, "quantity": 1})), 404, "lines[0].product_id"),
        (with_line(json!({"product_id": "prod_\u{202E}", "quantity": 1})), 400, "lines[0].product_id"),
        (json!({"currency": "INR", "buyer": buyer, "lines": [line(&mug, 1)]}), 422, "lines[0].product_id"),
        (json!({"currency": "GBX", "buyer": buyer, "lines": [line(&mug, 1)]}), 400, "currency"),
        (json!({"currency": "GBP", "buyer": buyer, "lines": []}), 400, "lines"),
        (
            json!({"currency": "GBP", "buyer": {"type": "alien", "country": "GB"}, "lines": [line(&mug, 1)]}),
            400,
            "buyer.type",
        ),
        (
            json!({"currency": "GBP", "buyer": {"type": "consumer", "country": "gb"}, "lines": [line(&mug, 1)]}),
            400,
            "buyer.country",
        ),
        (
            json!({"currency": "GBP", "buyer": {"type": "business", "country": "GB", "gstin": "29AAPFU0939F1ZR"},
                "lines": [line(&mug, 1)]}),
            422,
            "buyer.gstin",
        ),
        (
            json!({"currency": "GBP", "buyer": buyer, "tax_point": "2016-01-01", "lines": [line(&mug, 1)]}),
            422,
            "tax_point",
        ),
        (
            json!({"currency": "GBP", "buyer": buyer, "tax_point": "01/02/2026", "lines": [line(&mug, 1)]}),
            400,
            "tax_point",
        ),
        (
            json!({"currency": "GBP", "buyer": buyer, "vat_rounding": "bankers", "lines": [line(&mug, 1)]}),
            400,
            "vat_rounding",
        ),
    ];
    // A hundred lines of £1 billion × 1 000 000 cannot be added up in 64 bits.
    let huge: Vec<Value> = (0..100).map(|_| line(&dear, 1_000_000)).collect();
    cases.push((json!({"currency": "GBP", "buyer": buyer, "lines": huge}), 422, "lines"));
    for (body, status, param) in cases {
        let response = app.post("/v1/quotes", &key, &uuid::Uuid::now_v7().to_string(), &body).await;
        assert_eq!(response.status().as_u16(), status, "{param}");
        let refusal = problem(response).await;
        assert!(refusal["param"].as_str().is_some_and(|got| got.starts_with(param)), "{param}: {refusal}");
    }
    for body in [
        with_line(json!({"product_id": mug["id"], "quantity": "3"})),
        with_line(json!({"product_id": mug["id"], "quantity": 1.5})),
        with_line(json!({"product_id": mug["id"], "quantity": 1e20})),
        json!({"currency": "GBP", "buyer": buyer, "lines": [line(&mug, 1)], "coupon": "FREE"}),
    ] {
        let (status, _) = quote(&app, &key, body.clone()).await;
        assert_eq!(status, 400, "{body}");
    }
    let kept: i64 =
        sqlx::query_scalar("SELECT count(*) FROM commerce.quotes").fetch_one(&app.owner_pool).await.expect("count");
    assert_eq!(kept, 0, "no refused quote is kept");
    // An inactive product cannot be quoted.
    let id = mug["id"].as_str().expect("id");
    let response = app
        .request(reqwest::Method::PATCH, &format!("/v1/products/{id}"), &key)
        .json(&json!({"active": false}))
        .send()
        .await
        .expect("patch");
    assert_eq!(response.status().as_u16(), 200);
    let (status, refusal) = quote(&app, &key, with_line(line(&mug, 1))).await;
    assert_eq!((status, refusal["param"].as_str()), (422, Some("lines[0].product_id")));
}

/// A tracked product with `units` on hand; returns its SKU.
pub async fn stocked(app: &TestApp, key: &str, units: i64) -> String {
    let product = create(app, key, json!({})).await;
    let sku = product["sku"].as_str().expect("sku").to_string();
    let (status, adjusted) =
        post(app, key, &format!("/v1/inventory/{sku}/adjustments"), &json!({"delta": units, "reason": "count"})).await;
    assert_eq!(status, 201, "{adjusted}");
    sku
}

/// An active reservation of one unit of a new SKU; returns its id.
pub async fn reservation(app: &TestApp, key: &str) -> String {
    let sku = stocked(app, key, 5).await;
    let (status, reserved) = post(app, key, "/v1/reservations", &json!({"lines": [{"sku": sku, "quantity": 1}]})).await;
    assert_eq!(status, 201, "{reserved}");
    reserved["id"].as_str().expect("id").to_string()
}

async fn stock(app: &TestApp, key: &str, sku: &str) -> (i64, i64, i64) {
    let inventory: Value = app.get(&format!("/v1/inventory/{sku}"), key).await.json().await.expect("json");
    let field = |name: &str| inventory[name].as_i64().expect("a count");
    (field("on_hand"), field("reserved"), field("available"))
}

#[tokio::test]
async fn a_reservation_holds_every_line_or_none_and_ends_once() {
    let app = spawn_app().await;
    let business = app.create_business("GB").await;
    let key = &business.owner_key;
    let (mugs, caps) = (stocked(&app, key, 5).await, stocked(&app, key, 2).await);

    // Three caps are not there: nothing is held, not even the mugs.
    let (status, refused) = post(
        &app,
        key,
        "/v1/reservations",
        &json!({"lines": [{"sku": mugs, "quantity": 3}, {"sku": caps, "quantity": 3}]}),
    )
    .await;
    assert_eq!(
        (status, refused["code"].as_str(), refused["param"].as_str()),
        (409, Some("out_of_stock"), Some("lines[1].sku"))
    );
    assert_eq!(stock(&app, key, &mugs).await, (5, 0, 5), "all or nothing");

    let (status, held) = post(
        &app,
        key,
        "/v1/reservations",
        &json!({"reference": "cart 42",
        "lines": [{"sku": mugs, "quantity": 2}, {"sku": caps, "quantity": 2}, {"sku": mugs, "quantity": 1}]}),
    )
    .await;
    assert_eq!(status, 201, "{held}");
    assert!(held["id"].as_str().is_some_and(|id| id.starts_with("rsv_")));
    assert_eq!(held["status"], "active");
    assert_eq!(held["lines"].as_array().map(Vec::len), Some(2), "a SKU named twice is held once: {held}");
    assert_eq!(stock(&app, key, &mugs).await, (5, 3, 2));
    assert_eq!(stock(&app, key, &caps).await, (2, 2, 0));
    // What is reserved cannot be written off.
    let (status, refusal) =
        post(&app, key, &format!("/v1/inventory/{mugs}/adjustments"), &json!({"delta": -3, "reason": "lost"})).await;
    assert_eq!((status, refusal["code"].as_str()), (409, Some("insufficient_stock")));

    let id = held["id"].as_str().expect("id");
    let (status, committed) = post(&app, key, &format!("/v1/reservations/{id}/commit"), &json!({})).await;
    assert_eq!((status, committed["status"].as_str()), (200, Some("committed")), "{committed}");
    assert!(committed["ended_at"].is_string());
    assert_eq!(stock(&app, key, &mugs).await, (2, 0, 2), "sold: on hand and reserved both fall");
    assert_eq!(stock(&app, key, &caps).await, (0, 0, 0));
    let sales: i64 = sqlx::query_scalar("SELECT count(*) FROM commerce.stock_movements WHERE kind = 'sale'")
        .fetch_one(&app.owner_pool)
        .await
        .expect("count");
    assert_eq!(sales, 2, "one sale movement per line");
    let history: Value = app.get(&format!("/v1/inventory/{mugs}/movements"), key).await.json().await.expect("json");
    let newest = &history["data"][0];
    assert_eq!(
        (newest["kind"].as_str(), newest["delta"].as_i64(), newest["on_hand"].as_i64()),
        (Some("sale"), Some(-3), Some(2)),
        "{history}"
    );
    assert!(newest["reason"].as_str().is_some_and(|reason| reason.contains(id)), "the sale names its reservation");
    assert_eq!(history["data"][1]["kind"], "adjustment", "the initial count");
    // A second commit (another request, not a retry) and a release of what was sold are refused.
    let (status, again) = post(&app, key, &format!("/v1/reservations/{id}/commit"), &json!({})).await;
    assert_eq!((status, again["code"].as_str()), (409, Some("state_conflict")));
    let (status, refusal) = post(&app, key, &format!("/v1/reservations/{id}/release"), &json!({})).await;
    assert_eq!((status, refusal["code"].as_str()), (409, Some("state_conflict")));

    // A released reservation gives its units back.
    let (_, second) = post(&app, key, "/v1/reservations", &json!({"lines": [{"sku": mugs, "quantity": 2}]})).await;
    let second_id = second["id"].as_str().expect("id");
    assert_eq!(stock(&app, key, &mugs).await, (2, 2, 0));
    let (status, released) = post(&app, key, &format!("/v1/reservations/{second_id}/release"), &json!({})).await;
    assert_eq!((status, released["status"].as_str()), (200, Some("released")));
    assert_eq!(stock(&app, key, &mugs).await, (2, 0, 2));
    let read: Value = app.get(&format!("/v1/reservations/{second_id}"), key).await.json().await.expect("json");
    assert_eq!(read["status"], "released");
    let listed: Value = app.get("/v1/reservations", key).await.json().await.expect("json");
    assert_eq!(listed["data"][0]["id"], second["id"], "newest first");
    assert_eq!(listed["data"][1]["lines"].as_array().map(Vec::len), Some(2), "with their lines: {listed}");
    let committed: Value = app.get("/v1/reservations?status=committed", key).await.json().await.expect("json");
    let ids: Vec<&str> = committed["data"].as_array().expect("data").iter().filter_map(|r| r["id"].as_str()).collect();
    assert_eq!(ids, vec![id]);
    assert_eq!(app.get("/v1/reservations?status=gone", key).await.status().as_u16(), 400);
    let other = app.create_business("GB").await;
    assert_eq!(app.get(&format!("/v1/reservations/{second_id}"), &other.owner_key).await.status().as_u16(), 404);

    for (body, param, status) in [
        (json!({"lines": []}), "lines", 400),
        (json!({"lines": [{"sku": mugs, "quantity": 0}]}), "lines[0].quantity", 400),
        (json!({"lines": [{"sku": mugs, "quantity": 1_000_001}]}), "lines[0].quantity", 400),
        (
            json!({"lines": [{"sku": mugs, "quantity": 600_000}, {"sku": mugs, "quantity": 600_000}]}),
            "lines[1].quantity",
            422,
        ),
        (json!({"lines": [{"sku": "../x", "quantity": 1}]}), "lines[0].sku", 400),
        (json!({"lines": [{"sku": "NO-SUCH-SKU", "quantity": 1}]}), "lines[0].sku", 404),
        (json!({"lines": [{"sku": mugs, "quantity": 1}], "expires_in_seconds": 0}), "expires_in_seconds", 400),
        (json!({"lines": [{"sku": mugs, "quantity": 1}], "expires_in_seconds": 86_401}), "expires_in_seconds", 400),
        (json!({"lines": [{"sku": mugs, "quantity": 1}], "reference": "a\u{0}b"}), "reference", 400),
    ] {
        let response = app.post("/v1/reservations", key, &uuid::Uuid::now_v7().to_string(), &body).await;
        assert_eq!(response.status().as_u16(), status, "{body}");
        assert_eq!(problem(response).await["param"].as_str(), Some(param), "{body}");
    }
    assert_eq!(stock(&app, key, &mugs).await, (2, 0, 2), "no refusal held anything");
}

#[tokio::test]
async fn concurrent_reservations_of_the_last_units_never_oversell() {
    let app = spawn_app().await;
    let business = app.create_business("GB").await;
    let key = &business.owner_key;
    let sku = stocked(&app, key, 10).await;
    let one = json!({"lines": [{"sku": sku, "quantity": 1}]});
    let outcomes = join_all((0..20).map(|_| post(&app, key, "/v1/reservations", &one))).await;
    let held = outcomes.iter().filter(|(status, _)| *status == 201).count();
    let refused = outcomes.iter().filter(|(status, body)| *status == 409 && body["code"] == "out_of_stock").count();
    assert_eq!((held, refused), (10, 10), "{outcomes:?}");
    assert_eq!(stock(&app, key, &sku).await, (10, 10, 0));
    reserved_matches_active_reservations(&app).await;
}

#[tokio::test]
async fn an_expired_reservation_gives_its_stock_back_and_cannot_be_committed() {
    let app = spawn_app().await;
    let business = app.create_business("GB").await;
    let key = &business.owner_key;
    let sku = stocked(&app, key, 3).await;
    let (status, held) =
        post(&app, key, "/v1/reservations", &json!({"lines": [{"sku": sku, "quantity": 3}], "expires_in_seconds": 1}))
            .await;
    assert_eq!(status, 201, "{held}");
    assert_eq!(stock(&app, key, &sku).await, (3, 3, 0));
    let id = held["id"].as_str().expect("id");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let current: Value = app.get(&format!("/v1/reservations/{id}"), key).await.json().await.expect("json");
        if current["status"] == "expired" {
            assert_eq!(current["version"], 2);
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the sweeper never expired it: {current}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(stock(&app, key, &sku).await, (3, 0, 3), "its units are available again");
    let (status, refusal) = post(&app, key, &format!("/v1/reservations/{id}/commit"), &json!({})).await;
    assert_eq!((status, refusal["code"].as_str()), (409, Some("state_conflict")), "{refusal}");
    let expired: i64 = sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM commerce.outbox WHERE type = 'reservation.expired')
              + (SELECT count(*) FROM events.log WHERE type = 'reservation.expired')",
    )
    .fetch_one(&app.owner_pool)
    .await
    .expect("count");
    assert_eq!(expired, 1, "one event for the one expiry");
}

#[tokio::test]
async fn coupons_come_off_the_order_before_tax_within_their_window_and_limit() {
    let app = spawn_app().await;
    let key = registered(&app, "GB", "GB999999973").await;
    let mug = product(&app, &key, "standard", 1000).await;
    let teapot = product(&app, &key, "standard", 3000).await;
    let (status, summer) = post(&app, &key, "/v1/coupons", &json!({"code": "summer10", "percent_bps": 1000})).await;
    assert_eq!(status, 201, "{summer}");
    assert!(summer["id"].as_str().is_some_and(|id| id.starts_with("cpn_")));
    assert_eq!(summer["code"], "SUMMER10", "codes are upper case");
    let (status, fiver) = post(
        &app,
        &key,
        "/v1/coupons",
        &json!({"code": "FIVER", "amount": 500, "currency": "GBP", "max_redemptions": 1}),
    )
    .await;
    assert_eq!(status, 201, "{fiver}");
    let later = (time::OffsetDateTime::now_utc() + time::Duration::days(1))
        .format(&time::format_description::well_known::Rfc3339)
        .expect("a time");
    let (status, _) =
        post(&app, &key, "/v1/coupons", &json!({"code": "TOMORROW", "percent_bps": 500, "valid_from": later})).await;
    assert_eq!(status, 201);

    let with = |codes: Value, lines: Value| json!({"currency": "GBP", "buyer": {"type": "consumer", "country": "GB"}, "lines": lines, "discount_codes": codes});
    // 10 % off £30.00, then tax on what is left: £27.00 net, £5.40 VAT.
    let (status, quoted) = quote(&app, &key, with(json!(["summer10"]), json!([line(&mug, 3)]))).await;
    assert_eq!(status, 201, "{quoted}");
    assert_eq!(quoted["discount_codes"], json!(["SUMMER10"]));
    assert_eq!(
        (
            quoted["discount_total"].as_i64(),
            quoted["net_total"].as_i64(),
            quoted["tax_total"].as_i64(),
            quoted["total"].as_i64()
        ),
        (Some(300), Some(2700), Some(540), Some(3240))
    );
    // Two codes in order, and a fixed amount spread over the lines in proportion: £5 over
    // £10 and £30 is £1.25 and £3.75.
    let (_, both) = quote(&app, &key, with(json!(["FIVER"]), json!([line(&mug, 1), line(&teapot, 1)]))).await;
    let discounts: Vec<i64> =
        both["lines"].as_array().expect("lines").iter().filter_map(|line| line["discount_amount"].as_i64()).collect();
    assert_eq!(discounts, vec![125, 375], "{both}");
    let (_, stacked) = quote(&app, &key, with(json!(["SUMMER10", "FIVER"]), json!([line(&mug, 3)]))).await;
    assert_eq!((stacked["discount_total"].as_i64(), stacked["net_total"].as_i64()), (Some(800), Some(2200)));

    for (codes, status, param) in [
        (json!(["NOPE99"]), 422, "discount_codes[0]"),
        (json!(["TOMORROW"]), 422, "discount_codes[0]"),
        (json!(["a!"]), 400, "discount_codes[0]"),
        (json!(["FIVER", "fiver"]), 422, "discount_codes[1]"),
        (json!(["A01", "A02", "A03", "A04", "A05", "A06"]), 400, "discount_codes"),
    ] {
        let (got, refusal) = quote(&app, &key, with(codes.clone(), json!([line(&mug, 1)]))).await;
        assert_eq!((got, refusal["param"].as_str()), (status, Some(param)), "{codes}: {refusal}");
    }
    // An inactive coupon no longer applies; the limit cannot go below what was redeemed.
    let id = summer["id"].as_str().expect("id");
    let patch = |version: &str, body: Value| {
        app.request(reqwest::Method::PATCH, &format!("/v1/coupons/{id}"), &key)
            .header("If-Match", version)
            .json(&body)
            .send()
    };
    assert_eq!(patch("9", json!({"active": false})).await.expect("patch").status().as_u16(), 412);
    let off: Value = patch("1", json!({"active": false})).await.expect("patch").json().await.expect("json");
    assert_eq!((off["active"].as_bool(), off["version"].as_i64()), (Some(false), Some(2)));
    let (status, refusal) = quote(&app, &key, with(json!(["SUMMER10"]), json!([line(&mug, 1)]))).await;
    assert_eq!((status, refusal["param"].as_str()), (422, Some("discount_codes[0]")));

    for (body, status, param) in [
        (json!({"code": "ab", "percent_bps": 100}), 400, "code"),
        (json!({"code": "BAD CODE", "percent_bps": 100}), 400, "code"),
        (json!({"code": "BOTH", "percent_bps": 100, "amount": 1, "currency": "GBP"}), 422, "percent_bps"),
        (json!({"code": "NEITHER"}), 422, "percent_bps"),
        (json!({"code": "ZERO", "percent_bps": 0}), 400, "percent_bps"),
        (json!({"code": "NOCUR", "amount": 100}), 422, "currency"),
        (json!({"code": "NEG", "amount": -100, "currency": "GBP"}), 400, "amount"),
        (json!({"code": "WHEN", "percent_bps": 100, "valid_from": "tomorrow"}), 400, "valid_from"),
        (
            json!({"code": "BACKWARDS", "percent_bps": 100, "valid_from": "2027-01-02T00:00:00Z",
                "valid_until": "2027-01-01T00:00:00Z"}),
            422,
            "valid_until",
        ),
        (json!({"code": "LIMIT", "percent_bps": 100, "max_redemptions": 0}), 400, "max_redemptions"),
        (json!({"code": "fiver", "percent_bps": 100}), 409, "code"),
    ] {
        let response = app.post("/v1/coupons", &key, &uuid::Uuid::now_v7().to_string(), &body).await;
        assert_eq!(response.status().as_u16(), status, "{body}");
        assert_eq!(problem(response).await["param"].as_str(), Some(param), "{body}");
    }
    let list: Value = app.get("/v1/coupons", &key).await.json().await.expect("json");
    assert_eq!(list["data"].as_array().map(Vec::len), Some(3));
}

/// Every SKU's `reserved` is exactly what its active reservations hold.
async fn reserved_matches_active_reservations(app: &TestApp) {
    let mismatched: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM commerce.stock s
          WHERE s.reserved <> coalesce((SELECT sum(l.quantity) FROM commerce.reservation_lines l
                                          JOIN commerce.reservations r ON r.id = l.reservation_id
                                         WHERE r.status = 'active' AND l.business_id = s.business_id AND l.sku = s.sku), 0)",
    )
    .fetch_one(&app.owner_pool)
    .await
    .expect("count");
    assert_eq!(mismatched, 0, "reserved is the sum of the active reservations' lines");
}

#[tokio::test]
async fn a_commit_racing_the_sweeper_ends_the_reservation_once() {
    let app = spawn_app().await;
    let business = app.create_business("GB").await;
    let key = &business.owner_key;
    let sku = stocked(&app, key, 100).await;
    let mut ids = Vec::new();
    for _ in 0..5 {
        let (status, held) = post(
            &app,
            key,
            "/v1/reservations",
            &json!({"lines": [{"sku": sku, "quantity": 2}], "expires_in_seconds": 1}),
        )
        .await;
        assert_eq!(status, 201, "{held}");
        ids.push(held["id"].as_str().expect("id").to_string());
    }
    reserved_matches_active_reservations(&app).await;
    // Commits sent around the moment of expiry, while the sweeper runs: each reservation
    // ends as committed or as expired, never both and never twice.
    tokio::time::sleep(std::time::Duration::from_millis(900)).await;
    let app_ref = &app;
    let commits = ids.iter().flat_map(|id| {
        let path = format!("/v1/reservations/{id}/commit");
        (0..4_u64).map(move |attempt| {
            let path = path.clone();
            async move {
                tokio::time::sleep(std::time::Duration::from_millis(50 * attempt)).await;
                post(app_ref, key, &path, &json!({})).await
            }
        })
    });
    let outcomes = join_all(commits).await;
    assert!(outcomes.iter().all(|(status, _)| *status == 200 || *status == 409), "{outcomes:?}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    let mut committed = 0_i64;
    for id in &ids {
        loop {
            let current: Value = app.get(&format!("/v1/reservations/{id}"), key).await.json().await.expect("json");
            if current["status"] != "active" {
                assert_eq!(current["version"], 2, "ended once: {current}");
                let commits_taken =
                    outcomes.iter().filter(|(status, body)| *status == 200 && body["id"] == id.as_str()).count();
                if current["status"] == "committed" {
                    assert_eq!(commits_taken, 1, "one commit took it");
                    committed += 1;
                } else {
                    assert_eq!((current["status"].as_str(), commits_taken), (Some("expired"), 0));
                }
                break;
            }
            assert!(std::time::Instant::now() < deadline, "never ended: {current}");
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }
    assert_eq!(stock(&app, key, &sku).await, (100 - 2 * committed, 0, 100 - 2 * committed));
    reserved_matches_active_reservations(&app).await;
    let endings: i64 = sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM commerce.outbox WHERE type IN ('reservation.committed', 'reservation.expired'))
              + (SELECT count(*) FROM events.log WHERE type IN ('reservation.committed', 'reservation.expired'))",
    )
    .fetch_one(&app.owner_pool)
    .await
    .expect("count");
    assert_eq!(endings, 5, "one ending event per reservation");
}
