//! Flags and environment variables. Every setting is typed here and validated before
//! anything starts.

use std::net::IpAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "till", version, about = "Till: ledger, payments and commerce for small businesses.")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run Till: embedded PostgreSQL (unless DATABASE_URL is set), migrations, the API.
    Up(Box<UpArgs>),
    /// Platform operations.
    #[command(subcommand)]
    Admin(AdminCommand),
    /// Ledger operations.
    #[command(subcommand)]
    Ledger(LedgerCommand),
    /// The events backbone.
    #[command(subcommand)]
    Events(EventsCommand),
    /// The simulator of the outside world alone: Stripe's API under `/stripe/v1/…`, and
    /// the control API (`/_sim/faults`, `/_sim/calls`, `/_sim/{provider}/objects/{id}`).
    /// No real money moves.
    /// The Salesforce sync: `status`, `replay`.
    #[command(subcommand)]
    Crm(CrmCommand),
    Sim(SimArgs),
    /// Benchmarks, reported as ratios to a baseline measured in the same run: runs the
    /// `till-bench` binary built beside this one (`cargo build --release -p till-bench`),
    /// which starts this `till` as the server it measures. `till bench --help` lists them.
    #[command(disable_help_flag = true)]
    Bench {
        /// What `till-bench` is given: `ledger`, `events`, and their options.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<std::ffi::OsString>,
    },
}

#[derive(Debug, Subcommand)]
pub enum CrmCommand {
    /// The Salesforce sync's backlog (and how old its oldest change is), the records the
    /// org refused (parked) and the last error.
    Status(EventsBacklogArgs),
    /// Put every parked change back in the queue, in its place: after the record was fixed
    /// in the org (or its validation rule), the sync tries it again.
    Replay(EventsBacklogArgs),
}

#[derive(Debug, Subcommand)]
pub enum EventsCommand {
    /// Events waiting in each outbox for the relay, and how far each consumer of the log
    /// (the RabbitMQ publisher among them) is behind.
    Backlog(EventsBacklogArgs),
    /// List a RabbitMQ consumer's dead letters (they stay in the queue).
    DeadLetters(DeadLettersArgs),
    /// Send a RabbitMQ consumer's dead letters back to its queue for new attempts.
    ReplayDeadLetters(ReplayDeadLettersArgs),
}

#[derive(Debug, Clone, Args)]
pub struct BrokerArgs {
    /// Publish events to RabbitMQ and let consumers read from it (amqp:// or amqps://).
    /// Unset: the embedded event log in PostgreSQL is the bus.
    #[arg(long, env = "TILL_BROKER_URL", hide_env_values = true)]
    pub broker_url: Option<String>,
    /// The topic exchange events are published to.
    #[arg(long, env = "TILL_BROKER_EXCHANGE", default_value = till_events::broker::EXCHANGE)]
    pub broker_exchange: String,
    /// Unacknowledged messages a consumer holds at most.
    #[arg(long, env = "TILL_BROKER_PREFETCH", default_value_t = 64)]
    pub broker_prefetch: u16,
    /// Waits before each retry of an event a consumer failed, in seconds, comma-separated;
    /// after the last, the event is dead-lettered.
    #[arg(long, env = "TILL_BROKER_RETRY_DELAYS", default_value = "1,10,60,600,3600", value_delimiter = ',')]
    pub broker_retry_delays: Vec<u64>,
}

impl BrokerArgs {
    pub fn config(&self, url: &str) -> anyhow::Result<till_events::broker::BrokerConfig> {
        if !(url.starts_with("amqp://") || url.starts_with("amqps://")) {
            anyhow::bail!("TILL_BROKER_URL must be an amqp:// or amqps:// URL");
        }
        if self.broker_prefetch == 0 {
            anyhow::bail!("TILL_BROKER_PREFETCH must be at least 1");
        }
        if self.broker_retry_delays.iter().any(|delay| *delay == 0 || *delay > 86_400) {
            anyhow::bail!("TILL_BROKER_RETRY_DELAYS: each delay must be 1 to 86400 seconds");
        }
        let mut config = till_events::broker::BrokerConfig::new(till_kit::Secret::new(url.to_string()));
        if self.broker_exchange.is_empty() || self.broker_exchange.len() > 200 {
            anyhow::bail!("TILL_BROKER_EXCHANGE must be 1 to 200 characters");
        }
        config.exchange = self.broker_exchange.clone();
        config.prefetch = self.broker_prefetch;
        config.retry_delays =
            self.broker_retry_delays.iter().map(|seconds| std::time::Duration::from_secs(*seconds)).collect();
        Ok(config)
    }
}

#[derive(Debug, Args)]
pub struct DeadLettersArgs {
    #[command(flatten)]
    pub broker: BrokerArgs,
    /// The consumer whose dead-letter queue to read.
    #[arg(long)]
    pub consumer: String,
    /// Show at most this many.
    #[arg(long, default_value_t = 100)]
    pub limit: usize,
    /// Print JSON lines instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ReplayDeadLettersArgs {
    #[command(flatten)]
    pub broker: BrokerArgs,
    #[arg(long)]
    pub consumer: String,
    /// Only this event (evt_…); default: all of them.
    #[arg(long)]
    pub event: Option<String>,
}

#[derive(Debug, Args)]
pub struct SimArgs {
    /// Address to listen on.
    #[arg(long, env = "TILL_SIM_BIND", default_value = "127.0.0.1")]
    pub bind: IpAddr,
    /// TCP port to listen on.
    #[arg(long, env = "TILL_SIM_PORT", default_value_t = 8081)]
    pub port: u16,
    /// Also serve the Salesforce org over TLS at the root of this port, for SDKs that only
    /// speak `https://{instance}/services/…` (simple-salesforce). 0: any free port.
    #[arg(long, env = "TILL_SIM_SALESFORCE_TLS_PORT")]
    pub salesforce_tls_port: Option<u16>,
    /// Where the TLS listener's self-signed certificate is written (PEM), for clients to
    /// trust.
    #[arg(long, env = "TILL_SIM_TLS_CERTIFICATE")]
    pub tls_certificate: Option<std::path::PathBuf>,
}

#[derive(Debug, Args)]
pub struct EventsBacklogArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
}

#[derive(Debug, Subcommand)]
pub enum LedgerCommand {
    /// Run the invariant checker over every business's ledger; exits 1 if any fails.
    Check(LedgerCheckArgs),
}

#[derive(Debug, Args)]
pub struct LedgerCheckArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// Print the full reports as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Create a business and its first owner API key.
    CreateBusiness(CreateBusinessArgs),
}

#[derive(Debug, Clone, Args)]
pub struct DatabaseArgs {
    /// Where Till keeps its state: the embedded cluster, its password, the admin token.
    #[arg(long, env = "TILL_DATA_DIR", default_value = ".till")]
    pub data_dir: PathBuf,
    /// Use this PostgreSQL server instead of the embedded one; nothing is provisioned.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// TCP port of the embedded PostgreSQL on 127.0.0.1 (default: the previous one if
    /// free, otherwise any free port).
    #[arg(long, env = "TILL_PG_PORT")]
    pub pg_port: Option<u16>,
}

#[derive(Debug, Args)]
pub struct UpArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// The API's port.
    #[arg(long, env = "TILL_PORT", default_value_t = 8080)]
    pub port: u16,
    /// The API's address. The default keeps it on this machine.
    #[arg(long, env = "TILL_BIND", default_value = "127.0.0.1")]
    pub bind: IpAddr,
    /// The simulator's port on 127.0.0.1 (default: the API's port + 1; any free port
    /// when the API's is 0).
    #[arg(long, env = "TILL_SIM_PORT")]
    pub sim_port: Option<u16>,
    /// `off`: do not start the simulator (then set TILL_STRIPE_BASE_URL,
    /// TILL_RAZORPAY_BASE_URL, TILL_FPS_BASE_URL and TILL_RAZORPAYX_BASE_URL, or calls
    /// to them fail: payments
    /// answer 503, payouts wait queued for the rail).
    #[arg(long, env = "TILL_SIMULATOR", default_value = "on", value_parser = ["on", "off"])]
    pub simulator: String,
    /// Stripe's API (`https://api.stripe.com/`); set, the simulator does not stand in.
    #[arg(long, env = "TILL_STRIPE_BASE_URL")]
    pub stripe_base_url: Option<String>,
    /// Stripe's secret key (`sk_live_…`, `sk_test_…`), with TILL_STRIPE_BASE_URL.
    #[arg(long, env = "TILL_STRIPE_SECRET_KEY", hide_env_values = true)]
    pub stripe_secret_key: Option<String>,
    /// The signing secret of Stripe's webhook endpoint for Till (`whsec_…`), with
    /// TILL_STRIPE_BASE_URL; without it Stripe's webhooks are refused (400).
    #[arg(long, env = "TILL_STRIPE_WEBHOOK_SECRET", hide_env_values = true)]
    pub stripe_webhook_secret: Option<String>,
    /// Razorpay's API (`https://api.razorpay.com/`); set, the simulator does not stand in.
    #[arg(long, env = "TILL_RAZORPAY_BASE_URL")]
    pub razorpay_base_url: Option<String>,
    /// Razorpay's key id (`rzp_live_…`, `rzp_test_…`), with TILL_RAZORPAY_BASE_URL.
    #[arg(long, env = "TILL_RAZORPAY_KEY_ID")]
    pub razorpay_key_id: Option<String>,
    /// Razorpay's key secret, with TILL_RAZORPAY_BASE_URL.
    #[arg(long, env = "TILL_RAZORPAY_KEY_SECRET", hide_env_values = true)]
    pub razorpay_key_secret: Option<String>,
    /// The secret of Razorpay's webhook for Till (set in its dashboard), with
    /// TILL_RAZORPAY_BASE_URL; without it Razorpay's webhooks are refused (400).
    #[arg(long, env = "TILL_RAZORPAY_WEBHOOK_SECRET", hide_env_values = true)]
    pub razorpay_webhook_secret: Option<String>,
    /// The Faster Payments provider's API (a Modulr-shaped payments API); set, the
    /// simulator does not stand in.
    #[arg(long, env = "TILL_FPS_BASE_URL")]
    pub fps_base_url: Option<String>,
    /// The Faster Payments provider's API key, with TILL_FPS_BASE_URL.
    #[arg(long, env = "TILL_FPS_API_KEY", hide_env_values = true)]
    pub fps_api_key: Option<String>,
    /// The platform's account at the Faster Payments provider that payouts leave from,
    /// with TILL_FPS_BASE_URL.
    #[arg(long, env = "TILL_FPS_SOURCE_ACCOUNT")]
    pub fps_source_account: Option<String>,
    /// The secret given to the Faster Payments provider for its PAYOUT webhooks, with
    /// TILL_FPS_BASE_URL; without it they are refused (400) and UK payouts are polled.
    #[arg(long, env = "TILL_FPS_WEBHOOK_SECRET", hide_env_values = true)]
    pub fps_webhook_secret: Option<String>,
    /// RazorpayX's API (`https://api.razorpay.com/`), for payouts in India; set, the
    /// simulator does not stand in.
    #[arg(long, env = "TILL_RAZORPAYX_BASE_URL")]
    pub razorpayx_base_url: Option<String>,
    /// RazorpayX's key id (`rzp_live_…`, `rzp_test_…`), with TILL_RAZORPAYX_BASE_URL.
    #[arg(long, env = "TILL_RAZORPAYX_KEY_ID")]
    pub razorpayx_key_id: Option<String>,
    /// RazorpayX's key secret, with TILL_RAZORPAYX_BASE_URL.
    #[arg(long, env = "TILL_RAZORPAYX_KEY_SECRET", hide_env_values = true)]
    pub razorpayx_key_secret: Option<String>,
    /// The platform's RazorpayX business account number that payouts leave from, with
    /// TILL_RAZORPAYX_BASE_URL.
    #[arg(long, env = "TILL_RAZORPAYX_ACCOUNT_NUMBER")]
    pub razorpayx_account_number: Option<String>,
    /// The secret of RazorpayX's webhook for Till (set in its dashboard), with
    /// TILL_RAZORPAYX_BASE_URL; without it RazorpayX's webhooks are refused (400).
    #[arg(long, env = "TILL_RAZORPAYX_WEBHOOK_SECRET", hide_env_values = true)]
    pub razorpayx_webhook_secret: Option<String>,
    /// When the payout saga asks the rail again about a payout it holds, in milliseconds
    /// after each look, comma-separated; the last repeats (default: 3, 10, 30 minutes, 2
    /// and 4 hours, a provider's guidance; with the simulator, half a second to 5 s).
    #[arg(long, env = "TILL_PAYOUTS_POLL_MS", value_delimiter = ',')]
    pub payouts_poll_ms: Option<Vec<u64>>,
    /// How long a payout's saga step holds it before another worker may take it over (a
    /// process that died mid-step leaves it this long).
    #[arg(long, env = "TILL_PAYOUTS_LEASE_SECONDS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    pub payouts_lease_seconds: u64,
    /// How long a checkout's saga step holds its order (or a refund) before another
    /// worker may take it over (a process that died mid-step leaves it this long).
    #[arg(long, env = "TILL_CHECKOUT_LEASE_SECONDS", default_value_t = 120, value_parser = clap::value_parser!(i32).range(1..=3600))]
    pub checkout_lease_seconds: i32,
    /// How long the sender holds a notification it is sending before another may take it
    /// over (a process that died mid-send leaves it this long; it is then sent again,
    /// counted `in_doubt`). Longer than a send can take.
    #[arg(long, env = "TILL_NOTIFY_LEASE_SECONDS", default_value_t = 60, value_parser = clap::value_parser!(i32).range(1..=3600))]
    pub notify_lease_seconds: i32,
    /// Twilio's API for SMS notifications (`https://api.twilio.com/`); set, the
    /// simulator does not stand in for it.
    #[arg(long, env = "TILL_TWILIO_BASE_URL")]
    pub twilio_base_url: Option<String>,
    /// The Twilio account (`AC…`), with TILL_TWILIO_BASE_URL.
    #[arg(long, env = "TILL_TWILIO_ACCOUNT_SID")]
    pub twilio_account_sid: Option<String>,
    /// Its auth token (it also signs Twilio's status callbacks).
    #[arg(long, env = "TILL_TWILIO_AUTH_TOKEN", hide_env_values = true)]
    pub twilio_auth_token: Option<String>,
    /// The sender: an E.164 number of the account, or a Messaging Service SID (`MG…`).
    #[arg(long, env = "TILL_TWILIO_FROM")]
    pub twilio_from: Option<String>,
    /// This Till as Twilio reaches it, for its status callbacks
    /// (`<url>/v1/providers/sms/status`). Default: the API's own address.
    #[arg(long, env = "TILL_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// The Salesforce org Till is mirrored into: its My Domain URL
    /// (`https://acme.my.salesforce.com/`); set, the simulator does not stand in for it.
    #[arg(long, env = "TILL_SALESFORCE_INSTANCE_URL")]
    pub salesforce_instance_url: Option<String>,
    /// The connected app's consumer key, with TILL_SALESFORCE_INSTANCE_URL.
    #[arg(long, env = "TILL_SALESFORCE_CLIENT_ID")]
    pub salesforce_client_id: Option<String>,
    /// The connected app's consumer secret (client-credentials flow).
    #[arg(long, env = "TILL_SALESFORCE_CLIENT_SECRET", hide_env_values = true)]
    pub salesforce_client_secret: Option<String>,
    /// The SMTP server e-mail notifications go through: `smtp://host:port` (plain, a
    /// relay on loopback), `smtp://host:587?tls=required` (STARTTLS), `smtps://host:465`;
    /// `user:password@` before the host if it needs them. Unset: the simulator's mailbox
    /// (`GET /_sim/mailbox`) when the simulator runs, otherwise e-mail stays queued.
    #[arg(long, env = "TILL_SMTP_URL", hide_env_values = true)]
    pub smtp_url: Option<String>,
    /// The address e-mail is sent from (each business's name is shown beside it).
    #[arg(long, env = "TILL_SMTP_FROM", default_value = "notifications@till.example")]
    pub smtp_from: String,
    /// The platform admin token (at least 32 characters). Default: generated on the first
    /// start and kept in `<data-dir>/admin-token`.
    #[arg(long, env = "TILL_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// The keys that seal secrets at rest: `id:key[,id:key…]`, each key 32 random bytes
    /// in unpadded base64url; the first seals, all open (rotation: put the new key first).
    /// Default: generated on the first start and kept in `<data-dir>/encryption-keys`.
    #[arg(long, env = "TILL_ENCRYPTION_KEYS", hide_env_values = true)]
    pub encryption_keys: Option<String>,
    /// How long a request that calls an outside party holds its Idempotency-Key between
    /// its phases; a request whose process died is resumed once this has run out.
    #[arg(long, env = "TILL_RECOVERY_LEASE_SECONDS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    pub recovery_lease_seconds: u64,
    /// How long after a lease ran out (or a request answered undecided) the recovery job
    /// resumes a request nobody retried.
    #[arg(long, env = "TILL_RECOVERY_GRACE_SECONDS", default_value_t = 30)]
    pub recovery_grace_seconds: u64,
    /// Requests per second per API key (token bucket refill rate).
    #[arg(long, env = "TILL_RATE_LIMIT_PER_SECOND", default_value_t = 100)]
    pub rate_limit_per_second: u32,
    /// Burst size per API key (token bucket capacity).
    #[arg(long, env = "TILL_RATE_LIMIT_BURST", default_value_t = 200)]
    pub rate_limit_burst: u32,
    /// Failed authentications from one address in a minute before it is refused with 429
    /// (raise it only for a test run that fuzzes authentication from one address).
    #[arg(long, env = "TILL_AUTH_FAILURES_PER_MINUTE", default_value_t = till_access::authn::FAILURE_THROTTLE_THRESHOLD)]
    pub auth_failures_per_minute: u32,
    /// Largest accepted request body.
    #[arg(long, env = "TILL_BODY_BYTES_MAX", default_value_t = 1024 * 1024)]
    pub body_bytes_max: usize,
    /// Seconds a connection may take to send a request's line and headers, and may stay
    /// idle between requests.
    #[arg(long, env = "TILL_HTTP_HEADER_TIMEOUT_SECONDS", default_value_t = 10)]
    pub http_header_timeout_seconds: u64,
    /// Seconds a request's body may take to arrive.
    #[arg(long, env = "TILL_HTTP_BODY_TIMEOUT_SECONDS", default_value_t = 30)]
    pub http_body_timeout_seconds: u64,
    /// Connections served at once; more wait to be accepted.
    #[arg(long, env = "TILL_HTTP_CONNECTIONS_MAX", default_value_t = 1024)]
    pub http_connections_max: usize,
    /// How long idempotency keys are kept (at least 24).
    #[arg(long, env = "TILL_IDEMPOTENCY_RETENTION_HOURS", default_value_t = 24)]
    pub idempotency_retention_hours: u32,
    /// Trusted JWT keys for dashboard users: a JSON array of
    /// {"kid", "alg" (EdDSA|ES256|RS256|HS256), "public_key_pem" | "secret"}.
    #[arg(long, env = "TILL_JWT_KEYS", hide_env_values = true)]
    pub jwt_keys: Option<String>,
    /// Required `iss` of dashboard JWTs.
    #[arg(long, env = "TILL_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,
    /// Required `aud` of dashboard JWTs.
    #[arg(long, env = "TILL_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,
    /// Clock leeway for `exp` and `nbf`, at most 60 seconds.
    #[arg(long, env = "TILL_JWT_LEEWAY_SECONDS", default_value_t = 30)]
    pub jwt_leeway_seconds: u64,
    /// The longest a dashboard JWT may live (`exp - iat`), 60 to 86400 seconds.
    #[arg(long, env = "TILL_JWT_MAX_LIFETIME_SECONDS", default_value_t = till_access::jwt::LIFETIME_SECONDS_DEFAULT)]
    pub jwt_lifetime_seconds_max: u64,
    /// Let webhooks go to http and to loopback/private addresses: local development only.
    #[arg(long, env = "TILL_WEBHOOKS_ALLOW_PRIVATE_TARGETS", default_value_t = false)]
    pub webhooks_allow_private_targets: bool,
    #[command(flatten)]
    pub broker: BrokerArgs,
    /// Database connections for request handling; the ledger's writers have a pool of
    /// their own of the same size, opened only as they need it.
    #[arg(long, env = "TILL_DB_CONNECTIONS_MAX", default_value_t = 20)]
    pub db_connections_max: u32,
}

#[derive(Debug, Args)]
pub struct CreateBusinessArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// The legal name.
    #[arg(long)]
    pub name: String,
    /// GB or IN.
    #[arg(long)]
    pub country: String,
    /// Default currency (default: GBP for GB, INR for IN).
    #[arg(long)]
    pub currency: Option<String>,
    /// A UK VAT number (GB) or GSTIN (IN).
    #[arg(long)]
    pub tax_registration: Option<String>,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}
