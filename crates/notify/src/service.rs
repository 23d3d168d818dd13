//! The notifications service's registration: its schema, its routes, the event consumer
//! (on whichever bus this Till runs) and the sender. Its settings are a
//! [`crate::NotifyConfig`] the composition root provides.

use std::sync::Arc;

use axum::http::Method;
use till_http::auth::{Access, Role, RoutePermission};
use till_http::service::{Context, Job, MountError, Mounted, Service};
use till_outbound::mail::{Mailer, MailerConfig};
use till_outbound::Names;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

use crate::api::{NOTIFICATIONS_PATH, SETTINGS_PATH, TEMPLATES_PATH};

pub static SERVICE: Service =
    Service { name: "notify", migrations: &crate::MIGRATIONS, outbox: None, permissions, mount };

/// The SMTP server's names in errors and logs.
pub const SMTP: Names = Names {
    dependency: "smtp",
    unavailable: "smtp_unavailable",
    reply_invalid: "smtp_reply_invalid",
    timeout: "smtp_timeout",
};

#[derive(OpenApi)]
#[openapi(
    components(schemas(crate::api::NotificationSettingsBody, crate::api::NotificationTemplateBody, crate::api::NotificationBody,
                      crate::api::NotificationStatusFilter)),
    tags((name = "notifications", description = "E-mail and SMS sent when a business's events happen: rules (which event notifies whom), templates checked when they are saved, and each notification with its status. One notification per event, rule and recipient, however often the event is delivered.")),
)]
struct Doc;

fn mount(context: &mut Context) -> Result<Mounted, MountError> {
    let config: crate::NotifyConfig = context.require("notify")?;
    let subscriber: till_outbox::consume::Subscriber = context.require("notify")?;
    let email = match &config.email {
        Some(settings) => {
            let mut mailer = MailerConfig::new(SMTP, settings.smtp_url.clone());
            mailer.attempt_timeout = settings.attempt_timeout;
            mailer.breaker = settings.breaker;
            let mailer = Mailer::new(mailer).map_err(|why| MountError::Failed { service: "notify", why })?;
            Some((mailer, settings.from_address.clone()))
        }
        None => None,
    };
    let sms = match &config.sms {
        Some(settings) => Some(
            crate::sms::Twilio::new(settings.clone()).map_err(|why| MountError::Failed { service: "notify", why })?,
        ),
        None => None,
    };
    // Twilio's status callbacks: a provider route, verified by its signature.
    let provider_routes = crate::sms::routes(sms.clone(), context.pool.clone());
    let providers = crate::sender::Providers { email, sms };
    let sender_pool = context.pool.clone();
    let sender = config.sender.clone();
    Ok(Mounted {
        tenant_routes: OpenApiRouter::with_openapi(Doc::openapi()).merge(crate::api::routes()),
        provider_routes,
        jobs: vec![
            Job::new("notification consumer", move |shutdown| {
                subscriber.subscribe(crate::consumer::subscription(), Arc::new(crate::consumer::Notifier), shutdown)
            }),
            Job::new("notification sender", move |shutdown| {
                crate::sender::run(sender_pool, providers, sender, shutdown)
            }),
        ],
        ..Mounted::default()
    })
}

/// Viewers read (recipients masked); admins decide who is notified of what and how.
fn permissions() -> Vec<RoutePermission> {
    let row = |method, path, role| RoutePermission { method, path, access: Access::Role(role) };
    vec![
        row(Method::GET, SETTINGS_PATH, Role::Viewer),
        row(Method::PUT, SETTINGS_PATH, Role::Admin),
        row(Method::GET, TEMPLATES_PATH, Role::Viewer),
        row(Method::POST, TEMPLATES_PATH, Role::Admin),
        row(Method::GET, "/v1/notification_templates/{id}", Role::Viewer),
        row(Method::PATCH, "/v1/notification_templates/{id}", Role::Admin),
        row(Method::GET, NOTIFICATIONS_PATH, Role::Viewer),
        row(Method::GET, "/v1/notifications/{id}", Role::Viewer),
        RoutePermission { method: Method::POST, path: crate::sms::STATUS_PATH, access: Access::Provider },
    ]
}
