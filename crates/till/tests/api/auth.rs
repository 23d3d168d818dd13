//! Authentication: every way a credential can be wrong is a 401 problem, and the classic
//! JWT attacks fail.

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::Method;
use serde_json::json;
use till_access::jwt::JwtKeyConfig;
use till_testkit::{problem, spawn_app, spawn_app_with, test_config, TestApp};

const ISSUER: &str = "https://dashboard.till.test";
const AUDIENCE: &str = "till-api";
const HMAC_SECRET: &str = "a-test-hmac-secret-of-at-least-32-bytes!";

fn fixture(name: &str) -> String {
    let path = format!("{}/tests/fixtures/jwt/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|error| panic!("{path}: {error}"))
}

fn jwt_keys() -> Vec<JwtKeyConfig> {
    let public = |kid: &str, alg: &str, file: &str| JwtKeyConfig {
        kid: kid.into(),
        alg: alg.into(),
        public_key_pem: Some(fixture(file)),
        secret: None,
    };
    vec![
        public("ed", "EdDSA", "ed25519.pub"),
        public("ec", "ES256", "es256.pub"),
        public("rsa", "RS256", "rs256.pub"),
        JwtKeyConfig { kid: "hs".into(), alg: "HS256".into(), public_key_pem: None, secret: Some(HMAC_SECRET.into()) },
    ]
}

async fn spawn_with_jwt() -> TestApp {
    let mut config = test_config();
    config.jwt_keys = jwt_keys();
    config.jwt_issuer = Some(ISSUER.into());
    config.jwt_audience = Some(AUDIENCE.into());
    config.jwt_leeway_seconds = 5;
    spawn_app_with(config, Default::default()).await
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn claims(business_id: &str) -> serde_json::Value {
    json!({
        "sub": "user_42", "iss": ISSUER, "aud": AUDIENCE, "exp": now() + 300, "iat": now(),
        "business_id": business_id, "role": "viewer",
    })
}

fn sign(alg: Algorithm, kid: &str, claims: &serde_json::Value) -> String {
    let key = match alg {
        Algorithm::EdDSA => EncodingKey::from_ed_pem(fixture("ed25519.key").as_bytes()),
        Algorithm::ES256 => EncodingKey::from_ec_pem(fixture("es256.key").as_bytes()),
        Algorithm::RS256 => EncodingKey::from_rsa_pem(fixture("rs256.key").as_bytes()),
        _ => Ok(EncodingKey::from_secret(HMAC_SECRET.as_bytes())),
    }
    .expect("test key");
    let mut header = Header::new(alg);
    header.kid = Some(kid.to_string());
    jsonwebtoken::encode(&header, claims, &key).expect("signing")
}

fn b64(bytes: &[u8]) -> String {
    use base64_engine::Engine;
    base64_engine::URL_SAFE_NO_PAD.encode(bytes)
}

mod base64_engine {
    pub use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    pub use base64::Engine;
}

async fn assert_unauthenticated(app: &TestApp, credential: Option<&str>, why: &str) {
    let mut request = app.client.request(Method::GET, app.url("/v1/business"));
    if let Some(credential) = credential {
        request = request.header("Authorization", credential);
    }
    let response = request.send().await.expect("request");
    assert_eq!(response.status().as_u16(), 401, "{why}");
    assert_eq!(problem(response).await["code"], "unauthenticated", "{why}");
}

#[tokio::test]
async fn api_key_failures_are_all_401() {
    let app = spawn_app().await;
    let business = app.create_business("GB").await;
    let key = business.owner_key.clone();
    assert_unauthenticated(&app, None, "no header").await;
    assert_unauthenticated(&app, Some(""), "empty header").await;
    assert_unauthenticated(&app, Some(&format!("Basic {key}")), "wrong scheme").await;
    assert_unauthenticated(&app, Some("Bearer "), "empty token").await;
    assert_unauthenticated(&app, Some("Bearer till_sk_"), "bare prefix").await;
    assert_unauthenticated(&app, Some("Bearer till_sk_!!!"), "not base64").await;
    let mut tampered = key.clone();
    let last = tampered.pop().expect("char");
    tampered.push(if last == 'A' { 'B' } else { 'A' });
    assert_unauthenticated(&app, Some(&format!("Bearer {tampered}")), "wrong secret").await;
    let unknown = till_access::domain::IssuedApiKey::generate();
    assert_unauthenticated(&app, Some(&format!("Bearer {}", unknown.token.expose_secret())), "unknown key").await;

    // Revoked: works before, refused after.
    let viewer = app.create_key(&business, "viewer").await;
    assert_eq!(app.get("/v1/business", &viewer).await.status().as_u16(), 200);
    let keys: serde_json::Value = app.get("/v1/api_keys?limit=1", &key).await.json().await.expect("list");
    let viewer_id = keys["data"][0]["id"].as_str().expect("id").to_string();
    let revoked = app.request(Method::DELETE, &format!("/v1/api_keys/{viewer_id}"), &key).send().await.expect("revoke");
    assert_eq!(revoked.status().as_u16(), 200);
    assert_unauthenticated(&app, Some(&format!("Bearer {viewer}")), "revoked key").await;

    // The platform token is not a tenant credential, and a tenant key is not a platform one.
    assert_unauthenticated(&app, Some(&format!("Bearer {}", app.admin_token)), "admin token on a tenant route").await;
    let response = app.post("/v1/platform/businesses", &key, "p1", &json!({"legal_name": "X", "country": "GB"})).await;
    assert_eq!(response.status().as_u16(), 401);
}

#[tokio::test]
async fn api_key_use_is_recorded_and_the_secret_is_stored_only_as_a_hash() {
    let app = spawn_app().await;
    let business = app.create_business("GB").await;
    assert_eq!(app.get("/v1/business", &business.owner_key).await.status().as_u16(), 200);
    let keys: serde_json::Value = app.get("/v1/api_keys", &business.owner_key).await.json().await.expect("list");
    assert!(keys["data"][0]["last_used_at"].is_string(), "last_used_at is set: {keys}");
    assert!(keys["data"][0].get("secret").is_none(), "the secret is never listed");
    let stored: Vec<Vec<u8>> =
        sqlx::query_scalar("SELECT secret_hash FROM access.api_keys").fetch_all(&app.owner_pool).await.expect("hashes");
    let dump = format!("{stored:?}");
    let secret_part = business.owner_key.trim_start_matches("till_sk_");
    assert!(stored.iter().all(|hash| hash.len() == 32));
    assert!(!dump.contains(secret_part));
}

#[tokio::test]
async fn valid_jwts_of_every_allowed_algorithm_authenticate() {
    let app = spawn_with_jwt().await;
    let business = app.create_business("IN").await;
    for (alg, kid) in
        [(Algorithm::EdDSA, "ed"), (Algorithm::ES256, "ec"), (Algorithm::RS256, "rsa"), (Algorithm::HS256, "hs")]
    {
        let token = sign(alg, kid, &claims(&business.id));
        let response = app.get("/v1/business", &token).await;
        assert_eq!(response.status().as_u16(), 200, "{alg:?}");
        let body: serde_json::Value = response.json().await.expect("json");
        assert_eq!(body["id"], business.id.as_str());
    }
}

#[tokio::test]
async fn classic_jwt_attacks_are_refused() {
    let app = spawn_with_jwt().await;
    let business = app.create_business("GB").await;
    let good = claims(&business.id);
    let bearer = |token: String| format!("Bearer {token}");

    // alg none, with and without a kid.
    for header in [json!({"alg": "none", "typ": "JWT", "kid": "ed"}), json!({"alg": "none"})] {
        let token = format!("{}.{}.", b64(header.to_string().as_bytes()), b64(good.to_string().as_bytes()));
        assert_unauthenticated(&app, Some(&bearer(token)), "alg none").await;
    }
    // HS/RS key confusion: an HS256 token "signed" with the RSA public key, naming the RSA key.
    let public_pem = fixture("rs256.pub");
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some("rsa".into());
    let confused =
        jsonwebtoken::encode(&header, &good, &EncodingKey::from_secret(public_pem.as_bytes())).expect("sign");
    assert_unauthenticated(&app, Some(&bearer(confused)), "HS256 with the RSA public key").await;
    // An RS256 token naming the HMAC key.
    assert_unauthenticated(&app, Some(&bearer(sign(Algorithm::RS256, "hs", &good))), "RS256 naming the HS key").await;
    // Expired (beyond the leeway), not yet valid, wrong audience, wrong issuer.
    let mut expired = good.clone();
    expired["exp"] = json!(now() - 120);
    assert_unauthenticated(&app, Some(&bearer(sign(Algorithm::EdDSA, "ed", &expired))), "expired").await;
    let mut early = good.clone();
    early["nbf"] = json!(now() + 120);
    assert_unauthenticated(&app, Some(&bearer(sign(Algorithm::EdDSA, "ed", &early))), "not yet valid").await;
    let mut audience = good.clone();
    audience["aud"] = json!("someone-else");
    assert_unauthenticated(&app, Some(&bearer(sign(Algorithm::ES256, "ec", &audience))), "wrong audience").await;
    let mut issuer = good.clone();
    issuer["iss"] = json!("https://evil.test");
    assert_unauthenticated(&app, Some(&bearer(sign(Algorithm::ES256, "ec", &issuer))), "wrong issuer").await;
    // Tampered payload under a valid signature.
    let token = sign(Algorithm::EdDSA, "ed", &good);
    let parts: Vec<&str> = token.split('.').collect();
    let mut escalated = good.clone();
    escalated["role"] = json!("owner");
    let tampered = format!("{}.{}.{}", parts[0], b64(escalated.to_string().as_bytes()), parts[2]);
    assert_unauthenticated(&app, Some(&bearer(tampered)), "tampered payload").await;
    // Flipped signature bits.
    let mut signature = parts[2].to_string();
    let first = signature.remove(0);
    signature.insert(0, if first == 'A' { 'B' } else { 'A' });
    assert_unauthenticated(&app, Some(&bearer(format!("{}.{}.{signature}", parts[0], parts[1]))), "bad signature")
        .await;
    // Unknown kid, and no kid when several keys are trusted.
    assert_unauthenticated(&app, Some(&bearer(sign(Algorithm::EdDSA, "other", &good))), "unknown kid").await;
    let no_kid =
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &good, &EncodingKey::from_secret(HMAC_SECRET.as_bytes()))
            .expect("sign");
    assert_unauthenticated(&app, Some(&bearer(no_kid)), "no kid").await;
    // Missing required claims, and claims that name no business or role.
    for missing in ["exp", "sub", "iss", "aud", "business_id", "role"] {
        let mut partial = good.clone();
        partial.as_object_mut().expect("object").remove(missing);
        assert_unauthenticated(&app, Some(&bearer(sign(Algorithm::EdDSA, "ed", &partial))), missing).await;
    }
    let mut bad_role = good.clone();
    bad_role["role"] = json!("superuser");
    assert_unauthenticated(&app, Some(&bearer(sign(Algorithm::EdDSA, "ed", &bad_role))), "unknown role").await;
    // A well-signed token for a business that does not exist.
    let ghost = claims("biz_00000000000000000000000000000000");
    assert_unauthenticated(&app, Some(&bearer(sign(Algorithm::EdDSA, "ed", &ghost))), "unknown business").await;
    // Garbage.
    assert_unauthenticated(&app, Some("Bearer a.b.c"), "garbage").await;
}

#[test]
fn jwt_configuration_is_validated_at_start_up() {
    use till_access::jwt::JwtVerifier;
    let short =
        JwtKeyConfig { kid: "hs".into(), alg: "HS256".into(), public_key_pem: None, secret: Some("short".into()) };
    assert!(JwtVerifier::new(&[short], Some(ISSUER), Some(AUDIENCE), 5, 3600).is_err(), "HS256 secret under 32 bytes");
    let none = JwtKeyConfig { kid: "n".into(), alg: "none".into(), public_key_pem: None, secret: None };
    assert!(JwtVerifier::new(&[none], Some(ISSUER), Some(AUDIENCE), 5, 3600).is_err(), "alg none");
    let hs512 =
        JwtKeyConfig { kid: "h".into(), alg: "HS512".into(), public_key_pem: None, secret: Some(HMAC_SECRET.into()) };
    assert!(JwtVerifier::new(&[hs512], Some(ISSUER), Some(AUDIENCE), 5, 3600).is_err(), "not on the allow-list");
    assert!(JwtVerifier::new(&jwt_keys(), Some(ISSUER), Some(AUDIENCE), 61, 3600).is_err(), "leeway over 60 s");
    assert!(JwtVerifier::new(&jwt_keys(), None, Some(AUDIENCE), 5, 3600).is_err(), "no issuer");
    assert!(JwtVerifier::new(&jwt_keys(), Some(ISSUER), Some(AUDIENCE), 60, 3600).is_ok());
}

#[tokio::test]
async fn a_burst_of_failures_is_recorded_in_the_audit_log() {
    let app = spawn_app().await;
    for _ in 0..till_access::authn::FAILURE_BURST_THRESHOLD {
        let response = app.get("/v1/business", "till_sk_wrong").await;
        assert_eq!(response.status().as_u16(), 401);
    }
    let bursts: i64 = sqlx::query_scalar("SELECT count(*) FROM access.audit_log WHERE action = 'auth.failure_burst'")
        .fetch_one(&app.owner_pool)
        .await
        .expect("count");
    assert_eq!(bursts, 1);
}

#[tokio::test]
async fn rate_limit_answers_429_with_retry_after() {
    let mut config = test_config();
    config.rate_limit.requests_per_second = std::num::NonZeroU32::MIN;
    config.rate_limit.burst = std::num::NonZeroU32::new(3).expect("3");
    let app = spawn_app_with(config, Default::default()).await;
    let business = app.create_business("GB").await;
    let other = app.create_business("IN").await;
    let mut statuses = Vec::new();
    for _ in 0..5 {
        statuses.push(app.get("/v1/business", &business.owner_key).await);
    }
    let limited = statuses.pop().expect("response");
    assert_eq!(limited.status().as_u16(), 429);
    let retry_after: u64 = limited.headers()["retry-after"].to_str().expect("ascii").parse().expect("seconds");
    assert!((1..=2).contains(&retry_after));
    assert_eq!(problem(limited).await["code"], "rate_limited");
    assert_eq!(app.get("/v1/business", &other.owner_key).await.status().as_u16(), 200, "limits are per key");
}

/// The probe sent 600 random well-formed keys from one address in 0.4 s, each a lookup.
#[tokio::test]
async fn failed_authentication_is_throttled_per_source_before_any_lookup() {
    let app = spawn_app().await;
    let business = app.create_business("GB").await;
    // Verified once, so this instance knows it: it keeps working under the throttle.
    assert_eq!(app.get("/v1/business", &business.owner_key).await.status().as_u16(), 200);
    let fresh = app.create_key(&business, "viewer").await;
    let mut statuses = Vec::new();
    for _ in 0..60 {
        let guess = till_access::domain::IssuedApiKey::generate();
        statuses.push(app.get("/v1/business", guess.token.expose_secret()).await.status().as_u16());
    }
    let threshold = till_access::authn::FAILURE_THROTTLE_THRESHOLD as usize;
    assert!(statuses[..threshold].iter().all(|status| *status == 401), "{statuses:?}");
    assert!(statuses[threshold..].iter().all(|status| *status == 429), "{statuses:?}");
    let throttled = app.get("/v1/business", "till_sk_wrong").await;
    assert_eq!(throttled.status().as_u16(), 429);
    assert!(throttled.headers().contains_key("retry-after"));
    assert_eq!(problem(throttled).await["code"], "auth_throttled");
    // A key this instance has not verified would need a lookup: not while throttled.
    assert_eq!(app.get("/v1/business", &fresh).await.status().as_u16(), 429);
    assert_eq!(app.get("/v1/business", &business.owner_key).await.status().as_u16(), 200, "a verified key works");
    // The platform routes share the source's throttle.
    let platform = app.post("/v1/platform/businesses", &app.admin_token, &key_for("p"), &json!({})).await;
    assert_eq!(platform.status().as_u16(), 429);
    let bursts: i64 = sqlx::query_scalar("SELECT count(*) FROM access.audit_log WHERE action = 'auth.failure_burst'")
        .fetch_one(&app.owner_pool)
        .await
        .expect("count");
    assert_eq!(bursts, 1, "one audit event for the burst, not one per failure");
}

fn key_for(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::now_v7())
}

#[tokio::test]
async fn platform_routes_are_rate_limited() {
    let mut config = test_config();
    config.rate_limit.requests_per_second = std::num::NonZeroU32::MIN;
    config.rate_limit.burst = std::num::NonZeroU32::new(3).expect("3");
    let app = spawn_app_with(config, Default::default()).await;
    let mut statuses = Vec::new();
    for n in 0..5 {
        let body = json!({ "legal_name": format!("Limited {n} Ltd"), "country": "GB" });
        statuses
            .push(app.post("/v1/platform/businesses", &app.admin_token, &key_for("b"), &body).await.status().as_u16());
    }
    assert_eq!(&statuses[..3], &[201, 201, 201]);
    assert_eq!(statuses[4], 429, "{statuses:?}");
}

#[tokio::test]
async fn two_authorization_headers_are_refused() {
    let app = spawn_app().await;
    let business = app.create_business("GB").await;
    let response = app
        .client
        .get(app.url("/v1/business"))
        .header("Authorization", format!("Bearer {}", business.owner_key))
        .header("Authorization", "Bearer till_sk_other")
        .send()
        .await
        .expect("get");
    assert_eq!(response.status().as_u16(), 400);
    assert_eq!(problem(response).await["param"], "Authorization");
}

#[tokio::test]
async fn dashboard_tokens_need_iat_live_briefly_and_can_be_revoked() {
    let app = spawn_with_jwt().await;
    let business = app.create_business("GB").await;
    let bearer = |claims: &serde_json::Value| sign(Algorithm::EdDSA, "ed", claims);
    let good = claims(&business.id);
    assert_eq!(app.get("/v1/business", &bearer(&good)).await.status().as_u16(), 200);

    let mut no_iat = good.clone();
    no_iat.as_object_mut().expect("object").remove("iat");
    assert_unauthenticated(&app, Some(&format!("Bearer {}", bearer(&no_iat))), "no iat").await;
    let mut forever = good.clone();
    forever["exp"] = json!(253_402_300_799_i64); // 9999-12-31
    assert_unauthenticated(&app, Some(&format!("Bearer {}", bearer(&forever))), "exp in 9999").await;
    let mut long = good.clone();
    long["exp"] = json!(now() + 3600 + 60);
    assert_unauthenticated(&app, Some(&format!("Bearer {}", bearer(&long))), "longer than the lifetime").await;
    let mut future = good.clone();
    future["iat"] = json!(now() + 120);
    assert_unauthenticated(&app, Some(&format!("Bearer {}", bearer(&future))), "issued in the future").await;

    // One token, by its jti.
    let mut with_id = good.clone();
    with_id["jti"] = json!("session-1");
    let token = bearer(&with_id);
    assert_eq!(app.get("/v1/business", &token).await.status().as_u16(), 200);
    let revoke = |body: serde_json::Value| {
        let app = &app;
        async move { app.post("/v1/platform/token_revocations", &app.admin_token, &key_for("r"), &body).await }
    };
    let revoked = revoke(json!({ "token_id": "session-1" })).await;
    assert_eq!(revoked.status().as_u16(), 201);
    assert_unauthenticated(&app, Some(&format!("Bearer {token}")), "a revoked token").await;
    assert_eq!(app.get("/v1/business", &bearer(&good)).await.status().as_u16(), 200, "other tokens work");

    // Every token of a subject issued until now; one issued after works.
    let before = bearer(&good);
    assert_eq!(revoke(json!({ "subject": "user_42" })).await.status().as_u16(), 201);
    assert_unauthenticated(&app, Some(&format!("Bearer {before}")), "a revoked subject's token").await;
    let mut after = good.clone();
    after["iat"] = json!(now() + 2);
    assert_eq!(app.get("/v1/business", &bearer(&after)).await.status().as_u16(), 200, "signing in again works");

    for (bad, status) in [
        // Neither or both: a rule between the fields (422); a field broken itself: 400.
        (json!({}), 422),
        (json!({ "subject": "a", "token_id": "b" }), 422),
        (json!({ "subject": "" }), 400),
        (json!({ "subject": "x\u{0}" }), 400),
    ] {
        assert_eq!(revoke(bad.clone()).await.status().as_u16(), status, "{bad}");
    }
}

/// A dashboard user whose token now carries a lower role is not replayed what the higher
/// role was given under the same Idempotency-Key.
#[tokio::test]
async fn a_replay_needs_the_role_that_made_the_request() {
    let app = spawn_with_jwt().await;
    let business = app.create_business("GB").await;
    let as_role = |role: &str| {
        let mut claims = claims(&business.id);
        claims["role"] = json!(role);
        sign(Algorithm::EdDSA, "ed", &claims)
    };
    let body = json!({ "name": "made by an owner", "role": "owner" });
    let created = app.post("/v1/api_keys", &as_role("owner"), "jwt-k1", &body).await;
    assert_eq!(created.status().as_u16(), 201);
    let demoted = app.post("/v1/api_keys", &as_role("admin"), "jwt-k1", &body).await;
    assert_eq!(demoted.status().as_u16(), 403, "the same subject, now an admin, is not shown the owner key");
    assert!(demoted.headers().get("idempotent-replayed").is_none());
    let again = app.post("/v1/api_keys", &as_role("owner"), "jwt-k1", &body).await;
    assert_eq!(again.headers()["idempotent-replayed"], "true", "the owner's retry replays");
}
