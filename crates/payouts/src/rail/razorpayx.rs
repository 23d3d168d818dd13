//! The India adapter, over RazorpayX Payouts (providers.md §3): IMPS to a bank account
//! (IFSC and number), UPI to a VPA, through the outbound kit.
//!
//! - A payee is registered before its first payout: a contact, a fund account under it
//!   (RazorpayX answers the existing one when the same details come again, so a retry
//!   makes nothing twice), and a fund-account validation (a penny drop, or a VPA check)
//!   whose `results.account_status` and `registered_name` are the answer Till stores,
//!   as CoP's is in the UK.
//! - A payout names the fund account, in paise, with `X-Payout-Idempotency` set to the
//!   payout's id (`po_` and 32 hex: 35 characters, inside RazorpayX's 4 to 36): every
//!   attempt, and every retry after a crash, sends the same key and the same body.
//! - Statuses (§3.2): `processed` is paid; `reversed` is money that came back (a payout
//!   that never reached the account, or RazorpayX's processed → reversed days later);
//!   `failed`, `rejected` and `cancelled` never left; `pending`, `queued`, `scheduled`
//!   and `processing` (IMPS "deemed" outcomes among them) keep it processing, with the
//!   reason RazorpayX gives as its detail.

use serde::{Deserialize, Serialize};
use till_kit::{Currency, Money};
use till_outbound::{Dependency, DependencyConfig, InvalidReply, Method, Names, OutboundError, OutboundRequest, Reply};

use super::{Outgoing, Payee, PayeeCheck, Rail, RailKind, RailPayment, RailStatus, Sent};
use crate::beneficiary::Destination;

pub const NAMES: Names = Names {
    dependency: "RazorpayX",
    unavailable: "rail_unavailable",
    reply_invalid: "rail_reply_invalid",
    timeout: "rail_timeout",
};

/// RazorpayX's idempotency header for payouts.
pub const IDEMPOTENCY_HEADER: &str = "x-payout-idempotency";

/// RazorpayX Payouts from one business account (`account_number`, the platform's).
#[derive(Debug, Clone)]
pub struct RazorpayX {
    dependency: Dependency,
    account_number: String,
}

impl RazorpayX {
    pub fn with_config(mut config: DependencyConfig, account_number: String) -> Result<RazorpayX, OutboundError> {
        config.idempotency_header = till_outbound::HeaderName::from_static(IDEMPOTENCY_HEADER);
        let dependency = Dependency::new(config)
            .map_err(|error| OutboundError::Request { names: NAMES, cause: error.to_string() })?;
        Ok(RazorpayX { dependency, account_number })
    }
}

fn request_error(error: impl std::fmt::Display) -> OutboundError {
    OutboundError::Request { names: NAMES, cause: error.to_string() }
}

/// A question or a registration RazorpayX deduplicates by its details: safe to send
/// again, so it carries a fresh key (the kit resends only a POST with one).
fn repeatable(path: &str, body: &impl Serialize) -> Result<OutboundRequest, OutboundError> {
    Ok(OutboundRequest::new(Method::POST, path)
        .json(body)
        .map_err(request_error)?
        .idempotency_key(uuid::Uuid::now_v7().to_string()))
}

fn id_of(field: &str, id: &str, prefix: &str) -> Result<(), InvalidReply> {
    let tail = id.strip_prefix(prefix).unwrap_or_default();
    if tail.is_empty() || tail.len() > 40 || !tail.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(InvalidReply::new(field, format!("{id:?} is not a {prefix}… id")));
    }
    Ok(())
}

fn success(reply: &Reply, what: &str) -> Result<(), InvalidReply> {
    if matches!(reply.status.as_u16(), 200 | 201) {
        Ok(())
    } else {
        Err(InvalidReply::new("status", format!("{what} answered {}", reply.status)))
    }
}

#[derive(Serialize)]
struct NewContact<'a> {
    name: &'a str,
    r#type: &'static str,
}

#[derive(Deserialize)]
struct Made {
    id: String,
    entity: String,
}

fn made(reply: &Reply, entity: &str, prefix: &str) -> Result<String, InvalidReply> {
    success(reply, entity)?;
    let made: Made = reply.json()?;
    if made.entity != entity {
        return Err(InvalidReply::new("entity", format!("expected a {entity}, got a {}", made.entity)));
    }
    id_of("id", &made.id, prefix)?;
    Ok(made.id)
}

#[derive(Serialize)]
struct BankAccount<'a> {
    name: &'a str,
    ifsc: &'a str,
    account_number: &'a str,
}

#[derive(Serialize)]
struct Vpa<'a> {
    address: &'a str,
}

#[derive(Serialize)]
struct NewFundAccount<'a> {
    contact_id: &'a str,
    account_type: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    bank_account: Option<BankAccount<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    vpa: Option<Vpa<'a>>,
}

#[derive(Serialize)]
struct FundAccountRef<'a> {
    id: &'a str,
}

#[derive(Serialize)]
struct NewValidation<'a> {
    account_number: &'a str,
    fund_account: FundAccountRef<'a>,
    amount: i64,
    currency: &'static str,
}

#[derive(Deserialize)]
struct ValidationResults {
    account_status: Option<String>,
    registered_name: Option<String>,
}

#[derive(Deserialize)]
struct Validation {
    id: String,
    entity: String,
    status: String,
    fund_account: Made,
    results: Option<ValidationResults>,
}

/// Two names as a person would compare them: case, spacing and punctuation aside.
fn same_name(a: &str, b: &str) -> bool {
    let fold = |name: &str| -> String {
        name.split(|c: char| !c.is_alphanumeric()).filter(|word| !word.is_empty()).collect::<Vec<_>>().join(" ")
    };
    fold(a).to_lowercase() == fold(b).to_lowercase()
}

/// A validation's answer about `name`, checked to be about `fund_account`.
fn checked_validation(reply: &Reply, fund_account: &str, name: &str) -> Result<PayeeCheck, InvalidReply> {
    success(reply, "a fund-account validation")?;
    let validation: Validation = reply.json()?;
    if validation.entity != "fund_account.validation" {
        return Err(InvalidReply::new("entity", format!("expected a validation, got a {}", validation.entity)));
    }
    id_of("id", &validation.id, "fav_")?;
    if validation.fund_account.id != fund_account {
        return Err(InvalidReply::new("fund_account.id", "the validation is of another fund account"));
    }
    let results = validation.results.unwrap_or(ValidationResults { account_status: None, registered_name: None });
    Ok(match (validation.status.as_str(), results.account_status.as_deref()) {
        ("completed", Some("active")) => match results.registered_name.filter(|held| !held.trim().is_empty()) {
            Some(held) if same_name(&held, name) => PayeeCheck::Match,
            Some(held) => {
                till_kit::text::check(&held, 140)
                    .map_err(|error| InvalidReply::new("results.registered_name", format!("the name {error}")))?;
                PayeeCheck::CloseMatch { code: "NAME_MISMATCH".into(), name: Some(held) }
            }
            // Active, and the bank did not say whose: nothing to compare.
            None => PayeeCheck::Unavailable { code: "NAME_UNKNOWN".into() },
        },
        ("completed", Some("invalid")) => PayeeCheck::NoMatch { code: "ACCOUNT_INVALID".into() },
        ("completed", other) => {
            return Err(InvalidReply::new("results.account_status", format!("{other:?} is not an account status")))
        }
        // Still being checked (a penny drop can take a while), or the check failed.
        ("created", _) => PayeeCheck::Unavailable { code: "VALIDATION_PENDING".into() },
        ("failed", _) => PayeeCheck::Unavailable { code: "VALIDATION_FAILED".into() },
        (other, _) => return Err(InvalidReply::new("status", format!("{other:?} is not a validation status"))),
    })
}

#[derive(Serialize)]
struct NewPayout<'a> {
    account_number: &'a str,
    fund_account_id: &'a str,
    amount: i64,
    currency: &'static str,
    mode: &'static str,
    purpose: &'static str,
    queue_if_low_balance: bool,
    reference_id: &'a str,
    /// Left out when the reference has no letter, digit or space to keep.
    #[serde(skip_serializing_if = "Option::is_none")]
    narration: Option<String>,
}

#[derive(Deserialize)]
struct StatusDetails {
    reason: Option<String>,
}

#[derive(Deserialize)]
struct WirePayout {
    id: String,
    entity: String,
    fund_account_id: String,
    amount: i64,
    currency: String,
    status: String,
    reference_id: Option<String>,
    failure_reason: Option<String>,
    status_details: Option<StatusDetails>,
}

#[derive(Deserialize)]
struct WireError {
    error: WireErrorBody,
}

#[derive(Deserialize)]
struct WireErrorBody {
    code: Option<String>,
    description: Option<String>,
    field: Option<String>,
}

/// A payout RazorpayX reports, checked against what Till sent.
fn checked(wire: WirePayout, outgoing: &Outgoing<'_>) -> Result<RailPayment, InvalidReply> {
    if wire.entity != "payout" {
        return Err(InvalidReply::new("entity", format!("expected a payout, got a {}", wire.entity)));
    }
    id_of("id", &wire.id, "pout_")?;
    if wire.reference_id.as_deref() != Some(outgoing.key) {
        return Err(InvalidReply::new("reference_id", "the payout is another payout's"));
    }
    if Some(wire.fund_account_id.as_str()) != outgoing.rail_account {
        return Err(InvalidReply::new("fund_account_id", "the payout goes to another fund account"));
    }
    if wire.currency != "INR" || outgoing.amount.currency() != Currency::INR {
        return Err(InvalidReply::new("currency", format!("expected INR, got {}", wire.currency)));
    }
    if Money::from_minor(wire.amount, Currency::INR) != outgoing.amount {
        return Err(InvalidReply::new(
            "amount",
            format!("sent {} paise, the rail says {}", outgoing.amount.minor(), wire.amount),
        ));
    }
    let reason = |fallback: &str| -> String {
        let text = wire.failure_reason.clone().unwrap_or_else(|| fallback.to_string());
        text.chars().filter(|c| !c.is_control()).take(300).collect()
    };
    let status = match wire.status.as_str() {
        "pending" | "queued" | "scheduled" | "processing" => {
            let detail = wire.status_details.and_then(|details| details.reason).unwrap_or_else(|| wire.status.clone());
            let detail: String = detail.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '_').take(64).collect();
            RailStatus::Pending { detail }
        }
        "processed" => RailStatus::Paid,
        "reversed" => RailStatus::Returned { reason: reason("reversed by the beneficiary's bank") },
        "failed" | "rejected" | "cancelled" => {
            RailStatus::Failed { reason: reason(&format!("the rail answered {}", wire.status)) }
        }
        other => return Err(InvalidReply::new("status", format!("{other:?} is not a payout status"))),
    };
    Ok(RailPayment { id: wire.id, status })
}

fn sent(reply: &Reply, outgoing: &Outgoing<'_>) -> Result<Sent, InvalidReply> {
    match reply.status.as_u16() {
        200 | 201 => Ok(Sent::Accepted(checked(reply.json()?, outgoing)?)),
        400 => {
            let refused: WireError = reply.json()?;
            let error = refused.error;
            Ok(Sent::refused(error.field.as_deref(), error.code.as_deref(), error.description.as_deref()))
        }
        other => Err(InvalidReply::new("status", format!("a payout create answered {other}"))),
    }
}

fn found(reply: &Reply, id: &str, outgoing: &Outgoing<'_>) -> Result<RailPayment, InvalidReply> {
    if reply.status != till_outbound::StatusCode::OK {
        return Err(InvalidReply::new("status", format!("a payout read answered {}", reply.status)));
    }
    let payment = checked(reply.json()?, outgoing)?;
    if payment.id != id {
        return Err(InvalidReply::new("id", format!("asked for {id}, got {}", payment.id)));
    }
    Ok(payment)
}

/// A narration RazorpayX takes (at most 30 letters, digits and spaces) from a reference;
/// `None` when nothing of it is left.
fn narration(reference: &str) -> Option<String> {
    let kept: String = reference.chars().filter(|c| c.is_ascii_alphanumeric() || *c == ' ').take(30).collect();
    let kept = kept.trim().to_string();
    (!kept.is_empty()).then_some(kept)
}

#[async_trait::async_trait]
impl Rail for RazorpayX {
    fn kind(&self) -> RailKind {
        RailKind::RazorpayX
    }

    async fn confirm_payee(
        &self,
        name: &str,
        destination: &Destination,
        business: bool,
    ) -> Result<Payee, OutboundError> {
        let contact = NewContact { name, r#type: if business { "vendor" } else { "self" } };
        let contact_id = self
            .dependency
            .call(&repeatable("v1/contacts", &contact)?, |reply| made(reply, "contact", "cont_"))
            .await?;
        let fund_account = match destination {
            Destination::InAccount { ifsc, account_number } => NewFundAccount {
                contact_id: &contact_id,
                account_type: "bank_account",
                bank_account: Some(BankAccount { name, ifsc, account_number }),
                vpa: None,
            },
            Destination::InVpa { vpa } => NewFundAccount {
                contact_id: &contact_id,
                account_type: "vpa",
                bank_account: None,
                vpa: Some(Vpa { address: vpa }),
            },
            Destination::UkAccount { .. } => return Err(request_error("RazorpayX pays Indian accounts and VPAs")),
        };
        let fund_account_id = self
            .dependency
            .call(&repeatable("v1/fund_accounts", &fund_account)?, |reply| made(reply, "fund_account", "fa_"))
            .await?;
        // A penny drop of ₹1 (100 paise), as RazorpayX's validation takes.
        let validation = NewValidation {
            account_number: &self.account_number,
            fund_account: FundAccountRef { id: &fund_account_id },
            amount: 100,
            currency: "INR",
        };
        let check = self
            .dependency
            .call(&repeatable("v1/fund_accounts/validations", &validation)?, |reply| {
                checked_validation(reply, &fund_account_id, name)
            })
            .await;
        // Registered either way: the validation's answer is the check, and no answer an
        // unavailable one (a payout may still go, with the caller's acceptance).
        let check = check.unwrap_or_else(|error| {
            tracing::warn!(%error, "RazorpayX's fund-account validation had no answer");
            PayeeCheck::Unavailable { code: "VALIDATION_UNANSWERED".into() }
        });
        Ok(Payee { check, rail_account: Some(fund_account_id) })
    }

    async fn send(&self, outgoing: &Outgoing<'_>) -> Result<Sent, OutboundError> {
        let mode = match outgoing.destination {
            Destination::InAccount { .. } => "IMPS",
            Destination::InVpa { .. } => "UPI",
            Destination::UkAccount { .. } => return Err(request_error("RazorpayX pays Indian accounts and VPAs")),
        };
        let fund_account_id = outgoing.rail_account.ok_or_else(|| request_error("a payee without a fund account"))?;
        if outgoing.amount.currency() != Currency::INR {
            return Err(request_error("RazorpayX pays out in INR"));
        }
        let body = NewPayout {
            account_number: &self.account_number,
            fund_account_id,
            amount: outgoing.amount.minor(),
            currency: "INR",
            mode,
            purpose: "payout",
            queue_if_low_balance: true,
            reference_id: outgoing.key,
            narration: narration(outgoing.reference),
        };
        let request = OutboundRequest::new(Method::POST, "v1/payouts")
            .json(&body)
            .map_err(request_error)?
            .idempotency_key(outgoing.key);
        self.dependency.call(&request, |reply| sent(reply, outgoing)).await
    }

    async fn retrieve(&self, id: &str, outgoing: &Outgoing<'_>) -> Result<RailPayment, OutboundError> {
        if id_of("id", id, "pout_").is_err() {
            return Err(request_error("not a RazorpayX payout id"));
        }
        let request = OutboundRequest::new(Method::GET, format!("v1/payouts/{id}"));
        self.dependency.call(&request, |reply| found(reply, id, outgoing)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_compare_as_a_person_would() {
        assert!(same_name("Asha Rao", "ASHA  RAO"));
        assert!(same_name("M/s. Rao & Sons", "M S Rao Sons"));
        assert!(!same_name("Asha Rao", "Asha Rao Traders"));
    }

    #[test]
    fn a_narration_is_what_razorpayx_takes() {
        assert_eq!(narration("INV-2026/001").as_deref(), Some("INV2026001"));
        assert_eq!(narration(&"a".repeat(40)).map(|text| text.len()), Some(30));
        assert_eq!(narration("-./-./"), None, "nothing left to send");
    }
}
