//! Merchant webhooks end to end: signed deliveries (verified here with ring's HMAC, an
//! implementation independent of Till's), retries through failures, timeouts and slow
//! receivers, per-resource order, secret rotation, replay, and the SSRF guard.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, StatusCode};
use base64::Engine;
use serde_json::{json, Value};
use till_testkit::{problem, spawn_app, spawn_app_with, test_config, TestApp};

use crate::ledger_helpers::*;

#[derive(Clone, Debug)]
struct Received {
    headers: HashMap<String, String>,
    body: Vec<u8>,
    answered: u16,
}

/// A receiver on loopback: answers `plan[n]` to the n-th request (then 200), each a
/// status and a delay.
#[derive(Clone)]
struct Receiver {
    address: SocketAddr,
    received: Arc<Mutex<Vec<Received>>>,
}

type ReceiverState = (Arc<Mutex<Vec<Received>>>, Arc<AtomicUsize>, Arc<Vec<(u16, u64)>>);

async fn receive(
    axum::extract::State((received, count, plan)): axum::extract::State<ReceiverState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> impl axum::response::IntoResponse {
    let n = count.fetch_add(1, Ordering::SeqCst);
    let (status, delay_ms) = plan.get(n).copied().unwrap_or((200, 0));
    tokio::time::sleep(Duration::from_millis(delay_ms)).await;
    let headers = headers.iter().map(|(k, v)| (k.to_string(), v.to_str().unwrap_or_default().to_string())).collect();
    received.lock().expect("lock").push(Received { headers, body: body.to_vec(), answered: status });
    (StatusCode::from_u16(status).unwrap_or(StatusCode::OK), [("location", "http://127.0.0.1:9/")], "ok")
}

async fn receiver(plan: Vec<(u16, u64)>) -> Receiver {
    let received: Arc<Mutex<Vec<Received>>> = Arc::default();
    let state: ReceiverState = (received.clone(), Arc::new(AtomicUsize::new(0)), Arc::new(plan));
    let app = axum::Router::new().route("/hook", axum::routing::post(receive)).with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move { axum::serve(listener, app).await });
    Receiver { address, received }
}

/// A listener that only counts connections: nothing may ever reach it.
async fn canary() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    tokio::spawn(async move {
        while let Ok((_socket, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
        }
    });
    (address, hits)
}

/// Standard Webhooks verification with ring (independent of Till's hmac crate).
fn verify(secret: &str, received: &Received) -> bool {
    let key = base64::engine::general_purpose::STANDARD.decode(secret.trim_start_matches("whsec_")).expect("secret");
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &key);
    let id = &received.headers["webhook-id"];
    let timestamp = &received.headers["webhook-timestamp"];
    let mut signed = format!("{id}.{timestamp}.").into_bytes();
    signed.extend_from_slice(&received.body);
    received.headers["webhook-signature"].split(' ').any(|signature| {
        signature
            .strip_prefix("v1,")
            .and_then(|b64| base64::engine::general_purpose::STANDARD.decode(b64).ok())
            .is_some_and(|tag| ring::hmac::verify(&key, &signed, &tag).is_ok())
    })
}

async fn create_endpoint(app: &TestApp, credential: &str, url: &str) -> (String, String) {
    let response =
        app.post("/v1/webhook_endpoints", credential, &key(), &json!({"url": url, "enabled_events": ["*"]})).await;
    assert_eq!(response.status().as_u16(), 201, "creating an endpoint for {url}");
    let body: Value = response.json().await.expect("json");
    (body["id"].as_str().expect("id").to_string(), body["secret"].as_str().expect("secret").to_string())
}

fn an_hour_ago() -> String {
    let at = time::OffsetDateTime::now_utc() - time::Duration::hours(1);
    at.format(&time::format_description::well_known::Rfc3339).expect("an RFC 3339 time")
}

async fn event_ids_since(app: &TestApp, credential: &str, since: &str) -> Vec<String> {
    let since = time::OffsetDateTime::parse(since, &time::format_description::well_known::Rfc3339).expect("time");
    let page: Value = app.get("/v1/events?limit=100", credential).await.json().await.expect("json");
    page["data"]
        .as_array()
        .expect("data")
        .iter()
        .filter(|e| {
            e["occurred_at"]
                .as_str()
                .and_then(|at| time::OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339).ok())
                .is_some_and(|at| at >= since)
        })
        .map(|e| e["id"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// Waits until every event of the business that occurred after the endpoint was created
/// (earlier ones may or may not have been fanned out to it) has been answered 2xx.
async fn until_all_delivered(
    app: &TestApp,
    credential: &str,
    receiver: &Receiver,
    endpoint: &str,
    expected: usize,
) -> Vec<Received> {
    let created: Value =
        app.get(&format!("/v1/webhook_endpoints/{endpoint}"), credential).await.json().await.expect("json");
    let since = created["created_at"].as_str().expect("created_at").to_string();
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let ids = event_ids_since(app, credential, &since).await;
        let received = receiver.received.lock().expect("lock").clone();
        let delivered: std::collections::HashSet<&String> =
            received.iter().filter(|r| r.answered < 300).map(|r| &r.headers["webhook-id"]).collect();
        if ids.len() >= expected && ids.iter().all(|id| delivered.contains(id)) {
            return received;
        }
        assert!(Instant::now() < deadline, "{} of {} events delivered", delivered.len(), ids.len());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn deliveries_are_signed_retried_and_in_order_per_resource() {
    let app = spawn_app().await;
    let business = app.create_business("GB").await;
    let k = &business.owner_key;
    // Fails twice, answers slowly once, then succeeds.
    let receiver = receiver(vec![(500, 0), (503, 0), (200, 300)]).await;
    let (endpoint, secret) = create_endpoint(&app, k, &format!("http://{}/hook", receiver.address)).await;
    let (bank, alice, shop) =
        (source(&app, k, "GBP").await, wallet(&app, k, "GBP").await, wallet(&app, k, "GBP").await);
    posted(&app, k, &bank, &alice, 1_000).await;
    for _ in 0..3 {
        let held = hold(&app, k, &alice, &shop, 100, None).await;
        app.post(&format!("/v1/transfers/{held}/post"), k, &key(), &json!({})).await;
    }
    // 3 accounts, the funding, 3 holds created and posted.
    let received = until_all_delivered(&app, k, &receiver, &endpoint, 10).await;
    let mut last_sequence: HashMap<String, i64> = HashMap::new();
    for delivery in received.iter().filter(|r| r.answered < 300) {
        assert!(verify(&secret, delivery), "a valid Standard Webhooks signature");
        let body: Value = serde_json::from_slice(&delivery.body).expect("json body");
        assert_eq!(body["id"].as_str(), Some(delivery.headers["webhook-id"].as_str()));
        let timestamp: i64 = delivery.headers["webhook-timestamp"].parse().expect("timestamp");
        assert!((time::OffsetDateTime::now_utc().unix_timestamp() - timestamp).abs() < 120);
        let resource = body["resource_id"].as_str().expect("resource").to_string();
        let sequence = body["sequence"].as_i64().expect("sequence");
        let previous = last_sequence.insert(resource.clone(), sequence).unwrap_or(0);
        assert!(sequence > previous, "{resource}: {sequence} delivered after {previous}");
    }
    let deliveries: Value =
        app.get(&format!("/v1/webhook_endpoints/{endpoint}/deliveries?limit=100"), k).await.json().await.expect("json");
    let deliveries = deliveries["data"].as_array().expect("data").clone();
    let retried: Vec<&Value> = deliveries.iter().filter(|d| d["attempts"].as_i64() > Some(1)).collect();
    assert!(!retried.is_empty(), "the failures were retried");
    let history = retried[0]["attempt_history"].as_array().expect("history");
    assert!(history.iter().any(|a| a["status_code"] == 500 || a["status_code"] == 503));
    assert!(history.iter().all(|a| a["latency_ms"].is_i64()));
}

#[tokio::test]
async fn a_receiver_that_times_out_or_redirects_is_retried_and_never_followed() {
    let app = spawn_app().await;
    let business = app.create_business("GB").await;
    let k = &business.owner_key;
    let (canary_address, hits) = canary().await;
    // First a hang past the 2 s request timeout, then a redirect (to port 9; never
    // followed), then success.
    let receiver = receiver(vec![(200, 3_000), (302, 0)]).await;
    let (endpoint, secret) = create_endpoint(&app, k, &format!("http://{}/hook", receiver.address)).await;
    source(&app, k, "GBP").await;
    let received = until_all_delivered(&app, k, &receiver, &endpoint, 1).await;
    assert!(received.iter().filter(|r| r.answered < 300).all(|r| verify(&secret, r)));
    let deadline = Instant::now() + Duration::from_secs(20);
    let history = loop {
        let page: Value =
            app.get(&format!("/v1/webhook_endpoints/{endpoint}/deliveries"), k).await.json().await.expect("json");
        let deliveries = page["data"].as_array().cloned().unwrap_or_default();
        if deliveries.iter().all(|d| d["status"] == "succeeded") {
            break deliveries
                .iter()
                .flat_map(|d| d["attempt_history"].as_array().cloned().unwrap_or_default())
                .collect::<Vec<Value>>();
        }
        assert!(Instant::now() < deadline, "every delivery succeeds in the end: {page}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        history.iter().any(|a| a["error"].as_str().is_some_and(|e| e.contains("timed out"))),
        "a timeout: {history:?}"
    );
    assert!(history.iter().any(|a| a["status_code"] == 302), "a redirect is a failure, not followed: {history:?}");
    assert_eq!(hits.load(Ordering::SeqCst), 0, "{canary_address} got nothing");
}

#[tokio::test]
async fn rotation_signs_with_both_secrets_and_replay_redelivers_in_order() {
    let app = spawn_app().await;
    let business = app.create_business("GB").await;
    let k = &business.owner_key;
    let receiver = receiver(Vec::new()).await;
    let (endpoint, old_secret) = create_endpoint(&app, k, &format!("http://{}/hook", receiver.address)).await;
    source(&app, k, "GBP").await;
    until_all_delivered(&app, k, &receiver, &endpoint, 1).await;
    let rotated: Value = app
        .post(&format!("/v1/webhook_endpoints/{endpoint}/rotate_secret"), k, &key(), &json!({}))
        .await
        .json()
        .await
        .expect("json");
    let new_secret = rotated["secret"].as_str().expect("secret").to_string();
    assert_ne!(new_secret, old_secret);
    let before = receiver.received.lock().expect("lock").len();
    let replayed: Value = app
        .post(&format!("/v1/webhook_endpoints/{endpoint}/replay"), k, &key(), &json!({"since": an_hour_ago()}))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(replayed["replayed"], 2);
    let deadline = Instant::now() + Duration::from_secs(20);
    while receiver.received.lock().expect("lock").len() < before + 2 {
        assert!(Instant::now() < deadline, "the replay arrives");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let again = receiver.received.lock().expect("lock")[before..].to_vec();
    for delivery in &again {
        assert!(
            verify(&new_secret, delivery) && verify(&old_secret, delivery),
            "both secrets sign during the grace period"
        );
        assert_eq!(delivery.headers["webhook-signature"].split(' ').count(), 2);
    }
    let sequences: Vec<i64> = again
        .iter()
        .map(|r| serde_json::from_slice::<Value>(&r.body).expect("json")["sequence"].as_i64().unwrap_or(0))
        .collect();
    assert_eq!(sequences.len(), 2);
    let bad =
        app.post(&format!("/v1/webhook_endpoints/{endpoint}/replay"), k, &key(), &json!({"since": "yesterday"})).await;
    assert_eq!(problem(bad).await["param"], "since");
}

/// Hostile URLs, with the development setting off (as in production).
#[tokio::test]
async fn hostile_urls_are_refused_and_nothing_internal_is_ever_called() {
    let mut config = test_config();
    config.webhooks.allow_private_targets = false;
    let app = spawn_app_with(config, Default::default()).await;
    let business = app.create_business("GB").await;
    let k = &business.owner_key;
    let (canary_address, hits) = canary().await;
    let port = canary_address.port();
    let hostile = [
        format!("http://127.0.0.1:{port}/"),
        format!("https://127.0.0.1:{port}/"),
        format!("https://2130706433:{port}/"),
        format!("https://0x7f000001:{port}/"),
        format!("https://0x7f.0x0.0x0.0x1:{port}/"),
        format!("https://017700000001:{port}/"),
        format!("https://0177.0.0.1:{port}/"),
        format!("https://127.1:{port}/"),
        format!("https://127.0.1:{port}/"),
        format!("https://[::1]:{port}/"),
        format!("https://[::ffff:127.0.0.1]:{port}/"),
        format!("https://[::ffff:7f00:1]:{port}/"),
        format!("https://[0:0:0:0:0:0:0:1]:{port}/"),
        format!("https://[::127.0.0.1]:{port}/"),
        "https://[64:ff9b::a9fe:a9fe]/".to_string(),
        // IPv4-translated, NAT64 local use, the 6to4 relay anycast block: the probe's
        // three that passed a deny-list; the guard is an allow-list of global unicast now.
        format!("https://[::ffff:0:7f00:1]:{port}/"),
        "https://[64:ff9b:1::a9fe:a9fe]/".to_string(),
        "https://192.88.99.1/".to_string(),
        "https://[2002:7f00:1::]/".to_string(),
        "https://[fd00:ec2::254]/latest/meta-data/".to_string(),
        "https://[fe80::1]/".to_string(),
        "https://169.254.169.254/latest/meta-data/".to_string(),
        "https://10.0.0.1/".to_string(),
        "https://172.16.5.4/".to_string(),
        "https://192.168.0.1/".to_string(),
        "https://100.64.0.1/".to_string(),
        "https://0.0.0.0/".to_string(),
        "https://224.0.0.1/".to_string(),
        format!("https://localhost:{port}/"),
        format!("https://LOCALHOST.:{port}/"),
        "https://foo.localhost/".to_string(),
        "https://metadata.google.internal/".to_string(),
        format!("https://user:secret@127.0.0.1:{port}/"),
        "file:///etc/passwd".to_string(),
        "gopher://127.0.0.1:70/".to_string(),
        "ftp://example.com/".to_string(),
        "javascript:alert(1)".to_string(),
        "data:text/plain,hi".to_string(),
        "http://example.com/hook".to_string(),
        "https://".to_string(),
        format!("https://{}/", "a".repeat(3000)),
    ];
    assert!(hostile.len() >= 30);
    for url in &hostile {
        let response =
            app.post("/v1/webhook_endpoints", k, &key(), &json!({"url": url, "enabled_events": ["*"]})).await;
        // Longer than the schema's maxLength is the contract broken (400); any other URL
        // the guard refuses breaks its rules (422).
        let expected = if url.chars().count() > 2048 { 400 } else { 422 };
        assert_eq!(response.status().as_u16(), expected, "{url}");
        assert_eq!(problem(response).await["param"], "url", "{url}");
    }
    // A name that passes registration but resolves to loopback (this machine's own host
    // name, from /etc/hosts), and a URL stored before a policy change: both are refused
    // at delivery time, by the resolver and by the re-check.
    let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default().trim().to_string();
    let resolves_internally = !host.is_empty()
        && tokio::net::lookup_host((host.as_str(), port))
            .await
            .is_ok_and(|mut addresses| addresses.all(|a| till_webhooks::guard::is_forbidden(a.ip())));
    let internally_resolving = if resolves_internally {
        Some(create_endpoint(&app, k, &format!("https://{host}:{port}/hook")).await.0)
    } else {
        None
    };
    let stored = {
        let endpoint_id = uuid::Uuid::now_v7();
        sqlx::query(
            "INSERT INTO webhooks.endpoints (id, business_id, url, enabled_events, secret)
             VALUES ($1, $2, $3, ARRAY['*'], 'whsec_AAAA')",
        )
        .bind(endpoint_id)
        .bind(uuid::Uuid::parse_str(business.id.trim_start_matches("biz_")).expect("uuid"))
        .bind(format!("https://127.0.0.1:{port}/hook"))
        .execute(&app.owner_pool)
        .await
        .expect("a legacy endpoint");
        endpoint_id
    };
    // Cause events, and give the worker time to try every endpoint a few times.
    source(&app, k, "GBP").await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let attempts: i64 =
            sqlx::query_scalar("SELECT coalesce(sum(attempts), 0) FROM webhooks.deliveries WHERE endpoint_id = $1")
                .bind(stored)
                .fetch_one(&app.owner_pool)
                .await
                .expect("attempts");
        if attempts >= 3 {
            break;
        }
        assert!(Instant::now() < deadline, "the worker tried the stored endpoint");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let error: Option<String> =
        sqlx::query_scalar("SELECT last_error FROM webhooks.deliveries WHERE endpoint_id = $1 LIMIT 1")
            .bind(stored)
            .fetch_one(&app.owner_pool)
            .await
            .expect("error");
    assert_eq!(error.as_deref(), Some("the endpoint's address is not allowed"), "refused by the re-check");
    // What a viewer reads of a name that resolves only internally is what any failed
    // connection says (no oracle for Till's internal DNS); the cause is in the log.
    if let Some(endpoint) = internally_resolving {
        let deadline = Instant::now() + Duration::from_secs(20);
        let errors = loop {
            let page: Value =
                app.get(&format!("/v1/webhook_endpoints/{endpoint}/deliveries"), k).await.json().await.expect("json");
            let errors: Vec<String> = page["data"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|delivery| delivery["attempt_history"].as_array().cloned().unwrap_or_default())
                .filter_map(|attempt| attempt["error"].as_str().map(str::to_string))
                .collect();
            if !errors.is_empty() {
                break errors;
            }
            assert!(Instant::now() < deadline, "the worker tried the internally resolving endpoint");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert!(errors.iter().all(|error| error == "could not connect to the endpoint"), "{errors:?}");
    }
    assert_eq!(hits.load(Ordering::SeqCst), 0, "the canary on {canary_address} was never contacted");
}

#[tokio::test]
async fn endpoints_are_validated_listed_updated_and_deleted() {
    let app = spawn_app().await;
    let business = app.create_business("GB").await;
    let k = &business.owner_key;
    let bad_events = app
        .post(
            "/v1/webhook_endpoints",
            k,
            &key(),
            &json!({"url": "https://example.com/h", "enabled_events": ["transfer.exploded"]}),
        )
        .await;
    assert_eq!(problem(bad_events).await["param"], "enabled_events");
    let none = app
        .post("/v1/webhook_endpoints", k, &key(), &json!({"url": "https://example.com/h", "enabled_events": []}))
        .await;
    assert_eq!(none.status().as_u16(), 400);
    let (endpoint, _) = create_endpoint(&app, k, "https://example.com/h").await;
    let listed: Value = app.get("/v1/webhook_endpoints", k).await.json().await.expect("json");
    assert!(listed["data"][0].get("secret").is_none(), "secrets are shown once");
    let updated = app
        .request(reqwest::Method::PATCH, &format!("/v1/webhook_endpoints/{endpoint}"), k)
        .json(&json!({"enabled_events": ["transfer.created"], "status": "disabled"}))
        .send()
        .await
        .expect("patch");
    let updated: Value = updated.json().await.expect("json");
    assert_eq!(
        (updated["status"].clone(), updated["enabled_events"].clone()),
        (json!("disabled"), json!(["transfer.created"]))
    );
    let other = app.create_business("IN").await;
    assert_eq!(app.get(&format!("/v1/webhook_endpoints/{endpoint}"), &other.owner_key).await.status().as_u16(), 404);
    let deleted = app
        .request(reqwest::Method::DELETE, &format!("/v1/webhook_endpoints/{endpoint}"), k)
        .send()
        .await
        .expect("delete");
    assert_eq!(deleted.status().as_u16(), 204);
    assert_eq!(app.get(&format!("/v1/webhook_endpoints/{endpoint}"), k).await.status().as_u16(), 404);
}

/// An endpoint failing for longer than `disable_after` is disabled, and an event says so.
#[tokio::test]
async fn an_endpoint_that_keeps_failing_is_disabled_with_an_event() {
    let app = spawn_app().await;
    let business = app.create_business("GB").await;
    let k = &business.owner_key;
    let (endpoint, _) = create_endpoint(&app, k, "https://hooks.example.com/till").await;
    let config = till_webhooks::WebhookConfig::default();
    // Not failing long enough yet: nothing happens.
    sqlx::query("UPDATE webhooks.endpoints SET failing_since = now() - interval '4 days'")
        .execute(&app.owner_pool)
        .await
        .expect("age");
    assert_eq!(till_webhooks::worker::disable_failing_endpoints(&app.pool, &config).await.expect("check"), 0);
    sqlx::query("UPDATE webhooks.endpoints SET failing_since = now() - interval '6 days'")
        .execute(&app.owner_pool)
        .await
        .expect("age");
    // The server's own worker checks too (at start and every minute), so either it or
    // this call disables the endpoint, exactly once.
    let disabled_here = till_webhooks::worker::disable_failing_endpoints(&app.pool, &config).await.expect("check");
    assert!(disabled_here <= 1);
    let body: Value = app.get(&format!("/v1/webhook_endpoints/{endpoint}"), k).await.json().await.expect("json");
    assert_eq!(body["status"], "disabled");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let page: Value = app.get("/v1/events?type=webhook_endpoint.disabled", k).await.json().await.expect("json");
        if let Some(event) = page["data"].as_array().and_then(|data| data.first()) {
            assert_eq!(page["data"].as_array().map(Vec::len), Some(1), "disabled once");
            assert_eq!(event["resource_id"], endpoint.as_str());
            assert_eq!(event["sequence"], body["version"]);
            break;
        }
        assert!(Instant::now() < deadline, "the event is relayed from the events outbox");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A host that accepts connections and never answers: every request to it times out.
async fn black_hole() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    address
}

async fn deliveries_of(app: &TestApp, business: &str, status: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM webhooks.deliveries WHERE business_id = $1 AND status = $2")
        .bind(uuid::Uuid::parse_str(business.trim_start_matches("biz_")).expect("uuid"))
        .bind(status)
        .fetch_one(&app.owner_pool)
        .await
        .expect("count")
}

/// Transfers in batches of 100, so that a test makes many events quickly.
async fn many_transfers(app: &TestApp, credential: &str, count: usize) {
    let (bank, wallet) = (source(app, credential, "GBP").await, wallet(app, credential, "GBP").await);
    for chunk in 0..count.div_ceil(100) {
        let legs: Vec<Value> = (0..100.min(count - chunk * 100)).map(|_| transfer_body(&bank, &wallet, 1)).collect();
        let response = app.post("/v1/transfers/batch", credential, &key(), &json!({ "transfers": legs })).await;
        assert_eq!(response.status().as_u16(), 201);
    }
}

/// The probe's finding: one business with its endpoints on a black-holed host and
/// thousands of deliveries due kept another business's delivery unattempted for minutes.
#[tokio::test]
async fn a_noisy_business_on_a_black_hole_cannot_hold_up_another_business() {
    let app = spawn_app().await;
    let (noisy, quiet) = (app.create_business("GB").await, app.create_business("GB").await);
    let hole = black_hole().await;
    for _ in 0..16 {
        create_endpoint(&app, &noisy.owner_key, &format!("http://{hole}/hook")).await;
    }
    let seventeenth = app
        .post(
            "/v1/webhook_endpoints",
            &noisy.owner_key,
            &key(),
            &json!({"url": format!("http://{hole}/hook"), "enabled_events": ["*"]}),
        )
        .await;
    assert_eq!(seventeenth.status().as_u16(), 422, "16 endpoints per business");
    assert_eq!(problem(seventeenth).await["code"], "webhook_endpoint_limit");
    many_transfers(&app, &noisy.owner_key, 300).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while deliveries_of(&app, &noisy.id, "pending").await < 16 * 300 {
        assert!(Instant::now() < deadline, "the noisy business's deliveries were fanned out");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let receiver = receiver(Vec::new()).await;
    let (endpoint, _) = create_endpoint(&app, &quiet.owner_key, &format!("http://{}/hook", receiver.address)).await;
    let started = Instant::now();
    source(&app, &quiet.owner_key, "GBP").await;
    until_all_delivered(&app, &quiet.owner_key, &receiver, &endpoint, 1).await;
    let waited = started.elapsed();
    assert!(waited < Duration::from_secs(10), "the quiet business waited {waited:?} behind the noisy one");

    // Meanwhile the noisy business never holds more than its share of the sends (16 in
    // flight), and its endpoints' breakers open instead of feeding the black hole.
    let noisy_id = uuid::Uuid::parse_str(noisy.id.trim_start_matches("biz_")).expect("uuid");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (in_flight, broken): (i64, i64) = sqlx::query_as(
            "SELECT (SELECT count(*) FROM webhooks.deliveries WHERE business_id = $1 AND leased_until > now()),
                    (SELECT count(*) FROM webhooks.endpoints WHERE business_id = $1 AND consecutive_failures >= 5)",
        )
        .bind(noisy_id)
        .fetch_one(&app.owner_pool)
        .await
        .expect("counts");
        assert!(in_flight <= 16, "the noisy business has {in_flight} sends in flight");
        if broken > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "a breaker opens on the black hole");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn a_failing_endpoint_opens_its_breaker_and_a_success_closes_it() {
    let app = spawn_app().await;
    let business = app.create_business("GB").await;
    let k = &business.owner_key;
    // Eight failures, then success.
    let receiver = receiver(vec![(500, 0); 8]).await;
    let (endpoint, _) = create_endpoint(&app, k, &format!("http://{}/hook", receiver.address)).await;
    let endpoint_id = uuid::Uuid::parse_str(endpoint.trim_start_matches("we_")).expect("uuid");
    let state = || async {
        sqlx::query_as::<_, (i32, Option<time::OffsetDateTime>)>(
            "SELECT consecutive_failures, paused_until FROM webhooks.endpoints WHERE id = $1",
        )
        .bind(endpoint_id)
        .fetch_one(&app.owner_pool)
        .await
        .expect("endpoint")
    };
    many_transfers(&app, k, 20).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let opened = loop {
        let (failures, paused_until) = state().await;
        if failures >= 5 {
            break paused_until;
        }
        assert!(Instant::now() < deadline, "the breaker opens");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(opened.is_some(), "five consecutive failures pause the endpoint");
    until_all_delivered(&app, k, &receiver, &endpoint, 22).await;
    let (failures, paused_until) = state().await;
    assert_eq!((failures, paused_until), (0, None), "a success closes the breaker");
}

#[tokio::test]
async fn an_endpoint_holds_a_bounded_backlog_and_replays_are_bounded() {
    let mut config = test_config();
    config.webhooks.pending_deliveries_max = 40;
    let app = spawn_app_with(config, Default::default()).await;
    let business = app.create_business("GB").await;
    let k = &business.owner_key;
    let hole = black_hole().await;
    let (endpoint, _) = create_endpoint(&app, k, &format!("http://{hole}/hook")).await;
    many_transfers(&app, k, 100).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while deliveries_of(&app, &business.id, "pending").await + deliveries_of(&app, &business.id, "failed").await < 102 {
        assert!(Instant::now() < deadline, "every event was fanned out");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(deliveries_of(&app, &business.id, "pending").await, 40, "no more than 40 wait");
    let skipped: Vec<String> = sqlx::query_scalar(
        "SELECT DISTINCT last_error FROM webhooks.deliveries WHERE status = 'failed' AND attempts = 0",
    )
    .fetch_all(&app.owner_pool)
    .await
    .expect("errors");
    assert_eq!(skipped, vec!["not attempted: the endpoint already had 40 deliveries waiting".to_string()]);

    let replay = |since: String, idempotency_key: String| {
        let app = &app;
        let endpoint = endpoint.clone();
        async move {
            app.post(&format!("/v1/webhook_endpoints/{endpoint}/replay"), k, &idempotency_key, &json!({"since": since}))
                .await
        }
    };
    let format = |at: time::OffsetDateTime| at.format(&time::format_description::well_known::Rfc3339).expect("time");
    let now = time::OffsetDateTime::now_utc();
    let too_old = replay(format(now - time::Duration::days(31)), key()).await;
    assert_eq!(too_old.status().as_u16(), 422);
    assert_eq!(problem(too_old).await["param"], "since");
    let too_large = replay(format(now - time::Duration::hours(1)), key()).await;
    assert_eq!(too_large.status().as_u16(), 422, "40 waiting and 102 more is past the limit");
    assert_eq!(problem(too_large).await["code"], "replay_too_large");

    // With the backlog cleared, a small replay runs, and a second one at once is throttled.
    sqlx::query("UPDATE webhooks.deliveries SET status = 'failed' WHERE status = 'pending'")
        .execute(&app.owner_pool)
        .await
        .expect("clear the backlog");
    let last: Value = app.get("/v1/events?limit=1", k).await.json().await.expect("json");
    let second_last = last["data"][0]["id"].as_str().expect("an event").to_string();
    let first = replay(second_last.clone(), key()).await;
    assert_eq!(first.status().as_u16(), 200, "{:?}", first.text().await);
    let throttled_key = key();
    let again = replay(second_last.clone(), throttled_key.clone()).await;
    assert_eq!(again.status().as_u16(), 429);
    assert!(again.headers().contains_key("retry-after"));
    assert_eq!(problem(again).await["code"], "replay_throttled");
    let retried = replay(second_last, throttled_key).await;
    assert_eq!(retried.status().as_u16(), 429);
    assert!(retried.headers().get("idempotent-replayed").is_none(), "a 429 is not stored: the retry runs again");
}

/// An instance upgraded from before the webhooks had a schema of their own keeps its
/// endpoints, waiting deliveries and attempts: the migration moves them into `webhooks`,
/// and the remade functions fan out, claim and record on the moved rows.
#[tokio::test]
async fn upgrading_moves_the_webhooks_data_into_its_own_schema_and_keeps_delivering() {
    let database = till_testkit::empty_database().await.expect("database");
    let owner = database.owner_pool().await.expect("owner pool");
    // The migrations as they stood before the webhooks had a schema: everything but it.
    let before: Vec<_> =
        till_server::migrations().into_iter().filter(|migrations| migrations.schema != "webhooks").collect();
    till_db::migrate(&owner, &before).await.expect("the old migrations");
    let (business, endpoint, delivered, waiting) =
        (uuid::Uuid::now_v7(), uuid::Uuid::now_v7(), uuid::Uuid::now_v7(), uuid::Uuid::now_v7());
    sqlx::query(
        "INSERT INTO events.webhook_endpoints (id, business_id, url, enabled_events, secret)
         VALUES ($1, $2, 'https://hooks.example.com/till', '{*}', 'whsec_old')",
    )
    .bind(endpoint)
    .bind(business)
    .execute(&owner)
    .await
    .expect("an endpoint in the old schema");
    for (event, position_hint) in [(delivered, 1), (waiting, 2)] {
        sqlx::query(
            "INSERT INTO events.log (id, type, version, business_id, resource_id, sequence, occurred_at, data)
             VALUES ($1, 'account.created', 1, $2, $3, 1, now(), '{}')",
        )
        .bind(event)
        .bind(business)
        .bind(format!("acct_{position_hint}"))
        .execute(&owner)
        .await
        .expect("a logged event");
    }
    // The old fan-out turns both into deliveries; one is then attempted and succeeds.
    let consumed: i32 = sqlx::query_scalar("SELECT events.fan_out_webhooks(1000, 100, '{}', '{}')")
        .fetch_one(&owner)
        .await
        .expect("the old fan-out");
    assert_eq!(consumed, 2);
    sqlx::query(
        "SELECT events.record_webhook_attempt(d.id, true, 200, 12, NULL, NULL, 5, '1 minute', '1 hour')
           FROM events.webhook_deliveries d WHERE d.event_id = $1",
    )
    .bind(delivered)
    .execute(&owner)
    .await
    .expect("an attempt recorded the old way");

    till_db::migrate(&owner, &till_server::migrations()).await.expect("the upgrade");

    let rows: (i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM webhooks.endpoints), (SELECT count(*) FROM webhooks.deliveries),
                (SELECT count(*) FROM webhooks.attempts)",
    )
    .fetch_one(&owner)
    .await
    .expect("the moved rows");
    assert_eq!(rows, (1, 2, 1), "endpoints, deliveries and attempts moved with their rows");
    let left_behind: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
          WHERE n.nspname = 'events' AND p.proname IN ('fan_out_webhooks', 'claim_webhook_deliveries',
                'record_webhook_attempt', 'disable_failing_endpoints', 'role_rank')",
    )
    .fetch_one(&owner)
    .await
    .expect("functions");
    assert_eq!(left_behind, 0, "the old functions are gone from events");
    // The remade functions work on the moved rows, as the worker's role calls them: the
    // cursor has not moved back (nothing fans out twice), the waiting delivery is claimed
    // with its endpoint's URL, and its attempt is recorded.
    let app = database.app_pool(2).await.expect("app pool");
    let again: i32 = sqlx::query_scalar("SELECT webhooks.fan_out(1000, 100, '{}', '{}')")
        .fetch_one(&app)
        .await
        .expect("the new fan-out");
    assert_eq!(again, 0, "the cursor survived the move");
    let claimed: Vec<(uuid::Uuid, String, uuid::Uuid)> = sqlx::query_as(
        "SELECT delivery_id, url, event_id FROM webhooks.claim_deliveries(10, '1 minute'::interval, 4, 16, 5)",
    )
    .fetch_all(&app)
    .await
    .expect("the new claim");
    assert_eq!(claimed.len(), 1, "only the waiting delivery: {claimed:?}");
    assert_eq!((claimed[0].1.as_str(), claimed[0].2), ("https://hooks.example.com/till", waiting));
    sqlx::query("SELECT webhooks.record_attempt($1, true, 200, 9, NULL, NULL, 5, '1 minute', '1 hour')")
        .bind(claimed[0].0)
        .execute(&app)
        .await
        .expect("the new record");
    let succeeded: i64 = sqlx::query_scalar("SELECT count(*) FROM webhooks.deliveries WHERE status = 'succeeded'")
        .fetch_one(&owner)
        .await
        .expect("statuses");
    assert_eq!(succeeded, 2);
    app.close().await;
    owner.close().await;
}

/// Found by schemathesis: deleting an endpoint while the delivery worker held one of its
/// deliveries deadlocked (a 500). The worker locks a delivery and then its endpoint; here
/// a transaction does the same by hand around a DELETE, which must wait for it rather
/// than deadlock with it, and then succeed.
#[tokio::test]
async fn deleting_an_endpoint_waits_for_a_delivery_in_hand_and_never_deadlocks_with_it() {
    let app = spawn_app().await;
    let business = app.create_business("GB").await;
    let k = &business.owner_key;
    let hole = black_hole().await;
    let (endpoint, _) = create_endpoint(&app, k, &format!("http://{hole}/hook")).await;
    let endpoint_uuid = uuid::Uuid::parse_str(endpoint.trim_start_matches("we_")).expect("uuid");
    many_transfers(&app, k, 1).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let delivery: uuid::Uuid = loop {
        let found: Option<uuid::Uuid> =
            sqlx::query_scalar("SELECT id FROM webhooks.deliveries WHERE endpoint_id = $1 LIMIT 1")
                .bind(endpoint_uuid)
                .fetch_optional(&app.owner_pool)
                .await
                .expect("deliveries");
        if let Some(found) = found {
            break found;
        }
        assert!(Instant::now() < deadline, "a delivery for the endpoint");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };

    // The worker's order: the delivery first.
    let mut worker = app.owner_pool.begin().await.expect("begin");
    sqlx::query("SELECT 1 FROM webhooks.deliveries WHERE id = $1 FOR UPDATE")
        .bind(delivery)
        .execute(&mut *worker)
        .await
        .expect("lock the delivery");
    let delete = {
        let request = app.request(reqwest::Method::DELETE, &format!("/v1/webhook_endpoints/{endpoint}"), k);
        tokio::spawn(async move { request.send().await.expect("delete").status().as_u16() })
    };
    // Until the DELETE waits on a lock this transaction holds (this test's database only:
    // the cluster is shared with other tests).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock' \
             AND query LIKE 'DELETE FROM webhooks.%'",
        )
        .fetch_one(&app.owner_pool)
        .await
        .expect("activity");
        if waiting > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "the DELETE never waited on the delivery");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Then its endpoint, as recording an attempt does: the DELETE must not hold it yet.
    sqlx::query("SELECT 1 FROM webhooks.endpoints WHERE id = $1 FOR UPDATE")
        .bind(endpoint_uuid)
        .execute(&mut *worker)
        .await
        .expect("the endpoint's lock, without a deadlock");
    worker.commit().await.expect("commit");
    assert_eq!(delete.await.expect("the DELETE task"), 204);
    assert_eq!(app.get(&format!("/v1/webhook_endpoints/{endpoint}"), k).await.status().as_u16(), 404);
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM webhooks.deliveries WHERE endpoint_id = $1")
        .bind(endpoint_uuid)
        .fetch_one(&app.owner_pool)
        .await
        .expect("count");
    assert_eq!(left, 0, "its deliveries went with it");
}
