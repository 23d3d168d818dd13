#![allow(clippy::float_arithmetic)] // Rates, ratios and latencies: measurements, never money.
//! `till-bench payouts`: payouts through the simulator's Faster Payments rail to `paid`,
//! against single ledger transfers of the same run.
//!
//! The simulator runs as a process of its own (`till sim`); `till up` is pointed at it
//! as at Stripe (to fund the balance: one large payment, paid out and reconciled) and
//! as at the Faster Payments provider, with the saga asking the rail again 200 ms after
//! each look (the simulator decides a payment 200 ms after it accepts it). Phases:
//! 1. single ledger transfers (the ratio's baseline);
//! 2. payouts of 1p to one beneficiary at full rate: creations per second and the
//!    create's p50/p99; then the wait until the saga has paid every one, and the rate
//!    from the first creation to the last payment, with create-to-paid p50/p99 (server
//!    clocks: `created_at` to `paid_at`);
//! 3. payouts paced at half of (2)'s creation rate: the create's p99 off peak;
//! 4. the load of (2) spread over `--businesses` new businesses, each funded and paying
//!    its own beneficiary: one business's payouts queue on its available balance's row
//!    lock (every hold and every posting of it takes that lock), many businesses' do not;
//! 5. the server's peak RSS.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::{json, Value};
use time::OffsetDateTime;

use crate::ledger::{create_accounts, drive, throwaway_cluster, Pattern, Pids, Server, Tenant};
use crate::BenchPayoutsArgs;

const PHASE_SETTLE: Duration = Duration::from_secs(2);

pub async fn payouts(args: BenchPayoutsArgs) -> anyhow::Result<()> {
    let settings = if args.profile {
        vec![String::from("shared_preload_libraries=pg_stat_statements"), String::from("pg_stat_statements.track=all")]
    } else {
        Vec::new()
    };
    let (cluster, data_dir) = throwaway_cluster("payouts", settings).await?;
    let outcome = run(&args, &cluster, &data_dir).await;
    cluster.stop().await?;
    outcome
}

async fn run(
    args: &BenchPayoutsArgs,
    cluster: &till_db::embedded::Cluster,
    data_dir: &std::path::Path,
) -> anyhow::Result<()> {
    println!("till bench payouts: {} clients, {} s per phase", args.clients, args.seconds);
    let url = crate::payments::database_url(cluster, data_dir).await?;
    let profile = if args.profile { Some(Profile::start(&url).await?) } else { None };
    let (mut sim, sim_base) = crate::payments::start_sim(&args.target).await?;
    let env = [
        ("TILL_STRIPE_BASE_URL", format!("{sim_base}/stripe/")),
        ("TILL_STRIPE_SECRET_KEY", String::from("sk_test_till_bench")),
        ("TILL_FPS_BASE_URL", format!("{sim_base}/fps/")),
        ("TILL_FPS_API_KEY", String::from("fps_test_till_bench")),
        ("TILL_FPS_SOURCE_ACCOUNT", String::from("A000BENCH")),
        ("TILL_PAYOUTS_POLL_MS", String::from("200")),
    ];
    let server = Server::start(&args.target, &url, &data_dir.join("server"), &env).await?;
    let client = reqwest::Client::builder().pool_max_idle_per_host(args.clients * 2).build()?;
    let postmaster = std::fs::read_to_string(cluster.cluster_dir().join("postmaster.pid"))
        .ok()
        .and_then(|text| text.lines().next().and_then(|line| line.trim().parse().ok()));
    let pids = Pids { server: server.child.id(), postmaster, sim: sim.id() };
    let outcome = phases(args, &client, &server, &pids, &sim_base, profile.as_ref()).await;
    server.stop().await;
    let _ = sim.kill().await;
    outcome
}

async fn get(client: &reqwest::Client, server: &Server, path: &str) -> anyhow::Result<Value> {
    get_as(client, server, &server.api_key, path).await
}

async fn get_as(client: &reqwest::Client, server: &Server, key: &str, path: &str) -> anyhow::Result<Value> {
    let response = client.get(format!("{}{path}", server.base)).bearer_auth(key).send().await?;
    anyhow::ensure!(response.status().is_success(), "GET {path}: {}", response.status());
    Ok(response.json().await?)
}

async fn post(client: &reqwest::Client, server: &Server, path: &str, body: Value) -> anyhow::Result<Value> {
    post_as(client, server, &server.api_key, path, body).await
}

async fn post_as(
    client: &reqwest::Client,
    server: &Server,
    key: &str,
    path: &str,
    body: Value,
) -> anyhow::Result<Value> {
    let response = client
        .post(format!("{}{path}", server.base))
        .bearer_auth(key)
        .header("Idempotency-Key", crate::ledger::uuid_simple())
        .json(&body)
        .send()
        .await?;
    anyhow::ensure!(response.status().is_success(), "POST {path}: {}", response.status());
    Ok(response.json().await?)
}

/// Funds the available balance with Stripe's largest payment, paid out and reconciled.
async fn fund(client: &reqwest::Client, server: &Server, key: &str, sim_base: &str) -> anyhow::Result<i64> {
    let body = json!({"amount": 99_999_999, "currency": "GBP", "payment_method": "pm_card_visa", "confirm": true});
    post_as(client, server, key, "/v1/payment_intents", body).await?;
    let settled = client.post(format!("{sim_base}/_sim/stripe/settle")).send().await?;
    anyhow::ensure!(settled.status().is_success(), "the simulator did not settle");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let balance = get_as(client, server, key, "/v1/balance").await?;
        if let Some(available) = balance["available"][0]["amount"].as_i64().filter(|amount| *amount > 0) {
            return Ok(available);
        }
        anyhow::ensure!(Instant::now() < deadline, "the balance was never funded");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn time_of(value: &Value) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(value.as_str()?, &time::format_description::well_known::Rfc3339).ok()
}

/// Waits until no payout is `processing`, then reads every paid one created since
/// `since`: (count, first created → last paid, create-to-paid latencies in ms).
async fn paid_since(
    client: &reqwest::Client,
    server: &Server,
    since: OffsetDateTime,
) -> anyhow::Result<(usize, f64, Vec<f64>)> {
    let (latencies, first, last) = paid_of(client, server, &server.api_key, since).await?;
    Ok(summary(latencies, first, last))
}

type Paid = (Vec<f64>, Option<OffsetDateTime>, Option<OffsetDateTime>);

fn summary(
    mut latencies: Vec<f64>,
    first: Option<OffsetDateTime>,
    last: Option<OffsetDateTime>,
) -> (usize, f64, Vec<f64>) {
    let span = match (first, last) {
        (Some(first), Some(last)) => (last - first).as_seconds_f64(),
        _ => f64::NAN,
    };
    latencies.sort_by(f64::total_cmp);
    (latencies.len(), span, latencies)
}

/// [`paid_since`] for the business of `key`, unsummed.
async fn paid_of(client: &reqwest::Client, server: &Server, key: &str, since: OffsetDateTime) -> anyhow::Result<Paid> {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let open = get_as(client, server, key, "/v1/payouts?status=processing&limit=1").await?;
        if open["data"].as_array().is_some_and(Vec::is_empty) {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "payouts still processing after 5 minutes");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (mut latencies, mut first, mut last) = (Vec::new(), None::<OffsetDateTime>, None::<OffsetDateTime>);
    let mut after: Option<String> = None;
    'pages: loop {
        let path = match &after {
            Some(cursor) => format!("/v1/payouts?status=paid&limit=100&starting_after={cursor}"),
            None => String::from("/v1/payouts?status=paid&limit=100"),
        };
        let page = get_as(client, server, key, &path).await?;
        for payout in page["data"].as_array().cloned().unwrap_or_default() {
            let (Some(created), Some(paid)) = (time_of(&payout["created_at"]), time_of(&payout["paid_at"])) else {
                continue;
            };
            if created < since {
                break 'pages; // newest first: the rest are an earlier phase's
            }
            latencies.push((paid - created).as_seconds_f64() * 1000.0);
            first = Some(first.map_or(created, |first: OffsetDateTime| first.min(created)));
            last = Some(last.map_or(paid, |last: OffsetDateTime| last.max(paid)));
        }
        match page["next_cursor"].as_str() {
            Some(cursor) => after = Some(cursor.to_string()),
            None => break,
        }
    }
    Ok((latencies, first, last))
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * q).round() as usize]
}

async fn phases(
    args: &BenchPayoutsArgs,
    client: &reqwest::Client,
    server: &Server,
    pids: &Pids,
    sim_base: &str,
    profile: Option<&Profile>,
) -> anyhow::Result<()> {
    let accounts = create_accounts(client, &server.base, &server.api_key, args.accounts).await?;
    let tenants = Arc::new(vec![Tenant { key: server.api_key.clone(), accounts }]);
    let duration = Duration::from_secs(args.seconds);
    tokio::time::sleep(PHASE_SETTLE).await;
    let before = pids.cpu();
    let transfers = drive(client, &server.base, args.clients, duration, tenants, Pattern::Uniform, None).await;
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

    let available = fund(client, server, &server.api_key, sim_base).await?;
    let beneficiary = post(
        client,
        server,
        "/v1/beneficiaries",
        json!({"type": "uk_account", "name": "Bench Supplies", "sort_code": "089999", "account_number": "66374958"}),
    )
    .await?;
    let beneficiary = beneficiary["id"].as_str().context("a beneficiary id")?.to_string();
    let payees = Arc::new(vec![Tenant { key: server.api_key.clone(), accounts: vec![beneficiary] }]);
    println!("   (funded: {available} available; payouts of 1p to one beneficiary)");

    tokio::time::sleep(PHASE_SETTLE).await;
    Profile::reset(profile).await?;
    let since = OffsetDateTime::now_utc();
    let before = pids.cpu();
    let created = drive(client, &server.base, args.clients, duration, payees.clone(), Pattern::Payout, None).await;
    let create_rate = created.per_second();
    println!(
        "2. payout creations: {create_rate:.0} payouts/s, create p50 {:.2} ms, p99 {:.2} ms; refused {}, 5xx/errors {}",
        created.percentile_ms(0.50),
        created.percentile_ms(0.99),
        created.refused,
        created.failed
    );
    let (paid, span, latencies) = paid_since(client, server, since).await?;
    let after = pids.cpu();
    let paid_rate = paid as f64 / span;
    println!(
        "   to paid: {paid} payouts in {span:.1} s from the first creation to the last payment: {paid_rate:.0} payouts/s, create-to-paid p50 {:.0} ms, p99 {:.0} ms",
        quantile(&latencies, 0.50),
        quantile(&latencies, 0.99)
    );
    println!("   so payouts to paid are {:.2}x (1)'s rate (goal >= 0.25x)", paid_rate / transfer_rate.max(1.0));
    println!("   {}", before.per(&after, paid as u64, "payout"));
    Profile::print(profile, paid).await?;

    tokio::time::sleep(PHASE_SETTLE).await;
    let half = (create_rate.min(paid_rate) / 2.0).max(1.0);
    let since = OffsetDateTime::now_utc();
    let paced = drive(client, &server.base, args.clients, duration, payees, Pattern::Payout, Some(half)).await;
    let (paced_paid, _, paced_latencies) = paid_since(client, server, since).await?;
    println!(
        "3. payouts at half of (2)'s rate to paid ({half:.0}/s aimed): {:.0} payouts/s, create p50 {:.2} ms, p99 {:.2} ms (goal p99 <= 50 ms); {paced_paid} paid, create-to-paid p50 {:.0} ms, p99 {:.0} ms",
        paced.per_second(),
        paced.percentile_ms(0.50),
        paced.percentile_ms(0.99),
        quantile(&paced_latencies, 0.50),
        quantile(&paced_latencies, 0.99)
    );
    spread(args, client, server, pids, sim_base, transfer_rate, profile).await?;
    if let Some(pid) = pids.server {
        println!("5. server peak RSS: {:.1} MB", crate::ledger::peak_rss_mb(pid));
    }
    let report = get(client, server, "/v1/payouts/check").await?;
    println!("   (payout check after the load: ok {}, {} payouts)", report["ok"], report["payouts_checked"]);
    Ok(())
}

/// Phase 4: (2)'s load over `args.businesses` new businesses, each funded and paying a
/// beneficiary of its own.
async fn spread(
    args: &BenchPayoutsArgs,
    client: &reqwest::Client,
    server: &Server,
    pids: &Pids,
    sim_base: &str,
    transfer_rate: f64,
    profile: Option<&Profile>,
) -> anyhow::Result<()> {
    let duration = Duration::from_secs(args.seconds);
    let made = Instant::now();
    let businesses = crate::ledger::businesses(client, &server.base, &server.admin_token, args.businesses, 4).await?;
    let mut payees = Vec::with_capacity(businesses.len());
    for business in &businesses {
        fund(client, server, &business.key, sim_base).await?;
        let beneficiary = post_as(
            client,
            server,
            &business.key,
            "/v1/beneficiaries",
            json!({"type": "uk_account", "name": "Bench Supplies", "sort_code": "089999", "account_number": "66374958"}),
        )
        .await?;
        let id = beneficiary["id"].as_str().context("a beneficiary id")?.to_string();
        payees.push(Tenant { key: business.key.clone(), accounts: vec![id] });
    }
    println!("   (made and funded {} businesses in {:.1} s)", payees.len(), made.elapsed().as_secs_f64());
    let payees = Arc::new(payees);
    tokio::time::sleep(PHASE_SETTLE).await;
    Profile::reset(profile).await?;
    let since = OffsetDateTime::now_utc();
    let before = pids.cpu();
    let created = drive(client, &server.base, args.clients, duration, payees.clone(), Pattern::Payout, None).await;
    let (mut latencies, mut first, mut last) = (Vec::new(), None::<OffsetDateTime>, None::<OffsetDateTime>);
    for payee in payees.iter() {
        let (more, their_first, their_last) = paid_of(client, server, &payee.key, since).await?;
        latencies.extend(more);
        first = match (first, their_first) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        last = match (last, their_last) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
    }
    let after = pids.cpu();
    let (paid, span, latencies) = summary(latencies, first, last);
    let paid_rate = paid as f64 / span;
    println!(
        "4. spread over {} businesses: creations {:.0} payouts/s, create p50 {:.2} ms, p99 {:.2} ms; refused {}, 5xx/errors {}",
        payees.len(),
        created.per_second(),
        created.percentile_ms(0.50),
        created.percentile_ms(0.99),
        created.refused,
        created.failed
    );
    println!(
        "   to paid: {paid} payouts in {span:.1} s: {paid_rate:.0} payouts/s, {:.2}x (1)'s rate, create-to-paid p50 {:.0} ms, p99 {:.0} ms",
        paid_rate / transfer_rate.max(1.0),
        quantile(&latencies, 0.50),
        quantile(&latencies, 0.99)
    );
    println!("   {}", before.per(&after, paid as u64, "payout"));
    Profile::print(profile, paid).await?;
    Ok(())
}

/// pg_stat_statements on the benchmark's cluster (`--profile`): where PostgreSQL's time
/// went in a phase, per payout.
pub(crate) struct Profile {
    pool: sqlx::PgPool,
}

/// Statements printed per phase.
const PROFILE_ROWS: i64 = 20;

impl Profile {
    pub(crate) async fn start(url: &str) -> anyhow::Result<Profile> {
        let pool = sqlx::postgres::PgPoolOptions::new().max_connections(1).connect(url).await?;
        sqlx::query("CREATE EXTENSION IF NOT EXISTS pg_stat_statements").execute(&pool).await?;
        Ok(Profile { pool })
    }

    pub(crate) async fn reset(profile: Option<&Profile>) -> anyhow::Result<()> {
        if let Some(profile) = profile {
            sqlx::query("SELECT pg_stat_statements_reset()").execute(&profile.pool).await?;
        }
        Ok(())
    }

    pub(crate) async fn print(profile: Option<&Profile>, payouts: usize) -> anyhow::Result<()> {
        let Some(profile) = profile else { return Ok(()) };
        let payouts = payouts.max(1) as f64;
        let total: (Option<f64>, Option<i64>) =
            sqlx::query_as("SELECT sum(total_exec_time + total_plan_time), sum(calls)::int8 FROM pg_stat_statements")
                .fetch_one(&profile.pool)
                .await?;
        println!(
            "   profile: {:.0} us of statement time and {:.1} statements per payout",
            total.0.unwrap_or(0.0) * 1_000.0 / payouts,
            total.1.unwrap_or(0) as f64 / payouts
        );
        // By time (where waits show: a row lock's queue is time, not CPU), then by calls
        // (where a payout's CPU goes: each statement costs a round trip and a parse).
        for (order, heading) in [("total_exec_time + total_plan_time", "time"), ("calls", "calls")] {
            let rows: Vec<(f64, i64, f64, String)> = sqlx::query_as(&format!(
                "SELECT total_exec_time + total_plan_time, calls, mean_exec_time, \
                        left(regexp_replace(query, '\\s+', ' ', 'g'), 110)
                   FROM pg_stat_statements ORDER BY {order} DESC LIMIT $1"
            ))
            .bind(PROFILE_ROWS)
            .fetch_all(&profile.pool)
            .await?;
            println!("   the top {PROFILE_ROWS} by {heading}:");
            for (time, calls, mean, query) in rows {
                println!(
                    "   {:>7.0} us/payout {:>6.2} calls/payout {:>7.3} ms mean  {query}",
                    time * 1_000.0 / payouts,
                    calls as f64 / payouts,
                    mean
                );
            }
        }
        Ok(())
    }
}
