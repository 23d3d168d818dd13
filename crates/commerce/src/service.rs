//! The commerce service's registration: its schema and outbox, and the catalog,
//! inventory, quote, checkout, order and invoice routes, and the reservation sweeper
//! and checkout saga jobs.

use axum::http::Method;
use till_http::auth::{Access, Role, RoutePermission};
use till_http::service::{Context, Job, MountError, Mounted, Service};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

pub static SERVICE: Service = Service {
    name: "commerce",
    migrations: &crate::MIGRATIONS,
    outbox: Some(crate::store::OUTBOX),
    permissions,
    mount,
};

#[derive(OpenApi)]
#[openapi(
    components(schemas(crate::products::ProductBody, crate::inventory::InventoryBody, crate::inventory::AdjustmentBody, crate::reservations::ReservationBody, crate::coupons::CouponBody, crate::quotes::QuoteBody, crate::orders::OrderBody, crate::invoices::InvoiceBody, crate::invoices::InvoiceSettingsBody, crate::credit_notes::CreditNoteBody, crate::reports::VatReturnBody, crate::reports::Gstr1Body)),
    tags((name = "commerce", description = "The catalog (products with their SKU, tax treatment and prices), stock that cannot be oversold, reservations, coupons, quotes priced and taxed for UK VAT and India GST, checkouts whose saga takes the payment, orders, and invoices numbered without gaps.")),
)]
struct Doc;

fn mount(context: &mut Context) -> Result<Mounted, MountError> {
    let pool = context.pool.clone();
    let sweeper = crate::reservations::SweeperConfig::default();
    let internal: till_http::internal::Internal = context.require("commerce")?;
    let payments = crate::payment_intents::PaymentIntents::new(internal);
    let config: crate::CommerceConfig = context.require("commerce")?;
    let saga = config.saga;
    let saga_pool = context.pool.clone();
    let links = crate::links::DocumentLinks::new(context.keyring.clone(), &config.public_url);
    let saga_links = links.clone();
    Ok(Mounted {
        tenant_routes: OpenApiRouter::with_openapi(Doc::openapi())
            .merge(crate::products::routes())
            .merge(crate::inventory::routes())
            .merge(crate::reservations::routes())
            .merge(crate::coupons::routes())
            .merge(crate::quotes::routes())
            .merge(crate::checkout::routes())
            .merge(crate::orders::routes())
            .merge(crate::invoices::routes(links.clone()))
            .merge(crate::credit_notes::routes())
            .merge(crate::reports::routes()),
        jobs: vec![
            Job::new("reservation sweeper", move |shutdown| crate::reservations::sweep(pool, sweeper, shutdown)),
            Job::new("checkout saga", move |shutdown| {
                crate::saga::run(saga_pool, payments, saga, saga_links, shutdown)
            }),
        ],
        // A customer opens an invoice by its link: no Till credentials, the sealed token.
        provider_routes: crate::invoices::document_routes(links, context.pool.clone()),
        ..Mounted::default()
    })
}

/// Viewers read; finance keeps the catalog and the stock, and quotes.
fn permissions() -> Vec<RoutePermission> {
    let row = |method, path, role| RoutePermission { method, path, access: Access::Role(role) };
    vec![
        row(Method::POST, crate::products::PRODUCTS_PATH, Role::Finance),
        row(Method::GET, crate::products::PRODUCTS_PATH, Role::Viewer),
        row(Method::GET, "/v1/products/{id}", Role::Viewer),
        row(Method::PATCH, "/v1/products/{id}", Role::Finance),
        row(Method::GET, "/v1/inventory/{sku}", Role::Viewer),
        row(Method::POST, "/v1/inventory/{sku}/adjustments", Role::Finance),
        row(Method::GET, "/v1/inventory/{sku}/movements", Role::Viewer),
        row(Method::POST, crate::reservations::RESERVATIONS_PATH, Role::Finance),
        row(Method::GET, crate::reservations::RESERVATIONS_PATH, Role::Viewer),
        row(Method::GET, "/v1/reservations/{id}", Role::Viewer),
        row(Method::POST, "/v1/reservations/{id}/commit", Role::Finance),
        row(Method::POST, "/v1/reservations/{id}/release", Role::Finance),
        row(Method::POST, crate::coupons::COUPONS_PATH, Role::Finance),
        row(Method::GET, crate::coupons::COUPONS_PATH, Role::Viewer),
        row(Method::GET, "/v1/coupons/{id}", Role::Viewer),
        row(Method::PATCH, "/v1/coupons/{id}", Role::Finance),
        row(Method::POST, crate::quotes::QUOTES_PATH, Role::Finance),
        row(Method::GET, "/v1/quotes/{id}", Role::Viewer),
        row(Method::POST, crate::checkout::CHECKOUTS_PATH, Role::Finance),
        row(Method::GET, "/v1/orders", Role::Viewer),
        row(Method::GET, "/v1/orders/{id}", Role::Viewer),
        row(Method::POST, "/v1/orders/{id}/cancel", Role::Finance),
        RoutePermission { method: Method::GET, path: crate::links::DOCUMENTS_PATH, access: Access::Provider },
        row(Method::GET, crate::invoices::SETTINGS_PATH, Role::Viewer),
        row(Method::PUT, crate::invoices::SETTINGS_PATH, Role::Admin),
        row(Method::GET, crate::invoices::INVOICES_PATH, Role::Viewer),
        row(Method::GET, "/v1/invoices/{id}", Role::Viewer),
        row(Method::GET, "/v1/invoices/{id}/document", Role::Viewer),
        row(Method::POST, "/v1/orders/{id}/refund", Role::Finance),
        row(Method::GET, crate::credit_notes::CREDIT_NOTES_PATH, Role::Viewer),
        row(Method::GET, "/v1/credit_notes/{id}", Role::Viewer),
        row(Method::GET, "/v1/credit_notes/{id}/document", Role::Viewer),
        row(Method::GET, "/v1/reports/vat_return", Role::Viewer),
        row(Method::GET, "/v1/reports/gstr1", Role::Viewer),
    ]
}
