//! Routes that exist only in tests, to drive the failure paths of shared middleware:
//! a handler that writes then panics, one that writes then refuses (4xx), and one that
//! fails with a 503 a set number of times before succeeding.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use axum::http::{Method, StatusCode};
use axum::response::IntoResponse;
use axum::routing::post;
use axum::Extension as AxumExtension;
use till_http::auth::{Access, Principal, Role, RoutePermission};
use till_http::unit_of_work::Tx;
use till_http::ApiError;
use till_http::ErrorCode;
use till_server::Extension;
use utoipa_axum::router::OpenApiRouter;

pub const PANIC_PATH: &str = "/v1/test/panic";
pub const REFUSE_PATH: &str = "/v1/test/refuse";
pub const FLAKY_PATH: &str = "/v1/test/flaky";

/// How many more times the flaky route fails before it succeeds.
#[derive(Clone, Default)]
pub struct FlakyBudget(pub Arc<AtomicU32>);

async fn write_marker(tx: &mut Tx, principal: &Principal, action: &str) -> Result<(), ApiError> {
    till_access::store::record_audit(tx, principal.business_id, action, "test", serde_json::json!({})).await?;
    Ok(())
}

async fn panics(principal: Principal, mut tx: Tx) -> Result<StatusCode, ApiError> {
    write_marker(&mut tx, &principal, "test.before_panic").await?;
    panic!("a deliberate panic carrying internal detail XYZ-42");
}

async fn refuses(principal: Principal, mut tx: Tx) -> Result<StatusCode, ApiError> {
    write_marker(&mut tx, &principal, "test.before_refusal").await?;
    Err(ApiError::new(ErrorCode::RuleViolated, "Refused by a business rule after writing."))
}

async fn flaky(
    AxumExtension(budget): AxumExtension<FlakyBudget>,
    principal: Principal,
    mut tx: Tx,
) -> Result<impl IntoResponse, ApiError> {
    write_marker(&mut tx, &principal, "test.flaky_effect").await?;
    let failing = budget.0.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| left.checked_sub(1)).is_ok();
    if failing {
        return Err(ApiError::unavailable(&"a deliberate transient failure"));
    }
    Ok((StatusCode::CREATED, axum::Json(serde_json::json!({ "done": true }))))
}

pub fn extension(budget: FlakyBudget) -> Extension {
    let tenant_routes = OpenApiRouter::new()
        .route(PANIC_PATH, post(panics))
        .route(REFUSE_PATH, post(refuses))
        .route(FLAKY_PATH, post(flaky).layer(AxumExtension(budget)));
    let viewer = Access::Role(Role::Viewer);
    let permissions = [PANIC_PATH, REFUSE_PATH, FLAKY_PATH]
        .into_iter()
        .map(|path| RoutePermission { method: Method::POST, path, access: viewer })
        .collect();
    Extension { tenant_routes, permissions, resumers: Vec::new() }
}

/// Counts audit rows with `action` for every business (owner pool, past RLS).
pub async fn count_actions(pool: &sqlx::PgPool, action: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM access.audit_log WHERE action = $1")
        .bind(action)
        .fetch_one(pool)
        .await
        .expect("counting audit rows")
}
