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

pub mod razorpay;
pub mod stripe;

use till_kit::{Currency, Money};
use till_outbound::{Dependency, Names, OutboundError};

/// The gateways Till has an adapter for, by the name stored on each intent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GatewayKind {
    Stripe,
    Razorpay,
}

impl GatewayKind {
    pub const ALL: [GatewayKind; 2] = [GatewayKind::Stripe, GatewayKind::Razorpay];

    pub fn as_str(self) -> &'static str {
        match self {
            GatewayKind::Stripe => "stripe",
            GatewayKind::Razorpay => "razorpay",
        }
    }

    pub fn parse(text: &str) -> Option<GatewayKind> {
        GatewayKind::ALL.into_iter().find(|kind| kind.as_str() == text)
    }

    /// Its name for people (`Stripe`), in ledger account names and messages.
    pub fn title(self) -> &'static str {
        match self {
            GatewayKind::Stripe => "Stripe",
            GatewayKind::Razorpay => "Razorpay",
        }
    }

    /// Its names in the outbound kit's problems.
    pub fn names(self) -> Names {
        match self {
            GatewayKind::Stripe => stripe::NAMES,
            GatewayKind::Razorpay => razorpay::NAMES,
        }
    }

    /// The gateway of a stored intent or refund (`stripe` for anything it does not know,
    /// which the database's check makes impossible).
    pub fn of_stored(text: &str) -> GatewayKind {
        GatewayKind::parse(text).unwrap_or(GatewayKind::Stripe)
    }

    /// The default route: rupees through Razorpay (UPI), everything else through Stripe.
    pub fn for_currency(currency: Currency) -> GatewayKind {
        if currency.code() == "INR" {
            GatewayKind::Razorpay
        } else {
            GatewayKind::Stripe
        }
    }
}

/// The adapters, one per gateway, that the service routes each intent to.
#[derive(Debug, Clone)]
pub struct Gateways {
    pub stripe: std::sync::Arc<dyn Gateway>,
    pub razorpay: std::sync::Arc<dyn Gateway>,
}

impl Gateways {
    pub fn get(&self, kind: GatewayKind) -> &std::sync::Arc<dyn Gateway> {
        match kind {
            GatewayKind::Stripe => &self.stripe,
            GatewayKind::Razorpay => &self.razorpay,
        }
    }
}

/// How the customer pays: what a gateway is asked to confirm with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PaymentMethod {
    /// A Stripe payment method id (`pm_card_visa`).
    Card(String),
    /// A UPI collect request to the customer's virtual payment address (`name@bank`).
    Upi { vpa: String },
}

impl PaymentMethod {
    /// As it is stored on the intent: the `pm_…` id, or `upi:{vpa}`.
    pub fn stored(&self) -> String {
        match self {
            PaymentMethod::Card(id) => id.clone(),
            PaymentMethod::Upi { vpa } => format!("upi:{vpa}"),
        }
    }

    pub fn from_stored(text: &str) -> PaymentMethod {
        match text.strip_prefix("upi:") {
            Some(vpa) => PaymentMethod::Upi { vpa: vpa.to_string() },
            None => PaymentMethod::Card(text.to_string()),
        }
    }
}

/// One payment gateway, behind the same steps whatever its protocol. Every method is one
/// Till step (a fault can target each), validates every reply against what Till asked,
/// and makes its effect at most once for one `key`, however often it is called with it:
/// with the gateway's own idempotency key where it has one (Stripe), or by finding the
/// effect an earlier call made before making it again where it has none (Razorpay).
#[async_trait::async_trait]
pub trait Gateway: Send + Sync + std::fmt::Debug {
    fn kind(&self) -> GatewayKind;
    /// The kit's dependency (its breaker's state, its names for problems).
    fn dependency(&self) -> &Dependency;
    fn names(&self) -> Names {
        self.dependency().names()
    }
    /// Whether it takes `method` (Stripe cards, Razorpay UPI), and in `currency`.
    fn accepts(&self, method: &PaymentMethod, currency: Currency) -> bool;
    /// Makes the gateway's object for a new intent (not yet confirmed).
    async fn create(&self, new: &NewIntent, key: &str) -> Result<Answer<GatewayIntent>, OutboundError>;
    /// Confirms (authorises) with `method`; `email` is the customer's, when known.
    async fn confirm(
        &self,
        id: &str,
        amount: Money,
        method: &PaymentMethod,
        email: Option<&str>,
        key: &str,
    ) -> Result<Answer<GatewayIntent>, OutboundError>;
    /// Captures `to_capture` of the authorised amount (all of it when `None`).
    async fn capture(
        &self,
        id: &str,
        amount: Money,
        to_capture: Option<Money>,
        key: &str,
    ) -> Result<Answer<GatewayIntent>, OutboundError>;
    async fn cancel(&self, id: &str, amount: Money, key: &str) -> Result<Answer<GatewayIntent>, OutboundError>;
    /// The intent as the gateway holds it now (status sync).
    async fn retrieve(&self, id: &str, amount: Money) -> Result<Answer<GatewayIntent>, OutboundError>;
    /// Refunds `amount` of the captured money; `charge` is the captured charge or payment.
    async fn refund(
        &self,
        intent: &str,
        charge: Option<&str>,
        amount: Money,
        key: &str,
    ) -> Result<Answer<GatewayRefund>, OutboundError>;
    /// The fee the gateway charged on a captured charge, tax included.
    async fn fee(&self, charge: &str, currency: Currency) -> Result<Money, OutboundError>;
    /// One page of paid payouts (settlements), newest first, from `cursor` (the last
    /// page's `next`).
    async fn payouts(&self, cursor: Option<&str>) -> Result<PayoutPage, OutboundError>;
    /// Every line of a payout's settlement report.
    async fn payout_lines(&self, payout: &GatewayPayout) -> Result<Vec<SettlementLine>, OutboundError>;
}

/// A gateway's webhook, verified and parsed: a hint about one of its objects.
#[derive(Debug, Clone)]
pub struct Event {
    pub gateway: GatewayKind,
    /// The gateway's event id (`evt_…`, Razorpay's `X-Razorpay-Event-Id`): what
    /// deduplicates it.
    pub id: String,
    /// `payment_intent.succeeded`, `payment.captured`.
    pub kind: String,
    /// Unix seconds.
    pub created: i64,
    /// The gateway's id of the intent it is about (Stripe's `pi_…`, Razorpay's
    /// `order_…`), when it is about one.
    pub intent: Option<String>,
    /// The object it carries (Stripe's PaymentIntent, Razorpay's payment).
    pub object: serde_json::Value,
}

/// The event's object as the intent `id` of `amount` stands at the gateway, checked as a
/// reply would be.
pub fn event_intent(event: &Event, id: &str, amount: Money) -> Result<GatewayIntent, till_outbound::InvalidReply> {
    match event.gateway {
        GatewayKind::Stripe => stripe::event_intent(&event.object, id, amount),
        GatewayKind::Razorpay => razorpay::event_intent(&event.object, id, amount),
    }
}

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
    /// The gateway's id (`po_…` at Stripe, `setl_…` at Razorpay).
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
    /// Where the next page starts, if there is one (opaque: each gateway pages its own way).
    pub next: Option<String>,
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
