//! The commerce service: what a small business sells, how much of it it has, and what a
//! sale of it costs with its tax.
//!
//! - [`catalog`]: products, SKUs, prices and tax treatments, checked against the seller's
//!   country before anything is stored (pure).
//! - [`coupons`]: `/v1/coupons`: order discounts behind a code, with a window and a limit.
//! - [`products`]: the `/v1/products` routes.
//! - [`inventory`]: `/v1/inventory/{sku}`: stock on hand, reserved and available, and
//!   adjustments that the database refuses to take below what is reserved.
//! - [`reservations`]: `/v1/reservations`: stock held for a checkout, all lines or none,
//!   ended once (committed as a sale, released, or expired by the sweeper).
//! - [`quotes`]: `/v1/quotes`: lines priced and taxed by [`till_pricing`], stored as given.
//! - [`checkout`]: `POST /v1/checkouts`: a cart quoted, reserved and made an order.
//! - [`saga`]: the checkout saga that takes the order's payment (authorise, capture)
//!   through [`payment_intents`] and ends it paid with its invoice, or compensated.
//! - [`orders`]: `/v1/orders`: the order, its saga's steps, and its cancellation.
//! - [`invoices`]: numbering without gaps, issuing, `/v1/invoices` and the settings;
//!   [`links`]: the sealed links customers open an invoice with (`/v1/invoice_documents`);
//!   [`document`]: an invoice or a credit note as a printable page.
//! - [`reports`]: the UK VAT return's boxes and India's GSTR-1, from the documents.
//! - [`credit_notes`]: `POST /v1/orders/{id}/refund`, what units are worth when they
//!   come back, and the credit notes that credit them.
//! - [`store`]: the schema's SQL. [`service`]: the registration.

pub mod catalog;
pub mod checkout;
pub mod coupons;
pub mod credit_notes;
pub mod document;
pub mod inventory;
pub mod invoices;
pub mod links;
pub mod orders;
pub mod payment_intents;
pub mod products;
pub mod quotes;
pub mod reports;
pub mod reservations;
pub mod saga;
pub mod service;
pub mod store;

/// How the commerce service's jobs run, provided by the composition root.
#[derive(Debug, Clone)]
pub struct CommerceConfig {
    pub saga: saga::SagaConfig,
    /// This Till as customers reach it (`TILL_PUBLIC_URL`): invoices' `document_url`.
    pub public_url: String,
}

impl Default for CommerceConfig {
    fn default() -> CommerceConfig {
        CommerceConfig { saga: saga::SagaConfig::default(), public_url: String::from("http://127.0.0.1:8080") }
    }
}

pub static MIGRATIONS: till_db::SchemaMigrations =
    till_db::SchemaMigrations { schema: "commerce", migrator: &MIGRATOR };
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

till_kit::typed_id!(ProductId, "prod", "product", "Something a business sells, by its SKU.");
till_kit::typed_id!(QuoteId, "qt", "quote", "Lines priced and taxed for a buyer, as the engine gave them.");
till_kit::typed_id!(
    MovementId,
    "mov",
    "stock movement",
    "One change to a SKU's stock: an adjustment, a sale or a restock."
);
till_kit::typed_id!(
    ReservationId,
    "rsv",
    "reservation",
    "Stock held for a checkout until it is paid, released or expires."
);
till_kit::typed_id!(
    CouponId,
    "cpn",
    "coupon",
    "An order discount behind a code, with a validity window and a redemption limit."
);
till_kit::typed_id!(OrderId, "ord", "order", "A checkout's order, from its reservation to its payment and invoice.");
till_kit::typed_id!(
    InvoiceId,
    "inv",
    "invoice",
    "An invoice issued for a paid order, numbered in its series without gaps."
);
till_kit::typed_id!(
    OrderRefundId,
    "orf",
    "order refund",
    "A refund of some or all of a paid order's units, and its credit note."
);
till_kit::typed_id!(
    CreditNoteId,
    "cn",
    "credit note",
    "A credit note: part or all of an invoice credited after a refund."
);
