//! A request that calls an outside party: atomic phases with recovery points.
//!
//! A handler that calls a gateway or a bank must never hold a database transaction open
//! across the call (a slow party would hold row locks and a connection for as long as it
//! likes), and a crash between the call and recording its result must neither lose the
//! result nor make the call again as a new effect. So such a route is *phased* (after
//! Stripe's and brandur's design): the request is a sequence of atomic phases, each a
//! transaction of its own that commits its effects with the next *recovery point*, and
//! outside calls happen between phases.
//!
//! 1. The unit of work takes the Idempotency-Key as for any POST (replay of a stored
//!    response, 422 for another request, 409 while it runs), then holds the key by a
//!    *lease* in `api.recovery_points`, starting at the point [`STARTED`] or at the one
//!    where an earlier attempt stopped.
//! 2. The handler extracts [`Phased`], looks at [`Phased::point`] and goes on from there:
//!    typically phase 1 records the intent and the outside party's idempotency key and
//!    commits (`"intent_recorded"`, with that key in the point's data); the call is made,
//!    with that key; phase 2 records the validated result and finishes, which stores the
//!    response under the Idempotency-Key and removes the row, in one transaction.
//! 3. A retry of the same Idempotency-Key after the lease ran out (the process died, or
//!    the request hung), or the recovery job ([`resume_abandoned`]) with no client at
//!    all, takes a new lease and runs the route's [`Resumer`] from the last point: it
//!    calls the party again with the key recorded in phase 1, never a new one, so the
//!    party answers with the effect it already made.
//!
//! A handler's answer without [`Phase::finish`] is settled like any POST's: a 5xx or a
//! 429 is no decision (the row stays at its point and the lease is let go at once, so a
//! retry resumes), nor is an answer marked [`undecided`] (a 202 while an outside call's
//! outcome is unknown); anything else is stored as the key's response and the row removed.
//! A phase commits only under the lease it began with: once another request or the job
//! has taken the key over, the old one can no longer move it (409).

use std::future::Future;
use std::ops::{Deref, DerefMut};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use sqlx::{PgConnection, PgPool, Postgres, Transaction};
use till_kit::{BusinessId, Keyring};
use uuid::Uuid;

use crate::auth::{Role, Scope};
use crate::problem::ApiError;
use crate::unit_of_work::{self, IdempotencyContext, UnitOfWorkState};
use crate::ErrorCode;

/// The point of a request that has done nothing yet.
pub const STARTED: &str = "started";
/// Characters in a point's name.
const POINT_CHARS_MAX: usize = 100;

/// Where a phased request stands: the last point a phase committed, with what resuming
/// from it needs (ids, the outside party's idempotency key).
#[derive(Debug, Clone, PartialEq)]
pub struct RecoveryPoint {
    pub name: String,
    pub data: serde_json::Value,
}

impl RecoveryPoint {
    pub fn new(name: &str, data: serde_json::Value) -> RecoveryPoint {
        RecoveryPoint { name: name.to_string(), data }
    }

    pub fn is_started(&self) -> bool {
        self.name == STARTED
    }
}

/// How long a request holds its key without committing a phase (each phase renews it),
/// and how long after a lease ran out the recovery job takes the key over.
#[derive(Debug, Clone, Copy)]
pub struct RecoveryConfig {
    /// Longer than the longest outside call between two phases (with its retries).
    pub lease: Duration,
    /// Left for the client's own retry before the job resumes the request itself.
    pub grace: Duration,
}

impl Default for RecoveryConfig {
    fn default() -> RecoveryConfig {
        RecoveryConfig { lease: Duration::from_secs(60), grace: Duration::from_secs(30) }
    }
}

/// What resumes a phased route: the same code its handler runs, from the request's
/// [`Phased`] alone (its body, its business, its point).
pub type Resume = Arc<dyn Fn(Phased) -> Pin<Box<dyn Future<Output = Response> + Send>> + Send + Sync>;

/// A phased route and what resumes it. Registering one makes the route phased.
#[derive(Clone)]
pub struct Resumer {
    /// The route's template, as mounted (`/v1/payment_intents/{id}/capture`).
    pub route: &'static str,
    pub resume: Resume,
}

/// A phased request, held by its lease. Handlers extract it (once).
#[derive(Clone)]
pub struct Phased {
    pool: PgPool,
    keyring: Arc<Keyring>,
    scope: Scope,
    context: IdempotencyContext,
    lease: Uuid,
    lease_for: Duration,
    point: RecoveryPoint,
    body: Bytes,
    /// Times this key was taken: 1 for the first attempt.
    attempts: i32,
}

impl Phased {
    /// The last point a phase committed ([`STARTED`] at first).
    pub fn point(&self) -> &RecoveryPoint {
        &self.point
    }

    /// The request's body, as first sent.
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// The business the request acts for (`None` on platform routes).
    pub fn business(&self) -> Option<BusinessId> {
        match self.scope {
            Scope::Business(business) => Some(business),
            Scope::Platform => None,
        }
    }

    pub fn idempotency(&self) -> &IdempotencyContext {
        &self.context
    }

    pub fn attempts(&self) -> i32 {
        self.attempts
    }

    /// Begins an atomic phase: a transaction scoped to the request, which renews the
    /// lease and fails (409) if another request or the job has taken the key over.
    pub async fn begin(&mut self) -> Result<Phase<'_>, ApiError> {
        let mut transaction = unit_of_work::begin(&self.pool, self.scope).await?;
        let held: Option<i32> = sqlx::query_scalar(
            "UPDATE api.recovery_points SET locked_until = now() + $5::interval
              WHERE scope = $1 AND principal = $2 AND key = $3 AND lease = $4
             RETURNING attempts",
        )
        .bind(&self.context.scope)
        .bind(&self.context.principal)
        .bind(&self.context.key)
        .bind(self.lease)
        .bind(interval(self.lease_for))
        .fetch_optional(&mut *transaction)
        .await?;
        if held.is_none() {
            return Err(lease_lost());
        }
        Ok(Phase { phased: self, transaction })
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Phased {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .remove::<Phased>()
            .ok_or_else(|| ApiError::internal(&"a phased handler ran on a route without recovery points"))
    }
}

/// One atomic phase: its effects, then [`Phase::commit`] with the next point, or
/// [`Phase::finish`] with the response. Dropped without either, it rolls back.
pub struct Phase<'a> {
    phased: &'a mut Phased,
    transaction: Transaction<'static, Postgres>,
}

impl Deref for Phase<'_> {
    type Target = PgConnection;
    fn deref(&self) -> &PgConnection {
        &self.transaction
    }
}

impl DerefMut for Phase<'_> {
    fn deref_mut(&mut self) -> &mut PgConnection {
        &mut self.transaction
    }
}

impl Phase<'_> {
    /// Commits the phase's effects with the next recovery point.
    pub async fn commit(mut self, next: RecoveryPoint) -> Result<(), ApiError> {
        if next.name.is_empty() || next.name.chars().count() > POINT_CHARS_MAX || next.name == STARTED {
            return Err(ApiError::internal(&format_args!("a recovery point cannot be named {:?}", next.name)));
        }
        let moved = sqlx::query(
            "UPDATE api.recovery_points SET point = $5, point_data = $6, updated_at = now()
              WHERE scope = $1 AND principal = $2 AND key = $3 AND lease = $4",
        )
        .bind(&self.phased.context.scope)
        .bind(&self.phased.context.principal)
        .bind(&self.phased.context.key)
        .bind(self.phased.lease)
        .bind(&next.name)
        .bind(&next.data)
        .execute(&mut *self.transaction)
        .await?
        .rows_affected();
        if moved != 1 {
            return Err(lease_lost());
        }
        self.transaction.commit().await.map_err(ApiError::database)?;
        self.phased.point = next;
        Ok(())
    }

    /// Ends the phase with nothing of it kept (a phase that only read, or one whose
    /// effects must not stay). Explicitly: a dropped transaction is rolled back only
    /// when its connection is next used, and until then it keeps the lease row locked.
    pub async fn rollback(self) {
        if let Err(error) = self.transaction.rollback().await {
            tracing::warn!(%error, "rolling a phase back failed; the connection will be discarded");
        }
    }

    /// Commits the last phase: its effects, `status` and `body` stored as the key's
    /// response (replayed from now on), and the recovery row gone.
    pub async fn finish(self, status: StatusCode, body: &impl serde::Serialize) -> Result<Response, ApiError> {
        let body = serde_json::to_vec(body).map_err(|error| ApiError::internal(&error))?;
        let mut response = Response::new(Body::from(body));
        *response.status_mut() = status;
        response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        self.finish_with(response).await
    }

    /// Commits the last phase with a problem as the key's response: a decision (a 4xx,
    /// or a reply that could not be trusted) that a retry must get again, not redo.
    pub async fn finish_problem(self, problem: ApiError) -> Result<Response, ApiError> {
        self.finish_with(problem.into_response()).await
    }

    async fn finish_with(mut self, response: Response) -> Result<Response, ApiError> {
        let keyring = self.phased.keyring.clone();
        let identity = LeaseIdentity { context: &self.phased.context, lease: self.phased.lease };
        let response = store_final(&mut self.transaction, &keyring, identity, response).await?;
        self.transaction.commit().await.map_err(ApiError::database)?;
        let mut response = response;
        response.extensions_mut().insert(Finished);
        Ok(response)
    }
}

/// Marks a response whose request finished under its lease (nothing left to settle).
#[derive(Clone, Copy)]
struct Finished;

/// Marks an answer that is not the request's outcome, see [`undecided`].
#[derive(Clone, Copy)]
struct Undecided;

/// An answer given while the outcome is not known (an outside call timed out: it may or
/// may not have acted), such as a 202 with the resource as it stands. Like a 5xx it
/// decides nothing: the point stays and the lease is let go, so a retry of the same key
/// resumes from the point (and gets the outcome once known), and the recovery job
/// resumes it if nobody retries.
pub fn undecided(mut response: Response) -> Response {
    response.extensions_mut().insert(Undecided);
    response
}

#[derive(Clone, Copy)]
struct LeaseIdentity<'a> {
    context: &'a IdempotencyContext,
    lease: Uuid,
}

/// In `transaction`: removes the recovery row (only under `identity`'s lease: 409 if it
/// was taken over) and stores `response` as the key's.
async fn store_final(
    transaction: &mut PgConnection,
    keyring: &Keyring,
    identity: LeaseIdentity<'_>,
    response: Response,
) -> Result<Response, ApiError> {
    let context = identity.context;
    let removed =
        sqlx::query("DELETE FROM api.recovery_points WHERE scope = $1 AND principal = $2 AND key = $3 AND lease = $4")
            .bind(&context.scope)
            .bind(&context.principal)
            .bind(&context.key)
            .bind(identity.lease)
            .execute(&mut *transaction)
            .await?
            .rows_affected();
    if removed != 1 {
        return Err(lease_lost());
    }
    unit_of_work::store_response(transaction, keyring, context, response).await
}

/// The 409 for a request whose key another request (or the recovery job) took over.
fn lease_lost() -> ApiError {
    ApiError::new(
        ErrorCode::IdempotencyKeyInUse,
        "Another attempt of this Idempotency-Key's request has taken it over. Retry to get its response.",
    )
    .with_param("Idempotency-Key")
}

fn interval(duration: Duration) -> String {
    format!("{} milliseconds", duration.as_millis())
}

/// What is settled after the handler (or a resumer) answered without finishing.
async fn settle(
    pool: &PgPool,
    keyring: &Keyring,
    scope: Scope,
    identity: LeaseIdentity<'_>,
    response: Response,
) -> Result<Response, ApiError> {
    if response.extensions().get::<Finished>().is_some() {
        return Ok(response);
    }
    let status = response.status();
    let undecided = response.extensions().get::<Undecided>().is_some();
    if undecided || status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
        // No decision: keep the point and let the key go now, so a retry resumes at once.
        let mut transaction = unit_of_work::begin(pool, scope).await?;
        // Expedited while it ran (the outcome is known elsewhere): due for the job at once.
        sqlx::query(
            "UPDATE api.recovery_points
                SET locked_until = CASE WHEN expedited THEN '-infinity'::timestamptz ELSE now() END
              WHERE scope = $1 AND principal = $2 AND key = $3 AND lease = $4",
        )
        .bind(&identity.context.scope)
        .bind(&identity.context.principal)
        .bind(&identity.context.key)
        .bind(identity.lease)
        .execute(&mut *transaction)
        .await?;
        transaction.commit().await.map_err(ApiError::database)?;
        return Ok(response);
    }
    let mut transaction = unit_of_work::begin(pool, scope).await?;
    let response = store_final(&mut transaction, keyring, identity, response).await?;
    transaction.commit().await.map_err(ApiError::database)?;
    Ok(response)
}

/// The unit of work for a phased route: takes the key's lease, runs the handler without
/// a transaction, and settles what it answered.
pub(crate) async fn middleware(
    state: &UnitOfWorkState,
    scope: Scope,
    context: IdempotencyContext,
    route: &str,
    body: Bytes,
    mut request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let lease = match take(state, scope, &context, route, &body).await? {
        Taken::Lease(phased) => phased,
        Taken::Answer(response) => return Ok(response),
    };
    let identity_context = lease.context.clone();
    let lease_id = lease.lease;
    request.extensions_mut().insert(lease);
    let response = next.run(request).await;
    let identity = LeaseIdentity { context: &identity_context, lease: lease_id };
    settle(&state.pool, &state.keyring, scope, identity, response).await
}

enum Taken {
    Lease(Phased),
    /// The key's stored response, or why it cannot be taken.
    Answer(Response),
}

#[derive(sqlx::FromRow)]
struct PointRow {
    fingerprint: Vec<u8>,
    principal_role: Option<String>,
    point: String,
    point_data: serde_json::Value,
    held: bool,
    attempts: i32,
}

/// Takes `context`'s key for a new lease: a replay if it is finished, a refusal if it is
/// another request's or held now, or the lease at the point where it stands.
///
/// The transaction holds the key's advisory lock, so it is ended explicitly on every
/// path: a transaction merely dropped is rolled back only when its connection is next
/// used, and until then its idle pooled connection would keep the lock, making the next
/// request with the key (a client's second replay) a 409.
async fn take(
    state: &UnitOfWorkState,
    scope: Scope,
    context: &IdempotencyContext,
    route: &str,
    body: &Bytes,
) -> Result<Taken, ApiError> {
    let mut transaction = unit_of_work::begin(&state.pool, scope).await?;
    match take_in(state, &mut transaction, scope, context, route, body).await {
        Ok(Taken::Lease(phased)) => {
            transaction.commit().await.map_err(ApiError::database)?;
            Ok(Taken::Lease(phased))
        }
        other => {
            unit_of_work::rollback(transaction).await;
            other
        }
    }
}

async fn take_in(
    state: &UnitOfWorkState,
    transaction: &mut PgConnection,
    scope: Scope,
    context: &IdempotencyContext,
    route: &str,
    body: &Bytes,
) -> Result<Taken, ApiError> {
    if !unit_of_work::try_lock_key(&mut *transaction, context).await? {
        return Err(unit_of_work::key_in_use());
    }
    let row: Option<PointRow> = sqlx::query_as(
        "SELECT fingerprint, principal_role, point, point_data, locked_until > now() AS held, attempts
           FROM api.recovery_points WHERE scope = $1 AND principal = $2 AND key = $3 FOR UPDATE",
    )
    .bind(&context.scope)
    .bind(&context.principal)
    .bind(&context.key)
    .fetch_optional(&mut *transaction)
    .await?;
    let lease = Uuid::now_v7();
    let lease_for = interval(state.recovery.lease);
    let (point, attempts) = match row {
        Some(row) if row.fingerprint != context.fingerprint => return Err(unit_of_work::key_reused()),
        Some(row) if row.held => return Err(unit_of_work::key_in_use()),
        Some(row) => {
            if let (Some(made_by), Some(now)) = (row.principal_role.as_deref().and_then(Role::parse), context.role) {
                if !now.allows(made_by) {
                    return Err(ApiError::forbidden(format!(
                        "This Idempotency-Key's request was made with the {} role; these credentials have {}.",
                        made_by.as_str(),
                        now.as_str()
                    ))
                    .with_param("Idempotency-Key"));
                }
            }
            sqlx::query(
                "UPDATE api.recovery_points
                    SET lease = $4, locked_until = now() + $5::interval, attempts = attempts + 1, expedited = false
                  WHERE scope = $1 AND principal = $2 AND key = $3",
            )
            .bind(&context.scope)
            .bind(&context.principal)
            .bind(&context.key)
            .bind(lease)
            .bind(&lease_for)
            .execute(&mut *transaction)
            .await?;
            (RecoveryPoint { name: row.point, data: row.point_data }, row.attempts.saturating_add(1))
        }
        None => {
            // No row: the key is new, or its request finished (the row is deleted in the
            // transaction that stores the response), possibly while this one waited on
            // the row's lock above; then the response is committed now, and this
            // statement (read committed) sees it. Replay it rather than run the request
            // again (and fail to store a second response). Looked up only here: a row
            // that is there means its request has not finished.
            let wanted = [(context.principal.clone(), context.key.clone())];
            if let Some((_, stored)) =
                unit_of_work::find_stored(&mut *transaction, &context.scope, &wanted).await?.pop()
            {
                let response = stored.admit(context)?.open(&state.keyring, context)?.replay()?;
                return Ok(Taken::Answer(response));
            }
            sqlx::query(
                "INSERT INTO api.recovery_points
                     (scope, principal, principal_role, key, method, path, route, fingerprint, request_body, point,
                      point_data, lease, locked_until)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, '{}', $11, now() + $12::interval)",
            )
            .bind(&context.scope)
            .bind(&context.principal)
            .bind(context.role.map(Role::as_str))
            .bind(&context.key)
            .bind(&context.method)
            .bind(&context.path)
            .bind(route)
            .bind(&context.fingerprint)
            .bind(body.as_ref())
            .bind(STARTED)
            .bind(lease)
            .bind(&lease_for)
            .execute(&mut *transaction)
            .await?;
            (RecoveryPoint::new(STARTED, serde_json::json!({})), 1)
        }
    };
    Ok(Taken::Lease(Phased {
        pool: state.pool.clone(),
        keyring: state.keyring.clone(),
        scope,
        context: context.clone(),
        lease,
        lease_for: state.recovery.lease,
        point,
        body: body.clone(),
        attempts,
    }))
}

#[derive(sqlx::FromRow)]
struct AbandonedRow {
    scope: String,
    principal: String,
    key: String,
}

#[derive(sqlx::FromRow)]
struct ResumableRow {
    principal_role: Option<String>,
    method: String,
    path: String,
    route: String,
    fingerprint: Vec<u8>,
    request_body: Vec<u8>,
}

/// The recovery job: resumes requests whose lease ran out `config.grace` ago and that no
/// client has retried, with their route's resumer, and stores what it answers as the
/// key's response (a later retry replays it). Returns how many it resumed.
pub async fn resume_abandoned(state: &UnitOfWorkState, resumers: &[Resumer], rows_max: i32) -> Result<usize, ApiError> {
    let abandoned: Vec<AbandonedRow> =
        sqlx::query_as("SELECT scope, principal, key FROM api.abandoned_recovery_points($1::interval, $2)")
            .bind(interval(state.recovery.grace))
            .bind(rows_max)
            .fetch_all(&state.pool)
            .await?;
    let mut resumed = 0;
    for row in abandoned {
        let scope = if row.scope == "platform" {
            Scope::Platform
        } else {
            match Uuid::parse_str(&row.scope) {
                Ok(uuid) => Scope::Business(BusinessId::from_uuid(uuid)),
                Err(_) => {
                    tracing::error!(scope = %row.scope, "a recovery point with an unreadable scope");
                    continue;
                }
            }
        };
        match resume_one(state, resumers, scope, &row).await {
            Ok(true) => resumed += 1,
            Ok(false) => {}
            Err(error) => tracing::warn!(%error, key = %row.key, "resuming a request failed; the next pass retries"),
        }
    }
    Ok(resumed)
}

async fn resume_one(
    state: &UnitOfWorkState,
    resumers: &[Resumer],
    scope: Scope,
    abandoned: &AbandonedRow,
) -> Result<bool, ApiError> {
    let mut transaction = unit_of_work::begin(&state.pool, scope).await?;
    let row: Option<ResumableRow> = sqlx::query_as(
        "SELECT principal_role, method, path, route, fingerprint, request_body FROM api.recovery_points
          WHERE scope = $1 AND principal = $2 AND key = $3",
    )
    .bind(&abandoned.scope)
    .bind(&abandoned.principal)
    .bind(&abandoned.key)
    .fetch_optional(&mut *transaction)
    .await?;
    drop(transaction);
    // Finished since the listing.
    let Some(row) = row else { return Ok(false) };
    let Some(resumer) = resumers.iter().find(|resumer| resumer.route == row.route) else {
        tracing::error!(route = %row.route, "a recovery point of a route nothing resumes");
        return Ok(false);
    };
    let context = IdempotencyContext {
        scope: abandoned.scope.clone(),
        principal: abandoned.principal.clone(),
        role: row.principal_role.as_deref().and_then(Role::parse),
        key: abandoned.key.clone(),
        fingerprint: row.fingerprint,
        method: row.method,
        path: row.path,
    };
    // Taken as a client's retry would take it: the same checks, a new lease. A client
    // that retried since the listing holds it now (409), and the job leaves it alone.
    let phased = match take(state, scope, &context, &row.route, &Bytes::from(row.request_body)).await {
        Ok(Taken::Lease(phased)) => phased,
        Ok(Taken::Answer(_)) => return Ok(false),
        Err(error) if error.code == ErrorCode::IdempotencyKeyInUse => return Ok(false),
        Err(error) => return Err(error),
    };
    let lease = phased.lease;
    tracing::info!(key = %context.key, route = %row.route, point = %phased.point.name, "resuming an abandoned request");
    let response = (resumer.resume)(phased).await;
    let identity = LeaseIdentity { context: &context, lease };
    let response = settle(&state.pool, &state.keyring, scope, identity, response).await?;
    let undecided = response.extensions().get::<Undecided>().is_some();
    Ok(!undecided && !response.status().is_server_error())
}

/// Makes the unfinished requests whose point's `data_key` is `value` (`"intent"`,
/// `"pi_…"`) due for the recovery job now, in the caller's transaction and scope: one
/// whose lease was let go (it answered undecided, or a 5xx) is resumed on the job's next
/// pass, without waiting out the grace; one still running is resumed as soon as it lets
/// its lease go undecided. A running request is never taken over. Returns how many
/// requests are unfinished, expedited or not.
///
/// It never waits for a lock: a point whose phase is committing right now is left as it
/// is (that phase is about to record its outcome), so a caller may hold locks the phase
/// wants (the intent's row) without the two waiting for each other.
pub async fn expedite(connection: &mut PgConnection, data_key: &str, value: &str) -> Result<u64, sqlx::Error> {
    // Found first by a plain read, which waits for nobody; then updated by its key unless
    // its phase holds it. One UPDATE filtering on the data would wait for every phase in
    // flight in the scope: under load, webhooks held connections waiting on requests that
    // had nothing to do with them (`till bench payments`).
    let keys: Vec<(String, String)> = sqlx::query_as(
        "SELECT principal, key FROM api.recovery_points WHERE scope = till.current_scope() AND point_data->>$1 = $2",
    )
    .bind(data_key)
    .bind(value)
    .fetch_all(&mut *connection)
    .await?;
    for (principal, key) in &keys {
        sqlx::query(
            "UPDATE api.recovery_points
                SET expedited = true,
                    locked_until = CASE WHEN locked_until <= now() THEN '-infinity'::timestamptz ELSE locked_until END
              WHERE (scope, principal, key) IN (
                    SELECT scope, principal, key FROM api.recovery_points
                     WHERE scope = till.current_scope() AND principal = $1 AND key = $2
                       FOR UPDATE SKIP LOCKED)",
        )
        .bind(principal)
        .bind(key)
        .execute(&mut *connection)
        .await?;
    }
    Ok(u64::try_from(keys.len()).unwrap_or(u64::MAX))
}

/// A phased route's handler answers as any handler does; this only names the type.
pub type PhasedResponse = Result<Response, ApiError>;

/// Turns a phased handler's result into its response.
pub fn respond(result: PhasedResponse) -> Response {
    result.unwrap_or_else(IntoResponse::into_response)
}
