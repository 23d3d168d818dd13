//! The outbound kit against a real HTTP server on loopback that misbehaves on purpose:
//! timeouts, slow bodies, resets, refused connections, 5xx, 429 with Retry-After,
//! malformed and lying replies, and a reply too large.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use reqwest::Method;
use serde::Deserialize;
use till_kit::Secret;
use till_outbound::backoff::Backoff;
use till_outbound::breaker::{BreakerConfig, BreakerState};
use till_outbound::budget::BudgetConfig;
use till_outbound::{Credentials, Dependency, DependencyConfig, InvalidReply, Names, OutboundError, OutboundRequest};

const NAMES: Names = Names {
    dependency: "gateway",
    unavailable: "gateway_unavailable",
    reply_invalid: "gateway_reply_invalid",
    timeout: "gateway_timeout",
};

/// What the server saw: requests per route, and the headers of each.
#[derive(Clone, Default)]
struct Seen(Arc<Mutex<HashMap<String, Vec<HeaderMap>>>>);

impl Seen {
    fn record(&self, route: &str, headers: &HeaderMap) -> usize {
        let mut seen = self.0.lock().expect("lock");
        let requests = seen.entry(route.to_string()).or_default();
        requests.push(headers.clone());
        requests.len()
    }

    fn count(&self, route: &str) -> usize {
        self.0.lock().expect("lock").get(route).map_or(0, Vec::len)
    }

    fn headers(&self, route: &str) -> Vec<HeaderMap> {
        self.0.lock().expect("lock").get(route).cloned().unwrap_or_default()
    }
}

async fn ok(State(seen): State<Seen>, headers: HeaderMap) -> impl IntoResponse {
    seen.record("ok", &headers);
    axum::Json(serde_json::json!({ "id": "pi_1", "amount": 1000, "currency": "GBP", "extra": "ignored" }))
}

/// Fails `n` times with 503, then answers like `ok`.
async fn flaky(State(seen): State<Seen>, Path(n): Path<usize>, headers: HeaderMap) -> axum::response::Response {
    if seen.record("flaky", &headers) <= n {
        return (StatusCode::SERVICE_UNAVAILABLE, "busy").into_response();
    }
    axum::Json(serde_json::json!({ "id": "pi_1", "amount": 1000, "currency": "GBP" })).into_response()
}

async fn limited(State(seen): State<Seen>, headers: HeaderMap) -> axum::response::Response {
    if seen.record("limited", &headers) == 1 {
        return (StatusCode::TOO_MANY_REQUESTS, [("retry-after", "1")], "slow down").into_response();
    }
    axum::Json(serde_json::json!({ "id": "pi_1", "amount": 1000, "currency": "GBP" })).into_response()
}

async fn hang(State(seen): State<Seen>, headers: HeaderMap) -> &'static str {
    seen.record("hang", &headers);
    tokio::time::sleep(Duration::from_secs(30)).await;
    "late"
}

async fn slow_body(State(seen): State<Seen>, headers: HeaderMap) -> axum::response::Response {
    seen.record("slow_body", &headers);
    let chunks = futures::stream::unfold(0, |n| async move {
        if n >= 20 {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        Some((Ok::<_, std::io::Error>(bytes::Bytes::from_static(b" ")), n + 1))
    });
    axum::body::Body::from_stream(chunks).into_response()
}

async fn malformed(State(seen): State<Seen>, headers: HeaderMap) -> &'static str {
    seen.record("malformed", &headers);
    // A proxy's error page where JSON was promised.
    "<html><body>502 Bad Gateway</body></html>"
}

async fn lying(State(seen): State<Seen>, headers: HeaderMap) -> impl IntoResponse {
    seen.record("lying", &headers);
    axum::Json(serde_json::json!({ "id": "pi_1", "amount": 999, "currency": "GBP" }))
}

async fn failing(State(seen): State<Seen>, headers: HeaderMap) -> StatusCode {
    seen.record("failing", &headers);
    StatusCode::INTERNAL_SERVER_ERROR
}

async fn huge(State(seen): State<Seen>, headers: HeaderMap) -> Vec<u8> {
    seen.record("huge", &headers);
    vec![b'a'; 64 * 1024]
}

async fn server() -> (reqwest::Url, Seen) {
    let seen = Seen::default();
    let app = axum::Router::new()
        .route("/v1/ok", get(ok).post(ok))
        .route("/v1/flaky/{n}", get(flaky).post(flaky))
        .route("/v1/limited", post(limited))
        .route("/v1/hang", get(hang).post(hang))
        .route("/v1/slow_body", get(slow_body))
        .route("/v1/malformed", get(malformed))
        .route("/v1/lying", get(lying))
        .route("/v1/failing", get(failing))
        .route("/v1/huge", get(huge))
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (reqwest::Url::parse(&format!("http://{address}/")).expect("url"), seen)
}

/// A server that accepts connections and closes them at once, before any answer.
async fn resetting() -> reqwest::Url {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            drop(socket);
        }
    });
    reqwest::Url::parse(&format!("http://{address}/")).expect("url")
}

fn config(base_url: reqwest::Url) -> DependencyConfig {
    let mut config =
        DependencyConfig::new(NAMES, base_url, Credentials::Bearer(Secret::new("sk_test_secret_value".to_string())));
    config.attempt_timeout = Duration::from_millis(500);
    config.backoff = Backoff { base: Duration::from_millis(10), cap: Duration::from_secs(2) };
    config.breaker = BreakerConfig { minimum_calls: 1000, ..BreakerConfig::default() };
    config.budget = BudgetConfig { retries_per_100_calls: 100, retries_per_second_min: 10, retries_saved_max: 100 };
    config
}

#[derive(Debug, PartialEq, Eq)]
struct Payment {
    id: String,
    amount: i64,
}

/// The validation a gateway adapter would do: the fields it acts on, each checked.
fn payment(expected_amount: i64) -> impl Fn(&till_outbound::Reply) -> Result<Payment, InvalidReply> {
    move |reply| {
        #[derive(Deserialize)]
        struct Body {
            id: String,
            amount: i64,
            currency: String,
        }
        if !reply.status.is_success() {
            return Err(InvalidReply::new("status", format!("unexpected {}", reply.status)));
        }
        let body: Body = reply.json()?;
        if !body.id.starts_with("pi_") {
            return Err(InvalidReply::new("id", "not a payment id"));
        }
        if body.amount != expected_amount {
            return Err(InvalidReply::new("amount", format!("{} where {expected_amount} was asked", body.amount)));
        }
        if body.currency != "GBP" {
            return Err(InvalidReply::new("currency", "not the currency asked"));
        }
        Ok(Payment { id: body.id, amount: body.amount })
    }
}

#[tokio::test]
async fn a_valid_reply_becomes_a_value_with_credentials_request_id_and_key_sent() {
    let (url, seen) = server().await;
    let gateway = Dependency::new(config(url)).expect("client");
    let request = OutboundRequest::new(Method::POST, "v1/ok").idempotency_key("pay-1");
    let paid = till_http::request_id::scope("req_abc".into(), gateway.call(&request, payment(1000))).await;
    assert_eq!(paid.expect("paid"), Payment { id: "pi_1".into(), amount: 1000 });
    let headers = &seen.headers("ok")[0];
    assert_eq!(headers["authorization"], "Bearer sk_test_secret_value");
    assert_eq!(headers["idempotency-key"], "pay-1");
    assert_eq!(headers["request-id"], "req_abc");
    assert!(!format!("{:?}", config(reqwest::Url::parse("http://x/").expect("url"))).contains("sk_test_secret_value"));
}

#[tokio::test]
async fn lying_malformed_and_oversized_replies_are_invalid_and_never_values() {
    let (url, _) = server().await;
    let mut config = config(url);
    config.reply_bytes_max = 32 * 1024;
    let gateway = Dependency::new(config).expect("client");
    for (path, field) in [("v1/lying", "amount"), ("v1/malformed", "body"), ("v1/huge", "body")] {
        let outcome = gateway.call(&OutboundRequest::new(Method::GET, path), payment(1000)).await;
        match outcome {
            Err(OutboundError::InvalidReply { reason, .. }) => assert_eq!(reason.field, field, "{path}: {reason}"),
            other => panic!("{path}: {other:?}"),
        }
    }
    let problem = till_http::ApiError::from(
        gateway.call(&OutboundRequest::new(Method::GET, "v1/lying"), payment(1000)).await.expect_err("invalid"),
    );
    assert_eq!((problem.status.as_u16(), problem.code.as_str()), (502, "gateway_reply_invalid"));
}

#[tokio::test]
async fn transient_failures_are_retried_with_the_same_key_only_when_safe() {
    let (url, seen) = server().await;
    let gateway = Dependency::new(config(url)).expect("client");
    let keyed = OutboundRequest::new(Method::POST, "v1/flaky/2").idempotency_key("pay-2");
    assert_eq!(gateway.call(&keyed, payment(1000)).await.expect("third attempt").amount, 1000);
    let keys: Vec<String> = seen
        .headers("flaky")
        .iter()
        .map(|headers| headers["idempotency-key"].to_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(keys, vec!["pay-2"; 3], "every attempt carries the same key");

    // A POST without a key may have acted: it is not sent twice.
    let (url, seen) = server().await;
    let gateway = Dependency::new(config(url)).expect("client");
    let unkeyed = OutboundRequest::new(Method::POST, "v1/flaky/1");
    let failed = gateway.call(&unkeyed, payment(1000)).await;
    assert!(matches!(failed, Err(OutboundError::Failing { status: 503, .. })), "{failed:?}");
    assert_eq!(seen.count("flaky"), 1);
}

#[tokio::test]
async fn a_429_is_retried_after_its_retry_after() {
    let (url, seen) = server().await;
    let gateway = Dependency::new(config(url)).expect("client");
    let started = Instant::now();
    // No key: a 429 means the party did not look at the request, so it is safe to resend.
    let paid = gateway.call(&OutboundRequest::new(Method::POST, "v1/limited"), payment(1000)).await;
    assert_eq!(paid.expect("paid").id, "pi_1");
    assert_eq!(seen.count("limited"), 2);
    assert!(started.elapsed() >= Duration::from_secs(1), "waited {:?}, not the Retry-After", started.elapsed());
}

#[tokio::test]
async fn timeouts_slow_bodies_and_resets_are_failures_that_may_have_acted() {
    let (url, seen) = server().await;
    let gateway = Dependency::new(config(url)).expect("client");
    for path in ["v1/hang", "v1/slow_body"] {
        let outcome = gateway.call(&OutboundRequest::new(Method::GET, path), payment(1000)).await;
        let error = outcome.expect_err(path);
        assert!(matches!(error, OutboundError::TimedOut { .. }), "{path}: {error:?}");
        assert!(error.may_have_acted());
    }
    assert_eq!(seen.count("hang"), 3, "a GET is retried up to the attempts allowed");
    let posted = gateway.call(&OutboundRequest::new(Method::POST, "v1/hang"), payment(1000)).await;
    assert!(matches!(posted, Err(OutboundError::TimedOut { .. })));
    assert_eq!(seen.count("hang"), 4, "a POST without a key is never sent twice");
    let problem = till_http::ApiError::from(posted.expect_err("timed out"));
    assert_eq!((problem.status.as_u16(), problem.code.as_str()), (504, "gateway_timeout"));

    let gateway = Dependency::new(config(resetting().await)).expect("client");
    let reset = gateway.call(&OutboundRequest::new(Method::GET, "v1/ok"), payment(1000)).await;
    assert!(matches!(reset, Err(OutboundError::TimedOut { .. } | OutboundError::Connect { .. })), "{reset:?}");
}

#[tokio::test]
async fn a_refused_connection_is_retried_even_for_a_post_since_nothing_was_sent() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = listener.local_addr().expect("address");
    drop(listener);
    let gateway =
        Dependency::new(config(reqwest::Url::parse(&format!("http://{address}/")).expect("url"))).expect("client");
    let outcome = gateway.call(&OutboundRequest::new(Method::POST, "v1/ok"), payment(1000)).await;
    let error = outcome.expect_err("nothing listens");
    assert!(matches!(error, OutboundError::Connect { .. }), "{error:?}");
    assert!(!error.may_have_acted());
    let problem = till_http::ApiError::from(error);
    assert_eq!((problem.status.as_u16(), problem.code.as_str()), (503, "gateway_unavailable"));
}

#[tokio::test]
async fn an_open_breaker_fails_fast_without_calling() {
    let (url, seen) = server().await;
    let mut config = config(url);
    config.attempts_max = 1;
    config.breaker = BreakerConfig { minimum_calls: 4, failure_rate_percent: 50, ..BreakerConfig::default() };
    let gateway = Dependency::new(config).expect("client");
    for _ in 0..4 {
        let _ = gateway.call(&OutboundRequest::new(Method::GET, "v1/failing"), payment(1000)).await;
    }
    assert!(matches!(gateway.breaker_state(), BreakerState::Open { .. }), "{:?}", gateway.breaker_state());
    let refused = gateway.call(&OutboundRequest::new(Method::GET, "v1/failing"), payment(1000)).await;
    let error = refused.expect_err("open");
    assert!(matches!(error, OutboundError::Unavailable { .. }), "{error:?}");
    assert_eq!(seen.count("failing"), 4, "nothing was sent while open");
    let problem = till_http::ApiError::from(error);
    assert_eq!((problem.status.as_u16(), problem.code.as_str()), (503, "gateway_unavailable"));
    assert!(problem.retry_after_seconds.is_some_and(|seconds| seconds >= 1));
}

#[tokio::test]
async fn the_retry_budget_stops_retries_multiplying_load() {
    let (url, seen) = server().await;
    let mut config = config(url);
    config.budget = BudgetConfig { retries_per_100_calls: 0, retries_per_second_min: 0, retries_saved_max: 1 };
    let gateway = Dependency::new(config).expect("client");
    for _ in 0..5 {
        let _ = gateway.call(&OutboundRequest::new(Method::GET, "v1/flaky/100"), payment(1000)).await;
    }
    assert_eq!(seen.count("flaky"), 6, "five calls and the one retry the budget had");
}

#[tokio::test]
async fn concurrency_is_bounded() {
    let (url, seen) = server().await;
    let mut config = config(url);
    config.concurrency_max = 2;
    config.attempts_max = 1;
    config.place_wait = Duration::from_millis(100);
    config.attempt_timeout = Duration::from_millis(1_000);
    let gateway = Dependency::new(config).expect("client");
    let calls = (0..6).map(|_| {
        let gateway = gateway.clone();
        async move { gateway.call(&OutboundRequest::new(Method::POST, "v1/hang"), payment(1000)).await }
    });
    let outcomes = futures::future::join_all(calls).await;
    assert_eq!(seen.count("hang"), 2, "two places, two calls sent");
    let unavailable =
        outcomes.iter().filter(|outcome| matches!(outcome, Err(OutboundError::Unavailable { .. }))).count();
    assert_eq!(unavailable, 4, "the others found no place in time and sent nothing");
}
