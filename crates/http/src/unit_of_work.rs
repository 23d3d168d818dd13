//! One database transaction per request, and the Idempotency-Key protocol for every POST.
//!
//! Routes get this by being mounted behind [`middleware`]; a handler asks for its
//! transaction with the [`Tx`] extractor and never begins, commits or rolls back itself.
//!
//! For a GET, PATCH or DELETE the transaction commits when the response is a success and
//! rolls back otherwise.
//!
//! For a POST (API.md, "Idempotency"):
//! 1. `Idempotency-Key` must be present and 1–255 printable ASCII characters (400).
//! 2. The request is fingerprinted: SHA-256 of method, path with query, and body.
//! 3. A key belongs to the business (or the platform) and, within it, to the credential
//!    that sent it (API key id, JWT subject): the same key from another credential is
//!    another key. This runs after authentication and the permission table, so a replay
//!    passes both like any request.
//! 4. In the request's transaction, `pg_try_advisory_xact_lock` on (scope, principal,
//!    key). Not granted means the same key is running now: 409 `idempotency_key_in_use`,
//!    at once, without waiting. The lock ends with the transaction, also when the
//!    process dies, so a key can never stay stuck "in flight".
//! 5. A stored row for the key: same fingerprint, replay its response byte for byte with
//!    `Idempotent-Replayed: true`; another fingerprint, 422 `idempotency_key_reused`; a
//!    caller whose role is now below the one that made the request, 403.
//! 6. Otherwise `SAVEPOINT effect`, run the handler, then:
//!    - 2xx: store the response and commit the effect and the key together;
//!    - 4xx: roll back to the savepoint (a refusal leaves no partial effect), store the
//!      refusal and commit, so a retry gets the same answer;
//!    - 5xx, or 429 (throttled): roll back everything and store nothing: that was not a
//!      decision, and a retry with the same key runs again.
//!
//! A response that carries a secret (`crate::secrets::shown_once`) is stored sealed with
//! the server's keyring and opened for a replay, so the secret never rests in plain text.
//!
//! This covers effects that are local to the database. A route whose effect is on an
//! outside party (a payment gateway) is *phased* instead: atomic phases with recovery
//! points around the call, under a lease on the key (`crate::recovery`).

use std::ops::{Deref, DerefMut};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use sqlx::{PgConnection, PgPool, Postgres, Transaction};
use tokio::sync::{Mutex, OwnedMutexGuard};

use till_kit::{sealing, Keyring};

use crate::auth::{Principal, Role, Scope};
use crate::problem::ApiError;
use crate::secrets::CarriesSecret;
use crate::ErrorCode;

pub static IDEMPOTENCY_KEY_HEADER: HeaderName = HeaderName::from_static("idempotency-key");
pub static IDEMPOTENT_REPLAYED_HEADER: HeaderName = HeaderName::from_static("idempotent-replayed");
pub const IDEMPOTENCY_KEY_CHARS_MAX: usize = 255;
/// Responses bigger than this are not stored for replay (none of Till's are near it).
const RESPONSE_BYTES_MAX: usize = 4 * 1024 * 1024;
/// Response headers that are part of the stored response.
const STORED_HEADERS: [HeaderName; 3] = [header::CONTENT_TYPE, header::LOCATION, header::CACHE_CONTROL];

#[derive(Clone)]
pub struct UnitOfWorkState {
    pub pool: PgPool,
    pub body_bytes_max: usize,
    /// POST routes whose service applies the effect and stores the idempotent response
    /// in its own transaction (the ledger's group-commit engine). For these the middleware
    /// validates and fingerprints, leaves an [`IdempotencyContext`], and opens nothing.
    pub delegated_paths: Arc<Vec<&'static str>>,
    /// Seals stored responses that carry a secret (`crate::secrets`).
    pub keyring: Arc<Keyring>,
    /// POST routes that call an outside party, run in phases with recovery points
    /// (`crate::recovery`): the templates of the registered resumers.
    pub phased_paths: Arc<Vec<&'static str>>,
    pub recovery: crate::recovery::RecoveryConfig,
}

/// An idempotent request's key and fingerprint, for a service that stores the response
/// in the same transaction as its effect itself.
///
/// A key belongs to its `scope` (the business, or the platform) and, within it, to the
/// `principal` that sent it: another credential of the same business using the same key
/// has a key of its own, and is never replayed this one's response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyContext {
    pub scope: String,
    /// The credential ([`Principal::idempotency_principal`], or `platform`).
    pub principal: String,
    /// The caller's role; `None` for the platform admin token.
    pub role: Option<Role>,
    pub key: String,
    pub fingerprint: Vec<u8>,
    pub method: String,
    pub path: String,
}

/// Who owns a request's idempotency keys: its scope, principal and role.
struct KeyOwner {
    scope: Scope,
    principal: String,
    role: Option<Role>,
}

impl KeyOwner {
    /// From what authentication left in the request: a [`Principal`] on tenant routes,
    /// [`Scope::Platform`] alone on platform routes.
    fn of(request: &Request) -> Result<KeyOwner, ApiError> {
        let Some(scope) = request.extensions().get::<Scope>().copied() else {
            return Err(ApiError::internal(&"the unit of work ran before authentication"));
        };
        match (scope, request.extensions().get::<Principal>()) {
            (Scope::Business(business), Some(principal)) if principal.business_id == business => {
                Ok(KeyOwner { scope, principal: principal.idempotency_principal(), role: Some(principal.role) })
            }
            (Scope::Platform, None) => Ok(KeyOwner { scope, principal: PLATFORM_PRINCIPAL.to_string(), role: None }),
            _ => Err(ApiError::internal(&"the request's scope and principal disagree")),
        }
    }

    /// The request's idempotency context: its owner, key and fingerprint.
    fn context(self, key: String, parts: &Parts, body: &[u8]) -> IdempotencyContext {
        IdempotencyContext {
            scope: self.scope.idempotency_scope(),
            principal: self.principal,
            role: self.role,
            key,
            fingerprint: fingerprint(&parts.method, &parts.uri, body),
            method: parts.method.to_string(),
            path: parts.uri.path().to_string(),
        }
    }
}

/// Takes the transaction-level advisory lock on `context`'s key, without waiting: `false`
/// when a request with the same key holds it now.
pub(crate) async fn try_lock_key(
    connection: &mut PgConnection,
    context: &IdempotencyContext,
) -> Result<bool, ApiError> {
    let name = format!("idempotency\u{1f}{}\u{1f}{}\u{1f}{}", context.scope, context.principal, context.key);
    Ok(sqlx::query_scalar("SELECT pg_try_advisory_xact_lock(hashtextextended($1, 0))")
        .bind(name)
        .fetch_one(connection)
        .await?)
}

/// The principal of requests made with the platform admin token.
pub const PLATFORM_PRINCIPAL: &str = "platform";

impl<S: Send + Sync> FromRequestParts<S> for IdempotencyContext {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<IdempotencyContext>()
            .cloned()
            .ok_or_else(|| ApiError::internal(&"a delegated idempotent handler ran without its context"))
    }
}

/// The 409 for a key whose first request is still running.
pub fn key_in_use() -> ApiError {
    ApiError::new(
        ErrorCode::IdempotencyKeyInUse,
        "A request with this Idempotency-Key is still running. Retry after it finishes to get its response.",
    )
    .with_param("Idempotency-Key")
}

/// The 422 for a key used before with another request.
pub fn key_reused() -> ApiError {
    ApiError::new(
        ErrorCode::IdempotencyKeyReused,
        "This Idempotency-Key was used with another method, path or body. Use a new key for a new request.",
    )
    .with_param("Idempotency-Key")
}

/// The 422 for a key stored before keys were scoped to their principal: nobody can be
/// shown to own it, so it is neither replayed nor run again (until it is purged).
fn key_unattributed() -> ApiError {
    ApiError::new(
        ErrorCode::IdempotencyKeyReused,
        "This Idempotency-Key was used before by a request recorded without its credential. Use a new key.",
    )
    .with_param("Idempotency-Key")
}

/// Stored responses for the `(principal, key)` pairs `wanted` in `scope`, one query for
/// a whole batch. Each pair finds its principal's own row, or else a legacy row of the
/// key with no principal (see [`StoredResponse::admit`]).
pub async fn find_stored(
    connection: &mut PgConnection,
    scope: &str,
    wanted: &[(String, String)],
) -> Result<Vec<((String, String), StoredResponse)>, sqlx::Error> {
    let (principals, keys): (Vec<&str>, Vec<&str>) =
        wanted.iter().map(|(principal, key)| (principal.as_str(), key.as_str())).unzip();
    let rows: Vec<StoredRow> =
        sqlx::query_as(&find_stored_sql(1, 2, 3)).bind(scope).bind(principals).bind(keys).fetch_all(connection).await?;
    Ok(rows.into_iter().map(StoredRow::into_pair).collect())
}

/// The lookup of [`find_stored`] as a subquery, with the scope (`text`), the principals
/// (`text[]`) and their keys (`text[]`, pairwise) as parameters `$scope`, `$principals`
/// and `$keys`, for a caller that splices it into a statement of its own to save a round
/// trip. Its columns are those of [`StoredRow`].
///
/// One primary-key range per key, whatever the statistics say. `key = ANY($2)` and a
/// semi-join both let the cached generic plan read every key of the scope when the
/// statistics were stale (measured under the ledger benchmark: 4–9 ms per lookup, half
/// of a batch's time); `LIMIT 1` keeps the lateral subquery from being flattened. A
/// principal's own row sorts before a legacy row's empty principal.
pub fn find_stored_sql(scope: usize, principals: usize, keys: usize) -> String {
    format!(
        "SELECT wanted.principal, wanted.key, found.* FROM
                (SELECT DISTINCT * FROM unnest(${principals}::text[], ${keys}::text[])) AS wanted(principal, key)
           CROSS JOIN LATERAL (SELECT principal = '' AS unattributed, principal_role, fingerprint,
                                      response_status, response_headers, response_body
                                 FROM api.idempotency_keys
                                WHERE scope = ${scope} AND key = wanted.key AND principal IN (wanted.principal, '')
                                ORDER BY principal DESC LIMIT 1) found"
    )
}

/// A row of [`find_stored_sql`]: the wanted principal and key, and what is stored.
#[derive(sqlx::FromRow)]
pub struct StoredRow {
    pub principal: String,
    pub key: String,
    pub unattributed: bool,
    pub principal_role: Option<String>,
    pub fingerprint: Vec<u8>,
    pub response_status: i16,
    pub response_headers: serde_json::Value,
    pub response_body: Vec<u8>,
}

impl StoredRow {
    pub fn into_pair(self) -> ((String, String), StoredResponse) {
        let response = StoredResponse {
            unattributed: self.unattributed,
            role: self.principal_role.as_deref().and_then(Role::parse),
            fingerprint: self.fingerprint,
            response_status: self.response_status,
            response_headers: self.response_headers,
            response_body: self.response_body,
        };
        ((self.principal, self.key), response)
    }
}

/// A response to store under its idempotency key.
pub struct ResponseRecord<'a> {
    pub context: &'a IdempotencyContext,
    pub status: StatusCode,
    pub content_type: &'static str,
    pub body: &'a [u8],
}

/// Stores responses, in the caller's transaction (one statement for a whole batch).
pub async fn record_responses(
    connection: &mut PgConnection,
    records: &[ResponseRecord<'_>],
) -> Result<(), sqlx::Error> {
    if records.is_empty() {
        return Ok(());
    }
    bind_responses(sqlx::query(&record_responses_sql(1)), records).execute(connection).await?;
    Ok(())
}

/// The types of [`record_responses_sql`]'s parameters, in order.
const RECORD_RESPONSES_TYPES: [&str; 10] =
    ["text[]", "text[]", "text[]", "text[]", "text[]", "text[]", "bytea[]", "int2[]", "jsonb[]", "bytea[]"];

/// Storing responses as SQL, with its parameters numbered from `first`: a statement of
/// its own, or one data-modifying CTE of a caller's statement (the ledger engine's batch
/// write, which saves it a round trip). Bind its values with [`bind_responses`].
pub fn record_responses_sql(first: usize) -> String {
    format!(
        "INSERT INTO api.idempotency_keys
             (scope, principal, principal_role, key, method, path, fingerprint, response_status, response_headers,
              response_body)
         SELECT * FROM UNNEST({})",
        till_db::params::numbered(first, &RECORD_RESPONSES_TYPES)
    )
}

/// Binds the values of [`record_responses_sql`] (empty arrays store nothing).
pub fn bind_responses<'q>(
    query: sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments>,
    records: &[ResponseRecord<'_>],
) -> sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments> {
    let column = |f: fn(&ResponseRecord<'_>) -> String| records.iter().map(f).collect::<Vec<String>>();
    let fingerprints: Vec<Vec<u8>> = records.iter().map(|r| r.context.fingerprint.clone()).collect();
    let statuses: Vec<i16> = records.iter().map(|r| i16::try_from(r.status.as_u16()).unwrap_or(i16::MAX)).collect();
    let headers: Vec<serde_json::Value> =
        records.iter().map(|r| serde_json::json!({ "content-type": r.content_type })).collect();
    let bodies: Vec<Vec<u8>> = records.iter().map(|r| r.body.to_vec()).collect();
    let roles: Vec<Option<&'static str>> = records.iter().map(|r| r.context.role.map(Role::as_str)).collect();
    query
        .bind(column(|r| r.context.scope.clone()))
        .bind(column(|r| r.context.principal.clone()))
        .bind(roles)
        .bind(column(|r| r.context.key.clone()))
        .bind(column(|r| r.context.method.clone()))
        .bind(column(|r| r.context.path.clone()))
        .bind(fingerprints)
        .bind(statuses)
        .bind(headers)
        .bind(bodies)
}

/// The request's transaction, shared between the middleware and the handler.
#[derive(Clone)]
struct UnitOfWork(Arc<Mutex<Transaction<'static, Postgres>>>);

impl UnitOfWork {
    fn new(transaction: Transaction<'static, Postgres>) -> UnitOfWork {
        UnitOfWork(Arc::new(Mutex::new(transaction)))
    }

    /// Takes the transaction back after the handler has answered.
    fn into_transaction(self) -> Result<Transaction<'static, Postgres>, ApiError> {
        Arc::try_unwrap(self.0)
            .map(Mutex::into_inner)
            .map_err(|_| ApiError::internal(&"a handler kept the request's transaction after answering"))
    }
}

/// The request's transaction, for handlers. Derefs to the connection that store
/// functions take.
pub struct Tx(OwnedMutexGuard<Transaction<'static, Postgres>>);

impl Deref for Tx {
    type Target = PgConnection;
    fn deref(&self) -> &PgConnection {
        &self.0
    }
}

impl DerefMut for Tx {
    fn deref_mut(&mut self) -> &mut PgConnection {
        &mut self.0
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Tx {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let work = parts.extensions.get::<UnitOfWork>().cloned().ok_or_else(|| {
            ApiError::internal(&"a handler asked for a transaction on a route without the unit of work")
        })?;
        Ok(Tx(work.0.lock_owned().await))
    }
}

/// Route-layer middleware, after authentication (which leaves the request's [`Scope`]).
pub async fn middleware(State(state): State<UnitOfWorkState>, request: Request, next: Next) -> Response {
    let owner = match KeyOwner::of(&request) {
        Ok(owner) => owner,
        Err(error) => return error.into_response(),
    };
    let route = request.extensions().get::<axum::extract::MatchedPath>().map(|path| path.as_str().to_string());
    let delegated = route.as_deref().is_some_and(|path| state.delegated_paths.contains(&path));
    let phased = route.as_deref().filter(|path| state.phased_paths.contains(path));
    let outcome = if let (Some(route), true) = (phased, request.method() == Method::POST) {
        let route = route.to_string();
        match read_idempotent(&state, owner, request).await {
            Ok((scope, context, body, request)) => {
                crate::recovery::middleware(&state, scope, context, &route, body, request, next).await
            }
            Err(error) => Err(error),
        }
    } else if request.method() == Method::POST && delegated {
        delegate(&state, owner, request, next).await
    } else if request.method() == Method::POST {
        idempotent(&state, owner, request, next).await
    } else {
        transactional(&state, owner.scope, request, next).await
    };
    outcome.unwrap_or_else(IntoResponse::into_response)
}

pub(crate) async fn begin(pool: &PgPool, scope: Scope) -> Result<Transaction<'static, Postgres>, ApiError> {
    let transaction = match scope {
        Scope::Business(business) => till_db::begin_tenant(pool, business).await,
        Scope::Platform => till_db::begin_platform(pool).await,
    };
    transaction.map_err(ApiError::database)
}

async fn transactional(
    state: &UnitOfWorkState,
    scope: Scope,
    mut request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let work = UnitOfWork::new(begin(&state.pool, scope).await?);
    request.extensions_mut().insert(work.clone());
    let response = next.run(request).await;
    let transaction = work.into_transaction()?;
    if response.status().is_success() {
        transaction.commit().await.map_err(ApiError::database)?;
    } else {
        rollback(transaction).await;
    }
    Ok(response)
}

pub(crate) async fn rollback(transaction: Transaction<'static, Postgres>) {
    // A failed rollback leaves nothing to undo: the connection is discarded by the pool
    // and the server rolls the transaction back when the session ends.
    if let Err(error) = transaction.rollback().await {
        tracing::warn!(%error, "rollback failed; the connection will be discarded");
    }
}

/// Validates the Idempotency-Key header.
pub fn idempotency_key(headers: &HeaderMap) -> Result<String, ApiError> {
    let Some(value) = headers.get(&IDEMPOTENCY_KEY_HEADER) else {
        return Err(ApiError::new(ErrorCode::IdempotencyKeyMissing, "Every POST needs an Idempotency-Key header (1–255 printable ASCII characters), so that it is safe to retry.",
        )
        .with_param("Idempotency-Key"));
    };
    let bytes = value.as_bytes();
    let printable = bytes.iter().all(|byte| (0x20..=0x7e).contains(byte));
    if bytes.is_empty() || bytes.len() > IDEMPOTENCY_KEY_CHARS_MAX || !printable {
        return Err(ApiError::new(
            ErrorCode::IdempotencyKeyInvalid,
            "The Idempotency-Key must be 1–255 printable ASCII characters.",
        )
        .with_param("Idempotency-Key"));
    }
    Ok(String::from_utf8_lossy(bytes).into_owned())
}

fn fingerprint(method: &Method, uri: &Uri, body: &[u8]) -> Vec<u8> {
    let mut hasher = Sha256::new();
    hasher.update(method.as_str().as_bytes());
    hasher.update([0]);
    hasher.update(uri.path_and_query().map(|pq| pq.as_str()).unwrap_or("/").as_bytes());
    hasher.update([0]);
    hasher.update(body);
    hasher.finalize().to_vec()
}

async fn read_body(body: Body, bytes_max: usize) -> Result<bytes::Bytes, ApiError> {
    // The outer body layer bounds it already; this bound holds for a router mounted
    // without that layer too.
    crate::body::collect(Body::new(http_body_util::Limited::new(body, bytes_max))).await
}

/// A stored response, as found for a request's key.
pub struct StoredResponse {
    /// Stored before keys had principals.
    unattributed: bool,
    /// The role of the principal that made the request (`None` for the platform).
    role: Option<Role>,
    fingerprint: Vec<u8>,
    response_status: i16,
    response_headers: serde_json::Value,
    response_body: Vec<u8>,
}

impl StoredResponse {
    /// Whether the request of `context` may be replayed this response: only the same
    /// request (422 otherwise), and only to a role at least the one that made it (403
    /// otherwise: a dashboard user whose JWT now carries a lower role is not shown what
    /// the higher role was given). The lookup already chose the principal's own row.
    pub fn admit(self, context: &IdempotencyContext) -> Result<StoredResponse, ApiError> {
        if self.unattributed {
            return Err(key_unattributed());
        }
        if self.fingerprint != context.fingerprint {
            return Err(key_reused());
        }
        if let (Some(made_by), Some(now)) = (self.role, context.role) {
            if !now.allows(made_by) {
                return Err(ApiError::forbidden(format!(
                    "This Idempotency-Key's request was made with the {} role; these credentials have {}.",
                    made_by.as_str(),
                    now.as_str()
                ))
                .with_param("Idempotency-Key"));
            }
        }
        Ok(self)
    }

    /// Opens a body that was sealed because it carries a secret (`crate::secrets`).
    pub fn open(mut self, keyring: &Keyring, context: &IdempotencyContext) -> Result<StoredResponse, ApiError> {
        if sealing::is_sealed(&self.response_body) {
            self.response_body = keyring
                .open(seal_context(context).as_bytes(), &self.response_body)
                .map_err(|error| ApiError::internal(&format_args!("opening a stored response: {error}")))?;
        }
        Ok(self)
    }

    /// The stored response again, byte for byte, marked `Idempotent-Replayed: true`.
    pub fn replay(self) -> Result<Response, ApiError> {
        if sealing::is_sealed(&self.response_body) {
            // Never send the sealed bytes: only `open` makes them the response again.
            return Err(ApiError::internal(&"a sealed stored response was replayed without opening it"));
        }
        let status = u16::try_from(self.response_status)
            .ok()
            .and_then(|code| StatusCode::from_u16(code).ok())
            .ok_or_else(|| ApiError::internal(&"a stored idempotent response has an invalid status"))?;
        let mut response = Response::new(Body::from(self.response_body));
        *response.status_mut() = status;
        if let Some(headers) = self.response_headers.as_object() {
            for (name, value) in headers {
                let name = HeaderName::try_from(name.as_str());
                let value = value.as_str().map(HeaderValue::from_str);
                if let (Ok(name), Some(Ok(value))) = (name, value) {
                    response.headers_mut().insert(name, value);
                }
            }
        }
        response.headers_mut().insert(IDEMPOTENT_REPLAYED_HEADER.clone(), HeaderValue::from_static("true"));
        Ok(response)
    }
}

async fn delegate(
    state: &UnitOfWorkState,
    owner: KeyOwner,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let key = idempotency_key(request.headers())?;
    let (parts, body) = request.into_parts();
    let body = read_body(body, state.body_bytes_max).await?;
    let context = owner.context(key, &parts, &body);
    let mut request = Request::from_parts(parts, Body::from(body));
    request.extensions_mut().insert(context);
    Ok(next.run(request).await)
}

/// The key, the body (read whole, to fingerprint it) and the idempotency context of a
/// POST, and the request with its body put back.
async fn read_idempotent(
    state: &UnitOfWorkState,
    owner: KeyOwner,
    request: Request,
) -> Result<(Scope, IdempotencyContext, bytes::Bytes, Request), ApiError> {
    let key = idempotency_key(request.headers())?;
    let (parts, body) = request.into_parts();
    let body = read_body(body, state.body_bytes_max).await?;
    let scope = owner.scope;
    let context = owner.context(key, &parts, &body);
    let request = Request::from_parts(parts, Body::from(body.clone()));
    Ok((scope, context, body, request))
}

async fn idempotent(
    state: &UnitOfWorkState,
    owner: KeyOwner,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let (scope, context, _, mut request) = read_idempotent(state, owner, request).await?;
    let mut transaction = begin(&state.pool, scope).await?;
    if !try_lock_key(&mut transaction, &context).await? {
        return Err(key_in_use());
    }
    let wanted = [(context.principal.clone(), context.key.clone())];
    let stored = find_stored(&mut transaction, &context.scope, &wanted).await?.pop();
    if let Some((_, stored)) = stored {
        rollback(transaction).await;
        return stored.admit(&context)?.open(&state.keyring, &context)?.replay();
    }

    sqlx::query("SAVEPOINT effect").execute(&mut *transaction).await?;
    let work = UnitOfWork::new(transaction);
    request.extensions_mut().insert(work.clone());
    let response = next.run(request).await;
    let mut transaction = work.into_transaction()?;

    let status = response.status();
    // A 429 says "not now", not "no": like a 5xx it is no decision, and a retry with the
    // same key must run again once the limit allows.
    if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
        rollback(transaction).await;
        return Ok(response);
    }
    if !status.is_success() {
        sqlx::query("ROLLBACK TO SAVEPOINT effect").execute(&mut *transaction).await?;
    }
    let response = store_response(&mut transaction, &state.keyring, &context, response).await?;
    transaction.commit().await.map_err(ApiError::database)?;
    Ok(response)
}

/// Stores `response` under `context`'s key in `transaction` (sealed if it carries a
/// secret) and gives it back to send.
pub(crate) async fn store_response(
    transaction: &mut PgConnection,
    keyring: &Keyring,
    context: &IdempotencyContext,
    response: Response,
) -> Result<Response, ApiError> {
    let status = response.status();
    let (response_parts, response_body) = response.into_parts();
    let response_body = axum::body::to_bytes(response_body, RESPONSE_BYTES_MAX)
        .await
        .map_err(|error| ApiError::internal(&format_args!("reading the response to store it: {error}")))?;
    let headers: serde_json::Map<String, serde_json::Value> = STORED_HEADERS
        .iter()
        .filter_map(|name| {
            let value = response_parts.headers.get(name)?.to_str().ok()?;
            Some((name.as_str().to_string(), serde_json::Value::String(value.to_string())))
        })
        .collect();
    // A secret never rests in plain text: the stored copy of such a response is sealed.
    let stored_body = if response_parts.extensions.get::<CarriesSecret>().is_some() {
        keyring.seal(seal_context(context).as_bytes(), &response_body)
    } else {
        response_body.to_vec()
    };
    sqlx::query(
        "INSERT INTO api.idempotency_keys
             (scope, principal, principal_role, key, method, path, fingerprint, response_status, response_headers,
              response_body)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(&context.scope)
    .bind(&context.principal)
    .bind(context.role.map(Role::as_str))
    .bind(&context.key)
    .bind(&context.method)
    .bind(&context.path)
    .bind(&context.fingerprint)
    .bind(i16::try_from(status.as_u16()).unwrap_or(i16::MAX))
    .bind(serde_json::Value::Object(headers))
    .bind(stored_body)
    .execute(&mut *transaction)
    .await?;
    Ok(Response::from_parts(response_parts, Body::from(response_body)))
}

/// The associated data a stored response is sealed with: its row's identity, so that a
/// sealed body copied to another key does not open there.
fn seal_context(context: &IdempotencyContext) -> String {
    format!("api.idempotency_keys\u{1f}{}\u{1f}{}\u{1f}{}", context.scope, context.principal, context.key)
}

/// Deletes keys older than `retention_hours` (at least 24), at most `batch_rows_max` at a
/// time; returns how many went.
pub async fn purge_expired_keys(pool: &PgPool, retention_hours: u32, batch_rows_max: i32) -> Result<i64, sqlx::Error> {
    let retention = format!("{retention_hours} hours");
    sqlx::query_scalar("SELECT api.purge_idempotency_keys($1::interval, $2)")
        .bind(retention)
        .bind(batch_rows_max)
        .fetch_one(pool)
        .await
}
