//! The webhooks service's registration: its schema and outbox, the endpoints API, and the
//! worker (fan-out, delivery, disabling endpoints that keep failing). Its settings are a
//! [`WebhookConfig`] the composition root provides.

use axum::http::Method;
use till_http::auth::{Access, Role, RoutePermission};
use till_http::service::{Context, Job, MountError, Mounted, Service};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

use crate::WebhookConfig;

pub const OUTBOX: &str = "webhooks.outbox";

pub static SERVICE: Service =
    Service { name: "webhooks", migrations: &crate::MIGRATIONS, outbox: Some(OUTBOX), permissions, mount };

#[derive(OpenApi)]
#[openapi(
    components(schemas(crate::api::WebhookEndpointBody)),
    tags((name = "webhooks", description = "Webhook endpoints: events delivered to merchants, signed per Standard Webhooks (webhook-id, webhook-timestamp, webhook-signature), retried with backoff, in order per resource.")),
)]
struct Doc;

fn mount(context: &mut Context) -> Result<Mounted, MountError> {
    let config: WebhookConfig = context.require("webhooks")?;
    let (pool, keyring) = (context.pool.clone(), context.keyring.clone());
    Ok(Mounted {
        tenant_routes: OpenApiRouter::with_openapi(Doc::openapi())
            .merge(crate::api::routes(config.clone(), keyring.clone())),
        jobs: vec![Job::new("webhook worker", move |shutdown| crate::worker::run(pool, config, keyring, shutdown))],
        ..Mounted::default()
    })
}

/// Admins manage endpoints: they receive the business's data.
fn permissions() -> Vec<RoutePermission> {
    let row = |method, path, role| RoutePermission { method, path, access: Access::Role(role) };
    vec![
        row(Method::GET, "/v1/webhook_endpoints", Role::Viewer),
        row(Method::POST, "/v1/webhook_endpoints", Role::Admin),
        row(Method::GET, "/v1/webhook_endpoints/{id}", Role::Viewer),
        row(Method::PATCH, "/v1/webhook_endpoints/{id}", Role::Admin),
        row(Method::DELETE, "/v1/webhook_endpoints/{id}", Role::Admin),
        row(Method::POST, "/v1/webhook_endpoints/{id}/rotate_secret", Role::Admin),
        row(Method::GET, "/v1/webhook_endpoints/{id}/deliveries", Role::Viewer),
        row(Method::POST, "/v1/webhook_endpoints/{id}/replay", Role::Admin),
    ]
}
