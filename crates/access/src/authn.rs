//! Authentication middlewares: credentials in, a `Principal` (tenant routes) or the
//! platform scope (platform routes) out. Every failure is the same opaque 401, so a
//! caller cannot tell a revoked key from a wrong one; the reason goes to the log.
//!
//! Repeated failures from one source are counted in memory; when a source reaches the
//! burst threshold within the window, one `auth.failure_burst` event goes to the audit log.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use subtle::ConstantTimeEq;
use till_http::auth::{Credential, Principal, Role, Scope};
use till_http::ApiError;
use till_kit::{ApiKeyId, BusinessId, Secret};
use time::OffsetDateTime;

use crate::domain::{PresentedApiKey, API_KEY_PREFIX};
use crate::jwt::JwtVerifier;
use crate::store;

const FAILURE_WINDOW: Duration = Duration::from_secs(60);
pub const FAILURE_BURST_THRESHOLD: u32 = 20;
const FAILURE_SOURCES_MAX: usize = 10_000;
const TOUCH_INTERVAL_SECONDS: i64 = 60;
/// How long a verified API key is trusted without asking the database again. A key
/// revoked through this instance is forgotten at once; through another instance, it
/// stops working here within this time.
pub const KEY_CACHE_TTL: Duration = Duration::from_secs(5);
const KEY_CACHE_ENTRIES_MAX: usize = 10_000;

/// Recently verified API keys, so that authentication is not a database round trip on
/// every request. Entries hold the stored secret hash, and each use is still compared
/// in constant time.
#[derive(Clone, Default)]
pub struct KeyCache(Arc<Mutex<HashMap<ApiKeyId, CachedKey>>>);

struct CachedKey {
    secret_hash: Vec<u8>,
    principal: Principal,
    verified_at: Instant,
}

impl KeyCache {
    fn get(&self, presented: &PresentedApiKey) -> Option<Principal> {
        let cache = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let cached = cache.get(&presented.id)?;
        (cached.verified_at.elapsed() < KEY_CACHE_TTL && presented.matches(&cached.secret_hash))
            .then(|| cached.principal.clone())
    }

    fn put(&self, id: ApiKeyId, secret_hash: Vec<u8>, principal: Principal) {
        let mut cache = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if cache.len() >= KEY_CACHE_ENTRIES_MAX {
            cache.retain(|_, cached| cached.verified_at.elapsed() < KEY_CACHE_TTL);
            if cache.len() >= KEY_CACHE_ENTRIES_MAX {
                cache.clear();
            }
        }
        cache.insert(id, CachedKey { secret_hash, principal, verified_at: Instant::now() });
    }

    /// Forgets a key (it was revoked), so this instance refuses it from now on.
    pub fn forget(&self, id: ApiKeyId) {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&id);
    }
}

enum Failure {
    /// The credentials are wrong; the reason is for the log only.
    Invalid(&'static str),
    /// The credentials could not be checked.
    Unavailable(sqlx::Error),
}

#[derive(Clone)]
pub struct Authenticator {
    pool: PgPool,
    jwt: Arc<JwtVerifier>,
    admin_token_hash: [u8; 32],
    failures: Arc<Mutex<HashMap<String, (Instant, u32)>>>,
    keys: KeyCache,
}

impl Authenticator {
    pub fn new(pool: PgPool, jwt: JwtVerifier, admin_token: &Secret<String>, keys: KeyCache) -> Authenticator {
        Authenticator {
            pool,
            jwt: Arc::new(jwt),
            admin_token_hash: Sha256::digest(admin_token.expose_secret().as_bytes()).into(),
            failures: Arc::new(Mutex::new(HashMap::new())),
            keys,
        }
    }

    async fn api_key(&self, token: &str) -> Result<Principal, Failure> {
        let presented = PresentedApiKey::parse(token).ok_or(Failure::Invalid("malformed API key"))?;
        if let Some(principal) = self.keys.get(&presented) {
            return Ok(principal);
        }
        let credentials = store::key_credentials(&self.pool, presented.id)
            .await
            .map_err(Failure::Unavailable)?
            .ok_or(Failure::Invalid("unknown API key"))?;
        if !presented.matches(&credentials.secret_hash) {
            return Err(Failure::Invalid("wrong API key secret"));
        }
        if credentials.revoked {
            return Err(Failure::Invalid("revoked API key"));
        }
        let role = Role::parse(&credentials.role).ok_or(Failure::Invalid("API key with an unknown role"))?;
        let stale = credentials
            .last_used_at
            .is_none_or(|used| OffsetDateTime::now_utc() - used > time::Duration::seconds(TOUCH_INTERVAL_SECONDS));
        if stale {
            // Best effort: last_used_at is informational and must not fail the request.
            if let Err(error) = store::touch_api_key(&self.pool, presented.id).await {
                tracing::warn!(%error, "could not record API key use");
            }
        }
        let principal = Principal {
            business_id: BusinessId::from_uuid(credentials.business_id),
            role,
            credential: Credential::ApiKey(presented.id),
        };
        self.keys.put(presented.id, credentials.secret_hash, principal.clone());
        Ok(principal)
    }

    async fn user(&self, token: &str) -> Result<Principal, Failure> {
        let principal = self.jwt.verify(token).map_err(|rejection| {
            tracing::info!(%rejection, "JWT refused");
            Failure::Invalid("invalid JWT")
        })?;
        // The issuer vouches for the claims, but only Till knows whether the business exists.
        match store::business_exists(&self.pool, principal.business_id).await {
            Ok(true) => Ok(principal),
            Ok(false) => Err(Failure::Invalid("JWT for a business that does not exist")),
            Err(error) => Err(Failure::Unavailable(error)),
        }
    }

    fn is_admin_token(&self, token: &str) -> bool {
        // Hash first so the comparison is constant-time whatever the lengths.
        let presented: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        bool::from(presented.ct_eq(&self.admin_token_hash))
    }

    /// Counts a failure from `source`; returns the count when it reaches the threshold.
    fn count_failure(&self, source: &str) -> Option<u32> {
        let mut failures = self.failures.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = Instant::now();
        if failures.len() >= FAILURE_SOURCES_MAX {
            failures.retain(|_, (started, _)| now.duration_since(*started) < FAILURE_WINDOW);
        }
        if failures.len() >= FAILURE_SOURCES_MAX {
            // Under a flood from many sources, start over rather than grow without bound.
            failures.clear();
        }
        let entry = failures.entry(source.to_string()).or_insert((now, 0));
        if now.duration_since(entry.0) >= FAILURE_WINDOW {
            *entry = (now, 0);
        }
        entry.1 += 1;
        (entry.1 == FAILURE_BURST_THRESHOLD).then_some(entry.1)
    }

    async fn refuse(&self, source: String, reason: &'static str, route_kind: &'static str) -> Response {
        tracing::info!(reason, route_kind, "authentication failed");
        if let Some(failures) = self.count_failure(&source) {
            let details = serde_json::json!({
                "source": source,
                "failures": failures,
                "window_seconds": FAILURE_WINDOW.as_secs(),
                "route_kind": route_kind,
            });
            if let Err(error) =
                store::record_security_event(&self.pool, None, "auth.failure_burst", "anonymous", details).await
            {
                tracing::error!(%error, "could not record a failed-authentication burst in the audit log");
            }
        }
        ApiError::unauthenticated("Missing or invalid credentials. Send `Authorization: Bearer <API key or token>`.")
            .into_response()
    }
}

/// Where the request came from, for counting failures.
fn source(request: &Request) -> String {
    request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(address)| address.ip().to_string())
        .unwrap_or_else(|| "unknown".to_string())
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then_some(token.trim()).filter(|token| !token.is_empty())
}

/// Route-layer middleware for tenant routes: an API key or a dashboard JWT.
pub async fn tenant(State(auth): State<Authenticator>, mut request: Request, next: Next) -> Response {
    let Some(token) = bearer(request.headers()) else {
        return auth.refuse(source(&request), "no bearer credentials", "tenant").await;
    };
    let outcome = if token.starts_with(API_KEY_PREFIX) { auth.api_key(token).await } else { auth.user(token).await };
    let principal = match outcome {
        Ok(principal) => principal,
        // The database could not answer: that is not the caller's fault, so not a 401.
        Err(Failure::Unavailable(error)) => return ApiError::database(error).into_response(),
        Err(Failure::Invalid(reason)) => return auth.refuse(source(&request), reason, "tenant").await,
    };
    tracing::Span::current().record("business_id", tracing::field::display(principal.business_id));
    request.extensions_mut().insert(Scope::Business(principal.business_id));
    request.extensions_mut().insert(principal);
    next.run(request).await
}

/// Route-layer middleware for platform routes: the platform admin token.
pub async fn platform(State(auth): State<Authenticator>, mut request: Request, next: Next) -> Response {
    let admitted = bearer(request.headers()).is_some_and(|token| auth.is_admin_token(token));
    if !admitted {
        return auth.refuse(source(&request), "wrong or missing platform admin token", "platform").await;
    }
    request.extensions_mut().insert(Scope::Platform);
    next.run(request).await
}
