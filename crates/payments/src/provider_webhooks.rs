//! `POST /v1/providers/stripe/webhooks` and `POST /v1/providers/razorpay/webhooks`: the
//! gateways' events about Till's intents.
//!
//! A webhook is a hint, never the truth Till posts from: the money moves only when a
//! step of Till's records the gateway's validated answer to its own call. So an event:
//! 1. is refused (400, nothing recorded) unless its signature verifies with the
//!    endpoint's secret: Stripe's `Stripe-Signature` within 300 s, Razorpay's
//!    `X-Razorpay-Signature` (which signs no timestamp, so the dedupe below is its only
//!    replay protection, and it is permanent);
//! 2. is recorded once by the gateway's event id (`payments.gateway_events`; Razorpay's
//!    `X-Razorpay-Event-Id`): a second delivery is answered 200 and changes nothing;
//! 3. about an intent with a step in flight (`processing`), expedites that step's
//!    recovery point: the recovery job resumes it now, asking Stripe again with the
//!    step's own key, instead of after the grace (the webhook and the job, whichever
//!    comes first);
//! 4. about an intent whose status is already as far along as the event's, or further,
//!    is stale and changes nothing (a late `amount_capturable_updated` after
//!    `succeeded`);
//! 5. about an intent the gateway moved further while no step of Till's was in flight
//!    (a capture or cancel made in Stripe's dashboard, an authorisation Stripe let
//!    expire) cannot be ordered with what Till did: the intent goes to `requires_review`
//!    with the reason, and nothing is posted.
//!
//! The event's row, the expedite or the review, and their events commit together.

use axum::extract::State;
use axum::http::HeaderMap;
use bytes::Bytes;
use serde::Serialize;
use sqlx::{PgConnection, PgPool};
use till_http::{ApiError, ErrorCode, Problem};
use till_kit::{BusinessId, Secret};
use time::OffsetDateTime;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::domain::IntentStatus;
use crate::gateway::{razorpay, stripe, Event};
use crate::store::IntentRow;
use crate::PaymentIntentId;

pub const STRIPE_WEBHOOKS_PATH: &str = "/v1/providers/stripe/webhooks";
pub const RAZORPAY_WEBHOOKS_PATH: &str = "/v1/providers/razorpay/webhooks";

/// What the receiver needs: the database and the endpoint's signing secret (none: every
/// webhook is refused, since none can be verified).
#[derive(Clone)]
pub struct Receiver {
    pub pool: PgPool,
    pub stripe_secret: Option<Secret<String>>,
    pub razorpay_secret: Option<Secret<String>>,
}

pub fn routes(receiver: Receiver) -> OpenApiRouter {
    OpenApiRouter::new().routes(routes!(stripe_webhook)).routes(routes!(razorpay_webhook)).with_state(receiver)
}

/// What Till made of a webhook.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct WebhookReceipt {
    pub received: bool,
    /// The event was received before; nothing was done again.
    pub duplicate: bool,
    /// `expedited`, `stale`, `review` or `ignored` (see the module's documentation).
    pub outcome: Option<String>,
}

/// Receive a Stripe event (Stripe calls this; it is not for API keys).
#[utoipa::path(post, path = "/v1/providers/stripe/webhooks", tag = "payments",
    request_body(content = Object, content_type = "application/json", description = "A Stripe event, as Stripe sends it."),
    params(("Stripe-Signature" = String, Header, description = "t={unix seconds},v1={hex HMAC-SHA256 of \"{t}.{body}\" with the endpoint's signing secret}.")),
    responses(
        (status = 200, body = WebhookReceipt, description = "Received (or received before)."),
        (status = 400, body = Problem, content_type = "application/problem+json", description = "The signature does not verify, or the body is not a Stripe event; nothing was recorded."),
        (status = 429, body = Problem, content_type = "application/problem+json", description = "Too many webhooks at once (a bucket of their own); Stripe retries."),
    ))]
async fn stripe_webhook(
    State(receiver): State<Receiver>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<axum::Json<WebhookReceipt>, ApiError> {
    let Some(secret) = &receiver.stripe_secret else {
        return Err(signature_invalid(
            "Stripe-Signature",
            "No Stripe webhook signing secret is configured, so no webhook can be verified.",
        ));
    };
    let header = headers.get("stripe-signature").and_then(|value| value.to_str().ok());
    let now = OffsetDateTime::now_utc().unix_timestamp();
    stripe::verify_webhook(secret.expose_secret(), header, &body, now).map_err(|refusal| {
        signature_invalid("Stripe-Signature", &format!("The Stripe-Signature does not verify: {refusal}."))
    })?;
    let event = stripe::parse_event(&body).map_err(|reason| ApiError::invalid("body", reason.why))?;
    Ok(axum::Json(receive(&receiver.pool, &event).await?))
}

/// Receive a Razorpay event (Razorpay calls this; it is not for API keys).
#[utoipa::path(post, path = "/v1/providers/razorpay/webhooks", tag = "payments",
    request_body(content = Object, content_type = "application/json", description = "A Razorpay event, as Razorpay sends it."),
    params(
        ("X-Razorpay-Signature" = String, Header, description = "Hex HMAC-SHA256 of the body with the webhook's secret."),
        ("X-Razorpay-Event-Id" = String, Header, description = "The event's id: what deduplicates it."),
    ),
    responses(
        (status = 200, body = WebhookReceipt, description = "Received (or received before)."),
        (status = 400, body = Problem, content_type = "application/problem+json", description = "The signature does not verify, or the body is not a Razorpay event; nothing was recorded."),
        (status = 429, body = Problem, content_type = "application/problem+json", description = "Too many webhooks at once (a bucket of their own); Razorpay retries."),
    ))]
async fn razorpay_webhook(
    State(receiver): State<Receiver>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<axum::Json<WebhookReceipt>, ApiError> {
    const HEADER: &str = "X-Razorpay-Signature";
    let Some(secret) = &receiver.razorpay_secret else {
        return Err(signature_invalid(
            HEADER,
            "No Razorpay webhook secret is configured, so no webhook can be verified.",
        ));
    };
    let header = headers.get("x-razorpay-signature").and_then(|value| value.to_str().ok());
    razorpay::verify_webhook(secret.expose_secret(), header, &body).map_err(|refusal| {
        signature_invalid(HEADER, &format!("The X-Razorpay-Signature does not verify: {refusal}."))
    })?;
    let event_id = headers.get("x-razorpay-event-id").and_then(|value| value.to_str().ok());
    let event =
        razorpay::parse_event(&body, event_id).map_err(|reason| ApiError::invalid(&reason.field, reason.why))?;
    Ok(axum::Json(receive(&receiver.pool, &event).await?))
}

fn signature_invalid(header: &str, detail: &str) -> ApiError {
    ApiError::new(ErrorCode::WebhookSignatureInvalid, detail).with_param(header)
}

/// Records `event` once and acts on it, in one transaction.
pub async fn receive(pool: &PgPool, event: &Event) -> Result<WebhookReceipt, ApiError> {
    let mut transaction = till_db::begin_platform(pool).await.map_err(ApiError::database)?;
    let gateway = event.gateway.as_str();
    let object_id = event.intent.clone();
    let owner: Option<Uuid> = match &object_id {
        Some(id) => {
            sqlx::query_scalar("SELECT payments.owner_of_intent($2, $1)")
                .bind(id)
                .bind(gateway)
                .fetch_one(&mut *transaction)
                .await?
        }
        None => None,
    };
    let created = OffsetDateTime::from_unix_timestamp(event.created).unwrap_or_else(|_| OffsetDateTime::now_utc());
    let recorded = sqlx::query(
        "INSERT INTO payments.gateway_events (gateway, event_id, type, object_id, business_id, created_at)
         VALUES ($6, $1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
    )
    .bind(&event.id)
    .bind(&event.kind)
    .bind(&object_id)
    .bind(owner)
    .bind(created)
    .bind(gateway)
    .execute(&mut *transaction)
    .await?;
    if recorded.rows_affected() == 0 {
        transaction.commit().await.map_err(ApiError::database)?;
        return Ok(WebhookReceipt { received: true, duplicate: true, outcome: None });
    }
    let outcome = match (owner, object_id.as_deref()) {
        (Some(business), Some(gateway_id)) => {
            let business = BusinessId::from_uuid(business);
            till_db::tenant::set_tenant(&mut transaction, business).await?;
            apply_to_intent(&mut transaction, event, gateway_id).await?
        }
        _ => "ignored",
    };
    sqlx::query("UPDATE payments.gateway_events SET outcome = $2 WHERE gateway = $3 AND event_id = $1")
        .bind(&event.id)
        .bind(outcome)
        .bind(gateway)
        .execute(&mut *transaction)
        .await?;
    transaction.commit().await.map_err(ApiError::database)?;
    tracing::info!(gateway, event = %event.id, kind = %event.kind, outcome, "received a gateway's webhook");
    Ok(WebhookReceipt { received: true, duplicate: false, outcome: Some(outcome.to_string()) })
}

async fn apply_to_intent(
    connection: &mut PgConnection,
    event: &Event,
    gateway_id: &str,
) -> Result<&'static str, ApiError> {
    let Some(row) = find(connection, event, gateway_id, false).await? else { return Ok("ignored") };
    let intent = PaymentIntentId::from_uuid(row.id).to_string();
    if row.status().map_err(|error| ApiError::internal(&error))? == IntentStatus::Processing {
        // A step is with the gateway: the step, not the webhook, records the outcome.
        // The recovery point is locked before the intent, as a request's phase locks
        // them, so that the two never wait for each other.
        if till_http::recovery::expedite(connection, "intent", &intent).await? > 0 {
            return Ok("expedited");
        }
        // No step in flight: it finished while this waited; judge the event against
        // what it recorded.
    }
    let Some(row) = find(connection, event, gateway_id, true).await? else { return Ok("ignored") };
    let till = row.status().map_err(|error| ApiError::internal(&error))?;
    if till == IntentStatus::Processing {
        // A step may have begun between the first look and the lock (a cancel that
        // started as a late webhook of the confirm arrived): look for its point again.
        if till_http::recovery::expedite(connection, "intent", &intent).await? > 0 {
            return Ok("expedited");
        }
        let reason = "the intent was processing with no request of Till's in flight";
        crate::api::review(connection, &row, reason).await?;
        return Ok("review");
    }
    if till == IntentStatus::RequiresReview {
        return Ok("stale");
    }
    let amount = row.money().map_err(|error| ApiError::internal(&error))?;
    let title = event.gateway.title();
    let gateway = match crate::gateway::event_intent(event, gateway_id, amount) {
        Ok(gateway) => IntentStatus::of_gateway(gateway.status),
        Err(reason) => {
            let reason = format!("{title}'s {} did not match the intent: {}: {}", event.kind, reason.field, reason.why);
            crate::api::review(connection, &row, &reason).await?;
            return Ok("review");
        }
    };
    if gateway == till || gateway.progress() < till.progress() {
        return Ok("stale");
    }
    let reason = format!(
        "{title}'s {} says {}, Till has {} and no step of Till's was in flight",
        event.kind,
        gateway.as_str(),
        till.as_str()
    );
    crate::api::review(connection, &row, &reason).await?;
    Ok("review")
}

/// The intent of `gateway_id`, locked for the rest of the transaction with `lock`.
async fn find(
    connection: &mut PgConnection,
    event: &Event,
    gateway_id: &str,
    lock: bool,
) -> Result<Option<IntentRow>, ApiError> {
    let sql = if lock {
        "SELECT * FROM payments.intents WHERE gateway = $2 AND gateway_intent_id = $1 FOR UPDATE"
    } else {
        "SELECT * FROM payments.intents WHERE gateway = $2 AND gateway_intent_id = $1"
    };
    Ok(sqlx::query_as(sql).bind(gateway_id).bind(event.gateway.as_str()).fetch_optional(connection).await?)
}
