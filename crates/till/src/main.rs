//! The `till` command line.
//!
//! - `till up`: provisions (or reuses) an embedded PostgreSQL, migrates, creates a demo
//!   business on the first start, and serves the API until Ctrl-C or SIGTERM.
//! - `till admin create-business`: creates a business and its owner key, in the same
//!   database `till up` uses.

mod bench;
mod bench_events;
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
            cli::Command::Up(args) => up::run(args).await,
            cli::Command::Admin(cli::AdminCommand::CreateBusiness(args)) => up::create_business(args).await,
            cli::Command::Ledger(cli::LedgerCommand::Check(args)) => up::check_ledger(args).await,
            cli::Command::Bench(cli::BenchCommand::Ledger(args)) => bench::ledger(args).await,
            cli::Command::Bench(cli::BenchCommand::Events(args)) => bench_events::events(args).await,
            cli::Command::Events(cli::EventsCommand::Backlog(args)) => up::events_backlog(args).await,
            cli::Command::Events(cli::EventsCommand::DeadLetters(args)) => up::dead_letters(args).await,
            cli::Command::Events(cli::EventsCommand::ReplayDeadLetters(args)) => up::replay_dead_letters(args).await,
        }
    })
}
