//! `till up` and `till admin create-business`.

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::Path;

use anyhow::{bail, Context};
use rand::RngCore;
use till_access::api::{create_business_with_owner_key, CreatedBusinessBody};
use till_access::domain::NewBusiness;
use till_access::jwt::JwtKeyConfig;
use till_http::rate_limit::RateLimitConfig;
use till_kit::Secret;
use till_server::Config;

use crate::cli::{
    CreateBusinessArgs, DeadLettersArgs, EventsBacklogArgs, LedgerCheckArgs, ReplayDeadLettersArgs, UpArgs,
};
use crate::database::{self, Database};

pub(crate) const ADMIN_TOKEN_FILE: &str = "admin-token";
const ENCRYPTION_KEYS_FILE: &str = "encryption-keys";
const DEMO_MARKER_FILE: &str = "demo-business";

pub async fn run(args: UpArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.database.data_dir)
        .with_context(|| format!("creating the data directory {}", args.database.data_dir.display()))?;
    let (admin_token, admin_token_is_new) = admin_token(&args)?;
    let keyring = keyring(&args)?;
    let config = config(&args, admin_token.clone(), keyring)?;

    let database = database::open_for_up(&args.database).await?;
    // From here on, stop the cluster whatever happens.
    let outcome = serve(&args, config, &database, admin_token_is_new.then_some(&admin_token)).await;
    let stopped = database.stop().await;
    outcome?;
    stopped?;
    println!("Till stopped.");
    Ok(())
}

async fn serve(
    args: &UpArgs,
    mut config: Config,
    database: &Database,
    new_admin_token: Option<&Secret<String>>,
) -> anyhow::Result<()> {
    let owner_pool =
        till_db::connect_owner_pool(database.owner_options.clone(), 2).await.context("connecting to PostgreSQL")?;
    till_db::migrate(&owner_pool, &till_server::migrations()).await?;
    // Secrets written in plain text before sealing, or sealed with a key that is no
    // longer the first, are sealed with the first key now.
    let resealed = till_webhooks::secrets::reseal(&owner_pool, &config.keyring).await?;
    if resealed > 0 {
        tracing::info!(resealed, "sealed webhook signing secrets with the current key");
    }
    owner_pool.close().await;
    let pool = till_db::connect_app_pool(database.owner_options.clone(), args.db_connections_max).await?;
    let address = SocketAddr::new(args.bind, args.port);
    let listener = tokio::net::TcpListener::bind(address).await.with_context(|| format!("binding {address}"))?;
    let base = format!("http://{}", listener.local_addr()?);
    // The simulator sends its webhooks to this instance, on loopback.
    let webhooks_to = format!("http://127.0.0.1:{}", listener.local_addr()?.port());
    let public_url = args.public_url.clone().unwrap_or_else(|| webhooks_to.clone());
    config.commerce.public_url = public_url.clone();
    if let Some(base) = &args.twilio_base_url {
        let needs = |name: &str| format!("TILL_TWILIO_BASE_URL needs {name}");
        config.notify.sms = Some(till_notify::sms::SmsSettings {
            base_url: till_outbound::Url::parse(base).context("TILL_TWILIO_BASE_URL is not a URL")?,
            account_sid: args.twilio_account_sid.clone().with_context(|| needs("TILL_TWILIO_ACCOUNT_SID"))?,
            auth_token: Secret::new(args.twilio_auth_token.clone().with_context(|| needs("TILL_TWILIO_AUTH_TOKEN"))?),
            from: args.twilio_from.clone().with_context(|| needs("TILL_TWILIO_FROM"))?,
            status_callback: status_callback(&public_url)?,
        });
    }
    if let Some(base) = &args.salesforce_instance_url {
        let needs = |name: &str| format!("TILL_SALESFORCE_INSTANCE_URL needs {name}");
        config.crm.salesforce = Some(till_crm::salesforce::SalesforceSettings {
            instance_url: till_outbound::Url::parse(base).context("TILL_SALESFORCE_INSTANCE_URL is not a URL")?,
            client_id: args.salesforce_client_id.clone().with_context(|| needs("TILL_SALESFORCE_CLIENT_ID"))?,
            client_secret: Secret::new(
                args.salesforce_client_secret.clone().with_context(|| needs("TILL_SALESFORCE_CLIENT_SECRET"))?,
            ),
            api_version: String::from("v60.0"),
        });
    }
    let simulator = start_simulator(args, &mut config, &webhooks_to).await?;
    // Set explicitly, the saga's schedule wins over the simulator's and the defaults.
    if let Some(schedule) = args.payouts_poll_ms.as_ref().filter(|schedule| !schedule.is_empty()) {
        config.payouts.saga.poll_schedule = schedule.iter().map(|ms| std::time::Duration::from_millis(*ms)).collect();
    }
    config.payouts.saga.lease = std::time::Duration::from_secs(args.payouts_lease_seconds);
    config.commerce.saga.lease_seconds = args.checkout_lease_seconds;
    config.notify.sender.lease_seconds = args.notify_lease_seconds;
    if let Some(url) = &args.smtp_url {
        config.notify.email = Some(email_settings(url, &args.smtp_from)?);
    }
    let built = till_server::build(till_server::AppParts { config, pool: pool.clone() }, Default::default())?;

    let demo = create_demo_business_once(&pool, &args.database.data_dir).await?;
    // Before the banner, which is when a supervisor may first send SIGTERM.
    let shutdown = shutdown_signal();
    print_banner(&base, database, demo.as_ref(), new_admin_token, args, simulator.as_deref());

    built.run(listener, shutdown).await?;
    pool.close().await;
    Ok(())
}

fn config(args: &UpArgs, admin_token: Secret<String>, keyring: till_kit::Keyring) -> anyhow::Result<Config> {
    let mut config = Config::new(admin_token, keyring);
    config.rate_limit = RateLimitConfig {
        requests_per_second: NonZeroU32::new(args.rate_limit_per_second)
            .context("TILL_RATE_LIMIT_PER_SECOND must be at least 1")?,
        burst: NonZeroU32::new(args.rate_limit_burst).context("TILL_RATE_LIMIT_BURST must be at least 1")?,
    };
    config.body_bytes_max = args.body_bytes_max;
    config.recovery = till_http::recovery::RecoveryConfig {
        lease: std::time::Duration::from_secs(args.recovery_lease_seconds),
        grace: std::time::Duration::from_secs(args.recovery_grace_seconds),
    };
    config.auth_failures_per_minute = args.auth_failures_per_minute;
    config.http.header_timeout = std::time::Duration::from_secs(args.http_header_timeout_seconds);
    config.http.body_timeout = std::time::Duration::from_secs(args.http_body_timeout_seconds);
    config.http.connections_max = args.http_connections_max;
    config.idempotency_retention_hours = args.idempotency_retention_hours;
    if let Some(keys) = &args.jwt_keys {
        config.jwt_keys =
            serde_json::from_str::<Vec<JwtKeyConfig>>(keys).context("TILL_JWT_KEYS is not a JSON array of keys")?;
    }
    config.jwt_issuer = args.jwt_issuer.clone();
    config.jwt_audience = args.jwt_audience.clone();
    config.jwt_leeway_seconds = args.jwt_leeway_seconds;
    config.jwt_lifetime_seconds_max = args.jwt_lifetime_seconds_max;
    config.webhooks.allow_private_targets = args.webhooks_allow_private_targets;
    if let Some(url) = &args.broker.broker_url {
        config.bus = till_events::bus::Bus::RabbitMq(args.broker.config(url)?);
    }
    config.validate()?;
    Ok(config)
}

/// The admin token: from the flag or environment, else the one stored in the data
/// directory, else a new one (stored 0600 and printed once).
fn admin_token(args: &UpArgs) -> anyhow::Result<(Secret<String>, bool)> {
    if let Some(token) = &args.admin_token {
        return Ok((Secret::new(token.clone()), false));
    }
    let path = args.database.data_dir.join(ADMIN_TOKEN_FILE);
    if let Ok(stored) = std::fs::read_to_string(&path) {
        let stored = stored.trim().to_string();
        if !stored.is_empty() {
            return Ok((Secret::new(stored), false));
        }
    }
    let mut bytes = [0_u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let token = format!("till_admin_{}", hex::encode(bytes));
    till_db::embedded::write_secret_file(&path, &token)?;
    Ok((Secret::new(token), true))
}

/// The keys that seal secrets at rest: from the flag or environment, else those stored
/// in the data directory, else a new one (stored 0600, never printed).
fn keyring(args: &UpArgs) -> anyhow::Result<till_kit::Keyring> {
    if let Some(keys) = &args.encryption_keys {
        return till_kit::Keyring::parse(keys).context("TILL_ENCRYPTION_KEYS");
    }
    let path = args.database.data_dir.join(ENCRYPTION_KEYS_FILE);
    match std::fs::read_to_string(&path) {
        Ok(stored) => {
            return till_kit::Keyring::parse(stored.trim()).with_context(|| format!("the keys in {}", path.display()))
        }
        // Only a missing file means "first start": a key file that cannot be read must
        // never be replaced, or everything sealed with it would be lost.
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => return Err(error).with_context(|| format!("reading {}", path.display())),
    }
    let mut id = [0_u8; 4];
    rand::rngs::OsRng.fill_bytes(&mut id);
    let text = till_kit::Keyring::generate_text(&format!("k{}", hex::encode(id)))
        .context("the system gave no randomness for an encryption key")?;
    till_db::embedded::write_secret_file(&path, &text)?;
    till_kit::Keyring::parse(&text).context("the generated encryption key")
}

async fn create_demo_business_once(
    pool: &sqlx::PgPool,
    data_dir: &Path,
) -> anyhow::Result<Option<CreatedBusinessBody>> {
    let marker = data_dir.join(DEMO_MARKER_FILE);
    if marker.exists() {
        return Ok(None);
    }
    let business = NewBusiness::parse("Till Demo Ltd", "GB", None, None).map_err(|error| anyhow::anyhow!("{error}"))?;
    let mut transaction = till_db::begin_platform(pool).await?;
    let created = create_business_with_owner_key(&mut transaction, &business, "till up")
        .await
        .map_err(|error| anyhow::anyhow!("creating the demo business: {error}"))?;
    transaction.commit().await?;
    // The marker holds the id only; the key was shown once and is stored only as a hash.
    std::fs::write(&marker, created.business.id.to_string()).context("recording the demo business")?;
    Ok(Some(created))
}

fn print_banner(
    base: &str,
    database: &Database,
    demo: Option<&CreatedBusinessBody>,
    new_admin_token: Option<&Secret<String>>,
    args: &UpArgs,
    simulator: Option<&str>,
) {
    let (data_dir, allow_private_webhooks, broker) =
        (&args.database.data_dir, args.webhooks_allow_private_targets, args.broker.broker_url.is_some());
    println!("Till is up.");
    println!("  API:      {base}/v1");
    println!("  Docs:     {base}/docs");
    println!("  OpenAPI:  {base}/v1/openapi.json");
    println!("  Database: {}", database.description);
    println!(
        "  Events:   {}",
        if broker { "RabbitMQ (TILL_BROKER_URL), published from the event log" } else { "the embedded event log" }
    );
    match simulator {
        Some(sim) => println!(
            "  Gateways: the simulator at {sim} (Stripe at /stripe/v1, Razorpay at /razorpay/v1, Faster Payments at /fps/api, RazorpayX at /razorpayx/v1): no real money moves"
        ),
        None => println!("  Gateways: as configured (TILL_STRIPE_BASE_URL, TILL_RAZORPAY_BASE_URL, TILL_FPS_BASE_URL, TILL_RAZORPAYX_BASE_URL)"),
    }
    match (&args.smtp_url, simulator) {
        (Some(_), _) => println!("  E-mail:   the SMTP server in TILL_SMTP_URL"),
        (None, Some(sim)) => {
            println!("  E-mail:   the simulator's mailbox (received mail: {sim}/_sim/mailbox); SMS: its Twilio")
        }
        (None, None) => println!("  E-mail:   none set (TILL_SMTP_URL): notifications are kept queued"),
    }
    if let Some(demo) = demo {
        println!();
        println!("Created the demo business {} ({}).", demo.business.id, demo.business.legal_name);
        println!("Its owner API key, shown this once:");
        println!("  {}", demo.api_key.secret);
        println!("Try it:");
        println!("  curl -H \"Authorization: Bearer {}\" {base}/v1/business", demo.api_key.secret);
    }
    if let Some(token) = new_admin_token {
        println!();
        println!("Platform admin token (kept in {}, shown this once):", data_dir.join(ADMIN_TOKEN_FILE).display());
        println!("  {}", token.expose_secret());
    }
    if allow_private_webhooks {
        println!();
        println!(
            "WARNING: webhooks may go to http and to loopback/private addresses (TILL_WEBHOOKS_ALLOW_PRIVATE_TARGETS)."
        );
        println!("         That is for local development only: never in production.");
    }
    println!();
    println!("Press Ctrl-C to stop.");
}

/// Starts the simulator for `till up` and points the gateways at it, unless a gateway is
/// configured or `TILL_SIMULATOR=off`; its gateways send their webhooks to `api` (this
/// instance), signed with a secret made for this run. Returns its address when it runs.
/// It serves until the process ends.
async fn start_simulator(args: &UpArgs, config: &mut Config, api: &str) -> anyhow::Result<Option<String>> {
    let configured = [&args.stripe_base_url, &args.razorpay_base_url, &args.fps_base_url, &args.razorpayx_base_url];
    if configured.iter().any(|base| base.is_some()) {
        if let Some(base) = &args.stripe_base_url {
            let base_url = till_outbound::Url::parse(base).context("TILL_STRIPE_BASE_URL is not a URL")?;
            let key = args.stripe_secret_key.clone().context("TILL_STRIPE_BASE_URL needs TILL_STRIPE_SECRET_KEY")?;
            let mut stripe = till_payments::StripeSettings::new(base_url, Secret::new(key));
            stripe.webhook_secret = args.stripe_webhook_secret.clone().map(Secret::new);
            config.payments.stripe = Some(stripe);
        }
        if let Some(base) = &args.razorpay_base_url {
            let base_url = till_outbound::Url::parse(base).context("TILL_RAZORPAY_BASE_URL is not a URL")?;
            let id = args.razorpay_key_id.clone().context("TILL_RAZORPAY_BASE_URL needs TILL_RAZORPAY_KEY_ID")?;
            let secret =
                args.razorpay_key_secret.clone().context("TILL_RAZORPAY_BASE_URL needs TILL_RAZORPAY_KEY_SECRET")?;
            let mut razorpay = till_payments::RazorpaySettings::new(base_url, id, Secret::new(secret));
            razorpay.webhook_secret = args.razorpay_webhook_secret.clone().map(Secret::new);
            config.payments.razorpay = Some(razorpay);
        }
        if let Some(base) = &args.fps_base_url {
            let base_url = till_outbound::Url::parse(base).context("TILL_FPS_BASE_URL is not a URL")?;
            let key = args.fps_api_key.clone().context("TILL_FPS_BASE_URL needs TILL_FPS_API_KEY")?;
            let account = args.fps_source_account.clone().context("TILL_FPS_BASE_URL needs TILL_FPS_SOURCE_ACCOUNT")?;
            let mut fps = till_payouts::FpsSettings::new(base_url, Secret::new(key), account);
            fps.webhook_secret = args.fps_webhook_secret.clone().map(Secret::new);
            config.payouts.fps = Some(fps);
        }
        if let Some(base) = &args.razorpayx_base_url {
            let base_url = till_outbound::Url::parse(base).context("TILL_RAZORPAYX_BASE_URL is not a URL")?;
            let needs = |name: &str| format!("TILL_RAZORPAYX_BASE_URL needs {name}");
            let id = args.razorpayx_key_id.clone().with_context(|| needs("TILL_RAZORPAYX_KEY_ID"))?;
            let secret = args.razorpayx_key_secret.clone().with_context(|| needs("TILL_RAZORPAYX_KEY_SECRET"))?;
            let account =
                args.razorpayx_account_number.clone().with_context(|| needs("TILL_RAZORPAYX_ACCOUNT_NUMBER"))?;
            let mut razorpayx = till_payouts::RazorpayXSettings::new(base_url, id, Secret::new(secret), account);
            razorpayx.webhook_secret = args.razorpayx_webhook_secret.clone().map(Secret::new);
            config.payouts.razorpayx = Some(razorpayx);
        }
        return Ok(None);
    }
    if args.simulator == "off" {
        return Ok(None);
    }
    let port = match (args.sim_port, args.port) {
        (Some(port), _) => port,
        (None, 0) => 0,
        (None, api) => api.checked_add(1).context("the API's port is the last one: set TILL_SIM_PORT")?,
    };
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.with_context(|| {
        format!("binding the simulator to 127.0.0.1:{port} (set TILL_SIM_PORT, or TILL_SIMULATOR=off)")
    })?;
    let sim = format!("http://{}", listener.local_addr()?);
    let base_url = till_outbound::Url::parse(&format!("{sim}/stripe/")).context("the simulator's URL")?;
    let webhook_secret = format!("whsec_{}", hex::encode(rand::random::<[u8; 24]>()));
    let mut stripe = till_payments::StripeSettings::new(base_url, Secret::new(String::from("sk_test_till_simulator")));
    stripe.webhook_secret = Some(Secret::new(webhook_secret.clone()));
    config.payments.stripe = Some(stripe);
    let base_url = till_outbound::Url::parse(&format!("{sim}/razorpay/")).context("the simulator's URL")?;
    let razorpay_secret = hex::encode(rand::random::<[u8; 24]>());
    let mut razorpay = till_payments::RazorpaySettings::new(
        base_url,
        String::from("rzp_test_tillsimulator"),
        Secret::new(String::from("till_simulator_secret")),
    );
    razorpay.webhook_secret = Some(Secret::new(razorpay_secret.clone()));
    config.payments.razorpay = Some(razorpay);
    let base_url = till_outbound::Url::parse(&format!("{sim}/fps/")).context("the simulator's URL")?;
    let fps_secret = hex::encode(rand::random::<[u8; 24]>());
    let mut fps = till_payouts::FpsSettings::new(
        base_url,
        Secret::new(String::from("fps_test_till_simulator")),
        String::from("A000TILL"),
    );
    fps.webhook_secret = Some(Secret::new(fps_secret.clone()));
    config.payouts.fps = Some(fps);
    let base_url = till_outbound::Url::parse(&format!("{sim}/razorpayx/")).context("the simulator's URL")?;
    let razorpayx_secret = hex::encode(rand::random::<[u8; 24]>());
    let mut razorpayx = till_payouts::RazorpayXSettings::new(
        base_url,
        String::from("rzp_test_tillsimulator"),
        Secret::new(String::from("till_simulator_secret")),
        String::from("2323230041626905"),
    );
    razorpayx.webhook_secret = Some(Secret::new(razorpayx_secret.clone()));
    config.payouts.razorpayx = Some(razorpayx);
    // The simulator's rail decides in a fraction of a second and returns within one: ask
    // it soon and watch a paid payout for a minute (a real provider's guidance is minutes
    // to hours, and days for a return: the defaults).
    config.payouts.saga.poll_schedule = [500, 1_000, 2_000, 5_000].map(std::time::Duration::from_millis).to_vec();
    config.payouts.saga.return_watch = std::time::Duration::from_secs(60);
    config.payouts.saga.return_poll = std::time::Duration::from_secs(2);
    // Its mailbox takes the e-mail, unless an SMTP server is set.
    let smtp = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await.context("binding the simulator's SMTP mailbox")?;
    if config.notify.email.is_none() {
        config.notify.email = Some(email_settings(&format!("smtp://{}", smtp.local_addr()?), &args.smtp_from)?);
    }
    // Its Salesforce org takes the CRM sync, unless an org is set.
    if config.crm.salesforce.is_none() {
        config.crm.salesforce = Some(till_crm::salesforce::SalesforceSettings {
            instance_url: till_outbound::Url::parse(&format!("{sim}/salesforce/")).context("the simulator's URL")?,
            client_id: String::from("3MVG9tillsimulator"),
            client_secret: Secret::new(String::from(till_sim::salesforce::CLIENT_SECRET)),
            api_version: String::from("v60.0"),
        });
    }
    // And its Twilio takes SMS, unless a Twilio is set.
    let sms_token = hex::encode(rand::random::<[u8; 16]>());
    if config.notify.sms.is_none() {
        config.notify.sms = Some(till_notify::sms::SmsSettings {
            base_url: till_outbound::Url::parse(&format!("{sim}/sms/")).context("the simulator's URL")?,
            account_sid: String::from("AC00000000000000000000000000000sim"),
            auth_token: Secret::new(sms_token.clone()),
            from: String::from("+447700900000"),
            status_callback: status_callback(api)?,
        });
    }
    let options = till_sim::Options {
        smtp: Some(smtp),
        salesforce_tls: None,
        schedule: true,
        webhooks: vec![
            till_sim::webhooks::Target {
                provider: String::from("stripe"),
                url: format!("{api}{}", till_payments::provider_webhooks::STRIPE_WEBHOOKS_PATH),
                secret: webhook_secret,
            },
            till_sim::webhooks::Target {
                provider: String::from("razorpay"),
                url: format!("{api}{}", till_payments::provider_webhooks::RAZORPAY_WEBHOOKS_PATH),
                secret: razorpay_secret,
            },
            till_sim::webhooks::Target {
                provider: String::from("razorpayx"),
                url: format!("{api}{}", till_payouts::rail_webhooks::RAZORPAYX_WEBHOOKS_PATH),
                secret: razorpayx_secret,
            },
            till_sim::webhooks::Target {
                provider: String::from("fps"),
                url: format!("{api}{}", till_payouts::rail_webhooks::FPS_WEBHOOKS_PATH),
                secret: fps_secret,
            },
            till_sim::webhooks::Target {
                provider: String::from("sms"),
                url: format!("{api}{}", till_notify::sms::STATUS_PATH),
                secret: sms_token,
            },
        ],
    };
    tokio::spawn(async move {
        if let Err(error) = till_sim::serve_with(listener, options, std::future::pending()).await {
            tracing::error!(%error, "the simulator stopped");
        }
    });
    Ok(Some(sim))
}

/// Where Twilio sends its status callbacks to the Till at `public_url`.
fn status_callback(public_url: &str) -> anyhow::Result<till_outbound::Url> {
    till_outbound::Url::parse(&format!("{}{}", public_url.trim_end_matches('/'), till_notify::sms::STATUS_PATH))
        .context("TILL_PUBLIC_URL is not a URL")
}

/// E-mail through the SMTP server at `url`, from `from`.
fn email_settings(url: &str, from: &str) -> anyhow::Result<till_notify::EmailSettings> {
    let from_address =
        till_notify::domain::EmailAddress::parse(from).map_err(|why| anyhow::anyhow!("TILL_SMTP_FROM {why}"))?;
    Ok(till_notify::EmailSettings {
        smtp_url: Secret::new(url.to_string()),
        from_address,
        attempt_timeout: std::time::Duration::from_secs(10),
        breaker: till_outbound::breaker::BreakerConfig::default(),
    })
}

/// `till sim`: the simulator alone, until Ctrl-C or SIGTERM.
pub async fn sim(args: crate::cli::SimArgs) -> anyhow::Result<()> {
    let shutdown = shutdown_signal();
    let listener = tokio::net::TcpListener::bind((args.bind, args.port))
        .await
        .with_context(|| format!("binding the simulator to {}:{}", args.bind, args.port))?;
    let address = listener.local_addr()?;
    let mut options = till_sim::Options::default();
    println!(
        "Till's simulator on http://{address}: Stripe at /stripe/v1, Razorpay at /razorpay/v1, Salesforce at /salesforce, faults at /_sim/faults. No real money moves."
    );
    if let Some(port) = args.salesforce_tls_port {
        let tls = tokio::net::TcpListener::bind((args.bind, port))
            .await
            .with_context(|| format!("binding the simulator's Salesforce TLS listener to {}:{port}", args.bind))?;
        let certificate = args.tls_certificate.clone().context("--salesforce-tls-port needs --tls-certificate")?;
        println!(
            "Salesforce over TLS at https://{} (its self-signed certificate is in {})",
            tls.local_addr()?,
            certificate.display()
        );
        options.salesforce_tls = Some((tls, certificate));
    }
    println!("Press Ctrl-C to stop.");
    till_sim::serve_with(listener, options, shutdown).await?;
    Ok(())
}

/// Resolves at Ctrl-C or SIGTERM. The handlers are installed here, when it is called,
/// not when the future is first polled: the server may answer requests before it polls
/// its shutdown future, and a SIGTERM in between would otherwise kill Till outright
/// (seen once in CI: `till up` died of a SIGTERM sent right after it answered).
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{signal, SignalKind};
    let interrupt = signal(SignalKind::interrupt());
    let terminate = signal(SignalKind::terminate());
    async move {
        match (interrupt, terminate) {
            (Ok(mut interrupt), Ok(mut terminate)) => tokio::select! {
                _ = interrupt.recv() => tracing::info!("Ctrl-C: shutting down"),
                _ = terminate.recv() => tracing::info!("SIGTERM: shutting down"),
            },
            (Ok(mut interrupt), Err(error)) => {
                tracing::error!(%error, "cannot listen for SIGTERM; only Ctrl-C will stop Till");
                interrupt.recv().await;
            }
            (Err(error), Ok(mut terminate)) => {
                tracing::error!(%error, "cannot listen for Ctrl-C; only SIGTERM will stop Till");
                terminate.recv().await;
            }
            (Err(error), Err(_)) => {
                tracing::error!(%error, "cannot listen for Ctrl-C or SIGTERM; stop Till with SIGKILL");
                std::future::pending::<()>().await;
            }
        }
    }
}

pub async fn create_business(args: CreateBusinessArgs) -> anyhow::Result<()> {
    let business =
        NewBusiness::parse(&args.name, &args.country, args.currency.as_deref(), args.tax_registration.as_deref())
            .map_err(|error| anyhow::anyhow!("{error}"))?;
    let database = database::open_for_command(&args.database).await?;
    let outcome = create_business_in(&database, &business).await;
    database.stop().await?;
    let created = outcome?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&created)?);
    } else {
        println!(
            "Created business {} ({}, {}).",
            created.business.id, created.business.legal_name, created.business.country
        );
        println!("Owner API key, shown this once:");
        println!("  {}", created.api_key.secret);
    }
    Ok(())
}

async fn create_business_in(database: &Database, business: &NewBusiness) -> anyhow::Result<CreatedBusinessBody> {
    let owner_pool =
        till_db::connect_owner_pool(database.owner_options.clone(), 1).await.context("connecting to PostgreSQL")?;
    till_db::migrate(&owner_pool, &till_server::migrations()).await?;
    owner_pool.close().await;
    let pool = till_db::connect_app_pool(database.owner_options.clone(), 1).await?;
    let mut transaction = till_db::begin_platform(&pool).await?;
    let created = match create_business_with_owner_key(&mut transaction, business, "till admin").await {
        Ok(created) => created,
        Err(error) => bail!("creating the business: {error}"),
    };
    transaction.commit().await?;
    pool.close().await;
    Ok(created)
}

/// `till ledger check`: every business's ledger, as the owner (across businesses).
pub async fn check_ledger(args: LedgerCheckArgs) -> anyhow::Result<()> {
    let database = database::open_for_command(&args.database).await?;
    let outcome = check_all(&database).await;
    database.stop().await?;
    let reports = outcome?;
    let failed = reports.iter().filter(|report| !report.ok).count();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&reports)?);
    } else {
        for report in &reports {
            let verdict = if report.ok { "ok" } else { "FAILED" };
            println!("{} {verdict}", report.business_id);
            for invariant in report.invariants.iter().filter(|invariant| !invariant.ok) {
                println!(
                    "  {}: {} violation(s), e.g. {}",
                    invariant.name,
                    invariant.violations.len(),
                    invariant.violations[0]
                );
            }
        }
        println!("{} ledger(s) checked, {failed} failed.", reports.len());
    }
    if failed > 0 {
        std::process::exit(1);
    }
    Ok(())
}

async fn check_all(database: &Database) -> anyhow::Result<Vec<till_ledger::check::CheckReport>> {
    let owner_pool =
        till_db::connect_owner_pool(database.owner_options.clone(), 1).await.context("connecting to PostgreSQL")?;
    till_db::migrate(&owner_pool, &till_server::migrations()).await?;
    let mut connection = owner_pool.acquire().await?;
    let mut reports = Vec::new();
    for business in till_ledger::check::businesses(&mut connection).await? {
        reports.push(till_ledger::check::run(&mut connection, business).await?);
    }
    drop(connection);
    owner_pool.close().await;
    Ok(reports)
}

/// `till events backlog`: what waits in each outbox for the relay (the relay's lag).
pub async fn events_backlog(args: EventsBacklogArgs) -> anyhow::Result<()> {
    let database = database::open_for_command(&args.database).await?;
    let outcome = async {
        let owner_pool = till_db::connect_owner_pool(database.owner_options.clone(), 1).await?;
        till_db::migrate(&owner_pool, &till_server::migrations()).await?;
        let now = time::OffsetDateTime::now_utc();
        for outbox in till_events::relay::outboxes(&owner_pool).await? {
            let (waiting, oldest) = till_events::relay::backlog(&owner_pool, &outbox).await?;
            let age = oldest
                .map(|oldest| format!("{} ms", (now - oldest).whole_milliseconds()))
                .unwrap_or_else(|| "-".into());
            println!("{outbox}: {waiting} waiting, oldest {age}");
        }
        let lags: Vec<(String, i64, i64, Option<time::OffsetDateTime>)> =
            sqlx::query_as("SELECT * FROM events.consumer_lag()").fetch_all(&owner_pool).await?;
        for (consumer, position, behind, oldest) in lags {
            let age = oldest
                .map(|oldest| format!("{} ms", (now - oldest).whole_milliseconds()))
                .unwrap_or_else(|| "-".into());
            println!("consumer {consumer}: at {position}, {behind} behind, oldest {age}");
        }
        owner_pool.close().await;
        anyhow::Ok(())
    }
    .await;
    database.stop().await?;
    outcome
}

/// `till crm status`: the Salesforce sync's backlog, what is parked, the last error.
pub async fn crm_status(args: EventsBacklogArgs) -> anyhow::Result<()> {
    let database = database::open_for_command(&args.database).await?;
    let outcome = async {
        let owner_pool = till_db::connect_owner_pool(database.owner_options.clone(), 1).await?;
        till_db::migrate(&owner_pool, &till_server::migrations()).await?;
        let status = till_crm::store::status(&owner_pool).await?;
        let lag = status
            .oldest_pending
            .map(|oldest| format!("{} ms", (time::OffsetDateTime::now_utc() - oldest).whole_milliseconds()))
            .unwrap_or_else(|| "-".into());
        println!("pending: {}, oldest {lag}", status.pending);
        println!("parked: {}", status.parked);
        for parked in till_crm::store::parked(&owner_pool, 20).await? {
            let since = parked.created_at.format(&time::format_description::well_known::Rfc3339)?;
            let why = parked.last_error.as_deref().unwrap_or("-");
            println!("  {}/{}/{} since {since}: {why}", parked.sobject, parked.external_field, parked.external_id);
        }
        println!("last error: {}", status.last_error.as_deref().unwrap_or("-"));
        owner_pool.close().await;
        anyhow::Ok(())
    }
    .await;
    database.stop().await?;
    outcome
}

/// `till crm replay`: parked changes back in the queue.
pub async fn crm_replay(args: EventsBacklogArgs) -> anyhow::Result<()> {
    let database = database::open_for_command(&args.database).await?;
    let outcome = async {
        let owner_pool = till_db::connect_owner_pool(database.owner_options.clone(), 1).await?;
        till_db::migrate(&owner_pool, &till_server::migrations()).await?;
        let replayed = till_crm::store::replay_parked(&owner_pool).await?;
        println!("replayed {replayed} parked changes");
        owner_pool.close().await;
        anyhow::Ok(())
    }
    .await;
    database.stop().await?;
    outcome
}

/// `till events dead-letters`: what a RabbitMQ consumer gave up on, and why.
pub async fn dead_letters(args: DeadLettersArgs) -> anyhow::Result<()> {
    let url = args.broker.broker_url.as_deref().context("set TILL_BROKER_URL (or --broker-url)")?;
    let config = args.broker.config(url)?;
    let letters = till_events::broker::dead_letters::list(&config, &args.consumer, args.limit).await?;
    for letter in &letters {
        if args.json {
            println!("{}", serde_json::to_string(letter)?);
        } else {
            println!(
                "{}  {}  attempts {}  {}",
                letter.id,
                letter.event_type.as_deref().unwrap_or("(not an event)"),
                letter.attempts,
                letter.error.as_deref().unwrap_or("-")
            );
        }
    }
    if !args.json {
        println!("{} dead letter(s) for consumer {}", letters.len(), args.consumer);
    }
    Ok(())
}

/// `till events replay-dead-letters`: back to the consumer's queue, with fresh attempts.
pub async fn replay_dead_letters(args: ReplayDeadLettersArgs) -> anyhow::Result<()> {
    let url = args.broker.broker_url.as_deref().context("set TILL_BROKER_URL (or --broker-url)")?;
    let config = args.broker.config(url)?;
    let replayed = till_events::broker::dead_letters::replay(&config, &args.consumer, args.event.as_deref()).await?;
    for id in &replayed {
        println!("replayed {id}");
    }
    println!("{} dead letter(s) sent back to consumer {}", replayed.len(), args.consumer);
    Ok(())
}
