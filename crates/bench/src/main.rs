//! `till-bench`: Till's benchmarks, kept out of the product binary.
//!
//! Each benchmark provisions its own throwaway PostgreSQL, starts the `till` binary as a
//! separate process on it (so the server's CPU and peak RSS are its own), and reports its
//! figures as ratios to a baseline measured in the same run (pgbench's TPC-B for the
//! ledger). `till bench …` runs this binary when it is built beside `till`.
//!
//! - `till-bench ledger`: the ledger through the HTTP API against pgbench.
//! - `till-bench events`: the events backbone under the ledger's load.
//! - `till-bench payments`: payment intents through the simulator against single
//!   transfers, and the outbound kit's own cost on a gateway call.
//! - `till-bench quote`: the pricing engine alone, in process (no server).
//! - `till-bench checkout`: checkouts end to end (quote to invoice) through the
//!   simulator, against single transfers.

mod checkout;
mod events;
mod ledger;
mod payments;
mod payouts;
mod quote;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "till-bench", version, about = "Till's benchmarks, as ratios to a baseline measured in the same run.")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Which `till` to measure.
#[derive(Debug, Clone, Args)]
pub struct Target {
    /// The `till` binary to start as the server (default: the one beside this binary).
    #[arg(long, env = "TILL_BENCH_TILL")]
    pub till: Option<PathBuf>,
}

impl Target {
    /// The `till` binary: as given, or the one built beside this binary.
    pub fn binary(&self) -> anyhow::Result<PathBuf> {
        if let Some(till) = &self.till {
            return Ok(till.clone());
        }
        let beside = std::env::current_exe()?.with_file_name("till");
        anyhow::ensure!(
            beside.is_file(),
            "no till binary at {}: build it (cargo build --release) or pass --till",
            beside.display()
        );
        Ok(beside)
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// The ledger through the HTTP API against pgbench TPC-B on the same PostgreSQL.
    Ledger(BenchLedgerArgs),
    /// The events backbone under the ledger's load: relay and publisher rates, and the
    /// latency from commit to consumer, on the embedded bus and on RabbitMQ.
    Events(BenchEventsArgs),
    /// Payment intents (create + confirm) through the simulator, against single
    /// transfers of the same run, and the outbound kit's cost per gateway call.
    Payments(BenchPaymentsArgs),
    /// Payouts through the simulator's Faster Payments rail to paid, against single
    /// transfers of the same run.
    Payouts(BenchPayoutsArgs),
    /// The pricing engine alone, in process: 10-line UK and India quotes, per quote.
    Quote(BenchQuoteArgs),
    /// Checkouts end to end (quote, reservation, authorisation, capture, commit,
    /// invoice) through the simulator, against single transfers of the same run.
    Checkout(BenchCheckoutArgs),
}

#[derive(Debug, Args)]
pub struct BenchCheckoutArgs {
    #[command(flatten)]
    pub target: Target,
    /// Concurrent HTTP clients.
    #[arg(long, default_value_t = 32)]
    pub clients: usize,
    /// Seconds per measured phase.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Accounts the transfers spread over.
    #[arg(long, default_value_t = 2_000)]
    pub accounts: usize,
    /// Load pg_stat_statements into the benchmark's PostgreSQL and print, after phase 2,
    /// the statements that took the most of its time.
    #[arg(long)]
    pub profile: bool,
}

#[derive(Debug, Args)]
pub struct BenchQuoteArgs {
    /// Timed batches; the median and p99 are over batches.
    #[arg(long, default_value_t = 400)]
    pub batches: usize,
    /// Quotes per batch.
    #[arg(long, default_value_t = 500)]
    pub batch: u32,
}

#[derive(Debug, Args)]
pub struct BenchPayoutsArgs {
    #[command(flatten)]
    pub target: Target,
    /// Concurrent HTTP clients.
    #[arg(long, default_value_t = 32)]
    pub clients: usize,
    /// Seconds per measured phase.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Accounts the transfers spread over.
    #[arg(long, default_value_t = 2_000)]
    pub accounts: usize,
    /// Businesses phase 4 spreads the payouts over, each funded on its own.
    #[arg(long, default_value_t = 8)]
    pub businesses: usize,
    /// Load pg_stat_statements into the benchmark's PostgreSQL and print, after phases
    /// 2 and 4, the statements that took the most of its time.
    #[arg(long)]
    pub profile: bool,
}

#[derive(Debug, Args)]
pub struct BenchPaymentsArgs {
    #[command(flatten)]
    pub target: Target,
    /// Concurrent HTTP clients.
    #[arg(long, default_value_t = 32)]
    pub clients: usize,
    /// Seconds per measured phase.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Accounts the transfers spread over.
    #[arg(long, default_value_t = 2_000)]
    pub accounts: usize,
    /// Businesses the spread payments load is shared among.
    #[arg(long, default_value_t = 32)]
    pub businesses: usize,
    /// Sequential gateway calls timed for the outbound kit's cost.
    #[arg(long, default_value_t = 2_000)]
    pub calls: u32,
}

#[derive(Debug, Args)]
pub struct BenchEventsArgs {
    #[command(flatten)]
    pub target: Target,
    /// Concurrent HTTP clients of the ledger load.
    #[arg(long, default_value_t = 32)]
    pub clients: usize,
    /// Seconds of load per bus.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Accounts the load spreads over.
    #[arg(long, default_value_t = 2_000)]
    pub accounts: usize,
    /// Synthetic events for the relay-alone measurement.
    #[arg(long, default_value_t = 100_000)]
    pub relay_events: u32,
    /// Use this RabbitMQ instead of starting a private node.
    #[arg(long)]
    pub broker_url: Option<String>,
}

#[derive(Debug, Args)]
pub struct BenchLedgerArgs {
    #[command(flatten)]
    pub target: Target,
    /// Concurrent clients, for pgbench and for Till.
    #[arg(long, default_value_t = 32)]
    pub clients: usize,
    /// Seconds per measured phase.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Accounts the uniform load spreads over.
    #[arg(long, default_value_t = 10_000)]
    pub accounts: usize,
    /// pgbench's scale factor (branches); at least the client count avoids branch contention.
    #[arg(long, default_value_t = 32)]
    pub pgbench_scale: u32,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    till_telemetry::init();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        match cli.command {
            Command::Ledger(args) => ledger::ledger(args).await,
            Command::Events(args) => events::events(args).await,
            Command::Payments(args) => payments::payments(args).await,
            Command::Payouts(args) => payouts::payouts(args).await,
            Command::Quote(args) => quote::quote(&args),
            Command::Checkout(args) => checkout::checkout(args).await,
        }
    })
}
