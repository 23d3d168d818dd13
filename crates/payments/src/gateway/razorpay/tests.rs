use super::*;

fn inr(minor: i64) -> Money {
    Money::from_minor(minor, Currency::parse("INR").expect("INR"))
}

fn payment(status: &str, captured: bool) -> serde_json::Value {
    json!({
        "id": "pay_29QQoUBi66xm2f", "entity": "payment", "amount": 50_000, "currency": "INR",
        "status": status, "order_id": "order_9A33XWu170gUtm", "captured": captured,
        "fee": 1_180, "tax": 180, "notes": { "till_key": "pi_1:confirm:2" },
        "error_code": null, "error_description": null, "error_reason": null,
    })
}

#[test]
fn a_signature_verifies_only_over_the_exact_body_with_the_secret() {
    use hmac::Mac;
    let body = br#"{"entity":"event","event":"payment.captured"}"#;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(b"whsec").expect("key");
    mac.update(body);
    let signature = hex::encode(mac.finalize().into_bytes());
    assert_eq!(verify_webhook("whsec", Some(&signature), body), Ok(()));
    assert!(verify_webhook("other", Some(&signature), body).is_err());
    assert!(verify_webhook("whsec", Some(&signature), b"{}").is_err());
    assert!(verify_webhook("whsec", None, body).is_err());
    assert!(verify_webhook("whsec", Some("not hex"), body).is_err());
}

#[test]
fn a_payment_is_checked_against_its_order_amount_and_currency() {
    let order = "order_9A33XWu170gUtm";
    let wire = |value: serde_json::Value| serde_json::from_value::<WirePayment>(value).expect("shape");
    let field = |result: Result<Payment, InvalidReply>| result.map(|_| ()).unwrap_err().field;
    assert!(checked_payment(wire(payment("captured", true)), order, inr(50_000)).is_ok());
    assert_eq!(field(checked_payment(wire(payment("captured", true)), order, inr(50_001))), "amount");
    assert_eq!(field(checked_payment(wire(payment("captured", true)), "order_other", inr(50_000))), "order_id");
    assert_eq!(field(checked_payment(wire(payment("settled", true)), order, inr(50_000))), "status");
    // `captured` must agree with the status.
    assert_eq!(field(checked_payment(wire(payment("authorized", true)), order, inr(50_000))), "captured");
    let mut usd = payment("captured", true);
    usd["currency"] = json!("USD");
    assert_eq!(field(checked_payment(wire(usd), order, inr(50_000))), "currency");
}

#[test]
fn the_order_stands_where_its_most_advanced_payment_does() {
    let order = Order::known("order_9A33XWu170gUtm");
    let made = |status| Payment { id: String::from("pay_1"), status, notes: json!({}), decline: None };
    let failed = Payment {
        decline: Some(Decline { code: "payment_failed".into(), decline_code: None, message: "failed".into() }),
        ..made(PaymentStatus::Failed)
    };
    let all = [failed.clone(), made(PaymentStatus::Authorized)];
    let intent = intent_of(&order, inr(50_000), best(&all));
    assert_eq!(intent.status, GatewayStatus::RequiresCapture);
    assert_eq!((intent.capturable, intent.received), (inr(50_000), inr(0)));
    assert!(matches!(answer_of(&order, inr(50_000), Some(&failed)), Answer::Declined { .. }));
    let pending = [made(PaymentStatus::Created)];
    assert_eq!(intent_of(&order, inr(50_000), best(&pending)).status, GatewayStatus::Processing);
    assert_eq!(intent_of(&order, inr(50_000), None).status, GatewayStatus::RequiresPaymentMethod);
}

#[test]
fn of_two_failed_collects_the_newest_says_why() {
    let failed = |id: &str, message: &str| Payment {
        id: id.to_string(),
        status: PaymentStatus::Failed,
        notes: json!({}),
        decline: Some(Decline { code: "payment_failed".into(), decline_code: None, message: message.into() }),
    };
    let oldest_first = [failed("pay_old", "first"), failed("pay_new", "second")];
    assert_eq!(best(&oldest_first).map(|payment| payment.id.as_str()), Some("pay_new"));
}
