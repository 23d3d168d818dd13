//! The payouts service's registration: its schema and outbox, the beneficiary and
//! payout routes, the saga's worker, and its settings: where the rails are
//! ([`PayoutsConfig`], provided by the composition root; `till up` points them at the
//! simulator).

use std::sync::Arc;

use axum::http::Method;
use till_http::auth::{Access, Role, RoutePermission};
use till_http::service::{Context, Job, MountError, Mounted, Service};
use till_kit::Secret;
use till_outbound::Url;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

use crate::api::{self, Payouts};
use crate::rail::fps::Fps;
use crate::rail::razorpayx::RazorpayX;
use crate::rail::Rail;
use crate::saga::SagaConfig;

pub static SERVICE: Service =
    Service { name: "payouts", migrations: &crate::MIGRATIONS, outbox: Some(crate::store::OUTBOX), permissions, mount };

/// Where the rails are. Without one, its routes are still mounted and a rail call fails
/// to connect: a beneficiary's CoP check is `unavailable`, and its payouts wait queued.
#[derive(Debug, Clone, Default)]
pub struct PayoutsConfig {
    pub fps: Option<FpsSettings>,
    pub razorpayx: Option<RazorpayXSettings>,
    pub saga: SagaConfig,
}

/// RazorpayX Payouts, for India.
#[derive(Debug, Clone)]
pub struct RazorpayXSettings {
    /// `https://api.razorpay.com/`, or the simulator's `http://127.0.0.1:PORT/razorpayx/`.
    pub base_url: Url,
    /// `rzp_test_…` or `rzp_live_…`.
    pub key_id: String,
    pub key_secret: Secret<String>,
    /// The platform's RazorpayX business account number that payouts are paid from.
    pub account_number: String,
    /// The secret of RazorpayX's webhook for Till; without it every webhook is refused.
    pub webhook_secret: Option<Secret<String>>,
    pub attempt_timeout: std::time::Duration,
    pub breaker: till_outbound::breaker::BreakerConfig,
}

impl RazorpayXSettings {
    pub fn new(base_url: Url, key_id: String, key_secret: Secret<String>, account_number: String) -> RazorpayXSettings {
        RazorpayXSettings {
            base_url,
            key_id,
            key_secret,
            account_number,
            webhook_secret: None,
            attempt_timeout: std::time::Duration::from_secs(15),
            breaker: till_outbound::breaker::BreakerConfig::default(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct FpsSettings {
    /// The provider's API (`https://api.modulrfinance.com/`), or the simulator's
    /// `http://127.0.0.1:PORT/fps/`.
    pub base_url: Url,
    pub api_key: Secret<String>,
    /// The platform's account at the provider that payouts are paid from.
    pub source_account_id: String,
    /// The secret given to the provider for its `PAYOUT` webhooks; without it every one
    /// is refused and UK payouts are learned by polling alone.
    pub webhook_secret: Option<Secret<String>>,
    pub attempt_timeout: std::time::Duration,
    pub breaker: till_outbound::breaker::BreakerConfig,
}

impl FpsSettings {
    pub fn new(base_url: Url, api_key: Secret<String>, source_account_id: String) -> FpsSettings {
        FpsSettings {
            base_url,
            api_key,
            source_account_id,
            webhook_secret: None,
            attempt_timeout: std::time::Duration::from_secs(15),
            breaker: till_outbound::breaker::BreakerConfig::default(),
        }
    }
}

fn failed(error: impl std::fmt::Display) -> MountError {
    MountError::Failed { service: "payouts", why: error.to_string() }
}

fn fps_of(config: &PayoutsConfig) -> Result<Fps, MountError> {
    let settings = match config.fps.clone() {
        Some(settings) => settings,
        // Nothing listens on port 9 (discard): every call fails to connect.
        None => FpsSettings::new(
            Url::parse("http://127.0.0.1:9/fps/").map_err(failed)?,
            Secret::new(String::from("unconfigured")),
            String::from("unconfigured"),
        ),
    };
    let mut outbound = till_outbound::DependencyConfig::new(
        crate::rail::fps::NAMES,
        settings.base_url,
        till_outbound::Credentials::Bearer(settings.api_key),
    );
    outbound.attempt_timeout = settings.attempt_timeout;
    outbound.breaker = settings.breaker;
    Fps::with_config(outbound, settings.source_account_id).map_err(failed)
}

fn razorpayx_of(config: &PayoutsConfig) -> Result<RazorpayX, MountError> {
    let settings = match config.razorpayx.clone() {
        Some(settings) => settings,
        // Nothing listens on port 9 (discard): every call fails to connect.
        None => RazorpayXSettings::new(
            Url::parse("http://127.0.0.1:9/razorpayx/").map_err(failed)?,
            String::from("unconfigured"),
            Secret::new(String::from("unconfigured")),
            String::from("unconfigured"),
        ),
    };
    let mut outbound = till_outbound::DependencyConfig::new(
        crate::rail::razorpayx::NAMES,
        settings.base_url,
        till_outbound::Credentials::Basic { user: settings.key_id, password: settings.key_secret },
    );
    outbound.attempt_timeout = settings.attempt_timeout;
    outbound.breaker = settings.breaker;
    RazorpayX::with_config(outbound, settings.account_number).map_err(failed)
}

#[derive(OpenApi)]
#[openapi(
    components(schemas(api::BeneficiaryBody, api::PayoutBody, api::PolicyBody, crate::check::PayoutCheckBody, crate::rail_webhooks::RailWebhookReceipt)),
    tags((name = "payouts", description = "Beneficiaries (checked by modulus and Confirmation of Payee) and payouts to them out of the available balance, held in the ledger until the rail pays.")),
)]
struct Doc;

fn mount(context: &mut Context) -> Result<Mounted, MountError> {
    let config: PayoutsConfig = context.require("payouts")?;
    let fps: Arc<dyn Rail> = Arc::new(fps_of(&config)?);
    let razorpayx: Arc<dyn Rail> = Arc::new(razorpayx_of(&config)?);
    let payouts = Payouts { fps, razorpayx, wake: Arc::new(tokio::sync::Notify::new()) };
    let receiver = crate::rail_webhooks::Receiver {
        pool: context.pool.clone(),
        wake: payouts.wake.clone(),
        razorpayx_secret: config.razorpayx.as_ref().and_then(|settings| settings.webhook_secret.clone()),
        fps_secret: config.fps.as_ref().and_then(|settings| settings.webhook_secret.clone()),
    };
    let pool = context.pool.clone();
    let saga = config.saga.clone();
    let worker = payouts.clone();
    Ok(Mounted {
        tenant_routes: OpenApiRouter::with_openapi(Doc::openapi())
            .merge(api::routes(payouts))
            .merge(crate::check::routes()),
        provider_routes: crate::rail_webhooks::routes(receiver),
        jobs: vec![Job::new("payout saga", move |shutdown| crate::saga::run(pool, worker, saga, shutdown))],
        ..Mounted::default()
    })
}

/// Viewers read; finance pays out.
fn permissions() -> Vec<RoutePermission> {
    let row = |method, path, role| RoutePermission { method, path, access: Access::Role(role) };
    vec![
        row(Method::POST, api::BENEFICIARIES_PATH, Role::Finance),
        row(Method::GET, api::BENEFICIARIES_PATH, Role::Viewer),
        row(Method::GET, "/v1/beneficiaries/{id}", Role::Viewer),
        row(Method::DELETE, "/v1/beneficiaries/{id}", Role::Finance),
        row(Method::POST, api::PAYOUTS_PATH, Role::Finance),
        row(Method::GET, api::PAYOUTS_PATH, Role::Viewer),
        row(Method::GET, "/v1/payouts/{id}", Role::Viewer),
        row(Method::GET, "/v1/payouts/check", Role::Viewer),
        // Maker-checker: an admin or owner approves (and never the payout's creator).
        row(Method::POST, "/v1/payouts/{id}/approve", Role::Admin),
        row(Method::POST, "/v1/payouts/{id}/cancel", Role::Finance),
        row(Method::GET, "/v1/payout_policy", Role::Viewer),
        row(Method::PUT, "/v1/payout_policy", Role::Admin),
        RoutePermission {
            method: Method::POST,
            path: crate::rail_webhooks::RAZORPAYX_WEBHOOKS_PATH,
            access: Access::Provider,
        },
        RoutePermission {
            method: Method::POST,
            path: crate::rail_webhooks::FPS_WEBHOOKS_PATH,
            access: Access::Provider,
        },
    ]
}
