//! `POST /v1/providers/razorpayx/webhooks` and `POST /v1/providers/fps/webhooks`: the
//! rails' events about Till's payouts (RazorpayX's, and the Faster Payments provider's
//! Modulr-shaped `PAYOUT` notifications).
//!
//! A webhook is a hint, never the truth Till posts from (as the gateways' are, in
//! payments): the money moves only when the saga's step records the rail's validated
//! answer to its own `GET` of the payout. So an event:
//! 1. is refused (400, nothing recorded) unless its signature verifies with the
//!    webhook's secret (hex HMAC-SHA256 of the body: `X-Razorpay-Signature`, or
//!    `x-mod-signature`; neither rail signs a timestamp, so the permanent dedupe below
//!    is the replay protection, and a replay can only make a step due early);
//! 2. is recorded once (`payouts.rail_events`) by its id: RazorpayX's
//!    `X-Razorpay-Event-Id`, or for Faster Payments the payment's id and status, which
//!    is what Modulr says to deduplicate on (its event ids can change between retries).
//!    A second delivery answers 200 and changes nothing;
//! 3. about a payout that can still change (`processing`, or `paid` and open to
//!    RazorpayX's processed → reversed, however late) makes its next step due now (or,
//!    if a step holds the payout's lease, right after that step) and wakes the saga, which asks the rail and applies what it says under the payout's
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
pub const FPS_WEBHOOKS_PATH: &str = "/v1/providers/fps/webhooks";

/// What the receiver needs: the database, the saga's wake-up call, and each rail's
/// webhook secret (none: every webhook of that rail is refused, since none can be
/// verified).
#[derive(Clone)]
pub struct Receiver {
    pub pool: PgPool,
    pub wake: Arc<tokio::sync::Notify>,
    pub razorpayx_secret: Option<Secret<String>>,
    pub fps_secret: Option<Secret<String>>,
}

pub fn routes(receiver: Receiver) -> OpenApiRouter {
    OpenApiRouter::new().routes(routes!(razorpayx_webhook)).routes(routes!(fps_webhook)).with_state(receiver)
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

/// A verified event, as much as Till reads of it.
#[derive(Debug, PartialEq, Eq)]
struct Heard {
    /// What deduplicates it.
    id: String,
    kind: String,
    /// The rail's id of the payout it is about, if any.
    rail_payout_id: Option<String>,
    /// Till's own id of that payout, as the rail echoes it (RazorpayX's `reference_id`,
    /// Modulr's `ExternalReference`): how an event that outruns the create's reply (Till
    /// has not yet recorded the rail's id) still finds its payout.
    payout_id: Option<Uuid>,
}

/// Till's payout id in a rail's echo of it, if it is one.
fn own_id(value: Option<&serde_json::Value>) -> Option<Uuid> {
    value.and_then(serde_json::Value::as_str).and_then(|text| crate::PayoutId::parse(text).ok()).map(|id| id.as_uuid())
}

#[derive(Deserialize)]
struct WireEvent {
    entity: String,
    event: String,
    payload: serde_json::Value,
}

/// A verified body as (event id, type, the rail's payout id if it names one).
fn parse(body: &[u8], event_id: Option<&str>) -> Result<Heard, ApiError> {
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
    let payout_id = own_id(wire.payload.pointer("/payout/entity/reference_id"));
    Ok(Heard { id: id.to_string(), kind: wire.event, rail_payout_id: payout, payout_id })
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
    verify(receiver.razorpayx_secret.as_ref(), "RazorpayX", "X-Razorpay-Signature", &headers, &body)?;
    let event_id = headers.get("x-razorpay-event-id").and_then(|value| value.to_str().ok());
    let heard = parse(&body, event_id)?;
    let receipt = receive(&receiver.pool, "razorpayx", &heard).await?;
    if receipt.outcome.as_deref() == Some("expedited") {
        receiver.wake.notify_one();
    }
    Ok(axum::Json(receipt))
}

/// Receive a Faster Payments notification (the provider calls this; it is not for API
/// keys).
#[utoipa::path(post, path = "/v1/providers/fps/webhooks", tag = "payouts",
    request_body(content = Object, content_type = "application/json", description = "A Modulr-shaped notification (`PAYOUT`), as the provider sends it."),
    params(
        ("x-mod-signature" = String, Header, description = "Hex HMAC-SHA256 of the body with the subscription's secret."),
    ),
    responses(
        (status = 200, body = RailWebhookReceipt, description = "Received (or received before)."),
        (status = 400, body = Problem, content_type = "application/problem+json", description = "The signature does not verify, or the body is not a notification; nothing was recorded."),
        (status = 429, body = Problem, content_type = "application/problem+json", description = "Too many webhooks at once (a bucket of their own); the provider retries."),
    ))]
async fn fps_webhook(
    State(receiver): State<Receiver>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<axum::Json<RailWebhookReceipt>, ApiError> {
    verify(receiver.fps_secret.as_ref(), "Faster Payments", "x-mod-signature", &headers, &body)?;
    let heard = parse_modulr(&body)?;
    let receipt = receive(&receiver.pool, "fps", &heard).await?;
    if receipt.outcome.as_deref() == Some("expedited") {
        receiver.wake.notify_one();
    }
    Ok(axum::Json(receipt))
}

/// Checks `header`'s hex HMAC-SHA256 of `body` with the rail's webhook secret.
fn verify(
    secret: Option<&Secret<String>>,
    rail: &str,
    header: &'static str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(), ApiError> {
    let Some(secret) = secret else {
        return Err(ApiError::new(
            ErrorCode::WebhookSignatureInvalid,
            format!("No {rail} webhook secret is configured, so no webhook can be verified."),
        )
        .with_param(header));
    };
    let given = headers.get(header).and_then(|value| value.to_str().ok());
    // The same scheme as Razorpay's: hex HMAC-SHA256 of the raw body, checked in
    // constant time.
    till_payments::gateway::razorpay::verify_webhook(secret.expose_secret(), given, body).map_err(|refusal| {
        ApiError::new(ErrorCode::WebhookSignatureInvalid, format!("The {header} does not verify: {refusal}."))
            .with_param(header)
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ModulrEvent {
    event_name: String,
    payment_id: String,
    status: String,
    external_reference: Option<serde_json::Value>,
}

/// A verified Modulr-shaped notification as (event id, type, the rail's payment id if
/// it is a `PAYOUT`). Every field it reads is checked for its form, since the event id
/// is made from them; the rest is read leniently, as Modulr asks (it adds fields).
fn parse_modulr(body: &[u8]) -> Result<Heard, ApiError> {
    let event: ModulrEvent = serde_json::from_slice(body)
        .map_err(|_| ApiError::invalid("body", "The body is not a Faster Payments notification."))?;
    let upper = |text: &str, max: usize| {
        !text.is_empty() && text.len() <= max && text.bytes().all(|b| b.is_ascii_uppercase() || b == b'_')
    };
    if !upper(&event.event_name, 32) {
        return Err(ApiError::invalid("EventName", "The notification's EventName is not one the provider sends."));
    }
    if !upper(&event.status, 24) {
        return Err(ApiError::invalid("Status", "The notification's Status is not a payment status."));
    }
    let id_ok = event.payment_id.len() <= 32
        && event
            .payment_id
            .strip_prefix('P')
            .is_some_and(|tail| !tail.is_empty() && tail.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit()));
    if !id_ok {
        return Err(ApiError::invalid("PaymentId", "The notification's PaymentId is not a payment id."));
    }
    let id = format!("{}_{}", event.payment_id, event.status);
    // Only an outbound payment's notification is about a payout of Till's; a `PAYIN`
    // (a return comes as one) is recorded and left to the return watch's poll.
    let outbound = event.event_name == "PAYOUT";
    let payout_id = outbound.then(|| own_id(event.external_reference.as_ref())).flatten();
    let rail_payout_id = outbound.then_some(event.payment_id);
    Ok(Heard { id, kind: event.event_name, rail_payout_id, payout_id })
}

/// Records the event once and makes its payout's next step due, in one transaction.
async fn receive(pool: &PgPool, rail: &str, heard: &Heard) -> Result<RailWebhookReceipt, ApiError> {
    let mut transaction = till_db::begin_platform(pool).await.map_err(ApiError::database)?;
    let owner: Option<Uuid> = if heard.rail_payout_id.is_some() || heard.payout_id.is_some() {
        sqlx::query_scalar("SELECT payouts.owner_of_rail_payout($1, $2, $3)")
            .bind(rail)
            .bind(heard.rail_payout_id.as_deref())
            .bind(heard.payout_id)
            .fetch_one(&mut *transaction)
            .await?
    } else {
        None
    };
    let recorded = sqlx::query(
        "INSERT INTO payouts.rail_events (rail, event_id, type, rail_payout_id, business_id)
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
    )
    .bind(rail)
    .bind(&heard.id)
    .bind(&heard.kind)
    .bind(heard.rail_payout_id.as_deref())
    .bind(owner)
    .execute(&mut *transaction)
    .await?;
    if recorded.rows_affected() == 0 {
        transaction.commit().await.map_err(ApiError::database)?;
        return Ok(RailWebhookReceipt { received: true, duplicate: true, outcome: None });
    }
    let outcome = match owner {
        Some(business) => {
            till_db::tenant::set_tenant(&mut transaction, BusinessId::from_uuid(business)).await?;
            // Due now unless final. A step holding the lease keeps it; the mark makes
            // that step's write bring its next look forward to now (store::write_step).
            // Till's own id finds the payout only while it has no rail id: an echo
            // never redirects a hint from the payment the rail names.
            let due = sqlx::query(
                "UPDATE payouts.payouts
                    SET hinted = true,
                        next_step_at = CASE WHEN lease_until IS NULL OR lease_until < now() THEN now()
                                            ELSE next_step_at END
                  WHERE rail = $1 AND status IN ('processing', 'paid')
                    AND (rail_payout_id = $2 OR (rail_payout_id IS NULL AND id = $3))",
            )
            .bind(rail)
            .bind(heard.rail_payout_id.as_deref())
            .bind(heard.payout_id)
            .execute(&mut *transaction)
            .await?;
            if due.rows_affected() > 0 {
                "expedited"
            } else {
                "ignored"
            }
        }
        None => "ignored",
    };
    sqlx::query("UPDATE payouts.rail_events SET outcome = $3 WHERE rail = $1 AND event_id = $2")
        .bind(rail)
        .bind(&heard.id)
        .bind(outcome)
        .execute(&mut *transaction)
        .await?;
    transaction.commit().await.map_err(ApiError::database)?;
    tracing::info!(rail, event = %heard.id, kind = %heard.kind, outcome, "received a rail's webhook");
    Ok(RailWebhookReceipt { received: true, duplicate: false, outcome: Some(outcome.to_string()) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_names_its_payout_or_nothing() {
        let body =
            br#"{"entity":"event","event":"payout.processed","payload":{"payout":{"entity":{"id":"pout_ABC123"}}}}"#;
        let heard = parse(body, Some("evt1")).expect("event");
        let expected = Heard {
            id: "evt1".into(),
            kind: "payout.processed".into(),
            rail_payout_id: Some("pout_ABC123".into()),
            payout_id: None,
        };
        assert_eq!(heard, expected);
        let hostile = br#"{"entity":"event","event":"payout.processed","payload":{"payout":{"entity":{"id":"pout_'; DROP","reference_id":"po_x"}}}}"#;
        let heard = parse(hostile, Some("evt2")).expect("event");
        assert_eq!((heard.rail_payout_id, heard.payout_id), (None, None));
        let id = crate::PayoutId::generate();
        let echoed = format!(
            r#"{{"entity":"event","event":"payout.processed","payload":{{"payout":{{"entity":{{"id":"pout_A","reference_id":"{id}"}}}}}}}}"#
        );
        assert_eq!(parse(echoed.as_bytes(), Some("evt3")).expect("event").payout_id, Some(id.as_uuid()));
        assert!(parse(body, None).is_err(), "no event id");
        assert!(parse(body, Some("evt 1")).is_err(), "a space in the event id");
        assert!(parse(b"[]", Some("evt3")).is_err());
    }

    #[test]
    fn a_modulr_notification_is_deduplicated_by_its_payment_and_status() {
        let body = br#"{"EventName":"PAYOUT","PaymentId":"P12004VC5E","Status":"PROCESSED","Amount":10.5,"New":1}"#;
        let heard = parse_modulr(body).expect("notification");
        let expected = Heard {
            id: "P12004VC5E_PROCESSED".into(),
            kind: "PAYOUT".into(),
            rail_payout_id: Some("P12004VC5E".into()),
            payout_id: None,
        };
        assert_eq!(heard, expected);
        let id = crate::PayoutId::generate();
        let echoed =
            format!(r#"{{"EventName":"PAYOUT","PaymentId":"P1","Status":"PROCESSED","ExternalReference":"{id}"}}"#);
        assert_eq!(parse_modulr(echoed.as_bytes()).expect("notification").payout_id, Some(id.as_uuid()));
        let payin =
            format!(r#"{{"EventName":"PAYIN","PaymentId":"P9","Status":"PROCESSED","ExternalReference":"{id}"}}"#);
        let heard = parse_modulr(payin.as_bytes()).expect("notification");
        assert_eq!((heard.rail_payout_id, heard.payout_id), (None, None), "a PAYIN names no payout");
        for hostile in [
            &br#"{"EventName":"PAYOUT","PaymentId":"P1'; DROP","Status":"PROCESSED"}"#[..],
            br#"{"EventName":"PAYOUT","PaymentId":"X1","Status":"PROCESSED"}"#,
            br#"{"EventName":"PAYOUT","PaymentId":"P1","Status":"processed\n"}"#,
            br#"{"EventName":"payout","PaymentId":"P1","Status":"PROCESSED"}"#,
            br#"{"PaymentId":"P1","Status":"PROCESSED"}"#,
            b"[]",
        ] {
            assert!(parse_modulr(hostile).is_err(), "{}", String::from_utf8_lossy(hostile));
        }
    }
}
