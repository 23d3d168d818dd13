//! Serving connections: hyper's HTTP/1 server, with the limits that keep one client from
//! holding the server (slowloris and its kin).
//!
//! - A connection may take at most `header_timeout` to send a request's line and
//!   headers, and may sit idle between requests no longer than that either: hyper starts
//!   its header timer when it waits for the next request.
//! - A request's body must arrive within `body_timeout` (`till_http::body`), and a
//!   `Content-Length` over the body limit is a 413 before a byte of it is read.
//! - At most `connections_max` connections are served at once; the next waits in the
//!   kernel's accept queue until one ends.
//!
//! On shutdown the listener closes, every connection finishes its request in flight and
//! closes (graceful), and the drain ends after `drain_timeout` at the latest.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::sync::Semaphore;
use tower::ServiceExt;

/// How connections are limited (README, "Configuration").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    pub header_timeout: Duration,
    pub body_timeout: Duration,
    pub connections_max: usize,
    pub drain_timeout: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> ConnectionLimits {
        ConnectionLimits {
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            connections_max: 1024,
            drain_timeout: Duration::from_secs(30),
        }
    }
}

/// Serves `router` on `listener` until `shutdown` resolves, then stops accepting and
/// lets in-flight requests finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: axum::Router,
    limits: ConnectionLimits,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let connections = Arc::new(Semaphore::new(limits.connections_max.max(1)));
    let graceful = GracefulShutdown::new();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(limits.header_timeout).keep_alive(true);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        // A free place first, then a connection: at the cap, new connections wait in
        // the kernel's queue rather than being accepted and starved.
        let permit = tokio::select! {
            permit = Arc::clone(&connections).acquire_owned() => permit,
            () = &mut shutdown => break,
        };
        let Ok(permit) = permit else { break };
        let (stream, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors, or a connection reset before accept: wait
                    // a moment rather than spin.
                    tracing::warn!(%error, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Without TCP_NODELAY, a response written in two segments waits for the client's
        // delayed ACK (about 40 ms on Linux): every request would take that long.
        if let Err(error) = stream.set_nodelay(true) {
            tracing::warn!(%error, "could not set TCP_NODELAY");
        }
        let service = hyper::service::service_fn(connection_service(router.clone(), remote));
        let connection = builder.serve_connection(TokioIo::new(stream), service);
        let watched = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(error) = watched.await {
                // A client that timed out, reset or sent garbage: its connection ends.
                tracing::debug!(%error, %remote, "connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    if tokio::time::timeout(limits.drain_timeout, graceful.shutdown()).await.is_err() {
        tracing::warn!("connections still open after the drain timeout; closing them");
    }
    Ok(())
}

type ResponseFuture =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<axum::response::Response, Infallible>> + Send>>;

/// The router as a hyper service for one connection, with the peer's address where
/// axum's `ConnectInfo` extractor finds it.
fn connection_service(
    router: axum::Router,
    remote: SocketAddr,
) -> impl Fn(hyper::Request<Incoming>) -> ResponseFuture + Clone {
    move |request: hyper::Request<Incoming>| {
        let mut request = request.map(axum::body::Body::new);
        request.extensions_mut().insert(ConnectInfo(remote));
        let router = router.clone();
        Box::pin(async move { router.oneshot(request).await })
    }
}
