//! The ledger service: every movement of money in Till goes through here.
//!
//! TigerBeetle's debit/credit model on PostgreSQL:
//! - [`domain`]: accounts, transfers, holds and their rules, as a pure state machine that
//!   applies commands to a set of accounts and either changes them or refuses. No I/O.
//! - [`engine`]: the group-commit writer. Concurrent commands for one business are
//!   applied in one database transaction per batch, with per-command outcomes, so
//!   throughput does not depend on one row lock and one commit per transfer.
//! - [`posting`]: the typed API other services call, through the engine or inside a
//!   transaction they hold.
//! - [`store`]: the only module that knows the `ledger` schema's SQL.
//! - [`check`]: the invariant checker.
//! - [`api`]: HTTP handlers and bodies.

pub mod api;
pub mod check;
pub mod domain;
pub mod engine;
pub mod posting;
pub mod service;
pub mod store;
pub mod view;

pub static MIGRATIONS: till_db::SchemaMigrations = till_db::SchemaMigrations { schema: "ledger", migrator: &MIGRATOR };
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

till_kit::typed_id!(AccountId, "acct", "account", "A ledger account.");
till_kit::typed_id!(TransferId, "tr", "transfer", "A ledger transfer.");
till_kit::typed_id!(
    EntryId,
    "ent",
    "entry",
    "One movement on one account: a side of a transfer, or of a hold's resolution."
);
