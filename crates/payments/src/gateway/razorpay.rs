//! The Razorpay adapter: orders, UPI collect payments, capture, refunds and settlements
//! over Razorpay's public API (JSON bodies, `Authorization: Basic key_id:key_secret`),
//! through the outbound kit, every reply validated before Till acts on it.
//!
//! How Till's steps map onto Razorpay's objects (razorpay.com/docs/api/orders,
//! /payments/s2s-integration/upi, /payments/refunds, /settlements):
//! - Till's intent is a Razorpay **order** (`order_…`, its `receipt` Till's intent id,
//!   its `payment.capture` the intent's capture method); create makes it.
//! - confirm makes a UPI **collect payment** on the order (`POST /v1/payments/create/upi`)
//!   and answers `processing`: the customer approves it in their UPI app, later. Till
//!   learns the outcome by asking again (the step's recovery point stays; Razorpay's
//!   webhook expedites it): `authorized` is `requires_capture`, `captured` is
//!   `succeeded`, `failed` a decline.
//! - capture captures the order's authorised payment. Razorpay captures the whole
//!   authorised amount or nothing, so a partial capture is refused before any call.
//! - cancel makes no call: Razorpay has no void. An authorised payment that is never
//!   captured is refunded to the customer by Razorpay when its capture window passes;
//!   a captured one cannot be canceled (refund it).
//! - refund refunds the order's captured payment (`POST /v1/payments/{id}/refund`).
//!
//! Razorpay's payments API takes no idempotency key (only RazorpayX payouts do,
//! providers.md §3.2). So each effect carries Till's key in its `notes` (`till_key`),
//! and each step first looks for the effect an earlier attempt made (the order by its
//! `receipt`, the payment or the refund by its note) before making it: a retry after a
//! timeout finds what the first attempt did instead of doing it twice. The kit never
//! resends such a POST by itself unless nothing was sent.
//!
//! Fees: a payment's `fee` includes the GST on it (`tax`), as Razorpay reports it.

use serde::Deserialize;
use serde_json::json;
use till_kit::{Currency, Money};
use till_outbound::{Dependency, DependencyConfig, InvalidReply, Method, Names, OutboundError, OutboundRequest, Reply};

use super::{
    Answer, Decline, Event, Gateway, GatewayIntent, GatewayKind, GatewayPayout, GatewayRefund, GatewayStatus, LineKind,
    NewIntent, PaymentMethod, PayoutPage, RefundStatus, Refusal, SettlementLine,
};

pub const NAMES: Names = Names {
    dependency: "Razorpay",
    unavailable: "gateway_unavailable",
    reply_invalid: "gateway_reply_invalid",
    timeout: "gateway_timeout",
};

/// Razorpay's largest page (`count`).
const PAGE_MAX: usize = 100;
/// Pages of one day's settlement recon read at most (10 000 lines).
const RECON_PAGES_MAX: usize = 100;
/// Razorpay dates its recon in India Standard Time (UTC+05:30).
const IST_OFFSET_SECONDS: i32 = 5 * 3600 + 30 * 60;
/// How long a UPI collect request waits for the customer, in minutes (Razorpay: 5–5760).
const COLLECT_EXPIRY_MINUTES: u32 = 5;

/// Razorpay, as one dependency of the outbound kit.
#[derive(Debug, Clone)]
pub struct Razorpay {
    dependency: Dependency,
}

impl Razorpay {
    /// With the kit's settings of the caller's; its credentials are
    /// `Credentials::Basic { user: key_id, password: key_secret }`.
    pub fn with_config(config: DependencyConfig) -> Result<Razorpay, OutboundError> {
        let dependency = Dependency::new(config)
            .map_err(|error| OutboundError::Request { names: NAMES, cause: error.to_string() })?;
        Ok(Razorpay { dependency })
    }

    /// Every payment of `order`, oldest first (Razorpay lists newest first).
    async fn payments_of(&self, order: &str, amount: Money) -> Result<Vec<Payment>, OutboundError> {
        let request = OutboundRequest::new(Method::GET, format!("v1/orders/{}/payments", segment(order)?));
        self.dependency.call(&request, |reply| payments_page(reply, order, amount)).await
    }

    fn json_request(&self, path: String, body: &serde_json::Value) -> Result<OutboundRequest, OutboundError> {
        OutboundRequest::new(Method::POST, path)
            .json(body)
            .map_err(|error| OutboundError::Request { names: NAMES, cause: error.to_string() })
    }
}

#[async_trait::async_trait]
impl Gateway for Razorpay {
    fn kind(&self) -> GatewayKind {
        GatewayKind::Razorpay
    }

    fn dependency(&self) -> &Dependency {
        &self.dependency
    }

    /// UPI collect, in rupees.
    fn accepts(&self, method: &PaymentMethod, currency: Currency) -> bool {
        matches!(method, PaymentMethod::Upi { .. }) && currency.code() == "INR"
    }

    async fn create(&self, new: &NewIntent, _key: &str) -> Result<Answer<GatewayIntent>, OutboundError> {
        let receipt = &new.reference;
        // An order an earlier attempt made for this intent, if any.
        let request = OutboundRequest::new(Method::GET, format!("v1/orders?receipt={}&count=1", segment(receipt)?));
        let found = self.dependency.call(&request, |reply| orders_page(reply, receipt, new.amount)).await?;
        if let Some(order) = found {
            return Ok(Answer::Done(intent_of(&order, new.amount, None)));
        }
        let body = json!({
            "amount": new.amount.minor(),
            "currency": new.amount.currency().code(),
            "receipt": receipt,
            "notes": { "till_payment_intent": receipt },
            "payment": { "capture": new.capture_method.as_str() },
        });
        let request = self.json_request(String::from("v1/orders"), &body)?;
        self.dependency
            .call(&request, |reply| match refused(reply)? {
                Some(refusal) => Ok(Answer::Refused(refusal)),
                None => {
                    let order = checked_order(reply.json()?, None, receipt, new.amount)?;
                    Ok(Answer::Done(intent_of(&order, new.amount, None)))
                }
            })
            .await
    }

    async fn confirm(
        &self,
        id: &str,
        amount: Money,
        method: &PaymentMethod,
        email: Option<&str>,
        key: &str,
    ) -> Result<Answer<GatewayIntent>, OutboundError> {
        let PaymentMethod::Upi { vpa } = method else {
            return Ok(Answer::Refused(Refusal {
                code: Some(String::from("payment_method_unsupported")),
                param: Some(String::from("payment_method")),
                message: String::from("Razorpay takes UPI payments ({\"type\": \"upi\", \"vpa\": \"name@bank\"})."),
            }));
        };
        // The payment an earlier attempt of this step made, if any: its outcome is the
        // step's (still `created` while the customer has not answered the collect).
        let order = Order::known(id);
        if let Some(payment) =
            self.payments_of(id, amount).await?.into_iter().find(|payment| payment.key() == Some(key))
        {
            return Ok(answer_of(&order, amount, Some(&payment)));
        }
        let mut body = json!({
            "amount": amount.minor(),
            "currency": amount.currency().code(),
            "order_id": id,
            "method": "upi",
            "upi": { "flow": "collect", "vpa": vpa, "expiry_time": COLLECT_EXPIRY_MINUTES },
            "notes": { "till_key": key },
        });
        if let Some(email) = email {
            body["email"] = json!(email);
        }
        let request = self.json_request(String::from("v1/payments/create/upi"), &body)?;
        self.dependency
            .call(&request, |reply| match refused(reply)? {
                Some(refusal) => Ok(Answer::Refused(refusal)),
                None => {
                    let created: WireCreated = reply.json()?;
                    if !is_id(&created.razorpay_payment_id, "pay_") {
                        return Err(InvalidReply::new("razorpay_payment_id", "not a payment id"));
                    }
                    // The collect request is with the customer: nothing is decided yet.
                    let mut intent = intent_of(&order, amount, None);
                    intent.status = GatewayStatus::Processing;
                    intent.charge = Some(created.razorpay_payment_id);
                    Ok(Answer::Done(intent))
                }
            })
            .await
    }

    async fn capture(
        &self,
        id: &str,
        amount: Money,
        to_capture: Option<Money>,
        _key: &str,
    ) -> Result<Answer<GatewayIntent>, OutboundError> {
        if to_capture.is_some_and(|part| part != amount) {
            return Ok(Answer::Refused(Refusal {
                code: Some(String::from("partial_capture_unsupported")),
                param: Some(String::from("amount_to_capture")),
                message: String::from("Razorpay captures the whole authorised amount or nothing."),
            }));
        }
        let order = Order::known(id);
        let payments = self.payments_of(id, amount).await?;
        let Some(payment) = best(&payments) else {
            return Ok(Answer::Refused(nothing_to(&"capture")));
        };
        match payment.status {
            // An earlier attempt captured it.
            PaymentStatus::Captured | PaymentStatus::Refunded => return Ok(answer_of(&order, amount, Some(payment))),
            PaymentStatus::Authorized => {}
            _ => return Ok(Answer::Refused(nothing_to(&"capture"))),
        }
        let body = json!({ "amount": amount.minor(), "currency": amount.currency().code() });
        let request = self.json_request(format!("v1/payments/{}/capture", segment(&payment.id)?), &body)?;
        let payment_id = payment.id.clone();
        self.dependency
            .call(&request, |reply| match refused(reply)? {
                Some(refusal) => Ok(Answer::Refused(refusal)),
                None => {
                    let captured = checked_payment(reply.json()?, id, amount)?;
                    if captured.id != payment_id {
                        return Err(InvalidReply::new("id", "the capture answered about another payment"));
                    }
                    Ok(answer_of(&order, amount, Some(&captured)))
                }
            })
            .await
    }

    async fn cancel(&self, id: &str, amount: Money, _key: &str) -> Result<Answer<GatewayIntent>, OutboundError> {
        let payments = self.payments_of(id, amount).await?;
        let order = Order::known(id);
        match best(&payments).map(|payment| payment.status) {
            Some(PaymentStatus::Captured | PaymentStatus::Refunded) => Ok(Answer::Refused(Refusal {
                code: Some(String::from("payment_captured")),
                param: None,
                message: String::from("The payment is captured; refund it instead."),
            })),
            Some(PaymentStatus::Created) => Ok(Answer::Refused(Refusal {
                code: Some(String::from("payment_pending")),
                param: None,
                message: String::from("A collect request is with the customer; wait for its outcome."),
            })),
            // Nothing to void: an authorisation never captured is refunded by Razorpay
            // when its capture window passes.
            _ => {
                let mut intent = intent_of(&order, amount, None);
                intent.status = GatewayStatus::Canceled;
                Ok(Answer::Done(intent))
            }
        }
    }

    async fn retrieve(&self, id: &str, amount: Money) -> Result<Answer<GatewayIntent>, OutboundError> {
        let payments = self.payments_of(id, amount).await?;
        Ok(answer_of(&Order::known(id), amount, best(&payments)))
    }

    async fn refund(
        &self,
        intent: &str,
        charge: Option<&str>,
        amount: Money,
        key: &str,
    ) -> Result<Answer<GatewayRefund>, OutboundError> {
        let payment = match charge {
            Some(payment) => payment.to_string(),
            None => {
                let payments = self.payments_of(intent, amount).await?;
                match payments.iter().find(|payment| payment.status.is_captured()) {
                    Some(payment) => payment.id.clone(),
                    None => return Ok(Answer::Refused(nothing_to(&"refund"))),
                }
            }
        };
        let path = format!("v1/payments/{}/refunds?count={PAGE_MAX}", segment(&payment)?);
        let request = OutboundRequest::new(Method::GET, path);
        let earlier = self.dependency.call(&request, |reply| refunds_page(reply, &payment, amount.currency())).await?;
        if let Some(made) = earlier.into_iter().find(|refund| refund.key.as_deref() == Some(key)) {
            return refund_of(made, amount)
                .map(Answer::Done)
                .map_err(|reason| OutboundError::InvalidReply { names: NAMES, reason });
        }
        let body = json!({ "amount": amount.minor(), "speed": "normal", "notes": { "till_key": key } });
        let request = self.json_request(format!("v1/payments/{}/refund", segment(&payment)?), &body)?;
        self.dependency
            .call(&request, |reply| match refused(reply)? {
                Some(refusal) => Ok(Answer::Refused(refusal)),
                None => {
                    let made = checked_refund(reply.json()?, &payment, amount.currency())?;
                    refund_of(made, amount).map(Answer::Done)
                }
            })
            .await
    }

    async fn fee(&self, charge: &str, currency: Currency) -> Result<Money, OutboundError> {
        let request = OutboundRequest::new(Method::GET, format!("v1/payments/{}", segment(charge)?));
        self.dependency
            .call(&request, |reply| {
                let wire: WirePayment = ok_json(reply)?;
                if wire.id != charge || wire.entity != "payment" {
                    return Err(InvalidReply::new("id", format!("asked about {charge}")));
                }
                if currency_of(&wire.currency)? != currency {
                    return Err(InvalidReply::new("currency", format!("expected {}", currency.code())));
                }
                match wire.fee {
                    Some(fee)
                        if (0..=wire.amount).contains(&fee) && wire.tax.is_none_or(|tax| (0..=fee).contains(&tax)) =>
                    {
                        Ok(Money::from_minor(fee, currency))
                    }
                    Some(_) => Err(InvalidReply::new("fee", "a fee outside 0 to the amount, or a tax above it")),
                    None => Err(InvalidReply::new("fee", "no fee on the payment yet")),
                }
            })
            .await
    }

    async fn payouts(&self, cursor: Option<&str>) -> Result<PayoutPage, OutboundError> {
        let skip: usize = match cursor {
            Some(text) => text.parse().map_err(|_| OutboundError::Request {
                names: NAMES,
                cause: format!("{text:?} is not a Razorpay page cursor"),
            })?,
            None => 0,
        };
        let request = OutboundRequest::new(Method::GET, format!("v1/settlements?count={PAGE_MAX}&skip={skip}"));
        self.dependency.call(&request, |reply| settlement_page(reply, skip)).await
    }

    async fn payout_lines(&self, payout: &GatewayPayout) -> Result<Vec<SettlementLine>, OutboundError> {
        let offset = time::UtcOffset::from_whole_seconds(IST_OFFSET_SECONDS)
            .map_err(|error| OutboundError::Request { names: NAMES, cause: error.to_string() })?;
        let day = time::OffsetDateTime::from_unix_timestamp(payout.created)
            .map_err(|error| OutboundError::Request { names: NAMES, cause: error.to_string() })?
            .to_offset(offset)
            .date();
        let currency = payout.amount.currency();
        let mut lines = Vec::new();
        for page in 0..RECON_PAGES_MAX {
            let path = format!(
                "v1/settlements/recon/combined?year={}&month={}&day={}&count={PAGE_MAX}&skip={}",
                day.year(),
                u8::from(day.month()),
                day.day(),
                page * PAGE_MAX
            );
            let request = OutboundRequest::new(Method::GET, path);
            let (items, full) = self.dependency.call(&request, |reply| recon_page(reply, &payout.id, currency)).await?;
            lines.extend(items);
            if !full {
                return Ok(lines);
            }
        }
        Err(OutboundError::InvalidReply {
            names: NAMES,
            reason: InvalidReply::new("items", format!("a day's recon longer than {RECON_PAGES_MAX} pages")),
        })
    }
}

fn nothing_to(what: &dyn std::fmt::Display) -> Refusal {
    Refusal {
        code: Some(String::from("no_payment")),
        param: None,
        message: format!("The order has no payment to {what}."),
    }
}

/// A Razorpay id of `prefix` (`pay_…`) that is safe as one path segment.
fn is_id(id: &str, prefix: &str) -> bool {
    id.starts_with(prefix) && segment(id).is_ok()
}

/// An id as one path segment: Razorpay's ids are `[A-Za-z0-9_]`; anything else is
/// refused before a request is made.
fn segment(id: &str) -> Result<&str, OutboundError> {
    if !id.is_empty() && id.len() <= 64 && id.bytes().all(|byte| byte.is_ascii_alphanumeric() || byte == b'_') {
        Ok(id)
    } else {
        Err(OutboundError::Request { names: NAMES, cause: format!("{id:?} is not a Razorpay id") })
    }
}

fn currency_of(code: &str) -> Result<Currency, InvalidReply> {
    Currency::parse(code).map_err(|error| InvalidReply::new("currency", error.to_string()))
}

#[derive(Deserialize)]
struct WireError {
    error: WireErrorBody,
}

#[derive(Deserialize)]
struct WireErrorBody {
    code: String,
    description: Option<String>,
    field: Option<String>,
    reason: Option<String>,
}

/// A 4xx in Razorpay's error shape is a refusal (nothing happened); any other status
/// but 200 is an invalid reply; `None` for a 200.
fn refused(reply: &Reply) -> Result<Option<Refusal>, InvalidReply> {
    if reply.status.as_u16() == 200 {
        return Ok(None);
    }
    if !matches!(reply.status.as_u16(), 400 | 404) {
        return Err(InvalidReply::new("status", format!("Razorpay answered {}", reply.status)));
    }
    let wire: WireError = reply.json()?;
    if wire.error.code != "BAD_REQUEST_ERROR" {
        return Err(InvalidReply::new("error.code", format!("a {} with code {:?}", reply.status, wire.error.code)));
    }
    Ok(Some(Refusal {
        code: wire.error.reason,
        param: wire.error.field,
        message: wire.error.description.unwrap_or_default(),
    }))
}

fn ok_json<T: serde::de::DeserializeOwned>(reply: &Reply) -> Result<T, InvalidReply> {
    if reply.status.as_u16() != 200 {
        return Err(InvalidReply::new("status", format!("Razorpay answered {}", reply.status)));
    }
    reply.json()
}

#[derive(Deserialize)]
struct WireCollection<T> {
    entity: String,
    items: Vec<T>,
}

fn collection<T: serde::de::DeserializeOwned>(reply: &Reply) -> Result<Vec<T>, InvalidReply> {
    let wire: WireCollection<T> = ok_json(reply)?;
    if wire.entity != "collection" {
        return Err(InvalidReply::new("entity", format!("expected a collection, got {:?}", wire.entity)));
    }
    if wire.items.len() > PAGE_MAX {
        return Err(InvalidReply::new("items", "more items than the page holds"));
    }
    Ok(wire.items)
}

#[derive(Deserialize)]
struct WireOrder {
    id: String,
    entity: String,
    amount: i64,
    currency: String,
    receipt: Option<String>,
    status: String,
}

/// An order, validated: Till's, for the amount Till asked.
struct Order {
    id: String,
}

impl Order {
    fn known(id: &str) -> Order {
        Order { id: id.to_string() }
    }
}

fn checked_order(wire: WireOrder, id: Option<&str>, receipt: &str, amount: Money) -> Result<Order, InvalidReply> {
    if wire.entity != "order" || !is_id(&wire.id, "order_") {
        return Err(InvalidReply::new("id", "not an order"));
    }
    if id.is_some_and(|id| id != wire.id) {
        return Err(InvalidReply::new("id", "the reply is about another order"));
    }
    if wire.receipt.as_deref() != Some(receipt) {
        return Err(InvalidReply::new("receipt", format!("expected {receipt}")));
    }
    if currency_of(&wire.currency)? != amount.currency() {
        return Err(InvalidReply::new(
            "currency",
            format!("expected {}, got {}", amount.currency().code(), wire.currency),
        ));
    }
    if wire.amount != amount.minor() {
        return Err(InvalidReply::new("amount", format!("expected {}, got {}", amount.minor(), wire.amount)));
    }
    if !matches!(wire.status.as_str(), "created" | "attempted" | "paid") {
        return Err(InvalidReply::new("status", format!("unknown order status {:?}", wire.status)));
    }
    Ok(Order { id: wire.id })
}

/// The order made for `receipt`, if there is one.
fn orders_page(reply: &Reply, receipt: &str, amount: Money) -> Result<Option<Order>, InvalidReply> {
    let orders: Vec<WireOrder> = collection(reply)?;
    let mut mine = orders.into_iter().filter(|order| order.receipt.as_deref() == Some(receipt));
    let found = mine.next().map(|order| checked_order(order, None, receipt, amount)).transpose()?;
    if mine.next().is_some() {
        return Err(InvalidReply::new("items", format!("two orders for {receipt}")));
    }
    Ok(found)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum PaymentStatus {
    Created,
    Authorized,
    Captured,
    Refunded,
    Failed,
}

impl PaymentStatus {
    fn is_captured(self) -> bool {
        matches!(self, PaymentStatus::Captured | PaymentStatus::Refunded)
    }
}

#[derive(Deserialize)]
struct WirePayment {
    id: String,
    entity: String,
    amount: i64,
    currency: String,
    status: String,
    order_id: Option<String>,
    #[serde(default)]
    captured: bool,
    fee: Option<i64>,
    tax: Option<i64>,
    error_code: Option<String>,
    error_description: Option<String>,
    error_reason: Option<String>,
    /// An object, or `[]` when empty (as Razorpay writes empty notes).
    #[serde(default)]
    notes: serde_json::Value,
}

/// A payment, validated against its order and amount.
#[derive(Debug, Clone)]
struct Payment {
    id: String,
    status: PaymentStatus,
    notes: serde_json::Value,
    decline: Option<Decline>,
}

impl Payment {
    fn key(&self) -> Option<&str> {
        self.notes.get("till_key").and_then(serde_json::Value::as_str)
    }
}

fn checked_payment(wire: WirePayment, order: &str, amount: Money) -> Result<Payment, InvalidReply> {
    if wire.entity != "payment" || !is_id(&wire.id, "pay_") {
        return Err(InvalidReply::new("id", "not a payment"));
    }
    if wire.order_id.as_deref() != Some(order) {
        return Err(InvalidReply::new("order_id", format!("expected {order}")));
    }
    if currency_of(&wire.currency)? != amount.currency() {
        return Err(InvalidReply::new(
            "currency",
            format!("expected {}, got {}", amount.currency().code(), wire.currency),
        ));
    }
    if wire.amount != amount.minor() {
        return Err(InvalidReply::new("amount", format!("expected {}, got {}", amount.minor(), wire.amount)));
    }
    let status: PaymentStatus = serde_json::from_value(json!(wire.status))
        .map_err(|_| InvalidReply::new("status", format!("unknown payment status {:?}", wire.status)))?;
    if status.is_captured() != wire.captured {
        return Err(InvalidReply::new("captured", format!("{:?} with captured = {}", wire.status, wire.captured)));
    }
    let decline = (status == PaymentStatus::Failed).then(|| Decline {
        code: wire.error_reason.clone().or(wire.error_code.clone()).unwrap_or_else(|| String::from("payment_failed")),
        decline_code: wire.error_reason.clone(),
        message: wire.error_description.clone().unwrap_or_else(|| String::from("The payment failed.")),
    });
    Ok(Payment { id: wire.id, status, notes: wire.notes, decline })
}

fn payments_page(reply: &Reply, order: &str, amount: Money) -> Result<Vec<Payment>, InvalidReply> {
    let wires: Vec<WirePayment> = collection(reply)?;
    let mut payments =
        wires.into_iter().map(|wire| checked_payment(wire, order, amount)).collect::<Result<Vec<_>, _>>()?;
    payments.reverse();
    if payments.iter().filter(|payment| payment.status.is_captured()).count() > 1 {
        return Err(InvalidReply::new("items", "two captured payments on one order"));
    }
    Ok(payments)
}

/// The payment that says where the order stands: a captured one, else an authorised
/// one, else one still with the customer, else the last that failed.
fn best(payments: &[Payment]) -> Option<&Payment> {
    let rank = |payment: &Payment| match payment.status {
        PaymentStatus::Captured | PaymentStatus::Refunded => 4,
        PaymentStatus::Authorized => 3,
        PaymentStatus::Created => 2,
        PaymentStatus::Failed => 1,
    };
    // Oldest first, and `max_by_key` keeps the last of equals: the newest of a rank.
    payments.iter().max_by_key(|payment| rank(payment))
}

/// The order as Till's gateway intent, from the payment that decides it (`None`: no
/// payment yet).
fn intent_of(order: &Order, amount: Money, payment: Option<&Payment>) -> GatewayIntent {
    let zero = Money::from_minor(0, amount.currency());
    let status = match payment.map(|payment| payment.status) {
        None | Some(PaymentStatus::Failed) => GatewayStatus::RequiresPaymentMethod,
        Some(PaymentStatus::Created) => GatewayStatus::Processing,
        Some(PaymentStatus::Authorized) => GatewayStatus::RequiresCapture,
        Some(PaymentStatus::Captured | PaymentStatus::Refunded) => GatewayStatus::Succeeded,
    };
    GatewayIntent {
        id: order.id.clone(),
        status,
        amount,
        capturable: if status == GatewayStatus::RequiresCapture { amount } else { zero },
        received: if status == GatewayStatus::Succeeded { amount } else { zero },
        charge: payment.map(|payment| payment.id.clone()),
        decline: payment.and_then(|payment| payment.decline.clone()),
    }
}

/// A payment's outcome as a step's answer: a failed payment is a decline.
fn answer_of(order: &Order, amount: Money, payment: Option<&Payment>) -> Answer<GatewayIntent> {
    let intent = intent_of(order, amount, payment);
    match &intent.decline {
        Some(decline) => Answer::Declined { decline: decline.clone(), intent },
        None => Answer::Done(intent),
    }
}

#[derive(Deserialize)]
struct WireCreated {
    razorpay_payment_id: String,
}

#[derive(Deserialize)]
struct WireRefund {
    id: String,
    entity: String,
    amount: i64,
    currency: String,
    payment_id: String,
    status: String,
    #[serde(default)]
    notes: serde_json::Value,
}

struct MadeRefund {
    id: String,
    amount: i64,
    status: RefundStatus,
    key: Option<String>,
}

fn checked_refund(wire: WireRefund, payment: &str, currency: Currency) -> Result<MadeRefund, InvalidReply> {
    if wire.entity != "refund" || !is_id(&wire.id, "rfnd_") {
        return Err(InvalidReply::new("id", "not a refund"));
    }
    if wire.payment_id != payment {
        return Err(InvalidReply::new("payment_id", format!("refunded {}, asked {payment}", wire.payment_id)));
    }
    if currency_of(&wire.currency)? != currency {
        return Err(InvalidReply::new("currency", format!("expected {}, got {}", currency.code(), wire.currency)));
    }
    let status = match wire.status.as_str() {
        "processed" => RefundStatus::Succeeded,
        "pending" => RefundStatus::Pending,
        "failed" => RefundStatus::Failed,
        other => return Err(InvalidReply::new("status", format!("unknown refund status {other:?}"))),
    };
    let key = wire.notes.get("till_key").and_then(serde_json::Value::as_str).map(str::to_string);
    Ok(MadeRefund { id: wire.id, amount: wire.amount, status, key })
}

fn refunds_page(reply: &Reply, payment: &str, currency: Currency) -> Result<Vec<MadeRefund>, InvalidReply> {
    let wires: Vec<WireRefund> = collection(reply)?;
    wires.into_iter().map(|wire| checked_refund(wire, payment, currency)).collect()
}

fn refund_of(made: MadeRefund, amount: Money) -> Result<GatewayRefund, InvalidReply> {
    if made.amount != amount.minor() {
        return Err(InvalidReply::new("amount", format!("refunded {}, asked {}", made.amount, amount.minor())));
    }
    Ok(GatewayRefund { id: made.id, amount, status: made.status })
}

#[derive(Deserialize)]
struct WireSettlement {
    id: String,
    entity: String,
    amount: i64,
    status: String,
    created_at: i64,
}

/// The processed settlements of a page (one `created` or `failed` has paid nothing yet;
/// a failed one is retried by Razorpay and may still be processed).
fn settlement_page(reply: &Reply, skip: usize) -> Result<PayoutPage, InvalidReply> {
    let wires: Vec<WireSettlement> = collection(reply)?;
    let full = wires.len() == PAGE_MAX;
    let mut payouts = Vec::with_capacity(wires.len());
    for wire in wires {
        if wire.entity != "settlement" || !is_id(&wire.id, "setl_") {
            return Err(InvalidReply::new("items.id", "not a settlement"));
        }
        if !matches!(wire.status.as_str(), "created" | "processed" | "failed") {
            return Err(InvalidReply::new("items.status", format!("unknown settlement status {:?}", wire.status)));
        }
        if wire.amount < 0 {
            return Err(InvalidReply::new("items.amount", "a negative settlement"));
        }
        if wire.status == "processed" {
            // Razorpay settles rupees only.
            let amount = Money::from_minor(wire.amount, currency_of("INR")?);
            payouts.push(GatewayPayout { id: wire.id, amount, created: wire.created_at });
        }
    }
    Ok(PayoutPage { payouts, next: full.then(|| (skip + PAGE_MAX).to_string()) })
}

#[derive(Deserialize)]
struct WireReconItem {
    entity_id: String,
    #[serde(rename = "type")]
    kind: String,
    debit: i64,
    credit: i64,
    amount: i64,
    currency: String,
    fee: i64,
    tax: i64,
    settlement_id: Option<String>,
}

/// The lines of one recon page that belong to `settlement`, validated, and whether the
/// page was full (another may follow).
fn recon_page(
    reply: &Reply,
    settlement: &str,
    currency: Currency,
) -> Result<(Vec<SettlementLine>, bool), InvalidReply> {
    let items: Vec<WireReconItem> = collection(reply)?;
    let full = items.len() == PAGE_MAX;
    let mut lines = Vec::new();
    for item in items {
        if item.settlement_id.as_deref() != Some(settlement) {
            continue;
        }
        if segment(&item.entity_id).is_err() {
            return Err(InvalidReply::new("entity_id", "not a Razorpay id"));
        }
        if currency_of(&item.currency)? != currency {
            return Err(InvalidReply::new("currency", format!("expected {}, got {}", currency.code(), item.currency)));
        }
        if item.debit < 0 || item.credit < 0 || item.fee < 0 || item.tax < 0 || item.tax > item.fee {
            return Err(InvalidReply::new("debit", "negative figures, or a tax above its fee"));
        }
        let money = |minor: i64| Money::from_minor(minor, currency);
        let (kind, amount, fee, net) = match item.kind.as_str() {
            "payment" if is_id(&item.entity_id, "pay_") => {
                if item.debit != 0 || item.amount.checked_sub(item.fee) != Some(item.credit) {
                    return Err(InvalidReply::new("credit", "a payment's credit is not its amount less its fee"));
                }
                (LineKind::Charge, item.amount, item.fee, item.credit)
            }
            "refund" if is_id(&item.entity_id, "rfnd_") => {
                if item.credit != 0 || item.debit != item.amount.checked_add(item.fee).unwrap_or(-1) {
                    return Err(InvalidReply::new("debit", "a refund's debit is not its amount and fee"));
                }
                (LineKind::Refund, -item.amount, item.fee, -item.debit)
            }
            _ => {
                let net = item.credit.checked_sub(item.debit).ok_or_else(|| InvalidReply::new("credit", "overflow"))?;
                (LineKind::Other, net, 0, net)
            }
        };
        lines.push(SettlementLine {
            id: item.entity_id.clone(),
            kind,
            source: item.entity_id,
            amount: money(amount),
            fee: money(fee),
            net: money(net),
        });
    }
    Ok((lines, full))
}

/// Checks Razorpay's `X-Razorpay-Signature`: hex HMAC-SHA256 of the raw body with the
/// webhook's secret, compared in constant time. Razorpay signs no timestamp
/// (providers.md §4): replay protection is the permanent dedupe by event id.
pub fn verify_webhook(secret: &str, header: Option<&str>, body: &[u8]) -> Result<(), &'static str> {
    use hmac::Mac;
    let header = header.ok_or("no X-Razorpay-Signature header")?;
    let given = hex::decode(header.trim()).map_err(|_| "the signature is not hex")?;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).map_err(|_| "an unusable secret")?;
    mac.update(body);
    mac.verify_slice(&given).map_err(|_| "the signature does not match the body")
}

#[derive(Deserialize)]
struct WireEvent {
    entity: String,
    event: String,
    created_at: i64,
    payload: serde_json::Value,
}

/// A webhook's body as an [`Event`]: its id is the `X-Razorpay-Event-Id` header (what
/// deduplicates it), its object the payment it is about, if any, and its intent that
/// payment's order.
pub fn parse_event(body: &[u8], event_id: Option<&str>) -> Result<Event, InvalidReply> {
    let id = event_id.ok_or_else(|| InvalidReply::new("X-Razorpay-Event-Id", "no event id"))?;
    if id.is_empty() || id.len() > 64 || !id.bytes().all(|byte| byte.is_ascii_alphanumeric() || byte == b'_') {
        return Err(InvalidReply::new("X-Razorpay-Event-Id", "not an event id"));
    }
    let wire: WireEvent = serde_json::from_slice(body)
        .map_err(|error| InvalidReply::new("body", format!("not a Razorpay event: {error}")))?;
    if wire.entity != "event" {
        return Err(InvalidReply::new("entity", "not an event"));
    }
    let known_shape = !wire.event.is_empty()
        && wire.event.len() <= 100
        && wire.event.bytes().all(|byte| byte.is_ascii_lowercase() || byte == b'.' || byte == b'_');
    if !known_shape {
        return Err(InvalidReply::new("event", "not an event type"));
    }
    let object = wire.payload.pointer("/payment/entity").cloned().unwrap_or(serde_json::Value::Null);
    let intent = object
        .get("order_id")
        .and_then(serde_json::Value::as_str)
        .filter(|order| is_id(order, "order_"))
        .map(str::to_string);
    Ok(Event {
        gateway: GatewayKind::Razorpay,
        id: id.to_string(),
        kind: wire.event,
        created: wire.created_at,
        intent,
        object,
    })
}

/// A webhook's payment, checked as a reply about the order `id` for `amount` would be.
pub fn event_intent(object: &serde_json::Value, id: &str, amount: Money) -> Result<GatewayIntent, InvalidReply> {
    let wire: WirePayment = serde_json::from_value(object.clone())
        .map_err(|error| InvalidReply::new("payload.payment.entity", format!("not a payment: {error}")))?;
    let payment = checked_payment(wire, id, amount)?;
    Ok(intent_of(&Order::known(id), amount, Some(&payment)))
}

#[cfg(test)]
mod tests;
