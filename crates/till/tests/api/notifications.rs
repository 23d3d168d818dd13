//! Notifications end to end: events from real payments, the notification consumer, and
//! e-mail over SMTP to a real SMTP server (aiosmtpd), asserted on as it received them.

use std::time::Duration;

use serde_json::{json, Value};
use till_testkit::smtp::{Received, SmtpServer};
use till_testkit::{spawn_app_with, test_config, TestApp, TestBusiness};

use crate::payments::create;

async fn app_sending_to(server: &SmtpServer) -> TestApp {
    let mut config = test_config();
    config.notify.email = Some(till_testkit::email_settings(&server.url()));
    spawn_app_with(config, till_server::Extension::default()).await
}

/// A captured card payment of `amount` pence by `customer`.
async fn pay(
    app: &TestApp,
    business: &TestBusiness,
    key: &str,
    amount: i64,
    customer: Option<&str>,
    description: &str,
) -> Value {
    let mut body = json!({"amount": amount, "currency": "GBP", "payment_method": "pm_card_visa", "confirm": true,
                          "description": description});
    if let Some(customer) = customer {
        body["customer_email"] = json!(customer);
    }
    let (status, intent) = create(app, &business.owner_key, key, body).await;
    assert_eq!((status, intent["status"].as_str()), (201, Some("succeeded")), "{intent}");
    intent
}

async fn notifications(app: &TestApp, key: &str, query: &str) -> Vec<Value> {
    let page: Value = app.get(&format!("/v1/notifications?limit=100{query}"), key).await.json().await.expect("json");
    page["data"].as_array().cloned().unwrap_or_default()
}

/// Waits until `count` notifications are in `status`.
async fn settled(app: &TestApp, key: &str, status: &str, count: usize) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let found = notifications(app, key, &format!("&status={status}")).await;
        if found.len() >= count {
            return found;
        }
        let all = notifications(app, key, "").await;
        assert!(tokio::time::Instant::now() < deadline, "never {count} {status}: {all:#?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn message_ids(received: &[Received]) -> Vec<String> {
    received.iter().map(|message| message.header("Message-ID").unwrap_or_default().to_string()).collect()
}

#[tokio::test]
async fn a_captured_payment_sends_one_receipt_to_the_customer_over_smtp() {
    let server = SmtpServer::start().expect("aiosmtpd");
    let app = app_sending_to(&server).await;
    let business = app.create_business("GB").await;
    let name = business.body["business"]["legal_name"].as_str().expect("legal name").to_string();
    let intent = pay(&app, &business, "pay-1", 1250, Some("ada@example.com"), "Two <b>loaves</b>").await;

    let received = server.wait_for(1, Duration::from_secs(30)).await;
    assert_eq!(received.len(), 1);
    let message = &received[0];
    assert_eq!(message.rcpt_to, vec!["ada@example.com"]);
    assert_eq!(message.mail_from, "notifications@till.example");
    assert_eq!(message.header("To"), Some("ada@example.com"));
    let from = message.header("From").expect("From");
    assert!(from.contains(&name) && from.contains("<notifications@till.example>"), "{from}");
    assert_eq!(message.header("Subject"), Some(format!("Your receipt from {name}").as_str()));
    let message_id = message.header("Message-ID").expect("Message-ID");
    assert!(message_id.starts_with("<ntf_") && message_id.ends_with("@till.example>"), "{message_id}");
    // Both parts; the HTML one escaped what the payment's description carried.
    let text = &message.parts["text/plain"];
    let html = &message.parts["text/html"];
    assert!(text.contains("GBP 12.50 for Two <b>loaves</b>"), "{text}");
    assert!(html.contains("GBP 12.50") && html.contains("Two &lt;b&gt;loaves&lt;&#x2f;b&gt;"), "{html}");
    let id = intent["id"].as_str().expect("id");
    assert!(text.contains(id) && html.contains(id));
    // No secret of any kind in what left.
    for secret in [business.owner_key.as_str(), "till_sk_", "whsec_", "sk_test", app.admin_token.as_str()] {
        assert!(!message.raw.contains(secret), "the message carries {secret}");
    }

    let sent = settled(&app, &business.owner_key, "sent", 1).await;
    assert_eq!(sent[0]["id"].as_str().map(|id| message_id.contains(id)), Some(true));
    assert_eq!((sent[0]["rule"].as_str(), sent[0]["channel"].as_str()), (Some("receipt"), Some("email")));
    assert_eq!((sent[0]["recipient"].as_str(), sent[0]["attempts"].as_i64()), (Some("ada@example.com"), Some(1)));
    assert_eq!(sent[0]["resource_id"], id);
    // A viewer sees the recipient masked.
    let viewer = app.create_key(&business, "viewer").await;
    let seen = notifications(&app, &viewer, "").await;
    assert_eq!(seen[0]["recipient"], "a***@example.com");
    let one: Value = app
        .get(&format!("/v1/notifications/{}", sent[0]["id"].as_str().expect("id")), &viewer)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(one["recipient"], "a***@example.com");
    // Another business sees none of it.
    let other = app.create_business("GB").await;
    assert!(notifications(&app, &other.owner_key, "").await.is_empty());
    let response =
        app.get(&format!("/v1/notifications/{}", sent[0]["id"].as_str().expect("id")), &other.owner_key).await;
    assert_eq!(response.status().as_u16(), 404);
}

#[tokio::test]
async fn each_event_delivered_three_more_times_shuffled_sends_one_email_and_one_sms() {
    let server = SmtpServer::start().expect("aiosmtpd");
    let app = app_sending_to(&server).await;
    let business = app.create_business("GB").await;
    put_settings(
        &app,
        &business.owner_key,
        &json!({"finance_phone": "+447700900123", "rules": [
            {"name": "receipt", "event_type": "payment_intent.succeeded", "channel": "email", "to": "customer"},
            {"name": "till-sms", "event_type": "payment_intent.succeeded", "channel": "sms", "to": "finance"}]}),
    )
    .await;
    for n in 0..5 {
        pay(&app, &business, &format!("pay-{n}"), 100 + n, Some(&format!("buyer{n}@example.com")), "Tea").await;
    }
    // The events as the bus carries them, delivered again by hand, three times each, in
    // a shuffled order and concurrently with the running consumer.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let events: Vec<till_outbox::envelope::EventBody> = loop {
        let page: Value = app.get("/v1/events?limit=100", &business.owner_key).await.json().await.expect("json");
        let events: Vec<_> = page["data"]
            .as_array()
            .expect("events")
            .iter()
            .filter(|event| event["type"] == "payment_intent.succeeded")
            .map(|event| serde_json::from_value(event.clone()).expect("an event"))
            .collect();
        if events.len() == 5 || tokio::time::Instant::now() > deadline {
            break events;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(events.len(), 5);
    let mut deliveries: Vec<&till_outbox::envelope::EventBody> = events.iter().chain(&events).chain(&events).collect();
    for index in (1..deliveries.len()).rev() {
        deliveries.swap(index, rand::random::<usize>() % (index + 1));
    }
    let handler = till_notify::consumer::Notifier;
    let outcomes =
        futures::future::join_all(deliveries.iter().map(|event| {
            till_events::consumer::handle_once(&app.pool, till_notify::consumer::CONSUMER, event, &handler)
        }))
        .await;
    assert!(outcomes.iter().all(Result::is_ok), "{outcomes:?}");

    // The SMS are delivered (Twilio's callbacks), the e-mails sent.
    settled(&app, &business.owner_key, "delivered", 5).await;
    let sent = settled(&app, &business.owner_key, "sent", 5).await;
    assert_eq!(sent.iter().filter(|notification| notification["channel"] == "email").count(), 5, "{sent:#?}");
    let received = server.wait_for(5, Duration::from_secs(30)).await;
    // Nothing more arrives: every notification is sent, and there are five.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let received_after = server.received();
    assert_eq!(received_after.len(), 5, "{:?}", message_ids(&received_after));
    let mut ids = message_ids(&received);
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 5);
    // And one SMS per event at Twilio, each delivered once.
    assert_eq!(app.sim_calls("sms", "create").await.len(), 5);
    assert_eq!(notifications(&app, &business.owner_key, "").await.len(), 10);
    let mut recipients: Vec<String> = received.iter().flat_map(|message| message.rcpt_to.clone()).collect();
    recipients.sort();
    assert_eq!(recipients, (0..5).map(|n| format!("buyer{n}@example.com")).collect::<Vec<_>>());
}

#[tokio::test]
async fn an_smtp_outage_queues_everything_and_all_of_it_arrives_in_order_once_it_is_back() {
    let mut server = SmtpServer::start().expect("aiosmtpd");
    let app = app_sending_to(&server).await;
    let business = app.create_business("GB").await;
    server.stop();
    let mut intents = Vec::new();
    for n in 0..4 {
        intents.push(pay(&app, &business, &format!("pay-{n}"), 200 + n, Some("regular@example.com"), "Coffee").await);
    }
    // Made, and waiting: connections refused use no attempt, and nothing fails.
    settled(&app, &business.owner_key, "queued", 4).await;
    // Long enough for the refused connections to open the breaker (six of them, in the
    // tests' settings), which must close again once the server is back: it did not, and
    // e-mail stopped for good after an outage that long.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let queued_later = notifications(&app, &business.owner_key, "&status=queued").await;
    assert_eq!(queued_later.len(), 4, "{queued_later:#?}");
    assert!(queued_later.iter().all(|notification| notification["attempts"] == 0), "{queued_later:#?}");
    assert!(notifications(&app, &business.owner_key, "&status=failed").await.is_empty());
    assert!(server.received().is_empty(), "{:?}", message_ids(&server.received()));

    server.restart().expect("aiosmtpd again");
    let received = server.wait_for(4, Duration::from_secs(60)).await;
    let states = notifications(&app, &business.owner_key, "").await;
    assert_eq!(received.len(), 4, "{:?}\n{states:#?}", message_ids(&received));
    // One recipient's messages arrive in the order their payments were made.
    let order: Vec<usize> = received
        .iter()
        .map(|message| {
            let text = &message.parts["text/plain"];
            intents.iter().position(|intent| text.contains(intent["id"].as_str().expect("id"))).expect("a payment")
        })
        .collect();
    assert_eq!(order, vec![0, 1, 2, 3], "{:?}\n{states:#?}", message_ids(&received));
    settled(&app, &business.owner_key, "sent", 4).await;
}

#[tokio::test]
async fn a_server_that_says_try_later_is_tried_again_and_the_attempts_are_counted() {
    let server = SmtpServer::start_refusing(2).expect("aiosmtpd");
    let app = app_sending_to(&server).await;
    let business = app.create_business("GB").await;
    pay(&app, &business, "pay-1", 300, Some("ada@example.com"), "Scones").await;
    let sent = settled(&app, &business.owner_key, "sent", 1).await;
    assert_eq!(sent[0]["attempts"], 3, "{:#}", sent[0]);
    assert!(sent[0]["last_error"].as_str().is_some_and(|why| why.contains("451")), "{:#}", sent[0]);
    assert_eq!(server.received().len(), 1);
}

#[tokio::test]
async fn a_recipient_the_server_refuses_fails_at_once_and_its_address_is_never_shown_whole() {
    let server = SmtpServer::start().expect("aiosmtpd");
    let app = app_sending_to(&server).await;
    let business = app.create_business("GB").await;
    pay(&app, &business, "pay-1", 300, Some("nobody@example.com"), "Scones").await;
    let failed = settled(&app, &business.owner_key, "failed", 1).await;
    assert_eq!(failed[0]["attempts"], 1, "a 550 is not tried again: {:#}", failed[0]);
    let why = failed[0]["last_error"].as_str().expect("why");
    assert!(why.contains("550") && why.contains("n***@example.com"), "{why}");
    assert!(!why.contains("nobody@example.com"), "{why}");
    assert!(server.received().is_empty());
}

#[tokio::test]
async fn templates_are_checked_when_saved_and_rules_send_them_to_whom_they_name() {
    let server = SmtpServer::start().expect("aiosmtpd");
    let app = app_sending_to(&server).await;
    let business = app.create_business("GB").await;
    let key = &business.owner_key;
    let template = |subject: &str, text: &str| json!({"name": "Receipt", "event_type": "payment_intent.succeeded", "channel": "email", "subject": subject, "text": text});
    // Refused at save time, naming the part: an unknown field, a line break in the
    // subject, a template that does not parse, an SMS with a subject.
    for (n, (body, param)) in [
        (template("Paid {{ payment.amout }}", "x"), "subject"),
        (template("Paid\r\nBcc: eve@example.com", "x"), "subject"),
        (template("Paid", "{{ payment.id "), "text"),
        (template("Paid", "{{ api_key }}"), "text"),
        (json!({"name": "x", "event_type": "payout.failed", "channel": "sms", "subject": "x", "text": "x"}), "subject"),
    ]
    .into_iter()
    .enumerate()
    {
        let response = app.post("/v1/notification_templates", key, &format!("bad-{n}"), &body).await;
        assert_eq!(response.status().as_u16(), 422, "{body}");
        assert_eq!(till_testkit::problem(response).await["param"], param, "{body}");
    }
    let listed: Value = app.get("/v1/notification_templates", key).await.json().await.expect("json");
    assert_eq!(listed["data"].as_array().map(Vec::len), Some(0), "nothing refused was kept");
    let response = app
        .post(
            "/v1/notification_templates",
            key,
            "good",
            &json!({"name": "Thanks", "event_type": "payment_intent.succeeded", "channel": "email",
                    "subject": "Thanks from {{ business.name }}",
                    "text": "We got {{ payment.currency }} {{ payment.amount }}.",
                    "html": "<p>We got {{ payment.amount }} for {{ payment.description }}</p>"}),
        )
        .await;
    assert_eq!(response.status().as_u16(), 201);
    let created: Value = response.json().await.expect("json");
    let template_id = created["id"].as_str().expect("id").to_string();
    assert!(template_id.starts_with("ntt_"));

    // Settings: bad addresses and unknown templates are refused, naming the field.
    let settings = |rules: Value| json!({"finance_email": "money@example.com", "rules": rules});
    for (body, status, param) in [
        (json!({"finance_email": "not an address", "rules": []}), 422, "finance_email"),
        (json!({"finance_phone": "07700900123", "rules": []}), 422, "finance_phone"),
        (
            settings(json!([{"name": "a", "event_type": "payout.failed", "channel": "email", "to": "eve@localhost"}])),
            422,
            "rules[0].to",
        ),
        (
            settings(json!([{"name": "a", "event_type": "payout.failed", "channel": "sms", "to": "+9112345"}])),
            422,
            "rules[0].to",
        ),
        (
            settings(json!([{"name": "a", "event_type": "payout.failed", "channel": "email", "to": "finance"},
                         {"name": "a", "event_type": "payout.paid", "channel": "email", "to": "finance"}])),
            422,
            "rules[1].name",
        ),
        (
            settings(
                json!([{"name": "a", "event_type": "payout.failed", "channel": "email", "to": "finance", "template_id": template_id}]),
            ),
            422,
            "rules[0].template_id",
        ),
        (
            settings(
                json!([{"name": "a", "event_type": "payment_intent.succeeded", "channel": "email", "to": "finance",
                          "template_id": "ntt_0193a000000070008000000000000000"}]),
            ),
            404,
            "rules[0].template_id",
        ),
    ] {
        let response = app
            .client
            .put(app.url("/v1/notification_settings"))
            .bearer_auth(key)
            .json(&body)
            .send()
            .await
            .expect("put");
        assert_eq!(response.status().as_u16(), status, "{body}");
        assert_eq!(till_testkit::problem(response).await["param"], param, "{body}");
    }
    let current: Value = app.get("/v1/notification_settings", key).await.json().await.expect("json");
    assert_eq!((current["version"].as_i64(), current["rules"][0]["name"].as_str()), (Some(0), Some("receipt")));

    // The custom template to the customer, and the built-in receipt to finance too.
    let body = settings(json!([
        {"name": "thanks", "event_type": "payment_intent.succeeded", "channel": "email", "to": "customer", "template_id": template_id},
        {"name": "copy", "event_type": "payment_intent.succeeded", "channel": "email", "to": "finance"},
        {"name": "nobody", "event_type": "payment_intent.succeeded", "channel": "sms", "to": "customer"},
    ]));
    let response = app
        .client
        .put(app.url("/v1/notification_settings"))
        .bearer_auth(key)
        .header("If-Match", "0")
        .json(&body)
        .send()
        .await
        .expect("put");
    assert_eq!(response.status().as_u16(), 200);
    let response = app
        .client
        .put(app.url("/v1/notification_settings"))
        .bearer_auth(key)
        .header("If-Match", "0")
        .json(&body)
        .send()
        .await
        .expect("put");
    assert_eq!(response.status().as_u16(), 412, "a stale version");

    pay(&app, &business, "pay-1", 999, Some("ada@example.com"), "<script>x</script>").await;
    let received = server.wait_for(2, Duration::from_secs(30)).await;
    assert_eq!(received.len(), 2);
    let to_customer = received.iter().find(|message| message.rcpt_to == ["ada@example.com"]).expect("the customer's");
    assert_eq!(to_customer.header("Subject").map(|subject| subject.starts_with("Thanks from ")), Some(true));
    assert_eq!(to_customer.parts["text/plain"].trim(), "We got GBP 9.99.");
    assert!(to_customer.parts["text/html"].contains("&lt;script&gt;x&lt;"), "{}", to_customer.parts["text/html"]);
    let to_finance = received.iter().find(|message| message.rcpt_to == ["money@example.com"]).expect("finance's");
    assert!(to_finance.header("Subject").is_some_and(|subject| subject.starts_with("Your receipt from")));
    // The SMS rule had no number for the customer: suppressed, with the reason.
    let suppressed = settled(&app, key, "suppressed", 1).await;
    assert_eq!(suppressed[0]["rule"], "nobody");
    assert!(suppressed[0]["last_error"].as_str().is_some_and(|why| why.contains("no customer phone number")));
    // A payment without a customer address: the customer's rule is suppressed, finance still told.
    pay(&app, &business, "pay-2", 500, None, "Cash-like").await;
    let suppressed = settled(&app, key, "suppressed", 3).await;
    assert!(suppressed.iter().any(
        |n| n["rule"] == "thanks" && n["last_error"].as_str().is_some_and(|why| why.contains("no customer e-mail"))
    ));
    server.wait_for(3, Duration::from_secs(30)).await;
    assert_eq!(server.received().len(), 3);
}

async fn put_settings(app: &TestApp, key: &str, body: &Value) {
    let response =
        app.client.put(app.url("/v1/notification_settings")).bearer_auth(key).json(body).send().await.expect("put");
    assert_eq!(response.status().as_u16(), 200, "{body}");
}

/// Waits until the notification `id` is in `status`.
async fn reaches(app: &TestApp, key: &str, id: &str, status: &str) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let notification: Value = app.get(&format!("/v1/notifications/{id}"), key).await.json().await.expect("json");
        if notification["status"] == status {
            return notification;
        }
        assert!(tokio::time::Instant::now() < deadline, "never {status}: {notification:#}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn an_sms_goes_through_twilio_and_its_delivery_receipt_is_applied_once() {
    let app = till_testkit::spawn_app().await;
    let business = app.create_business("GB").await;
    let key = &business.owner_key;
    put_settings(
        &app,
        key,
        &json!({"finance_phone": "+447700900123", "rules": [
            {"name": "till-sms", "event_type": "payment_intent.succeeded", "channel": "sms", "to": "finance"},
            {"name": "lost", "event_type": "payment_intent.succeeded", "channel": "sms", "to": till_sim::sms::UNREACHABLE},
            {"name": "landline", "event_type": "payment_intent.succeeded", "channel": "sms", "to": "+15005550009"}]}),
    )
    .await;
    // Every delivery receipt comes twice.
    for _ in 0..3 {
        app.arm_fault("sms", "webhook:message.delivered", "webhook_duplicate", 1, None).await;
        app.arm_fault("sms", "webhook:message.undelivered", "webhook_duplicate", 1, None).await;
    }
    let intent = pay(&app, &business, "pay-1", 1500, None, "Flowers").await;

    let all = {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let all = notifications(&app, key, "").await;
            if all.len() == 3 || tokio::time::Instant::now() > deadline {
                break all;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let by_rule = |rule: &str| {
        all.iter().find(|n| n["rule"] == rule).and_then(|n| n["id"].as_str()).expect("a notification").to_string()
    };
    let delivered = reaches(&app, key, &by_rule("till-sms"), "delivered").await;
    assert_eq!((delivered["attempts"].as_i64(), delivered["channel"].as_str()), (Some(1), Some("sms")));
    assert!(delivered["provider_id"].as_str().is_some_and(|sid| sid.starts_with("SM")), "{delivered:#}");
    assert!(delivered["delivered_at"].is_string());
    // The unreachable handset: Twilio took it, then reported it undelivered (30003).
    let lost = reaches(&app, key, &by_rule("lost"), "failed").await;
    assert!(lost["last_error"].as_str().is_some_and(|why| why.contains("30003")), "{lost:#}");
    assert!(lost["sent_at"].is_string());
    // A number Twilio refuses at once (21614): failed, never sent.
    let landline = reaches(&app, key, &by_rule("landline"), "failed").await;
    assert!(landline["last_error"].as_str().is_some_and(|why| why.contains("21614")), "{landline:#}");

    // What Twilio got: the message, its sender, and where to report.
    let calls = app.sim_calls("sms", "create").await;
    assert_eq!(calls.len(), 3, "{calls:#?}");
    let ours = calls
        .iter()
        .find(|call| call["body"].as_str().is_some_and(|body| body.contains("To=%2B447700900123")))
        .expect("our SMS");
    let body = ours["body"].as_str().expect("body");
    assert!(body.contains("From=%2B447700900000") && body.contains("StatusCallback="), "{body}");
    assert!(body.contains(&intent["id"].as_str().expect("id").to_string()), "{body}");
    // The duplicates changed nothing: still delivered once, with one SID.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let again: Value =
        app.get(&format!("/v1/notifications/{}", by_rule("till-sms")), key).await.json().await.expect("json");
    assert_eq!(
        (again["status"].as_str(), again["delivered_at"].as_str()),
        (Some("delivered"), delivered["delivered_at"].as_str())
    );

    // A callback that Twilio did not sign is refused, and changes nothing.
    let sid = delivered["provider_id"].as_str().expect("sid");
    let forged =
        format!("MessageSid={sid}&MessageStatus=failed&ErrorCode=30008&AccountSid={}", till_testkit::SMS_ACCOUNT_SID);
    for signature in ["", "bm90IHR3aWxpbw=="] {
        let mut request = app
            .client
            .post(app.url(till_notify::sms::STATUS_PATH))
            .header("content-type", "application/x-www-form-urlencoded");
        if !signature.is_empty() {
            request = request.header("x-twilio-signature", signature);
        }
        let response = request.body(forged.clone()).send().await.expect("post");
        assert_eq!(response.status().as_u16(), 400);
        assert_eq!(till_testkit::problem(response).await["code"], "webhook_signature_invalid");
    }
    let still: Value =
        app.get(&format!("/v1/notifications/{}", by_rule("till-sms")), key).await.json().await.expect("json");
    assert_eq!(still["status"], "delivered");
}

#[tokio::test]
async fn a_receipt_that_arrives_before_the_sender_records_its_message_is_applied_when_it_does() {
    // A Twilio callback can arrive before the sender commits the SID Twilio answered
    // with. The test plays both sides on a queued SMS notification that is not due for an
    // hour (so the sender leaves it alone): the receipt first, then the sender's record.
    let server = SmtpServer::start().expect("aiosmtpd");
    let app = app_sending_to(&server).await;
    let business = app.create_business("GB").await;
    let key = &business.owner_key;
    put_settings(
        &app,
        key,
        &json!({"rules": [
        {"name": "copy", "event_type": "payment_intent.succeeded", "channel": "email", "to": "ops@example.com"}]}),
    )
    .await;
    pay(&app, &business, "pay-1", 700, None, "Jam").await;
    let sent = settled(&app, key, "sent", 1).await;
    let id = uuid::Uuid::parse_str(sent[0]["id"].as_str().expect("id").trim_start_matches("ntf_")).expect("uuid");
    let business_id = till_kit::BusinessId::parse(&business.id).expect("business id");
    // An SMS notification as the consumer makes it (from the e-mail's event), queued.
    let sms_id = till_notify::NotificationId::generate().as_uuid();
    let mut transaction = till_db::begin_tenant(&app.pool, business_id).await.expect("tenant");
    sqlx::query(
        "INSERT INTO notify.notifications (id, business_id, event_id, event_type, resource_id, rule, channel, recipient,
                                           status, text_body, next_attempt_at)
         SELECT $1, business_id, event_id, event_type, resource_id, 'by-hand', 'sms', '+447700900123', 'queued', 'x', now() + interval '1 hour'
           FROM notify.notifications WHERE id = $2",
    )
    .bind(sms_id)
    .bind(id)
    .execute(&mut *transaction)
    .await
    .expect("a queued SMS");
    transaction.commit().await.expect("commit");
    let sid = format!("SM{}", "ab".repeat(16));
    // The receipt first: nothing has the SID yet, so it is kept.
    let kept = till_notify::store::apply_receipt(&app.pool, &sid, "delivered", None).await.expect("receipt");
    assert_eq!(kept, "kept");
    // Then the sender's record, as it makes it: under the lock, sent, then the kept receipt.
    let mut transaction = till_db::begin_tenant(&app.pool, business_id).await.expect("tenant");
    till_notify::store::lock_provider_id(&mut transaction, &sid).await.expect("lock");
    let recorded =
        till_notify::store::record(&mut transaction, sms_id, &till_notify::store::Outcome::Sent { provider_id: &sid })
            .await
            .expect("record");
    assert!(recorded);
    till_notify::store::take_early_receipt(&mut transaction, &sid).await.expect("take");
    transaction.commit().await.expect("commit");
    let notification: Value = app
        .get(&format!("/v1/notifications/{}", till_notify::NotificationId::from_uuid(sms_id)), key)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(notification["status"], "delivered", "{notification:#}");
    // A second copy of the receipt finds it ended.
    let again = till_notify::store::apply_receipt(&app.pool, &sid, "failed", Some("late")).await.expect("receipt");
    assert_eq!(again, "ended");
}

#[tokio::test]
async fn an_issued_invoice_is_e_mailed_with_a_link_that_opens_it_without_a_login() {
    let server = SmtpServer::start().expect("aiosmtpd");
    let app = app_sending_to(&server).await;
    let key = crate::checkout::seller(&app, "GB", "GB999999973").await;
    put_settings(
        &app,
        &key,
        &json!({"rules": [{"name": "invoice", "event_type": "invoice.issued", "channel": "email", "to": "customer"}]}),
    )
    .await;
    let (paid, _) = crate::checkout::paid_order(&app, &key, 2, 500).await;
    let invoice_id = paid["invoice_id"].as_str().expect("invoice").to_string();
    let received = server.wait_for(1, Duration::from_secs(30)).await;
    assert_eq!(received.len(), 1);
    let message = &received[0];
    assert_eq!(message.rcpt_to, vec!["ada@example.com"]);
    assert_eq!(message.header("Subject").map(|subject| subject.starts_with("Invoice INV-000001 from ")), Some(true));
    let text = &message.parts["text/plain"];
    // The customer's name is shown as text in the HTML part, never as markup.
    assert!(!message.parts["text/html"].contains("<script>"), "{}", message.parts["text/html"]);
    let link = text
        .split_whitespace()
        .find(|word| word.starts_with(&format!("{}/v1/invoice_documents/", app.address)))
        .unwrap_or_else(|| panic!("the invoice link in {text}"))
        .to_string();
    // No login: the link is the credential, and it opens this invoice's page.
    let page = app.client.get(&link).send().await.expect("get");
    assert_eq!(page.status().as_u16(), 200);
    assert_eq!(page.headers()["cache-control"], "private, no-store");
    let html = page.text().await.expect("html");
    assert!(html.contains("INV-000001"), "{html}");
    // The API shows a link too, that opens the same page.
    let invoice: Value = app.get(&format!("/v1/invoices/{invoice_id}"), &key).await.json().await.expect("json");
    let from_api = invoice["document_url"].as_str().expect("document_url");
    assert_eq!(app.client.get(from_api).send().await.expect("get").status().as_u16(), 200);
    // A changed token, another Till's, or none at all: 404, the same for each.
    let (prefix, token) = link.rsplit_once('/').expect("a token");
    let mut changed = token.as_bytes().to_vec();
    changed[12] = if changed[12] == b'A' { b'B' } else { b'A' };
    for bad in [
        format!("{prefix}/{}", String::from_utf8(changed).expect("ascii")),
        format!("{prefix}/x"),
        format!("{prefix}/{}", "A".repeat(300)),
    ] {
        let response = app.client.get(&bad).send().await.expect("get");
        assert_eq!(response.status().as_u16(), 404, "{bad}");
    }
    let other = till_testkit::spawn_app().await;
    let elsewhere = format!("{}/v1/invoice_documents/{token}", other.address);
    assert_eq!(other.client.get(&elsewhere).send().await.expect("get").status().as_u16(), 404);
}

#[tokio::test]
async fn an_sms_whose_reply_was_lost_is_found_at_twilio_and_never_sent_twice() {
    let app = till_testkit::spawn_app().await;
    let business = app.create_business("GB").await;
    let key = &business.owner_key;
    put_settings(
        &app,
        key,
        &json!({"finance_phone": "+447700900123", "rules": [
            {"name": "till-sms", "event_type": "payment_intent.succeeded", "channel": "sms", "to": "finance"}]}),
    )
    .await;
    // Twilio takes the message, and its reply never comes (a 504 a second later).
    app.arm_fault("sms", "create", "timeout_after_effect", 1, Some(1_000)).await;
    pay(&app, &business, "pay-1", 800, None, "Bread").await;
    let id = {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(first) = notifications(&app, key, "").await.first() {
                break first["id"].as_str().expect("id").to_string();
            }
            assert!(tokio::time::Instant::now() < deadline, "no notification");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let delivered = reaches(&app, key, &id, "delivered").await;
    assert_eq!((delivered["attempts"].as_i64(), delivered["in_doubt"].as_i64()), (Some(2), Some(1)), "{delivered:#}");
    // One message at Twilio: the second attempt asked, and took its SID.
    assert_eq!(app.sim_calls("sms", "create").await.len(), 1);
    assert_eq!(app.sim_calls("sms", "list").await.len(), 1);
    let sid = delivered["provider_id"].as_str().expect("sid");
    assert_eq!(app.sim_object("sms", sid).await["status"], "delivered");
}
