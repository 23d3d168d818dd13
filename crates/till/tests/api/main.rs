//! Black-box tests of the HTTP API: the real server on a loopback port, a real
//! PostgreSQL (one cluster per run, a fresh database per test). One binary, so the
//! cluster is started once.

mod auth;
mod broker;
mod bus_helpers;
mod checkout;
mod commerce;
mod conventions;
mod crm;
mod events;
mod gateway_webhooks;
mod idempotency;
mod ledger;
mod ledger_concurrency;
mod ledger_helpers;
mod notifications;
mod operations;
mod payments;
mod payouts;
mod payouts_india;
mod posting;
mod razorpay;
mod recovery;
mod roles;
mod salesforce_sim;
mod security;
mod settlement;
mod support;
mod tenancy;
mod webhooks;
