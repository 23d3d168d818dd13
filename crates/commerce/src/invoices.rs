//! Invoices: issued in the transaction that makes an order `paid`, numbered without
//! gaps per business and series, and never changed afterwards.
//!
//! A number is taken by incrementing the series' counter row (`commerce.document_counters`,
//! [`store::next_sequence`])
//! in that same transaction: concurrent checkouts queue on the row's lock, and a
//! transaction that rolls back takes its increment with it, so every number is used
//! once and none is skipped. India numbers restart each financial year (1 April) and
//! are at most 16 characters of letters, digits, `-` and `/` (CGST Rule 46(b)); UK
//! numbers run on within their series (VAT Regulations 1995 reg. 14(1)(a)).
//!
//! What an invoice shows is what the law asks of it: the UK full VAT invoice (reg. 14:
//! number, date, time of supply, supplier's name, address and VAT number, customer's
//! name and address, each line's description, quantity, unit price, rate and net
//! amount, VAT per rate and the totals) or the simplified one at £250 or less (reg. 16);
//! India's tax invoice (Rule 46: supplier's and a registered recipient's GSTIN, HSN per
//! line, taxable value, each tax's rate and amount, place of supply with its state's name
//! and code), or a bill of supply from a seller without GSTIN.

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use till_access::business::BusinessProfile;
use till_access::domain::{Country, TaxRegistration};
use till_http::auth::Principal;
use till_http::extract::{ApiJson, ApiPath, ApiQuery};
use till_http::pagination::{ListParams, Page};
use till_http::unit_of_work::Tx;
use till_http::{ApiError, Problem};
use till_kit::{BusinessId, Currency, HumanText, Money};
use time::{Date, Month, OffsetDateTime};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::links::DocumentLinks;
use crate::quotes::{PlaceOfSupplyBody, QuoteBody, RateGroupBody, TaxBody};
use crate::store::{self, SettingsRow};
use crate::{InvoiceId, OrderId};

pub const SETTINGS_PATH: &str = "/v1/invoice_settings";
pub const INVOICES_PATH: &str = "/v1/invoices";
/// Lines of an address.
pub const ADDRESS_LINES_MAX: usize = 6;
/// The most an India invoice number may be (CGST Rule 46(b)).
pub const INDIA_NUMBER_CHARS_MAX: usize = 16;
/// A UK simplified invoice is for a supply of at most £250 including VAT (reg. 16).
pub const SIMPLIFIED_TOTAL_MAX_PENCE: i64 = 25_000;

pub fn routes(links: DocumentLinks) -> OpenApiRouter {
    OpenApiRouter::new()
        .routes(routes!(get_settings, put_settings))
        .routes(routes!(list_invoices))
        .routes(routes!(get_invoice))
        .routes(routes!(get_document))
        .with_state(links)
}

/// The customer's door: `/v1/invoice_documents/{token}`.
pub fn document_routes(links: DocumentLinks, pool: sqlx::PgPool) -> OpenApiRouter {
    OpenApiRouter::new().routes(routes!(shared_document)).with_state(SharedDocuments { links, pool })
}

#[derive(Clone)]
struct SharedDocuments {
    links: DocumentLinks,
    pool: sqlx::PgPool,
}

/// An invoice's printable page, for its customer: the token of its `document_url` is the
/// credential. Any token that is not a live link of this Till is a 404, whatever is
/// wrong with it.
#[utoipa::path(get, path = "/v1/invoice_documents/{token}", tag = "commerce",
    params(("token" = String, Path, description = "The sealed token of an invoice's `document_url`.")),
    responses((status = 200, content_type = "text/html", body = String, description = "A self-contained HTML page (no scripts, no outside resources)."),
        (status = 404, body = Problem, content_type = "application/problem+json", description = "Not a link this Till made, or expired.")))]
async fn shared_document(
    axum::extract::State(shared): axum::extract::State<SharedDocuments>,
    axum::extract::Path(token): axum::extract::Path<String>,
) -> Result<Response, ApiError> {
    let (business, id) =
        shared.links.open(&token, OffsetDateTime::now_utc()).ok_or_else(|| ApiError::not_found("invoice document"))?;
    let mut transaction = till_db::begin_tenant(&shared.pool, business).await?;
    let invoice = find_invoice(&mut transaction, id).await?;
    transaction.commit().await?;
    let html = crate::document::render(&crate::document::Printable::of_invoice(&invoice));
    let mut response = (StatusCode::OK, html).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    // The token is the credential: keep it out of caches and of the next site's Referer.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("private, no-store"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    Ok(response)
}

// ---- numbering (pure) ----

/// The financial year a date falls in, India's way: the year it started in (1 April).
pub fn financial_year(date: Date) -> i32 {
    if date.month() >= Month::April {
        date.year()
    } else {
        date.year().saturating_sub(1)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NumberingError {
    #[error("series {series} has used every number that fits in 16 characters this financial year")]
    SeriesFull { series: String },
}

/// The number of the `sequence`th document of `series`. UK: `INV-000042`. India:
/// `INV/2026-27/0042`, or `INV/2627/12345` once the long form would pass 16 characters.
pub fn document_number(country: Country, series: &str, period: i32, sequence: i64) -> Result<String, NumberingError> {
    match country {
        Country::GB => Ok(format!("{series}-{sequence:06}")),
        Country::IN => {
            let next = (period.rem_euclid(100) + 1) % 100;
            let long = format!("{series}/{period}-{next:02}/{sequence:04}");
            if long.chars().count() <= INDIA_NUMBER_CHARS_MAX {
                return Ok(long);
            }
            let short = format!("{series}/{:02}{next:02}/{sequence:04}", period.rem_euclid(100));
            if short.chars().count() <= INDIA_NUMBER_CHARS_MAX {
                return Ok(short);
            }
            Err(NumberingError::SeriesFull { series: series.to_string() })
        }
    }
}

/// The date of `at` where the seller is: the UK's (with BST) or India's (UTC+05:30).
pub fn local_date(country: Country, at: OffsetDateTime) -> Date {
    match country {
        Country::GB => till_pricing::calendar::uk_date(at),
        Country::IN => till_pricing::calendar::india_date(at),
    }
}

/// The counter a series counts in: India's restart each financial year; the UK's never.
pub fn period_of(country: Country, date: Date) -> i32 {
    match country {
        Country::GB => 0,
        Country::IN => financial_year(date),
    }
}

// ---- settings ----

/// How the business's invoices are addressed and numbered.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct InvoiceSettingsBody {
    /// The supplier's address, as invoices print it: 1 to 6 lines.
    pub address: Vec<String>,
    /// The prefix of invoice numbers (`INV`: `INV-000001` in the UK, `INV/2026-27/0001`
    /// in India).
    pub invoice_series: String,
    /// The prefix of credit note numbers (`CN`).
    pub credit_note_series: String,
    /// UK: issue a simplified VAT invoice for a sale to a consumer of £250 or less.
    pub simplified_invoices: bool,
    pub version: i32,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

impl InvoiceSettingsBody {
    fn of(row: &SettingsRow) -> InvoiceSettingsBody {
        InvoiceSettingsBody {
            address: row.address.clone(),
            invoice_series: row.invoice_series.clone(),
            credit_note_series: row.credit_note_series.clone(),
            simplified_invoices: row.simplified_invoices,
            version: row.version,
            updated_at: row.updated_at,
        }
    }
}

/// A series prefix, as the schema says it.
pub struct SeriesSchema;

impl utoipa::PartialSchema for SeriesSchema {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .pattern(Some("^[A-Z0-9]{1,6}$"))
            .into()
    }
}

impl utoipa::ToSchema for SeriesSchema {}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutSettingsRequest {
    /// 1 to 6 lines of up to 200 characters.
    #[schema(min_items = 1, max_items = 6, value_type = Vec<till_kit::schema::Name200>)]
    pub address: Vec<String>,
    /// `INV` if left out.
    #[schema(value_type = Option<SeriesSchema>)]
    pub invoice_series: Option<String>,
    /// `CN` if left out; not the invoice series.
    #[schema(value_type = Option<SeriesSchema>)]
    pub credit_note_series: Option<String>,
    /// `false` if left out.
    pub simplified_invoices: Option<bool>,
}

/// Lines of an address, each a name of up to 200 characters.
pub fn address_of(lines: &[String], param: &str) -> Result<Vec<String>, ApiError> {
    if lines.is_empty() || lines.len() > ADDRESS_LINES_MAX {
        return Err(ApiError::invalid(param, format!("{param} has 1 to {ADDRESS_LINES_MAX} lines.")));
    }
    lines
        .iter()
        .enumerate()
        .map(|(index, line)| {
            HumanText::name(line, 200)
                .map(HumanText::into_string)
                .map_err(|refusal| ApiError::text(format!("{param}[{index}]"), refusal))
        })
        .collect()
}

fn series_of(text: Option<&str>, default: &str, param: &str) -> Result<String, ApiError> {
    let series = text.unwrap_or(default);
    let valid = (1..=6).contains(&series.len())
        && series.bytes().all(|byte| byte.is_ascii_uppercase() || byte.is_ascii_digit());
    if valid {
        Ok(series.to_string())
    } else {
        Err(ApiError::invalid(param, format!("{param} is 1 to 6 upper-case letters or digits.")))
    }
}

/// The business's invoice settings.
#[utoipa::path(get, path = "/v1/invoice_settings", tag = "commerce",
    responses((status = 200, body = InvoiceSettingsBody),
        (status = 404, body = Problem, content_type = "application/problem+json", description = "None set yet: a checkout needs them, as an invoice needs the supplier's address.")),
    security(("bearer" = [])))]
async fn get_settings(principal: Principal, mut tx: Tx) -> Result<axum::Json<InvoiceSettingsBody>, ApiError> {
    let row = store::find_settings(&mut tx, principal.business_id)
        .await?
        .ok_or_else(|| ApiError::not_found("invoice settings"))?;
    Ok(axum::Json(InvoiceSettingsBody::of(&row)))
}

/// Set how invoices are addressed and numbered. Send `If-Match: <version>` to make sure
/// nobody changed them since you read them. A new series starts at 1; an existing one
/// goes on from where it is.
#[utoipa::path(put, path = "/v1/invoice_settings", tag = "commerce",
    request_body = PutSettingsRequest,
    params(("If-Match" = Option<String>, Header, description = "The settings' `version`.")),
    responses((status = 200, body = InvoiceSettingsBody),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 412, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json", description = "rule_violated: the two series are the same.")),
    security(("bearer" = [])))]
async fn put_settings(
    principal: Principal,
    mut tx: Tx,
    headers: HeaderMap,
    ApiJson(request): ApiJson<PutSettingsRequest>,
) -> Result<axum::Json<InvoiceSettingsBody>, ApiError> {
    let address = address_of(&request.address, "address")?;
    let invoice_series = series_of(request.invoice_series.as_deref(), "INV", "invoice_series")?;
    let credit_note_series = series_of(request.credit_note_series.as_deref(), "CN", "credit_note_series")?;
    if invoice_series == credit_note_series {
        return Err(ApiError::rule(
            "credit_note_series",
            "Invoices and credit notes are numbered in different series.",
        ));
    }
    let current = store::lock_settings(&mut tx, principal.business_id).await?;
    // If-Match against settings that do not exist yet: version 0, so any version sent
    // is stale.
    till_http::update::check_if_match(&headers, current.as_ref().map_or(0, |row| row.version), "invoice settings")?;
    let settings = store::NewSettings {
        business: principal.business_id,
        address: &address,
        invoice_series: &invoice_series,
        credit_note_series: &credit_note_series,
        simplified_invoices: request.simplified_invoices.unwrap_or(false),
    };
    let row = store::put_settings(&mut tx, &settings).await?;
    Ok(axum::Json(InvoiceSettingsBody::of(&row)))
}

// ---- the invoice ----

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct StateBody {
    pub code: String,
    pub name: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SupplierBody {
    pub name: String,
    pub address: Vec<String>,
    pub country: String,
    /// UK: the supplier's VAT registration number.
    pub vat_number: Option<String>,
    /// India: the supplier's GSTIN.
    pub gstin: Option<String>,
    /// India: the supplier's state (the GSTIN's first two digits).
    pub state: Option<StateBody>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct InvoiceCustomerBody {
    pub name: String,
    pub address: Vec<String>,
    pub email: String,
    pub country: String,
    /// India: a registered recipient's GSTIN.
    pub gstin: Option<String>,
    /// India: the recipient's state.
    pub state: Option<StateBody>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct InvoiceLineBody {
    pub description: String,
    pub sku: String,
    /// India: the HSN or SAC code.
    pub hsn_code: Option<String>,
    pub quantity: u32,
    /// As the catalog prices it (`tax_inclusive` says whether tax is in it).
    pub unit_amount: i64,
    pub tax_inclusive: bool,
    /// `standard`, `reduced`, `zero_rated`, `exempt`, `gst`, `gst_export` or `not_registered`.
    pub category: String,
    pub rate_bps: Option<u32>,
    pub discount_amount: i64,
    /// The taxable value.
    pub net_amount: i64,
    pub taxes: Vec<TaxBody>,
    pub tax_amount: i64,
    pub total_amount: i64,
}

/// An invoice, as issued. Never changed: a credit note corrects it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct InvoiceBody {
    pub id: InvoiceId,
    /// Sequential without gaps within its series (and, in India, its financial year).
    pub number: String,
    pub series: String,
    /// `vat_invoice` (UK full), `simplified_vat_invoice` (UK, £250 or less),
    /// `invoice` (a UK seller not registered for VAT), `tax_invoice` (India) or
    /// `bill_of_supply` (an India seller without GSTIN).
    pub kind: String,
    pub order_id: OrderId,
    pub currency: Currency,
    #[serde(with = "time::serde::rfc3339")]
    pub issued_at: OffsetDateTime,
    /// The time of supply, which decided the rates.
    #[schema(format = Date)]
    pub tax_point: String,
    pub supplier: SupplierBody,
    pub customer: InvoiceCustomerBody,
    /// India: where the supply is taxed, with its state's name and code.
    pub place_of_supply: Option<PlaceOfSupplyBody>,
    pub lines: Vec<InvoiceLineBody>,
    /// Per rate: the net amount and each tax.
    pub breakdown: Vec<RateGroupBody>,
    pub discount_total: i64,
    pub net_total: i64,
    pub tax_total: i64,
    pub total: i64,
    /// The payment that paid it.
    pub payment_intent_id: String,
    /// The invoice's printable page for its customer, with no Till login: a sealed link
    /// that opens this invoice alone, for 90 days from when this body was made (each read
    /// gives a fresh one; the `invoice.issued` event carries the one made at issue).
    #[serde(default)]
    pub document_url: Option<String>,
}

/// The customer of an order, as stored with it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredCustomer {
    pub name: String,
    pub email: String,
    pub address: Vec<String>,
    pub country: String,
    pub state_code: Option<String>,
    pub gstin: Option<String>,
}

fn state_body(code: Option<&str>) -> Option<StateBody> {
    let state = till_pricing::StateCode::parse(code?).ok()?;
    Some(StateBody { code: state.code(), name: state.name().to_string() })
}

/// What an invoice is called, by who sells to whom and for how much.
fn kind_of(profile: &BusinessProfile, settings: &SettingsRow, quote: &QuoteBody) -> &'static str {
    match (profile.country, &profile.tax_registration) {
        (Country::GB, Some(_)) => {
            let small = quote.currency.code() == "GBP" && quote.total <= SIMPLIFIED_TOTAL_MAX_PENCE;
            if settings.simplified_invoices && small && quote.buyer.r#type == "consumer" {
                "simplified_vat_invoice"
            } else {
                "vat_invoice"
            }
        }
        (Country::GB, None) => "invoice",
        (Country::IN, Some(_)) => "tax_invoice",
        (Country::IN, None) => "bill_of_supply",
    }
}

/// What issuing needs besides the transaction.
pub struct Issue<'a> {
    pub business: BusinessId,
    pub order: OrderId,
    pub profile: &'a BusinessProfile,
    pub settings: &'a SettingsRow,
    pub quote: &'a QuoteBody,
    pub customer: &'a StoredCustomer,
    pub payment_intent_id: &'a str,
    pub links: &'a crate::links::DocumentLinks,
}

#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Numbering(#[from] NumberingError),
    #[error("encoding the invoice: {0}")]
    Encode(#[from] serde_json::Error),
}

/// Issues the order's invoice in `connection`'s transaction, with the next number of
/// the business's invoice series, and announces it.
pub async fn issue(connection: &mut PgConnection, issue: &Issue<'_>) -> Result<InvoiceBody, IssueError> {
    let quote = issue.quote;
    let country = issue.profile.country;
    let series = issue.settings.invoice_series.clone();
    // To the second, as the stored body is read back.
    let now = OffsetDateTime::now_utc().replace_nanosecond(0).unwrap_or_else(|_| OffsetDateTime::now_utc());
    // The financial year is the invoice's, by its date of issue where the seller is.
    let period = period_of(country, local_date(country, now));
    let sequence = store::next_sequence(&mut *connection, issue.business, "invoice", &series, period).await?;
    let number = document_number(country, &series, period, sequence)?;
    let (vat_number, gstin, supplier_state) = match &issue.profile.tax_registration {
        Some(TaxRegistration::UkVat(number)) => (Some(number.as_str().to_string()), None, None),
        Some(TaxRegistration::Gst(gstin)) => {
            (None, Some(gstin.as_str().to_string()), state_body(Some(gstin.state_code())))
        }
        None => (None, None, None),
    };
    let id = InvoiceId::generate();
    let body = InvoiceBody {
        id,
        number,
        series: series.clone(),
        kind: kind_of(issue.profile, issue.settings, quote).to_string(),
        order_id: issue.order,
        currency: quote.currency,
        issued_at: now,
        tax_point: quote.tax_point.clone(),
        supplier: SupplierBody {
            name: issue.profile.legal_name.clone(),
            address: issue.settings.address.clone(),
            country: country.code().to_string(),
            vat_number,
            gstin,
            state: supplier_state,
        },
        customer: InvoiceCustomerBody {
            name: issue.customer.name.clone(),
            address: issue.customer.address.clone(),
            email: issue.customer.email.clone(),
            country: issue.customer.country.clone(),
            gstin: issue.customer.gstin.clone(),
            state: state_body(issue.customer.state_code.as_deref()),
        },
        place_of_supply: quote.place_of_supply.clone(),
        lines: quote
            .lines
            .iter()
            .map(|line| InvoiceLineBody {
                description: line.name.clone(),
                sku: line.sku.clone(),
                hsn_code: line.hsn_code.clone(),
                quantity: line.quantity,
                unit_amount: line.unit_amount,
                tax_inclusive: line.tax_inclusive,
                category: line.category.clone(),
                rate_bps: line.rate_bps,
                discount_amount: line.discount_amount,
                net_amount: line.net_amount,
                taxes: line.taxes.clone(),
                tax_amount: line.tax_amount,
                total_amount: line.total_amount,
            })
            .collect(),
        breakdown: quote.breakdown.clone(),
        discount_total: quote.discount_total,
        net_total: quote.net_total,
        tax_total: quote.tax_total,
        total: quote.total,
        payment_intent_id: issue.payment_intent_id.to_string(),
        document_url: Some(issue.links.url(issue.business, id, now)),
    };
    let json = serde_json::to_value(&body)?;
    store::insert_invoice(
        &mut *connection,
        &store::NewInvoice {
            id: id.as_uuid(),
            business: issue.business,
            order: issue.order.as_uuid(),
            series: &series,
            period,
            sequence,
            number: &body.number,
            currency: quote.currency.code(),
            net_total: quote.net_total,
            tax_total: quote.tax_total,
            total: quote.total,
            body: &json,
            issued_at: now,
        },
    )
    .await?;
    crate::store::announce(
        connection,
        issue.business.as_uuid(),
        id.to_string(),
        1,
        now,
        till_outbox::EventType::InvoiceIssued,
        &body,
    )
    .await
    .map_err(|error| match error {
        till_outbox::AnnounceError::Database(error) => IssueError::Database(error),
        till_outbox::AnnounceError::Encode(error) => IssueError::Encode(error),
    })?;
    Ok(body)
}

async fn find_invoice(connection: &mut PgConnection, id: InvoiceId) -> Result<InvoiceBody, ApiError> {
    let body = store::find_invoice(connection, id.as_uuid()).await?.ok_or_else(|| ApiError::not_found("invoice"))?;
    serde_json::from_value(body).map_err(|error| ApiError::internal(&error))
}

/// Retrieve an invoice as issued.
#[utoipa::path(get, path = "/v1/invoices/{id}", tag = "commerce", params(("id" = InvoiceId, Path)),
    responses((status = 200, body = InvoiceBody), (status = 404, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
async fn get_invoice(
    principal: Principal,
    axum::extract::State(links): axum::extract::State<DocumentLinks>,
    mut tx: Tx,
    ApiPath(id): ApiPath<InvoiceId>,
) -> Result<axum::Json<InvoiceBody>, ApiError> {
    let mut invoice = find_invoice(&mut tx, id).await?;
    invoice.document_url = Some(links.url(principal.business_id, invoice.id, OffsetDateTime::now_utc()));
    Ok(axum::Json(invoice))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct InvoiceListParams {
    /// Page size, 1 to 100 (default 20).
    pub limit: Option<u32>,
    /// The id of the last invoice of the previous page.
    pub starting_after: Option<String>,
}

/// List invoices, newest first.
#[utoipa::path(get, path = "/v1/invoices", tag = "commerce", params(InvoiceListParams),
    responses((status = 200, body = Page<InvoiceBody>), (status = 400, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
async fn list_invoices(
    principal: Principal,
    axum::extract::State(links): axum::extract::State<DocumentLinks>,
    mut tx: Tx,
    ApiQuery(params): ApiQuery<InvoiceListParams>,
) -> Result<axum::Json<Page<InvoiceBody>>, ApiError> {
    let page = ListParams { limit: params.limit, starting_after: params.starting_after }
        .page(|text| InvoiceId::parse(text).ok())?;
    let bodies = store::list_invoices(
        &mut tx,
        principal.business_id,
        page.starting_after.map(|id| id.as_uuid()),
        page.fetch_limit(),
    )
    .await?;
    let now = OffsetDateTime::now_utc();
    let bodies = bodies
        .into_iter()
        .map(|body| {
            let mut invoice: InvoiceBody = serde_json::from_value(body).map_err(|error| ApiError::internal(&error))?;
            invoice.document_url = Some(links.url(principal.business_id, invoice.id, now));
            Ok(invoice)
        })
        .collect::<Result<Vec<InvoiceBody>, ApiError>>()?;
    Ok(axum::Json(Page::from_rows(bodies, page.limit, |body| body.id.to_string())))
}

/// The invoice as a printable HTML page.
#[utoipa::path(get, path = "/v1/invoices/{id}/document", tag = "commerce", params(("id" = InvoiceId, Path)),
    responses((status = 200, content_type = "text/html", body = String, description = "A self-contained HTML page (no scripts, no outside resources)."),
        (status = 404, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
async fn get_document(
    _principal: Principal,
    mut tx: Tx,
    ApiPath(id): ApiPath<InvoiceId>,
) -> Result<Response, ApiError> {
    let invoice = find_invoice(&mut tx, id).await?;
    let html = crate::document::render(&crate::document::Printable::of_invoice(&invoice));
    let mut response = (StatusCode::OK, html).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    Ok(response)
}

/// An amount for print: minor units in the currency's major unit (`12.50`).
pub fn printed(amount: i64, currency: Currency) -> String {
    Money::from_minor(amount, currency).to_decimal_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::date;

    #[test]
    fn the_financial_year_starts_on_the_first_of_april() {
        assert_eq!(financial_year(date!(2026 - 03 - 31)), 2025);
        assert_eq!(financial_year(date!(2026 - 04 - 01)), 2026);
        assert_eq!(financial_year(date!(2027 - 01 - 15)), 2026);
        assert_eq!(period_of(Country::GB, date!(2027 - 01 - 15)), 0);
    }

    #[test]
    fn india_numbers_fit_in_sixteen_characters() {
        assert_eq!(document_number(Country::IN, "INV", 2026, 1), Ok(String::from("INV/2026-27/0001")));
        assert_eq!(document_number(Country::IN, "INV", 2099, 42), Ok(String::from("INV/2099-00/0042")));
        // Past 9 999 the long form would be 17 characters: the year shortens.
        assert_eq!(document_number(Country::IN, "INV", 2026, 10_000), Ok(String::from("INV/2627/10000")));
        assert_eq!(document_number(Country::IN, "INVOIC", 2026, 1), Ok(String::from("INVOIC/2627/0001")));
        assert!(document_number(Country::IN, "INVOIC", 2026, 100_000).is_err());
        for sequence in [1, 9_999, 10_000, 9_999_999] {
            let number = document_number(Country::IN, "INV", 2026, sequence).expect("fits");
            assert!(number.chars().count() <= INDIA_NUMBER_CHARS_MAX, "{number}");
            assert!(number.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '/'), "{number}");
        }
    }

    #[test]
    fn uk_numbers_run_on_within_their_series() {
        assert_eq!(document_number(Country::GB, "INV", 0, 1), Ok(String::from("INV-000001")));
        assert_eq!(document_number(Country::GB, "SHOP2", 0, 1_234_567), Ok(String::from("SHOP2-1234567")));
    }
}
