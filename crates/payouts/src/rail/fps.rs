//! The Faster Payments adapter, over a BaaS provider's payments API shaped on Modulr's
//! (providers.md §2.1): `POST api/payments` to a sort code and account number,
//! `GET api/payments?id=` for its status, and `POST api/account-name-check` for
//! Confirmation of Payee (§2.2), through the outbound kit.
//!
//! - Amounts go as a JSON number in pounds (`10.50`), written from the minor units as a
//!   decimal literal and read back the same way: never through a float.
//! - The payout's id is the `externalReference` and the idempotency key (`x-mod-nonce`):
//!   every attempt, and every retry after a crash, sends the same one, so the provider
//!   makes one payment whatever the network does.
//! - Only final statuses end a payout (Modulr: "only rely upon payments that are in a
//!   final state"): `PROCESSED` is paid, `CANCELLED` and `ER_…` failed, `RETURNED`
//!   returned; the transient ones keep it `processing` with the status as its detail.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use till_kit::{Currency, Money};
use till_outbound::{Dependency, DependencyConfig, InvalidReply, Method, Names, OutboundError, OutboundRequest, Reply};

use super::{Outgoing, Payee, PayeeCheck, Rail, RailKind, RailPayment, RailStatus, Sent};
use crate::beneficiary::Destination;

pub const NAMES: Names = Names {
    dependency: "Faster Payments",
    unavailable: "rail_unavailable",
    reply_invalid: "rail_reply_invalid",
    timeout: "rail_timeout",
};

/// The provider's idempotency header.
pub const NONCE_HEADER: &str = "x-mod-nonce";

/// Faster Payments through one provider account (`source_account_id`, the platform's).
#[derive(Debug, Clone)]
pub struct Fps {
    dependency: Dependency,
    source_account_id: String,
}

impl Fps {
    pub fn with_config(mut config: DependencyConfig, source_account_id: String) -> Result<Fps, OutboundError> {
        config.idempotency_header = till_outbound::HeaderName::from_static(NONCE_HEADER);
        let dependency = Dependency::new(config)
            .map_err(|error| OutboundError::Request { names: NAMES, cause: error.to_string() })?;
        Ok(Fps { dependency, source_account_id })
    }
}

fn uk(destination: &Destination) -> Result<(&str, &str), OutboundError> {
    match destination {
        Destination::UkAccount { sort_code, account_number } => Ok((sort_code, account_number)),
        _ => Err(OutboundError::Request { names: NAMES, cause: "Faster Payments pays UK accounts only".into() }),
    }
}

fn request_error(error: impl std::fmt::Display) -> OutboundError {
    OutboundError::Request { names: NAMES, cause: error.to_string() }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct NameCheck<'a> {
    sort_code: &'a str,
    account_number: &'a str,
    name: &'a str,
    account_type: &'a str,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NameCheckReply {
    id: String,
    code: String,
    name: Option<String>,
}

/// A CoP answer: its code's bucket (providers.md §2.2's table).
fn payee_check(reply: &Reply) -> Result<PayeeCheck, InvalidReply> {
    if reply.status != till_outbound::StatusCode::OK {
        return Err(InvalidReply::new("status", format!("a name check answered {}", reply.status)));
    }
    let answer: NameCheckReply = reply.json()?;
    if answer.id.is_empty() {
        return Err(InvalidReply::new("id", "a name check without an id"));
    }
    let code = answer.code;
    let name = answer.name.filter(|name| !name.trim().is_empty());
    if let Some(name) = &name {
        till_kit::text::check(name, 140)
            .map_err(|error| InvalidReply::new("name", format!("the bank's name {error}")))?;
    }
    Ok(match code.as_str() {
        "MATC" => PayeeCheck::Match,
        "MBAM" | "BAMM" | "PAMM" => PayeeCheck::CloseMatch { code, name },
        "BANM" | "PANM" => PayeeCheck::CloseMatch { code, name: None },
        "ANNM" | "AC01" => PayeeCheck::NoMatch { code },
        "IVCR" | "ACNS" | "OPTO" | "CASS" | "SCNS" => PayeeCheck::Unavailable { code },
        other => return Err(InvalidReply::new("code", format!("{other:?} is not a CoP response code"))),
    })
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct WireDestinationOut<'a> {
    r#type: &'static str,
    sort_code: &'a str,
    account_number: &'a str,
    name: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Payment<'a> {
    source_account_id: &'a str,
    destination: WireDestinationOut<'a>,
    currency: &'static str,
    /// Pounds, as a JSON number written from the minor units.
    amount: Box<RawValue>,
    reference: &'a str,
    external_reference: &'a str,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireDestination {
    sort_code: String,
    account_number: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireDetails {
    destination: WireDestination,
    currency: String,
    amount: Box<RawValue>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WirePayment {
    id: String,
    status: String,
    external_reference: Option<String>,
    details: WireDetails,
    return_reason: Option<String>,
}

#[derive(Deserialize)]
struct WirePage {
    content: Vec<WirePayment>,
}

#[derive(Deserialize)]
struct WireError {
    field: Option<String>,
    code: Option<String>,
    message: Option<String>,
}

/// A payment the provider reports, checked against what Till sent.
fn checked(wire: WirePayment, outgoing: &Outgoing<'_>) -> Result<RailPayment, InvalidReply> {
    if !wire.id.starts_with('P') || wire.id.len() > 64 || !wire.id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(InvalidReply::new("id", "not a payment id"));
    }
    if wire.external_reference.as_deref() != Some(outgoing.key) {
        return Err(InvalidReply::new("externalReference", "the payment is another payout's"));
    }
    let (sort_code, account_number) =
        uk(outgoing.destination).map_err(|_| InvalidReply::new("destination", "not a UK account"))?;
    if wire.details.destination.sort_code != sort_code || wire.details.destination.account_number != account_number {
        return Err(InvalidReply::new("details.destination", "the payment goes to another account"));
    }
    if wire.details.currency != "GBP" || outgoing.amount.currency() != Currency::GBP {
        return Err(InvalidReply::new("details.currency", format!("expected GBP, got {}", wire.details.currency)));
    }
    let amount = Money::parse_decimal(wire.details.amount.get(), Currency::GBP)
        .map_err(|error| InvalidReply::new("details.amount", error.to_string()))?;
    if amount != outgoing.amount {
        return Err(InvalidReply::new(
            "details.amount",
            format!("sent {}, the rail says {}", outgoing.amount.to_decimal_string(), amount.to_decimal_string()),
        ));
    }
    let status = match wire.status.as_str() {
        "SUBMITTED" | "VALIDATED" | "PENDING_FOR_DATE" | "PENDING_FOR_FUNDS" => {
            RailStatus::Pending { detail: wire.status.to_ascii_lowercase() }
        }
        "PROCESSED" => RailStatus::Paid,
        "CANCELLED" => RailStatus::Failed { reason: "canceled at the rail".into() },
        "RETURNED" => RailStatus::Returned {
            reason: wire.return_reason.unwrap_or_else(|| "returned by the beneficiary's bank".into()),
        },
        failed if failed.starts_with("ER_") && failed.len() <= 32 => {
            RailStatus::Failed { reason: format!("the rail answered {failed}") }
        }
        other => return Err(InvalidReply::new("status", format!("{other:?} is not a payment status"))),
    };
    Ok(RailPayment { id: wire.id, status })
}

fn sent(reply: &Reply, outgoing: &Outgoing<'_>) -> Result<Sent, InvalidReply> {
    match reply.status.as_u16() {
        200 | 201 => Ok(Sent::Accepted(checked(reply.json()?, outgoing)?)),
        400 => {
            let errors: Vec<WireError> = reply.json()?;
            let first = errors.first().ok_or_else(|| InvalidReply::new("body", "a 400 without an error"))?;
            Ok(Sent::refused(first.field.as_deref(), first.code.as_deref(), first.message.as_deref()))
        }
        other => Err(InvalidReply::new("status", format!("a payment create answered {other}"))),
    }
}

fn found(reply: &Reply, id: &str, outgoing: &Outgoing<'_>) -> Result<RailPayment, InvalidReply> {
    if reply.status != till_outbound::StatusCode::OK {
        return Err(InvalidReply::new("status", format!("a payment read answered {}", reply.status)));
    }
    let page: WirePage = reply.json()?;
    let mut matching = page.content.into_iter().filter(|payment| payment.id == id);
    let payment = matching.next().ok_or_else(|| InvalidReply::new("content", format!("no payment {id}")))?;
    if matching.next().is_some() {
        return Err(InvalidReply::new("content", format!("payment {id} twice")));
    }
    checked(payment, outgoing)
}

#[async_trait::async_trait]
impl Rail for Fps {
    fn kind(&self) -> RailKind {
        RailKind::Fps
    }

    async fn confirm_payee(
        &self,
        name: &str,
        destination: &Destination,
        business: bool,
    ) -> Result<Payee, OutboundError> {
        let (sort_code, account_number) = uk(destination)?;
        let body =
            NameCheck { sort_code, account_number, name, account_type: if business { "BUSINESS" } else { "PERSONAL" } };
        let request =
            OutboundRequest::new(Method::POST, "api/account-name-check").json(&body).map_err(request_error)?;
        // A question, not an effect: safe to ask again after a timeout. The kit only
        // resends a POST that carries a key, so it carries a fresh one per question.
        let request = request.idempotency_key(uuid::Uuid::now_v7().to_string());
        let check = self.dependency.call(&request, payee_check).await?;
        Ok(Payee { check, rail_account: None })
    }

    async fn send(&self, outgoing: &Outgoing<'_>) -> Result<Sent, OutboundError> {
        let (sort_code, account_number) = uk(outgoing.destination)?;
        if outgoing.amount.currency() != Currency::GBP {
            return Err(request_error("Faster Payments are in GBP"));
        }
        let amount = RawValue::from_string(outgoing.amount.to_decimal_string()).map_err(request_error)?;
        let body = Payment {
            source_account_id: &self.source_account_id,
            destination: WireDestinationOut { r#type: "SCAN", sort_code, account_number, name: outgoing.name },
            currency: "GBP",
            amount,
            reference: outgoing.reference,
            external_reference: outgoing.key,
        };
        let request = OutboundRequest::new(Method::POST, "api/payments")
            .json(&body)
            .map_err(request_error)?
            .idempotency_key(outgoing.key);
        self.dependency.call(&request, |reply| sent(reply, outgoing)).await
    }

    async fn retrieve(&self, id: &str, outgoing: &Outgoing<'_>) -> Result<RailPayment, OutboundError> {
        if !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(request_error("a payment id is letters and digits"));
        }
        let request = OutboundRequest::new(Method::GET, format!("api/payments?id={id}"));
        self.dependency.call(&request, |reply| found(reply, id, outgoing)).await
    }
}
