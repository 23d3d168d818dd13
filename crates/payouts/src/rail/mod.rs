//! What Till asks of a payout rail and what it accepts back, as typed values, with one
//! adapter per provider ([`fps`], [`razorpayx`]). An adapter calls its provider only
//! through the outbound kit and validates every reply before anything acts on it: a
//! reply about another payment, another amount, or in a status the API does not have is
//! an `InvalidReply`, never a defaulted field.

pub mod fps;
pub mod razorpayx;

use till_kit::Money;
use till_outbound::OutboundError;

use crate::beneficiary::Destination;

/// The rails Till pays out through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RailKind {
    /// UK Faster Payments, with Confirmation of Payee.
    Fps,
    /// India: IMPS to bank accounts and UPI to VPAs, through RazorpayX Payouts.
    RazorpayX,
}

impl RailKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RailKind::Fps => "fps",
            RailKind::RazorpayX => "razorpayx",
        }
    }

    pub fn parse(text: &str) -> Option<RailKind> {
        match text {
            "fps" => Some(RailKind::Fps),
            "razorpayx" => Some(RailKind::RazorpayX),
            _ => None,
        }
    }

    pub fn title(self) -> &'static str {
        match self {
            RailKind::Fps => "Faster Payments",
            RailKind::RazorpayX => "RazorpayX",
        }
    }

    /// The rail that pays a destination.
    pub fn of(destination: &Destination) -> RailKind {
        match destination {
            Destination::UkAccount { .. } => RailKind::Fps,
            Destination::InAccount { .. } | Destination::InVpa { .. } => RailKind::RazorpayX,
        }
    }

    /// Whether a payee must be registered with the rail before it can be paid (its
    /// payouts name the rail's record of it, as RazorpayX's name a fund account).
    pub fn registers_payees(self) -> bool {
        matches!(self, RailKind::RazorpayX)
    }
}

/// What the payee's bank says about the name (Confirmation of Payee), or the rail's
/// validation of an Indian account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PayeeCheck {
    Match,
    /// The bank holds a name close to the one given (`name`, when it says which).
    CloseMatch {
        code: String,
        name: Option<String>,
    },
    NoMatch {
        code: String,
    },
    /// No answer could be had (the bank does not take part, the account opted out, the
    /// service did not answer): a payout may still go, with the caller's acceptance.
    Unavailable {
        code: String,
    },
}

impl PayeeCheck {
    pub fn result(&self) -> &'static str {
        match self {
            PayeeCheck::Match => "match",
            PayeeCheck::CloseMatch { .. } => "close_match",
            PayeeCheck::NoMatch { .. } => "no_match",
            PayeeCheck::Unavailable { .. } => "unavailable",
        }
    }

    pub fn code(&self) -> Option<&str> {
        match self {
            PayeeCheck::Match => None,
            PayeeCheck::CloseMatch { code, .. } | PayeeCheck::NoMatch { code } | PayeeCheck::Unavailable { code } => {
                Some(code)
            }
        }
    }
}

/// What the rail answered about a new payee: the check of its name, and the rail's own
/// record of it where the rail keeps one (RazorpayX's fund account).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payee {
    pub check: PayeeCheck,
    pub rail_account: Option<String>,
}

/// A payout as the rail is asked to make it. `key` is the payout's own id, the rail's
/// idempotency key on every attempt.
#[derive(Debug, Clone)]
pub struct Outgoing<'a> {
    pub key: &'a str,
    pub amount: Money,
    pub reference: &'a str,
    pub name: &'a str,
    pub destination: &'a Destination,
    /// The rail's record of the payee, when it keeps one.
    pub rail_account: Option<&'a str>,
}

/// Where a payment stands at the rail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RailStatus {
    /// Accepted, not final (`detail`: the rail's own status, for `status_detail`).
    Pending { detail: String },
    /// The money left.
    Paid,
    /// It never left; `reason` says why.
    Failed { reason: String },
    /// It left and the beneficiary's bank sent it back.
    Returned { reason: String },
}

/// A payment at the rail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RailPayment {
    pub id: String,
    pub status: RailStatus,
}

/// The rail's answer to a send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sent {
    Accepted(RailPayment),
    /// Refused before anything moved (a field the rail will not take).
    Refused {
        reason: String,
    },
}

impl Sent {
    /// A refusal in the rail's words (the field it named, else its code, and its
    /// message), kept as text Till can show: no control characters, 300 at most.
    pub fn refused(field: Option<&str>, code: Option<&str>, message: Option<&str>) -> Sent {
        let reason = format!("{}: {}", field.or(code).unwrap_or("request"), message.unwrap_or("refused"));
        Sent::Refused { reason: reason.chars().filter(|c| !c.is_control()).take(300).collect() }
    }
}

#[async_trait::async_trait]
pub trait Rail: Send + Sync + std::fmt::Debug {
    fn kind(&self) -> RailKind;
    /// Asks the payee's bank whether `name` is the account's (CoP, or RazorpayX's
    /// fund-account validation), registering the payee with the rail first where it
    /// keeps payees: nothing that moves money, so it may be asked again.
    async fn confirm_payee(
        &self,
        name: &str,
        destination: &Destination,
        business: bool,
    ) -> Result<Payee, OutboundError>;
    /// Sends the payout, idempotently under `outgoing.key`.
    async fn send(&self, outgoing: &Outgoing<'_>) -> Result<Sent, OutboundError>;
    /// Where the payment `id` stands, checked against what was sent.
    async fn retrieve(&self, id: &str, outgoing: &Outgoing<'_>) -> Result<RailPayment, OutboundError>;
}
