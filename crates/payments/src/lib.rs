//! The payments service: payment intents through gateways, with every money-moving step
//! in the ledger in the same transaction as the intent's own change and its event.
//!
//! - [`gateway`]: what Till asks of a payment gateway and what it accepts back, as typed
//!   values ([`gateway::GatewayIntent`], [`gateway::Decline`]), with one adapter per
//!   provider ([`gateway::stripe`]). An adapter calls its provider only through the
//!   outbound kit and validates every reply before anything acts on it: a reply that
//!   names another object, another amount or currency, a status the API does not have,
//!   or a malformed body is an `InvalidReply`, never a defaulted field.
//! - [`domain`]: the intent's statuses (pure).
//! - [`api`]: the routes, phased around each gateway call (`till_http::recovery`).
//! - [`ledger`]: the accounts and postings, by construction (a capture posts a hold the
//!   ledger bounds; refunds take from an account with a floor of zero).
//! - [`provider_webhooks`]: Stripe's webhooks, verified, recorded once, and used to
//!   hurry a step in flight or to flag a move Till did not make; never posted from.
//! - [`settlement`]: the gateway's payouts, reconciled line by line with Till's
//!   captures, fees and refunds; what matches becomes available, the rest exceptions.
//! - [`check`]: the payment invariants against the ledger (`GET /v1/payments/check`).
//! - [`store`]: the schema's SQL. [`service`]: the registration.

pub mod api;
pub mod balance;
pub mod check;
pub mod domain;
pub mod gateway;
pub mod ledger;
pub mod provider_webhooks;
pub mod refunds;
pub mod service;
pub mod settlement;
pub mod store;

pub use service::{PaymentsConfig, RazorpaySettings, StripeSettings};

pub static MIGRATIONS: till_db::SchemaMigrations =
    till_db::SchemaMigrations { schema: "payments", migrator: &MIGRATOR };
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

till_kit::typed_id!(
    PaymentIntentId,
    "pi",
    "payment intent",
    "A payment intent: one payment, from creation to capture."
);
till_kit::typed_id!(RefundId, "re", "refund", "A refund of a captured payment intent.");
till_kit::typed_id!(
    SettlementId,
    "stl",
    "settlement",
    "One business's part of a gateway's payout: its matched lines, settled from pending to available."
);
till_kit::typed_id!(
    ReconciliationExceptionId,
    "rcx",
    "reconciliation exception",
    "A settlement line that did not match what Till recorded."
);
