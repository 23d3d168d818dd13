//! The events service's registration: the event log's schema and API, the relay from
//! every registered outbox, and (when RabbitMQ is the bus) the publisher. The bus is a
//! setting the composition root provides ([`Bus`]); mounting offers the services after
//! it a [`till_outbox::consume::Subscriber`] that runs their consumers on that bus.

use axum::http::Method;
use till_http::auth::{Access, Role, RoutePermission};
use till_http::service::{Context, Job, MountError, Mounted, Service};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

use crate::bus::Bus;

/// The events service's own outbox: webhook endpoint events went here while the webhooks
/// were part of this crate; it stays registered so nothing written there is stranded.
pub const OUTBOX: &str = "events.outbox";

pub static SERVICE: Service =
    Service { name: "events", migrations: &crate::MIGRATIONS, outbox: Some(OUTBOX), permissions, mount };

#[derive(OpenApi)]
#[openapi(
    components(schemas(till_outbox::EventBody, crate::api::EventTypeOnly)),
    tags((name = "events", description = "What happened to the business's resources, in order per resource. The catalogue of event types is docs/EVENTS.md; each event's `data` is the resource after it.")),
)]
struct Doc;

fn mount(context: &mut Context) -> Result<Mounted, MountError> {
    let bus: Bus = context.require("events")?;
    let pool = context.pool.clone();
    // The services mounted after this one consume events through it, on this bus.
    context.provide(till_outbox::consume::Subscriber::new({
        let (pool, bus) = (pool.clone(), bus.clone());
        move |subscription, handler, shutdown| {
            crate::bus::subscribe(pool.clone(), bus.clone(), subscription, handler, shutdown)
        }
    }));
    let mut jobs = vec![Job::new("relay", {
        let pool = pool.clone();
        move |shutdown| crate::relay::run(pool, shutdown)
    })];
    if let Bus::RabbitMq(broker) = bus {
        jobs.push(Job::new("rabbitmq publisher", move |shutdown| {
            crate::broker::publisher::run(pool, broker, shutdown)
        }));
    }
    Ok(Mounted {
        tenant_routes: OpenApiRouter::with_openapi(Doc::openapi()).merge(crate::api::routes()),
        jobs,
        ..Mounted::default()
    })
}

fn permissions() -> Vec<RoutePermission> {
    vec![
        RoutePermission { method: Method::GET, path: "/v1/events", access: Access::Role(Role::Viewer) },
        RoutePermission { method: Method::GET, path: "/v1/events/{id}", access: Access::Role(Role::Viewer) },
    ]
}
