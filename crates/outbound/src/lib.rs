//! The outbound kit: the one way Till calls an outside party (a gateway, a bank rail, an
//! SMS or e-mail provider, a CRM, an error tracker), so that resilience is built once.
//!
//! A [`Dependency`] is one party: its base URL and credentials (masked), connect and
//! per-attempt timeouts, bounded concurrency, retries with full-jitter backoff
//! ([`backoff`]) under a retry budget ([`budget`]), and a circuit breaker ([`breaker`])
//! whose state callers can read. [`Dependency::call`] hands the reply to the caller's
//! validation, which turns it into a domain value or an [`InvalidReply`]: nothing acts on
//! a reply that was not validated. Failures are [`OutboundError`]s, which say whether the
//! party may have acted and map to the API's 502/503/504 problems.
//!
//! E-mail goes out the same way, through [`mail::Mailer`] (SMTP, one attempt per send).
//!
//! Webhooks to merchants are not outside parties of this kind: their addresses are chosen
//! by tenants and go through the SSRF guard of `till-webhooks`.

pub mod backoff;
pub mod breaker;
pub mod budget;
mod client;
mod error;
pub mod mail;

pub use client::{Credentials, Dependency, DependencyConfig, OutboundRequest, Reply};
pub use error::{InvalidReply, Names, OutboundError};
/// The types a caller needs to build requests, so that no service depends on the HTTP
/// client itself.
pub use reqwest::header::HeaderName;
pub use reqwest::{Method, StatusCode, Url};
