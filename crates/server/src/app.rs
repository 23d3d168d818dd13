//! The router and its middleware stack.
//!
//! Outermost first, every request passes:
//! 1. `request_id`: assigns the Request-Id, opens the request span, stamps the response;
//! 2. `headers`: security headers (nosniff; no-store and a content policy on the API, a
//!    stricter one on the docs page);
//! 3. `catch_panic`: a panic becomes an opaque 500 problem (the request's transaction is
//!    dropped with the handler, so it rolls back);
//! 4. `body`: a `Content-Length` over `body_bytes_max` is a 413 at once; the body is
//!    bounded in size and must arrive within the body timeout (408), read by whoever
//!    needs it after authentication;
//! 5. routing; unknown routes are 404 problems, known routes with another method 405.
//!
//! Tenant routes then pass, as route layers: authentication (API key or JWT → Principal)
//! → rate limit (per key) → authorization (the permission table) → unit of work (the
//! transaction; the idempotency protocol for POST) → handler. Platform routes pass
//! platform authentication → rate limit (the platform's own bucket) → unit of work →
//! handler.

use axum::extract::{DefaultBodyLimit, State};
use axum::middleware::from_fn_with_state;
use axum::Router;
use sqlx::PgPool;
use till_access::authn::Authenticator;
use till_access::jwt::JwtVerifier;
use till_http::auth::RoutePermission;
use till_http::rate_limit::RateLimiter;
use till_http::service::{Context, MountError, Mounted};
use till_http::unit_of_work::UnitOfWorkState;
use tower_http::catch_panic::CatchPanicLayer;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use utoipa_swagger_ui::SwaggerUi;

use crate::config::Config;
use crate::openapi::ApiDoc;
use crate::permissions;

/// What the server is built from.
pub struct AppParts {
    pub config: Config,
    /// Sessions run as `till_app` (row-level security applies).
    pub pool: PgPool,
}

/// Routes added by an embedder (the test harness adds routes that exercise failure
/// paths), mounted like any tenant route and subject to the same permission table.
#[derive(Default)]
pub struct Extension {
    pub tenant_routes: OpenApiRouter,
    pub permissions: Vec<RoutePermission>,
    /// Phased routes among them (calls to an outside party), with what resumes each.
    pub resumers: Vec<till_http::recovery::Resumer>,
}

/// The app, built: its router and what its background jobs run with. `till up` and the
/// test harness both start it with [`Built::run`], so there is one start-up sequence.
pub struct Built {
    pub router: Router,
    /// The OpenAPI document as served (`/v1/openapi.json`), completed by `contract`.
    pub openapi: serde_json::Value,
    jobs: crate::jobs::Jobs,
    limits: crate::serve::ConnectionLimits,
}

impl Built {
    /// Serves `listener` with the background jobs until `shutdown` resolves, then stops in
    /// order: no new connections, in-flight requests finish, the jobs finish their current
    /// step and release what they hold (the ledger's writers close). The caller closes the
    /// pool after.
    pub async fn run(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let (stop_jobs, jobs_stopped) = tokio::sync::watch::channel(false);
        let jobs = crate::jobs::spawn(self.jobs, jobs_stopped);
        let served = crate::serve(listener, self.router, self.limits, shutdown).await;
        tracing::info!("the API has stopped accepting and drained in-flight requests");
        let _ = stop_jobs.send(true);
        jobs.await;
        served
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("invalid configuration: {0}")]
    Config(#[from] crate::config::ConfigError),
    #[error("invalid JWT configuration: {0}")]
    Jwt(#[from] till_access::jwt::JwtConfigError),
    #[error(transparent)]
    Mount(#[from] MountError),
    #[error("completing the OpenAPI document: {0}")]
    OpenApi(serde_json::Error),
    #[error("two services document different schemas under one name, {0}: rename one")]
    SchemaNameTaken(String),
}

pub fn build(parts: AppParts, extension: Extension) -> Result<Built, BuildError> {
    let AppParts { config, pool } = parts;
    config.validate()?;
    let jwt = JwtVerifier::new(
        &config.jwt_keys,
        config.jwt_issuer.as_deref(),
        config.jwt_audience.as_deref(),
        config.jwt_leeway_seconds,
        config.jwt_lifetime_seconds_max,
    )?;
    let key_cache = till_access::authn::KeyCache::default();
    let authenticator = Authenticator::new(pool.clone(), jwt, &config.admin_token, key_cache.clone())
        .with_failure_threshold(config.auth_failures_per_minute);
    let rate_limiter = RateLimiter::new(config.rate_limit);

    // What the services find in their context: the settings the CLI parsed for them, and
    // what authentication shares with access's routes.
    let mut context = Context::new(pool.clone(), config.keyring.clone());
    context.provide(config.webhooks.clone());
    context.provide(config.bus.clone());
    context.provide(config.payments.clone());
    context.provide(config.payouts.clone());
    context.provide(config.commerce.clone());
    context.provide(config.notify.clone());
    context.provide(config.crm.clone());
    context.provide(key_cache);
    context.provide(authenticator.clone());
    // Services call each other's API through it (commerce's checkout takes payments);
    // it is connected to the router once the router is built, before anything runs.
    let internal = till_http::internal::Internal::default();
    context.provide(internal.clone());
    let mut mounted = Vec::with_capacity(crate::SERVICES.len() + 1);
    for service in crate::SERVICES {
        mounted.push((service.mount)(&mut context)?);
    }
    let Extension { tenant_routes: extra_routes, permissions: extra_permissions, resumers: extra_resumers } = extension;
    mounted.push(Mounted { tenant_routes: extra_routes, resumers: extra_resumers, ..Mounted::default() });

    let mut tenant_routes = OpenApiRouter::with_openapi(ApiDoc::openapi());
    let mut platform_routes = OpenApiRouter::new();
    let mut provider_routes = OpenApiRouter::new();
    let (mut delegated_paths, mut resumers, mut jobs) = (Vec::new(), Vec::new(), Vec::new());
    // Merging documents keeps one schema per name, silently: two services' different
    // `BalanceBody`s once left one route described by the other's.
    let mut schemas: std::collections::HashMap<String, serde_json::Value> = std::collections::HashMap::new();
    for service in &mounted {
        for router in [&service.tenant_routes, &service.platform_routes, &service.provider_routes] {
            let Some(components) = &router.get_openapi().components else { continue };
            for (name, schema) in &components.schemas {
                let schema = serde_json::to_value(schema).map_err(BuildError::OpenApi)?;
                match schemas.get(name) {
                    Some(seen) if *seen != schema => return Err(BuildError::SchemaNameTaken(name.clone())),
                    Some(_) => {}
                    None => {
                        schemas.insert(name.clone(), schema);
                    }
                }
            }
        }
    }
    for service in mounted {
        tenant_routes = tenant_routes.merge(service.tenant_routes);
        platform_routes = platform_routes.merge(service.platform_routes);
        provider_routes = provider_routes.merge(service.provider_routes);
        delegated_paths.extend(service.delegated_paths);
        resumers.extend(service.resumers);
        jobs.extend(service.jobs);
    }
    let permission_table = permissions::permission_table(extra_permissions);
    let unit_of_work = UnitOfWorkState {
        pool: pool.clone(),
        body_bytes_max: config.body_bytes_max,
        delegated_paths: std::sync::Arc::new(delegated_paths),
        keyring: config.keyring.clone(),
        phased_paths: std::sync::Arc::new(resumers.iter().map(|resumer| resumer.route).collect()),
        recovery: config.recovery,
    };

    let (tenant, tenant_api) = tenant_routes.split_for_parts();
    let tenant = tenant
        .route_layer(from_fn_with_state(unit_of_work.clone(), till_http::unit_of_work::middleware))
        .route_layer(from_fn_with_state(permission_table, till_http::auth::authorize))
        .route_layer(from_fn_with_state(rate_limiter.clone(), till_http::rate_limit::middleware))
        .route_layer(from_fn_with_state(authenticator.clone(), till_access::authn::tenant));

    let (platform, platform_api) = platform_routes.split_for_parts();
    let platform = platform
        .route_layer(from_fn_with_state(unit_of_work.clone(), till_http::unit_of_work::middleware))
        .route_layer(from_fn_with_state(rate_limiter.clone(), till_http::rate_limit::platform_middleware))
        .route_layer(from_fn_with_state(authenticator.clone(), till_access::authn::platform));

    // Outside parties authenticate by their own signatures, checked by each handler; a
    // rate limit of their own bounds what forged requests can cost.
    let (providers, providers_api) = provider_routes.split_for_parts();
    let providers =
        providers.route_layer(from_fn_with_state(rate_limiter.clone(), till_http::rate_limit::provider_middleware));

    let (operations, operations_api) = OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .with_state(pool.clone())
        .split_for_parts();

    let mut openapi = tenant_api;
    openapi.merge(platform_api);
    openapi.merge(providers_api);
    openapi.merge(operations_api);
    add_openapi_document_path(&mut openapi);
    let openapi = crate::contract::completed(&openapi).map_err(BuildError::OpenApi)?;

    let docs = SwaggerUi::new("/docs")
        .external_url_unchecked("/v1/openapi.json", openapi.clone())
        .config(utoipa_swagger_ui::Config::default().validator_url("none").try_it_out_enabled(true));

    let router = Router::new()
        .merge(tenant)
        .merge(platform)
        .merge(providers)
        .merge(operations)
        .merge(docs)
        .fallback(till_http::fallback::route_not_found)
        .method_not_allowed_fallback(till_http::fallback::method_not_allowed)
        .layer(DefaultBodyLimit::max(config.body_bytes_max))
        .layer(from_fn_with_state(
            till_http::body::BodyLimits { bytes_max: config.body_bytes_max, read_timeout: config.http.body_timeout },
            till_http::body::middleware,
        ))
        .layer(CatchPanicLayer::custom(till_http::fallback::panic_response))
        .layer(axum::middleware::from_fn(till_http::headers::middleware))
        .layer(axum::middleware::from_fn(till_http::request_id::middleware));
    internal.connect(router.clone());
    let jobs = crate::jobs::Jobs {
        pool: pool.clone(),
        retention_hours: config.idempotency_retention_hours,
        limiter: rate_limiter,
        recovery: crate::jobs::Recovery { unit_of_work, resumers },
        services: jobs,
    };
    Ok(Built { router, openapi, jobs, limits: config.http })
}

/// The document describes its own route too, so the permission table and the document
/// list the same operations.
fn add_openapi_document_path(openapi: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::path::{HttpMethod, OperationBuilder, PathItem};
    use utoipa::openapi::{ContentBuilder, ResponseBuilder};
    let operation = OperationBuilder::new()
        .tag("operations")
        .summary(Some("This OpenAPI 3.1 document."))
        .response(
            "200",
            ResponseBuilder::new()
                .description("The document.")
                .content("application/json", ContentBuilder::new().build())
                .build(),
        )
        .build();
    openapi.paths.paths.insert("/v1/openapi.json".to_string(), PathItem::new(HttpMethod::Get, operation));
}

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, description = "Alive.", body = String)))]
async fn healthz() -> &'static str {
    "ok"
}

/// Readiness: the database answers.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses(
        (status = 200, description = "Ready.", body = String),
        (status = 503, body = till_http::Problem, content_type = "application/problem+json"),
    ))]
async fn readyz(State(pool): State<PgPool>) -> Result<&'static str, till_http::ApiError> {
    sqlx::query("SELECT 1").execute(&pool).await.map_err(|error| till_http::ApiError::unavailable(&error))?;
    Ok("ready")
}
