//! The event envelope (API.md, "Events and webhooks") and the catalogue of event types.
//! docs/EVENTS.md is this catalogue in prose; a test keeps the two in step.

use serde::{Deserialize, Serialize};
use till_http::auth::Role;
use till_kit::BusinessId;
use time::OffsetDateTime;
use utoipa::ToSchema;

use crate::EventId;

/// Every event type Till publishes, with its schema version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    AccountCreated,
    AccountUpdated,
    TransferCreated,
    TransferPosted,
    TransferVoided,
    TransferExpired,
    TransferReversed,
    ApiKeyCreated,
    ApiKeyRevoked,
    WebhookEndpointDisabled,
    PaymentIntentCreated,
    PaymentIntentAmountCapturableUpdated,
    PaymentIntentProcessing,
    PaymentIntentSucceeded,
    PaymentIntentPaymentFailed,
    PaymentIntentCanceled,
    PaymentIntentRequiresReview,
    RefundCreated,
    RefundSucceeded,
    RefundFailed,
    SettlementReconciled,
    ReconciliationExceptionCreated,
    BeneficiaryCreated,
    BeneficiaryDisabled,
    PayoutCreated,
    PayoutPaid,
    PayoutFailed,
    PayoutReturned,
    PayoutApproved,
    PayoutProcessing,
    PayoutCanceled,
    ProductCreated,
    ProductUpdated,
    InventoryAdjusted,
    ReservationCreated,
    ReservationCommitted,
    ReservationReleased,
    ReservationExpired,
    CouponCreated,
    CouponUpdated,
    OrderCreated,
    OrderPaid,
    OrderPaymentFailed,
    OrderCanceled,
    OrderRefunded,
    InvoiceIssued,
    CreditNoteIssued,
}

impl EventType {
    pub const ALL: [EventType; 47] = [
        EventType::AccountCreated,
        EventType::AccountUpdated,
        EventType::TransferCreated,
        EventType::TransferPosted,
        EventType::TransferVoided,
        EventType::TransferExpired,
        EventType::TransferReversed,
        EventType::ApiKeyCreated,
        EventType::ApiKeyRevoked,
        EventType::WebhookEndpointDisabled,
        EventType::PaymentIntentCreated,
        EventType::PaymentIntentAmountCapturableUpdated,
        EventType::PaymentIntentProcessing,
        EventType::PaymentIntentSucceeded,
        EventType::PaymentIntentPaymentFailed,
        EventType::PaymentIntentCanceled,
        EventType::PaymentIntentRequiresReview,
        EventType::RefundCreated,
        EventType::RefundSucceeded,
        EventType::RefundFailed,
        EventType::SettlementReconciled,
        EventType::ReconciliationExceptionCreated,
        EventType::BeneficiaryCreated,
        EventType::BeneficiaryDisabled,
        EventType::PayoutCreated,
        EventType::PayoutPaid,
        EventType::PayoutFailed,
        EventType::PayoutReturned,
        EventType::PayoutApproved,
        EventType::PayoutProcessing,
        EventType::PayoutCanceled,
        EventType::ProductCreated,
        EventType::ProductUpdated,
        EventType::InventoryAdjusted,
        EventType::ReservationCreated,
        EventType::ReservationCommitted,
        EventType::ReservationReleased,
        EventType::ReservationExpired,
        EventType::CouponCreated,
        EventType::CouponUpdated,
        EventType::OrderCreated,
        EventType::OrderPaid,
        EventType::OrderPaymentFailed,
        EventType::OrderCanceled,
        EventType::OrderRefunded,
        EventType::InvoiceIssued,
        EventType::CreditNoteIssued,
    ];

    pub fn name(self) -> &'static str {
        match self {
            EventType::AccountCreated => "account.created",
            EventType::AccountUpdated => "account.updated",
            EventType::TransferCreated => "transfer.created",
            EventType::TransferPosted => "transfer.posted",
            EventType::TransferVoided => "transfer.voided",
            EventType::TransferExpired => "transfer.expired",
            EventType::TransferReversed => "transfer.reversed",
            EventType::ApiKeyCreated => "api_key.created",
            EventType::ApiKeyRevoked => "api_key.revoked",
            EventType::WebhookEndpointDisabled => "webhook_endpoint.disabled",
            EventType::PaymentIntentCreated => "payment_intent.created",
            EventType::PaymentIntentAmountCapturableUpdated => "payment_intent.amount_capturable_updated",
            EventType::PaymentIntentProcessing => "payment_intent.processing",
            EventType::PaymentIntentSucceeded => "payment_intent.succeeded",
            EventType::PaymentIntentPaymentFailed => "payment_intent.payment_failed",
            EventType::PaymentIntentCanceled => "payment_intent.canceled",
            EventType::PaymentIntentRequiresReview => "payment_intent.requires_review",
            EventType::RefundCreated => "refund.created",
            EventType::RefundSucceeded => "refund.succeeded",
            EventType::RefundFailed => "refund.failed",
            EventType::SettlementReconciled => "settlement.reconciled",
            EventType::ReconciliationExceptionCreated => "reconciliation_exception.created",
            EventType::BeneficiaryCreated => "beneficiary.created",
            EventType::BeneficiaryDisabled => "beneficiary.disabled",
            EventType::PayoutCreated => "payout.created",
            EventType::PayoutPaid => "payout.paid",
            EventType::PayoutFailed => "payout.failed",
            EventType::PayoutReturned => "payout.returned",
            EventType::PayoutApproved => "payout.approved",
            EventType::PayoutProcessing => "payout.processing",
            EventType::PayoutCanceled => "payout.canceled",
            EventType::ProductCreated => "product.created",
            EventType::ProductUpdated => "product.updated",
            EventType::InventoryAdjusted => "inventory.adjusted",
            EventType::ReservationCreated => "reservation.created",
            EventType::ReservationCommitted => "reservation.committed",
            EventType::ReservationReleased => "reservation.released",
            EventType::ReservationExpired => "reservation.expired",
            EventType::CouponCreated => "coupon.created",
            EventType::CouponUpdated => "coupon.updated",
            EventType::OrderCreated => "order.created",
            EventType::OrderPaid => "order.paid",
            EventType::OrderPaymentFailed => "order.payment_failed",
            EventType::OrderCanceled => "order.canceled",
            EventType::OrderRefunded => "order.refunded",
            EventType::InvoiceIssued => "invoice.issued",
            EventType::CreditNoteIssued => "credit_note.issued",
        }
    }

    /// The version of the `data` schema; a breaking change to `data` is a new version.
    pub fn version(self) -> i32 {
        1
    }

    /// The OpenAPI schema of `data`: the resource as it is after the event.
    pub fn data_schema(self) -> &'static str {
        match self {
            EventType::AccountCreated | EventType::AccountUpdated => "AccountBody",
            EventType::ApiKeyCreated | EventType::ApiKeyRevoked => "ApiKeyBody",
            EventType::WebhookEndpointDisabled => "WebhookEndpointBody",
            EventType::PaymentIntentCreated
            | EventType::PaymentIntentAmountCapturableUpdated
            | EventType::PaymentIntentProcessing
            | EventType::PaymentIntentSucceeded
            | EventType::PaymentIntentPaymentFailed
            | EventType::PaymentIntentCanceled
            | EventType::PaymentIntentRequiresReview => "PaymentIntentBody",
            EventType::RefundCreated | EventType::RefundSucceeded | EventType::RefundFailed => "RefundBody",
            EventType::SettlementReconciled => "SettlementBody",
            EventType::ReconciliationExceptionCreated => "ReconciliationExceptionBody",
            EventType::BeneficiaryCreated | EventType::BeneficiaryDisabled => "BeneficiaryBody",
            EventType::PayoutCreated
            | EventType::PayoutPaid
            | EventType::PayoutFailed
            | EventType::PayoutReturned
            | EventType::PayoutApproved
            | EventType::PayoutProcessing
            | EventType::PayoutCanceled => "PayoutBody",
            EventType::ProductCreated | EventType::ProductUpdated => "ProductBody",
            EventType::InventoryAdjusted => "AdjustmentBody",
            EventType::ReservationCreated
            | EventType::ReservationCommitted
            | EventType::ReservationReleased
            | EventType::ReservationExpired => "ReservationBody",
            EventType::CouponCreated | EventType::CouponUpdated => "CouponBody",
            EventType::OrderCreated
            | EventType::OrderPaid
            | EventType::OrderPaymentFailed
            | EventType::OrderCanceled
            | EventType::OrderRefunded => "OrderBody",
            EventType::InvoiceIssued => "InvoiceBody",
            EventType::CreditNoteIssued => "CreditNoteBody",
            // Listed, not a catch-all: a new type must name its schema (a catch-all once
            // gave `order.refunded` the transfer's).
            EventType::TransferCreated
            | EventType::TransferPosted
            | EventType::TransferVoided
            | EventType::TransferExpired
            | EventType::TransferReversed => "TransferBody",
        }
    }

    /// The role that may read events of this type, in the event log and through a
    /// webhook endpoint: its resource's read permission (API keys are an admin's).
    pub fn read_role(self) -> Role {
        match self {
            EventType::ApiKeyCreated | EventType::ApiKeyRevoked => Role::Admin,
            _ => Role::Viewer,
        }
    }

    /// The event types `role` may read.
    pub fn readable_by(role: Role) -> Vec<EventType> {
        EventType::ALL.into_iter().filter(|event_type| role.allows(event_type.read_role())).collect()
    }

    pub fn description(self) -> &'static str {
        match self {
            EventType::AccountCreated => "A ledger account was opened.",
            EventType::AccountUpdated => {
                "An account's name, metadata, status or bounds changed (not its balance: transfers say that)."
            }
            EventType::TransferCreated => "A transfer was created: posted at once, or a hold (status pending).",
            EventType::TransferPosted => "A hold was posted, in full or in part (posted_amount).",
            EventType::TransferVoided => "A hold was voided; its funds were released.",
            EventType::TransferExpired => "A hold expired; its funds were released.",
            EventType::TransferReversed => {
                "A posted transfer was reversed; reversed_by names the reversal (itself announced by transfer.created)."
            }
            EventType::ApiKeyCreated => "An API key was created (the secret is never in an event).",
            EventType::ApiKeyRevoked => "An API key was revoked.",
            EventType::WebhookEndpointDisabled => "A webhook endpoint kept failing for days and was disabled.",
            EventType::PaymentIntentCreated => "A payment intent was created.",
            EventType::PaymentIntentAmountCapturableUpdated => {
                "The payment was authorised and awaits capture (amount_capturable)."
            }
            EventType::PaymentIntentProcessing => {
                "The gateway's answer is not known yet (it timed out); a status sync settles it."
            }
            EventType::PaymentIntentSucceeded => {
                "The payment was captured: the money is in the merchant's pending balance."
            }
            EventType::PaymentIntentPaymentFailed => {
                "The payment method was declined (last_payment_error); the intent awaits another."
            }
            EventType::PaymentIntentCanceled => "The intent was canceled; an authorisation was released.",
            EventType::PaymentIntentRequiresReview => {
                "The gateway's reply could not be trusted (review_reason); nothing was posted."
            }
            EventType::RefundCreated => {
                "A refund was asked for; its amount is reserved from the intent's refundable amount."
            }
            EventType::RefundSucceeded => "The gateway refunded it; the money left the merchant's pending balance.",
            EventType::RefundFailed => "The gateway refused the refund; the reserved amount is refundable again.",
            EventType::SettlementReconciled => {
                "A gateway paid out: its lines for this business were matched with Till's captures, fees and refunds, and what matched moved from pending to available."
            }
            EventType::ReconciliationExceptionCreated => {
                "A settlement line did not match what Till recorded (or Till has no record of it); nothing was adjusted."
            }
            EventType::BeneficiaryCreated => {
                "A beneficiary was added, with what Confirmation of Payee answered (verification)."
            }
            EventType::BeneficiaryDisabled => "A beneficiary was disabled: no new payouts to it.",
            EventType::PayoutCreated => {
                "A payout was accepted: its amount is held on the available balance and it is queued for the rail."
            }
            EventType::PayoutPaid => "The rail paid it: the hold was posted and the money left.",
            EventType::PayoutFailed => {
                "The rail refused or failed it (failure_reason): the hold was voided and the amount is available again."
            }
            EventType::PayoutReturned => {
                "The beneficiary's bank sent a paid payout back (failure_reason): the posting was reversed."
            }
            EventType::PayoutApproved => {
                "A second person approved a payout that needed it: it is processing, or scheduled while its beneficiary's cooling-off runs."
            }
            EventType::PayoutProcessing => {
                "A scheduled payout's cooling-off ended: it is processing, queued for the rail."
            }
            EventType::PayoutCanceled => "A payout was canceled before the rail had it: the hold was voided.",
            EventType::ProductCreated => "A product was added to the catalog.",
            EventType::ProductUpdated => {
                "A product's name, description, tax treatment, prices, status or metadata changed (its SKU never does)."
            }
            EventType::InventoryAdjusted => {
                "A SKU's stock was adjusted (delta, reason); inventory is the stock after it."
            }
            EventType::ReservationCreated => "Stock was reserved for a checkout: every line's units are held until it ends.",
            EventType::ReservationCommitted => "A reservation was committed: its units were sold.",
            EventType::ReservationReleased => "A reservation was released: its units are available again.",
            EventType::ReservationExpired => {
                "A reservation's time ran out before it was committed: its units are available again."
            }
            EventType::CouponCreated => "A coupon was created.",
            EventType::CouponUpdated => "A coupon's status, end or redemption limit changed (its code and discount never do).",
            EventType::OrderCreated => {
                "A checkout made an order: priced, its stock reserved and its coupons redeemed; its payment is next."
            }
            EventType::OrderPaid => {
                "An order's payment was captured, its reservation committed (the stock sold) and its invoice issued (invoice_id)."
            }
            EventType::OrderPaymentFailed => {
                "An order's payment was declined or could not be captured (failure): nothing was charged, any authorisation was voided and the stock released."
            }
            EventType::OrderCanceled => {
                "An order was canceled before it was paid (failure says why: asked for, or its reservation expired): any authorisation was voided and the stock released."
            }
            EventType::InvoiceIssued => {
                "An invoice was issued for a paid order, with the next number of its series."
            }
            EventType::OrderRefunded => {
                "A refund of an order succeeded (amount_refunded; status refunded once all of it is back), with its credit note."
            }
            EventType::CreditNoteIssued => {
                "A credit note was issued for a refund, crediting units of an invoice, with the next number of its series."
            }
        }
    }

    pub fn parse(name: &str) -> Option<EventType> {
        EventType::ALL.into_iter().find(|event_type| event_type.name() == name)
    }
}

/// An event, as written to an outbox.
#[derive(Debug, Clone)]
pub struct Event {
    pub id: EventId,
    pub event_type: EventType,
    pub business_id: BusinessId,
    /// The prefixed id of the resource the event is about.
    pub resource_id: String,
    /// Strictly increasing per resource, without gaps, starting at 1.
    pub sequence: i64,
    pub occurred_at: OffsetDateTime,
    /// The request (or job) that caused it, for correlation.
    pub request_id: Option<String>,
    /// The resource as JSON, serialized once by the producer: the outbox stores these
    /// bytes as they are (a `serde_json::Value` here was built, cloned and serialized
    /// again for every event; perf under `till bench ledger`: building it was a sixth of
    /// the ledger writer's samples, cloning and dropping it another tenth).
    pub data: Box<serde_json::value::RawValue>,
}

impl Event {
    pub fn new(
        event_type: EventType,
        business_id: BusinessId,
        resource_id: String,
        sequence: i64,
        occurred_at: OffsetDateTime,
        request_id: Option<String>,
        data: Box<serde_json::value::RawValue>,
    ) -> Event {
        Event { id: EventId::generate(), event_type, business_id, resource_id, sequence, occurred_at, request_id, data }
    }

    /// An event about a service's resource, `data` its body after the change, caused by
    /// the request (or job) running now: what every service announces its changes with.
    pub fn about(
        event_type: EventType,
        business_id: BusinessId,
        resource_id: String,
        sequence: i64,
        occurred_at: OffsetDateTime,
        data: &impl Serialize,
    ) -> Result<Event, serde_json::Error> {
        let data = serde_json::value::to_raw_value(data)?;
        let request_id = till_http::request_id::current();
        Ok(Event::new(event_type, business_id, resource_id, sequence, occurred_at, request_id, data))
    }
}

/// An event as the API and webhooks show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({
    "id": "evt_01936f0e6c2a7cc2b0a6a4e5f3d2c1b0", "type": "transfer.created", "version": 1,
    "business_id": "biz_01936f0e6c2a7cc2b0a6a4e5f3d2c1b0", "resource_id": "tr_01936f0e6c2a7cc2b0a6a4e5f3d2c1b1",
    "sequence": 1, "occurred_at": "2026-11-22T10:00:00Z", "request_id": "req_01936f0e6c2a7cc2b0a6a4e5f3d2c1b2",
    "data": {}
}))]
pub struct EventBody {
    pub id: EventId,
    /// One of the types in docs/EVENTS.md.
    #[serde(rename = "type")]
    pub event_type: String,
    pub version: i32,
    pub business_id: BusinessId,
    pub resource_id: String,
    pub sequence: i64,
    #[serde(with = "time::serde::rfc3339")]
    pub occurred_at: OffsetDateTime,
    pub request_id: Option<String>,
    /// The resource after the event; its schema is named in docs/EVENTS.md.
    pub data: serde_json::Value,
}
