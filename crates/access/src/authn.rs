//! Authentication middlewares: credentials in, a `Principal` (tenant routes) or the
//! platform scope (platform routes) out. Every failure is the same opaque 401, so a
//! caller cannot tell a revoked key from a wrong one; the reason goes to the log.
//!
//! Repeated failures from one source (its IP address) are counted in memory, per
//! window. When a source reaches the burst threshold, one `auth.failure_burst` event goes
//! to the audit log; from the throttle threshold on, its requests are answered 429 before
//! any lookup until the window ends (a key this instance verified recently still works:
//! it costs no lookup). Unknown key ids are remembered for a while, so guessing the same
//! one again costs no lookup either. Only the first failure of a source in a window is
//! logged at info; the rest at debug, and the burst once, so a flood does not flood the
//! log. Behind a proxy every request has the proxy's address: throttle there as well.

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
use till_http::internal::InternalCaller;
use till_http::ApiError;
use till_http::ErrorCode;
use till_kit::{ApiKeyId, BusinessId, Secret};
use time::OffsetDateTime;

use crate::domain::{PresentedApiKey, API_KEY_PREFIX};
use crate::jwt::JwtVerifier;
use crate::store;

const FAILURE_WINDOW: Duration = Duration::from_secs(60);
pub const FAILURE_BURST_THRESHOLD: u32 = 20;
/// Failures from one source in a window after which it is throttled (429, no lookup).
pub const FAILURE_THROTTLE_THRESHOLD: u32 = 30;
/// How long an unknown key id is remembered as unknown.
const UNKNOWN_KEY_TTL: Duration = Duration::from_secs(60);
const UNKNOWN_KEYS_MAX: usize = 10_000;
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
    /// The source failed too often lately: not checked at all.
    Throttled { retry_after_seconds: u64 },
}

/// Key ids recently looked up and not found.
#[derive(Clone, Default)]
struct UnknownKeys(Arc<Mutex<HashMap<ApiKeyId, Instant>>>);

impl UnknownKeys {
    fn contains(&self, id: ApiKeyId) -> bool {
        let unknown = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        unknown.get(&id).is_some_and(|since| since.elapsed() < UNKNOWN_KEY_TTL)
    }

    fn insert(&self, id: ApiKeyId) {
        let mut unknown = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if unknown.len() >= UNKNOWN_KEYS_MAX {
            unknown.retain(|_, since| since.elapsed() < UNKNOWN_KEY_TTL);
            if unknown.len() >= UNKNOWN_KEYS_MAX {
                unknown.clear();
            }
        }
        unknown.insert(id, Instant::now());
    }
}

#[derive(Clone)]
pub struct Authenticator {
    pool: PgPool,
    jwt: Arc<JwtVerifier>,
    admin_token_hash: [u8; 32],
    failures: Arc<Mutex<HashMap<String, (Instant, u32)>>>,
    /// Failures from one source in a window before it is throttled.
    failures_max: u32,
    keys: KeyCache,
    unknown: UnknownKeys,
}

impl Authenticator {
    pub fn new(pool: PgPool, jwt: JwtVerifier, admin_token: &Secret<String>, keys: KeyCache) -> Authenticator {
        Authenticator {
            pool,
            jwt: Arc::new(jwt),
            admin_token_hash: Sha256::digest(admin_token.expose_secret().as_bytes()).into(),
            failures: Arc::new(Mutex::new(HashMap::new())),
            failures_max: FAILURE_THROTTLE_THRESHOLD,
            keys,
            unknown: UnknownKeys::default(),
        }
    }

    /// Throttles a source after `failures_max` failed authentications in a minute instead
    /// of `FAILURE_THROTTLE_THRESHOLD` (at least 1).
    pub fn with_failure_threshold(mut self, failures_max: u32) -> Authenticator {
        self.failures_max = failures_max.max(1);
        self
    }

    /// The longest a dashboard token may live, for purging revocations.
    pub fn jwt_lifetime_max(&self) -> Duration {
        Duration::from_secs(self.jwt.lifetime_seconds_max())
    }

    /// 429 before any lookup for a source that failed too often in this window.
    fn throttle(&self, source: &str) -> Result<(), Failure> {
        let failures = self.failures.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match failures.get(source) {
            Some((started, count)) if *count >= self.failures_max && started.elapsed() < FAILURE_WINDOW => {
                let left = FAILURE_WINDOW.saturating_sub(started.elapsed());
                Err(Failure::Throttled { retry_after_seconds: left.as_secs() + 1 })
            }
            _ => Ok(()),
        }
    }

    async fn api_key(&self, token: &str, source: &str) -> Result<Principal, Failure> {
        let presented = PresentedApiKey::parse(token);
        if let Some(principal) = presented.as_ref().and_then(|presented| self.keys.get(presented)) {
            return Ok(principal);
        }
        self.throttle(source)?;
        let presented = presented.ok_or(Failure::Invalid("malformed API key"))?;
        if self.unknown.contains(presented.id) {
            return Err(Failure::Invalid("unknown API key (remembered)"));
        }
        let credentials = store::key_credentials(&self.pool, presented.id).await.map_err(Failure::Unavailable)?;
        let Some(credentials) = credentials else {
            self.unknown.insert(presented.id);
            return Err(Failure::Invalid("unknown API key"));
        };
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

    async fn user(&self, token: &str, source: &str) -> Result<Principal, Failure> {
        self.throttle(source)?;
        let now = OffsetDateTime::now_utc();
        let verified = self.jwt.verify(token, now.unix_timestamp()).map_err(|rejection| {
            tracing::debug!(%rejection, "JWT refused");
            Failure::Invalid("invalid JWT")
        })?;
        let Credential::User { subject } = &verified.principal.credential else {
            return Err(Failure::Invalid("a JWT that is not a user's"));
        };
        // The issuer vouches for the claims, but only Till knows whether the business
        // exists, and whether the token or its subject was revoked since it was issued.
        let issued_at =
            OffsetDateTime::from_unix_timestamp(verified.issued_at).map_err(|_| Failure::Invalid("invalid JWT iat"))?;
        let refusal = store::token_refusal(
            &self.pool,
            verified.principal.business_id,
            subject,
            verified.token_id.as_deref(),
            issued_at,
        )
        .await
        .map_err(Failure::Unavailable)?;
        match refusal {
            None => Ok(verified.principal),
            Some(reason) => {
                tracing::debug!(%reason, "JWT refused");
                Err(Failure::Invalid("JWT revoked or for a business that does not exist"))
            }
        }
    }

    fn is_admin_token(&self, token: &str) -> bool {
        // Hash first so the comparison is constant-time whatever the lengths.
        let presented: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        bool::from(presented.ct_eq(&self.admin_token_hash))
    }

    /// Counts a failure from `source`; returns the count in the window.
    fn count_failure(&self, source: &str) -> u32 {
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
        entry.1 = entry.1.saturating_add(1);
        entry.1
    }

    async fn refuse(&self, source: String, reason: &'static str, route_kind: &'static str) -> Response {
        let failures = self.count_failure(&source);
        if failures == 1 {
            tracing::info!(reason, route_kind, %source, "authentication failed (further failures from this source in the next minute are logged at debug)");
        } else {
            tracing::debug!(reason, route_kind, %source, failures, "authentication failed");
        }
        if failures == self.failures_max {
            tracing::warn!(%source, failures, "throttling a source whose authentication keeps failing");
        }
        if failures == FAILURE_BURST_THRESHOLD {
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

/// The bearer token, if the request has exactly one `Authorization` header with one.
/// Two headers are refused (400): proxies and frameworks disagree on which one counts.
fn bearer(headers: &HeaderMap) -> Result<Option<&str>, ApiError> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        if headers.contains_key(header::AUTHORIZATION) {
            return Err(ApiError::invalid("Authorization", "Send one Authorization header, not several."));
        }
        return Ok(None);
    };
    let Some((scheme, token)) = value.to_str().ok().and_then(|value| value.split_once(' ')) else { return Ok(None) };
    Ok(scheme.eq_ignore_ascii_case("bearer").then_some(token.trim()).filter(|token| !token.is_empty()))
}

fn throttled(retry_after_seconds: u64) -> Response {
    let mut error = ApiError::new(
        ErrorCode::AuthThrottled,
        "Too many failed authentications from this address; wait Retry-After seconds.",
    );
    error.retry_after_seconds = Some(retry_after_seconds);
    error.into_response()
}

/// Route-layer middleware for tenant routes: an API key or a dashboard JWT.
pub async fn tenant(State(auth): State<Authenticator>, mut request: Request, next: Next) -> Response {
    // Another service's call in process: only code in this process sets the extension.
    if let Some(caller) = request.extensions().get::<InternalCaller>().copied() {
        let principal = Principal {
            business_id: caller.business_id,
            role: Role::Finance,
            credential: Credential::Service(caller.service),
        };
        tracing::Span::current().record("business_id", tracing::field::display(principal.business_id));
        request.extensions_mut().insert(Scope::Business(principal.business_id));
        request.extensions_mut().insert(principal);
        return next.run(request).await;
    }
    let from = source(&request);
    let token = match bearer(request.headers()) {
        Ok(Some(token)) => token,
        Ok(None) => return auth.refuse(from, "no bearer credentials", "tenant").await,
        Err(error) => return error.into_response(),
    };
    let outcome = if token.starts_with(API_KEY_PREFIX) {
        auth.api_key(token, &from).await
    } else {
        auth.user(token, &from).await
    };
    let principal = match outcome {
        Ok(principal) => principal,
        // The database could not answer: that is not the caller's fault, so not a 401.
        Err(Failure::Unavailable(error)) => return ApiError::database(error).into_response(),
        Err(Failure::Invalid(reason)) => return auth.refuse(from, reason, "tenant").await,
        Err(Failure::Throttled { retry_after_seconds }) => return throttled(retry_after_seconds),
    };
    tracing::Span::current().record("business_id", tracing::field::display(principal.business_id));
    request.extensions_mut().insert(Scope::Business(principal.business_id));
    request.extensions_mut().insert(principal);
    next.run(request).await
}

/// Route-layer middleware for platform routes: the platform admin token.
pub async fn platform(State(auth): State<Authenticator>, mut request: Request, next: Next) -> Response {
    let from = source(&request);
    let token = match bearer(request.headers()) {
        Ok(token) => token,
        Err(error) => return error.into_response(),
    };
    if let Err(Failure::Throttled { retry_after_seconds }) = auth.throttle(&from) {
        return throttled(retry_after_seconds);
    }
    if !token.is_some_and(|token| auth.is_admin_token(token)) {
        return auth.refuse(from, "wrong or missing platform admin token", "platform").await;
    }
    request.extensions_mut().insert(Scope::Platform);
    next.run(request).await
}
