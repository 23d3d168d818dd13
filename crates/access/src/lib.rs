//! The access service: who the tenants are and who may act for them.
//!
//! - [`domain`]: businesses, countries, tax registrations (UK VAT numbers, Indian GSTINs)
//!   and API key secrets. Pure: no I/O, no HTTP, no SQL.
//! - [`jwt`]: strict verification of dashboard users' bearer tokens.
//! - [`store`]: the only module that knows this service's SQL (schema `access`).
//! - [`authn`]: the middlewares that turn credentials into a `Principal` (tenant routes)
//!   or the platform scope (platform routes), and record failure bursts in the audit log.
//! - [`api`]: the HTTP handlers, request and response bodies.
//! - [`audit`]: the audit log as other services write to it, in process.
//! - [`business`]: a business's profile (country, tax registration) as other services read it.

pub mod api;
pub mod audit;
pub mod authn;
pub mod business;
pub mod domain;
pub mod jwt;
pub mod service;
pub mod store;

pub static MIGRATIONS: till_db::SchemaMigrations = till_db::SchemaMigrations { schema: "access", migrator: &MIGRATOR };
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");
