//! Refunds of paid orders and the credit notes they issue.
//!
//! `POST /v1/orders/{id}/refund` asks for a refund of some or all of an order's units,
//! under the order's lock: what each line's units are worth is computed then, from
//! what the refunds before it took (pending ones included), so two concurrent refunds
//! can never credit the same unit twice, and the refunds of a line add up to exactly
//! the line once all its units are back (*cumulative rounding*: the first k of n units
//! are worth `round(amount × k / n)`, half up, and a refund of units k+1..k+j is the
//! difference). The saga's worker takes the money back through payments
//! (`POST /v1/refunds`, key `orf_…:refund`), and once payments says it succeeded, issues
//! the credit note (numbered in the credit note series without gaps, as invoices are),
//! restocks the units if asked, and adds the amount to the order's `amount_refunded`
//! (`refunded` once all of it is back), in one transaction.

use std::collections::BTreeMap;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use till_access::business::BusinessProfile;
use till_http::auth::Principal;
use till_http::extract::{ApiJsonOrEmpty, ApiPath, ApiQuery};
use till_http::pagination::{ListParams, Page};
use till_http::unit_of_work::Tx;
use till_http::{ApiError, ErrorCode, Problem};
use till_kit::{BusinessId, Currency, Money};
use time::OffsetDateTime;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::invoices::{InvoiceBody, InvoiceCustomerBody, InvoiceLineBody, SupplierBody};
use crate::quotes::{PlaceOfSupplyBody, QuoteBody, QuoteLineBody, RateGroupBody, TaxBody};
use crate::store::{self, OrderRow, RefundRow};
use crate::{CreditNoteId, InvoiceId, OrderId, OrderRefundId, ProductId};

pub const CREDIT_NOTES_PATH: &str = "/v1/credit_notes";
/// Lines a refund request may name.
pub const REFUND_LINES_MAX: usize = 100;

pub fn routes() -> OpenApiRouter {
    OpenApiRouter::new()
        .routes(routes!(refund_order))
        .routes(routes!(list_credit_notes))
        .routes(routes!(get_credit_note))
        .routes(routes!(get_document))
}

// ---- what units are worth (pure) ----

/// The first `units` of `of` units' share of `amount`, rounded half up (`amount` ≥ 0).
pub fn share(amount: i64, units: u32, of: u32) -> i64 {
    if of == 0 {
        return 0;
    }
    let numerator = i128::from(amount) * i128::from(units) * 2 + i128::from(of);
    i64::try_from(numerator / (2 * i128::from(of))).unwrap_or(i64::MAX)
}

/// What units `before+1 ..= before+units` of a line are worth.
fn slice(amount: i64, before: u32, units: u32, of: u32) -> i64 {
    share(amount, before.saturating_add(units), of).saturating_sub(share(amount, before, of))
}

/// The credit for `units` of `line`, after `before` of its units were credited.
pub fn credit_line(line: &QuoteLineBody, before: u32, units: u32) -> InvoiceLineBody {
    let of = line.quantity;
    let taxes: Vec<TaxBody> =
        line.taxes.iter().map(|tax| TaxBody { amount: slice(tax.amount, before, units, of), ..tax.clone() }).collect();
    let net_amount = slice(line.net_amount, before, units, of);
    let tax_amount = taxes.iter().map(|tax| tax.amount).sum::<i64>();
    InvoiceLineBody {
        description: line.name.clone(),
        sku: line.sku.clone(),
        hsn_code: line.hsn_code.clone(),
        quantity: units,
        unit_amount: line.unit_amount,
        tax_inclusive: line.tax_inclusive,
        category: line.category.clone(),
        rate_bps: line.rate_bps,
        discount_amount: slice(line.discount_amount, before, units, of),
        net_amount,
        taxes,
        tax_amount,
        total_amount: net_amount.saturating_add(tax_amount),
    }
}

/// The lines' totals per rate, as an invoice's breakdown.
pub fn breakdown_of(lines: &[InvoiceLineBody]) -> Vec<RateGroupBody> {
    let mut groups: Vec<RateGroupBody> = Vec::new();
    for line in lines {
        let index =
            match groups.iter().position(|group| group.category == line.category && group.rate_bps == line.rate_bps) {
                Some(index) => index,
                None => {
                    groups.push(RateGroupBody {
                        category: line.category.clone(),
                        rate_bps: line.rate_bps,
                        net_amount: 0,
                        taxes: Vec::new(),
                        tax_amount: 0,
                    });
                    groups.len() - 1
                }
            };
        let group = &mut groups[index];
        group.net_amount = group.net_amount.saturating_add(line.net_amount);
        group.tax_amount = group.tax_amount.saturating_add(line.tax_amount);
        for tax in &line.taxes {
            match group.taxes.iter_mut().find(|seen| seen.kind == tax.kind && seen.share_bps == tax.share_bps) {
                Some(seen) => seen.amount = seen.amount.saturating_add(tax.amount),
                None => group.taxes.push(tax.clone()),
            }
        }
    }
    groups
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AllocationError {
    #[error("the order has no line for this product")]
    NotInOrder { line: usize },
    #[error("only {left} of the product's units are left to refund")]
    TooMany { line: usize, left: u32 },
    #[error("every unit of the order has been refunded or is being refunded")]
    NothingLeft,
}

/// Which units of which order lines a refund takes: each asked `(product, units)` from
/// the product's lines in order, after what earlier refunds took (`taken`, per line);
/// all that is left when nothing is asked for.
pub fn allocate(
    lines: &[QuoteLineBody],
    taken: &[u32],
    asked: Option<&[(ProductId, u32)]>,
) -> Result<BTreeMap<usize, u32>, AllocationError> {
    let left = |index: usize| lines[index].quantity.saturating_sub(taken.get(index).copied().unwrap_or(0));
    let mut allocated: BTreeMap<usize, u32> = BTreeMap::new();
    match asked {
        None => {
            for index in 0..lines.len() {
                if left(index) > 0 {
                    allocated.insert(index, left(index));
                }
            }
        }
        Some(asked) => {
            for (position, (product, units)) in asked.iter().enumerate() {
                let mut wanted = *units;
                let mut found = false;
                for index in (0..lines.len()).filter(|index| lines[*index].product_id == *product) {
                    found = true;
                    let free = left(index).saturating_sub(allocated.get(&index).copied().unwrap_or(0));
                    let take = free.min(wanted);
                    if take > 0 {
                        *allocated.entry(index).or_insert(0) += take;
                        wanted -= take;
                    }
                }
                if !found {
                    return Err(AllocationError::NotInOrder { line: position });
                }
                if wanted > 0 {
                    return Err(AllocationError::TooMany { line: position, left: units - wanted });
                }
            }
        }
    }
    if allocated.is_empty() {
        return Err(AllocationError::NothingLeft);
    }
    Ok(allocated)
}

// ---- the API ----

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefundLineRequest {
    #[schema(value_type = ProductId)]
    pub product_id: String,
    #[schema(minimum = 1, maximum = 1_000_000)]
    pub quantity: i64,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefundOrderRequest {
    /// The units to refund; every unit not yet refunded if left out.
    #[schema(min_items = 1, max_items = 100)]
    pub lines: Option<Vec<RefundLineRequest>>,
    /// Put the units back in stock (products that track inventory). `false` if left out.
    pub restock: Option<bool>,
    /// `duplicate`, `fraudulent` or `requested_by_customer` (the default).
    #[schema(pattern = "^(duplicate|fraudulent|requested_by_customer)$")]
    pub reason: Option<String>,
}

/// A line of a refund: units of one of the order's lines.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RefundLineBody {
    /// The order line's position (0 for the first).
    pub line: usize,
    pub product_id: ProductId,
    pub quantity: u32,
    pub amount: i64,
}

/// A refund line as the refund row keeps it: with the credit its units are worth,
/// fixed when the refund was asked for, which its credit note prints as it is, so that
/// the note always credits exactly what was refunded.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredRefundLine {
    #[serde(flatten)]
    line: RefundLineBody,
    credit: InvoiceLineBody,
}

/// A refund of an order.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct OrderRefundBody {
    pub id: OrderRefundId,
    /// `pending` (with payments), `succeeded` (the credit note is issued) or `failed`.
    pub status: String,
    pub amount: i64,
    pub lines: Vec<RefundLineBody>,
    pub restock: bool,
    pub reason: String,
    /// Payments' refund (`re_…`), once asked for.
    pub refund_id: Option<String>,
    pub credit_note_id: Option<CreditNoteId>,
    pub failure_message: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

impl OrderRefundBody {
    pub fn of(row: &RefundRow) -> Result<OrderRefundBody, ApiError> {
        Ok(OrderRefundBody {
            id: OrderRefundId::from_uuid(row.id),
            status: row.status.clone(),
            amount: row.amount,
            lines: serde_json::from_value(row.lines.clone()).map_err(|error| ApiError::internal(&error))?,
            restock: row.restock,
            reason: row.reason.clone(),
            refund_id: row.refund_id.clone(),
            credit_note_id: row.credit_note_id.map(CreditNoteId::from_uuid),
            failure_message: row.failure_message.clone(),
            created_at: row.created_at,
        })
    }
}

/// Units of each order line that refunds took or are taking (all but the failed).
fn taken_of(refunds: &[RefundRow], lines: usize) -> Result<Vec<u32>, ApiError> {
    let mut taken = vec![0_u32; lines];
    for refund in refunds.iter().filter(|refund| refund.status != "failed") {
        let refund_lines: Vec<RefundLineBody> =
            serde_json::from_value(refund.lines.clone()).map_err(|error| ApiError::internal(&error))?;
        for line in refund_lines {
            if let Some(units) = taken.get_mut(line.line) {
                *units = units.saturating_add(line.quantity);
            }
        }
    }
    Ok(taken)
}

/// Refund a paid order, in full or some of its units: 202 with the order, its refund
/// `pending` while payments takes the money back; the credit note follows.
#[utoipa::path(post, path = "/v1/orders/{id}/refund", tag = "commerce",
    request_body = RefundOrderRequest,
    params(("id" = OrderId, Path),
        ("Idempotency-Key" = String, Header, description = "1–255 printable ASCII characters; makes the request safe to retry.")),
    responses(
        (status = 202, body = crate::orders::OrderBody, description = "The refund is asked for (the order's last `refunds` entry); `order.refunded` and `credit_note.issued` follow."),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json", description = "state_conflict: the order is not paid, or every unit is refunded or being refunded."),
        (status = 422, body = Problem, content_type = "application/problem+json", description = "rule_violated: a product not in the order, more units than are left, or units worth nothing."),
    ),
    security(("bearer" = [])))]
async fn refund_order(
    _principal: Principal,
    mut tx: Tx,
    ApiPath(id): ApiPath<OrderId>,
    ApiJsonOrEmpty(request): ApiJsonOrEmpty<RefundOrderRequest>,
) -> Result<Response, ApiError> {
    let asked = match &request.lines {
        None => None,
        Some(lines) if lines.is_empty() || lines.len() > REFUND_LINES_MAX => {
            return Err(ApiError::invalid("lines", format!("lines has 1 to {REFUND_LINES_MAX} entries.")))
        }
        Some(lines) => {
            let mut asked = Vec::with_capacity(lines.len());
            for (index, line) in lines.iter().enumerate() {
                let product = ProductId::parse(&line.product_id).map_err(|_| {
                    ApiError::invalid(format!("lines[{index}].product_id"), "product_id is a product's id, prod_….")
                })?;
                let units =
                    u32::try_from(line.quantity).ok().filter(|units| (1..=1_000_000).contains(units)).ok_or_else(
                        || ApiError::invalid(format!("lines[{index}].quantity"), "quantity is 1 to 1000000."),
                    )?;
                asked.push((product, units));
            }
            Some(asked)
        }
    };
    let reason = match request.reason.as_deref() {
        None => "requested_by_customer",
        Some(reason @ ("duplicate" | "fraudulent" | "requested_by_customer")) => reason,
        Some(_) => {
            return Err(ApiError::invalid("reason", "reason is duplicate, fraudulent or requested_by_customer."))
        }
    };
    let order = store::lock_order(&mut tx, id.as_uuid()).await?.ok_or_else(|| ApiError::not_found("order"))?;
    if order.status != "paid" {
        return Err(ApiError::new(
            ErrorCode::StateConflict,
            format!("The order is {}; only a paid order is refunded.", order.status),
        ));
    }
    let quote = crate::orders::quote_of(&mut tx, &order).await?;
    let refunds = store::refunds_of_order(&mut tx, order.id).await?;
    let taken = taken_of(&refunds, quote.lines.len())?;
    let allocated = allocate(&quote.lines, &taken, asked.as_deref()).map_err(|error| match error {
        AllocationError::NotInOrder { line } => {
            ApiError::rule(format!("lines[{line}].product_id"), format!("{error}."))
        }
        AllocationError::TooMany { line, .. } => ApiError::rule(format!("lines[{line}].quantity"), format!("{error}.")),
        AllocationError::NothingLeft => ApiError::new(ErrorCode::StateConflict, format!("{error}.")),
    })?;
    let mut lines = Vec::with_capacity(allocated.len());
    let mut amount = 0_i64;
    for (index, units) in &allocated {
        let credit = credit_line(&quote.lines[*index], taken[*index], *units);
        amount = amount.saturating_add(credit.total_amount);
        let line = RefundLineBody {
            line: *index,
            product_id: quote.lines[*index].product_id,
            quantity: *units,
            amount: credit.total_amount,
        };
        lines.push(StoredRefundLine { line, credit });
    }
    if amount < 1 {
        return Err(ApiError::rule("lines", "These units are worth nothing: there is nothing to refund."));
    }
    let refund = OrderRefundId::generate();
    let lines_json = serde_json::to_value(&lines).map_err(|error| ApiError::internal(&error))?;
    store::insert_refund(
        &mut tx,
        &store::NewRefund {
            id: refund.as_uuid(),
            business: order.business_id,
            order: order.id,
            lines: &lines_json,
            amount,
            restock: request.restock.unwrap_or(false),
            reason,
        },
    )
    .await?;
    let asked_for = format!("{refund} asked for: {}", Money::from_minor(amount, quote.currency));
    store::add_order_step(&mut tx, &order, "refund", "retrying", &asked_for).await?;
    crate::saga::wake(&mut tx).await?;
    let body = crate::orders::body_of(&mut tx, &order).await?;
    Ok((StatusCode::ACCEPTED, axum::Json(body)).into_response())
}

/// A credit note, as issued: it credits part or all of an invoice.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CreditNoteBody {
    pub id: CreditNoteId,
    /// Sequential without gaps in the credit note series (per financial year in India).
    pub number: String,
    pub series: String,
    pub order_id: OrderId,
    /// The invoice it credits.
    pub invoice_id: InvoiceId,
    pub invoice_number: String,
    pub refund: OrderRefundId,
    pub currency: Currency,
    #[serde(with = "time::serde::rfc3339")]
    pub issued_at: OffsetDateTime,
    pub reason: String,
    pub supplier: SupplierBody,
    pub customer: InvoiceCustomerBody,
    pub place_of_supply: Option<PlaceOfSupplyBody>,
    /// The units credited, with what they were worth on the invoice.
    pub lines: Vec<InvoiceLineBody>,
    pub breakdown: Vec<RateGroupBody>,
    pub net_total: i64,
    pub tax_total: i64,
    pub total: i64,
    /// Payments' refund that gave the money back.
    pub refund_id: String,
}

/// What issuing a credit note needs besides the transaction.
pub struct CreditIssue<'a> {
    pub business: BusinessId,
    pub profile: &'a BusinessProfile,
    pub settings: &'a store::SettingsRow,
    pub order: &'a OrderRow,
    pub quote: &'a QuoteBody,
    pub invoice: &'a InvoiceBody,
    pub refund: &'a RefundRow,
    pub refund_id: &'a str,
}

/// Issues the refund's credit note with the next number of the credit note series, and
/// announces it.
pub async fn issue(
    connection: &mut PgConnection,
    issue: &CreditIssue<'_>,
) -> Result<CreditNoteBody, crate::invoices::IssueError> {
    let stored: Vec<StoredRefundLine> = serde_json::from_value(issue.refund.lines.clone())?;
    let lines: Vec<InvoiceLineBody> = stored.into_iter().map(|line| line.credit).collect();
    let now = OffsetDateTime::now_utc().replace_nanosecond(0).unwrap_or_else(|_| OffsetDateTime::now_utc());
    let country = issue.profile.country;
    let series = issue.settings.credit_note_series.clone();
    let period = crate::invoices::period_of(country, crate::invoices::local_date(country, now));
    let sequence = store::next_sequence(&mut *connection, issue.business, "credit_note", &series, period).await?;
    let number = crate::invoices::document_number(country, &series, period, sequence)?;
    let id = CreditNoteId::generate();
    let net_total = lines.iter().map(|line| line.net_amount).sum::<i64>();
    let tax_total = lines.iter().map(|line| line.tax_amount).sum::<i64>();
    let body = CreditNoteBody {
        id,
        number,
        series: series.clone(),
        order_id: OrderId::from_uuid(issue.order.id),
        invoice_id: issue.invoice.id,
        invoice_number: issue.invoice.number.clone(),
        refund: OrderRefundId::from_uuid(issue.refund.id),
        currency: issue.quote.currency,
        issued_at: now,
        reason: issue.refund.reason.clone(),
        supplier: issue.invoice.supplier.clone(),
        customer: issue.invoice.customer.clone(),
        place_of_supply: issue.invoice.place_of_supply.clone(),
        breakdown: breakdown_of(&lines),
        lines,
        net_total,
        tax_total,
        total: net_total.saturating_add(tax_total),
        refund_id: issue.refund_id.to_string(),
    };
    let json = serde_json::to_value(&body)?;
    store::insert_credit_note(
        &mut *connection,
        &store::NewCreditNote {
            id: id.as_uuid(),
            business: issue.business,
            order: issue.order.id,
            invoice: issue.invoice.id.as_uuid(),
            refund: issue.refund.id,
            series: &series,
            period,
            sequence,
            number: &body.number,
            currency: issue.quote.currency.code(),
            net_total: body.net_total,
            tax_total: body.tax_total,
            total: body.total,
            body: &json,
            issued_at: now,
        },
    )
    .await?;
    store::announce(
        connection,
        issue.business.as_uuid(),
        id.to_string(),
        1,
        now,
        till_outbox::EventType::CreditNoteIssued,
        &body,
    )
    .await
    .map_err(|error| match error {
        till_outbox::AnnounceError::Database(error) => crate::invoices::IssueError::Database(error),
        till_outbox::AnnounceError::Encode(error) => crate::invoices::IssueError::Encode(error),
    })?;
    Ok(body)
}

async fn find(connection: &mut PgConnection, id: CreditNoteId) -> Result<CreditNoteBody, ApiError> {
    let body =
        store::find_credit_note(connection, id.as_uuid()).await?.ok_or_else(|| ApiError::not_found("credit note"))?;
    serde_json::from_value(body).map_err(|error| ApiError::internal(&error))
}

/// Retrieve a credit note as issued.
#[utoipa::path(get, path = "/v1/credit_notes/{id}", tag = "commerce", params(("id" = CreditNoteId, Path)),
    responses((status = 200, body = CreditNoteBody), (status = 404, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
async fn get_credit_note(
    _principal: Principal,
    mut tx: Tx,
    ApiPath(id): ApiPath<CreditNoteId>,
) -> Result<axum::Json<CreditNoteBody>, ApiError> {
    Ok(axum::Json(find(&mut tx, id).await?))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct CreditNoteListParams {
    /// Page size, 1 to 100 (default 20).
    pub limit: Option<u32>,
    /// The id of the last credit note of the previous page.
    pub starting_after: Option<String>,
}

/// List credit notes, newest first.
#[utoipa::path(get, path = "/v1/credit_notes", tag = "commerce", params(CreditNoteListParams),
    responses((status = 200, body = Page<CreditNoteBody>), (status = 400, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
async fn list_credit_notes(
    principal: Principal,
    mut tx: Tx,
    ApiQuery(params): ApiQuery<CreditNoteListParams>,
) -> Result<axum::Json<Page<CreditNoteBody>>, ApiError> {
    let page = ListParams { limit: params.limit, starting_after: params.starting_after }
        .page(|text| CreditNoteId::parse(text).ok())?;
    let bodies = store::list_credit_notes(
        &mut tx,
        principal.business_id,
        page.starting_after.map(|id| id.as_uuid()),
        page.fetch_limit(),
    )
    .await?
    .into_iter()
    .map(|body| serde_json::from_value(body).map_err(|error| ApiError::internal(&error)))
    .collect::<Result<Vec<CreditNoteBody>, ApiError>>()?;
    Ok(axum::Json(Page::from_rows(bodies, page.limit, |body| body.id.to_string())))
}

/// The credit note as a printable HTML page.
#[utoipa::path(get, path = "/v1/credit_notes/{id}/document", tag = "commerce", params(("id" = CreditNoteId, Path)),
    responses((status = 200, content_type = "text/html", body = String, description = "A self-contained HTML page."),
        (status = 404, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
async fn get_document(
    _principal: Principal,
    mut tx: Tx,
    ApiPath(id): ApiPath<CreditNoteId>,
) -> Result<Response, ApiError> {
    let note = find(&mut tx, id).await?;
    let html = crate::document::render(&crate::document::Printable::of_credit_note(&note));
    let mut response = (StatusCode::OK, html).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(product: ProductId, quantity: u32, net: i64, tax: i64) -> QuoteLineBody {
        QuoteLineBody {
            product_id: product,
            sku: String::from("MUG"),
            name: String::from("Mug"),
            hsn_code: None,
            quantity,
            unit_amount: 0,
            tax_inclusive: false,
            category: String::from("standard"),
            rate_bps: Some(2000),
            gross_amount: net,
            discount_amount: 0,
            net_amount: net,
            taxes: vec![TaxBody { kind: String::from("vat"), rate_bps: 2000, share_bps: 10_000, amount: tax }],
            tax_amount: tax,
            total_amount: net + tax,
        }
    }

    #[test]
    fn shares_round_half_up() {
        assert_eq!(share(1000, 1, 3), 333);
        assert_eq!(share(1000, 2, 3), 667);
        assert_eq!(share(1000, 3, 3), 1000);
        assert_eq!(share(5, 1, 2), 3);
        assert_eq!(share(0, 1, 2), 0);
    }

    #[test]
    fn refunds_of_a_line_one_unit_at_a_time_add_up_to_the_line() {
        let product = ProductId::generate();
        // 3 units with a discounted net of 1000 and VAT 200: no unit is worth a whole penny share.
        let quoted = line(product, 3, 1000, 200);
        let credits: Vec<InvoiceLineBody> = (0..3).map(|before| credit_line(&quoted, before, 1)).collect();
        assert_eq!(credits.iter().map(|credit| credit.net_amount).collect::<Vec<_>>(), [333, 334, 333]);
        assert_eq!(credits.iter().map(|credit| credit.tax_amount).collect::<Vec<_>>(), [67, 66, 67]);
        assert_eq!(credits.iter().map(|credit| credit.total_amount).sum::<i64>(), 1200);
        let all = credit_line(&quoted, 0, 3);
        assert_eq!((all.net_amount, all.tax_amount, all.total_amount), (1000, 200, 1200));
    }

    #[test]
    fn units_are_allocated_from_what_is_left() {
        let (mug, cup) = (ProductId::generate(), ProductId::generate());
        let lines = vec![line(mug, 2, 100, 20), line(cup, 1, 50, 10), line(mug, 3, 100, 20)];
        // Everything left, after a refund that took one mug of the first line.
        assert_eq!(allocate(&lines, &[1, 0, 0], None), Ok(BTreeMap::from([(0, 1), (1, 1), (2, 3)])));
        // Four mugs: one left on the first line, three from the third.
        assert_eq!(allocate(&lines, &[1, 0, 0], Some(&[(mug, 4)])), Ok(BTreeMap::from([(0, 1), (2, 3)])));
        assert_eq!(allocate(&lines, &[1, 0, 0], Some(&[(mug, 5)])), Err(AllocationError::TooMany { line: 0, left: 4 }));
        assert_eq!(
            allocate(&lines, &[0, 0, 0], Some(&[(cup, 1), (ProductId::generate(), 1)])),
            Err(AllocationError::NotInOrder { line: 1 })
        );
        assert_eq!(allocate(&lines, &[2, 1, 3], None), Err(AllocationError::NothingLeft));
    }

    #[test]
    fn a_breakdown_sums_its_lines_per_rate() {
        let product = ProductId::generate();
        let lines = vec![credit_line(&line(product, 1, 100, 20), 0, 1), credit_line(&line(product, 2, 300, 60), 0, 1)];
        let groups = breakdown_of(&lines);
        assert_eq!(groups.len(), 1);
        assert_eq!((groups[0].net_amount, groups[0].tax_amount, groups[0].taxes[0].amount), (250, 50, 50));
    }
}
