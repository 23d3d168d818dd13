#![allow(clippy::float_arithmetic)] // Rates, ratios and latencies: measurements, never money.
//! `till-bench ledger` (`till bench ledger`): the ledger's throughput and latency, measured against pgbench's
//! TPC-B on the same PostgreSQL in the same run, so results are ratios to a baseline
//! rather than absolute numbers from a machine nobody else has.
//!
//! It provisions a throwaway embedded cluster (durable settings, like `till up`), loads
//! pgbench's tables, starts Till as a separate process (so its peak RSS is its own),
//! creates the accounts, and drives load from this process over loopback HTTP. pgbench
//! runs just before and just after the single-transfer phase, and that phase is compared
//! with the mean of the two: on a shared machine whose speed drifts over minutes, a
//! baseline taken a minute away from the phase says little about it.
//!
//! Each phase also reports the CPU that Till, PostgreSQL and the load generator spent
//! per transfer (or per pgbench transaction) and how busy the cores were: a phase whose
//! cores sit partly idle is limited by a chain of waits, one whose cores are full by the
//! work itself, and the work per transfer against the cores says which goals the machine
//! can reach at all. The single-transfer load is measured a second time spread over
//! several new businesses, each of which has a writer (and a chain of batches) of its
//! own.

use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::{json, Value};
use till_db::embedded::{Binaries, Cluster, ClusterOptions};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::{BenchLedgerArgs, Target};

/// The pause between measured phases.
const PHASE_SETTLE: Duration = Duration::from_secs(2);
/// Concurrent requests that create the benchmark's accounts.
const SETUP_CLIENTS: usize = 32;
/// The businesses that (2)'s load is spread over in its second measurement.
const SPREAD_BUSINESSES: usize = 8;

pub(crate) struct Load {
    from_wrk: bool,
    pub transfers: u64,
    pub refused: u64,
    pub failed: u64,
    pub elapsed: Duration,
    latencies_us: Vec<u64>,
}

/// A business the load writes to: its API key and its accounts.
pub(crate) struct Tenant {
    pub key: String,
    pub accounts: Vec<String>,
}

impl Load {
    pub fn per_second(&self) -> f64 {
        self.transfers as f64 / self.elapsed.as_secs_f64()
    }

    pub(crate) fn percentile_ms(&self, quantile: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return f64::NAN;
        }
        if self.from_wrk {
            // wrk's summary: [p50, p99].
            let index = usize::from(quantile > 0.5);
            return self.latencies_us[index] as f64 / 1000.0;
        }
        let mut sorted = self.latencies_us.clone();
        sorted.sort_unstable();
        let index = ((sorted.len() as f64 - 1.0) * quantile).round() as usize;
        sorted[index] as f64 / 1000.0
    }
}

pub async fn ledger(args: BenchLedgerArgs) -> anyhow::Result<()> {
    let (cluster, data_dir) = throwaway_cluster("ledger", Vec::new()).await?;
    let outcome = run(&args, &cluster, &data_dir).await;
    cluster.stop().await?;
    outcome
}

/// A benchmark's own PostgreSQL: durable settings, like `till up`, deleted when it stops.
pub(crate) async fn throwaway_cluster(
    label: &str,
    settings: Vec<String>,
) -> anyhow::Result<(Cluster, std::path::PathBuf)> {
    let data_dir = std::env::temp_dir().join(format!("till-bench-{label}-{}", uuid_simple()));
    let options = ClusterOptions {
        data_dir: data_dir.clone(),
        port: None,
        preferred_port: None,
        durable: true,
        ephemeral: true,
        connections_max: 200,
        settings,
    };
    let cluster = Cluster::start(&options).await.context("starting the benchmark's PostgreSQL")?;
    Ok((cluster, data_dir))
}

/// A fresh name part (directories, exchanges, keys) no other run uses.
pub(crate) fn uuid_simple() -> String {
    uuid::Uuid::now_v7().simple().to_string()
}

async fn run(args: &BenchLedgerArgs, cluster: &Cluster, data_dir: &Path) -> anyhow::Result<()> {
    println!("till bench ledger: {} clients, {} s per phase, {} accounts", args.clients, args.seconds, args.accounts);
    let password = std::fs::read_to_string(data_dir.join("postgres.password"))?.trim().to_string();
    // pgbench's tables first, checkpointed, so that their loading (scale x 100 000 rows)
    // is over before anything is measured.
    let pgbench = Pgbench::prepare(cluster, &password, args).await?;

    // Till, as its own process, on the same cluster.
    cluster.ensure_database("till").await?;
    let url = format!("postgres://{}:{password}@127.0.0.1:{}/till", till_db::embedded::SUPERUSER, cluster.port());
    let server = Server::start(&args.target, &url, &data_dir.join("server"), &[]).await?;
    let client = reqwest::Client::builder().pool_max_idle_per_host(args.clients * 2).build()?;
    let postmaster = std::fs::read_to_string(cluster.cluster_dir().join("postmaster.pid"))
        .ok()
        .and_then(|text| text.lines().next().and_then(|line| line.trim().parse().ok()));
    let pids = Pids { server: server.child.id(), postmaster, sim: None };
    let server_side = ServerSide { base: &server.base, key: &server.api_key, admin_token: &server.admin_token, pids };
    let outcome = phases(args, &client, server_side, &url, &pgbench).await;
    server.stop().await;
    outcome
}

/// Till as its own process (so its peak RSS is its own) on `url`, with the rate limit out
/// of the way.
pub(crate) struct Server {
    pub child: tokio::process::Child,
    pub api_key: String,
    /// The platform admin token it was started with.
    pub admin_token: String,
    pub base: String,
}

impl Server {
    pub async fn start(
        target: &Target,
        url: &str,
        server_dir: &Path,
        env: &[(&str, String)],
    ) -> anyhow::Result<Server> {
        std::fs::create_dir_all(server_dir)?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let admin_token = format!("till_admin_bench_{}", uuid_simple());
        let mut child = tokio::process::Command::new(target.binary()?)
            .args(["up", "--port", &port.to_string()])
            .env("TILL_ADMIN_TOKEN", &admin_token)
            // The simulator on any free port (the API's port + 1 may be taken).
            .env("TILL_SIM_PORT", "0")
            .env("DATABASE_URL", url)
            .env("TILL_DATA_DIR", server_dir)
            .env("TILL_RATE_LIMIT_PER_SECOND", "10000000")
            .env("TILL_RATE_LIMIT_BURST", "10000000")
            .env("TILL_DB_CONNECTIONS_MAX", "16")
            .env("RUST_LOG", std::env::var("TILL_BENCH_SERVER_LOG").unwrap_or_else(|_| "warn".into()))
            .envs(env.iter().map(|(name, value)| (*name, value.as_str())))
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("starting till up")?;
        let stdout = child.stdout.take().context("till up's stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let mut api_key = None;
        while let Some(line) = lines.next_line().await? {
            if line.trim().starts_with("till_sk_") {
                api_key = Some(line.trim().to_string());
            }
            if line.contains("Press Ctrl-C") {
                break;
            }
        }
        // Keep reading what it prints, so its last lines never meet a closed pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        // The key is printed on the first start only; later starts reuse the stored one.
        let key_file = server_dir.join("bench-api-key");
        let api_key = match api_key {
            Some(key) => {
                std::fs::write(&key_file, &key)?;
                key
            }
            None => std::fs::read_to_string(&key_file).context("till up printed no API key")?,
        };
        Ok(Server { child, api_key, admin_token, base: format!("http://127.0.0.1:{port}") })
    }

    /// SIGTERM, as an operator would, and wait.
    pub async fn stop(mut self) {
        if let Some(pid) = self.child.id() {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGTERM);
        }
        let _ = self.child.wait().await;
    }
}

/// The processes whose CPU time the benchmark reports.
pub(crate) struct Pids {
    pub server: Option<u32>,
    pub postmaster: Option<u32>,
    /// The simulator, when it runs as its own process (the payments benchmark).
    pub sim: Option<u32>,
}

/// CPU seconds (user + system) used so far, by party.
#[derive(Clone, Copy)]
pub(crate) struct Cpu {
    till: f64,
    postgres: f64,
    sim: f64,
    /// This process and the children it has reaped: pgbench and wrk, counted once each
    /// run has ended (the phases wait for them), or the reqwest load's own work.
    load: f64,
    at: Instant,
}

impl Pids {
    /// CPU used so far by Till, by PostgreSQL (every process the postmaster started
    /// that is still running, since pooled backends stay, plus the postmaster's own time
    /// and that of the children it has reaped), and by the load. Without the reaped
    /// backends, one that ended between two readings (pgbench's end just before (2)
    /// starts) took its whole lifetime's CPU out of the difference: one run reported 64 µs
    /// of PostgreSQL CPU per transfer where fifteen others that day measured 98–223.
    pub(crate) fn cpu(&self) -> Cpu {
        let ticks = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).ok().flatten().unwrap_or(100) as f64;
        // The parent's pid, and the ticks used by the process (utime + stime) and by its
        // reaped children (cutime + cstime): fields 14 to 17 of proc(5).
        let stat = |pid: u32| -> Option<(u32, f64, f64)> {
            let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            // Fields after the command name, which is in parentheses and may hold spaces.
            let fields: Vec<&str> = text.rsplit_once(')')?.1.split_whitespace().collect();
            let parent = fields.get(1)?.parse().ok()?;
            let ticks_at = |index: usize| fields.get(index).and_then(|field| field.parse::<f64>().ok());
            let own = ticks_at(11)? + ticks_at(12)?;
            let reaped = ticks_at(13)? + ticks_at(14)?;
            Some((parent, own / ticks, reaped / ticks))
        };
        let till = self.server.and_then(stat).map(|(_, own, _)| own).unwrap_or(0.0);
        let postgres = match self.postmaster {
            Some(postmaster) => std::fs::read_dir("/proc")
                .map(|entries| {
                    entries
                        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
                        .filter_map(|pid| match stat(pid) {
                            Some((_, own, reaped)) if pid == postmaster => Some(own + reaped),
                            Some((parent, own, _)) if parent == postmaster => Some(own),
                            _ => None,
                        })
                        .sum()
                })
                .unwrap_or(0.0),
            None => 0.0,
        };
        let load = stat(std::process::id()).map(|(_, own, reaped)| own + reaped).unwrap_or(0.0);
        let sim = self.sim.and_then(stat).map(|(_, own, _)| own).unwrap_or(0.0);
        Cpu { till, postgres, sim, load, at: Instant::now() }
    }
}

impl Cpu {
    /// Where the CPU went between `self` and `later`, per unit of work (a transfer, a
    /// pgbench transaction), and how busy the machine's cores were. The parts' sum
    /// against what the cores could give at the measured rate says how far the machine
    /// is from being CPU-bound, and so whether a goal is out of its reach.
    pub(crate) fn per(&self, later: &Cpu, units: u64, unit: &str) -> String {
        let micros = |before: f64, after: f64| (after - before) * 1e6 / units.max(1) as f64;
        let (till, postgres, load) =
            (micros(self.till, later.till), micros(self.postgres, later.postgres), micros(self.load, later.load));
        let sim = micros(self.sim, later.sim);
        let wall = later.at.duration_since(self.at).as_secs_f64();
        let busy = (till + postgres + sim + load) * units as f64 / 1e6 / (wall * cores() as f64);
        let sim = if sim > 0.0 { format!(", simulator {sim:.0} us") } else { String::new() };
        format!(
            "CPU per {unit}: Till {till:.0} us, PostgreSQL {postgres:.0} us{sim}, load generator {load:.0} us; {} cores {:.0}% busy",
            cores(),
            busy * 100.0
        )
    }
}

/// A process's peak resident set (VmHWM), in MB; 0 if it cannot be read.
pub(crate) fn peak_rss_mb(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let peak_kb: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    peak_kb as f64 / 1024.0
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
}

/// The Till server under test, as the phases reach it.
struct ServerSide<'a> {
    base: &'a str,
    /// The API key of the business the load writes to.
    key: &'a str,
    /// The platform admin's token, to create the businesses of the spread load.
    admin_token: &'a str,
    pids: Pids,
}

async fn phases(
    args: &BenchLedgerArgs,
    client: &reqwest::Client,
    server: ServerSide<'_>,
    url: &str,
    pgbench: &Pgbench,
) -> anyhow::Result<()> {
    let ServerSide { base, key, admin_token, pids } = server;
    let server_pid = pids.server;
    let started = Instant::now();
    let accounts = create_accounts(client, base, key, args.accounts).await?;
    println!("   (created and funded {} accounts in {:.1} s)", accounts.len(), started.elapsed().as_secs_f64());
    let started = Instant::now();
    let spread = Arc::new(spread_tenants(client, base, admin_token, args.accounts).await?);
    println!(
        "   (created {SPREAD_BUSINESSES} more businesses with {} accounts each in {:.1} s)",
        spread[0].accounts.len(),
        started.elapsed().as_secs_f64()
    );
    let tenants = Arc::new(vec![Tenant { key: key.to_string(), accounts }]);
    let accounts = tenants[0].accounts.len();
    let duration = Duration::from_secs(args.seconds);

    let wrk = find_wrk();
    match &wrk {
        Some(path) => println!("   (load from {}; install nothing else)", path.display()),
        None => println!(
            "   (wrk not found: load from this process with reqwest, which competes for CPU; apt-get install wrk)"
        ),
    }
    // Each phase with the CPU readings just before and just after its load.
    let run = |tenants: &Arc<Vec<Tenant>>, pattern: Pattern, pacing: Option<(f64, f64)>| {
        let (wrk, tenants, pids) = (wrk.clone(), tenants.clone(), &pids);
        async move {
            // Let the previous phase's last requests finish first (a batch phase leaves
            // engine batches of thousands of transfers in flight), so that no phase is
            // measured waiting behind another.
            tokio::time::sleep(PHASE_SETTLE).await;
            let before = pids.cpu();
            let load = match wrk {
                Some(wrk) => {
                    // Pace each connection so that all of them together offer `rate`.
                    let delay_ms =
                        pacing.map(|(rate, latency_ms)| ((args.clients as f64 * 1000.0 / rate) - latency_ms).max(0.0));
                    drive_wrk(&wrk, base, args.clients, duration, &tenants, pattern, delay_ms).await
                }
                None => {
                    Ok(drive(client, base, args.clients, duration, tenants, pattern, pacing.map(|(rate, _)| rate))
                        .await)
                }
            }?;
            anyhow::Ok((load, before, pids.cpu()))
        }
    };
    // 1. The baseline: pgbench's TPC-B with prepared statements and the same client count,
    // just before and just after (2).
    tokio::time::sleep(PHASE_SETTLE).await;
    let cpu_before = pids.cpu();
    let (baseline_before, transactions_before) = pgbench.run().await?;
    let cpu_after = pids.cpu();
    let (uniform, uniform_before, uniform_after) = run(&tenants, Pattern::Uniform, None).await?;
    let cpu_last = pids.cpu();
    let (baseline_after, transactions_after) = pgbench.run().await?;
    let cpu_end = pids.cpu();
    let baseline = (baseline_before + baseline_after) / 2.0;
    println!(
        "1. pgbench TPC-B (-M prepared, -c {}) on the same PostgreSQL: {baseline_before:.0} tps just before (2), {baseline_after:.0} tps just after",
        args.clients
    );
    println!("   {}", cpu_before.per(&cpu_after, transactions_before, "transaction just before"));
    println!("   {}", cpu_last.per(&cpu_end, transactions_after, "transaction just after"));
    let uniform_tps = uniform.per_second();
    println!(
        "2. single transfers over HTTP, uniform over {accounts} accounts: {uniform_tps:.0} transfers/s, p50 {:.2} ms, p99 {:.2} ms; refused {}, 5xx/errors {}",
        uniform.percentile_ms(0.50),
        uniform.percentile_ms(0.99),
        uniform.refused,
        uniform.failed
    );
    println!("   so (2) is {:.2}x their mean, {baseline:.0} tps (goal >= 1.5x)", uniform_tps / baseline);
    println!("   {}", uniform_before.per(&uniform_after, uniform.transfers, "transfer in (2)"));
    // The same load spread over several businesses, each with a writer of its own: what
    // one business's chain of statements leaves on the table. Against pgbench again,
    // just after.
    let (spread_load, spread_before, spread_after) = run(&spread, Pattern::Uniform, None).await?;
    let cpu_spread = pids.cpu();
    let (baseline_spread, transactions_spread) = pgbench.run().await?;
    let spread_baseline = (baseline_after + baseline_spread) / 2.0;
    println!(
        "   spread over {SPREAD_BUSINESSES} businesses ({} accounts each): {:.0} transfers/s, p50 {:.2} ms, p99 {:.2} ms, {:.2}x pgbench ({baseline_spread:.0} tps just after); refused {}, 5xx/errors {}",
        spread[0].accounts.len(),
        spread_load.per_second(),
        spread_load.percentile_ms(0.50),
        spread_load.percentile_ms(0.99),
        spread_load.per_second() / spread_baseline,
        spread_load.refused,
        spread_load.failed
    );
    println!("   {}", spread_before.per(&spread_after, spread_load.transfers, "transfer spread"));
    println!("   {}", cpu_spread.per(&pids.cpu(), transactions_spread, "pgbench transaction just after"));
    let (hot, _, _) = run(&tenants, Pattern::HotAccount, None).await?;
    println!(
        "3. every transfer touching one hot account: {:.0} transfers/s, p99 {:.2} ms, {:.2}x uniform (goal >= 0.8x); refused {}, 5xx/errors {}",
        hot.per_second(),
        hot.percentile_ms(0.99),
        hot.per_second() / uniform_tps,
        hot.refused,
        hot.failed
    );
    let (batched, batched_before, batched_after) = run(&tenants, Pattern::Batch(100), None).await?;
    println!(
        "4. /transfers/batch, 100 per batch: {:.0} transfers/s (goal >= 33000); refused {}, 5xx/errors {}",
        batched.per_second(),
        batched.refused,
        batched.failed
    );
    println!(
        "   {} (at 33000/s, the cores give {:.0} us per transfer)",
        batched_before.per(&batched_after, batched.transfers, "transfer in (4)"),
        cores() as f64 * 1e6 / 33_000.0
    );
    let half_rate = (uniform_tps / 2.0).max(1.0);
    let (paced, _, _) = run(&tenants, Pattern::Uniform, Some((half_rate, uniform.percentile_ms(0.50)))).await?;
    println!(
        "   at about half of (2)'s rate ({half_rate:.0}/s aimed): {:.0} transfers/s, p50 {:.2} ms, p99 {:.2} ms (goal p99 <= 10 ms)",
        paced.per_second(),
        paced.percentile_ms(0.50),
        paced.percentile_ms(0.99)
    );
    if let Some(pid) = server_pid {
        println!("5. server peak RSS: {:.1} MB (goal <= 150 MB)", peak_rss_mb(pid));
    }
    idempotency_cost(args, url, &tenants[0].accounts).await
}

/// pgbench against the benchmark's cluster, its tables loaded once.
struct Pgbench {
    program: std::path::PathBuf,
    port: u16,
    password: String,
    clients: usize,
    seconds: u64,
}

impl Pgbench {
    async fn prepare(cluster: &Cluster, password: &str, args: &BenchLedgerArgs) -> anyhow::Result<Pgbench> {
        cluster.ensure_database("pgbench").await?;
        let pgbench = Pgbench {
            program: Binaries::find()?.dir.join("pgbench"),
            port: cluster.port(),
            password: password.to_string(),
            clients: args.clients,
            seconds: args.seconds,
        };
        let init =
            pgbench.command().args(["-i", "-q", "-s", &args.pgbench_scale.to_string(), "pgbench"]).output().await?;
        if !init.status.success() {
            bail!("pgbench -i failed: {}", String::from_utf8_lossy(&init.stderr));
        }
        let url =
            format!("postgres://{}:{password}@127.0.0.1:{}/pgbench", till_db::embedded::SUPERUSER, cluster.port());
        let mut connection = <sqlx::PgConnection as sqlx::Connection>::connect(&url).await?;
        sqlx::query("CHECKPOINT").execute(&mut connection).await?;
        Ok(pgbench)
    }

    fn command(&self) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(&self.program);
        command.env("PGPASSWORD", &self.password).args([
            "-h",
            "127.0.0.1",
            "-p",
            &self.port.to_string(),
            "-U",
            till_db::embedded::SUPERUSER,
        ]);
        command
    }

    /// One run of TPC-B: its transactions per second, and how many it made.
    async fn run(&self) -> anyhow::Result<(f64, u64)> {
        let output = self
            .command()
            .args([
                "-M",
                "prepared",
                "-n",
                "-c",
                &self.clients.to_string(),
                "-j",
                "2",
                "-T",
                &self.seconds.to_string(),
                "pgbench",
            ])
            .output()
            .await?;
        let text = String::from_utf8_lossy(&output.stdout);
        let number_after = |prefix: &str| {
            text.lines()
                .find_map(|line| line.strip_prefix(prefix))
                .and_then(|rest| rest.split(|c: char| c == '/' || c.is_whitespace()).find(|part| !part.is_empty()))
                .and_then(|number| number.parse::<f64>().ok())
        };
        let tps = number_after("tps = ");
        let transactions = number_after("number of transactions actually processed: ");
        tps.zip(transactions)
            .map(|(tps, transactions)| (tps, transactions as u64))
            .with_context(|| format!("no tps in pgbench's output: {text}{}", String::from_utf8_lossy(&output.stderr)))
    }
}

pub(crate) async fn create_accounts(
    client: &reqwest::Client,
    base: &str,
    key: &str,
    count: usize,
) -> anyhow::Result<Vec<String>> {
    let post = |path: &str, body: Value| {
        client
            .post(format!("{base}{path}"))
            .bearer_auth(key)
            .header("Idempotency-Key", format!("setup-{}", uuid_simple() + &rand_suffix()))
            .json(&body)
            .send()
    };
    let source: Value = post(
        "/v1/accounts",
        json!({"name": "bench source", "currency": "GBP", "normal_balance": "debit", "min_balance": null}),
    )
    .await?
    .json()
    .await?;
    let source = source["id"].as_str().context("source id")?.to_string();
    let created = Arc::new(tokio::sync::Mutex::new(Vec::with_capacity(count)));
    let next = Arc::new(AtomicU64::new(0));
    let workers = (0..SETUP_CLIENTS).map(|_| {
        let (client, base, key, created, next, total) =
            (client.clone(), base.to_string(), key.to_string(), created.clone(), next.clone(), count as u64);
        tokio::spawn(async move {
            while next.fetch_add(1, Ordering::SeqCst) < total {
                let response = client
                    .post(format!("{base}/v1/accounts"))
                    .bearer_auth(&key)
                    .header("Idempotency-Key", format!("account-{}", rand_suffix()))
                    .json(&json!({"name": "bench wallet", "currency": "GBP", "normal_balance": "credit"}))
                    .send()
                    .await?;
                let body: Value = response.json().await?;
                let id = body["id"].as_str().context("account id")?.to_string();
                created.lock().await.push(id);
            }
            anyhow::Ok(())
        })
    });
    for worker in workers.collect::<Vec<_>>() {
        worker.await??;
    }
    let accounts = std::mem::take(&mut *created.lock().await);
    for chunk in accounts.chunks(1000) {
        let legs: Vec<Value> = chunk
            .iter()
            .map(|id| json!({"debit_account_id": source, "credit_account_id": id, "amount": 1_000_000_000_i64, "currency": "GBP"}))
            .collect();
        let response = post("/v1/transfers/batch", json!({ "transfers": legs })).await?;
        if response.status().as_u16() != 201 {
            bail!("funding failed: {}", response.text().await?);
        }
    }
    Ok(accounts)
}

/// `SPREAD_BUSINESSES` new businesses, each with its share of `accounts` accounts,
/// created through the platform API as an operator would.
async fn spread_tenants(
    client: &reqwest::Client,
    base: &str,
    admin_token: &str,
    accounts: usize,
) -> anyhow::Result<Vec<Tenant>> {
    businesses(client, base, admin_token, SPREAD_BUSINESSES, accounts).await
}

/// `count` new businesses, made through the platform API, each with its share of
/// `accounts` (at least 2).
pub(crate) async fn businesses(
    client: &reqwest::Client,
    base: &str,
    admin_token: &str,
    count: usize,
    accounts: usize,
) -> anyhow::Result<Vec<Tenant>> {
    let mut tenants = Vec::with_capacity(count);
    for index in 0..count {
        let response = client
            .post(format!("{base}/v1/platform/businesses"))
            .bearer_auth(admin_token)
            .header("Idempotency-Key", format!("spread-{index}-{}", rand_suffix()))
            .json(&json!({"legal_name": format!("Bench business {index}"), "country": "GB"}))
            .send()
            .await?;
        if response.status().as_u16() != 201 {
            bail!("creating a business failed: {}", response.text().await?);
        }
        let body: Value = response.json().await?;
        let key = body["api_key"]["secret"].as_str().context("the new business's API key")?.to_string();
        let accounts = create_accounts(client, base, &key, (accounts / count).max(2)).await?;
        tenants.push(Tenant { key, accounts });
    }
    Ok(tenants)
}

fn rand_suffix() -> String {
    use rand::Rng;
    format!("{:032x}", rand::thread_rng().gen::<u128>())
}

#[derive(Clone, Copy)]
pub(crate) enum Pattern {
    Uniform,
    HotAccount,
    Batch(usize),
    /// A payment intent created and confirmed (automatic capture) in one request.
    Payment,
    /// A payout of 1p to the tenant's beneficiary (its first "account" is the `ben_` id).
    Payout,
    /// A checkout of one unit of the tenant's product (its first "account" is the
    /// `prod_` id), paid by card.
    Checkout,
}

/// Drives `clients` concurrent connections for `duration`. With `rate`, clients pace
/// themselves to offer that many transfers per second in total (open loop), each at
/// random intervals (see [`exponential`]).
#[allow(clippy::too_many_arguments)]
pub(crate) async fn drive(
    client: &reqwest::Client,
    base: &str,
    clients: usize,
    duration: Duration,
    tenants: Arc<Vec<Tenant>>,
    pattern: Pattern,
    rate: Option<f64>,
) -> Load {
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let (client, base, tenants, stop) = (client.clone(), base.to_string(), tenants.clone(), stop.clone());
            tokio::spawn(async move {
                use rand::Rng;
                let mut load = Load { from_wrk: false, transfers: 0, refused: 0, failed: 0, elapsed: Duration::ZERO, latencies_us: Vec::new() };
                let interval = rate.map(|rate| Duration::from_secs_f64(clients as f64 / rate));
                let mut next_at = Instant::now();
                while !stop.load(Ordering::Relaxed) {
                    if let Some(interval) = interval {
                        next_at += interval.mul_f64(exponential(&mut rand::thread_rng()));
                        let now = Instant::now();
                        if next_at > now {
                            tokio::time::sleep(next_at - now).await;
                        }
                    }
                    let (tenant, path, body, count) = {
                        let mut rng = rand::thread_rng();
                        let tenant = &tenants[rng.gen_range(0..tenants.len())];
                        let accounts = &tenant.accounts;
                        let leg = |rng: &mut rand::rngs::ThreadRng| {
                            let a = rng.gen_range(0..accounts.len());
                            let mut b = rng.gen_range(0..accounts.len() - 1);
                            if b >= a {
                                b += 1;
                            }
                            let (debit, credit) = match pattern {
                                Pattern::HotAccount if a != 0 => (&accounts[a], &accounts[0]),
                                Pattern::HotAccount => (&accounts[0], &accounts[1]),
                                _ => (&accounts[a], &accounts[b]),
                            };
                            json!({"debit_account_id": debit, "credit_account_id": credit, "amount": rng.gen_range(1..100), "currency": "GBP"})
                        };
                        match pattern {
                            Pattern::Batch(size) => {
                                let legs: Vec<Value> = (0..size).map(|_| leg(&mut rng)).collect();
                                (tenant, "/v1/transfers/batch", json!({ "transfers": legs }), size as u64)
                            }
                            Pattern::Payment => {
                                let body = json!({"amount": rng.gen_range(100..10_000), "currency": "GBP",
                                                  "payment_method": "pm_card_visa", "confirm": true});
                                (tenant, "/v1/payment_intents", body, 1)
                            }
                            Pattern::Payout => {
                                let body = json!({"beneficiary_id": accounts[0], "amount": 1, "currency": "GBP",
                                                  "reference": "BENCH PAYOUT"});
                                (tenant, "/v1/payouts", body, 1)
                            }
                            Pattern::Checkout => {
                                let body = json!({"lines": [{"product_id": accounts[0], "quantity": 1}],
                                                  "customer": {"name": "Bench Buyer", "email": "buyer@example.com",
                                                               "address": ["2 Bench Road"], "country": "GB"},
                                                  "payment_method": "pm_card_visa"});
                                (tenant, "/v1/checkouts", body, 1)
                            }
                            _ => (tenant, "/v1/transfers", leg(&mut rng), 1),
                        }
                    };
                    let sent = Instant::now();
                    let response = client
                        .post(format!("{base}{path}"))
                        .bearer_auth(&tenant.key)
                        .header("Idempotency-Key", rand_suffix())
                        .json(&body)
                        .send()
                        .await;
                    let status = response.as_ref().map(|r| r.status().as_u16()).unwrap_or(0);
                    if let Ok(response) = response {
                        let _ = response.bytes().await;
                    }
                    load.latencies_us.push(sent.elapsed().as_micros() as u64);
                    match status {
                        200 | 201 => load.transfers += count,
                        400..=499 => load.refused += count,
                        _ => load.failed += count,
                    }
                }
                load
            })
        })
        .collect();
    tokio::time::sleep(duration).await;
    stop.store(true, Ordering::Relaxed);
    let mut total = Load {
        from_wrk: false,
        transfers: 0,
        refused: 0,
        failed: 0,
        elapsed: Duration::ZERO,
        latencies_us: Vec::new(),
    };
    for task in tasks {
        if let Ok(load) = task.await {
            total.transfers += load.transfers;
            total.refused += load.refused;
            total.failed += load.failed;
            total.latencies_us.extend(load.latencies_us);
        }
    }
    total.elapsed = started.elapsed();
    total
}

/// A random factor with mean 1, exponentially distributed: the gaps between a client's
/// requests when paced, as from independent clients (a Poisson process). With a fixed
/// gap, the connections answered by one engine batch all waited the same time and sent
/// again at the same moment, so requests kept arriving in groups rather than at the
/// rate, and the paced phase's p50 was close to the unpaced one's: medians over one
/// day's runs of `till bench ledger`, 5.9 ms paced against 6.5 ms unpaced (13 runs);
/// with random gaps 4.4 ms against 6.8 ms (16 runs), at a somewhat higher paced rate.
fn exponential(rng: &mut impl rand::Rng) -> f64 {
    -(1.0 - rng.gen::<f64>()).ln()
}

/// Drives the load with wrk (a C load generator) when it is installed, so that the
/// client's own CPU use on a small machine does not decide the result. A generated Lua
/// script picks random accounts and a fresh Idempotency-Key per request; `delay_ms`
/// paces each connection: after each response it waits a random time with that mean
/// (see [`exponential`]), rounded to whole milliseconds (wrk's unit).
#[allow(clippy::too_many_arguments)]
pub(crate) async fn drive_wrk(
    wrk: &Path,
    base: &str,
    clients: usize,
    duration: Duration,
    tenants: &[Tenant],
    pattern: Pattern,
    delay_ms: Option<f64>,
) -> anyhow::Result<Load> {
    let (path, legs, hot) = match pattern {
        Pattern::Uniform => ("/v1/transfers", 0, false),
        Pattern::HotAccount => ("/v1/transfers", 0, true),
        Pattern::Batch(size) => ("/v1/transfers/batch", size, false),
        Pattern::Payment | Pattern::Payout | Pattern::Checkout => {
            anyhow::bail!("the payments load is driven from this process (drive)")
        }
    };
    // Keys and ids are plain tokens (letters, digits, `_` and `-`: ids and base64url): nothing to escape in Lua.
    let tenants: String = tenants
        .iter()
        .map(|tenant| {
            let ids: String = tenant.accounts.iter().map(|id| format!("\"{id}\",")).collect();
            format!("{{ key = \"{}\", accounts = {{ {ids} }} }},", tenant.key)
        })
        .collect();
    let script = format!(
        r#"
local tenants = {{ {tenants} }}
local accounts = tenants[1].accounts
local n = #accounts
local counter = 0
local prefix = ""
local threads = {{}}
function setup(thread) table.insert(threads, thread); thread:set("seed", math.random(1, 1000000000)) end
function init(args) math.randomseed(seed); prefix = tostring(seed) .. "-" .. tostring(os.time()) end
local function leg()
  local a = math.random(1, n)
  local b = math.random(1, n - 1)
  if b >= a then b = b + 1 end
  if {hot} then
    if a == 1 then b = 2 else b = 1 end
  end
  return '{{"debit_account_id":"' .. accounts[a] .. '","credit_account_id":"' .. accounts[b] .. '","amount":' .. math.random(1, 99) .. ',"currency":"GBP"}}'
end
function request()
  counter = counter + 1
  local tenant = tenants[math.random(1, #tenants)]
  accounts = tenant.accounts
  n = #accounts
  local body
  if {legs} > 0 then
    local parts = {{}}
    for i = 1, {legs} do parts[i] = leg() end
    body = '{{"transfers":[' .. table.concat(parts, ",") .. ']}}'
  else
    body = leg()
  end
  return wrk.format("POST", "{path}", {{["Authorization"] = "Bearer " .. tenant.key, ["Idempotency-Key"] = prefix .. "-" .. counter, ["Content-Type"] = "application/json"}}, body)
end
{delay}
function done(summary, latency, requests)
  io.write(string.format("TILLBENCH %d %d %d %d %d %d\n", summary.requests, summary.errors.status, summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout, summary.duration, latency:percentile(50), latency:percentile(99)))
end
"#,
        hot = if hot { "true" } else { "false" },
        delay = delay_ms
            .map(|ms| format!("function delay() return math.floor(-math.log(1 - math.random()) * {ms:.3} + 0.5) end"))
            .unwrap_or_default(),
    );
    let script_path = std::env::temp_dir().join(format!("till-bench-{}.lua", rand_suffix()));
    std::fs::write(&script_path, script)?;
    let output = tokio::process::Command::new(wrk)
        // wrk refuses more threads than connections.
        .args([
            "-t",
            &clients.clamp(1, 2).to_string(),
            "-c",
            &clients.to_string(),
            "-d",
            &format!("{}s", duration.as_secs()),
            "--latency",
            "-s",
        ])
        .arg(&script_path)
        .arg(base)
        .output()
        .await?;
    let _ = std::fs::remove_file(&script_path);
    let text = String::from_utf8_lossy(&output.stdout);
    let numbers: Vec<u64> = text
        .lines()
        .find_map(|line| line.strip_prefix("TILLBENCH "))
        .map(|rest| rest.split_whitespace().filter_map(|n| n.parse().ok()).collect())
        .with_context(|| format!("no summary in wrk's output: {text}{}", String::from_utf8_lossy(&output.stderr)))?;
    let [requests, non_2xx, socket_errors, duration_us, p50_us, p99_us] = numbers[..] else {
        bail!("unexpected wrk summary: {numbers:?}");
    };
    let per_request = if legs > 0 { legs as u64 } else { 1 };
    Ok(Load {
        from_wrk: true,
        transfers: requests.saturating_sub(non_2xx) * per_request,
        refused: non_2xx * per_request,
        failed: socket_errors,
        elapsed: Duration::from_micros(duration_us),
        // wrk reports percentiles, not samples: keep the two that are printed.
        latencies_us: vec![p50_us, p99_us],
    })
}

pub(crate) fn find_wrk() -> Option<std::path::PathBuf> {
    std::env::var_os("PATH")?.to_str()?.split(':').map(|dir| Path::new(dir).join("wrk")).find(|path| path.is_file())
}

/// The ledger-side cost of idempotency: the same commands through the engine with and
/// without Idempotency-Keys (a key adds a lookup and a stored response to each batch).
/// The HTTP side of the protocol (validating the header, hashing the body) is CPU work of
/// microseconds and is included in (2).
async fn idempotency_cost(args: &BenchLedgerArgs, url: &str, accounts: &[String]) -> anyhow::Result<()> {
    use std::str::FromStr;
    let options = sqlx::postgres::PgConnectOptions::from_str(url)?;
    let pool = till_db::connect_app_pool(options.clone(), 16).await?;
    let owner = till_db::connect_owner_pool(options, 1).await?;
    let business: uuid::Uuid =
        sqlx::query_scalar("SELECT business_id FROM ledger.accounts LIMIT 1").fetch_one(&owner).await?;
    owner.close().await;
    let business = till_kit::BusinessId::from_uuid(business);
    let ids: Arc<Vec<till_ledger::AccountId>> =
        Arc::new(accounts.iter().filter_map(|id| till_ledger::AccountId::parse(id).ok()).collect());
    let engine = till_ledger::engine::Engine::new(pool.clone())?;
    // Short runs, alternating, compared by their medians: on a machine whose speed drifts
    // (steal time), two long runs measured the drift more than the keys.
    let duration = Duration::from_secs((args.seconds / 4).max(1));
    let mut rates = Vec::new();
    for with_keys in [false, true].repeat(4) {
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicU64::new(0));
        let started = Instant::now();
        let tasks: Vec<_> = (0..args.clients)
            .map(|_| {
                let (engine, ids, stop, done) = (engine.clone(), ids.clone(), stop.clone(), done.clone());
                tokio::spawn(async move {
                    use rand::Rng;
                    while !stop.load(Ordering::Relaxed) {
                        let (a, b) = {
                            let mut rng = rand::thread_rng();
                            let a = rng.gen_range(0..ids.len());
                            (a, (a + 1 + rng.gen_range(0..ids.len() - 1)) % ids.len())
                        };
                        let command = till_ledger::domain::Command::Transfer(till_ledger::domain::NewTransfer {
                            id: till_ledger::TransferId::generate(),
                            debit_account: ids[a],
                            credit_account: ids[b],
                            amount: till_kit::Money::from_minor(1, till_kit::Currency::GBP),
                            hold: None,
                            description: None,
                            metadata: till_kit::Metadata::default(),
                        });
                        let context = with_keys.then(|| till_http::unit_of_work::IdempotencyContext {
                            scope: business.as_uuid().to_string(),
                            principal: "bench".into(),
                            role: Some(till_http::auth::Role::Finance),
                            key: rand_suffix(),
                            fingerprint: vec![0; 32],
                            method: "POST".into(),
                            path: "/v1/transfers".into(),
                        });
                        let caller = till_ledger::engine::Caller::Http {
                            idempotency: context,
                            request_id: String::new(),
                            render: till_ledger::view::render,
                        };
                        if let till_ledger::engine::Reply::Fresh { .. } = engine.submit(business, command, caller).await
                        {
                            done.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                })
            })
            .collect();
        tokio::time::sleep(duration).await;
        stop.store(true, Ordering::Relaxed);
        for task in tasks {
            let _ = task.await;
        }
        rates.push((with_keys, done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()));
    }
    let median = |keys: bool| {
        let mut picked: Vec<f64> = rates.iter().filter(|(k, _)| *k == keys).map(|(_, rate)| *rate).collect();
        picked.sort_by(f64::total_cmp);
        (picked[picked.len() / 2 - 1] + picked[picked.len() / 2]) / 2.0
    };
    let (without, with) = (median(false), median(true));
    println!(
        "   idempotency in the engine (medians of 4 alternating runs each): {without:.0}/s without keys, {with:.0}/s with: costs {:.1}% (goal <= 15%)",
        (1.0 - with / without) * 100.0
    );
    pool.close().await;
    Ok(())
}
