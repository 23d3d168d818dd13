//! `/v1/notification_settings`, `/v1/notification_templates` and `/v1/notifications`:
//! parse → authorize (the permission table) → decide (the domain, the template check) →
//! write in the request's transaction → respond.
//!
//! What the schema cannot say about a value (an e-mail address's syntax, a template's
//! fields) is refused with 422 naming the field; what it says (lengths, enums, patterns)
//! the parser refuses with 400, so a request the document allows is never a 400.

use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use till_http::auth::{Principal, Role};
use till_http::extract::{ApiJson, ApiPath, ApiQuery};
use till_http::pagination::{ListParams, Page};
use till_http::unit_of_work::Tx;
use till_http::{ApiError, Problem};
use till_kit::HumanText;
use time::OffsetDateTime;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::domain::{Address, Channel, EmailAddress, PhoneNumber, Recipient, Rule, RuleName, Rules};
use crate::store::{self, NotificationRow, SettingsRow, TemplateRow};
use crate::templates::{self, Parts};
use crate::{NotificationId, TemplateId};

pub const SETTINGS_PATH: &str = "/v1/notification_settings";
pub const TEMPLATES_PATH: &str = "/v1/notification_templates";
pub const NOTIFICATIONS_PATH: &str = "/v1/notifications";

pub fn routes() -> OpenApiRouter {
    OpenApiRouter::new()
        .routes(routes!(get_settings, put_settings))
        .routes(routes!(create_template, list_templates))
        .routes(routes!(get_template, update_template))
        .routes(routes!(list_notifications))
        .routes(routes!(get_notification))
}

// ---- rules, as the API and the settings row carry them ----

/// The events a rule can name.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub enum NotifiableEvent {
    #[serde(rename = "payment_intent.succeeded")]
    PaymentIntentSucceeded,
    #[serde(rename = "refund.succeeded")]
    RefundSucceeded,
    #[serde(rename = "payout.paid")]
    PayoutPaid,
    #[serde(rename = "payout.failed")]
    PayoutFailed,
    #[serde(rename = "payout.returned")]
    PayoutReturned,
    #[serde(rename = "order.paid")]
    OrderPaid,
    #[serde(rename = "invoice.issued")]
    InvoiceIssued,
}

impl NotifiableEvent {
    pub fn as_str(self) -> &'static str {
        match self {
            NotifiableEvent::PaymentIntentSucceeded => "payment_intent.succeeded",
            NotifiableEvent::RefundSucceeded => "refund.succeeded",
            NotifiableEvent::PayoutPaid => "payout.paid",
            NotifiableEvent::PayoutFailed => "payout.failed",
            NotifiableEvent::PayoutReturned => "payout.returned",
            NotifiableEvent::OrderPaid => "order.paid",
            NotifiableEvent::InvoiceIssued => "invoice.issued",
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum NotificationChannel {
    Email,
    Sms,
}

impl NotificationChannel {
    fn channel(self) -> Channel {
        match self {
            NotificationChannel::Email => Channel::Email,
            NotificationChannel::Sms => Channel::Sms,
        }
    }
}

/// One rule: when `event_type` happens, send by `channel` to `to`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NotificationRuleBody {
    /// Tells this rule's notification of an event from another rule's: unique in the
    /// list, 1 to 40 of a-z, 0-9, `_` and `-`.
    #[schema(pattern = "^[a-z0-9_-]{1,40}$")]
    pub name: String,
    pub event_type: NotifiableEvent,
    pub channel: NotificationChannel,
    /// `customer` (the customer the event names: a payment's `customer_email`, an
    /// order's or invoice's customer), `finance` (the settings' finance contact), or an
    /// address of the channel: an e-mail address, or an E.164 number (+447700900123,
    /// +919876543210).
    #[schema(min_length = 1, max_length = 254)]
    pub to: String,
    /// A template of this event and channel (`ntt_…`); without one, the built-in one.
    pub template_id: Option<String>,
}

/// The rules as stored (the settings row keeps the API's form, validated).
pub fn stored_rules(value: &serde_json::Value) -> Result<Rules, String> {
    let bodies: Vec<NotificationRuleBody> = serde_json::from_value(value.clone()).map_err(|error| error.to_string())?;
    let mut rules = Vec::with_capacity(bodies.len());
    for body in &bodies {
        rules.push(rule_of(body).map_err(|(field, why)| format!("{field}: {why}"))?);
    }
    Rules::new(rules).map_err(|(_, why)| why)
}

fn rule_of(body: &NotificationRuleBody) -> Result<Rule, (&'static str, String)> {
    let channel = body.channel.channel();
    let template_id = body
        .template_id
        .as_deref()
        .map(|text| {
            TemplateId::parse(text)
                .map(|id| id.as_uuid())
                .map_err(|_| ("template_id", String::from("is not a template id")))
        })
        .transpose()?;
    Ok(Rule {
        name: RuleName::parse(&body.name).map_err(|why| ("name", why))?,
        event_type: body.event_type.as_str(),
        channel,
        recipient: Recipient::parse(channel, &body.to).map_err(|why| ("to", why))?,
        template_id,
    })
}

// ---- settings ----

/// Who is notified of what, and in whose name.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct NotificationSettingsBody {
    /// The name messages are sent in; `null`: the business's legal name.
    pub sender_name: Option<String>,
    /// Where replies to e-mail go.
    pub reply_to: Option<String>,
    /// The finance contact that `finance` rules notify (masked for viewers).
    pub finance_email: Option<String>,
    pub finance_phone: Option<String>,
    pub rules: Vec<NotificationRuleBody>,
    /// 0 until the settings are first written (what a new business starts with).
    pub version: i32,
    #[serde(with = "time::serde::rfc3339::option")]
    pub updated_at: Option<OffsetDateTime>,
}

impl NotificationSettingsBody {
    fn of(row: Option<&SettingsRow>, principal: &Principal) -> Result<NotificationSettingsBody, ApiError> {
        let Some(row) = row else {
            return Ok(NotificationSettingsBody {
                sender_name: None,
                reply_to: None,
                finance_email: None,
                finance_phone: None,
                rules: vec![NotificationRuleBody {
                    name: String::from("receipt"),
                    event_type: NotifiableEvent::PaymentIntentSucceeded,
                    channel: NotificationChannel::Email,
                    to: String::from("customer"),
                    template_id: None,
                }],
                version: 0,
                updated_at: None,
            });
        };
        let full = principal.role.allows(Role::Finance);
        let email = |text: &Option<String>| {
            text.as_deref().map(|text| match (full, EmailAddress::parse(text)) {
                (false, Ok(email)) => email.masked(),
                _ => text.to_string(),
            })
        };
        let phone = |text: &Option<String>| {
            text.as_deref().map(|text| match (full, PhoneNumber::parse(text)) {
                (false, Ok(phone)) => phone.masked(),
                _ => text.to_string(),
            })
        };
        let mut rules: Vec<NotificationRuleBody> =
            serde_json::from_value(row.rules.clone()).map_err(|error| ApiError::internal(&error))?;
        if !full {
            for rule in &mut rules {
                if let Ok(Recipient::Fixed(address)) = Recipient::parse(rule.channel.channel(), &rule.to) {
                    rule.to = address.masked();
                }
            }
        }
        Ok(NotificationSettingsBody {
            sender_name: row.sender_name.clone(),
            reply_to: email(&row.reply_to),
            finance_email: email(&row.finance_email),
            finance_phone: phone(&row.finance_phone),
            rules,
            version: row.version,
            updated_at: Some(row.updated_at),
        })
    }
}

/// The business's notification settings; a business that never set them gets what it
/// starts with (a receipt by e-mail to the customer of each captured payment), version 0.
#[utoipa::path(get, path = "/v1/notification_settings", tag = "notifications",
    responses((status = 200, body = NotificationSettingsBody)),
    security(("bearer" = [])))]
async fn get_settings(principal: Principal, mut tx: Tx) -> Result<axum::Json<NotificationSettingsBody>, ApiError> {
    let row = store::settings(&mut tx, principal.business_id).await?;
    Ok(axum::Json(NotificationSettingsBody::of(row.as_ref(), &principal)?))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutNotificationSettingsRequest {
    #[schema(value_type = Option<till_kit::schema::Name100>)]
    pub sender_name: Option<String>,
    #[schema(min_length = 1, max_length = 254)]
    pub reply_to: Option<String>,
    #[schema(min_length = 1, max_length = 254)]
    pub finance_email: Option<String>,
    #[schema(min_length = 1, max_length = 16)]
    pub finance_phone: Option<String>,
    /// At most 20; replaces the rules there are. An empty list notifies nobody.
    #[schema(max_items = 20)]
    pub rules: Vec<NotificationRuleBody>,
}

/// Set who is notified of what. Send `If-Match: <version>` to make sure nobody changed
/// the settings since you read them. Events that happened before keep the notifications
/// they made; the new rules apply to events from now on.
#[utoipa::path(put, path = "/v1/notification_settings", tag = "notifications",
    request_body = PutNotificationSettingsRequest,
    params(("If-Match" = Option<String>, Header, description = "The settings' `version`.")),
    responses((status = 200, body = NotificationSettingsBody),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json", description = "A rule's template_id names no template of the business."),
        (status = 412, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json", description = "rule_violated: an address or number that is not one, a repeated rule name, or a template of another event or channel.")),
    security(("bearer" = [])))]
async fn put_settings(
    principal: Principal,
    mut tx: Tx,
    headers: HeaderMap,
    ApiJson(request): ApiJson<PutNotificationSettingsRequest>,
) -> Result<axum::Json<NotificationSettingsBody>, ApiError> {
    let sender_name = request
        .sender_name
        .as_deref()
        .map(|name| HumanText::name(name, 100).map_err(|refusal| ApiError::text("sender_name", refusal)))
        .transpose()?;
    let email = |text: &Option<String>, field: &str| {
        text.as_deref()
            .map(|text| EmailAddress::parse(text).map_err(|why| ApiError::rule(field, format!("{field} {why}."))))
            .transpose()
    };
    let reply_to = email(&request.reply_to, "reply_to")?;
    let finance_email = email(&request.finance_email, "finance_email")?;
    let finance_phone = request
        .finance_phone
        .as_deref()
        .map(|text| {
            PhoneNumber::parse(text).map_err(|why| ApiError::rule("finance_phone", format!("finance_phone {why}.")))
        })
        .transpose()?;
    let mut rules = Vec::with_capacity(request.rules.len());
    for (index, body) in request.rules.iter().enumerate() {
        let rule = rule_of(body).map_err(|(field, why)| {
            let param = format!("rules[{index}].{field}");
            ApiError::rule(param.clone(), format!("{param} {why}."))
        })?;
        if let Some(template_id) = rule.template_id {
            let param = format!("rules[{index}].template_id");
            let template = store::template(&mut tx, template_id, false)
                .await?
                .ok_or_else(|| ApiError::not_found("notification template").with_param(param.clone()))?;
            if template.event_type != rule.event_type || template.channel != rule.channel.as_str() {
                return Err(ApiError::rule(
                    param,
                    format!(
                        "The template is for {} by {}, the rule for {} by {}.",
                        template.event_type,
                        template.channel,
                        rule.event_type,
                        rule.channel.as_str()
                    ),
                ));
            }
        }
        rules.push(rule);
    }
    Rules::new(rules).map_err(|(index, why)| ApiError::rule(format!("rules[{index}].name"), why))?;
    let current = store::lock_settings(&mut tx, principal.business_id).await?;
    till_http::update::check_if_match(
        &headers,
        current.as_ref().map_or(0, |row| row.version),
        "notification settings",
    )?;
    let settings = store::NewSettings {
        business: principal.business_id,
        sender_name: sender_name.as_ref().map(HumanText::as_str),
        reply_to: reply_to.as_ref().map(EmailAddress::as_str),
        finance_email: finance_email.as_ref().map(EmailAddress::as_str),
        finance_phone: finance_phone.as_ref().map(PhoneNumber::as_str),
        rules: serde_json::to_value(&request.rules).map_err(|error| ApiError::internal(&error))?,
    };
    let row = store::put_settings(&mut tx, &settings).await?;
    Ok(axum::Json(NotificationSettingsBody::of(Some(&row), &principal)?))
}

// ---- templates ----

/// A business's own wording for one event and channel. Fields a template may use:
/// `business.name`, `event.id`, `event.type`, `event.occurred_at`, and the event's
/// object — `payment.{id, amount, currency, description, customer_email}`
/// (payment_intent.succeeded), `refund.{id, payment_intent_id, amount, currency, reason}`,
/// `payout.{id, amount, currency, reference, status, failure_reason}`,
/// `order.{id, total, currency, customer_name, customer_email, invoice_id}`,
/// `invoice.{id, number, total, currency, customer_name, customer_email, url}` (`url`: the
/// customer's link to the invoice, no login needed). Amounts are in
/// major units with the currency's decimals (`12.50`). Jinja syntax (minijinja); the HTML
/// part is auto-escaped.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct NotificationTemplateBody {
    pub id: TemplateId,
    pub name: String,
    pub event_type: NotifiableEvent,
    pub channel: NotificationChannel,
    /// E-mail: one line.
    pub subject: Option<String>,
    /// The plain-text part (e-mail), or the message (SMS, at most 1 600 characters once rendered).
    pub text: String,
    /// E-mail: the HTML part.
    pub html: Option<String>,
    pub version: i32,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

impl NotificationTemplateBody {
    fn of(row: &TemplateRow) -> Result<NotificationTemplateBody, ApiError> {
        let event: NotifiableEvent = serde_json::from_value(serde_json::Value::String(row.event_type.clone()))
            .map_err(|error| ApiError::internal(&error))?;
        let channel = match Channel::parse(&row.channel).map_err(|why| ApiError::internal(&why))? {
            Channel::Email => NotificationChannel::Email,
            Channel::Sms => NotificationChannel::Sms,
        };
        Ok(NotificationTemplateBody {
            id: TemplateId::from_uuid(row.id),
            name: row.name.clone(),
            event_type: event,
            channel,
            subject: row.subject.clone(),
            text: row.text_body.clone(),
            html: row.html_body.clone(),
            version: row.version,
            created_at: row.created_at,
            updated_at: row.updated_at,
        })
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateNotificationTemplateRequest {
    #[schema(value_type = till_kit::schema::Name100)]
    pub name: String,
    pub event_type: NotifiableEvent,
    pub channel: NotificationChannel,
    /// Required for e-mail, absent for SMS. One line.
    #[schema(max_length = 50000)]
    pub subject: Option<String>,
    #[schema(max_length = 50000)]
    pub text: String,
    /// E-mail only.
    #[schema(max_length = 50000)]
    pub html: Option<String>,
}

fn checked_parts(event_type: &str, channel: Channel, parts: &Parts) -> Result<(), ApiError> {
    templates::check(event_type, channel, parts)
        .map_err(|refused| ApiError::rule(refused.field, format!("{}: {}.", refused.field, refused.why)))
}

/// Add a template. It is checked now: it must parse, and read only the fields its event
/// has (a typo is refused here, not when a notification is sent).
#[utoipa::path(post, path = "/v1/notification_templates", tag = "notifications",
    request_body = CreateNotificationTemplateRequest,
    params(("Idempotency-Key" = String, Header, description = "1–255 printable ASCII characters; makes the request safe to retry.")),
    responses((status = 201, body = NotificationTemplateBody),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json", description = "rule_violated: a template that does not parse, reads a field its event does not have, a subject with a line break, or a part its channel does not take.")),
    security(("bearer" = [])))]
async fn create_template(
    principal: Principal,
    mut tx: Tx,
    ApiJson(request): ApiJson<CreateNotificationTemplateRequest>,
) -> Result<Response, ApiError> {
    let name = HumanText::name(&request.name, 100).map_err(|refusal| ApiError::text("name", refusal))?;
    let channel = request.channel.channel();
    let parts = Parts { subject: request.subject.clone(), text: request.text.clone(), html: request.html.clone() };
    checked_parts(request.event_type.as_str(), channel, &parts)?;
    let new = store::NewTemplate {
        id: TemplateId::generate().as_uuid(),
        business: principal.business_id,
        name: name.as_str(),
        event_type: request.event_type.as_str(),
        channel: channel.as_str(),
        subject: parts.subject.as_deref(),
        text_body: &parts.text,
        html_body: parts.html.as_deref(),
    };
    let row = store::insert_template(&mut tx, &new).await?;
    Ok((StatusCode::CREATED, axum::Json(NotificationTemplateBody::of(&row)?)).into_response())
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateNotificationTemplateRequest {
    #[schema(value_type = Option<till_kit::schema::Name100>)]
    pub name: Option<String>,
    #[schema(max_length = 50000)]
    pub subject: Option<String>,
    #[schema(max_length = 50000)]
    pub text: Option<String>,
    #[schema(max_length = 50000)]
    pub html: Option<String>,
}

/// Change a template's name or parts (checked as when it was made). Send `If-Match:
/// <version>` to make sure nobody changed it since you read it. Notifications made
/// before keep what they said.
#[utoipa::path(patch, path = "/v1/notification_templates/{id}", tag = "notifications",
    params(("id" = TemplateId, Path), ("If-Match" = Option<String>, Header, description = "The template's `version`.")),
    request_body = UpdateNotificationTemplateRequest,
    responses((status = 200, body = NotificationTemplateBody),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 412, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json", description = "rule_violated: as for a new template.")),
    security(("bearer" = [])))]
async fn update_template(
    _principal: Principal,
    mut tx: Tx,
    headers: HeaderMap,
    ApiPath(id): ApiPath<TemplateId>,
    ApiJson(request): ApiJson<UpdateNotificationTemplateRequest>,
) -> Result<axum::Json<NotificationTemplateBody>, ApiError> {
    let current = store::template(&mut tx, id.as_uuid(), true)
        .await?
        .ok_or_else(|| ApiError::not_found("notification template"))?;
    till_http::update::check_if_match(&headers, current.version, "notification template")?;
    let name = match &request.name {
        Some(name) => HumanText::name(name, 100).map_err(|refusal| ApiError::text("name", refusal))?.into_string(),
        None => current.name.clone(),
    };
    let channel = Channel::parse(&current.channel).map_err(|why| ApiError::internal(&why))?;
    let parts = Parts {
        subject: request.subject.clone().or(current.subject.clone()),
        text: request.text.clone().unwrap_or(current.text_body.clone()),
        html: request.html.clone().or(current.html_body.clone()),
    };
    checked_parts(&current.event_type, channel, &parts)?;
    let new = store::NewTemplate {
        id: current.id,
        business: till_kit::BusinessId::from_uuid(current.business_id),
        name: &name,
        event_type: &current.event_type,
        channel: &current.channel,
        subject: parts.subject.as_deref(),
        text_body: &parts.text,
        html_body: parts.html.as_deref(),
    };
    let row = store::update_template(&mut tx, &new).await?;
    Ok(axum::Json(NotificationTemplateBody::of(&row)?))
}

/// Retrieve a template.
#[utoipa::path(get, path = "/v1/notification_templates/{id}", tag = "notifications", params(("id" = TemplateId, Path)),
    responses((status = 200, body = NotificationTemplateBody), (status = 404, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
async fn get_template(
    _principal: Principal,
    mut tx: Tx,
    ApiPath(id): ApiPath<TemplateId>,
) -> Result<axum::Json<NotificationTemplateBody>, ApiError> {
    let row = store::template(&mut tx, id.as_uuid(), false)
        .await?
        .ok_or_else(|| ApiError::not_found("notification template"))?;
    Ok(axum::Json(NotificationTemplateBody::of(&row)?))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct NotificationTemplateListParams {
    /// Page size, 1 to 100 (default 20).
    pub limit: Option<u32>,
    /// The id of the last template of the previous page.
    pub starting_after: Option<String>,
}

/// List templates, newest first.
#[utoipa::path(get, path = "/v1/notification_templates", tag = "notifications", params(NotificationTemplateListParams),
    responses((status = 200, body = Page<NotificationTemplateBody>), (status = 400, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
async fn list_templates(
    _principal: Principal,
    mut tx: Tx,
    ApiQuery(params): ApiQuery<NotificationTemplateListParams>,
) -> Result<axum::Json<Page<NotificationTemplateBody>>, ApiError> {
    let page = ListParams { limit: params.limit, starting_after: params.starting_after }
        .page(|text| TemplateId::parse(text).ok())?;
    let rows = store::list_templates(&mut tx, page.starting_after.map(|id| id.as_uuid()), page.fetch_limit()).await?;
    let bodies = rows.iter().map(NotificationTemplateBody::of).collect::<Result<Vec<_>, _>>()?;
    Ok(axum::Json(Page::from_rows(bodies, page.limit, |body| body.id.to_string())))
}

// ---- notifications ----

/// One message to one recipient, made by one event and rule. Exactly one per event,
/// rule and recipient, however often the event is delivered.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct NotificationBody {
    pub id: NotificationId,
    /// The event that made it (`evt_…`).
    pub event_id: String,
    pub event_type: String,
    /// The event's resource (`pi_…`, `po_…`).
    pub resource_id: String,
    /// The rule that made it.
    pub rule: String,
    pub channel: NotificationChannel,
    /// The address or number (masked for viewers: `a***@example.com`); empty when it
    /// had none (`suppressed`).
    pub recipient: String,
    /// `queued`, `sent` (the provider took it), `delivered` (the provider confirmed
    /// delivery), `failed` (see `last_error`), or `suppressed` (never to be sent: see
    /// `last_error`).
    #[schema(pattern = "^(queued|sent|delivered|failed|suppressed)$")]
    pub status: String,
    pub subject: Option<String>,
    /// Attempts that reached the provider (an outage that refused connections uses none).
    pub attempts: i32,
    /// Sends whose outcome was unknown and which went again with the same Message-ID.
    pub in_doubt: i32,
    /// Why the last attempt failed, or why it was suppressed or failed.
    pub last_error: Option<String>,
    /// The provider's reply or id for it, once sent.
    pub provider_id: Option<String>,
    /// When the next attempt is due, while it is queued.
    #[serde(with = "time::serde::rfc3339::option")]
    pub next_attempt_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub sent_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub delivered_at: Option<OffsetDateTime>,
}

impl NotificationBody {
    fn of(row: &NotificationRow, principal: &Principal) -> Result<NotificationBody, ApiError> {
        let channel = Channel::parse(&row.channel).map_err(|why| ApiError::internal(&why))?;
        let recipient = match (principal.role.allows(Role::Finance), Address::parse(channel, &row.recipient)) {
            (false, Ok(address)) => address.masked(),
            _ => row.recipient.clone(),
        };
        Ok(NotificationBody {
            id: NotificationId::from_uuid(row.id),
            event_id: till_outbox::EventId::from_uuid(row.event_id).to_string(),
            event_type: row.event_type.clone(),
            resource_id: row.resource_id.clone(),
            rule: row.rule.clone(),
            channel: match channel {
                Channel::Email => NotificationChannel::Email,
                Channel::Sms => NotificationChannel::Sms,
            },
            recipient,
            status: row.status.clone(),
            subject: row.subject.clone(),
            attempts: row.attempts,
            in_doubt: row.in_doubt,
            last_error: row.last_error.clone(),
            provider_id: row.provider_id.clone(),
            next_attempt_at: row.next_attempt_at,
            created_at: row.created_at,
            sent_at: row.sent_at,
            delivered_at: row.delivered_at,
        })
    }
}

#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum NotificationStatusFilter {
    Queued,
    Sent,
    Delivered,
    Failed,
    Suppressed,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct NotificationListParams {
    /// Only notifications in this status.
    pub status: Option<NotificationStatusFilter>,
    /// Only the notifications this event made (`evt_…`).
    pub event_id: Option<String>,
    /// Page size, 1 to 100 (default 20).
    pub limit: Option<u32>,
    /// The id of the last notification of the previous page.
    pub starting_after: Option<String>,
}

/// List notifications, newest first.
#[utoipa::path(get, path = "/v1/notifications", tag = "notifications", params(NotificationListParams),
    responses((status = 200, body = Page<NotificationBody>), (status = 400, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
async fn list_notifications(
    principal: Principal,
    mut tx: Tx,
    ApiQuery(params): ApiQuery<NotificationListParams>,
) -> Result<axum::Json<Page<NotificationBody>>, ApiError> {
    let page = ListParams { limit: params.limit, starting_after: params.starting_after }
        .page(|text| NotificationId::parse(text).ok())?;
    // An id that does not parse names no event: the page is empty (not a 400, which
    // the schema, a plain string, would not lead a client to expect).
    let event_id = match params.event_id.as_deref() {
        Some(text) => match till_outbox::EventId::parse(text) {
            Ok(id) => Some(id.as_uuid()),
            Err(_) => {
                return Ok(axum::Json(Page::from_rows(Vec::new(), page.limit, |body: &NotificationBody| {
                    body.id.to_string()
                })))
            }
        },
        None => None,
    };
    let status = params.status.map(|status| match status {
        NotificationStatusFilter::Queued => "queued",
        NotificationStatusFilter::Sent => "sent",
        NotificationStatusFilter::Delivered => "delivered",
        NotificationStatusFilter::Failed => "failed",
        NotificationStatusFilter::Suppressed => "suppressed",
    });
    let filter = store::NotificationFilter {
        status,
        event_id,
        starting_after: page.starting_after.map(|id| id.as_uuid()),
        limit: page.fetch_limit(),
    };
    let rows = store::list_notifications(&mut tx, &filter).await?;
    let bodies = rows.iter().map(|row| NotificationBody::of(row, &principal)).collect::<Result<Vec<_>, _>>()?;
    Ok(axum::Json(Page::from_rows(bodies, page.limit, |body| body.id.to_string())))
}

/// Retrieve a notification.
#[utoipa::path(get, path = "/v1/notifications/{id}", tag = "notifications", params(("id" = NotificationId, Path)),
    responses((status = 200, body = NotificationBody), (status = 404, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
async fn get_notification(
    principal: Principal,
    mut tx: Tx,
    ApiPath(id): ApiPath<NotificationId>,
) -> Result<axum::Json<NotificationBody>, ApiError> {
    let row = store::notification(&mut tx, id.as_uuid()).await?.ok_or_else(|| ApiError::not_found("notification"))?;
    Ok(axum::Json(NotificationBody::of(&row, &principal)?))
}
