//! The ledger's registration: its schema, its outbox, its routes and permission rows, and
//! the hold sweeper. Mounting starts the group-commit engine and offers it, and the
//! in-process posting API ([`Ledger`]), to the services mounted after it.

use std::time::Duration;

use axum::http::Method;
use till_http::auth::{Access, Role, RoutePermission};
use till_http::service::{Context, Job, MountError, Mounted, Service};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

use crate::engine::Engine;
use crate::posting::Ledger;

pub static SERVICE: Service =
    Service { name: "ledger", migrations: &crate::MIGRATIONS, outbox: Some(crate::store::OUTBOX), permissions, mount };

const HOLD_SWEEP_INTERVAL: Duration = Duration::from_secs(1);
const HOLD_SWEEP_ROWS_MAX: i32 = 1_000;

#[derive(OpenApi)]
#[openapi(
    components(schemas(crate::view::AccountBody, crate::view::TransferBody)),
    tags((name = "ledger", description = "Double-entry accounts, transfers, holds, batches, reversals, balances and the invariant checker. Amounts are integer minor units.")),
)]
struct Doc;

fn mount(context: &mut Context) -> Result<Mounted, MountError> {
    let engine = Engine::new(context.pool.clone()).map_err(|error| MountError::Failed {
        service: "ledger",
        why: format!("starting the writers' runtime: {error}"),
    })?;
    context.provide(engine.clone());
    context.provide(Ledger::new(engine.clone()));
    Ok(Mounted {
        tenant_routes: OpenApiRouter::with_openapi(Doc::openapi()).merge(crate::api::routes(engine.clone())),
        delegated_paths: crate::api::ENGINE_PATHS.to_vec(),
        jobs: vec![Job::new("hold sweeper", move |shutdown| sweep_holds(engine, shutdown))],
        ..Mounted::default()
    })
}

/// Viewers read, finance moves money, admins change accounts' limits.
fn permissions() -> Vec<RoutePermission> {
    let row = |method, path, role| RoutePermission { method, path, access: Access::Role(role) };
    vec![
        row(Method::GET, "/v1/accounts", Role::Viewer),
        row(Method::POST, "/v1/accounts", Role::Finance),
        row(Method::GET, "/v1/accounts/{id}", Role::Viewer),
        row(Method::PATCH, "/v1/accounts/{id}", Role::Admin),
        row(Method::GET, "/v1/accounts/{id}/entries", Role::Viewer),
        row(Method::GET, "/v1/accounts/{id}/balance", Role::Viewer),
        row(Method::GET, "/v1/transfers", Role::Viewer),
        row(Method::POST, "/v1/transfers", Role::Finance),
        row(Method::GET, "/v1/transfers/{id}", Role::Viewer),
        row(Method::POST, "/v1/transfers/{id}/post", Role::Finance),
        row(Method::POST, "/v1/transfers/{id}/void", Role::Finance),
        row(Method::POST, "/v1/transfers/{id}/reverse", Role::Finance),
        row(Method::POST, "/v1/transfers/batch", Role::Finance),
        row(Method::GET, "/v1/ledger/check", Role::Viewer),
    ]
}

/// Expires overdue holds, a bounded number per tick (a backlog drains over a few ticks),
/// until shutdown; then closes the writers. The server awaits this job after the API has
/// drained, so no request meets closed writers.
async fn sweep_holds(engine: Engine, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(HOLD_SWEEP_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            _ = tick.tick() => match crate::engine::expire_overdue_holds(&engine, HOLD_SWEEP_ROWS_MAX).await {
                Ok(0) => {}
                Ok(expired) => tracing::info!(expired, "expired overdue holds"),
                // The next tick tries again; a hold past its expiry cannot be posted meanwhile.
                Err(error) => tracing::warn!(%error, "sweeping overdue holds failed"),
            },
        }
    }
    engine.close().await;
}
