//! The event consumer: each notifiable event becomes its notifications, in the same
//! transaction that records the event in the consumer's inbox
//! (`till_events::consumer::handle_once`), so an event delivered three times makes
//! them once. Nothing here talks to a provider: a notification is rendered and queued
//! (or recorded as suppressed or failed, with the reason), and the sender takes it from
//! there. So a slow or broken provider never holds up the event stream.
//!
//! What a notification says is fixed here, when the event happens: the business's name
//! and the template as they are now, not as they are when a retry goes out.

use sqlx::PgConnection;
use till_outbox::consume::{Effect, Handler, HandlerError, Subscription};
use till_outbox::envelope::EventBody;

use crate::domain::{Address, Channel, EmailAddress, PhoneNumber, Recipient, Rule, Rules, Status};
use crate::store::{self, NewNotification, SettingsRow};
use crate::templates::{self, Parts};
use crate::NotificationId;

/// The consumer's name: its inbox rows and its cursor (or queue, on RabbitMQ).
pub const CONSUMER: &str = "notify";

/// Every event a rule can name.
pub fn subscription() -> Subscription {
    let types: Vec<&str> = templates::NOTIFIABLE.iter().map(|notifiable| notifiable.event_type).collect();
    Subscription::new(CONSUMER, &types).unwrap_or_else(|why| unreachable!("the consumer's own subscription: {why}"))
}

/// The handler the bus runs for each event.
pub struct Notifier;

impl Handler for Notifier {
    fn handle<'c>(&'c self, connection: &'c mut PgConnection, event: &'c EventBody) -> Effect<'c> {
        Box::pin(notify(connection, event))
    }
}

/// The settings that decide an event's notifications.
struct Settings {
    rules: Rules,
    sender_name: Option<String>,
    reply_to: Option<String>,
    finance_email: Option<EmailAddress>,
    finance_phone: Option<PhoneNumber>,
}

impl Settings {
    fn of(row: Option<SettingsRow>) -> Result<Settings, String> {
        let Some(row) = row else {
            return Ok(Settings {
                rules: Rules::default_for_new_business(),
                sender_name: None,
                reply_to: None,
                finance_email: None,
                finance_phone: None,
            });
        };
        Ok(Settings {
            rules: crate::api::stored_rules(&row.rules)?,
            sender_name: row.sender_name,
            reply_to: row.reply_to,
            finance_email: row.finance_email.as_deref().map(EmailAddress::parse).transpose()?,
            finance_phone: row.finance_phone.as_deref().map(PhoneNumber::parse).transpose()?,
        })
    }
}

async fn notify(connection: &mut PgConnection, event: &EventBody) -> Result<(), HandlerError> {
    if templates::notifiable(&event.event_type).is_none() {
        return Ok(());
    }
    let row = store::settings(connection, event.business_id).await?;
    let settings = match Settings::of(row) {
        Ok(settings) => settings,
        Err(why) => {
            // Stored settings the domain refuses are a bug; the event still leaves a
            // visible record instead of holding up every later event.
            tracing::error!(business_id = %event.business_id, %why, "notification settings are stored invalid");
            let made = Made::Ended(Status::Failed, format!("the notification settings could not be read: {why}"));
            let sender = Sender { name: "", reply_to: None };
            insert(connection, event, "settings", Channel::Email, "", &made, &sender).await?;
            return Ok(());
        }
    };
    let rules: Vec<&Rule> = settings.rules.for_event(&event.event_type).collect();
    if rules.is_empty() {
        return Ok(());
    }
    let business_name = match &settings.sender_name {
        Some(name) => name.clone(),
        None => till_access::business::profile(connection, event.business_id)
            .await?
            .map(|profile| profile.legal_name)
            .ok_or("the event's business is not visible")?,
    };
    let event_id = event.id.to_string();
    let occurred_at = event.occurred_at.format(&time::format_description::well_known::Rfc3339)?;
    let facts = templates::EventFacts {
        event_id: &event_id,
        event_type: &event.event_type,
        occurred_at: &occurred_at,
        business_name: &business_name,
        data: &event.data,
    };
    let context = templates::context(&facts);
    let sender = Sender { name: &business_name, reply_to: settings.reply_to.as_deref() };
    for rule in rules {
        let (recipient, made) = make(connection, event, rule, &context, &settings).await?;
        insert(connection, event, rule.name.as_str(), rule.channel, &recipient, &made, &sender).await?;
    }
    Ok(())
}

/// What one rule makes of an event: a message to send, or an end and why.
enum Made {
    Queued(templates::Rendered),
    Ended(Status, String),
}

/// The rule's notification of the event: its recipient ('' when it has none) and what it
/// says, or why it is suppressed or failed.
async fn make(
    connection: &mut PgConnection,
    event: &EventBody,
    rule: &Rule,
    context: &Result<templates::Context, String>,
    settings: &Settings,
) -> Result<(String, Made), HandlerError> {
    let context = match context {
        Ok(context) => context,
        Err(why) => {
            return Ok((String::new(), Made::Ended(Status::Failed, format!("the event's data cannot be shown: {why}"))))
        }
    };
    let recipient = match recipient_of(rule, context, settings) {
        Ok(address) => address.as_str().to_string(),
        Err(reason) => return Ok((String::new(), Made::Ended(Status::Suppressed, reason))),
    };
    let parts = match rule.template_id {
        Some(id) => match store::template(connection, id, false).await? {
            Some(template) => Parts { subject: template.subject, text: template.text_body, html: template.html_body },
            None => {
                let reason = String::from("the rule's template does not exist");
                return Ok((recipient, Made::Ended(Status::Failed, reason)));
            }
        },
        None => templates::built_in(&event.event_type, rule.channel)
            .ok_or("a notifiable event without a built-in template")?,
    };
    let made = match templates::render(rule.channel, &parts, &context.value) {
        Ok(rendered) => Made::Queued(rendered),
        Err(why) => Made::Ended(Status::Failed, format!("the template could not be rendered: {why}")),
    };
    Ok((recipient, made))
}

/// Where the rule's notification of this event goes, or why it goes nowhere.
fn recipient_of(rule: &Rule, context: &templates::Context, settings: &Settings) -> Result<Address, String> {
    match (&rule.recipient, rule.channel) {
        (Recipient::Fixed(address), _) => Ok(address.clone()),
        (Recipient::Customer, Channel::Email) => {
            let Some(email) = &context.customer_email else {
                return Err(String::from("the event names no customer e-mail address"));
            };
            EmailAddress::parse(email).map(Address::Email).map_err(|why| format!("the customer's e-mail address {why}"))
        }
        (Recipient::Customer, Channel::Sms) => Err(String::from("the event names no customer phone number")),
        (Recipient::Finance, Channel::Email) => settings
            .finance_email
            .clone()
            .map(Address::Email)
            .ok_or_else(|| String::from("the settings name no finance_email")),
        (Recipient::Finance, Channel::Sms) => settings
            .finance_phone
            .clone()
            .map(Address::Phone)
            .ok_or_else(|| String::from("the settings name no finance_phone")),
    }
}

/// In whose name a message goes.
struct Sender<'a> {
    name: &'a str,
    reply_to: Option<&'a str>,
}

async fn insert(
    connection: &mut PgConnection,
    event: &EventBody,
    rule: &str,
    channel: Channel,
    recipient: &str,
    made: &Made,
    sender: &Sender<'_>,
) -> Result<(), sqlx::Error> {
    let (status, rendered, reason) = match made {
        Made::Queued(rendered) => (Status::Queued, Some(rendered), None),
        Made::Ended(status, reason) => (*status, None, Some(reason.as_str())),
    };
    let new = NewNotification {
        id: NotificationId::generate().as_uuid(),
        business: event.business_id,
        event_id: event.id.as_uuid(),
        event_type: &event.event_type,
        resource_id: &event.resource_id,
        rule,
        channel: channel.as_str(),
        recipient,
        status: status.as_str(),
        sender_name: rendered.map(|_| sender.name),
        reply_to: rendered.and(sender.reply_to),
        subject: rendered.and_then(|rendered| rendered.subject.as_deref()),
        text_body: rendered.map(|rendered| rendered.text.as_str()),
        html_body: rendered.and_then(|rendered| rendered.html.as_deref()),
        last_error: reason,
    };
    if !store::insert_notification(connection, &new).await? {
        tracing::debug!(event_id = %event.id, rule, "this event's notification for the rule was made before");
    }
    Ok(())
}
