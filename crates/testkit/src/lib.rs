//! The test harness (zero2prod's `spawn_app`, crates.io's template databases).
//!
//! - One PostgreSQL cluster per test binary run, provisioned by `till_db::embedded` (the
//!   code `till up` uses) in a temporary directory, and stopped and deleted by its
//!   watchdog when the test binary exits.
//! - The schemas are migrated once into a template database; every test gets its own
//!   database cloned from it (`CREATE DATABASE … TEMPLATE`), which is much faster than
//!   migrating per test and keeps tests independent.
//! - `spawn_app` runs the real server (the same router `till up` builds) on 127.0.0.1:0.

pub mod broker;
pub mod smtp;

use std::sync::OnceLock;
use std::time::Duration;

use anyhow::Context;
use reqwest::{Method, RequestBuilder, Response};
use serde_json::Value;
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgPool};
use till_db::embedded::{Cluster, ClusterOptions};
use till_kit::Secret;
use till_server::{AppParts, Config, Extension};

const TEMPLATE_DATABASE: &str = "till_template";

struct SharedCluster {
    port: u16,
    password: String,
}

static CLUSTER: OnceLock<Result<SharedCluster, String>> = OnceLock::new();

/// Starts the run's cluster on first use; it stops when the process exits.
fn cluster() -> anyhow::Result<&'static SharedCluster> {
    let shared = CLUSTER.get_or_init(|| hold_on_own_thread("till-test-postgres", start_cluster));
    shared.as_ref().map_err(|error| anyhow::anyhow!("test cluster: {error}"))
}

/// Starts something the whole test binary shares (a cluster, a broker node) on a thread
/// of its own, with its own runtime, so that it outlives every test's runtime. The thread
/// keeps what `start` returns first (and with it the watchdog's lifeline) until the
/// process exits; the second part is handed back.
pub(crate) fn hold_on_own_thread<Held, Shared, Start, Started>(name: &str, start: Start) -> Result<Shared, String>
where
    Held: 'static,
    Shared: Send + 'static,
    Start: FnOnce() -> Started + Send + 'static,
    Started: std::future::Future<Output = anyhow::Result<(Held, Shared)>>,
{
    let (sender, receiver) = std::sync::mpsc::channel();
    let spawned = std::thread::Builder::new().name(name.into()).spawn(move || {
        let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(runtime) => runtime,
            Err(error) => {
                let _ = sender.send(Err(format!("building the runtime: {error}")));
                return;
            }
        };
        runtime.block_on(async move {
            match start().await {
                Ok((held, shared)) => {
                    let _ = sender.send(Ok(shared));
                    let _held: Held = held;
                    std::future::pending::<()>().await;
                }
                Err(error) => {
                    let _ = sender.send(Err(format!("{error:#}")));
                }
            }
        });
    });
    match spawned {
        Ok(_) => receiver.recv().unwrap_or_else(|_| Err(format!("the thread {name} died"))),
        Err(error) => Err(format!("spawning the thread {name}: {error}")),
    }
}

async fn start_cluster() -> anyhow::Result<(Cluster, SharedCluster)> {
    till_telemetry::init_with_default("warn");
    let data_dir = std::env::temp_dir().join(format!("till-test-{}", uuid::Uuid::now_v7().simple()));
    let options = ClusterOptions {
        data_dir,
        port: None,
        preferred_port: None,
        durable: false,
        ephemeral: true,
        connections_max: 400,
        settings: Vec::new(),
    };
    let cluster = Cluster::start(&options).await.context("starting the test cluster")?;
    cluster.ensure_database(TEMPLATE_DATABASE).await?;
    let pool = till_db::connect_owner_pool(cluster.connect_options(TEMPLATE_DATABASE), 1).await?;
    till_db::migrate(&pool, &till_server::migrations()).await?;
    pool.close().await;
    let shared = SharedCluster { port: cluster.port(), password: options_password(&cluster) };
    Ok((cluster, shared))
}

fn options_password(cluster: &Cluster) -> String {
    let path = cluster.data_dir().join("postgres.password");
    std::fs::read_to_string(path).map(|text| text.trim().to_string()).unwrap_or_default()
}

fn connect_options(shared: &SharedCluster, database: &str) -> PgConnectOptions {
    PgConnectOptions::new()
        .host("127.0.0.1")
        .port(shared.port)
        .username(till_db::embedded::SUPERUSER)
        .password(&shared.password)
        .database(database)
}

/// A fresh database cloned from the migrated template.
pub async fn fresh_database() -> anyhow::Result<TestDatabase> {
    let shared = cluster()?;
    let name = format!("test_{}", uuid::Uuid::now_v7().simple());
    let mut connection = sqlx::PgConnection::connect_with(&connect_options(shared, "postgres")).await?;
    sqlx::query(&format!("CREATE DATABASE \"{name}\" TEMPLATE {TEMPLATE_DATABASE}")).execute(&mut connection).await?;
    connection.close().await?;
    let options = connect_options(shared, &name);
    let url =
        format!("postgres://{}:{}@127.0.0.1:{}/{name}", till_db::embedded::SUPERUSER, shared.password, shared.port);
    Ok(TestDatabase { options, name, url })
}

/// A fresh database with no migrations applied: for tests of a migration itself, which
/// apply the migrations as they stood before it, then the rest.
pub async fn empty_database() -> anyhow::Result<TestDatabase> {
    let shared = cluster()?;
    let name = format!("test_{}", uuid::Uuid::now_v7().simple());
    let mut connection = sqlx::PgConnection::connect_with(&connect_options(shared, "postgres")).await?;
    sqlx::query(&format!("CREATE DATABASE \"{name}\"")).execute(&mut connection).await?;
    connection.close().await?;
    let options = connect_options(shared, &name);
    let url =
        format!("postgres://{}:{}@127.0.0.1:{}/{name}", till_db::embedded::SUPERUSER, shared.password, shared.port);
    Ok(TestDatabase { options, name, url })
}

#[derive(Clone)]
pub struct TestDatabase {
    /// Superuser options for this database (owner of the tables).
    pub options: PgConnectOptions,
    pub name: String,
    /// The same as a URL, for `DATABASE_URL` (the password is a throwaway test one).
    pub url: String,
}

impl TestDatabase {
    /// A pool whose sessions run as `till_app`, like the server's.
    pub async fn app_pool(&self, connections_max: u32) -> anyhow::Result<PgPool> {
        Ok(till_db::connect_app_pool(self.options.clone(), connections_max).await?)
    }

    /// A pool with the owner's rights (bypasses row-level security): for assertions.
    pub async fn owner_pool(&self) -> anyhow::Result<PgPool> {
        Ok(till_db::connect_owner_pool(self.options.clone(), 4).await?)
    }
}

pub struct TestApp {
    pub address: String,
    pub client: reqwest::Client,
    pub admin_token: String,
    pub database: TestDatabase,
    /// The server's pool (as `till_app`).
    pub pool: PgPool,
    /// The owner's pool, for assertions that must see every business.
    pub owner_pool: PgPool,
    pub openapi: utoipa_json::Document,
    /// The keys the server seals secrets with.
    pub keyring: std::sync::Arc<till_kit::Keyring>,
    /// The simulator this app's gateways point at (`http://127.0.0.1:PORT`), with its
    /// control API (`/_sim/faults`, `/_sim/calls`, `/_sim/{provider}/objects/{id}`).
    pub sim: String,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

/// The OpenAPI document as JSON, so tests need no utoipa types.
pub mod utoipa_json {
    pub type Document = serde_json::Value;
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }
}

/// A business created through the platform API, with its owner key.
#[derive(Debug, Clone)]
pub struct TestBusiness {
    pub id: String,
    pub owner_key: String,
    pub body: Value,
}

pub fn test_config() -> Config {
    let keyring = till_kit::Keyring::generate_text("test")
        .and_then(|text| till_kit::Keyring::parse(&text).ok())
        .unwrap_or_else(|| panic!("a test keyring"));
    let mut config = Config::new(Secret::new(format!("test-admin-token-{}", uuid::Uuid::now_v7().simple())), keyring);
    // Generous by default so ordinary tests never meet the limiter; rate-limit tests lower it.
    config.rate_limit.requests_per_second = std::num::NonZeroU32::new(100_000).unwrap_or(std::num::NonZeroU32::MIN);
    config.rate_limit.burst = std::num::NonZeroU32::new(100_000).unwrap_or(std::num::NonZeroU32::MIN);
    // Webhook receivers in tests listen on loopback, and retries are quick.
    config.webhooks.allow_private_targets = true;
    config.webhooks.retry_base = std::time::Duration::from_millis(50);
    config.webhooks.retry_cap = std::time::Duration::from_millis(200);
    config.webhooks.poll_interval = std::time::Duration::from_millis(50);
    config.webhooks.request_timeout = std::time::Duration::from_secs(2);
    config.webhooks.connect_timeout = std::time::Duration::from_secs(2);
    config.webhooks.breaker_pause_base = std::time::Duration::from_millis(500);
    config.webhooks.breaker_pause_cap = std::time::Duration::from_secs(5);
    // Payouts are reconciled soon after a test settles them at the simulator.
    config.payments.settlement_interval = std::time::Duration::from_millis(200);
    // The simulator's rail decides within a fraction of a second: the saga asks soon,
    // and watches a paid payout for returns for a few seconds.
    config.payouts.saga.interval = std::time::Duration::from_millis(50);
    config.payouts.saga.poll_schedule = [100, 200, 400, 800].map(std::time::Duration::from_millis).to_vec();
    config.payouts.saga.return_watch = std::time::Duration::from_secs(5);
    config.payouts.saga.return_poll = std::time::Duration::from_millis(200);
    // Notifications are retried soon, so that a test of an outage waits seconds.
    config.notify.sender.poll_interval = std::time::Duration::from_millis(100);
    config.crm.worker.poll_interval = std::time::Duration::from_millis(100);
    config.crm.worker.backoff =
        till_outbound::backoff::Backoff { base: Duration::from_millis(100), cap: Duration::from_millis(500) };
    config.notify.sender.backoff =
        till_outbound::backoff::Backoff { base: Duration::from_millis(100), cap: Duration::from_millis(500) };
    config
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(test_config(), Extension::default()).await
}

/// Spawns the real server with `config` and extra routes. Panics (failing the test) if
/// anything cannot start.
pub async fn spawn_app_with(config: Config, extension: Extension) -> TestApp {
    try_spawn_app(config, extension).await.unwrap_or_else(|error| panic!("spawning the app: {error:#}"))
}

async fn try_spawn_app(config: Config, extension: Extension) -> anyhow::Result<TestApp> {
    try_spawn_on(fresh_database().await?, config, extension).await
}

/// E-mail through the SMTP server at `url`, from `notifications@till.example`.
pub fn email_settings(url: &str) -> till_notify::EmailSettings {
    till_notify::EmailSettings {
        smtp_url: Secret::new(url.to_string()),
        from_address: till_notify::domain::EmailAddress::parse("notifications@till.example")
            .unwrap_or_else(|why| panic!("the tests' sender address {why}")),
        attempt_timeout: Duration::from_secs(5),
        // A test meets an open breaker within a few refused connections, and waits 2 s
        // for it, not 30.
        breaker: till_outbound::breaker::BreakerConfig {
            minimum_calls: 6,
            open_for: Duration::from_secs(2),
            ..till_outbound::breaker::BreakerConfig::default()
        },
    }
}

/// Stripe at the simulator `sim`, with attempts short enough for tests to wait out.
pub fn stripe_settings(sim: &str) -> till_payments::StripeSettings {
    let base_url = reqwest::Url::parse(&format!("{sim}/stripe/")).unwrap_or_else(|error| panic!("{sim}: {error}"));
    let mut settings = till_payments::StripeSettings::new(base_url, Secret::new(String::from("sk_test_till_testkit")));
    settings.attempt_timeout = Duration::from_secs(2);
    settings.webhook_secret = Some(Secret::new(String::from(STRIPE_WEBHOOK_SECRET)));
    settings
}

/// Razorpay at the simulator `sim`, with attempts short enough for tests to wait out.
pub fn razorpay_settings(sim: &str) -> till_payments::RazorpaySettings {
    let base_url = reqwest::Url::parse(&format!("{sim}/razorpay/")).unwrap_or_else(|error| panic!("{sim}: {error}"));
    let mut settings = till_payments::RazorpaySettings::new(
        base_url,
        String::from("rzp_test_tilltestkit"),
        Secret::new(String::from("till_testkit_secret")),
    );
    settings.attempt_timeout = Duration::from_secs(2);
    settings.webhook_secret = Some(Secret::new(String::from(RAZORPAY_WEBHOOK_SECRET)));
    settings
}

/// Faster Payments at the simulator `sim`, with attempts short enough for tests to wait
/// out.
pub fn fps_settings(sim: &str) -> till_payouts::FpsSettings {
    let base_url = reqwest::Url::parse(&format!("{sim}/fps/")).unwrap_or_else(|error| panic!("{sim}: {error}"));
    let mut settings = till_payouts::FpsSettings::new(
        base_url,
        Secret::new(String::from("fps_test_testkit")),
        String::from("A000TEST"),
    );
    settings.attempt_timeout = Duration::from_secs(2);
    // A test meets an open breaker within a few failures, and waits 2 s for it, not 30.
    settings.breaker.minimum_calls = 6;
    settings.breaker.open_for = Duration::from_secs(2);
    settings.webhook_secret = Some(Secret::new(String::from(FPS_WEBHOOK_SECRET)));
    settings
}

/// The secret of the test simulator's Faster Payments webhooks.
pub const FPS_WEBHOOK_SECRET: &str = "till_testkit_fps_webhooks";
/// The simulator's Twilio account for tests, and its auth token (which signs callbacks).
pub const SMS_ACCOUNT_SID: &str = "AC0000000000000000000000000000test";
pub const SMS_AUTH_TOKEN: &str = "till_testkit_twilio_auth_token";

/// The simulator `sim`'s Salesforce org, as Till's connected app signs in to it.
pub fn salesforce_settings(sim: &str) -> till_crm::salesforce::SalesforceSettings {
    till_crm::salesforce::SalesforceSettings {
        instance_url: reqwest::Url::parse(&format!("{sim}/salesforce/"))
            .unwrap_or_else(|error| panic!("{sim}: {error}")),
        client_id: String::from("3MVG9tilltestkit"),
        client_secret: Secret::new(String::from(till_sim::salesforce::CLIENT_SECRET)),
        api_version: String::from("v60.0"),
    }
}

/// SMS through the simulator `sim`'s Twilio, from +447700900000, its status callbacks to
/// the Till at `app`.
pub fn sms_settings(sim: &str, app: &str) -> till_notify::sms::SmsSettings {
    let url = |text: String| reqwest::Url::parse(&text).unwrap_or_else(|error| panic!("{text}: {error}"));
    till_notify::sms::SmsSettings {
        base_url: url(format!("{sim}/sms/")),
        account_sid: String::from(SMS_ACCOUNT_SID),
        auth_token: Secret::new(String::from(SMS_AUTH_TOKEN)),
        from: String::from("+447700900000"),
        status_callback: url(format!("{app}{}", till_notify::sms::STATUS_PATH)),
    }
}

/// RazorpayX Payouts at the simulator `sim`, with attempts short enough for tests to
/// wait out, a breaker as quick as Faster Payments', and the webhooks' secret.
pub fn razorpayx_settings(sim: &str) -> till_payouts::RazorpayXSettings {
    let base_url = reqwest::Url::parse(&format!("{sim}/razorpayx/")).unwrap_or_else(|error| panic!("{sim}: {error}"));
    let mut settings = till_payouts::RazorpayXSettings::new(
        base_url,
        String::from("rzp_test_tilltestkitx"),
        Secret::new(String::from("till_testkit_secret")),
        String::from("2323230041626905"),
    );
    settings.attempt_timeout = Duration::from_secs(2);
    settings.breaker.minimum_calls = 6;
    settings.breaker.open_for = Duration::from_secs(2);
    settings.webhook_secret = Some(Secret::new(String::from(RAZORPAYX_WEBHOOK_SECRET)));
    settings
}

/// The secret of the test simulator's RazorpayX webhooks.
pub const RAZORPAYX_WEBHOOK_SECRET: &str = "till_testkit_razorpayx_webhooks";

/// The secret of the test simulator's Razorpay webhooks.
pub const RAZORPAY_WEBHOOK_SECRET: &str = "till_testkit_razorpay_webhooks";

/// The signing secret of the test simulator's Stripe webhooks (a test signs its own
/// webhooks with it, or with another to see them refused).
pub const STRIPE_WEBHOOK_SECRET: &str = "whsec_till_testkit";

/// A simulator of the outside world of the test's own, stopped with the test's runtime.
/// Its gateways pay out only when the test asks (`POST /_sim/{provider}/settle`), so no
/// payout lands in the middle of what a test measures.
/// Its Stripe and Razorpay send webhooks to `app` (when given), signed with
/// [`STRIPE_WEBHOOK_SECRET`] and [`RAZORPAY_WEBHOOK_SECRET`].
/// A test that needs gateway settings of its own starts one (`None`: no webhooks) and
/// sets `config.payments.stripe` from [`stripe_settings`].
pub async fn start_simulator(app: Option<&str>) -> anyhow::Result<String> {
    Ok(start_simulator_with_mailbox(app).await?.0)
}

/// The simulator, with its SMTP mailbox: its HTTP address, and its mailbox's
/// `smtp://127.0.0.1:PORT`.
pub async fn start_simulator_with_mailbox(app: Option<&str>) -> anyhow::Result<(String, String)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = format!("http://{}", listener.local_addr()?);
    let webhooks = app
        .map(|app| {
            vec![
                till_sim::webhooks::Target {
                    provider: String::from("stripe"),
                    url: format!("{app}{}", till_payments::provider_webhooks::STRIPE_WEBHOOKS_PATH),
                    secret: String::from(STRIPE_WEBHOOK_SECRET),
                },
                till_sim::webhooks::Target {
                    provider: String::from("razorpay"),
                    url: format!("{app}{}", till_payments::provider_webhooks::RAZORPAY_WEBHOOKS_PATH),
                    secret: String::from(RAZORPAY_WEBHOOK_SECRET),
                },
                till_sim::webhooks::Target {
                    provider: String::from("razorpayx"),
                    url: format!("{app}{}", till_payouts::rail_webhooks::RAZORPAYX_WEBHOOKS_PATH),
                    secret: String::from(RAZORPAYX_WEBHOOK_SECRET),
                },
                till_sim::webhooks::Target {
                    provider: String::from("fps"),
                    url: format!("{app}{}", till_payouts::rail_webhooks::FPS_WEBHOOKS_PATH),
                    secret: String::from(FPS_WEBHOOK_SECRET),
                },
                till_sim::webhooks::Target {
                    provider: String::from("sms"),
                    url: format!("{app}{}", till_notify::sms::STATUS_PATH),
                    secret: String::from(SMS_AUTH_TOKEN),
                },
            ]
        })
        .unwrap_or_default();
    let smtp = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let smtp_url = format!("smtp://{}", smtp.local_addr()?);
    let options = till_sim::Options { schedule: false, webhooks, smtp: Some(smtp), salesforce_tls: None };
    tokio::spawn(till_sim::serve_with(listener, options, std::future::pending()));
    Ok((address, smtp_url))
}

async fn try_spawn_on(database: TestDatabase, mut config: Config, extension: Extension) -> anyhow::Result<TestApp> {
    // Each app gets a simulator of its own, unless the test pointed the gateways elsewhere.
    // Bound first, so that the simulator knows where to send its webhooks.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = format!("http://{}", listener.local_addr()?);
    config.commerce.public_url = address.clone();
    let sim = match &config.payments.stripe {
        Some(stripe) => stripe.base_url.origin().ascii_serialization(),
        None => {
            let (sim, smtp_url) = start_simulator_with_mailbox(Some(&address)).await?;
            if config.notify.email.is_none() {
                config.notify.email = Some(email_settings(&smtp_url));
            }
            if config.notify.sms.is_none() {
                config.notify.sms = Some(sms_settings(&sim, &address));
            }
            if config.crm.salesforce.is_none() {
                config.crm.salesforce = Some(salesforce_settings(&sim));
            }
            config.payments.stripe = Some(stripe_settings(&sim));
            config.payments.razorpay = Some(razorpay_settings(&sim));
            sim
        }
    };
    if config.payments.razorpay.is_none() {
        config.payments.razorpay = Some(razorpay_settings(&sim));
    }
    if config.payouts.fps.is_none() {
        config.payouts.fps = Some(fps_settings(&sim));
    }
    if config.payouts.razorpayx.is_none() {
        config.payouts.razorpayx = Some(razorpayx_settings(&sim));
    }
    let pool = database.app_pool(10).await?;
    let owner_pool = database.owner_pool().await?;
    let admin_token = config.admin_token.expose_secret().clone();
    let keyring_for_test = config.keyring.clone();
    let built = till_server::build(AppParts { config, pool: pool.clone() }, extension)?;
    let openapi = serde_json::to_value(&built.openapi)?;
    let (shutdown, stopped) = tokio::sync::oneshot::channel::<()>();
    // The same start-up as `till up`'s: the API and its background jobs (the hold
    // sweeper, the relay, the webhook worker among them), stopped when the app drops.
    tokio::spawn(built.run(listener, async move {
        let _ = stopped.await;
    }));
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    Ok(TestApp {
        address,
        client,
        admin_token,
        database,
        pool,
        owner_pool,
        openapi,
        keyring: keyring_for_test,
        sim,
        shutdown: Some(shutdown),
    })
}

impl TestApp {
    /// A second Till instance on this instance's database (its own pool, engine and
    /// background jobs, the same sealing keys), as behind a load balancer.
    pub async fn another_instance(&self) -> TestApp {
        // Instances of one deployment share their sealing keys.
        let mut config = test_config();
        config.keyring = self.keyring.clone();
        // And their gateways.
        config.payments.stripe = Some(stripe_settings(&self.sim));
        config.payments.razorpay = Some(razorpay_settings(&self.sim));
        try_spawn_on(self.database.clone(), config, Extension::default())
            .await
            .unwrap_or_else(|error| panic!("spawning another instance: {error:#}"))
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    /// A request with a bearer credential.
    pub fn request(&self, method: Method, path: &str, credential: &str) -> RequestBuilder {
        self.client.request(method, self.url(path)).bearer_auth(credential)
    }

    /// The simulator's log of `provider`'s calls of `operation`, oldest first.
    pub async fn sim_calls(&self, provider: &str, operation: &str) -> Vec<Value> {
        let url = format!("{}/_sim/calls?provider={provider}", self.sim);
        let response = self.client.get(url).send().await.unwrap_or_else(|error| panic!("the sim's calls: {error}"));
        let calls: Value = response.json().await.unwrap_or_else(|error| panic!("the sim's calls: {error}"));
        calls["data"].as_array().into_iter().flatten().filter(|call| call["operation"] == operation).cloned().collect()
    }

    /// `provider`'s own view of its object `id` at the simulator.
    pub async fn sim_object(&self, provider: &str, id: &str) -> Value {
        let url = format!("{}/_sim/{provider}/objects/{id}", self.sim);
        let response = self.client.get(url).send().await.unwrap_or_else(|error| panic!("{provider} {id}: {error}"));
        assert_eq!(response.status().as_u16(), 200, "{provider} has no {id}");
        response.json().await.unwrap_or_else(|error| panic!("{provider} {id}: {error}"))
    }

    /// Arms a fault at the simulator for the next `count` calls of `provider`'s `operation`.
    pub async fn arm_fault(&self, provider: &str, operation: &str, fault: &str, count: u32, delay_ms: Option<u64>) {
        let body = serde_json::json!({"provider": provider, "operation": operation, "fault": fault, "count": count,
                                      "delay_ms": delay_ms});
        let url = format!("{}/_sim/faults", self.sim);
        let response = self.client.post(url).json(&body).send().await.unwrap_or_else(|error| panic!("fault: {error}"));
        assert_eq!(response.status().as_u16(), 201, "the simulator armed {fault}");
    }

    pub async fn get(&self, path: &str, credential: &str) -> Response {
        self.request(Method::GET, path, credential).send().await.unwrap_or_else(|error| panic!("GET {path}: {error}"))
    }

    /// A POST with a JSON body and an Idempotency-Key.
    pub async fn post(&self, path: &str, credential: &str, idempotency_key: &str, body: &Value) -> Response {
        self.request(Method::POST, path, credential)
            .header("Idempotency-Key", idempotency_key)
            .json(body)
            .send()
            .await
            .unwrap_or_else(|error| panic!("POST {path}: {error}"))
    }

    pub async fn create_business(&self, country: &str) -> TestBusiness {
        let body = serde_json::json!({ "legal_name": format!("Test {country} Ltd"), "country": country });
        let key = uuid::Uuid::now_v7().to_string();
        let response = self.post("/v1/platform/businesses", &self.admin_token, &key, &body).await;
        assert_eq!(response.status().as_u16(), 201, "creating a business");
        let created: Value = response.json().await.unwrap_or_default();
        TestBusiness {
            id: created["business"]["id"].as_str().unwrap_or_default().to_string(),
            owner_key: created["api_key"]["secret"].as_str().unwrap_or_default().to_string(),
            body: created,
        }
    }

    /// Creates an API key with `role` for `business`.
    pub async fn create_key(&self, business: &TestBusiness, role: &str) -> String {
        let body = serde_json::json!({ "name": format!("{role} key"), "role": role });
        let key = uuid::Uuid::now_v7().to_string();
        let response = self.post("/v1/api_keys", &business.owner_key, &key, &body).await;
        assert_eq!(response.status().as_u16(), 201, "creating a {role} key");
        let created: Value = response.json().await.unwrap_or_default();
        created["secret"].as_str().unwrap_or_default().to_string()
    }
}

/// Reads a problem+json body and checks its shape.
pub async fn problem(response: Response) -> Value {
    let content_type =
        response.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    assert_eq!(content_type, "application/problem+json", "errors are problem+json");
    let body: Value = response.json().await.unwrap_or_default();
    assert!(
        body["code"].is_string() && body["status"].is_u64() && body["request_id"].is_string(),
        "problem shape: {body}"
    );
    body
}
