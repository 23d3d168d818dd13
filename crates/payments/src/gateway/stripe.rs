//! The Stripe adapter: PaymentIntents and refunds over Stripe's public API, form-encoded,
//! through the outbound kit (timeouts, retries of what carries an idempotency key,
//! breaker), every reply validated before it becomes a [`GatewayIntent`] or a
//! [`GatewayRefund`].
//!
//! It works against `api.stripe.com` with a real secret key as against Till's simulator
//! (`/stripe` on the simulator's port): the base URL is the only difference.

use serde::Deserialize;
use till_kit::{Currency, Money, Secret};
use till_outbound::{
    Credentials, Dependency, DependencyConfig, InvalidReply, Method, Names, OutboundError, OutboundRequest, Reply,
    StatusCode, Url,
};

use super::{
    Answer, Decline, Event, Gateway, GatewayIntent, GatewayKind, GatewayPayout, GatewayRefund, GatewayStatus, LineKind,
    NewIntent, PaymentMethod, PayoutPage, RefundStatus, Refusal, SettlementLine,
};

pub const NAMES: Names = Names {
    dependency: "Stripe",
    unavailable: "gateway_unavailable",
    reply_invalid: "gateway_reply_invalid",
    timeout: "gateway_timeout",
};

/// Stripe, as one dependency of the outbound kit.
#[derive(Debug, Clone)]
pub struct Stripe {
    dependency: Dependency,
}

/// What a reply must agree with: the object Till asked about and its money.
#[derive(Debug, Clone, Copy)]
struct Expected<'a> {
    /// The gateway's id, when Till already knows it (every call but create).
    id: Option<&'a str>,
    amount: Money,
}

impl Stripe {
    /// `base_url` is Stripe's (`https://api.stripe.com/`) or the simulator's
    /// (`http://127.0.0.1:8081/stripe/`); `secret_key` an `sk_…` key.
    pub fn new(base_url: Url, secret_key: Secret<String>) -> Result<Stripe, OutboundError> {
        Stripe::with_config(DependencyConfig::new(NAMES, base_url, Credentials::Bearer(secret_key)))
    }

    /// With the kit's settings of the caller's (timeouts, breaker, retries).
    pub fn with_config(config: DependencyConfig) -> Result<Stripe, OutboundError> {
        let dependency = Dependency::new(config)
            .map_err(|error| OutboundError::Request { names: NAMES, cause: error.to_string() })?;
        Ok(Stripe { dependency })
    }
}

#[async_trait::async_trait]
impl Gateway for Stripe {
    fn kind(&self) -> GatewayKind {
        GatewayKind::Stripe
    }

    fn dependency(&self) -> &Dependency {
        &self.dependency
    }

    /// Stripe's payment methods (`pm_…`), in the currencies Till routes to it.
    fn accepts(&self, method: &PaymentMethod, _currency: till_kit::Currency) -> bool {
        matches!(method, PaymentMethod::Card(_))
    }

    /// Creates the gateway's intent (not yet confirmed).
    async fn create(&self, new: &NewIntent, key: &str) -> Result<Answer<GatewayIntent>, OutboundError> {
        let mut form = vec![
            ("amount", new.amount.minor().to_string()),
            ("currency", currency(new.amount.currency())),
            ("capture_method", new.capture_method.as_str().to_string()),
            ("metadata[till_payment_intent]", new.reference.clone()),
        ];
        if let Some(description) = &new.description {
            form.push(("description", description.clone()));
        }
        let request = OutboundRequest::new(Method::POST, "v1/payment_intents").form(&form).idempotency_key(key);
        let expected = Expected { id: None, amount: new.amount };
        self.dependency.call(&request, |reply| intent_answer(reply, expected)).await
    }

    /// Confirms (authorises) the intent with `payment_method` (`pm_card_visa`).
    async fn confirm(
        &self,
        id: &str,
        amount: Money,
        method: &PaymentMethod,
        _email: Option<&str>,
        key: &str,
    ) -> Result<Answer<GatewayIntent>, OutboundError> {
        let PaymentMethod::Card(payment_method) = method else {
            return Ok(Answer::Refused(Refusal {
                code: Some(String::from("payment_method_unsupported")),
                param: Some(String::from("payment_method")),
                message: String::from("Stripe takes card payment methods (pm_…)."),
            }));
        };
        let request = OutboundRequest::new(Method::POST, format!("v1/payment_intents/{}/confirm", segment(id)?))
            .form(&[("payment_method", payment_method.to_string())])
            .idempotency_key(key);
        let expected = Expected { id: Some(id), amount };
        self.dependency.call(&request, |reply| intent_answer(reply, expected)).await
    }

    /// Captures `to_capture` of the authorised amount (all of it when `None`).
    async fn capture(
        &self,
        id: &str,
        amount: Money,
        to_capture: Option<Money>,
        key: &str,
    ) -> Result<Answer<GatewayIntent>, OutboundError> {
        let form: Vec<(&str, String)> =
            to_capture.map(|money| ("amount_to_capture", money.minor().to_string())).into_iter().collect();
        let request = OutboundRequest::new(Method::POST, format!("v1/payment_intents/{}/capture", segment(id)?))
            .form(&form)
            .idempotency_key(key);
        let expected = Expected { id: Some(id), amount };
        self.dependency.call(&request, |reply| intent_answer(reply, expected)).await
    }

    async fn cancel(&self, id: &str, amount: Money, key: &str) -> Result<Answer<GatewayIntent>, OutboundError> {
        let request = OutboundRequest::new(Method::POST, format!("v1/payment_intents/{}/cancel", segment(id)?))
            .form(&[])
            .idempotency_key(key);
        let expected = Expected { id: Some(id), amount };
        self.dependency.call(&request, |reply| intent_answer(reply, expected)).await
    }

    /// The intent as Stripe holds it now (status sync).
    async fn retrieve(&self, id: &str, amount: Money) -> Result<Answer<GatewayIntent>, OutboundError> {
        let request = OutboundRequest::new(Method::GET, format!("v1/payment_intents/{}", segment(id)?));
        let expected = Expected { id: Some(id), amount };
        self.dependency.call(&request, |reply| intent_answer(reply, expected)).await
    }

    /// Refunds `amount` of the intent's captured money.
    async fn refund(
        &self,
        intent: &str,
        _charge: Option<&str>,
        amount: Money,
        key: &str,
    ) -> Result<Answer<GatewayRefund>, OutboundError> {
        let request = OutboundRequest::new(Method::POST, "v1/refunds")
            .form(&[("payment_intent", intent.to_string()), ("amount", amount.minor().to_string())])
            .idempotency_key(key);
        self.dependency.call(&request, |reply| refund_answer(reply, intent, amount)).await
    }

    /// The fee Stripe charged on a captured charge: its balance transaction's.
    async fn fee(&self, charge: &str, currency: Currency) -> Result<Money, OutboundError> {
        let request = OutboundRequest::new(Method::GET, format!("v1/charges/{}", segment(charge)?));
        let transaction = self.dependency.call(&request, |reply| charge_transaction(reply, charge)).await?;
        let request = OutboundRequest::new(Method::GET, format!("v1/balance_transactions/{}", segment(&transaction)?));
        self.dependency.call(&request, |reply| transaction_fee(reply, &transaction, currency)).await
    }
    /// A page of Stripe's payouts, newest first, after `starting_after`.
    async fn payouts(&self, cursor: Option<&str>) -> Result<PayoutPage, OutboundError> {
        let mut path = format!("v1/payouts?limit={LIST_LIMIT}");
        if let Some(after) = cursor {
            path.push_str(&format!("&starting_after={}", segment(after)?));
        }
        let request = OutboundRequest::new(Method::GET, path);
        self.dependency.call(&request, payout_page).await
    }

    /// Every line of `payout`'s settlement report (Stripe's balance transactions of the
    /// payout, its own among them), all pages, checked to add up to what it paid.
    async fn payout_lines(&self, payout: &GatewayPayout) -> Result<Vec<SettlementLine>, OutboundError> {
        let mut lines: Vec<SettlementLine> = Vec::new();
        for _ in 0..REPORT_PAGES_MAX {
            let mut path = format!("v1/balance_transactions?payout={}&limit={LIST_LIMIT}", segment(&payout.id)?);
            if let Some(last) = lines.last() {
                path.push_str(&format!("&starting_after={}", segment(&last.id)?));
            }
            let request = OutboundRequest::new(Method::GET, path);
            let (page, has_more) =
                self.dependency.call(&request, |reply| line_page(reply, payout.amount.currency())).await?;
            let empty = page.is_empty();
            lines.extend(page);
            if !has_more || empty {
                return Ok(lines);
            }
        }
        Err(OutboundError::InvalidReply {
            names: NAMES,
            reason: InvalidReply::new("has_more", format!("a report longer than {REPORT_PAGES_MAX} pages")),
        })
    }
}

/// How far a webhook's signed timestamp may be from now: Stripe's default tolerance.
pub const WEBHOOK_TOLERANCE_SECONDS: i64 = 300;

/// Why a webhook's signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureRefusal {
    #[error("there is no Stripe-Signature header")]
    Missing,
    #[error("the Stripe-Signature header is not t=…,v1=…")]
    Malformed,
    #[error("the signed timestamp is more than {WEBHOOK_TOLERANCE_SECONDS} s from now")]
    Stale,
    #[error("no v1 signature matches the body")]
    Mismatch,
}

/// Verifies a webhook as Stripe signs it (providers.md §1.1): `Stripe-Signature:
/// t={unix seconds},v1={hex HMAC-SHA256 of "{t}.{body}" keyed with the endpoint's
/// secret}` — several `v1` while a secret rolls, other schemes ignored — within
/// [`WEBHOOK_TOLERANCE_SECONDS`] of `now`. The comparison is constant-time.
pub fn verify_webhook(secret: &str, header: Option<&str>, body: &[u8], now: i64) -> Result<(), SignatureRefusal> {
    use hmac::Mac;
    let header = header.ok_or(SignatureRefusal::Missing)?;
    let mut timestamp: Option<i64> = None;
    let mut signatures: Vec<Vec<u8>> = Vec::new();
    for item in header.split(',') {
        let (name, value) = item.trim().split_once('=').ok_or(SignatureRefusal::Malformed)?;
        match name {
            "t" if timestamp.is_none() => {
                timestamp = Some(value.parse().map_err(|_| SignatureRefusal::Malformed)?);
            }
            "t" => return Err(SignatureRefusal::Malformed),
            // A signature that is not hex cannot match; it is not a reason to stop looking.
            "v1" => signatures.extend(hex::decode(value).ok()),
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or(SignatureRefusal::Malformed)?;
    if signatures.is_empty() {
        return Err(SignatureRefusal::Malformed);
    }
    if now.abs_diff(timestamp) > WEBHOOK_TOLERANCE_SECONDS.unsigned_abs() {
        return Err(SignatureRefusal::Stale);
    }
    let mac = || {
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes())
            .unwrap_or_else(|_| unreachable!("HMAC takes a key of any length"));
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        mac
    };
    if signatures.iter().any(|signature| mac().verify_slice(signature).is_ok()) {
        Ok(())
    } else {
        Err(SignatureRefusal::Mismatch)
    }
}

#[derive(Deserialize)]
struct WireEvent {
    id: String,
    object: String,
    #[serde(rename = "type")]
    kind: String,
    created: i64,
    data: WireEventData,
}

#[derive(Deserialize)]
struct WireEventData {
    object: serde_json::Value,
}

/// A webhook's body as an [`Event`], or what is wrong with it.
pub fn parse_event(body: &[u8]) -> Result<Event, InvalidReply> {
    let wire: WireEvent = serde_json::from_slice(body)
        .map_err(|error| InvalidReply::new("body", format!("not a Stripe event: {error}")))?;
    if wire.object != "event" || !wire.id.starts_with("evt_") || segment(&wire.id).is_err() {
        return Err(InvalidReply::new("id", "not an event id"));
    }
    let known_shape = !wire.kind.is_empty()
        && wire.kind.len() <= 100
        && wire.kind.bytes().all(|byte| byte.is_ascii_lowercase() || byte == b'.' || byte == b'_');
    if !known_shape {
        return Err(InvalidReply::new("type", "not an event type"));
    }
    if !wire.data.object.is_object() {
        return Err(InvalidReply::new("data.object", "not an object"));
    }
    let intent = wire
        .kind
        .starts_with("payment_intent.")
        .then(|| wire.data.object.get("id").and_then(serde_json::Value::as_str))
        .flatten()
        .filter(|id| segment(id).is_ok())
        .map(str::to_string);
    Ok(Event {
        gateway: GatewayKind::Stripe,
        id: wire.id,
        kind: wire.kind,
        created: wire.created,
        intent,
        object: wire.data.object,
    })
}

/// A webhook's PaymentIntent, checked as a reply about `id` for `amount` would be.
pub fn event_intent(object: &serde_json::Value, id: &str, amount: Money) -> Result<GatewayIntent, InvalidReply> {
    let wire: WireIntent = serde_json::from_value(object.clone())
        .map_err(|error| InvalidReply::new("data.object", format!("not a PaymentIntent: {error}")))?;
    checked_intent(wire, Expected { id: Some(id), amount })
}

/// Stripe's largest page.
const LIST_LIMIT: usize = 100;
/// Pages of one settlement report read at most (10 000 lines).
const REPORT_PAGES_MAX: usize = 100;

#[derive(Deserialize)]
struct WireList<T> {
    object: String,
    data: Vec<T>,
    has_more: bool,
}

#[derive(Deserialize)]
struct WirePayout {
    id: String,
    object: String,
    amount: i64,
    currency: String,
    status: String,
    created: i64,
}

fn listed<T: serde::de::DeserializeOwned>(reply: &Reply) -> Result<WireList<T>, InvalidReply> {
    if reply.status != StatusCode::OK {
        return Err(InvalidReply::new("status", format!("Stripe answered {}", reply.status)));
    }
    let list: WireList<T> = reply.json()?;
    if list.object != "list" {
        return Err(InvalidReply::new("object", format!("expected a list, got {:?}", list.object)));
    }
    if list.data.len() > LIST_LIMIT {
        return Err(InvalidReply::new("data", "more items than the page holds"));
    }
    Ok(list)
}

/// Stripe's currency code as Till's.
fn currency_of(code: &str) -> Result<Currency, InvalidReply> {
    Currency::parse(&code.to_ascii_uppercase()).map_err(|error| InvalidReply::new("currency", error.to_string()))
}

/// The paid payouts of a page (one in transit or failed has settled nothing yet).
fn payout_page(reply: &Reply) -> Result<PayoutPage, InvalidReply> {
    let list: WireList<WirePayout> = listed(reply)?;
    let mut payouts = Vec::with_capacity(list.data.len());
    let last = list.data.last().map(|wire| wire.id.clone());
    for wire in list.data {
        if wire.object != "payout" || !wire.id.starts_with("po_") || segment(&wire.id).is_err() {
            return Err(InvalidReply::new("data.id", "not a payout"));
        }
        if !matches!(wire.status.as_str(), "paid" | "pending" | "in_transit" | "canceled" | "failed") {
            return Err(InvalidReply::new("data.status", format!("unknown payout status {:?}", wire.status)));
        }
        if wire.amount < 0 {
            return Err(InvalidReply::new("data.amount", "a negative payout"));
        }
        if wire.status == "paid" {
            let amount = Money::from_minor(wire.amount, currency_of(&wire.currency)?);
            payouts.push(GatewayPayout { id: wire.id, amount, created: wire.created });
        }
    }
    // The next page starts after the last payout listed, paid or not.
    let next = if list.has_more { last } else { None };
    Ok(PayoutPage { payouts, next })
}

#[derive(Deserialize)]
struct WireLine {
    id: String,
    object: String,
    amount: i64,
    fee: i64,
    net: i64,
    currency: String,
    #[serde(rename = "type")]
    kind: String,
    source: String,
}

fn line_page(reply: &Reply, expected: Currency) -> Result<(Vec<SettlementLine>, bool), InvalidReply> {
    let list: WireList<WireLine> = listed(reply)?;
    let mut lines = Vec::with_capacity(list.data.len());
    for wire in list.data {
        if wire.object != "balance_transaction" || !wire.id.starts_with("txn_") || segment(&wire.id).is_err() {
            return Err(InvalidReply::new("data.id", "not a balance transaction"));
        }
        if segment(&wire.source).is_err() {
            return Err(InvalidReply::new("data.source", "not an id"));
        }
        if currency_of(&wire.currency)? != expected {
            return Err(InvalidReply::new("data.currency", "a line in another currency than its payout"));
        }
        if wire.fee < 0 || wire.amount.checked_sub(wire.fee) != Some(wire.net) {
            return Err(InvalidReply::new("data.fee", "the fee does not fit the amount and the net"));
        }
        let kind = match wire.kind.as_str() {
            "charge" | "payment" if wire.source.starts_with("ch_") || wire.source.starts_with("py_") => {
                LineKind::Charge
            }
            "refund" | "payment_refund" if wire.source.starts_with("re_") || wire.source.starts_with("pyr_") => {
                LineKind::Refund
            }
            "payout" if wire.source.starts_with("po_") => LineKind::Payout,
            "charge" | "payment" | "refund" | "payment_refund" | "payout" => {
                return Err(InvalidReply::new("data.source", format!("a {} line of {:?}", wire.kind, wire.source)))
            }
            _ => LineKind::Other,
        };
        lines.push(SettlementLine {
            id: wire.id,
            kind,
            source: wire.source,
            amount: Money::from_minor(wire.amount, expected),
            fee: Money::from_minor(wire.fee, expected),
            net: Money::from_minor(wire.net, expected),
        });
    }
    Ok((lines, list.has_more))
}

/// Stripe's currency parameter: the ISO code in lower case.
fn currency(currency: Currency) -> String {
    currency.code().to_ascii_lowercase()
}

/// An id as one path segment: Stripe's ids are `[A-Za-z0-9_]`; anything else is refused
/// before a request is made (an id from a reply that would change the path).
fn segment(id: &str) -> Result<&str, OutboundError> {
    if !id.is_empty() && id.len() <= 255 && id.bytes().all(|byte| byte.is_ascii_alphanumeric() || byte == b'_') {
        Ok(id)
    } else {
        Err(OutboundError::Request { names: NAMES, cause: format!("{id:?} is not a Stripe id") })
    }
}

#[derive(Deserialize)]
struct WireIntent {
    id: String,
    object: String,
    amount: i64,
    amount_capturable: i64,
    amount_received: i64,
    currency: String,
    status: GatewayStatus,
    latest_charge: Option<String>,
    last_payment_error: Option<WireError>,
}

#[derive(Deserialize)]
struct WireError {
    #[serde(rename = "type")]
    kind: String,
    code: Option<String>,
    decline_code: Option<String>,
    param: Option<String>,
    message: Option<String>,
    payment_intent: Option<Box<WireIntent>>,
}

#[derive(Deserialize)]
struct WireErrorBody {
    error: WireError,
}

/// A wire intent checked against what Till asked: the same object, amount and currency,
/// a known status, and figures that fit inside the amount.
fn checked_intent(wire: WireIntent, expected: Expected<'_>) -> Result<GatewayIntent, InvalidReply> {
    if wire.object != "payment_intent" {
        return Err(InvalidReply::new("object", format!("expected a payment_intent, got {:?}", wire.object)));
    }
    if !wire.id.starts_with("pi_") || segment(&wire.id).is_err() {
        return Err(InvalidReply::new("id", "not a PaymentIntent id"));
    }
    if let Some(id) = expected.id {
        if wire.id != id {
            return Err(InvalidReply::new("id", format!("asked about {id}, the reply is about {}", wire.id)));
        }
    }
    let currency_expected = currency(expected.amount.currency());
    if wire.currency != currency_expected {
        return Err(InvalidReply::new("currency", format!("expected {currency_expected}, got {}", wire.currency)));
    }
    if wire.amount != expected.amount.minor() {
        return Err(InvalidReply::new("amount", format!("expected {}, got {}", expected.amount.minor(), wire.amount)));
    }
    let within = |field: &'static str, value: i64| {
        if (0..=wire.amount).contains(&value) {
            Ok(Money::from_minor(value, expected.amount.currency()))
        } else {
            Err(InvalidReply::new(field, format!("{value} is outside 0..={}", wire.amount)))
        }
    };
    let capturable = within("amount_capturable", wire.amount_capturable)?;
    let received = within("amount_received", wire.amount_received)?;
    // The figures must agree with the status: money to capture exactly while capturable,
    // money received only once succeeded.
    let consistent = match wire.status {
        GatewayStatus::RequiresCapture => !capturable.is_zero() && received.is_zero(),
        GatewayStatus::Succeeded => capturable.is_zero() && !received.is_zero(),
        _ => capturable.is_zero() && received.is_zero(),
    };
    if !consistent {
        return Err(InvalidReply::new("status", "the amounts do not fit the status"));
    }
    if let Some(charge) = &wire.latest_charge {
        if !charge.starts_with("ch_") && !charge.starts_with("py_") || segment(charge).is_err() {
            return Err(InvalidReply::new("latest_charge", "not a charge id"));
        }
    }
    let decline = match wire.last_payment_error {
        Some(error) => Some(decline(&error)?),
        None => None,
    };
    Ok(GatewayIntent {
        id: wire.id,
        status: wire.status,
        amount: expected.amount,
        capturable,
        received,
        charge: wire.latest_charge,
        decline,
    })
}

fn decline(error: &WireError) -> Result<Decline, InvalidReply> {
    Ok(Decline {
        code: error.code.clone().ok_or_else(|| InvalidReply::new("error.code", "a decline without a code"))?,
        decline_code: error.decline_code.clone(),
        message: error.message.clone().unwrap_or_default(),
    })
}

/// Any reply to an intent call, as an [`Answer`].
fn intent_answer(reply: &Reply, expected: Expected<'_>) -> Result<Answer<GatewayIntent>, InvalidReply> {
    match reply.status {
        StatusCode::OK => Ok(Answer::Done(checked_intent(reply.json()?, expected)?)),
        StatusCode::PAYMENT_REQUIRED => {
            let body: WireErrorBody = reply.json()?;
            if body.error.kind != "card_error" {
                return Err(InvalidReply::new("error.type", "a 402 that is not a card error"));
            }
            let decline = decline(&body.error)?;
            let intent = body
                .error
                .payment_intent
                .ok_or_else(|| InvalidReply::new("error.payment_intent", "a decline without its intent"))?;
            let intent = checked_intent(*intent, expected)?;
            if intent.status != GatewayStatus::RequiresPaymentMethod {
                return Err(InvalidReply::new(
                    "error.payment_intent.status",
                    "a declined intent must need a payment method",
                ));
            }
            Ok(Answer::Declined { decline, intent })
        }
        other => refusal(reply, other).map(Answer::Refused),
    }
}

/// A 400 or 404 with Stripe's error object: the request was refused and nothing changed.
/// Anything else (401: Till's key is wrong; an unexpected status) cannot be acted on.
fn refusal(reply: &Reply, status: StatusCode) -> Result<Refusal, InvalidReply> {
    if status != StatusCode::BAD_REQUEST && status != StatusCode::NOT_FOUND {
        return Err(InvalidReply::new("status", format!("Stripe answered {status}")));
    }
    let body: WireErrorBody = reply.json()?;
    if !matches!(body.error.kind.as_str(), "invalid_request_error" | "idempotency_error") {
        return Err(InvalidReply::new("error.type", format!("unexpected {:?}", body.error.kind)));
    }
    Ok(Refusal { code: body.error.code, param: body.error.param, message: body.error.message.unwrap_or_default() })
}

#[derive(Deserialize)]
struct WireRefund {
    id: String,
    object: String,
    amount: i64,
    currency: String,
    payment_intent: String,
    status: RefundStatus,
}

fn refund_answer(reply: &Reply, intent: &str, amount: Money) -> Result<Answer<GatewayRefund>, InvalidReply> {
    if reply.status != StatusCode::OK {
        return refusal(reply, reply.status).map(Answer::Refused);
    }
    let wire: WireRefund = reply.json()?;
    if wire.object != "refund" || !wire.id.starts_with("re_") || segment(&wire.id).is_err() {
        return Err(InvalidReply::new("id", "not a refund"));
    }
    if wire.payment_intent != intent {
        return Err(InvalidReply::new("payment_intent", format!("refunded {}, asked {intent}", wire.payment_intent)));
    }
    if wire.currency != currency(amount.currency()) {
        return Err(InvalidReply::new(
            "currency",
            format!("expected {}, got {}", currency(amount.currency()), wire.currency),
        ));
    }
    if wire.amount != amount.minor() {
        return Err(InvalidReply::new("amount", format!("expected {}, got {}", amount.minor(), wire.amount)));
    }
    Ok(Answer::Done(GatewayRefund { id: wire.id, amount, status: wire.status }))
}

#[derive(Deserialize)]
struct WireCharge {
    id: String,
    balance_transaction: Option<String>,
}

fn charge_transaction(reply: &Reply, charge: &str) -> Result<String, InvalidReply> {
    if reply.status != StatusCode::OK {
        return Err(InvalidReply::new("status", format!("Stripe answered {}", reply.status)));
    }
    let wire: WireCharge = reply.json()?;
    if wire.id != charge {
        return Err(InvalidReply::new("id", format!("asked about {charge}, the reply is about {}", wire.id)));
    }
    let transaction =
        wire.balance_transaction.ok_or_else(|| InvalidReply::new("balance_transaction", "an uncaptured charge"))?;
    segment(&transaction).map_err(|_| InvalidReply::new("balance_transaction", "not an id"))?;
    Ok(transaction)
}

#[derive(Deserialize)]
struct WireBalanceTransaction {
    id: String,
    amount: i64,
    fee: i64,
    net: i64,
    currency: String,
}

fn transaction_fee(reply: &Reply, transaction: &str, expected: Currency) -> Result<Money, InvalidReply> {
    if reply.status != StatusCode::OK {
        return Err(InvalidReply::new("status", format!("Stripe answered {}", reply.status)));
    }
    let wire: WireBalanceTransaction = reply.json()?;
    if wire.id != transaction {
        return Err(InvalidReply::new("id", "another balance transaction"));
    }
    if wire.currency != currency(expected) {
        return Err(InvalidReply::new("currency", format!("expected {}, got {}", currency(expected), wire.currency)));
    }
    if wire.fee < 0 || wire.fee > wire.amount || wire.amount.checked_sub(wire.fee) != Some(wire.net) {
        return Err(InvalidReply::new("fee", "the fee does not fit the amount and the net"));
    }
    Ok(Money::from_minor(wire.fee, expected))
}

#[cfg(test)]
mod tests;
