//! The Stripe adapter against Till's simulator over loopback HTTP: the real adapter, the
//! real outbound kit, the provider's real shapes, and every fault the simulator injects.

use std::time::Duration;

use serde_json::{json, Value};
use till_kit::{Currency, Money, Secret};
use till_outbound::{Credentials, DependencyConfig, OutboundError, Url};
use till_payments::gateway::stripe::{Stripe, NAMES};
use till_payments::gateway::{Answer, CaptureMethod, Gateway as _, GatewayStatus, NewIntent, PaymentMethod};

fn card(id: &str) -> PaymentMethod {
    PaymentMethod::Card(id.to_string())
}

fn gbp(minor: i64) -> Money {
    Money::from_minor(minor, Currency::parse("GBP").expect("GBP"))
}

struct Harness {
    base: String,
    stripe: Stripe,
    control: reqwest_lite::Client,
}

/// The few control calls the tests make, over a plain TCP connection (this crate holds no
/// HTTP client: only the outbound kit does).
mod reqwest_lite {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    pub struct Client {
        pub address: String,
    }

    impl Client {
        pub async fn send(
            &self,
            method: &str,
            path: &str,
            body: Option<&serde_json::Value>,
        ) -> (u16, serde_json::Value) {
            let body = body.map(|body| body.to_string()).unwrap_or_default();
            let mut stream = tokio::net::TcpStream::connect(&self.address).await.expect("connect");
            let request = format!(
                "{method} {path} HTTP/1.1\r\nHost: sim\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            stream.write_all(request.as_bytes()).await.expect("write");
            let mut response = Vec::new();
            stream.read_to_end(&mut response).await.expect("read");
            let text = String::from_utf8_lossy(&response).into_owned();
            let status = text.split_whitespace().nth(1).and_then(|code| code.parse().ok()).unwrap_or(0);
            let body = text.split_once("\r\n\r\n").map(|(_, body)| body).unwrap_or_default();
            (status, serde_json::from_str(body).unwrap_or(serde_json::Value::Null))
        }
    }
}

async fn harness() -> Harness {
    harness_with_breaker(20).await
}

/// With a breaker that judges after `minimum_calls` calls (the kit's default is 20).
async fn harness_with_breaker(minimum_calls: u32) -> Harness {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address").to_string();
    tokio::spawn(till_sim::serve(listener, std::future::pending()));
    let base = format!("http://{address}/stripe/");
    let mut config = DependencyConfig::new(
        NAMES,
        Url::parse(&base).expect("url"),
        Credentials::Bearer(Secret::new("sk_test_adapter".to_string())),
    );
    config.attempt_timeout = Duration::from_millis(500);
    // A small base keeps retries quick; the cap bounds how long a Retry-After is honoured.
    config.backoff = till_outbound::backoff::Backoff { base: Duration::from_millis(10), cap: Duration::from_secs(2) };
    config.breaker.minimum_calls = minimum_calls;
    config.breaker.open_for = Duration::from_millis(300);
    config.breaker.half_open_trials = 1;
    let stripe = Stripe::with_config(config).expect("adapter");
    Harness { base, stripe, control: reqwest_lite::Client { address } }
}

impl Harness {
    async fn fault(&self, operation: &str, fault: &str, count: u32, delay_ms: Option<u64>) {
        let body =
            json!({"provider": "stripe", "operation": operation, "fault": fault, "count": count, "delay_ms": delay_ms});
        assert_eq!(self.control.send("POST", "/_sim/faults", Some(&body)).await.0, 201);
    }

    async fn object(&self, id: &str) -> Value {
        self.control.send("GET", &format!("/_sim/stripe/objects/{id}"), None).await.1
    }

    async fn calls(&self, operation: &str) -> Vec<Value> {
        let calls = self.control.send("GET", "/_sim/calls?provider=stripe", None).await.1;
        calls["data"].as_array().expect("calls").iter().filter(|call| call["operation"] == operation).cloned().collect()
    }

    async fn authorised(&self, amount: i64, key: &str) -> String {
        let new = NewIntent {
            amount: gbp(amount),
            capture_method: CaptureMethod::Manual,
            reference: format!("pi_till_{key}"),
            description: None,
        };
        let Answer::Done(created) = self.stripe.create(&new, &format!("{key}:create")).await.expect("create") else {
            panic!("create")
        };
        assert_eq!(created.status, GatewayStatus::RequiresPaymentMethod);
        let Answer::Done(confirmed) = self
            .stripe
            .confirm(&created.id, gbp(amount), &card("pm_card_visa"), None, &format!("{key}:confirm"))
            .await
            .expect("confirm")
        else {
            panic!("confirm")
        };
        assert_eq!((confirmed.status, confirmed.capturable), (GatewayStatus::RequiresCapture, gbp(amount)));
        created.id
    }
}

#[tokio::test]
async fn authorise_capture_refund_and_read_the_fee() {
    let h = harness().await;
    let id = h.authorised(1000, "flow").await;
    let Answer::Done(captured) =
        h.stripe.capture(&id, gbp(1000), Some(gbp(800)), "flow:capture").await.expect("capture")
    else {
        panic!("capture")
    };
    assert_eq!((captured.status, captured.received, captured.capturable), (GatewayStatus::Succeeded, gbp(800), gbp(0)));
    let fee = h.stripe.fee(captured.charge.as_deref().expect("charge"), gbp(0).currency()).await.expect("fee");
    assert_eq!(fee, gbp(32), "1.5 % of 800p is 12p, plus 20p");
    let Answer::Done(refund) = h.stripe.refund(&id, None, gbp(300), "flow:refund:1").await.expect("refund") else {
        panic!("refund")
    };
    assert_eq!(refund.amount, gbp(300));
    let Answer::Refused(refusal) = h.stripe.refund(&id, None, gbp(501), "flow:refund:2").await.expect("answer") else {
        panic!("an over-refund was not refused")
    };
    assert_eq!(refusal.param.as_deref(), Some("amount"));
    let Answer::Refused(refusal) = h.stripe.capture(&id, gbp(1000), None, "flow:capture:again").await.expect("answer")
    else {
        panic!("a second capture was not refused")
    };
    assert_eq!(refusal.code.as_deref(), Some("payment_intent_unexpected_state"));
}

#[tokio::test]
async fn a_declined_card_leaves_the_intent_waiting_for_another() {
    let h = harness().await;
    let new = NewIntent {
        amount: gbp(500),
        capture_method: CaptureMethod::Automatic,
        reference: "pi_till_d".into(),
        description: None,
    };
    let Answer::Done(created) = h.stripe.create(&new, "d:create").await.expect("create") else { panic!("create") };
    let answer = h
        .stripe
        .confirm(&created.id, gbp(500), &card("pm_card_chargeDeclinedInsufficientFunds"), None, "d:confirm")
        .await
        .expect("answer");
    let Answer::Declined { decline, intent } = answer else { panic!("not declined: {answer:?}") };
    assert_eq!((decline.code.as_str(), decline.decline_code.as_deref()), ("card_declined", Some("insufficient_funds")));
    assert_eq!(intent.status, GatewayStatus::RequiresPaymentMethod);
    let Answer::Done(paid) =
        h.stripe.confirm(&created.id, gbp(500), &card("pm_card_visa"), None, "d:confirm:2").await.expect("confirm")
    else {
        panic!("second card")
    };
    assert_eq!((paid.status, paid.received), (GatewayStatus::Succeeded, gbp(500)));
}

/// A capture whose reply is lost after Stripe applied it: the kit retries with the same
/// key, Stripe answers with the saved result, and Stripe holds exactly one capture.
#[tokio::test]
async fn a_reply_lost_after_the_effect_is_settled_by_the_same_key() {
    let h = harness().await;
    let id = h.authorised(1000, "lost").await;
    h.fault("capture", "timeout_after_effect", 1, Some(2_000)).await;
    let Answer::Done(captured) = h.stripe.capture(&id, gbp(1000), None, "lost:capture").await.expect("capture") else {
        panic!("capture")
    };
    assert_eq!(captured.received, gbp(1000));
    let calls = h.calls("capture").await;
    assert_eq!(calls.len(), 2, "the attempt that timed out and its retry");
    assert!(calls.iter().all(|call| call["idempotency_key"] == "lost:capture"), "one key for one effect: {calls:?}");
    let charge = h.object(captured.charge.as_deref().expect("charge")).await;
    assert_eq!(charge["amount_captured"], 1000);
}

#[tokio::test]
async fn lying_and_malformed_replies_are_never_acted_on() {
    let h = harness().await;
    let id = h.authorised(1000, "lies").await;
    for fault in ["wrong_amount", "wrong_currency", "unknown_status", "malformed"] {
        h.fault("retrieve", fault, 1, None).await;
        let error = h.stripe.retrieve(&id, gbp(1000)).await.expect_err(fault);
        assert!(matches!(error, OutboundError::InvalidReply { .. }), "{fault}: {error}");
        assert!(error.may_have_acted());
    }
    let Answer::Done(truth) = h.stripe.retrieve(&id, gbp(1000)).await.expect("retrieve") else { panic!("retrieve") };
    assert_eq!(truth.status, GatewayStatus::RequiresCapture);
}

/// An outage opens the breaker: calls then fail at once with nothing sent, until the
/// half-open trial succeeds. A 429 is retried after its Retry-After.
#[tokio::test]
async fn an_outage_opens_the_breaker_and_nothing_is_sent_while_it_is_open() {
    let h = harness_with_breaker(4).await;
    let id = h.authorised(1000, "outage").await;
    h.fault("retrieve", "error_500", 1_000, None).await;
    let mut unavailable_after = None;
    for attempt in 0..10 {
        match h.stripe.retrieve(&id, gbp(1000)).await {
            Err(OutboundError::Unavailable { .. }) => {
                unavailable_after = Some(attempt);
                break;
            }
            Err(OutboundError::Failing { status: 500, .. }) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(unavailable_after.is_some(), "the breaker never opened");
    let sent = h.calls("retrieve").await.len();
    for _ in 0..5 {
        assert!(matches!(h.stripe.retrieve(&id, gbp(1000)).await, Err(OutboundError::Unavailable { .. })));
    }
    assert_eq!(h.calls("retrieve").await.len(), sent, "an open breaker sends nothing");
    assert_eq!(h.control.send("DELETE", "/_sim/faults", None).await.0, 204);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(matches!(h.stripe.retrieve(&id, gbp(1000)).await, Ok(Answer::Done(_))), "the half-open trial closes it");

    h.fault("capture", "error_429", 1, None).await;
    let started = std::time::Instant::now();
    let Answer::Done(captured) = h.stripe.capture(&id, gbp(1000), None, "outage:capture").await.expect("capture")
    else {
        panic!("capture")
    };
    assert_eq!(captured.received, gbp(1000));
    assert!(started.elapsed() >= Duration::from_millis(900), "waited for Retry-After: {:?}", started.elapsed());
    let _ = h.base;
}
