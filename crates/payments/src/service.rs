//! The payments service's registration: its schema and outbox, the payment intent routes
//! (phased, with their resumers), and its settings: where Stripe and Razorpay are
//! ([`PaymentsConfig`], provided by the composition root; `till up` points them at the
//! simulator).

use std::sync::Arc;

use axum::http::Method;
use axum::response::IntoResponse;
use till_http::auth::{Access, Role, RoutePermission};
use till_http::recovery::Resumer;
use till_http::service::{Context, Job, MountError, Mounted, Service};
use till_kit::Secret;
use till_outbound::Url;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

use crate::api::{self, Payments};
use crate::gateway::razorpay::Razorpay;
use crate::gateway::stripe::Stripe;
use crate::gateway::{Gateway, Gateways};

pub static SERVICE: Service = Service {
    name: "payments",
    migrations: &crate::MIGRATIONS,
    outbox: Some(crate::store::OUTBOX),
    permissions,
    mount,
};

/// Where the gateways are. Without one, the routes to it are still mounted (the
/// document and the permission table are the same everywhere) and answer 503.
#[derive(Debug, Clone)]
pub struct PaymentsConfig {
    pub stripe: Option<StripeSettings>,
    pub razorpay: Option<RazorpaySettings>,
    /// How often the gateway's payouts are read and reconciled.
    pub settlement_interval: std::time::Duration,
    /// How long a payout whose report has a charge or refund line Till cannot place
    /// waits before that line becomes an `unknown_line` exception: a step that was
    /// in flight when the gateway paid out (a capture whose reply was lost, a crash)
    /// records its charge id within the recovery job's lease and grace.
    pub unowned_line_grace: std::time::Duration,
}

impl Default for PaymentsConfig {
    fn default() -> PaymentsConfig {
        PaymentsConfig {
            stripe: None,
            razorpay: None,
            settlement_interval: std::time::Duration::from_secs(5),
            unowned_line_grace: std::time::Duration::from_secs(15 * 60),
        }
    }
}

#[derive(Debug, Clone)]
pub struct StripeSettings {
    /// `https://api.stripe.com/`, or the simulator's `http://127.0.0.1:PORT/stripe/`.
    pub base_url: Url,
    pub secret_key: Secret<String>,
    /// How long one attempt of a call may take before it is given up (and retried with
    /// the same idempotency key, when attempts remain).
    pub attempt_timeout: std::time::Duration,
    /// The signing secret of Stripe's webhook endpoint for Till (`whsec_…`); without it
    /// every webhook is refused, as none can be verified.
    pub webhook_secret: Option<Secret<String>>,
    /// When Stripe counts as down: the kit's defaults (50 % of at least 20 calls in 30 s
    /// open it for 30 s); tests shorten the open time.
    pub breaker: till_outbound::breaker::BreakerConfig,
}

impl StripeSettings {
    pub fn new(base_url: Url, secret_key: Secret<String>) -> StripeSettings {
        StripeSettings {
            base_url,
            secret_key,
            attempt_timeout: std::time::Duration::from_secs(15),
            webhook_secret: None,
            breaker: till_outbound::breaker::BreakerConfig::default(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct RazorpaySettings {
    /// `https://api.razorpay.com/`, or the simulator's `http://127.0.0.1:PORT/razorpay/`.
    pub base_url: Url,
    /// `rzp_test_…` or `rzp_live_…`.
    pub key_id: String,
    pub key_secret: Secret<String>,
    /// How long one attempt of a call may take.
    pub attempt_timeout: std::time::Duration,
    /// The secret of Razorpay's webhook for Till (set in Razorpay's dashboard; not the
    /// API key's secret); without it every webhook is refused.
    pub webhook_secret: Option<Secret<String>>,
    pub breaker: till_outbound::breaker::BreakerConfig,
}

impl RazorpaySettings {
    pub fn new(base_url: Url, key_id: String, key_secret: Secret<String>) -> RazorpaySettings {
        RazorpaySettings {
            base_url,
            key_id,
            key_secret,
            attempt_timeout: std::time::Duration::from_secs(15),
            webhook_secret: None,
            breaker: till_outbound::breaker::BreakerConfig::default(),
        }
    }
}

fn failed(error: impl std::fmt::Display) -> MountError {
    MountError::Failed { service: "payments", why: error.to_string() }
}

/// Nothing listens on port 9 (discard): every call to a gateway that is not configured
/// fails to connect, which the routes answer with a 503 and nothing done.
fn unconfigured(prefix: &str) -> Result<Url, MountError> {
    Url::parse(&format!("http://127.0.0.1:9/{prefix}/")).map_err(failed)
}

fn stripe_of(config: &PaymentsConfig) -> Result<Stripe, MountError> {
    let settings = match config.stripe.clone() {
        Some(settings) => settings,
        None => StripeSettings::new(unconfigured("stripe")?, Secret::new(String::from("sk_test_unconfigured"))),
    };
    let mut outbound = till_outbound::DependencyConfig::new(
        crate::gateway::stripe::NAMES,
        settings.base_url,
        till_outbound::Credentials::Bearer(settings.secret_key),
    );
    outbound.attempt_timeout = settings.attempt_timeout;
    outbound.breaker = settings.breaker;
    Stripe::with_config(outbound).map_err(failed)
}

fn razorpay_of(config: &PaymentsConfig) -> Result<Razorpay, MountError> {
    let settings = match config.razorpay.clone() {
        Some(settings) => settings,
        None => RazorpaySettings::new(
            unconfigured("razorpay")?,
            String::from("rzp_test_unconfigured"),
            Secret::new(String::from("unconfigured")),
        ),
    };
    let mut outbound = till_outbound::DependencyConfig::new(
        crate::gateway::razorpay::NAMES,
        settings.base_url,
        till_outbound::Credentials::Basic { user: settings.key_id, password: settings.key_secret },
    );
    outbound.attempt_timeout = settings.attempt_timeout;
    outbound.breaker = settings.breaker;
    Razorpay::with_config(outbound).map_err(failed)
}

#[derive(OpenApi)]
#[openapi(
    components(schemas(
        api::PaymentIntentBody,
        crate::refunds::RefundBody,
        crate::settlement::SettlementBody,
        crate::settlement::ReconciliationExceptionBody,
        crate::provider_webhooks::WebhookReceipt
    )),
    tags((name = "payments", description = "Payment intents: take a card (Stripe) or UPI (Razorpay) payment through a gateway, authorise and capture it. Every capture is in the ledger, in the same transaction as the intent's change.")),
)]
struct Doc;

fn mount(context: &mut Context) -> Result<Mounted, MountError> {
    let config: PaymentsConfig = context.require("payments")?;
    let stripe: Arc<dyn Gateway> = Arc::new(stripe_of(&config)?);
    let razorpay: Arc<dyn Gateway> = Arc::new(razorpay_of(&config)?);
    let payments = Payments { gateways: Arc::new(Gateways { stripe: stripe.clone(), razorpay: razorpay.clone() }) };
    // Only the configured gateways' payouts are read.
    let mut settling: Vec<Arc<dyn Gateway>> = Vec::new();
    if config.stripe.is_some() {
        settling.push(stripe);
    }
    if config.razorpay.is_some() {
        settling.push(razorpay);
    }
    let (pool, interval, grace) = (context.pool.clone(), config.settlement_interval, config.unowned_line_grace);
    let receiver = crate::provider_webhooks::Receiver {
        pool: context.pool.clone(),
        stripe_secret: config.stripe.as_ref().and_then(|stripe| stripe.webhook_secret.clone()),
        razorpay_secret: config.razorpay.as_ref().and_then(|razorpay| razorpay.webhook_secret.clone()),
    };
    let mut jobs = Vec::new();
    if !settling.is_empty() {
        jobs.push(Job::new("settlement reconciler", move |shutdown| {
            crate::settlement::run(pool, settling, interval, grace, shutdown)
        }));
    }
    Ok(Mounted {
        tenant_routes: OpenApiRouter::with_openapi(Doc::openapi())
            .merge(api::routes(payments.clone()))
            .merge(crate::refunds::routes(payments.clone()))
            .merge(crate::balance::routes())
            .merge(crate::check::routes()),
        provider_routes: crate::provider_webhooks::routes(receiver),
        resumers: resumers(&payments),
        jobs,
        ..Mounted::default()
    })
}

fn resumers(payments: &Payments) -> Vec<Resumer> {
    vec![
        resumer(api::CREATE_PATH, payments, api::run_create),
        resumer(api::CONFIRM_PATH, payments, api::run_confirm),
        resumer(api::CAPTURE_PATH, payments, api::run_capture),
        resumer(api::CANCEL_PATH, payments, api::run_cancel),
        resumer(crate::refunds::REFUNDS_PATH, payments, crate::refunds::run_refund),
    ]
}

/// What resumes `route`: the same function its handler runs.
fn resumer<F, Fut>(route: &'static str, payments: &Payments, run: F) -> Resumer
where
    F: Fn(Payments, till_http::recovery::Phased) -> Fut + Copy + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<axum::response::Response, till_http::ApiError>> + Send + 'static,
{
    let payments = payments.clone();
    Resumer {
        route,
        resume: Arc::new(move |phased| {
            let payments = payments.clone();
            Box::pin(async move { run(payments, phased).await.unwrap_or_else(IntoResponse::into_response) })
        }),
    }
}

/// Viewers read; finance takes payments.
fn permissions() -> Vec<RoutePermission> {
    let row = |method, path, role| RoutePermission { method, path, access: Access::Role(role) };
    vec![
        row(Method::POST, api::CREATE_PATH, Role::Finance),
        row(Method::GET, "/v1/payment_intents/{id}", Role::Viewer),
        row(Method::POST, api::CONFIRM_PATH, Role::Finance),
        row(Method::POST, api::CAPTURE_PATH, Role::Finance),
        row(Method::POST, api::CANCEL_PATH, Role::Finance),
        row(Method::POST, crate::refunds::REFUNDS_PATH, Role::Finance),
        row(Method::GET, "/v1/refunds/{id}", Role::Viewer),
        row(Method::GET, api::CREATE_PATH, Role::Viewer),
        row(Method::GET, crate::refunds::REFUNDS_PATH, Role::Viewer),
        row(Method::GET, "/v1/balance", Role::Viewer),
        row(Method::GET, "/v1/settlements", Role::Viewer),
        row(Method::GET, "/v1/reconciliation/exceptions", Role::Viewer),
        row(Method::GET, "/v1/payments/check", Role::Viewer),
        RoutePermission {
            method: Method::POST,
            path: crate::provider_webhooks::STRIPE_WEBHOOKS_PATH,
            access: Access::Provider,
        },
        RoutePermission {
            method: Method::POST,
            path: crate::provider_webhooks::RAZORPAY_WEBHOOKS_PATH,
            access: Access::Provider,
        },
    ]
}
