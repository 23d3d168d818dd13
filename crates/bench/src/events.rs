#![allow(clippy::float_arithmetic)] // Rates and latencies: measurements, never money.
//! `till-bench events`: the events backbone under the ledger benchmark's load.
//!
//! On a throwaway durable cluster, with Till as its own process:
//! 1. Embedded bus: uniform single transfers over HTTP (as in `bench ledger`) for the
//!    phase, while a consumer in this process reads the bus; each event's latency is
//!    the time from its `occurred_at` (the ledger batch's clock, taken before the commit,
//!    so the figure includes the commit) to the consumer's handling. The outboxes'
//!    backlog and the consumer's lag are sampled every 100 ms.
//! 2. The relay alone: a backlog of synthetic events in `ledger.outbox`, moved to the log
//!    with nothing else running: events/s, against the rate the ledger produced in (1).
//! 3. RabbitMQ (a private node, or `--broker-url`): the publisher alone over the whole
//!    log, confirms included, into a bound quorum queue: events/s; then (1) again with
//!    Till publishing to RabbitMQ and the consumer on a quorum queue.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sqlx::{PgConnection, PgPool};
use till_db::embedded::Cluster;
use till_events::broker::{self, node::BrokerNode, BrokerConfig};
use till_events::bus::{subscribe, Bus, Handler, Subscription};
use till_events::consumer::Effect;
use till_kit::Secret;
use till_outbox::envelope::EventBody;
use time::OffsetDateTime;
use tokio::sync::watch;

use crate::ledger::{
    create_accounts, drive, drive_wrk, find_wrk, throwaway_cluster, uuid_simple, Load, Pattern, Server, Tenant,
};
use crate::{BenchEventsArgs, BenchLedgerArgs};

pub async fn events(args: BenchEventsArgs) -> anyhow::Result<()> {
    let (cluster, data_dir) = throwaway_cluster("events", Vec::new()).await?;
    let outcome = run(&args, &cluster, &data_dir).await;
    cluster.stop().await?;
    outcome
}

async fn run(args: &BenchEventsArgs, cluster: &Cluster, data_dir: &std::path::Path) -> anyhow::Result<()> {
    println!("till bench events: {} clients, {} s per phase, {} accounts", args.clients, args.seconds, args.accounts);
    let password = std::fs::read_to_string(data_dir.join("postgres.password"))?.trim().to_string();
    cluster.ensure_database("till").await?;
    let url = format!("postgres://{}:{password}@127.0.0.1:{}/till", till_db::embedded::SUPERUSER, cluster.port());
    let server_dir = data_dir.join("server");
    let ledger_args = BenchLedgerArgs {
        target: args.target.clone(),
        clients: args.clients,
        seconds: args.seconds,
        accounts: args.accounts,
        pgbench_scale: 1,
    };
    let client = reqwest::Client::builder().pool_max_idle_per_host(args.clients * 2).build()?;

    // 1. The embedded bus under load.
    let server = Server::start(&args.target, &url, &server_dir, &[]).await?;
    let pool = till_db::connect_app_pool(cluster.connect_options("till"), 8).await?;
    let owner_pool = till_db::connect_owner_pool(cluster.connect_options("till"), 2).await?;
    let accounts = create_accounts(&client, &server.base, &server.api_key, ledger_args.accounts).await?;
    let tenants = Arc::new(vec![Tenant { key: server.api_key.clone(), accounts }]);
    let pools = Pools { app: pool.clone(), owner: owner_pool.clone() };
    let embedded =
        under_load(args, &ledger_args, &client, &server, &pools, &tenants, Bus::Embedded, "bench-embedded").await;
    server.stop().await;
    let embedded = embedded?;
    embedded.print("1. embedded bus", args.seconds);
    println!("   (goal: p99 commit-to-consume <= 100 ms; the relay keeps up, its backlog bounded)");

    // 2. The relay alone.
    let relay_rate = relay_alone(&pool, &owner_pool, args.relay_events).await?;
    println!(
        "2. the relay alone: {relay_rate:.0} events/s outbox -> log ({} events); {:.1}x the ledger's event rate in (1) (goal >= 1x)",
        args.relay_events,
        relay_rate / embedded.events_per_second(args.seconds)
    );

    // 3. RabbitMQ.
    let mut node = None;
    let broker_url = match &args.broker_url {
        Some(url) => url.clone(),
        None => match BrokerNode::start().await {
            Ok(started) => {
                let url = started.url();
                node = Some(started);
                url
            }
            Err(error) => {
                println!("3. RabbitMQ: skipped, no broker ({error:#}); pass --broker-url or install rabbitmq-server");
                return Ok(());
            }
        },
    };
    let mut config = BrokerConfig::new(Secret::new(broker_url.clone()));
    config.exchange = format!("till.bench.{}", uuid_simple());
    let (published, publish_rate) = publisher_alone(&pool, &config).await?;
    println!(
        "3. the RabbitMQ publisher alone: {publish_rate:.0} events/s log -> broker, confirmed, into a quorum queue ({published} events); {:.1}x the ledger's event rate in (1)",
        publish_rate / embedded.events_per_second(args.seconds)
    );
    let env = [("TILL_BROKER_URL", broker_url), ("TILL_BROKER_EXCHANGE", config.exchange.clone())];
    let server = Server::start(&args.target, &url, &server_dir, &env).await?;
    let rabbit =
        under_load(args, &ledger_args, &client, &server, &pools, &tenants, Bus::RabbitMq(config), "bench-rabbitmq")
            .await;
    server.stop().await;
    drop(node);
    rabbit?.print("   RabbitMQ bus", args.seconds);
    pool.close().await;
    owner_pool.close().await;
    Ok(())
}

/// The consumer works as `till_app`, like Till's own; the measurements read the whole log
/// as the owner (row-level security would show `till_app` no business's events).
struct Pools {
    app: PgPool,
    owner: PgPool,
}

struct UnderLoad {
    load: Load,
    events: usize,
    latencies_us: Vec<i64>,
    backlog_max: i64,
    lag_max: i64,
    drained_after: Duration,
}

impl UnderLoad {
    fn events_per_second(&self, seconds: u64) -> f64 {
        self.events as f64 / seconds.max(1) as f64
    }

    fn print(&self, name: &str, seconds: u64) {
        let mut sorted = self.latencies_us.clone();
        sorted.sort_unstable();
        let at = |quantile: f64| {
            if sorted.is_empty() {
                return f64::NAN;
            }
            sorted[((sorted.len() as f64 - 1.0) * quantile).round() as usize] as f64 / 1000.0
        };
        println!(
            "{name}: ledger load {:.0} transfers/s (5xx/errors {}) producing {:.0} events/s; commit-to-consume p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms over {} events; outbox backlog at most {} events, log reader's lag at most {} events; caught up {:.1} s after the load stopped",
            self.load.per_second(),
            self.load.failed,
            self.events_per_second(seconds),
            at(0.50),
            at(0.99),
            at(1.0),
            sorted.len(),
            self.backlog_max,
            self.lag_max,
            self.drained_after.as_secs_f64()
        );
    }
}

/// Records each event's age when the consumer handles it.
struct Latency {
    samples: Arc<Mutex<Vec<i64>>>,
}

impl Handler for Latency {
    fn handle<'c>(&'c self, _connection: &'c mut PgConnection, event: &'c EventBody) -> Effect<'c> {
        let age = (OffsetDateTime::now_utc() - event.occurred_at).whole_microseconds();
        if let Ok(mut samples) = self.samples.lock() {
            samples.push(i64::try_from(age).unwrap_or(i64::MAX));
        }
        Box::pin(async { Ok(()) })
    }
}

#[allow(clippy::too_many_arguments)]
async fn under_load(
    args: &BenchEventsArgs,
    ledger_args: &BenchLedgerArgs,
    client: &reqwest::Client,
    server: &Server,
    pools: &Pools,
    tenants: &Arc<Vec<Tenant>>,
    bus: Bus,
    name: &str,
) -> anyhow::Result<UnderLoad> {
    let (pool, owner) = (&pools.app, &pools.owner);
    // Wait for the set-up's events to reach the log, then start the consumer at its end:
    // only events of the measured load count.
    wait_for_empty_outboxes(pool, Duration::from_secs(60)).await?;
    let start: i64 = sqlx::query_scalar("SELECT coalesce(max(position), 0) FROM events.log").fetch_one(owner).await?;
    till_events::consumer::advance(pool, name, start).await?;
    if let Bus::RabbitMq(config) = &bus {
        // Bind the queue before the load: it receives what is published after this.
        let connection = broker::connect(config, "bench-declare").await?;
        let channel = connection.create_channel().await?;
        broker::declare_consumer(&channel, config, name, &["#".to_string()]).await?;
        connection.close(200, "declared".into()).await?;
        wait_for_publisher(pool, Duration::from_secs(60)).await?;
    }
    let samples = Arc::new(Mutex::new(Vec::new()));
    let (stop, stopped) = watch::channel(false);
    let subscription = Subscription::new(name, &["#"]).map_err(anyhow::Error::msg)?;
    let bus_for_consumer = bus.clone();
    let consumer = tokio::spawn(subscribe(
        pool.clone(),
        bus_for_consumer,
        subscription,
        Arc::new(Latency { samples: samples.clone() }),
        stopped,
    ));
    let sampling = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let sampler = {
        // How far behind the log its reader is: the consumer itself on the embedded bus,
        // the publisher on RabbitMQ (the queue is the broker's to report).
        let reader = match &bus {
            Bus::Embedded => name.to_string(),
            Bus::RabbitMq(_) => broker::publisher::CURSOR.to_string(),
        };
        let (pool, sampling, name) = (owner.clone(), sampling.clone(), reader);
        tokio::spawn(async move {
            let (mut backlog_max, mut lag_max) = (0_i64, 0_i64);
            while sampling.load(std::sync::atomic::Ordering::SeqCst) {
                if let Ok(backlog) = outbox_backlog(&pool).await {
                    backlog_max = backlog_max.max(backlog);
                }
                let lag: Result<i64, _> = sqlx::query_scalar(
                    "SELECT coalesce(max(l.position), 0) - events.consumer_position($1) FROM events.log l",
                )
                .bind(&name)
                .fetch_one(&pool)
                .await;
                if let Ok(lag) = lag {
                    lag_max = lag_max.max(lag);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            (backlog_max, lag_max)
        })
    };
    let duration = Duration::from_secs(args.seconds);
    let load = match find_wrk() {
        Some(wrk) => {
            drive_wrk(&wrk, &server.base, ledger_args.clients, duration, tenants, Pattern::Uniform, None).await?
        }
        None => {
            drive(client, &server.base, ledger_args.clients, duration, tenants.clone(), Pattern::Uniform, None).await
        }
    };
    let load_ended = Instant::now();
    wait_for_empty_outboxes(pool, Duration::from_secs(120)).await?;
    let end: i64 = sqlx::query_scalar("SELECT coalesce(max(position), 0) FROM events.log").fetch_one(owner).await?;
    let events = usize::try_from(end - start).unwrap_or(0);
    let deadline = Instant::now() + Duration::from_secs(120);
    while samples.lock().map(|samples| samples.len()).unwrap_or(0) < events {
        if Instant::now() > deadline {
            anyhow::bail!("the consumer handled {} of {events} events", samples.lock().map(|s| s.len()).unwrap_or(0));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let drained_after = load_ended.elapsed();
    let _ = stop.send(true);
    consumer.await?;
    sampling.store(false, std::sync::atomic::Ordering::SeqCst);
    let (backlog_max, lag_max) = sampler.await?;
    let latencies_us = std::mem::take(&mut *samples.lock().map_err(|_| anyhow::anyhow!("poisoned"))?);
    Ok(UnderLoad { load, events, latencies_us, backlog_max, lag_max, drained_after })
}

async fn outbox_backlog(pool: &PgPool) -> Result<i64, sqlx::Error> {
    let mut waiting = 0;
    for outbox in till_events::relay::outboxes(pool).await? {
        waiting += till_events::relay::backlog(pool, &outbox).await?.0;
    }
    Ok(waiting)
}

async fn wait_for_empty_outboxes(pool: &PgPool, within: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    while outbox_backlog(pool).await? > 0 {
        anyhow::ensure!(Instant::now() < deadline, "the relay did not drain the outboxes in {within:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

async fn wait_for_publisher(pool: &PgPool, within: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    loop {
        let behind: Option<i64> = sqlx::query_scalar("SELECT behind FROM events.consumer_lag() WHERE consumer = $1")
            .bind(broker::publisher::CURSOR)
            .fetch_optional(pool)
            .await?;
        if behind == Some(0) {
            return Ok(());
        }
        anyhow::ensure!(Instant::now() < deadline, "the publisher did not catch up in {within:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Fills `ledger.outbox` with `count` synthetic events (as the owner, nothing else
/// running), then times the relay moving them all to the log.
async fn relay_alone(pool: &PgPool, owner_pool: &PgPool, count: u32) -> anyhow::Result<f64> {
    sqlx::query(
        "INSERT INTO ledger.outbox (id, type, version, business_id, resource_id, sequence, occurred_at, request_id, data)
         SELECT gen_random_uuid(), 'transfer.created', 1, gen_random_uuid(), 'tr_bench_' || g || '_' || $2, 1, now(),
                NULL, jsonb_build_object('amount', g, 'currency', 'GBP', 'status', 'posted')
           FROM generate_series(1, $1) g",
    )
    .bind(i64::from(count))
    .bind(uuid_simple())
    .execute(owner_pool)
    .await?;
    let started = Instant::now();
    let moved = till_events::relay::drain(pool, "ledger.outbox").await?;
    let elapsed = started.elapsed();
    anyhow::ensure!(moved == u64::from(count), "the relay moved {moved} of {count}");
    Ok(f64::from(count) / elapsed.as_secs_f64())
}

/// Times the publisher over everything in the log, into one bound quorum queue.
async fn publisher_alone(pool: &PgPool, config: &BrokerConfig) -> anyhow::Result<(u64, f64)> {
    let connection = broker::connect(config, "bench-publisher").await?;
    let channel = connection.create_channel().await?;
    broker::declare_consumer(&channel, config, "bench-sink", &["#".to_string()]).await?;
    let confirm = broker::confirm_channel(&connection).await?;
    let started = Instant::now();
    let published = broker::publisher::publish_all(pool, &confirm, config).await?;
    let elapsed = started.elapsed();
    // The sink has served its purpose; do not leave its messages on the broker.
    channel
        .queue_delete(
            broker::queue_name("bench-sink").as_str().into(),
            broker::lapin::options::QueueDeleteOptions::default(),
        )
        .await?;
    connection.close(200, "measured".into()).await?;
    Ok((published, published as f64 / elapsed.as_secs_f64()))
}
