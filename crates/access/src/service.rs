//! Access's registration: businesses and API keys (tenant routes), the platform routes,
//! and purging token revocations that can refuse nothing any more. Authentication itself
//! is middleware the composition root builds from its configuration ([`Authenticator`]);
//! it provides that, and the key cache it shares with these routes, before mounting.

use std::time::Duration;

use axum::http::Method;
use till_http::auth::{Access, Role, RoutePermission};
use till_http::service::{Context, Job, MountError, Mounted, Service};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

use crate::authn::{Authenticator, KeyCache};

pub static SERVICE: Service =
    Service { name: "access", migrations: &crate::MIGRATIONS, outbox: Some(crate::api::OUTBOX), permissions, mount };

const PURGE_INTERVAL: Duration = Duration::from_secs(15 * 60);

#[derive(OpenApi)]
#[openapi(
    components(schemas(crate::api::ApiKeyBody)),
    tags(
        (name = "access", description = "The caller's business and its API keys."),
        (name = "platform", description = "Platform operators: creating businesses."),
    ),
)]
struct Doc;

fn mount(context: &mut Context) -> Result<Mounted, MountError> {
    let key_cache: KeyCache = context.require("access")?;
    let authenticator: Authenticator = context.require("access")?;
    // A token issued before a revocation expired at most a lifetime (and the clock
    // leeway) after it: the revocation can refuse nothing any more.
    let older_than = authenticator.jwt_lifetime_max() + Duration::from_secs(crate::jwt::LEEWAY_SECONDS_MAX * 2);
    let pool = context.pool.clone();
    Ok(Mounted {
        tenant_routes: OpenApiRouter::with_openapi(Doc::openapi())
            .merge(crate::api::tenant_routes())
            .layer(axum::Extension(key_cache)),
        platform_routes: crate::api::platform_routes(),
        jobs: vec![Job::new("token revocation purge", move |shutdown| purge_revocations(pool, older_than, shutdown))],
        ..Mounted::default()
    })
}

fn permissions() -> Vec<RoutePermission> {
    let row = |method, path, access| RoutePermission { method, path, access };
    vec![
        row(Method::POST, "/v1/platform/businesses", Access::Platform),
        row(Method::POST, "/v1/platform/token_revocations", Access::Platform),
        row(Method::GET, "/v1/business", Access::Role(Role::Viewer)),
        row(Method::GET, "/v1/api_keys", Access::Role(Role::Admin)),
        row(Method::POST, "/v1/api_keys", Access::Role(Role::Admin)),
        row(Method::DELETE, "/v1/api_keys/{id}", Access::Role(Role::Admin)),
    ]
}

async fn purge_revocations(pool: sqlx::PgPool, older_than: Duration, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(PURGE_INTERVAL);
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = tick.tick() => match crate::store::purge_revocations(&pool, older_than).await {
                Ok(0) => {}
                Ok(purged) => tracing::info!(purged, "purged token revocations that can refuse nothing any more"),
                // The next tick tries again; a revocation kept longer refuses only dead tokens.
                Err(error) => tracing::warn!(%error, "purging token revocations failed"),
            },
        }
    }
}
