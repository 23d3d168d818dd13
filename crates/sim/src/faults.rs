//! Faults armed through the control API, taken by the provider's handlers one call at a
//! time: the first armed fault matching (provider, operation) applies to the next call and
//! counts down; at zero it is gone.

use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

/// What goes wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// No reply within `delay_ms` (default 30 s), then a 504; the effect is not applied.
    Timeout,
    /// The effect is applied, then no reply within `delay_ms`, then a 504.
    TimeoutAfterEffect,
    /// A 500 with the provider's error body; no effect.
    #[serde(rename = "error_500")]
    Error500,
    /// A 429 with `Retry-After: 1`; no effect.
    #[serde(rename = "error_429")]
    Error429,
    /// The effect is applied and a 200 answered with a body that is not the API's shape.
    Malformed,
    /// The effect is applied; the reply's amount is one minor unit more than the truth.
    WrongAmount,
    /// The effect is applied; the reply's currency is not the object's.
    WrongCurrency,
    /// The effect is applied; the reply's status is one the API does not have.
    UnknownStatus,
    /// A webhook (operation `webhook`) is never sent.
    WebhookDrop,
    /// A webhook is sent twice.
    WebhookDuplicate,
    /// A webhook is sent after `delay_ms` (default 2 s); later ones go ahead of it.
    WebhookDelay,
    /// A webhook is held back and sent right after the next one.
    WebhookReorder,
    /// A payout rail's create: the payment is paid, then returned by the beneficiary's
    /// bank a moment later.
    ReturnAfterPaid,
    /// A payout rail's create: the outcome stays undecided (IMPS "deemed", a payment
    /// held at the scheme) until `POST /_sim/{provider}/settle`.
    Deemed,
    /// A CRM's sessions end: every access token issued so far stops working (401).
    SessionExpired,
    /// A CRM's API limit is used up (Salesforce's 403 `REQUEST_LIMIT_EXCEEDED`); no effect.
    RequestLimit,
    /// A CRM refuses one record by a validation rule of the org; no effect.
    ValidationError,
    /// A CRM refuses one record as a duplicate of another; no effect.
    DuplicateValue,
}

impl FaultKind {
    /// Its name in the control API (what serde reads and writes).
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Timeout => "timeout",
            FaultKind::TimeoutAfterEffect => "timeout_after_effect",
            FaultKind::Error500 => "error_500",
            FaultKind::Error429 => "error_429",
            FaultKind::Malformed => "malformed",
            FaultKind::WrongAmount => "wrong_amount",
            FaultKind::WrongCurrency => "wrong_currency",
            FaultKind::UnknownStatus => "unknown_status",
            FaultKind::WebhookDrop => "webhook_drop",
            FaultKind::WebhookDuplicate => "webhook_duplicate",
            FaultKind::WebhookDelay => "webhook_delay",
            FaultKind::WebhookReorder => "webhook_reorder",
            FaultKind::ReturnAfterPaid => "return_after_paid",
            FaultKind::Deemed => "deemed",
            FaultKind::SessionExpired => "session_expired",
            FaultKind::RequestLimit => "request_limit",
            FaultKind::ValidationError => "validation_error",
            FaultKind::DuplicateValue => "duplicate_value",
        }
    }

    /// Whether the effect happens before the fault shows.
    pub fn applies_effect(self) -> bool {
        !matches!(
            self,
            FaultKind::Timeout
                | FaultKind::Error500
                | FaultKind::Error429
                | FaultKind::SessionExpired
                | FaultKind::RequestLimit
                | FaultKind::ValidationError
                | FaultKind::DuplicateValue
        )
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fault {
    pub provider: String,
    pub operation: String,
    pub fault: FaultKind,
    /// How many calls it applies to (default 1).
    #[serde(default = "one")]
    pub count: u32,
    /// For the timeouts: how long the call hangs before its 504.
    #[serde(default)]
    pub delay_ms: Option<u64>,
}

fn one() -> u32 {
    1
}

pub const TIMEOUT_DEFAULT_MS: u64 = 30_000;

#[derive(Clone, Default)]
pub struct Faults(Arc<Mutex<Vec<Fault>>>);

impl Faults {
    pub fn arm(&self, fault: Fault) {
        if fault.count > 0 {
            self.lock().push(fault);
        }
    }

    pub fn clear(&self) {
        self.lock().clear();
    }

    /// The fault for this call of (provider, operation), if one is armed; counts it down.
    pub fn take(&self, provider: &str, operation: &str) -> Option<Fault> {
        let mut faults = self.lock();
        let index = faults.iter().position(|fault| fault.provider == provider && fault.operation == operation)?;
        let taken = faults[index].clone();
        faults[index].count = faults[index].count.saturating_sub(1);
        if faults[index].count == 0 {
            faults.remove(index);
        }
        Some(taken)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Fault>> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fault(operation: &str, count: u32) -> Fault {
        Fault {
            provider: "stripe".into(),
            operation: operation.into(),
            fault: FaultKind::Error500,
            count,
            delay_ms: None,
        }
    }

    #[test]
    fn a_fault_applies_to_count_calls_of_its_operation_only() {
        let faults = Faults::default();
        faults.arm(fault("capture", 2));
        assert!(faults.take("stripe", "confirm").is_none());
        assert!(faults.take("razorpay", "capture").is_none());
        assert!(faults.take("stripe", "capture").is_some());
        assert!(faults.take("stripe", "capture").is_some());
        assert!(faults.take("stripe", "capture").is_none());
        faults.arm(fault("capture", 5));
        faults.clear();
        assert!(faults.take("stripe", "capture").is_none());
    }

    #[test]
    fn every_kind_reads_and_writes_as_its_name() {
        use FaultKind::*;
        for kind in [
            Timeout,
            TimeoutAfterEffect,
            Error500,
            Error429,
            Malformed,
            WrongAmount,
            WrongCurrency,
            UnknownStatus,
            WebhookDrop,
            WebhookDuplicate,
            WebhookDelay,
            WebhookReorder,
            ReturnAfterPaid,
            Deemed,
            SessionExpired,
            RequestLimit,
            ValidationError,
            DuplicateValue,
        ] {
            let written = serde_json::to_value(kind).expect("json");
            assert_eq!(written, serde_json::json!(kind.name()));
            assert_eq!(serde_json::from_value::<FaultKind>(written).expect("read"), kind);
        }
    }
}
