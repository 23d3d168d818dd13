//! Till's composition root. Services contribute routes; this crate decides how they are
//! mounted, which middleware guards them, what each route needs (the permission table),
//! how the OpenAPI document is assembled, and how the server starts and stops.

pub mod app;
pub mod config;
pub mod jobs;
pub mod openapi;
pub mod permissions;

pub use app::{build, AppParts, Extension};
pub use config::Config;

/// Every schema's migrations, in the order they must run.
pub fn migrations() -> [&'static till_db::SchemaMigrations; 5] {
    // The events schema comes before the services, whose outboxes register with it.
    [
        &till_db::MIGRATIONS,
        &till_http::MIGRATIONS,
        &till_events::MIGRATIONS,
        &till_access::MIGRATIONS,
        &till_ledger::MIGRATIONS,
    ]
}

/// Serves `router` on `listener` until `shutdown` resolves, then stops accepting and
/// lets in-flight requests finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: axum::Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::serve::ListenerExt;
    // Without TCP_NODELAY, a response written in two segments waits for the client's
    // delayed ACK (about 40 ms on Linux): every request would take that long.
    let listener = listener.tap_io(|stream| {
        if let Err(error) = stream.set_nodelay(true) {
            tracing::warn!(%error, "could not set TCP_NODELAY");
        }
    });
    axum::serve(listener, router.into_make_service_with_connect_info::<std::net::SocketAddr>())
        .with_graceful_shutdown(shutdown)
        .await
}
