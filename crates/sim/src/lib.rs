//! The simulator: Till's stand-in for the outside parties it cannot run.
//!
//! Each provider speaks a subset of its real public API under a path prefix of its
//! name (`/stripe/v1/…`), so an adapter written against the simulator is a real adapter:
//! pointed at the provider with real credentials, it works unchanged. A provider is one
//! module that implements [`Provider`] and one line in [`PROVIDERS`].
//!
//! Beside the providers, a control API for tests, demos and chaos runs:
//! - `POST /_sim/faults` arms a fault for a provider's operation, `DELETE /_sim/faults`
//!   clears them all ([`faults`]);
//! - `GET /_sim/calls?provider=…` lists every request received, oldest first ([`calls`]);
//! - `GET /_sim/{provider}/objects/{id}` shows the provider's own view of an object;
//! - `POST /_sim/{provider}/settle` settles what the provider holds now, without waiting
//!   for its schedule (its payouts; see [`Provider::tick`]);
//! - `POST /_sim/webhooks` `{provider, url, secret}` says where a provider sends its
//!   webhooks and what it signs them with ([`webhooks`]);
//! - `GET /_sim/mailbox[?to=…]` lists the messages its SMTP server took ([`mailbox`]),
//!   when it serves one ([`Options::smtp`]).
//!
//! State lives in memory: a simulator restart forgets everything, as a sandbox reset
//! would. Nothing in the product depends on this crate (`tests/architecture.rs`).

pub mod calls;
pub mod faults;
pub mod form;
pub mod fps;
pub mod mailbox;
pub mod razorpay;
pub mod razorpayx;
pub mod salesforce;
pub mod sms;
pub mod stripe;
pub mod tls;
pub mod webhooks;

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;

/// A provider the simulator plays.
pub trait Provider: Send + Sync + 'static {
    /// Its path prefix and its name in the control API (`stripe`).
    fn name(&self) -> &'static str;
    /// Its API, mounted under `/{name}`.
    fn routes(&self, sim: Sim) -> Router;
    /// Its own view of one of its objects, by the provider's id.
    fn object(&self, id: &str) -> Option<serde_json::Value>;
    /// What it does on its own schedule (a gateway's payouts), once a second.
    fn tick(&self) {}
    /// Settles everything it holds now, not on its schedule (`POST /_sim/{provider}/settle`);
    /// returns how many settlements it made.
    fn settle(&self) -> usize {
        0
    }
}

/// The providers, one line each.
fn providers() -> Vec<Arc<dyn Provider>> {
    vec![
        Arc::new(stripe::Stripe::default()),
        Arc::new(razorpay::Razorpay::default()),
        Arc::new(fps::Fps::default()),
        Arc::new(razorpayx::RazorpayX::default()),
        Arc::new(sms::Sms::default()),
        Arc::new(salesforce::Salesforce::default()),
    ]
}

/// What every provider shares: the armed faults, the call log, and where webhooks go.
#[derive(Clone, Default)]
pub struct Sim {
    pub faults: faults::Faults,
    pub calls: calls::Calls,
    pub webhooks: webhooks::Webhooks,
    pub mailbox: mailbox::Mailbox,
}

/// The simulator's router: every provider under its prefix, and the control API. Nothing
/// runs on a schedule: [`serve`] adds that.
pub fn router() -> Router {
    build(&[]).0
}

fn build(targets: &[webhooks::Target]) -> (Router, Vec<Arc<dyn Provider>>, Sim) {
    let sim = Sim::default();
    for target in targets {
        sim.webhooks.set(target.clone());
    }
    let providers = providers();
    let mut router = Router::new();
    for provider in &providers {
        router = router.nest(&format!("/{}", provider.name()), provider.routes(sim.clone()));
    }
    let control = Router::new()
        .route("/_sim/faults", post(arm_fault).delete(clear_faults))
        .route("/_sim/calls", get(list_calls))
        .route("/_sim/{provider}/objects/{id}", get(object))
        .route("/_sim/{provider}/settle", post(settle))
        .route("/_sim/webhooks", post(set_webhooks))
        .route("/_sim/mailbox", get(list_mailbox))
        .with_state(Control { sim: sim.clone(), providers: Arc::new(providers.clone()) });
    (router.merge(control), providers, sim)
}

/// How the simulator runs.
#[derive(Debug)]
pub struct Options {
    /// Whether each provider's [`Provider::tick`] runs once a second (its payouts on
    /// their schedule). Tests turn it off and settle with `POST /_sim/{provider}/settle`,
    /// so that no payout lands in the middle of what they measure.
    pub schedule: bool,
    /// Where each provider sends its webhooks (also `POST /_sim/webhooks`).
    pub webhooks: Vec<webhooks::Target>,
    /// Where its mailbox takes SMTP, if it serves one ([`mailbox`]).
    pub smtp: Option<tokio::net::TcpListener>,
    /// Where it serves the Salesforce org over TLS at the root of the host, for SDKs
    /// that speak only `https://{instance}/services/…` ([`tls`]), with the path its
    /// certificate is written to (PEM).
    pub salesforce_tls: Option<(tokio::net::TcpListener, std::path::PathBuf)>,
}

impl Default for Options {
    fn default() -> Options {
        Options { schedule: true, webhooks: Vec::new(), smtp: None, salesforce_tls: None }
    }
}

/// Serves the simulator on `listener` until `shutdown` resolves, on its schedule.
pub async fn serve(
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_with(listener, Options::default(), shutdown).await
}

/// Serves the simulator on `listener` with `options` until `shutdown` resolves.
pub async fn serve_with(
    listener: tokio::net::TcpListener,
    options: Options,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (router, providers, sim) = build(&options.webhooks);
    let smtp = options.smtp.map(|listener| tokio::spawn(mailbox::serve(listener, sim.mailbox.clone())));
    let salesforce_tls = match options.salesforce_tls {
        Some((listener, certificate_path)) => {
            let identity = tls::self_signed().map_err(std::io::Error::other)?;
            std::fs::write(&certificate_path, &identity.certificate_pem)?;
            let org = providers.iter().find(|provider| provider.name() == "salesforce");
            let router =
                org.map(|org| org.routes(sim.clone()).layer(axum::Extension(salesforce::AtRoot))).unwrap_or_default();
            Some(tokio::spawn(tls::serve(listener, identity.config, router)))
        }
        None => None,
    };
    let ticker = options.schedule.then(|| {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                for provider in &providers {
                    provider.tick();
                }
            }
        })
    });
    let served = axum::serve(listener, router).with_graceful_shutdown(shutdown).await;
    for task in ticker.into_iter().chain(smtp).chain(salesforce_tls) {
        task.abort();
    }
    served
}

#[derive(Clone)]
struct Control {
    sim: Sim,
    providers: Arc<Vec<Arc<dyn Provider>>>,
}

fn problem(status: StatusCode, detail: impl Into<String>) -> Response {
    (status, Json(serde_json::json!({ "error": detail.into() }))).into_response()
}

async fn arm_fault(State(control): State<Control>, body: bytes::Bytes) -> Response {
    let fault: faults::Fault = match serde_json::from_slice(&body) {
        Ok(fault) => fault,
        Err(error) => return problem(StatusCode::BAD_REQUEST, format!("not a fault: {error}")),
    };
    if !control.providers.iter().any(|provider| provider.name() == fault.provider) {
        return problem(StatusCode::BAD_REQUEST, format!("no provider named {:?}", fault.provider));
    }
    control.sim.faults.arm(fault.clone());
    (StatusCode::CREATED, Json(fault)).into_response()
}

async fn clear_faults(State(control): State<Control>) -> StatusCode {
    control.sim.faults.clear();
    StatusCode::NO_CONTENT
}

#[derive(Deserialize)]
struct CallsQuery {
    provider: Option<String>,
}

async fn list_calls(State(control): State<Control>, Query(query): Query<CallsQuery>) -> Response {
    Json(serde_json::json!({ "data": control.sim.calls.list(query.provider.as_deref()) })).into_response()
}

async fn object(State(control): State<Control>, Path((provider, id)): Path<(String, String)>) -> Response {
    let Some(provider) = control.providers.iter().find(|candidate| candidate.name() == provider) else {
        return problem(StatusCode::NOT_FOUND, format!("no provider named {provider:?}"));
    };
    match provider.object(&id) {
        Some(object) => Json(object).into_response(),
        None => problem(StatusCode::NOT_FOUND, format!("{} has no object {id:?}", provider.name())),
    }
}

async fn settle(State(control): State<Control>, Path(provider): Path<String>) -> Response {
    let Some(provider) = control.providers.iter().find(|candidate| candidate.name() == provider) else {
        return problem(StatusCode::NOT_FOUND, format!("no provider named {provider:?}"));
    };
    Json(serde_json::json!({ "settlements": provider.settle() })).into_response()
}

#[derive(Deserialize)]
struct MailboxQuery {
    to: Option<String>,
}

async fn list_mailbox(State(control): State<Control>, Query(query): Query<MailboxQuery>) -> Response {
    Json(serde_json::json!({ "data": control.sim.mailbox.list(query.to.as_deref()) })).into_response()
}

async fn set_webhooks(State(control): State<Control>, body: bytes::Bytes) -> Response {
    let target: webhooks::Target = match serde_json::from_slice(&body) {
        Ok(target) => target,
        Err(error) => return problem(StatusCode::BAD_REQUEST, format!("not a webhook target: {error}")),
    };
    if !control.providers.iter().any(|provider| provider.name() == target.provider) {
        return problem(StatusCode::BAD_REQUEST, format!("no provider named {:?}", target.provider));
    }
    control.sim.webhooks.set(target.clone());
    (StatusCode::CREATED, Json(serde_json::json!({ "provider": target.provider, "url": target.url }))).into_response()
}
