#![allow(clippy::float_arithmetic)] // Rates, ratios and latencies: measurements, never money.
//! `till-bench payments`: payment intents through the simulator, against single ledger
//! transfers of the same run.
//!
//! The simulator runs as a process of its own (`till sim`), so that its CPU is counted
//! apart from Till's; `till up` is pointed at it as at Stripe (base URL, key, webhook
//! secret) and the simulator sends its webhooks back to it, as Stripe would. Phases:
//! 1. single ledger transfers (the ratio's baseline);
//! 2. payments: create + confirm (automatic capture) in one request, each one request
//!    and two gateway calls (create, confirm) more than a transfer, plus the fee's two
//!    reads and the webhooks;
//! 3. payments paced at half of (2)'s rate: the latency a merchant sees off peak;
//! 4. the server's peak RSS;
//! 5. the outbound kit's own cost on a gateway call, in this process: the Stripe
//!    adapter's `retrieve` (breaker, retry wrapper, deadline, validation) against the
//!    same request made with reqwest alone, sequentially, against an in-process simulator.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::{json, Value};
use till_kit::{Currency, Money, Secret};
use till_payments::gateway::Gateway as _;

use crate::ledger::{create_accounts, drive, throwaway_cluster, Pattern, Pids, Server, Tenant};
use crate::BenchPaymentsArgs;

const PHASE_SETTLE: Duration = Duration::from_secs(2);
const WEBHOOK_SECRET: &str = "whsec_till_bench";

pub async fn payments(args: BenchPaymentsArgs) -> anyhow::Result<()> {
    let (cluster, data_dir) = throwaway_cluster("payments", Vec::new()).await?;
    let outcome = run(&args, &cluster, &data_dir).await;
    cluster.stop().await?;
    outcome
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The `till` database on the benchmark's cluster, created if need be.
pub(crate) async fn database_url(
    cluster: &till_db::embedded::Cluster,
    data_dir: &std::path::Path,
) -> anyhow::Result<String> {
    let password = std::fs::read_to_string(data_dir.join("postgres.password"))?.trim().to_string();
    cluster.ensure_database("till").await?;
    Ok(format!("postgres://{}:{password}@127.0.0.1:{}/till", till_db::embedded::SUPERUSER, cluster.port()))
}

/// `till sim` as a process of its own (so its CPU is counted apart), once it listens:
/// the process and its base URL.
pub(crate) async fn start_sim(target: &crate::Target) -> anyhow::Result<(tokio::process::Child, String)> {
    let sim_port = free_port()?;
    let sim = tokio::process::Command::new(target.binary()?)
        .args(["sim", "--port", &sim_port.to_string()])
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("starting till sim")?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while tokio::net::TcpStream::connect(("127.0.0.1", sim_port)).await.is_err() {
        anyhow::ensure!(Instant::now() < deadline, "till sim did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok((sim, format!("http://127.0.0.1:{sim_port}")))
}

async fn run(
    args: &BenchPaymentsArgs,
    cluster: &till_db::embedded::Cluster,
    data_dir: &std::path::Path,
) -> anyhow::Result<()> {
    println!("till bench payments: {} clients, {} s per phase", args.clients, args.seconds);
    let url = database_url(cluster, data_dir).await?;
    let (mut sim, sim_base) = start_sim(&args.target).await?;
    let env = [
        ("TILL_STRIPE_BASE_URL", format!("{sim_base}/stripe/")),
        ("TILL_STRIPE_SECRET_KEY", String::from("sk_test_till_bench")),
        ("TILL_STRIPE_WEBHOOK_SECRET", String::from(WEBHOOK_SECRET)),
    ];
    let server = Server::start(&args.target, &url, &data_dir.join("server"), &env).await?;
    let client = reqwest::Client::builder().pool_max_idle_per_host(args.clients * 2).build()?;
    let target = json!({"provider": "stripe", "url": format!("{}/v1/providers/stripe/webhooks", server.base), "secret": WEBHOOK_SECRET});
    let set = client.post(format!("{sim_base}/_sim/webhooks")).json(&target).send().await?;
    anyhow::ensure!(set.status().as_u16() == 201, "the simulator refused the webhook target");

    let postmaster = std::fs::read_to_string(cluster.cluster_dir().join("postmaster.pid"))
        .ok()
        .and_then(|text| text.lines().next().and_then(|line| line.trim().parse().ok()));
    let pids = Pids { server: server.child.id(), postmaster, sim: sim.id() };
    let outcome = phases(args, &client, &server, &pids, &sim_base).await;
    server.stop().await;
    let _ = sim.kill().await;
    outcome
}

async fn phases(
    args: &BenchPaymentsArgs,
    client: &reqwest::Client,
    server: &Server,
    pids: &Pids,
    sim_base: &str,
) -> anyhow::Result<()> {
    let accounts = create_accounts(client, &server.base, &server.api_key, args.accounts).await?;
    let tenants = Arc::new(vec![Tenant { key: server.api_key.clone(), accounts }]);
    let duration = Duration::from_secs(args.seconds);

    tokio::time::sleep(PHASE_SETTLE).await;
    let before = pids.cpu();
    let transfers = drive(client, &server.base, args.clients, duration, tenants.clone(), Pattern::Uniform, None).await;
    let after = pids.cpu();
    let transfer_rate = transfers.per_second();
    println!(
        "1. single transfers over HTTP: {transfer_rate:.0} transfers/s, p50 {:.2} ms, p99 {:.2} ms; refused {}, 5xx/errors {}",
        transfers.percentile_ms(0.50),
        transfers.percentile_ms(0.99),
        transfers.refused,
        transfers.failed
    );
    println!("   {}", before.per(&after, transfers.transfers, "transfer"));

    tokio::time::sleep(PHASE_SETTLE).await;
    let before = pids.cpu();
    let paid = drive(client, &server.base, args.clients, duration, tenants.clone(), Pattern::Payment, None).await;
    let after = pids.cpu();
    let payment_rate = paid.per_second();
    println!(
        "2. payments (create + confirm, automatic capture, through the simulator): {payment_rate:.0} payments/s, p50 {:.2} ms, p99 {:.2} ms; refused {}, 5xx/errors {}",
        paid.percentile_ms(0.50),
        paid.percentile_ms(0.99),
        paid.refused,
        paid.failed
    );
    println!("   so (2) is {:.2}x (1)'s rate (goal >= 0.33x)", payment_rate / transfer_rate.max(1.0));
    println!("   {}", before.per(&after, paid.transfers, "payment"));

    // The same load spread over businesses, as Till's are many and small: one business's
    // payments share its receivable and pending accounts, whose row locks each payment's
    // last phase holds to its commit.
    let spread = Arc::new(
        crate::ledger::businesses(client, &server.base, &server.admin_token, args.businesses, args.businesses * 2)
            .await?,
    );
    tokio::time::sleep(PHASE_SETTLE).await;
    let before = pids.cpu();
    let spread_paid = drive(client, &server.base, args.clients, duration, spread.clone(), Pattern::Payment, None).await;
    let after = pids.cpu();
    let spread_rate = spread_paid.per_second();
    println!(
        "   spread over {} businesses: {spread_rate:.0} payments/s, p50 {:.2} ms, p99 {:.2} ms, {:.2}x (1)'s rate; refused {}, 5xx/errors {}",
        args.businesses,
        spread_paid.percentile_ms(0.50),
        spread_paid.percentile_ms(0.99),
        spread_rate / transfer_rate.max(1.0),
        spread_paid.refused,
        spread_paid.failed
    );
    println!("   {}", before.per(&after, spread_paid.transfers, "payment spread"));

    tokio::time::sleep(PHASE_SETTLE).await;
    let peak = payment_rate.max(spread_rate);
    let (paced_tenants, over) = if spread_rate > payment_rate { (spread, "spread") } else { (tenants, "one business") };
    let half = (peak / 2.0).max(1.0);
    let paced = drive(client, &server.base, args.clients, duration, paced_tenants, Pattern::Payment, Some(half)).await;
    println!(
        "3. payments at half of (2)'s best rate ({half:.0}/s aimed, {over}): {:.0} payments/s, p50 {:.2} ms, p99 {:.2} ms (goal p99 <= 50 ms); refused {}, 5xx/errors {}",
        paced.per_second(),
        paced.percentile_ms(0.50),
        paced.percentile_ms(0.99),
        paced.refused,
        paced.failed
    );
    if let Some(pid) = pids.server {
        println!("4. server peak RSS: {:.1} MB (goal <= 200 MB)", crate::ledger::peak_rss_mb(pid));
    }
    // The intents, as Till recorded them: every payment answered 201 is captured.
    let page: Value = client
        .get(format!("{}/v1/payment_intents?status=requires_review&limit=1", server.base))
        .bearer_auth(&server.api_key)
        .send()
        .await?
        .json()
        .await?;
    let reviewed = page["data"].as_array().map_or(0, Vec::len);
    println!("   (intents in review after the load: {reviewed})");
    outbound_overhead(sim_base, args.calls).await
}

/// (5): the kit's cost per call, as the difference between the adapter's `retrieve` and
/// the same GET with reqwest alone, each timed over `calls` sequential calls, alternating
/// rounds so that drift in the machine touches both alike.
async fn outbound_overhead(sim_base: &str, calls: u32) -> anyhow::Result<()> {
    let base = till_outbound::Url::parse(&format!("{sim_base}/stripe/"))?;
    let key = "sk_test_till_bench";
    let stripe = till_payments::gateway::stripe::Stripe::new(base.clone(), Secret::new(key.to_string()))?;
    let amount = Money::from_minor(1000, Currency::parse("GBP")?);
    let new = till_payments::gateway::NewIntent {
        amount,
        capture_method: till_payments::gateway::CaptureMethod::Manual,
        reference: String::from("bench"),
        description: None,
    };
    let created = match stripe.create(&new, &format!("bench-{}", crate::ledger::uuid_simple())).await? {
        till_payments::gateway::Answer::Done(intent) => intent,
        other => anyhow::bail!("the simulator did not create the intent: {other:?}"),
    };
    let raw = reqwest::Client::new();
    let raw_url = base.join(&format!("v1/payment_intents/{}", created.id))?;
    let (mut kit, mut plain) = (Duration::ZERO, Duration::ZERO);
    let rounds = 10;
    for _ in 0..rounds {
        let started = Instant::now();
        for _ in 0..calls / rounds {
            let response = raw.get(raw_url.clone()).bearer_auth(key).send().await?;
            let body = response.bytes().await?;
            let _: Value = serde_json::from_slice(&body)?;
        }
        plain += started.elapsed();
        let started = Instant::now();
        for _ in 0..calls / rounds {
            match stripe.retrieve(&created.id, amount).await? {
                till_payments::gateway::Answer::Done(_) => {}
                other => anyhow::bail!("a retrieve answered {other:?}"),
            }
        }
        kit += started.elapsed();
    }
    let per = |total: Duration| total.as_secs_f64() * 1e6 / f64::from(calls - calls % rounds);
    let (kit, plain) = (per(kit), per(plain));
    println!(
        "5. the outbound kit on a gateway call (in process, {calls} sequential retrieves): {kit:.1} us with the kit and validation, {plain:.1} us with reqwest alone: {:+.1}% (goal <= 5%)",
        (kit - plain) / plain * 100.0
    );
    Ok(())
}
