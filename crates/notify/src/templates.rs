//! What a notification can say: the events that can notify, the fields a template of each
//! may use (documented here and in the API), the built-in templates, and rendering with
//! minijinja. Pure: no I/O.
//!
//! A template is checked when it is saved: it must parse, and every variable it reads
//! must be one of its event's fields ([`check`]), so a typo is a 422 then, not a failed
//! notification later. Rendering is strict as well (an undefined value is an error),
//! bounded (fuel, output sizes), and the HTML part is auto-escaped: a customer's name
//! such as `<script>` prints as text. Subjects may not contain line breaks, in the
//! template or in what it renders to.

use std::collections::BTreeMap;

use minijinja::{AutoEscape, Environment, UndefinedBehavior, Value};
use till_kit::{Currency, Money};

use crate::domain::Channel;

/// An event that can notify: its type, the name its object has in templates, and that
/// object's fields with what each is.
#[derive(Debug)]
pub struct Notifiable {
    pub event_type: &'static str,
    pub object: &'static str,
    pub fields: &'static [(&'static str, &'static str)],
}

/// Fields every template has.
pub const COMMON_FIELDS: &[(&str, &str)] = &[
    ("business.name", "The business's name (its legal name, or the sender name in its settings)."),
    ("event.id", "The event's id (evt_…)."),
    ("event.type", "The event's type."),
    ("event.occurred_at", "When it happened, RFC 3339 in UTC."),
];

const PAYMENT: &[(&str, &str)] = &[
    ("id", "The payment intent's id (pi_…)."),
    ("amount", "The amount captured, in major units with the currency's decimals (12.50)."),
    ("currency", "ISO 4217 code (GBP, INR)."),
    ("description", "The payment's description, or empty."),
    ("customer_email", "The customer's e-mail address, or empty."),
];
const REFUND: &[(&str, &str)] = &[
    ("id", "The refund's id (re_…)."),
    ("payment_intent_id", "The payment it refunds (pi_…)."),
    ("amount", "The amount refunded, in major units (12.50)."),
    ("currency", "ISO 4217 code."),
    ("reason", "Why, as given, or empty."),
];
const PAYOUT: &[(&str, &str)] = &[
    ("id", "The payout's id (po_…)."),
    ("amount", "The amount, in major units (12.50)."),
    ("currency", "ISO 4217 code."),
    ("reference", "The reference the beneficiary sees."),
    ("status", "paid, failed or returned."),
    ("failure_reason", "Why it failed or was returned, or empty."),
];
const ORDER: &[(&str, &str)] = &[
    ("id", "The order's id (ord_…)."),
    ("total", "The total charged, in major units (12.50)."),
    ("currency", "ISO 4217 code."),
    ("customer_name", "The customer's name."),
    ("customer_email", "The customer's e-mail address."),
    ("invoice_id", "Its invoice (inv_…), or empty."),
];
const INVOICE: &[(&str, &str)] = &[
    ("id", "The invoice's id (inv_…)."),
    ("number", "Its number (INV-000042, INV/2026-27/0042)."),
    ("total", "Its total, in major units (12.50)."),
    ("currency", "ISO 4217 code."),
    ("customer_name", "The customer's name."),
    ("customer_email", "The customer's e-mail address."),
    ("url", "A link the customer opens the invoice with, without a login (valid 90 days)."),
];

/// Every event a notification rule can name.
pub const NOTIFIABLE: &[Notifiable] = &[
    Notifiable { event_type: "payment_intent.succeeded", object: "payment", fields: PAYMENT },
    Notifiable { event_type: "refund.succeeded", object: "refund", fields: REFUND },
    Notifiable { event_type: "payout.paid", object: "payout", fields: PAYOUT },
    Notifiable { event_type: "payout.failed", object: "payout", fields: PAYOUT },
    Notifiable { event_type: "payout.returned", object: "payout", fields: PAYOUT },
    Notifiable { event_type: "order.paid", object: "order", fields: ORDER },
    Notifiable { event_type: "invoice.issued", object: "invoice", fields: INVOICE },
];

pub fn notifiable(event_type: &str) -> Option<&'static Notifiable> {
    NOTIFIABLE.iter().find(|notifiable| notifiable.event_type == event_type)
}

/// Names a template may use that are the engine's, not data.
const ENGINE_GLOBALS: &[&str] = &["range", "dict", "namespace"];

/// Bytes each rendered part may be at most.
pub const SUBJECT_CHARS_MAX: usize = 200;
pub const TEXT_BYTES_MAX: usize = 20_000;
pub const HTML_BYTES_MAX: usize = 100_000;
/// Twilio's limit for one message's body.
pub const SMS_CHARS_MAX: usize = 1_600;
/// What a template may be, as written.
pub const SOURCE_BYTES_MAX: usize = 50_000;
/// Work a render may do (minijinja's fuel): a loop cannot run away.
const FUEL: u64 = 100_000;

/// A template's parts, as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parts {
    /// E-mail only.
    pub subject: Option<String>,
    pub text: String,
    /// E-mail only.
    pub html: Option<String>,
}

/// What a rendered notification says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub subject: Option<String>,
    pub text: String,
    pub html: Option<String>,
}

/// A template that cannot be saved: the part, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateError {
    pub field: &'static str,
    pub why: String,
}

fn refuse(field: &'static str, why: impl Into<String>) -> TemplateError {
    TemplateError { field, why: why.into() }
}

fn environment() -> Environment<'static> {
    let mut environment = Environment::new();
    environment.set_undefined_behavior(UndefinedBehavior::Strict);
    environment.set_fuel(Some(FUEL));
    environment.set_recursion_limit(20);
    environment.set_auto_escape_callback(|name| if name == "html" { AutoEscape::Html } else { AutoEscape::None });
    environment
}

/// Checks `parts` for `event_type` on `channel`: the parts the channel takes, each
/// parsing, reading only documented fields, and a subject without line breaks.
pub fn check(event_type: &str, channel: Channel, parts: &Parts) -> Result<(), TemplateError> {
    let Some(notifiable) = notifiable(event_type) else {
        return Err(refuse("event_type", "is not an event that can notify"));
    };
    match channel {
        Channel::Email if parts.subject.is_none() => return Err(refuse("subject", "an e-mail template needs one")),
        Channel::Sms if parts.subject.is_some() => return Err(refuse("subject", "an SMS has no subject")),
        Channel::Sms if parts.html.is_some() => return Err(refuse("html", "an SMS has no HTML part")),
        _ => {}
    }
    let allowed: Vec<String> = COMMON_FIELDS
        .iter()
        .map(|(field, _)| field.to_string())
        .chain(notifiable.fields.iter().map(|(field, _)| format!("{}.{field}", notifiable.object)))
        .collect();
    let sources =
        [("subject", parts.subject.as_deref()), ("text", Some(parts.text.as_str())), ("html", parts.html.as_deref())];
    for (field, source) in sources {
        let Some(source) = source else { continue };
        if source.len() > SOURCE_BYTES_MAX {
            return Err(refuse(field, format!("at most {SOURCE_BYTES_MAX} bytes")));
        }
        if field == "subject" && source.contains(['\r', '\n']) {
            return Err(refuse(field, "a subject is one line: no line breaks"));
        }
        if let Some(character) = source.chars().find(|&c| c.is_control() && !matches!(c, '\n' | '\r' | '\t')) {
            return Err(refuse(field, format!("contains the control character U+{:04X}", u32::from(character))));
        }
        let mut environment = environment();
        environment.add_template(field, source).map_err(|error| refuse(field, describe(&error)))?;
        let template = environment.get_template(field).map_err(|error| refuse(field, describe(&error)))?;
        let mut used: Vec<String> = template.undeclared_variables(true).into_iter().collect();
        used.sort();
        for variable in used {
            if ENGINE_GLOBALS.contains(&variable.as_str()) || allowed.contains(&variable) {
                continue;
            }
            return Err(refuse(
                field,
                format!("uses {variable}, which {event_type} does not have (its fields: {})", allowed.join(", ")),
            ));
        }
    }
    Ok(())
}

fn describe(error: &minijinja::Error) -> String {
    match error.line() {
        Some(line) => format!("line {line}: {}", error.detail().unwrap_or("invalid template")),
        None => error.detail().map(str::to_string).unwrap_or_else(|| error.to_string()),
    }
}

/// Renders checked `parts` with `context`.
pub fn render(channel: Channel, parts: &Parts, context: &Value) -> Result<Rendered, String> {
    let mut environment = environment();
    let mut one = |name: &'static str, source: &str| -> Result<String, String> {
        environment.add_template_owned(name, source.to_string()).map_err(|error| format!("{name}: {error}"))?;
        let template = environment.get_template(name).map_err(|error| format!("{name}: {error}"))?;
        template.render(context).map_err(|error| format!("{name}: {error}"))
    };
    let subject = match &parts.subject {
        Some(source) => {
            let subject = one("subject", source)?;
            let subject = subject.trim().to_string();
            if subject.contains(['\r', '\n']) || subject.chars().any(char::is_control) {
                return Err(String::from("subject: what it renders to has a line break or a control character"));
            }
            if subject.is_empty() || subject.chars().count() > SUBJECT_CHARS_MAX {
                return Err(format!(
                    "subject: renders to {} characters (1 to {SUBJECT_CHARS_MAX})",
                    subject.chars().count()
                ));
            }
            Some(subject)
        }
        None => None,
    };
    let text = one("text", &parts.text)?;
    let text_max_ok = match channel {
        Channel::Email => text.len() <= TEXT_BYTES_MAX,
        Channel::Sms => text.chars().count() <= SMS_CHARS_MAX,
    };
    if text.trim().is_empty() || !text_max_ok {
        return Err(String::from("text: renders to nothing, or to more than its channel takes"));
    }
    let html = match &parts.html {
        Some(source) => {
            let html = one("html", source)?;
            if html.len() > HTML_BYTES_MAX {
                return Err(format!("html: renders to more than {HTML_BYTES_MAX} bytes"));
            }
            Some(html)
        }
        None => None,
    };
    Ok(Rendered { subject, text, html })
}

/// What an event gives its templates, from the event's data; also the customer's e-mail
/// address when the event names one. An event whose data lacks a field its catalogue
/// entry reads is refused (a producer's bug, visible, not a blank in a message).
pub struct Context {
    pub value: Value,
    pub customer_email: Option<String>,
}

pub struct EventFacts<'a> {
    pub event_id: &'a str,
    pub event_type: &'a str,
    pub occurred_at: &'a str,
    pub business_name: &'a str,
    pub data: &'a serde_json::Value,
}

pub fn context(facts: &EventFacts<'_>) -> Result<Context, String> {
    let Some(notifiable) = notifiable(facts.event_type) else {
        return Err(format!("{} is not an event that can notify", facts.event_type));
    };
    let data = facts.data;
    let text =
        |field: &str| -> String { data.get(field).and_then(serde_json::Value::as_str).unwrap_or_default().to_string() };
    let money = |field: &str| -> Result<String, String> {
        let minor =
            data.get(field).and_then(serde_json::Value::as_i64).ok_or_else(|| format!("data.{field} is missing"))?;
        let currency = Currency::parse(&text("currency")).map_err(|_| String::from("data.currency is not ISO 4217"))?;
        Ok(Money::from_minor(minor, currency).to_decimal_string())
    };
    let customer = |field: &str| -> String {
        data.get("customer")
            .and_then(|customer| customer.get(field))
            .and_then(serde_json::Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let mut object = BTreeMap::new();
    let mut customer_email = None;
    match notifiable.object {
        "payment" => {
            object.insert("id", text("id"));
            object.insert("amount", money("amount_received")?);
            object.insert("currency", text("currency"));
            object.insert("description", text("description"));
            object.insert("customer_email", text("customer_email"));
            customer_email = Some(text("customer_email"));
        }
        "refund" => {
            object.insert("id", text("id"));
            object.insert("payment_intent_id", text("payment_intent_id"));
            object.insert("amount", money("amount")?);
            object.insert("currency", text("currency"));
            object.insert("reason", text("reason"));
        }
        "payout" => {
            object.insert("id", text("id"));
            object.insert("amount", money("amount")?);
            object.insert("currency", text("currency"));
            object.insert("reference", text("reference"));
            object.insert("status", text("status"));
            object.insert("failure_reason", text("failure_reason"));
        }
        "order" => {
            object.insert("id", text("id"));
            object.insert("total", money("total")?);
            object.insert("currency", text("currency"));
            object.insert("customer_name", customer("name"));
            object.insert("customer_email", customer("email"));
            object.insert("invoice_id", text("invoice_id"));
            customer_email = Some(customer("email"));
        }
        "invoice" => {
            object.insert("id", text("id"));
            object.insert("number", text("number"));
            object.insert("total", money("total")?);
            object.insert("currency", text("currency"));
            object.insert("customer_name", customer("name"));
            object.insert("customer_email", customer("email"));
            object.insert("url", text("document_url"));
            customer_email = Some(customer("email"));
        }
        other => return Err(format!("no context for {other}")),
    }
    let business = Value::from_pairs([("name", Value::from(facts.business_name))]);
    let event = Value::from_pairs([
        ("id", Value::from(facts.event_id)),
        ("type", Value::from(facts.event_type)),
        ("occurred_at", Value::from(facts.occurred_at)),
    ]);
    let object = Value::from_pairs(object.into_iter().map(|(field, value)| (field, Value::from(value))));
    let root = Value::from_pairs([("business", business), ("event", event), (notifiable.object, object)]);
    Ok(Context { value: root, customer_email: customer_email.filter(|email| !email.is_empty()) })
}

/// The built-in template for an event and channel: what a rule without a template sends.
pub fn built_in(event_type: &str, channel: Channel) -> Option<Parts> {
    let email = |subject: &str, text: &str, html: &str| Parts {
        subject: Some(subject.to_string()),
        text: text.to_string(),
        html: Some(html.to_string()),
    };
    let sms = |text: &str| Parts { subject: None, text: text.to_string(), html: None };
    Some(match (event_type, channel) {
        ("payment_intent.succeeded", Channel::Email) => email(
            "Your receipt from {{ business.name }}",
            "Thank you for your payment.\n\n{{ business.name }} received {{ payment.currency }} {{ payment.amount }}{% if payment.description %} for {{ payment.description }}{% endif %}.\n\nPayment reference: {{ payment.id }}\n",
            "<p>Thank you for your payment.</p>\n<p>{{ business.name }} received <strong>{{ payment.currency }} {{ payment.amount }}</strong>{% if payment.description %} for {{ payment.description }}{% endif %}.</p>\n<p>Payment reference: {{ payment.id }}</p>\n",
        ),
        ("payment_intent.succeeded", Channel::Sms) => {
            sms("{{ business.name }}: payment of {{ payment.currency }} {{ payment.amount }} received. Ref {{ payment.id }}")
        }
        ("refund.succeeded", Channel::Email) => email(
            "Your refund from {{ business.name }}",
            "{{ business.name }} refunded {{ refund.currency }} {{ refund.amount }}.\n\nRefund reference: {{ refund.id }}\n",
            "<p>{{ business.name }} refunded <strong>{{ refund.currency }} {{ refund.amount }}</strong>.</p>\n<p>Refund reference: {{ refund.id }}</p>\n",
        ),
        ("refund.succeeded", Channel::Sms) => sms("{{ business.name }}: {{ refund.currency }} {{ refund.amount }} refunded. Ref {{ refund.id }}"),
        ("payout.paid" | "payout.failed" | "payout.returned", Channel::Email) => email(
            "Payout {{ payout.reference }}: {{ payout.status }}",
            "Your payout {{ payout.id }} of {{ payout.currency }} {{ payout.amount }} (reference {{ payout.reference }}) is {{ payout.status }}.{% if payout.failure_reason %}\n\nReason: {{ payout.failure_reason }}{% endif %}\n",
            "<p>Your payout {{ payout.id }} of <strong>{{ payout.currency }} {{ payout.amount }}</strong> (reference {{ payout.reference }}) is <strong>{{ payout.status }}</strong>.</p>{% if payout.failure_reason %}\n<p>Reason: {{ payout.failure_reason }}</p>{% endif %}\n",
        ),
        ("payout.paid" | "payout.failed" | "payout.returned", Channel::Sms) => {
            sms("Till: payout {{ payout.reference }} of {{ payout.currency }} {{ payout.amount }} is {{ payout.status }}.{% if payout.failure_reason %} {{ payout.failure_reason }}{% endif %}")
        }
        ("order.paid", Channel::Email) => email(
            "Your order from {{ business.name }}",
            "Thank you, {{ order.customer_name }}. Your order {{ order.id }} for {{ order.currency }} {{ order.total }} is paid.\n",
            "<p>Thank you, {{ order.customer_name }}.</p>\n<p>Your order {{ order.id }} for <strong>{{ order.currency }} {{ order.total }}</strong> is paid.</p>\n",
        ),
        ("order.paid", Channel::Sms) => sms("{{ business.name }}: order {{ order.id }} ({{ order.currency }} {{ order.total }}) is paid."),
        ("invoice.issued", Channel::Email) => email(
            "Invoice {{ invoice.number }} from {{ business.name }}",
            "Dear {{ invoice.customer_name }},\n\n{{ business.name }} issued invoice {{ invoice.number }} for {{ invoice.currency }} {{ invoice.total }}.\n{% if invoice.url %}\nSee it here: {{ invoice.url }}\n{% endif %}",
            "<p>Dear {{ invoice.customer_name }},</p>\n<p>{{ business.name }} issued invoice <strong>{{ invoice.number }}</strong> for {{ invoice.currency }} {{ invoice.total }}.</p>\n{% if invoice.url %}<p><a href=\"{{ invoice.url }}\">See the invoice</a></p>\n{% endif %}",
        ),
        ("invoice.issued", Channel::Sms) => sms("{{ business.name }}: invoice {{ invoice.number }} for {{ invoice.currency }} {{ invoice.total }}."),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payment_context(description: &str) -> Context {
        let data = serde_json::json!({
            "id": "pi_1", "amount": 1250, "amount_received": 1250, "currency": "GBP",
            "description": description, "customer_email": "ada@example.com",
        });
        context(&EventFacts {
            event_id: "evt_1",
            event_type: "payment_intent.succeeded",
            occurred_at: "2026-12-04T10:00:00Z",
            business_name: "Acme & Sons",
            data: &data,
        })
        .expect("a context")
    }

    #[test]
    fn every_built_in_template_passes_its_own_check() {
        for notifiable in NOTIFIABLE {
            for channel in [Channel::Email, Channel::Sms] {
                let parts = built_in(notifiable.event_type, channel).expect("a built-in template");
                assert_eq!(
                    check(notifiable.event_type, channel, &parts),
                    Ok(()),
                    "{} {channel:?}",
                    notifiable.event_type
                );
            }
        }
    }

    #[test]
    fn a_template_that_reads_an_unknown_field_is_refused_at_save_time() {
        let parts = Parts { subject: Some("Hi {{ payment.amout }}".into()), text: "x".into(), html: None };
        let refused = check("payment_intent.succeeded", Channel::Email, &parts).expect_err("refused");
        assert_eq!(refused.field, "subject");
        assert!(refused.why.contains("payment.amout"), "{}", refused.why);
        let parts = Parts { subject: Some("Hi".into()), text: "{{ secrets.key }}".into(), html: None };
        assert_eq!(check("payment_intent.succeeded", Channel::Email, &parts).map_err(|error| error.field), Err("text"));
        let parts =
            Parts { subject: Some("Hi".into()), text: "{% for x in range(3) %}{{ x }}{% endfor %}".into(), html: None };
        assert_eq!(check("payment_intent.succeeded", Channel::Email, &parts), Ok(()));
        let parts = Parts { subject: Some("Hi\r\nBcc: eve@example.com".into()), text: "x".into(), html: None };
        assert_eq!(
            check("payment_intent.succeeded", Channel::Email, &parts).map_err(|error| error.field),
            Err("subject")
        );
        let parts = Parts { subject: Some("{{ payment.id".into()), text: "x".into(), html: None };
        assert_eq!(
            check("payment_intent.succeeded", Channel::Email, &parts).map_err(|error| error.field),
            Err("subject")
        );
    }

    #[test]
    fn html_is_escaped_and_text_is_not() {
        let parts = built_in("payment_intent.succeeded", Channel::Email).expect("built in");
        let rendered =
            render(Channel::Email, &parts, &payment_context("<script>alert(1)</script>").value).expect("renders");
        let html = rendered.html.expect("html");
        assert!(!html.contains("<script>"), "{html}");
        assert!(html.contains("&lt;script&gt;") && html.contains("Acme &amp; Sons"), "{html}");
        assert!(rendered.text.contains("GBP 12.50 for <script>"), "{}", rendered.text);
        assert_eq!(rendered.subject.as_deref(), Some("Your receipt from Acme & Sons"));
    }

    #[test]
    fn a_subject_that_would_render_a_line_break_is_refused() {
        let parts = Parts { subject: Some("Paid: {{ payment.description }}".into()), text: "x".into(), html: None };
        assert!(render(Channel::Email, &parts, &payment_context("a\r\nBcc: eve@example.com").value).is_err());
    }

    #[test]
    fn a_runaway_loop_runs_out_of_fuel() {
        let parts = Parts {
            subject: Some("x".into()),
            text: "{% for a in range(10000) %}{% for b in range(10000) %}.{% endfor %}{% endfor %}".into(),
            html: None,
        };
        assert!(render(Channel::Email, &parts, &payment_context("").value).is_err());
    }
}
