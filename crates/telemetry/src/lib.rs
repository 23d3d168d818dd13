//! Structured logs with `tracing`: JSON lines when stderr is not a terminal (production,
//! CI, log shippers), human-readable lines when it is. The filter comes from `RUST_LOG`
//! (default `info`).
//!
//! What is logged is decided at the call sites: request spans carry the request id,
//! method, path, status and business id; secrets are `Secret<T>` (masked) and request or
//! response bodies are never logged, so no key, token or personal data reaches the logs.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber. Safe to call more than once (later calls do nothing),
/// which the test harness relies on.
pub fn init() {
    init_with_default("info,sqlx=warn");
}

/// Like [`init`], with another filter when `RUST_LOG` is unset (tests use `warn`).
pub fn init_with_default(default_filter: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _already_installed = if std::io::stderr().is_terminal() {
        builder.try_init()
    } else {
        builder.json().flatten_event(true).with_current_span(true).with_span_list(false).try_init()
    };
}
