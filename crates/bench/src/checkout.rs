#![allow(clippy::float_arithmetic)] // Rates, ratios and latencies: measurements, never money.
//! `till-bench checkout`: checkouts end to end — quote, reservation, authorisation,
//! capture, commit and invoice — through the simulator's Stripe, against single ledger
//! transfers of the same run.
//!
//! The simulator runs as a process of its own (`till sim`); `till up` is pointed at it as
//! at Stripe. The demo business gets invoice settings and one product with ample stock.
//! Phases:
//! 1. single ledger transfers (the ratio's baseline);
//! 2. checkouts of one unit at full rate: `POST /v1/checkouts` per second with its
//!    p50/p99; then the wait until no order is pending, and the rate from the first
//!    order's creation to the last one paid, with creation-to-paid p50/p99 (server
//!    clocks: the order's `created_at` to its `updated_at` when it became paid);
//! 3. checkouts paced at half of (2)'s paid rate: creation-to-paid p99 off peak;
//! 4. the server's peak RSS.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::{json, Value};
use time::OffsetDateTime;

use crate::ledger::{create_accounts, drive, throwaway_cluster, Pattern, Pids, Server, Tenant};
use crate::BenchCheckoutArgs;

const PHASE_SETTLE: Duration = Duration::from_secs(2);

pub async fn checkout(args: BenchCheckoutArgs) -> anyhow::Result<()> {
    let settings = if args.profile {
        vec![String::from("shared_preload_libraries=pg_stat_statements"), String::from("pg_stat_statements.track=all")]
    } else {
        Vec::new()
    };
    let (cluster, data_dir) = throwaway_cluster("checkout", settings).await?;
    let outcome = run(&args, &cluster, &data_dir).await;
    cluster.stop().await?;
    outcome
}

async fn run(
    args: &BenchCheckoutArgs,
    cluster: &till_db::embedded::Cluster,
    data_dir: &std::path::Path,
) -> anyhow::Result<()> {
    println!("till bench checkout: {} clients, {} s per phase", args.clients, args.seconds);
    let url = crate::payments::database_url(cluster, data_dir).await?;
    let profile = if args.profile { Some(crate::payouts::Profile::start(&url).await?) } else { None };
    let (mut sim, sim_base) = crate::payments::start_sim(&args.target).await?;
    let env = [
        ("TILL_STRIPE_BASE_URL", format!("{sim_base}/stripe/")),
        ("TILL_STRIPE_SECRET_KEY", String::from("sk_test_till_bench")),
    ];
    let server = Server::start(&args.target, &url, &data_dir.join("server"), &env).await?;
    let client = reqwest::Client::builder().pool_max_idle_per_host(args.clients * 2).build()?;
    let postmaster = std::fs::read_to_string(cluster.cluster_dir().join("postmaster.pid"))
        .ok()
        .and_then(|text| text.lines().next().and_then(|line| line.trim().parse().ok()));
    let pids = Pids { server: server.child.id(), postmaster, sim: sim.id() };
    let outcome = phases(args, &client, &server, &pids, profile.as_ref()).await;
    server.stop().await;
    let _ = sim.kill().await;
    outcome
}

async fn send(server: &Server, request: reqwest::RequestBuilder) -> anyhow::Result<Value> {
    let response = request.bearer_auth(&server.api_key).send().await?;
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    anyhow::ensure!(status.is_success(), "{status}: {body}");
    Ok(body)
}

async fn post(client: &reqwest::Client, server: &Server, path: &str, body: Value) -> anyhow::Result<Value> {
    let request = client
        .post(format!("{}{path}", server.base))
        .header("Idempotency-Key", crate::ledger::uuid_simple())
        .json(&body);
    send(server, request).await.with_context(|| format!("POST {path}"))
}

/// The demo business's invoice settings and a product with `units` in stock; its id.
async fn prepare(client: &reqwest::Client, server: &Server, units: i64) -> anyhow::Result<String> {
    let settings = json!({"address": ["1 Bench Street", "London"]});
    let request = client.put(format!("{}/v1/invoice_settings", server.base)).json(&settings);
    send(server, request).await.context("PUT /v1/invoice_settings")?;
    let sku = format!("BENCH-{}", crate::ledger::uuid_simple());
    let product = json!({"name": "Bench mug", "sku": sku, "tax_treatment": "standard",
                         "prices": [{"currency": "GBP", "unit_amount": 1200, "tax_inclusive": true}]});
    let product = post(client, server, "/v1/products", product).await?;
    post(client, server, &format!("/v1/inventory/{sku}/adjustments"), json!({"delta": units, "reason": "bench"}))
        .await?;
    Ok(product["id"].as_str().context("a product id")?.to_string())
}

fn time_of(value: &Value) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(value.as_str()?, &time::format_description::well_known::Rfc3339).ok()
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * q).round() as usize]
}

/// Waits until no order is pending, then reads every order created since `since`:
/// (paid, not paid, first created → last paid in seconds, creation-to-paid latencies in ms).
async fn paid_since(
    client: &reqwest::Client,
    server: &Server,
    since: OffsetDateTime,
) -> anyhow::Result<(usize, usize, f64, Vec<f64>)> {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let request = client.get(format!("{}/v1/orders?status=pending&limit=1", server.base));
        let open = send(server, request).await?;
        if open["data"].as_array().is_some_and(Vec::is_empty) {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "orders still pending after 5 minutes");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (mut latencies, mut unpaid) = (Vec::new(), 0_usize);
    let (mut first, mut last) = (None::<OffsetDateTime>, None::<OffsetDateTime>);
    let mut after: Option<String> = None;
    'pages: loop {
        let path = match &after {
            Some(cursor) => format!("/v1/orders?limit=100&starting_after={cursor}"),
            None => String::from("/v1/orders?limit=100"),
        };
        let page = send(server, client.get(format!("{}{path}", server.base))).await?;
        for order in page["data"].as_array().cloned().unwrap_or_default() {
            let (Some(created), Some(updated)) = (time_of(&order["created_at"]), time_of(&order["updated_at"])) else {
                continue;
            };
            if created < since {
                break 'pages; // newest first: the rest are an earlier phase's
            }
            if order["status"] != "paid" {
                unpaid += 1;
                continue;
            }
            latencies.push((updated - created).as_seconds_f64() * 1000.0);
            first = Some(first.map_or(created, |first: OffsetDateTime| first.min(created)));
            last = Some(last.map_or(updated, |last: OffsetDateTime| last.max(updated)));
        }
        match page["next_cursor"].as_str() {
            Some(cursor) => after = Some(cursor.to_string()),
            None => break,
        }
    }
    let span = match (first, last) {
        (Some(first), Some(last)) => (last - first).as_seconds_f64(),
        _ => f64::NAN,
    };
    latencies.sort_by(f64::total_cmp);
    Ok((latencies.len(), unpaid, span, latencies))
}

async fn phases(
    args: &BenchCheckoutArgs,
    client: &reqwest::Client,
    server: &Server,
    pids: &Pids,
    profile: Option<&crate::payouts::Profile>,
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

    let product = prepare(client, server, 100_000_000).await?;
    let buyers = Arc::new(vec![Tenant { key: server.api_key.clone(), accounts: vec![product] }]);
    tokio::time::sleep(PHASE_SETTLE).await;
    crate::payouts::Profile::reset(profile).await?;
    let since = OffsetDateTime::now_utc();
    let before = pids.cpu();
    let created = drive(client, &server.base, args.clients, duration, buyers.clone(), Pattern::Checkout, None).await;
    let create_rate = created.per_second();
    println!(
        "2. checkouts: {create_rate:.0} orders/s made, POST p50 {:.2} ms, p99 {:.2} ms; refused {}, 5xx/errors {}",
        created.percentile_ms(0.50),
        created.percentile_ms(0.99),
        created.refused,
        created.failed
    );
    let (paid, unpaid, span, latencies) = paid_since(client, server, since).await?;
    let after = pids.cpu();
    let paid_rate = paid as f64 / span;
    println!(
        "   to paid with an invoice: {paid} orders ({unpaid} not paid) in {span:.1} s from the first order to the last paid: {paid_rate:.0} checkouts/s, order-to-paid p50 {:.0} ms, p99 {:.0} ms",
        quantile(&latencies, 0.50),
        quantile(&latencies, 0.99)
    );
    println!("   so checkouts end to end are {:.2}x (1)'s rate (goal >= 0.1x)", paid_rate / transfer_rate.max(1.0));
    println!("   {}", before.per(&after, paid as u64, "checkout"));
    crate::payouts::Profile::print(profile, paid).await?;

    tokio::time::sleep(PHASE_SETTLE).await;
    let half = (create_rate.min(paid_rate) / 2.0).max(1.0);
    let since = OffsetDateTime::now_utc();
    let paced = drive(client, &server.base, args.clients, duration, buyers, Pattern::Checkout, Some(half)).await;
    let (paced_paid, paced_unpaid, _, paced_latencies) = paid_since(client, server, since).await?;
    println!(
        "3. checkouts at half of (2)'s rate ({half:.0}/s aimed): {:.0} orders/s, POST p50 {:.2} ms, p99 {:.2} ms; {paced_paid} paid ({paced_unpaid} not), order-to-paid p50 {:.0} ms, p99 {:.0} ms (goal p99 <= 100 ms)",
        paced.per_second(),
        paced.percentile_ms(0.50),
        paced.percentile_ms(0.99),
        quantile(&paced_latencies, 0.50),
        quantile(&paced_latencies, 0.99)
    );
    if let Some(pid) = pids.server {
        println!("4. server peak RSS: {:.1} MB", crate::ledger::peak_rss_mb(pid));
    }
    Ok(())
}
