//! The checkout's way to payments: payment intents, through payments' own API in
//! process (`till_http::internal`), each call under an Idempotency-Key made of the order
//! and the step, so that a step retried after a crash or an outage is answered with the
//! effect it already had.
//!
//! Payments is another service: its answers are read as an outside party's are. A body
//! that does not parse, names another amount or currency, or a status the API does not
//! have is an [`Answer::Unusable`], never a defaulted field.

use serde::Deserialize;
use serde_json::json;
use till_http::internal::{Internal, InternalCaller, Reply};
use till_kit::{BusinessId, Currency};

/// The calling service, as payments' idempotency keys and audit entries name it.
const SERVICE: &str = "commerce";
/// Characters of a problem's detail kept on an order.
const DETAIL_CHARS_MAX: usize = 500;

/// A payment intent, as far as the checkout reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Intent {
    /// `pi_…`.
    pub id: String,
    pub status: IntentStatus,
    pub amount_received: i64,
    /// The gateway's decline, after a confirm that did not authorise.
    pub decline: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IntentStatus {
    RequiresPaymentMethod,
    RequiresConfirmation,
    RequiresAction,
    Processing,
    RequiresCapture,
    Canceled,
    Succeeded,
    RequiresReview,
}

impl IntentStatus {
    fn parse(text: &str) -> Option<IntentStatus> {
        Some(match text {
            "requires_payment_method" => IntentStatus::RequiresPaymentMethod,
            "requires_confirmation" => IntentStatus::RequiresConfirmation,
            "requires_action" => IntentStatus::RequiresAction,
            "processing" => IntentStatus::Processing,
            "requires_capture" => IntentStatus::RequiresCapture,
            "canceled" => IntentStatus::Canceled,
            "succeeded" => IntentStatus::Succeeded,
            "requires_review" => IntentStatus::RequiresReview,
            _ => return None,
        })
    }
}

/// What a call came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// A 200 or 201 with the intent as it now stands.
    Intent(Intent),
    /// A decision against the request (a 4xx, or a 502 that payments stored as its
    /// answer because the gateway's reply could not be trusted): the same key will
    /// always get it again.
    Refused { status: u16, code: String, detail: String },
    /// Nothing decided yet (the gateway's answer is not in, payments or the gateway is
    /// unavailable, the key is in use by the attempt before): the same call, with the
    /// same key, later.
    NotYet(String),
    /// An answer that cannot be acted on.
    Unusable(String),
}

/// What an intent is checked against.
#[derive(Debug, Clone, Copy)]
pub struct Expected {
    pub amount: i64,
    pub currency: Currency,
}

#[derive(Clone)]
pub struct PaymentIntents {
    internal: Internal,
}

impl PaymentIntents {
    pub fn new(internal: Internal) -> PaymentIntents {
        PaymentIntents { internal }
    }

    /// Creates and confirms an intent for manual capture: authorised, not captured.
    pub async fn authorize(
        &self,
        business: BusinessId,
        key: &str,
        expected: Expected,
        payment_method: &serde_json::Value,
        customer_email: &str,
        description: &str,
    ) -> Answer {
        let body = json!({
            "amount": expected.amount,
            "currency": expected.currency.code(),
            "capture_method": "manual",
            "payment_method": payment_method,
            "confirm": true,
            "customer_email": customer_email,
            "description": description,
        });
        let reply = self.internal.post(caller(business), "/v1/payment_intents", key, &body).await;
        answer(reply, expected)
    }

    /// Captures all of an authorised intent.
    pub async fn capture(&self, business: BusinessId, key: &str, intent: &str, expected: Expected) -> Answer {
        let path = format!("/v1/payment_intents/{intent}/capture");
        answer(self.internal.post(caller(business), &path, key, &json!({})).await, expected)
    }

    /// Cancels an intent: voids its authorisation.
    pub async fn cancel(&self, business: BusinessId, key: &str, intent: &str, expected: Expected) -> Answer {
        let path = format!("/v1/payment_intents/{intent}/cancel");
        answer(self.internal.post(caller(business), &path, key, &json!({})).await, expected)
    }

    /// The intent as payments knows it now.
    pub async fn retrieve(&self, business: BusinessId, intent: &str, expected: Expected) -> Answer {
        let path = format!("/v1/payment_intents/{intent}");
        answer(self.internal.get(caller(business), &path).await, expected)
    }
}

/// A refund, as far as an order's refund reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refund {
    /// `re_…`.
    pub id: String,
    pub status: RefundStatus,
    pub failure: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefundStatus {
    Pending,
    Succeeded,
    Failed,
    RequiresReview,
}

/// What a refund call came to: as [`Answer`], with a refund.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefundAnswer {
    Refund(Refund),
    Refused { status: u16, code: String, detail: String },
    NotYet(String),
    Unusable(String),
}

impl PaymentIntents {
    /// Refunds `expected.amount` of a captured intent.
    pub async fn refund(
        &self,
        business: BusinessId,
        key: &str,
        intent: &str,
        expected: Expected,
        reason: &str,
    ) -> RefundAnswer {
        let body = json!({ "payment_intent_id": intent, "amount": expected.amount, "reason": reason });
        let reply = self.internal.post(caller(business), "/v1/refunds", key, &body).await;
        refund_answer(reply, intent, expected)
    }

    /// The refund as payments knows it now.
    pub async fn retrieve_refund(
        &self,
        business: BusinessId,
        refund: &str,
        intent: &str,
        expected: Expected,
    ) -> RefundAnswer {
        let reply = self.internal.get(caller(business), &format!("/v1/refunds/{refund}")).await;
        refund_answer(reply, intent, expected)
    }
}

#[derive(Deserialize)]
struct RefundBody {
    id: String,
    payment_intent_id: String,
    amount: i64,
    currency: String,
    status: String,
    failure_reason: Option<String>,
}

fn refund_answer(
    reply: Result<Reply, till_http::internal::InternalError>,
    intent: &str,
    expected: Expected,
) -> RefundAnswer {
    let reply = match reply {
        Ok(reply) if matches!(reply.status.as_u16(), 200 | 201) => reply,
        other => {
            // Everything but a refund is classified as for intents.
            return match answer(other, expected) {
                Answer::Refused { status, code, detail } => RefundAnswer::Refused { status, code, detail },
                Answer::NotYet(why) => RefundAnswer::NotYet(why),
                Answer::Unusable(why) => RefundAnswer::Unusable(why),
                Answer::Intent(_) => RefundAnswer::Unusable(String::from("an intent answered a refund")),
            };
        }
    };
    let body: RefundBody = match serde_json::from_slice(&reply.body) {
        Ok(body) => body,
        Err(error) => return RefundAnswer::Unusable(format!("the refund did not parse: {error}")),
    };
    let is_refund_id = body.id.strip_prefix("re_").is_some_and(|hex| {
        hex.len() == 32 && hex.bytes().all(|byte| byte.is_ascii_digit() || (b'a'..=b'f').contains(&byte))
    });
    if !is_refund_id || body.payment_intent_id != intent {
        return RefundAnswer::Unusable(String::from("the refund is not of this order's payment"));
    }
    if body.amount != expected.amount || body.currency != expected.currency.code() {
        return RefundAnswer::Unusable(format!(
            "the refund is for {} {}, not {}",
            body.amount, body.currency, expected.amount
        ));
    }
    let status = match body.status.as_str() {
        "pending" => RefundStatus::Pending,
        "succeeded" => RefundStatus::Succeeded,
        "failed" => RefundStatus::Failed,
        "requires_review" => RefundStatus::RequiresReview,
        other => return RefundAnswer::Unusable(format!("the refund has a status payments does not have: {other:?}")),
    };
    RefundAnswer::Refund(Refund { id: body.id, status, failure: body.failure_reason.map(|reason| clip(&reason)) })
}

fn caller(business_id: BusinessId) -> InternalCaller {
    InternalCaller { business_id, service: SERVICE }
}

#[derive(Deserialize)]
struct IntentBody {
    id: String,
    status: String,
    amount: i64,
    currency: String,
    amount_received: i64,
    last_payment_error: Option<DeclineBody>,
}

#[derive(Deserialize)]
struct DeclineBody {
    code: String,
    decline_code: Option<String>,
    message: String,
}

#[derive(Deserialize)]
struct ProblemBody {
    code: String,
    detail: Option<String>,
}

fn answer(reply: Result<Reply, till_http::internal::InternalError>, expected: Expected) -> Answer {
    let reply = match reply {
        Ok(reply) => reply,
        Err(error) => return Answer::NotYet(format!("payments could not be called: {error}")),
    };
    match reply.status.as_u16() {
        200 | 201 => intent_of(&reply.body, expected),
        202 => Answer::NotYet(String::from("the gateway's answer is not known yet")),
        409 | 429 | 500 | 503 | 504 => {
            let problem = problem_of(&reply.body);
            if reply.status.as_u16() == 409 && problem.code != "idempotency_key_in_use" {
                return Answer::Refused { status: 409, code: problem.code, detail: problem.detail };
            }
            Answer::NotYet(format!("payments answered {} {}: {}", reply.status.as_u16(), problem.code, problem.detail))
        }
        status @ (400..=499 | 502) => {
            let problem = problem_of(&reply.body);
            Answer::Refused { status, code: problem.code, detail: problem.detail }
        }
        status => Answer::NotYet(format!("payments answered {status}")),
    }
}

struct Problem {
    code: String,
    detail: String,
}

fn problem_of(body: &[u8]) -> Problem {
    match serde_json::from_slice::<ProblemBody>(body) {
        Ok(problem) => Problem { code: problem.code, detail: clip(&problem.detail.unwrap_or_default()) },
        Err(_) => Problem { code: String::from("unreadable_problem"), detail: String::from("(no problem body)") },
    }
}

fn clip(text: &str) -> String {
    text.chars().take(DETAIL_CHARS_MAX).collect()
}

/// A payment intent id, exactly as Till makes them: `pi_` and 32 lower-case hex digits.
pub fn is_intent_id(text: &str) -> bool {
    text.strip_prefix("pi_").is_some_and(|hex| {
        hex.len() == 32 && hex.bytes().all(|byte| byte.is_ascii_digit() || (b'a'..=b'f').contains(&byte))
    })
}

fn intent_of(body: &[u8], expected: Expected) -> Answer {
    let body: IntentBody = match serde_json::from_slice(body) {
        Ok(body) => body,
        Err(error) => return Answer::Unusable(format!("the intent did not parse: {error}")),
    };
    if !is_intent_id(&body.id) {
        return Answer::Unusable(String::from("the intent's id is not a payment intent id"));
    }
    if body.amount != expected.amount || body.currency != expected.currency.code() {
        return Answer::Unusable(format!(
            "the intent is for {} {}, the order for {} {}",
            body.amount,
            body.currency,
            expected.amount,
            expected.currency.code()
        ));
    }
    let Some(status) = IntentStatus::parse(&body.status) else {
        return Answer::Unusable(format!("the intent has a status payments does not have: {:?}", body.status));
    };
    if !(0..=expected.amount).contains(&body.amount_received) {
        return Answer::Unusable(String::from("the intent received more than its amount"));
    }
    let decline = body.last_payment_error.map(|decline| {
        let reason = decline.decline_code.map(|code| format!(" ({code})")).unwrap_or_default();
        clip(&format!("{}{reason}: {}", decline.code, decline.message))
    });
    Answer::Intent(Intent { id: body.id, status, amount_received: body.amount_received, decline })
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::StatusCode;

    fn reply(status: u16, body: serde_json::Value) -> Result<Reply, till_http::internal::InternalError> {
        Ok(Reply {
            status: StatusCode::from_u16(status).expect("status"),
            body: bytes::Bytes::from(serde_json::to_vec(&body).expect("json")),
        })
    }

    fn gbp(amount: i64) -> Expected {
        Expected { amount, currency: Currency::parse("GBP").expect("GBP") }
    }

    const ID: &str = "pi_0193aa11bb22cc33dd44ee55ff667788";

    fn intent(status: &str, amount: i64, currency: &str) -> serde_json::Value {
        json!({"id": ID, "status": status, "amount": amount, "currency": currency, "amount_received": 0,
               "last_payment_error": null, "extra": "ignored"})
    }

    #[test]
    fn an_intent_is_read_and_checked_against_the_order() {
        let read = answer(reply(201, intent("requires_capture", 1200, "GBP")), gbp(1200));
        assert_eq!(
            read,
            Answer::Intent(Intent {
                id: ID.to_string(),
                status: IntentStatus::RequiresCapture,
                amount_received: 0,
                decline: None
            })
        );
        assert!(matches!(answer_of(intent("requires_capture", 1300, "GBP")), Answer::Unusable(_)));
        assert!(matches!(answer_of(intent("requires_capture", 1200, "EUR")), Answer::Unusable(_)));
        assert!(matches!(answer_of(intent("approved", 1200, "GBP")), Answer::Unusable(_)));
        let mut wrong_id = intent("requires_capture", 1200, "GBP");
        wrong_id["id"] = json!("pi_123");
        assert!(matches!(answer_of(wrong_id), Answer::Unusable(_)));
        assert!(matches!(answer(reply(200, json!({"id": ID})), gbp(1200)), Answer::Unusable(_)));
    }

    fn answer_of(body: serde_json::Value) -> Answer {
        answer(reply(200, body), gbp(1200))
    }

    #[test]
    fn a_decline_is_read_with_its_reason() {
        let mut declined = intent("requires_payment_method", 1200, "GBP");
        declined["last_payment_error"] = json!({"code": "card_declined", "decline_code": "insufficient_funds", "message": "Your card has insufficient funds."});
        let Answer::Intent(intent) = answer_of(declined) else { panic!("not an intent") };
        assert_eq!(
            intent.decline.as_deref(),
            Some("card_declined (insufficient_funds): Your card has insufficient funds.")
        );
    }

    #[test]
    fn a_refund_is_read_and_checked_against_the_order() {
        let refund = |amount: i64, intent: &str, status: &str| {
            json!({"id": "re_0193aa11bb22cc33dd44ee55ff667788", "payment_intent_id": intent, "amount": amount,
                   "currency": "GBP", "status": status, "failure_reason": null})
        };
        let read = refund_answer(reply(201, refund(500, ID, "succeeded")), ID, gbp(500));
        assert!(matches!(read, RefundAnswer::Refund(Refund { status: RefundStatus::Succeeded, .. })), "{read:?}");
        for (body, expected) in [
            (refund(600, ID, "succeeded"), gbp(500)),
            (refund(500, "pi_0193aa11bb22cc33dd44ee55ff667799", "succeeded"), gbp(500)),
            (refund(500, ID, "done"), gbp(500)),
        ] {
            assert!(matches!(refund_answer(reply(200, body), ID, expected), RefundAnswer::Unusable(_)));
        }
        let problem = json!({"code": "rule_violated", "detail": "more than was captured"});
        assert!(matches!(refund_answer(reply(422, problem), ID, gbp(500)), RefundAnswer::Refused { status: 422, .. }));
    }

    #[test]
    fn what_is_decided_and_what_is_not() {
        let problem = |code: &str| json!({"code": code, "detail": "why"});
        assert!(matches!(answer(reply(202, intent("processing", 1200, "GBP")), gbp(1200)), Answer::NotYet(_)));
        assert!(matches!(answer(reply(503, problem("stripe_unavailable")), gbp(1200)), Answer::NotYet(_)));
        assert!(matches!(answer(reply(429, problem("rate_limited")), gbp(1200)), Answer::NotYet(_)));
        assert!(matches!(answer(reply(409, problem("idempotency_key_in_use")), gbp(1200)), Answer::NotYet(_)));
        assert!(matches!(
            answer(reply(409, problem("state_conflict")), gbp(1200)),
            Answer::Refused { status: 409, .. }
        ));
        assert!(matches!(answer(reply(422, problem("rule_violated")), gbp(1200)), Answer::Refused { status: 422, .. }));
        assert!(matches!(
            answer(reply(502, problem("gateway_reply_invalid")), gbp(1200)),
            Answer::Refused { status: 502, .. }
        ));
        assert!(matches!(answer(reply(400, json!("not a problem")), gbp(1200)), Answer::Refused { status: 400, .. }));
    }
}
