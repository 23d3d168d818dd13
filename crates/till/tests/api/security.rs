//! What a black-box probe of the OWASP API Top 10 found (issue 13), each finding with the
//! test that failed before its fix. Findings tested in another module say where:
//!
//! 1. Admin → owner through Idempotency-Key replay: `idempotency::an_admin_repeating_…`,
//!    `idempotency::a_lower_roles_stored_refusal_…` (the reverse),
//!    `idempotency::another_principal_of_the_business_…` (every POST route, as a second
//!    owner key), `idempotency::a_key_stored_before_keys_had_principals_…`,
//!    `auth::a_replay_needs_the_role_that_made_the_request` (a demoted JWT subject).
//! 2. Cross-tenant webhook starvation: `webhooks::a_noisy_business_on_a_black_hole_…`,
//!    `webhooks::a_failing_endpoint_opens_its_breaker_…`,
//!    `webhooks::an_endpoint_holds_a_bounded_backlog_and_replays_are_bounded`.
//! 3. Secrets at rest: `no_secret_rests_in_plain_text_…`,
//!    `webhook_signing_secrets_are_sealed_and_resealed_…`.
//! 4. NUL bytes and other controls: `text_with_controls_or_bidi_overrides_…`,
//!    `a_command_the_database_refuses_fails_alone_…`.
//! 5. Slowloris: `slow_clients::*`.
//! 6. Unthrottled authentication failures: `auth::failed_authentication_is_throttled_…`,
//!    `auth::platform_routes_are_rate_limited`.
//! 7. Viewers reading API-key events: `viewers_cannot_read_api_key_events_…`.
//! 8. SSRF guard gaps: `webhooks::hostile_urls_are_refused_…` (and `guard`'s unit tests).
//! 9. An internal-DNS oracle in delivery errors: `webhooks::hostile_urls_are_refused_…`.
//! 10. nosniff, CSP, frame-ancestors: `every_response_says_nosniff_…`.
//! 11. Data after the JSON body: `data_after_the_json_body_is_refused`.
//! 12. JWT lifetime, `iat`, revocation, two Authorization headers:
//!     `auth::dashboard_tokens_need_iat_live_briefly_and_can_be_revoked`,
//!     `auth::two_authorization_headers_are_refused`.
//! 13. Problem `param` names: `ledger::bad_transfers_are_clear_4xx_…`,
//!     `ledger::a_batch_is_all_or_nothing`, and the access domain's unit test of the
//!     key-name detail.

use futures::future::join_all;
use serde_json::{json, Value};
use till_testkit::{problem, spawn_app, TestApp, TestBusiness};

use crate::ledger_helpers::{key, posted, source, transfer_body, transfer_count, wallet};

/// Text that is not human text, in the spellings the probe used.
const HOSTILE: [&str; 5] = ["nul\u{0}byte", "esc\u{1b}[2J", "line\r\nbreak", "\u{202e}fdp.exe", "bell\u{7}"];

async fn assert_refused(response: reqwest::Response, param: &str, what: &str) {
    assert_eq!(response.status().as_u16(), 400, "{what}");
    let body = problem(response).await;
    assert_eq!(body["param"], param, "{what}: {body}");
}

#[tokio::test]
async fn text_with_controls_or_bidi_overrides_is_a_400_naming_the_field_in_every_text_field() {
    let app = spawn_app().await;
    let business = app.create_business("GB").await;
    let k = &business.owner_key;
    let (bank, alice) = (source(&app, k, "GBP").await, wallet(&app, k, "GBP").await);
    let payment = posted(&app, k, &bank, &alice, 500).await;
    let account_body = |name: &str| json!({ "name": name, "currency": "GBP", "normal_balance": "credit" });
    let (accounts_before, transfers_before) = (accounts(&app).await, transfer_count(&app).await);
    for text in HOSTILE {
        let what = format!("{text:?}");
        assert_refused(app.post("/v1/accounts", k, &key(), &account_body(text)).await, "name", &what).await;
        let with_metadata = json!({ "name": "ok", "currency": "GBP", "normal_balance": "credit",
                                    "metadata": { "note": text } });
        assert_refused(app.post("/v1/accounts", k, &key(), &with_metadata).await, "metadata", &what).await;
        let metadata_key = json!({ "name": "ok", "currency": "GBP", "normal_balance": "credit",
                                   "metadata": { text: "v" } });
        assert_refused(app.post("/v1/accounts", k, &key(), &metadata_key).await, "metadata", &what).await;
        let rename = app
            .request(reqwest::Method::PATCH, &format!("/v1/accounts/{alice}"), k)
            .json(&json!({ "name": text }))
            .send()
            .await
            .expect("patch");
        assert_refused(rename, "name", &what).await;
        let mut transfer = transfer_body(&bank, &alice, 1);
        transfer["description"] = json!(text);
        assert_refused(app.post("/v1/transfers", k, &key(), &transfer).await, "description", &what).await;
        let batch = json!({ "transfers": [transfer_body(&bank, &alice, 1), transfer] });
        let refused = app.post("/v1/transfers/batch", k, &key(), &batch).await;
        assert_refused(refused, "transfers[1].description", &what).await;
        let reverse =
            app.post(&format!("/v1/transfers/{payment}/reverse"), k, &key(), &json!({ "description": text })).await;
        assert_refused(reverse, "description", &what).await;
        let api_key = json!({ "name": text, "role": "viewer" });
        assert_refused(app.post("/v1/api_keys", k, &key(), &api_key).await, "name", &what).await;
        let business_body = json!({ "legal_name": text, "country": "GB" });
        let onboarding = app.post("/v1/platform/businesses", &app.admin_token, &key(), &business_body).await;
        assert_refused(onboarding, "legal_name", &what).await;
        let endpoint = json!({ "url": "https://hooks.example.com/x", "enabled_events": ["*"], "description": text });
        assert_refused(app.post("/v1/webhook_endpoints", k, &key(), &endpoint).await, "description", &what).await;
    }
    for resource_id in ["tr_\u{0}", "tr_x%00", "' OR 1=1 --", &"a".repeat(65)] {
        let url = reqwest::Url::parse_with_params(&app.url("/v1/events"), [("resource_id", resource_id)]).expect("url");
        let response = app.client.get(url).bearer_auth(k).send().await.expect("get");
        assert_refused(response, "resource_id", resource_id).await;
    }
    assert_eq!(accounts(&app).await, accounts_before, "nothing was stored");
    assert_eq!(transfer_count(&app).await, transfers_before, "nothing was stored");
    assert_eq!(name_of(&app, k, &alice).await, "Wallet", "the rename changed nothing");
}

async fn accounts(app: &TestApp) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM ledger.accounts").fetch_one(&app.owner_pool).await.expect("count")
}

async fn name_of(app: &TestApp, credential: &str, account: &str) -> String {
    let body: Value = app.get(&format!("/v1/accounts/{account}"), credential).await.json().await.expect("json");
    body["name"].as_str().unwrap_or_default().to_string()
}

/// 24 transfers sent at once, held back by a fail point so that they form one batch, one
/// of them carrying a value the database refuses (as it refused a NUL): it alone fails.
#[tokio::test]
async fn a_command_the_database_refuses_fails_alone_never_its_batch() {
    let app = spawn_app().await;
    let business = app.create_business("GB").await;
    let k = &business.owner_key;
    let (bank, alice) = (source(&app, k, "GBP").await, wallet(&app, k, "GBP").await);
    let before = transfer_count(&app).await;
    arm(&business, &["ledger::gather_batch", "ledger::refuse_poisoned_description"]);
    let requests = (0..24).map(|index| {
        let mut body = transfer_body(&bank, &alice, 10);
        if index == 13 {
            body["description"] = json!("poison");
        }
        let app = &app;
        async move { (index, app.post("/v1/transfers", k, &key(), &body).await) }
    });
    let responses = join_all(requests).await;
    disarm(&["ledger::gather_batch", "ledger::refuse_poisoned_description"]);
    for (index, response) in responses {
        let status = response.status().as_u16();
        if index == 13 {
            assert_eq!(status, 400, "the poisoned command is the client's 400");
            assert_eq!(problem(response).await["code"], "invalid_request");
        } else {
            assert_eq!(status, 201, "transfer {index} failed with its batch");
        }
    }
    assert_eq!(transfer_count(&app).await, before + 23);
}

fn arm(business: &TestBusiness, points: &[&str]) {
    for point in points {
        fail::cfg(*point, &format!("return({})", business.id)).expect("arming");
    }
}

fn disarm(points: &[&str]) {
    for point in points {
        fail::remove(*point);
    }
}

#[tokio::test]
async fn data_after_the_json_body_is_refused() {
    let app = spawn_app().await;
    let business = app.create_business("GB").await;
    let before = accounts(&app).await;
    for body in [
        r#"{"name": "a", "currency": "GBP", "normal_balance": "credit"} trailing garbage"#,
        r#"{"name": "a", "currency": "GBP", "normal_balance": "credit"}{"name": "b"}"#,
        r#"{"name": "a", "currency": "GBP", "normal_balance": "credit"} 1"#,
    ] {
        let response = app
            .request(reqwest::Method::POST, "/v1/accounts", &business.owner_key)
            .header("Idempotency-Key", key())
            .header("Content-Type", "application/json")
            .body(body)
            .send()
            .await
            .expect("post");
        assert_eq!(response.status().as_u16(), 400, "{body}");
        assert_eq!(problem(response).await["code"], "invalid_json", "{body}");
    }
    let spaced = app
        .request(reqwest::Method::POST, "/v1/accounts", &business.owner_key)
        .header("Idempotency-Key", key())
        .header("Content-Type", "application/json")
        .body("{\"name\": \"a\", \"currency\": \"GBP\", \"normal_balance\": \"credit\"}\n \t\r\n")
        .send()
        .await
        .expect("post");
    assert_eq!(spaced.status().as_u16(), 201, "whitespace after the document is fine");
    assert_eq!(accounts(&app).await, before + 1);
}

/// Every response that shows a secret: the request, and how to find the secret in it.
async fn secret_responses(app: &TestApp, business: &TestBusiness) -> Vec<(String, reqwest::Response)> {
    let k = &business.owner_key;
    let endpoint = json!({ "url": "https://hooks.example.com/till", "enabled_events": ["*"] });
    let created = app.post("/v1/webhook_endpoints", k, "secret-endpoint", &endpoint).await;
    let created: Value = created.json().await.expect("json");
    let id = created["id"].as_str().expect("id").to_string();
    let onboarding = json!({ "legal_name": "Sealed Ltd", "country": "GB" });
    vec![
        (
            "POST /v1/api_keys".to_string(),
            app.post("/v1/api_keys", k, "secret-key", &json!({ "name": "sealed", "role": "viewer" })).await,
        ),
        (
            "POST /v1/platform/businesses".to_string(),
            app.post("/v1/platform/businesses", &app.admin_token, "secret-business", &onboarding).await,
        ),
        (
            "POST /v1/webhook_endpoints".to_string(),
            app.post("/v1/webhook_endpoints", k, "secret-endpoint", &endpoint).await,
        ),
        (
            "POST /v1/webhook_endpoints/{id}/rotate_secret".to_string(),
            app.post(&format!("/v1/webhook_endpoints/{id}/rotate_secret"), k, "secret-rotate", &json!({})).await,
        ),
    ]
}

#[tokio::test]
async fn no_secret_rests_in_plain_text_in_the_idempotency_store_and_replays_still_show_it() {
    let app = spawn_app().await;
    let business = app.create_business("GB").await;
    // Twice: the first answers, the second replays (the endpoint's create was already
    // sent once inside `secret_responses`, so both of its rows here are replays).
    let first = secret_responses(&app, &business).await;
    let mut originals = Vec::new();
    for (what, response) in first {
        assert!(response.status().is_success(), "{what}: {}", response.status());
        assert_eq!(response.headers()["cache-control"], "no-store", "{what}");
        originals.push((what, response.bytes().await.expect("body")));
    }
    let again = secret_responses(&app, &business).await;
    for ((what, original), (_, replay)) in originals.iter().zip(again) {
        assert_eq!(replay.headers()["idempotent-replayed"], "true", "{what}");
        assert_eq!(replay.headers()["cache-control"], "no-store", "{what}: a replay is not cacheable either");
        assert_eq!(&replay.bytes().await.expect("body"), original, "{what}: the replay is the same bytes");
        let text = String::from_utf8_lossy(original);
        assert!(text.contains("till_sk_") || text.contains("whsec_"), "{what} shows a secret");
    }
    let stored: Vec<(String, Vec<u8>)> = sqlx::query_as("SELECT path, response_body FROM api.idempotency_keys")
        .fetch_all(&app.owner_pool)
        .await
        .expect("stored responses");
    // Four here, and the harness's own onboarding of the business (its owner key).
    assert!(stored.len() >= 5, "{} stored responses", stored.len());
    for (path, body) in stored {
        let text = String::from_utf8_lossy(&body);
        assert!(!text.contains("till_sk_") && !text.contains("whsec_"), "{path} stores a secret in plain text");
    }
}

#[tokio::test]
async fn every_response_says_nosniff_and_the_docs_page_may_not_be_framed() {
    let app = spawn_app().await;
    let business = app.create_business("GB").await;
    for (path, credential) in [
        ("/v1/business", Some(business.owner_key.as_str())),
        ("/v1/business", None),
        ("/v1/no-such-route", None),
        ("/healthz", None),
        ("/v1/openapi.json", None),
        ("/docs/", None),
    ] {
        let mut request = app.client.get(app.url(path));
        if let Some(credential) = credential {
            request = request.bearer_auth(credential);
        }
        let response = request.send().await.expect("get");
        assert_eq!(response.headers()["x-content-type-options"], "nosniff", "{path}");
        let policy = response.headers()["content-security-policy"].to_str().expect("ascii").to_string();
        assert!(policy.contains("frame-ancestors 'none'"), "{path}: {policy}");
        if path.starts_with("/docs") {
            assert_eq!(response.headers()["x-frame-options"], "DENY");
            assert!(policy.contains("script-src 'self'") && !policy.contains("unsafe-eval"), "{policy}");
        } else {
            assert_eq!(response.headers()["cache-control"], "no-store", "{path}");
        }
    }
}

/// API-key events carry the key inventory, which only admins may list: viewers see none
/// of them in the event log, and an endpoint whose creator's role is below admin
/// receives none.
#[tokio::test]
async fn viewers_cannot_read_api_key_events_in_the_log_or_through_webhooks() {
    let app = spawn_app().await;
    let business = app.create_business("GB").await;
    let viewer = app.create_key(&business, "viewer").await;
    let admin = app.create_key(&business, "admin").await;
    // Two endpoints made by the admin; one is made a viewer's, as an endpoint of a
    // dashboard role below admin would be.
    let endpoint = |idempotency_key: String| {
        let (app, admin) = (&app, admin.clone());
        async move {
            let body = json!({ "url": "https://hooks.example.com/till", "enabled_events": ["*"] });
            let created = app.post("/v1/webhook_endpoints", &admin, &idempotency_key, &body).await;
            let created: Value = created.json().await.expect("json");
            uuid::Uuid::parse_str(created["id"].as_str().expect("id").trim_start_matches("we_")).expect("uuid")
        }
    };
    let admins = endpoint(key()).await;
    let viewers = endpoint(key()).await;
    sqlx::query("UPDATE webhooks.endpoints SET reader_role = 'viewer' WHERE id = $1")
        .bind(viewers)
        .execute(&app.owner_pool)
        .await
        .expect("a viewer's endpoint");
    // Only events that come after the endpoint became a viewer's count: the keys made
    // before may already have been fanned out to it while it was still an admin's.
    let created = app.post("/v1/api_keys", &business.owner_key, &key(), &json!({"name": "x", "role": "viewer"})).await;
    assert_eq!(created.status().as_u16(), 201);
    let created: Value = created.json().await.expect("json");
    let key_id = created["id"].as_str().expect("id").to_string();
    let wallet_id = wallet(&app, &business.owner_key, "GBP").await;

    // Wait until the wallet's event reached the admin's endpoint: everything before it was
    // fanned out by then.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let delivered = |endpoint: uuid::Uuid| {
        let pool = app.owner_pool.clone();
        let resources = vec![key_id.clone(), wallet_id.clone()];
        async move {
            sqlx::query_scalar::<_, String>(
                "SELECT l.type FROM webhooks.deliveries d JOIN events.log l ON l.id = d.event_id
                  WHERE d.endpoint_id = $1 AND l.resource_id = ANY($2) ORDER BY l.position",
            )
            .bind(endpoint)
            .bind(resources)
            .fetch_all(&pool)
            .await
            .expect("deliveries")
        }
    };
    while !delivered(admins).await.contains(&"account.created".to_string()) {
        assert!(std::time::Instant::now() < deadline, "the events were fanned out");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let to_admin = delivered(admins).await;
    assert_eq!(to_admin, vec!["api_key.created", "account.created"], "an admin's endpoint gets key events");
    let to_viewer = delivered(viewers).await;
    assert_eq!(to_viewer, vec!["account.created"], "a viewer's endpoint gets no key event");

    let listed: Value = app.get("/v1/events?type=api_key.created", &viewer).await.json().await.expect("json");
    assert_eq!(listed["data"], json!([]), "a viewer lists no key events");
    let all: Value = app.get("/v1/events?limit=100", &viewer).await.json().await.expect("json");
    let types: Vec<&str> = all["data"].as_array().expect("data").iter().filter_map(|e| e["type"].as_str()).collect();
    assert!(types.contains(&"account.created") && !types.iter().any(|t| t.starts_with("api_key.")), "{types:?}");
    let as_admin: Value = app.get("/v1/events?type=api_key.created", &admin).await.json().await.expect("json");
    let key_event = as_admin["data"][0]["id"].as_str().expect("an admin sees key events").to_string();
    let one = app.get(&format!("/v1/events/{key_event}"), &viewer).await;
    assert_eq!(one.status().as_u16(), 404, "as invisible to a viewer as another business's event");
    assert_eq!(app.get(&format!("/v1/events/{key_event}"), &admin).await.status().as_u16(), 200);
}

/// Webhook signing secrets are sealed at rest; secrets written before sealing (plain)
/// and secrets sealed with a retired key are sealed with the current key by `reseal`,
/// and an endpoint keeps the same secret throughout.
#[tokio::test]
async fn webhook_signing_secrets_are_sealed_and_resealed_after_a_key_rotation() {
    use till_kit::Keyring;
    use till_webhooks::secrets;
    let old_text = Keyring::generate_text("old").expect("random");
    let mut config = till_testkit::test_config();
    config.keyring = std::sync::Arc::new(Keyring::parse(&old_text).expect("keyring"));
    let app = till_testkit::spawn_app_with(config, Default::default()).await;
    let business = app.create_business("GB").await;
    let body = json!({ "url": "https://hooks.example.com/till", "enabled_events": ["*"] });
    let created: Value =
        app.post("/v1/webhook_endpoints", &business.owner_key, &key(), &body).await.json().await.expect("json");
    let secret = created["secret"].as_str().expect("secret").to_string();
    let id = uuid::Uuid::parse_str(created["id"].as_str().expect("id").trim_start_matches("we_")).expect("uuid");
    let stored = || async {
        sqlx::query_as::<_, (Option<String>, Option<Vec<u8>>)>(
            "SELECT secret, secret_sealed FROM webhooks.endpoints WHERE id = $1",
        )
        .bind(id)
        .fetch_one(&app.owner_pool)
        .await
        .expect("row")
    };
    let (plain, sealed) = stored().await;
    assert_eq!(plain, None, "no plain secret is stored");
    let sealed = sealed.expect("a sealed secret");
    assert!(!String::from_utf8_lossy(&sealed).contains("whsec_"));
    let opened = secrets::open(&app.keyring, id, Some(&sealed), None).expect("opens").expect("a secret");
    assert_eq!(opened.expose_secret(), &secret);

    // As a row written before sealing: plain only. `reseal` seals it.
    sqlx::query("UPDATE webhooks.endpoints SET secret = $2, secret_sealed = NULL WHERE id = $1")
        .bind(id)
        .bind(&secret)
        .execute(&app.owner_pool)
        .await
        .expect("a legacy row");
    assert_eq!(secrets::reseal(&app.owner_pool, &app.keyring).await.expect("reseal"), 1);
    let (plain, sealed) = stored().await;
    assert_eq!(plain, None);
    assert_eq!(Keyring::key_id_of(sealed.as_deref().unwrap_or_default()), Some("old"));

    // A rotation: the new key first, the old one after it. `reseal` moves the secret to
    // the new key, after which the old key can leave the keyring.
    let new_text = Keyring::generate_text("new").expect("random");
    let rotated = Keyring::parse(&format!("{new_text},{old_text}")).expect("keyring");
    assert_eq!(secrets::reseal(&app.owner_pool, &rotated).await.expect("reseal"), 1);
    assert_eq!(secrets::reseal(&app.owner_pool, &rotated).await.expect("reseal"), 0, "nothing left to move");
    let (_, sealed) = stored().await;
    assert_eq!(Keyring::key_id_of(sealed.as_deref().unwrap_or_default()), Some("new"));
    let new_only = Keyring::parse(&new_text).expect("keyring");
    let opened = secrets::open(&new_only, id, sealed.as_deref(), None).expect("opens").expect("a secret");
    assert_eq!(opened.expose_secret(), &secret);
}

mod slow_clients {
    //! Slowloris and its kin: each kind of slow client is cut off, and the connection
    //! cap holds, with the limits lowered for the test.

    use std::time::{Duration, Instant};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    use till_testkit::{spawn_app_with, test_config, TestApp};

    async fn spawn(header_timeout: Duration, connections_max: usize) -> TestApp {
        let mut config = test_config();
        config.http.header_timeout = header_timeout;
        config.http.body_timeout = Duration::from_secs(1);
        config.http.connections_max = connections_max;
        spawn_app_with(config, Default::default()).await
    }

    async fn connect(app: &TestApp) -> TcpStream {
        TcpStream::connect(app.address.trim_start_matches("http://")).await.expect("connect")
    }

    /// Everything the server sends until it closes the connection, or `None` if it is
    /// still open after `within`.
    async fn until_closed(stream: &mut TcpStream, within: Duration) -> Option<Vec<u8>> {
        let mut received = Vec::new();
        let mut buffer = [0_u8; 4096];
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            match tokio::time::timeout(left, stream.read(&mut buffer)).await {
                Err(_) => return None,
                Ok(Ok(0) | Err(_)) => return Some(received),
                Ok(Ok(read)) => received.extend_from_slice(&buffer[..read]),
            }
        }
    }

    #[tokio::test]
    async fn headers_sent_slowly_are_cut_off() {
        let app = spawn(Duration::from_secs(1), 64).await;
        let mut stream = connect(&app).await;
        stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: till\r\n").await.expect("write");
        let started = Instant::now();
        let (mut read, mut write) = stream.into_split();
        let trickle = tokio::spawn(async move {
            // One header line every 300 ms, for up to 20 s: longer than any test allows.
            for _ in 0..66 {
                tokio::time::sleep(Duration::from_millis(300)).await;
                if write.write_all(b"X-Slow: 1\r\n").await.is_err() {
                    return;
                }
            }
        });
        let mut buffer = [0_u8; 1024];
        let closed = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match read.read(&mut buffer).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        })
        .await;
        trickle.abort();
        assert!(closed.is_ok(), "a client trickling headers kept its connection for 10 s");
        assert!(started.elapsed() < Duration::from_secs(5), "closed after {:?}", started.elapsed());
    }

    #[tokio::test]
    async fn an_idle_connection_is_closed() {
        let app = spawn(Duration::from_secs(1), 64).await;
        let mut stream = connect(&app).await;
        stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: till\r\n\r\n").await.expect("write");
        // The answer comes, then nothing more is sent: the server closes the idle
        // keep-alive connection after the header timeout.
        let received = until_closed(&mut stream, Duration::from_secs(10)).await;
        let received = received.expect("an idle keep-alive connection stayed open for 10 s");
        assert!(String::from_utf8_lossy(&received).starts_with("HTTP/1.1 200"), "{received:?}");
    }

    #[tokio::test]
    async fn a_body_sent_slowly_is_a_408_and_a_huge_one_a_413_at_once() {
        let app = spawn(Duration::from_secs(5), 64).await;
        let business = app.create_business("GB").await;
        let mut stream = connect(&app).await;
        let head = format!(
            "POST /v1/accounts HTTP/1.1\r\nHost: till\r\nAuthorization: Bearer {}\r\nIdempotency-Key: slow-body\r\n\
             Content-Type: application/json\r\nContent-Length: 200\r\n\r\n",
            business.owner_key
        );
        stream.write_all(head.as_bytes()).await.expect("write");
        let (mut read, mut write) = stream.into_split();
        let trickle = tokio::spawn(async move {
            for _ in 0..60 {
                tokio::time::sleep(Duration::from_millis(300)).await;
                if write.write_all(b" ").await.is_err() {
                    return;
                }
            }
        });
        let mut received = Vec::new();
        let mut buffer = [0_u8; 4096];
        let answered = tokio::time::timeout(Duration::from_secs(10), async {
            while !String::from_utf8_lossy(&received).contains("\r\n\r\n") {
                match read.read(&mut buffer).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => received.extend_from_slice(&buffer[..n]),
                }
            }
        })
        .await;
        trickle.abort();
        assert!(answered.is_ok(), "a trickled body held the request for 10 s");
        let text = String::from_utf8_lossy(&received);
        assert!(text.starts_with("HTTP/1.1 408"), "{text}");

        // 10 GB announced: refused before a byte of it, authenticated or not.
        let mut stream = connect(&app).await;
        let started = Instant::now();
        stream
            .write_all(
                b"POST /v1/accounts HTTP/1.1\r\nHost: till\r\nContent-Type: application/json\r\n\
                  Content-Length: 10000000000\r\n\r\n",
            )
            .await
            .expect("write");
        let received = until_closed(&mut stream, Duration::from_secs(10)).await.expect("answered and closed");
        let text = String::from_utf8_lossy(&received);
        assert!(text.starts_with("HTTP/1.1 413"), "{text}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[tokio::test]
    async fn connections_past_the_cap_wait_until_one_ends() {
        let app = spawn(Duration::from_secs(30), 2).await;
        // Two connections that send nothing hold both places.
        let holders = [connect(&app).await, connect(&app).await];
        // Give the server ample time to accept both (a loaded machine is slow to).
        tokio::time::sleep(Duration::from_secs(1)).await;
        let mut third = connect(&app).await;
        third.write_all(b"GET /healthz HTTP/1.1\r\nHost: till\r\nConnection: close\r\n\r\n").await.expect("write");
        assert_eq!(until_closed(&mut third, Duration::from_secs(1)).await, None, "served past the cap");
        drop(holders);
        let received = until_closed(&mut third, Duration::from_secs(10)).await.expect("served once a place freed");
        assert!(String::from_utf8_lossy(&received).starts_with("HTTP/1.1 200"));
    }
}
