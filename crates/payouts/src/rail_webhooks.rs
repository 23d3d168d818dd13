//! `POST /v1/providers/razorpayx/webhooks`: RazorpayX's events about Till's payouts.
//!
//! A webhook is a hint, never the truth Till posts from (as the gateways' are, in
//! payments): the money moves only when the saga's step records the rail's validated
//! answer to its own `GET` of the payout. So an event:
//! 1. is refused (400, nothing recorded) unless `X-Razorpay-Signature` verifies with the
//!    webhook's secret (hex HMAC-SHA256 of the body; Razorpay signs no timestamp, so the
//!    permanent dedupe below is its replay protection);
//! 2. is recorded once by `X-Razorpay-Event-Id` (`payouts.rail_events`): a second
//!    delivery answers 200 and changes nothing;
//! 3. about a payout that can still change (`processing`, or `paid` and open to
//!    RazorpayX's processed → reversed, however late) makes its next step due now and
//!    wakes the saga, which asks the rail and applies what it says under the payout's
//!    row lock and its state machine. Order cannot matter: a late `payout.initiated`
//!    after `payout.processed` sends the saga to ask, and the rail's answer is
//!    `processed`, which changes nothing a second time.
//!
//! The event's row and the due step commit together.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use till_http::{ApiError, ErrorCode, Problem};
use till_kit::{BusinessId, Secret};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

pub const RAZORPAYX_WEBHOOKS_PATH: &str = "/v1/providers/razorpayx/webhooks";

/// What the receiver needs: the database, the saga's wake-up call, and the webhook's
/// secret (none: every webhook is refused, since none can be verified).
#[derive(Clone)]
pub struct Receiver {
    pub pool: PgPool,
    pub wake: Arc<tokio::sync::Notify>,
    pub razorpayx_secret: Option<Secret<String>>,
}

pub fn routes(receiver: Receiver) -> OpenApiRouter {
    OpenApiRouter::new().routes(routes!(razorpayx_webhook)).with_state(receiver)
}

/// What Till made of a rail's webhook.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RailWebhookReceipt {
    pub received: bool,
    /// The event was received before; nothing was done again.
    pub duplicate: bool,
    /// `expedited` (the payout's next step is due now) or `ignored`.
    pub outcome: Option<String>,
}

#[derive(Deserialize)]
struct WireEvent {
    entity: String,
    event: String,
    payload: serde_json::Value,
}

/// A verified body as (event id, type, the rail's payout id if it names one).
fn parse(body: &[u8], event_id: Option<&str>) -> Result<(String, String, Option<String>), ApiError> {
    let id = event_id
        .filter(|id| !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
        .ok_or_else(|| ApiError::invalid("X-Razorpay-Event-Id", "X-Razorpay-Event-Id is 1 to 64 letters or digits."))?;
    let wire: WireEvent =
        serde_json::from_slice(body).map_err(|_| ApiError::invalid("body", "The body is not a RazorpayX event."))?;
    if wire.entity != "event" {
        return Err(ApiError::invalid("entity", "The body is not an event."));
    }
    let kind_ok = !wire.event.is_empty()
        && wire.event.len() <= 64
        && wire.event.bytes().all(|b| b.is_ascii_lowercase() || b == b'.' || b == b'_');
    if !kind_ok {
        return Err(ApiError::invalid("event", "The event's type is not one RazorpayX sends."));
    }
    let payout = wire
        .payload
        .pointer("/payout/entity/id")
        .and_then(serde_json::Value::as_str)
        .filter(|id| {
            id.strip_prefix("pout_").is_some_and(|tail| {
                !tail.is_empty() && tail.len() <= 40 && tail.bytes().all(|b| b.is_ascii_alphanumeric())
            })
        })
        .map(str::to_string);
    Ok((id.to_string(), wire.event, payout))
}

/// Receive a RazorpayX event (RazorpayX calls this; it is not for API keys).
#[utoipa::path(post, path = "/v1/providers/razorpayx/webhooks", tag = "payouts",
    request_body(content = Object, content_type = "application/json", description = "A RazorpayX event, as RazorpayX sends it."),
    params(
        ("X-Razorpay-Signature" = String, Header, description = "Hex HMAC-SHA256 of the body with the webhook's secret."),
        ("X-Razorpay-Event-Id" = String, Header, description = "The event's id: what deduplicates it."),
    ),
    responses(
        (status = 200, body = RailWebhookReceipt, description = "Received (or received before)."),
        (status = 400, body = Problem, content_type = "application/problem+json", description = "The signature does not verify, or the body is not a RazorpayX event; nothing was recorded."),
        (status = 429, body = Problem, content_type = "application/problem+json", description = "Too many webhooks at once (a bucket of their own); RazorpayX retries."),
    ))]
async fn razorpayx_webhook(
    State(receiver): State<Receiver>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<axum::Json<RailWebhookReceipt>, ApiError> {
    const HEADER: &str = "X-Razorpay-Signature";
    let Some(secret) = &receiver.razorpayx_secret else {
        return Err(ApiError::new(
            ErrorCode::WebhookSignatureInvalid,
            "No RazorpayX webhook secret is configured, so no webhook can be verified.",
        )
        .with_param(HEADER));
    };
    let header = headers.get("x-razorpay-signature").and_then(|value| value.to_str().ok());
    till_payments::gateway::razorpay::verify_webhook(secret.expose_secret(), header, &body).map_err(|refusal| {
        ApiError::new(
            ErrorCode::WebhookSignatureInvalid,
            format!("The X-Razorpay-Signature does not verify: {refusal}."),
        )
        .with_param(HEADER)
    })?;
    let event_id = headers.get("x-razorpay-event-id").and_then(|value| value.to_str().ok());
    let (event_id, kind, payout) = parse(&body, event_id)?;
    let receipt = receive(&receiver.pool, "razorpayx", &event_id, &kind, payout.as_deref()).await?;
    if receipt.outcome.as_deref() == Some("expedited") {
        receiver.wake.notify_one();
    }
    Ok(axum::Json(receipt))
}

/// Records the event once and makes its payout's next step due, in one transaction.
async fn receive(
    pool: &PgPool,
    rail: &str,
    event_id: &str,
    kind: &str,
    rail_payout_id: Option<&str>,
) -> Result<RailWebhookReceipt, ApiError> {
    let mut transaction = till_db::begin_platform(pool).await.map_err(ApiError::database)?;
    let owner: Option<Uuid> = match rail_payout_id {
        Some(id) => {
            sqlx::query_scalar("SELECT payouts.owner_of_rail_payout($1, $2)")
                .bind(rail)
                .bind(id)
                .fetch_one(&mut *transaction)
                .await?
        }
        None => None,
    };
    let recorded = sqlx::query(
        "INSERT INTO payouts.rail_events (rail, event_id, type, rail_payout_id, business_id)
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
    )
    .bind(rail)
    .bind(event_id)
    .bind(kind)
    .bind(rail_payout_id)
    .bind(owner)
    .execute(&mut *transaction)
    .await?;
    if recorded.rows_affected() == 0 {
        transaction.commit().await.map_err(ApiError::database)?;
        return Ok(RailWebhookReceipt { received: true, duplicate: true, outcome: None });
    }
    let outcome = match (owner, rail_payout_id) {
        (Some(business), Some(id)) => {
            till_db::tenant::set_tenant(&mut transaction, BusinessId::from_uuid(business)).await?;
            // Due now unless final; a step holding its lease keeps it and its own next
            // look (the poll schedule), which this does not shorten.
            let due = sqlx::query(
                "UPDATE payouts.payouts SET next_step_at = now()
                  WHERE rail = $1 AND rail_payout_id = $2 AND status IN ('processing', 'paid')
                    AND (lease_until IS NULL OR lease_until < now())",
            )
            .bind(rail)
            .bind(id)
            .execute(&mut *transaction)
            .await?;
            if due.rows_affected() > 0 {
                "expedited"
            } else {
                "ignored"
            }
        }
        _ => "ignored",
    };
    sqlx::query("UPDATE payouts.rail_events SET outcome = $3 WHERE rail = $1 AND event_id = $2")
        .bind(rail)
        .bind(event_id)
        .bind(outcome)
        .execute(&mut *transaction)
        .await?;
    transaction.commit().await.map_err(ApiError::database)?;
    tracing::info!(rail, event = event_id, kind, outcome, "received a rail's webhook");
    Ok(RailWebhookReceipt { received: true, duplicate: false, outcome: Some(outcome.to_string()) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_names_its_payout_or_nothing() {
        let body =
            br#"{"entity":"event","event":"payout.processed","payload":{"payout":{"entity":{"id":"pout_ABC123"}}}}"#;
        let (id, kind, payout) = parse(body, Some("evt1")).expect("event");
        assert_eq!((id.as_str(), kind.as_str(), payout.as_deref()), ("evt1", "payout.processed", Some("pout_ABC123")));
        let hostile =
            br#"{"entity":"event","event":"payout.processed","payload":{"payout":{"entity":{"id":"pout_'; DROP"}}}}"#;
        assert_eq!(parse(hostile, Some("evt2")).expect("event").2, None);
        assert!(parse(body, None).is_err(), "no event id");
        assert!(parse(body, Some("evt 1")).is_err(), "a space in the event id");
        assert!(parse(b"[]", Some("evt3")).is_err());
    }
}
