//! The simulator's Stripe over HTTP, as an adapter meets it: the flows, the errors, the
//! idempotency and every fault.

use serde_json::{json, Value};

struct Sim {
    base: String,
    client: reqwest::Client,
}

const KEY: &str = "sk_test_simulator";

async fn start() -> Sim {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("address"));
    tokio::spawn(till_sim::serve(listener, std::future::pending()));
    Sim { base, client: reqwest::Client::new() }
}

impl Sim {
    async fn post(&self, path: &str, key: Option<&str>, form: &[(&str, &str)]) -> (u16, Value, bool) {
        let mut request = self.client.post(format!("{}/stripe{path}", self.base)).bearer_auth(KEY).form(form);
        if let Some(key) = key {
            request = request.header("Idempotency-Key", key);
        }
        let response = request.send().await.expect("request");
        let replayed = response.headers().get("idempotent-replayed").is_some();
        (response.status().as_u16(), response.json().await.unwrap_or(Value::Null), replayed)
    }

    async fn control(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut request = self.client.request(method, format!("{}{path}", self.base));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("request");
        (response.status().as_u16(), response.json().await.unwrap_or(Value::Null))
    }

    async fn fault(&self, operation: &str, fault: &str, delay_ms: Option<u64>) {
        let body = json!({"provider": "stripe", "operation": operation, "fault": fault, "delay_ms": delay_ms});
        let (status, reply) = self.control(reqwest::Method::POST, "/_sim/faults", Some(body)).await;
        assert_eq!(status, 201, "{reply}");
    }

    async fn intent(&self, id: &str) -> Value {
        self.control(reqwest::Method::GET, &format!("/_sim/stripe/objects/{id}"), None).await.1
    }
}

#[tokio::test]
async fn authorise_capture_part_and_refund_up_to_what_was_captured() {
    let sim = start().await;
    let (status, created, _) = sim
        .post(
            "/v1/payment_intents",
            Some("c1"),
            &[("amount", "1000"), ("currency", "gbp"), ("capture_method", "manual"), ("metadata[order]", "42")],
        )
        .await;
    assert_eq!(status, 200, "{created}");
    assert_eq!(
        (created["status"].as_str(), created["metadata"]["order"].as_str()),
        (Some("requires_payment_method"), Some("42"))
    );
    let id = created["id"].as_str().expect("id").to_string();
    let (status, confirmed, _) =
        sim.post(&format!("/v1/payment_intents/{id}/confirm"), Some("c2"), &[("payment_method", "pm_card_visa")]).await;
    assert_eq!(
        (status, confirmed["status"].as_str(), confirmed["amount_capturable"].as_i64()),
        (200, Some("requires_capture"), Some(1000))
    );
    let (status, too_much, _) =
        sim.post(&format!("/v1/payment_intents/{id}/capture"), Some("c3"), &[("amount_to_capture", "1001")]).await;
    assert_eq!((status, too_much["error"]["code"].as_str()), (400, Some("amount_too_large")));
    let (status, captured, _) =
        sim.post(&format!("/v1/payment_intents/{id}/capture"), Some("c4"), &[("amount_to_capture", "800")]).await;
    assert_eq!(
        (status, captured["status"].as_str(), captured["amount_received"].as_i64()),
        (200, Some("succeeded"), Some(800))
    );
    assert_eq!(captured["amount_capturable"], 0, "the rest is released");
    let (status, again, _) = sim.post(&format!("/v1/payment_intents/{id}/capture"), Some("c5"), &[]).await;
    assert_eq!((status, again["error"]["code"].as_str()), (400, Some("payment_intent_unexpected_state")));

    // The fee is on the charge's balance transaction: 1.5 % of 800p is 12p, plus 20p.
    let charge = captured["latest_charge"].as_str().expect("charge").to_string();
    let charge = sim.intent(&charge).await;
    let transaction = sim.intent(charge["balance_transaction"].as_str().expect("txn")).await;
    assert_eq!(
        (transaction["amount"].as_i64(), transaction["fee"].as_i64(), transaction["net"].as_i64()),
        (Some(800), Some(32), Some(768))
    );

    for (key, amount) in [("r1", "300"), ("r2", "500")] {
        let (status, refund, _) =
            sim.post("/v1/refunds", Some(key), &[("payment_intent", &id), ("amount", amount)]).await;
        assert_eq!((status, refund["status"].as_str()), (200, Some("succeeded")), "{refund}");
    }
    let (status, over, _) = sim.post("/v1/refunds", Some("r3"), &[("payment_intent", &id), ("amount", "1")]).await;
    assert_eq!((status, over["error"]["param"].as_str()), (400, Some("amount")));
    let charge = sim.intent(charge["id"].as_str().expect("id")).await;
    assert_eq!((charge["amount_refunded"].as_i64(), charge["refunded"].as_bool()), (Some(800), Some(true)));
}

#[tokio::test]
async fn declines_return_the_intent_to_requires_payment_method_with_the_reason() {
    let sim = start().await;
    for (method, decline_code) in [
        ("pm_card_visa_chargeDeclined", "generic_decline"),
        ("pm_card_chargeDeclinedInsufficientFunds", "insufficient_funds"),
    ] {
        let (status, error, _) = sim
            .post(
                "/v1/payment_intents",
                None,
                &[("amount", "500"), ("currency", "gbp"), ("payment_method", method), ("confirm", "true")],
            )
            .await;
        assert_eq!(status, 402, "{error}");
        assert_eq!(
            (error["error"]["type"].as_str(), error["error"]["decline_code"].as_str()),
            (Some("card_error"), Some(decline_code))
        );
        let intent = &error["error"]["payment_intent"];
        assert_eq!(intent["status"], "requires_payment_method");
        assert_eq!(intent["last_payment_error"]["code"], "card_declined");
        // The intent can be retried with another card.
        let id = intent["id"].as_str().expect("id");
        let (status, retried, _) =
            sim.post(&format!("/v1/payment_intents/{id}/confirm"), None, &[("payment_method", "pm_card_visa")]).await;
        assert_eq!((status, retried["status"].as_str()), (200, Some("succeeded")));
    }
}

#[tokio::test]
async fn bad_requests_get_stripes_error_object_and_change_nothing() {
    let sim = start().await;
    let unauthenticated =
        sim.client.post(format!("{}/stripe/v1/payment_intents", sim.base)).send().await.expect("request");
    assert_eq!(unauthenticated.status().as_u16(), 401);
    let live = sim
        .client
        .post(format!("{}/stripe/v1/payment_intents", sim.base))
        .bearer_auth("sk_live_x")
        .send()
        .await
        .expect("request");
    assert_eq!(live.status().as_u16(), 401);
    for (form, param) in [
        (vec![("currency", "gbp")], "amount"),
        (vec![("amount", "0"), ("currency", "gbp")], "amount"),
        (vec![("amount", "12.5"), ("currency", "gbp")], "amount"),
        (vec![("amount", "100"), ("currency", "xyz")], "currency"),
        (vec![("amount", "100"), ("currency", "gbp"), ("payment_method", "pm_nope")], "payment_method"),
        (vec![("amount", "100"), ("currency", "gbp"), ("colour", "red")], "colour"),
    ] {
        let (status, error, _) = sim.post("/v1/payment_intents", None, &form).await;
        assert!(status == 400 || status == 404, "{form:?}: {status}");
        assert_eq!(error["error"]["param"].as_str(), Some(param), "{form:?}: {error}");
    }
    let (status, missing, _) = sim.post("/v1/payment_intents/pi_missing/capture", None, &[]).await;
    assert_eq!((status, missing["error"]["code"].as_str()), (404, Some("resource_missing")));
}

#[tokio::test]
async fn an_idempotency_key_replays_its_first_result_and_refuses_other_parameters() {
    let sim = start().await;
    let form = [("amount", "700"), ("currency", "eur"), ("payment_method", "pm_card_visa"), ("confirm", "true")];
    let (_, first, replayed) = sim.post("/v1/payment_intents", Some("same"), &form).await;
    assert!(!replayed);
    let (status, second, replayed) = sim.post("/v1/payment_intents", Some("same"), &form).await;
    assert_eq!((status, &second, replayed), (200, &first, true));
    let (status, refused, _) =
        sim.post("/v1/payment_intents", Some("same"), &[("amount", "701"), ("currency", "eur")]).await;
    assert_eq!((status, refused["error"]["type"].as_str()), (400, Some("idempotency_error")));
    let calls = sim.control(reqwest::Method::GET, "/_sim/calls?provider=stripe", None).await.1;
    let calls = calls["data"].as_array().expect("calls");
    assert_eq!(calls.len(), 3);
    assert!(calls.iter().all(|call| call["operation"] == "create" && call["idempotency_key"] == "same"));
}

#[tokio::test]
async fn faults_fail_before_or_after_the_effect_and_lie_about_it() {
    let sim = start().await;
    let (_, created, _) = sim
        .post(
            "/v1/payment_intents",
            None,
            &[
                ("amount", "1000"),
                ("currency", "gbp"),
                ("capture_method", "manual"),
                ("payment_method", "pm_card_visa"),
                ("confirm", "true"),
            ],
        )
        .await;
    let id = created["id"].as_str().expect("id").to_string();
    let capture = format!("/v1/payment_intents/{id}/capture");

    // Before the effect: a 500 and a 429 change nothing, and are not saved under the key.
    sim.fault("capture", "error_500", None).await;
    assert_eq!(sim.post(&capture, Some("cap"), &[]).await.0, 500);
    sim.fault("capture", "error_429", None).await;
    let response = sim
        .client
        .post(format!("{}/stripe{capture}", sim.base))
        .bearer_auth(KEY)
        .header("Idempotency-Key", "cap")
        .send()
        .await
        .expect("request");
    assert_eq!(
        (response.status().as_u16(), response.headers().get("retry-after").and_then(|v| v.to_str().ok())),
        (429, Some("1"))
    );
    assert_eq!(sim.intent(&id).await["status"], "requires_capture");

    // After the effect: the capture happens, the reply never comes; the retry with the same
    // key gets the saved result, and the intent holds exactly one capture.
    sim.fault("capture", "timeout_after_effect", Some(200)).await;
    let timed_out = sim
        .client
        .post(format!("{}/stripe{capture}", sim.base))
        .bearer_auth(KEY)
        .header("Idempotency-Key", "cap")
        .send()
        .await
        .expect("request");
    assert_eq!(timed_out.status().as_u16(), 504);
    assert_eq!(sim.intent(&id).await["status"], "succeeded");
    let (status, replay, replayed) = sim.post(&capture, Some("cap"), &[]).await;
    assert_eq!((status, replay["amount_received"].as_i64(), replayed), (200, Some(1000), true));

    // A timeout before the effect applies nothing.
    let (_, other, _) = sim.post("/v1/payment_intents", None, &[("amount", "50"), ("currency", "gbp")]).await;
    let other = other["id"].as_str().expect("id").to_string();
    sim.fault("cancel", "timeout", Some(100)).await;
    assert_eq!(sim.post(&format!("/v1/payment_intents/{other}/cancel"), None, &[]).await.0, 504);
    assert_eq!(sim.intent(&other).await["status"], "requires_payment_method");

    // Lies: the effect is real, the reply is not.
    for (fault, check) in [
        ("wrong_amount", ("amount", json!(1001))),
        ("wrong_currency", ("currency", json!("usd"))),
        ("unknown_status", ("status", json!("requires_reconsideration"))),
    ] {
        sim.fault("retrieve", fault, None).await;
        let response = sim
            .client
            .get(format!("{}/stripe/v1/payment_intents/{id}", sim.base))
            .bearer_auth(KEY)
            .send()
            .await
            .expect("request");
        let body: Value = response.json().await.expect("json");
        assert_eq!(body[check.0], check.1, "{fault}");
    }
    sim.fault("retrieve", "malformed", None).await;
    let response = sim
        .client
        .get(format!("{}/stripe/v1/payment_intents/{id}", sim.base))
        .bearer_auth(KEY)
        .send()
        .await
        .expect("request");
    assert_eq!(response.status().as_u16(), 200);
    assert!(response.json::<Value>().await.is_err(), "a malformed body is not JSON");
    // The truth is unchanged, and the faults were used up.
    let truth = sim.intent(&id).await;
    assert_eq!((truth["amount"].as_i64(), truth["currency"].as_str()), (Some(1000), Some("gbp")));
    assert_eq!(sim.control(reqwest::Method::DELETE, "/_sim/faults", None).await.0, 204);
    let calls = sim.control(reqwest::Method::GET, "/_sim/calls?provider=stripe", None).await.1;
    let faults: Vec<&str> =
        calls["data"].as_array().expect("calls").iter().filter_map(|call| call["fault"].as_str()).collect();
    assert_eq!(
        faults,
        [
            "error_500",
            "error_429",
            "timeout_after_effect",
            "timeout",
            "wrong_amount",
            "wrong_currency",
            "unknown_status",
            "malformed"
        ]
    );
}

#[tokio::test]
async fn the_control_api_refuses_what_it_does_not_know() {
    let sim = start().await;
    let unknown_provider = json!({"provider": "paypal", "operation": "create", "fault": "error_500"});
    assert_eq!(sim.control(reqwest::Method::POST, "/_sim/faults", Some(unknown_provider)).await.0, 400);
    let unknown_fault = json!({"provider": "stripe", "operation": "create", "fault": "gremlins"});
    assert_eq!(sim.control(reqwest::Method::POST, "/_sim/faults", Some(unknown_fault)).await.0, 400);
    assert_eq!(sim.control(reqwest::Method::GET, "/_sim/stripe/objects/pi_nothing", None).await.0, 404);
    assert_eq!(sim.control(reqwest::Method::GET, "/_sim/paypal/objects/x", None).await.0, 404);
}
