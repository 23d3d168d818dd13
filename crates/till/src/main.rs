//! The `till` command line.
//!
//! - `till up`: provisions (or reuses) an embedded PostgreSQL, migrates, creates a demo
//!   business on the first start, and serves the API until Ctrl-C or SIGTERM.
//! - `till admin create-business`: creates a business and its owner key, in the same
//!   database `till up` uses.
//! - `till sim`: the simulator of the outside world alone.
//! - `till bench …`: runs the `till-bench` binary built beside this one (the benchmarks
//!   are not part of the product binary).

mod cli;
mod database;
mod up;

use clap::Parser;

fn main() -> anyhow::Result<()> {
    let cli = cli::Cli::parse();
    till_telemetry::init();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        match cli.command {
            cli::Command::Up(args) => up::run(*args).await,
            cli::Command::Admin(cli::AdminCommand::CreateBusiness(args)) => up::create_business(args).await,
            cli::Command::Ledger(cli::LedgerCommand::Check(args)) => up::check_ledger(args).await,
            cli::Command::Bench { args } => bench(args),
            cli::Command::Sim(args) => up::sim(args).await,
            cli::Command::Events(cli::EventsCommand::Backlog(args)) => up::events_backlog(args).await,
            cli::Command::Crm(cli::CrmCommand::Status(args)) => up::crm_status(args).await,
            cli::Command::Crm(cli::CrmCommand::Replay(args)) => up::crm_replay(args).await,
            cli::Command::Events(cli::EventsCommand::DeadLetters(args)) => up::dead_letters(args).await,
            cli::Command::Events(cli::EventsCommand::ReplayDeadLetters(args)) => up::replay_dead_letters(args).await,
        }
    })
}

/// Runs `till-bench` from beside this binary with `args`, telling it which `till` to
/// measure, and exits with its status.
fn bench(args: Vec<std::ffi::OsString>) -> anyhow::Result<()> {
    let till = std::env::current_exe()?;
    let bench = till.with_file_name("till-bench");
    if !bench.is_file() {
        anyhow::bail!(
            "the benchmarks are a binary of their own and {} is not built: run `cargo build --release -p till-bench` \
             (or `cargo run --release -p till-bench -- ledger`)",
            bench.display()
        );
    }
    let status = std::process::Command::new(&bench).args(&args).env("TILL_BENCH_TILL", &till).status()?;
    std::process::exit(status.code().unwrap_or(1));
}
