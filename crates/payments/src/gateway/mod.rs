//! What Till asks of a payment gateway, and the only shapes of answer it acts on.
//!
//! Every call is one Till step (create, confirm, capture, cancel, refund, retrieve), so
//! that a fault can target each and a retry of one step repeats exactly that call with
//! the same provider idempotency key. An adapter returns, for each call:
//! - `Ok(Answer::Done(value))`: the gateway did it; `value` was validated against what
//!   Till asked (the object's id, amount, currency; a known status);
//! - `Ok(Answer::Declined { .. })`: the payment method was declined, with the gateway's
//!   reason and its intent as it now is (validated like any other);
//! - `Ok(Answer::Refused(..))`: the gateway refused the request itself (a 4xx: the
//!   intent was in the wrong state, the amount too large); nothing happened;
//! - `Err(OutboundError)`: no answer to act on: unavailable (nothing was sent), timed out
//!   (it may have acted: settle by retrying with the same key or by retrieving), or an
//!   invalid reply (it may have acted, and what it said cannot be trusted).

pub mod stripe;

use till_kit::Money;

/// When the authorised amount is captured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaptureMethod {
    /// At once, on a successful confirm.
    Automatic,
    /// By an explicit capture, of at most the authorised amount, once.
    Manual,
}

impl CaptureMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            CaptureMethod::Automatic => "automatic",
            CaptureMethod::Manual => "manual",
        }
    }
}

/// An intent's status at the gateway: Stripe's seven, which Till's intents follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GatewayStatus {
    RequiresPaymentMethod,
    RequiresConfirmation,
    RequiresAction,
    Processing,
    RequiresCapture,
    Canceled,
    Succeeded,
}

/// A payment method's decline, as the gateway gave it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decline {
    /// The gateway's error code (`card_declined`).
    pub code: String,
    /// The issuer's reason (`insufficient_funds`), when the gateway has one.
    pub decline_code: Option<String>,
    pub message: String,
}

/// A request the gateway refused outright: nothing happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: Option<String>,
    pub param: Option<String>,
    pub message: String,
}

/// An intent as the gateway holds it, validated against what Till knows of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayIntent {
    /// The gateway's id (`pi_…`).
    pub id: String,
    pub status: GatewayStatus,
    pub amount: Money,
    /// Authorised and not yet captured.
    pub capturable: Money,
    /// Captured.
    pub received: Money,
    /// The charge that carries the money (and, at Stripe, the fee).
    pub charge: Option<String>,
    /// The last decline, while the intent waits for another payment method.
    pub decline: Option<Decline>,
}

/// A refund's status at the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefundStatus {
    Pending,
    RequiresAction,
    Succeeded,
    Failed,
    Canceled,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayRefund {
    pub id: String,
    pub amount: Money,
    pub status: RefundStatus,
}

/// A gateway's answer to one call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer<T> {
    Done(T),
    Declined { decline: Decline, intent: GatewayIntent },
    Refused(Refusal),
}

/// A new intent, as Till asks a gateway for one.
#[derive(Debug, Clone)]
pub struct NewIntent {
    pub amount: Money,
    pub capture_method: CaptureMethod,
    /// Till's intent id, so that the gateway's dashboard can be matched to Till's.
    pub reference: String,
    pub description: Option<String>,
}

/// A payout the gateway made to the platform's bank: the head of a settlement report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayPayout {
    /// The gateway's id (`po_…`).
    pub id: String,
    /// What it paid: the net of its lines.
    pub amount: Money,
    /// When (Unix seconds, as the gateway gives it).
    pub created: i64,
}

/// One page of a gateway's payouts, newest first.
#[derive(Debug, Clone)]
pub struct PayoutPage {
    pub payouts: Vec<GatewayPayout>,
    pub has_more: bool,
}

/// What a settlement line records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineKind {
    /// A captured charge (`source` is its `ch_…`), less its fee.
    Charge,
    /// A refund (`source` is its `re_…`), a negative amount.
    Refund,
    /// The payout's own line (minus what it paid out).
    Payout,
    /// Anything else the gateway reports (an adjustment, a dispute): Till has no record of
    /// it, so it is an exception.
    Other,
}

/// One line of a settlement report, validated: its figures add up (`net = amount - fee`)
/// and it is in the payout's currency.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettlementLine {
    /// The gateway's id of the line (`txn_…`).
    pub id: String,
    pub kind: LineKind,
    /// The gateway's id of what it records.
    pub source: String,
    pub amount: Money,
    pub fee: Money,
    pub net: Money,
}
