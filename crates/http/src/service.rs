//! The one value a service hands the composition root.
//!
//! A service crate exposes a `pub static SERVICE: Service`: its name, its schema's
//! migrations, its outbox, its permission rows, and a `mount` function that builds what it contributes to a
//! running server ([`Mounted`]: routes, phased routes and their resumers, background
//! jobs). The composition root (`till_server`) lists these statics
//! once, in migration order, and loops over them: it runs their migrations, mounts them
//! behind the same middleware, merges their permission rows and OpenAPI documents, and
//! runs their jobs until shutdown. Adding a service is one line in that list.
//!
//! What a service needs from the server (its pool, the keyring, settings the CLI parsed,
//! another service's in-process API such as the ledger's) it finds in the [`Context`],
//! which services mounted earlier in the list may add to.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use sqlx::PgPool;
use tokio::sync::watch;
use utoipa_axum::router::OpenApiRouter;

use crate::auth::RoutePermission;
use crate::recovery::Resumer;

/// A service, as the composition root sees it.
pub struct Service {
    pub name: &'static str,
    /// Its schema and forward-only migrations; schemas migrate in the order the services
    /// are listed (a service that registers an outbox comes after `events`).
    pub migrations: &'static till_db::SchemaMigrations,
    /// The outbox its migrations register (`schema.outbox`), if it publishes events. The
    /// relay reads the registered outboxes from the database; a test checks that every one
    /// of them belongs to a listed service, and that every listed one is registered.
    pub outbox: Option<&'static str>,
    /// A row for every route it mounts, saying who may call it; the server refuses a
    /// tenant route without one, and a test checks the rows against the OpenAPI document.
    pub permissions: fn() -> Vec<RoutePermission>,
    /// Builds its part of a running server. Called once per server, in list order.
    pub mount: fn(&mut Context) -> Result<Mounted, MountError>,
}

/// What the server offers the services it mounts.
pub struct Context {
    /// Sessions run as `till_app` (row-level security applies).
    pub pool: PgPool,
    /// Seals secrets at rest.
    pub keyring: Arc<till_kit::Keyring>,
    /// Typed values by type: settings the CLI parsed for one service (its own config
    /// type), and handles a service mounted earlier offers the ones after it.
    values: axum::http::Extensions,
}

impl Context {
    pub fn new(pool: PgPool, keyring: Arc<till_kit::Keyring>) -> Context {
        Context { pool, keyring, values: axum::http::Extensions::new() }
    }

    /// Offers `value` to the services mounted from now on (one value per type).
    pub fn provide<T: Clone + Send + Sync + 'static>(&mut self, value: T) {
        self.values.insert(value);
    }

    /// The value of type `T`, or a [`MountError`] that names what is missing: a service
    /// never runs on a silently defaulted setting.
    pub fn require<T: Clone + Send + Sync + 'static>(&self, service: &'static str) -> Result<T, MountError> {
        self.values.get::<T>().cloned().ok_or(MountError::Missing { service, what: std::any::type_name::<T>() })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error("mounting {service}: nothing provides {what}")]
    Missing { service: &'static str, what: &'static str },
    #[error("mounting {service}: {why}")]
    Failed { service: &'static str, why: String },
}

/// What a service contributes to one running server.
#[derive(Default)]
pub struct Mounted {
    /// Tenant routes: authenticated, rate limited, authorized by the permission table,
    /// run in a unit of work. Their OpenAPI document may carry the service's tag and
    /// the component schemas it documents beyond its bodies.
    pub tenant_routes: OpenApiRouter,
    /// Platform routes (the admin token), in a unit of work.
    pub platform_routes: OpenApiRouter,
    /// Routes an outside party calls (a gateway's webhooks, under `/v1/providers/`): no
    /// Till credentials and no Idempotency-Key; the handler authenticates the party by
    /// its own signature, deduplicates by the party's own ids, and runs its own
    /// transactions. Their permission rows are `Access::Provider`.
    pub provider_routes: OpenApiRouter,
    /// Write routes whose handler runs the idempotency protocol itself (the ledger's
    /// engine records the key in the batch that applies the write).
    pub delegated_paths: Vec<&'static str>,
    /// Phased routes (calls to an outside party), with what resumes each.
    pub resumers: Vec<Resumer>,
    /// Background work, run until shutdown.
    pub jobs: Vec<Job>,
}

type JobFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A background job: started once, given the shutdown signal, expected to finish its
/// current step and return when the signal flips. The server awaits every job before it
/// closes the pool, so a job may also release what its service holds (the ledger's
/// writers) on its way out.
pub struct Job {
    pub name: &'static str,
    start: Box<dyn FnOnce(watch::Receiver<bool>) -> JobFuture + Send>,
}

impl Job {
    pub fn new<F, Fut>(name: &'static str, start: F) -> Job
    where
        F: FnOnce(watch::Receiver<bool>) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        Job { name, start: Box::new(move |shutdown| Box::pin(start(shutdown))) }
    }

    /// Starts the job on the current runtime.
    pub fn spawn(self, shutdown: watch::Receiver<bool>) -> tokio::task::JoinHandle<()> {
        tokio::spawn((self.start)(shutdown))
    }
}

impl std::fmt::Debug for Job {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("Job").field("name", &self.name).finish_non_exhaustive()
    }
}
