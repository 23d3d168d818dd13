//! The call log: every request a provider received, oldest first, with what it answered.

use std::sync::{Arc, Mutex};

use serde::Serialize;
use time::OffsetDateTime;

/// Calls kept; the oldest are forgotten past this, so a long demo cannot grow without end.
const CALLS_MAX: usize = 10_000;

#[derive(Debug, Clone, Serialize)]
pub struct Call {
    pub provider: &'static str,
    pub operation: &'static str,
    pub idempotency_key: Option<String>,
    /// The request body as received (form or JSON text), lossily decoded.
    pub body: String,
    /// The status answered; `None` when the fault was to never answer.
    pub status: Option<u16>,
    /// The fault applied, if one was.
    pub fault: Option<&'static str>,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
}

#[derive(Clone, Default)]
pub struct Calls(Arc<Mutex<std::collections::VecDeque<Call>>>);

impl Calls {
    pub fn record(&self, call: Call) {
        let mut calls = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if calls.len() == CALLS_MAX {
            calls.pop_front();
        }
        calls.push_back(call);
    }

    pub fn list(&self, provider: Option<&str>) -> Vec<Call> {
        let calls = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        calls.iter().filter(|call| provider.is_none_or(|name| call.provider == name)).cloned().collect()
    }
}
