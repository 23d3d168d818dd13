//! The `crm` consumer: each captured payment, paid order and refund becomes its changes
//! to Salesforce records, queued in the transaction that records the event in the inbox
//! (so an event delivered three times queues them once). It never calls Salesforce: the
//! worker does, so a slow or down org never holds up the event stream.

use sqlx::PgConnection;
use till_outbox::consume::{Effect, Handler, HandlerError, Subscription};
use till_outbox::envelope::EventBody;

use crate::domain::{self, Business};

pub const CONSUMER: &str = "crm";

pub fn subscription() -> Subscription {
    Subscription::new(CONSUMER, &["payment_intent.succeeded", "order.paid", "refund.succeeded"])
        .unwrap_or_else(|why| unreachable!("the consumer's own subscription: {why}"))
}

pub struct Mirror;

impl Handler for Mirror {
    fn handle<'c>(&'c self, connection: &'c mut PgConnection, event: &'c EventBody) -> Effect<'c> {
        Box::pin(mirror(connection, event))
    }
}

async fn mirror(connection: &mut PgConnection, event: &EventBody) -> Result<(), HandlerError> {
    let profile = till_access::business::profile(connection, event.business_id)
        .await?
        .ok_or("the event's business is not visible")?;
    let id = event.business_id.to_string();
    let business = Business { id: &id, name: &profile.legal_name, country: profile.country.code() };
    let close_date = event.occurred_at.date().to_string();
    let mapped = match event.event_type.as_str() {
        "payment_intent.succeeded" => domain::payment_captured(&business, &event.data, &close_date),
        "order.paid" => domain::order_paid(&business, &event.data, &close_date),
        "refund.succeeded" => {
            let text = |field: &'static str| {
                event.data.get(field).and_then(serde_json::Value::as_str).ok_or(domain::MappingError::Field(field))
            };
            let amount = event
                .data
                .get("amount")
                .and_then(serde_json::Value::as_i64)
                .ok_or(domain::MappingError::Field("amount"))?;
            let currency =
                till_kit::Currency::parse(text("currency")?).map_err(|_| domain::MappingError::Field("currency"))?;
            let payment = text("payment_intent_id")?;
            let total = crate::store::add_refund(connection, event.business_id, text("id")?, payment, amount).await?;
            Ok(vec![domain::refunded(payment, total, currency)])
        }
        _ => return Ok(()),
    };
    let changes = match mapped {
        Ok(changes) => changes,
        // An event that does not fit its own schema is a producer's bug: retrying it would
        // hold every later event behind it (the embedded bus keeps order), so it is logged
        // loudly and passed over.
        Err(error) => {
            tracing::error!(event_id = %event.id, event_type = event.event_type, %error, "an event cannot be mirrored to the CRM");
            return Ok(());
        }
    };
    for change in &changes {
        crate::store::queue(connection, event.business_id, event.id.as_uuid(), change).await?;
    }
    Ok(())
}
