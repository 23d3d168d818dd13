//! The payouts service: a business pays suppliers and itself out of its Till balance.
//! Money leaves the platform here, so every payout ends exactly once: paid, or failed
//! with the funds back, whatever the rail, the network or Till itself does in between.
//!
//! - [`modulus`]: UK modulus checking (Vocalink's algorithm and tables; pure).
//! - [`beneficiary`]: who is paid, checked offline before anything is stored (pure).
//! - [`rail`]: what Till asks of a payout rail, with one adapter per provider
//!   ([`rail::fps`]: Faster Payments with Confirmation of Payee; [`rail::razorpayx`]:
//!   IMPS and UPI in India, with fund-account validation).
//! - [`rail_webhooks`]: the rails' webhooks, hints that make a payout's next step due.
//! - [`api`]: the routes. A payout's creation writes the payout and its ledger hold in
//!   one transaction; nothing outside is called in the request.
//! - [`ledger`]: the hold on the merchant's available balance, posted, voided or
//!   reversed as the rail decides.
//! - [`saga`]: the durable worker that sends each payout and follows it to its end.
//! - [`check`]: the payout invariants against the ledger (`GET /v1/payouts/check`).
//! - [`store`]: the schema's SQL. [`service`]: the registration.

pub mod api;
pub mod beneficiary;
pub mod check;
pub mod ledger;
pub mod modulus;
pub mod policy;
pub mod rail;
pub mod rail_webhooks;
pub mod saga;
pub mod service;
pub mod store;

pub use service::{FpsSettings, PayoutsConfig, RazorpayXSettings};

pub static MIGRATIONS: till_db::SchemaMigrations = till_db::SchemaMigrations { schema: "payouts", migrator: &MIGRATOR };
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

till_kit::typed_id!(BeneficiaryId, "ben", "beneficiary", "Someone a business pays: a bank account or a UPI address.");
till_kit::typed_id!(PayoutId, "po", "payout", "Money paid out of a business's available balance to a beneficiary.");
