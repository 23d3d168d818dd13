//! The adapter's validation against canned replies: the truth passes, every lie is an
//! `InvalidReply` naming its field, and no body makes it panic.

use proptest::prelude::*;
use serde_json::{json, Value};
use till_kit::{Currency, Money};
use till_outbound::{Reply, StatusCode};

use super::*;

fn gbp(minor: i64) -> Money {
    Money::from_minor(minor, Currency::parse("GBP").expect("GBP"))
}

fn reply(status: u16, body: &Value) -> Reply {
    Reply {
        status: StatusCode::from_u16(status).expect("status"),
        headers: Default::default(),
        body: serde_json::to_vec(body).expect("json").into(),
    }
}

fn wire_intent(status: &str, capturable: i64, received: i64) -> Value {
    json!({
        "id": "pi_1", "object": "payment_intent", "amount": 1000, "amount_capturable": capturable,
        "amount_received": received, "currency": "gbp", "status": status, "latest_charge": "ch_1",
        "last_payment_error": null, "metadata": {}, "livemode": false
    })
}

fn expected() -> Expected<'static> {
    Expected { id: Some("pi_1"), amount: gbp(1000) }
}

fn invalid_field(reply: &Reply) -> String {
    match intent_answer(reply, expected()) {
        Err(invalid) => invalid.field,
        Ok(answer) => panic!("accepted {answer:?}"),
    }
}

#[test]
fn a_truthful_reply_is_accepted_as_it_is() {
    let Ok(Answer::Done(intent)) = intent_answer(&reply(200, &wire_intent("requires_capture", 1000, 0)), expected())
    else {
        panic!("refused the truth");
    };
    assert_eq!(
        (intent.status, intent.capturable, intent.received),
        (GatewayStatus::RequiresCapture, gbp(1000), gbp(0))
    );
    let Ok(Answer::Done(intent)) = intent_answer(&reply(200, &wire_intent("succeeded", 0, 800)), expected()) else {
        panic!("refused the truth");
    };
    assert_eq!(intent.received, gbp(800));
}

#[test]
fn every_lie_is_invalid_and_names_its_field() {
    let lie = |field: &str, value: Value| {
        let mut body = wire_intent("requires_capture", 1000, 0);
        body[field] = value;
        reply(200, &body)
    };
    assert_eq!(invalid_field(&lie("amount", json!(1001))), "amount");
    assert_eq!(invalid_field(&lie("currency", json!("usd"))), "currency");
    assert_eq!(invalid_field(&lie("id", json!("pi_2"))), "id");
    assert_eq!(invalid_field(&lie("id", json!("pi_../../x"))), "id");
    assert_eq!(invalid_field(&lie("object", json!("refund"))), "object");
    assert_eq!(invalid_field(&lie("status", json!("requires_reconsideration"))), "status");
    assert_eq!(invalid_field(&lie("amount_capturable", json!(1001))), "amount_capturable");
    assert_eq!(invalid_field(&lie("amount_capturable", json!(-1))), "amount_capturable");
    assert_eq!(invalid_field(&lie("amount_received", json!(5))), "status", "money received while still capturable");
    assert_eq!(invalid_field(&lie("latest_charge", json!("x/y"))), "latest_charge");
    assert_eq!(
        invalid_field(&reply(200, &wire_intent("succeeded", 0, 0))),
        "status",
        "succeeded with nothing received"
    );
    let mut missing = wire_intent("succeeded", 0, 1000);
    missing.as_object_mut().expect("object").remove("amount_received");
    // A missing field is the body's fault, and the reason names the field.
    let Err(invalid) = intent_answer(&reply(200, &missing), expected()) else { panic!("accepted") };
    assert!(invalid.why.contains("amount_received"), "{invalid:?}");
    let malformed =
        Reply { status: StatusCode::OK, headers: Default::default(), body: "{\"object\": \"payment_in".into() };
    assert!(intent_answer(&malformed, expected()).is_err(), "a body cut short");
}

#[test]
fn a_decline_comes_with_its_reason_and_the_intent_as_it_is() {
    let mut declined = wire_intent("requires_payment_method", 0, 0);
    declined["last_payment_error"] =
        json!({"type": "card_error", "code": "card_declined", "decline_code": "insufficient_funds", "message": "No."});
    let body = json!({"error": {"type": "card_error", "code": "card_declined", "decline_code": "insufficient_funds",
                                "message": "Your card has insufficient funds.", "payment_intent": declined}});
    let Ok(Answer::Declined { decline, intent }) = intent_answer(&reply(402, &body), expected()) else {
        panic!("not a decline");
    };
    assert_eq!(decline.decline_code.as_deref(), Some("insufficient_funds"));
    assert_eq!(intent.status, GatewayStatus::RequiresPaymentMethod);
    // A decline that claims the intent moved on, or has no intent, is not believed.
    let mut moved = body.clone();
    moved["error"]["payment_intent"] = wire_intent("succeeded", 0, 1000);
    assert!(intent_answer(&reply(402, &moved), expected()).is_err());
    let mut bare = body;
    bare["error"].as_object_mut().expect("object").remove("payment_intent");
    assert!(intent_answer(&reply(402, &bare), expected()).is_err());
}

#[test]
fn a_refused_request_changes_nothing_and_other_statuses_are_invalid() {
    let body = json!({"error": {"type": "invalid_request_error", "code": "payment_intent_unexpected_state", "message": "No."}});
    let Ok(Answer::Refused(refusal)) = intent_answer(&reply(400, &body), expected()) else { panic!("not refused") };
    assert_eq!(refusal.code.as_deref(), Some("payment_intent_unexpected_state"));
    assert!(intent_answer(&reply(401, &body), expected()).is_err(), "Till's key refused is no answer");
    assert!(intent_answer(&reply(409, &body), expected()).is_err());
    let api_error = json!({"error": {"type": "api_error", "message": "?"}});
    assert!(intent_answer(&reply(400, &api_error), expected()).is_err());
}

#[test]
fn refunds_and_fees_are_checked_against_what_was_asked() {
    let refund = json!({"id": "re_1", "object": "refund", "amount": 300, "currency": "gbp", "payment_intent": "pi_1", "status": "succeeded"});
    assert!(matches!(refund_answer(&reply(200, &refund), "pi_1", gbp(300)), Ok(Answer::Done(_))));
    assert_eq!(refund_answer(&reply(200, &refund), "pi_1", gbp(301)).map(|_| ()).unwrap_err().field, "amount");
    assert_eq!(refund_answer(&reply(200, &refund), "pi_2", gbp(300)).map(|_| ()).unwrap_err().field, "payment_intent");
    let transaction = json!({"id": "txn_1", "amount": 1000, "fee": 35, "net": 965, "currency": "gbp"});
    let gbp_currency = gbp(0).currency();
    assert_eq!(transaction_fee(&reply(200, &transaction), "txn_1", gbp_currency), Ok(gbp(35)));
    let mut lying = transaction;
    lying["net"] = json!(1000);
    assert_eq!(transaction_fee(&reply(200, &lying), "txn_1", gbp_currency).unwrap_err().field, "fee");
}

proptest! {
    /// No body, however hostile, makes validation panic; it is accepted or invalid.
    #[test]
    fn no_body_makes_validation_panic(status in prop::sample::select(vec![200_u16, 400, 402, 404, 401]), body in prop::collection::vec(any::<u8>(), 0..512)) {
        let reply = Reply { status: StatusCode::from_u16(status).expect("status"), headers: Default::default(), body: body.into() };
        let _ = intent_answer(&reply, expected());
        let _ = refund_answer(&reply, "pi_1", gbp(1));
    }
}
