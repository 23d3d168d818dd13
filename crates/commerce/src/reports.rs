//! Tax reports from the invoices and credit notes Till issued: the UK VAT return's nine
//! boxes (Making Tax Digital) and India's GSTR-1 sections.
//!
//! The figures are computed from the documents as issued (each an unchanging body), by
//! pure functions ([`vat_return`], [`gstr1`]) that the routes feed with the period's
//! documents, dated where the seller is (a UK return's days are London's, a GSTR-1's
//! month is India's). Amounts stay integer minor units, as everywhere in the API; the
//! boxes HMRC takes in whole pounds (6 to 9) are whole pounds in pence, pence dropped.
//! Till records sales, not purchases: box 4 (VAT reclaimed) and box 7 (purchases) are
//! 0 and the return says so, for the business to add what its purchase records hold.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use till_access::domain::{Country, TaxRegistration};
use till_http::auth::Principal;
use till_http::extract::ApiQuery;
use till_http::unit_of_work::Tx;
use till_http::{ApiError, Problem};
use time::{Date, Duration, OffsetDateTime};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::credit_notes::CreditNoteBody;
use crate::invoices::{local_date, InvoiceBody, InvoiceLineBody};
use crate::store;

/// The longest period one report covers.
pub const PERIOD_DAYS_MAX: i64 = 366;
/// B2C large (GSTR-1 table 5): inter-state supplies to unregistered buyers of more than
/// ₹1,00,000 per invoice (since 1 August 2024; ₹2,50,000 before), in paise.
pub const B2CL_INVOICE_VALUE_MIN_PAISE: i64 = 10_000_000;
/// Documents one report reads.
pub const DOCUMENTS_MAX: i64 = 100_000;

pub fn routes() -> OpenApiRouter {
    OpenApiRouter::new().routes(routes!(get_vat_return)).routes(routes!(get_gstr1))
}

// ---- the VAT return (pure) ----

/// A document behind a VAT return's figures.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct VatDocumentBody {
    /// `invoice` or `credit_note`.
    pub kind: String,
    pub id: String,
    pub number: String,
    #[schema(format = Date)]
    pub date: String,
    /// Net of VAT, negative for a credit note.
    pub net_amount: i64,
    pub vat_amount: i64,
}

/// The nine boxes, in pence: boxes 6 to 9 are whole pounds (pence dropped, as HMRC asks).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct VatBoxesBody {
    /// VAT due on sales and other outputs.
    pub box_1: i64,
    /// VAT due on acquisitions from the EU (Northern Ireland goods only): 0.
    pub box_2: i64,
    /// Boxes 1 and 2.
    pub box_3: i64,
    /// VAT reclaimed on purchases: 0 (Till records no purchases).
    pub box_4: i64,
    /// Box 3 less box 4: to pay (or, negative, to reclaim).
    pub box_5: i64,
    /// Sales excluding VAT, every rate, zero-rated and exempt included.
    pub box_6: i64,
    /// Purchases excluding VAT: 0 (Till records no purchases).
    pub box_7: i64,
    /// Goods supplied to the EU (Northern Ireland only): 0.
    pub box_8: i64,
    /// Goods acquired from the EU (Northern Ireland only): 0.
    pub box_9: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct VatReturnBody {
    #[schema(format = Date)]
    pub from: String,
    #[schema(format = Date)]
    pub to: String,
    pub currency: till_kit::Currency,
    pub boxes: VatBoxesBody,
    /// Every invoice and credit note behind boxes 1 and 6.
    pub documents: Vec<VatDocumentBody>,
    pub notes: Vec<String>,
}

fn whole_pounds(pence: i64) -> i64 {
    // Toward zero, so a negative box drops its pence the same way.
    pence / 100 * 100
}

fn vat_of(lines: &[InvoiceLineBody]) -> i64 {
    lines.iter().flat_map(|line| &line.taxes).filter(|tax| tax.kind == "vat").map(|tax| tax.amount).sum()
}

/// The boxes of the invoices and credit notes issued in the period.
pub fn vat_return(invoices: &[InvoiceBody], credit_notes: &[CreditNoteBody]) -> (VatBoxesBody, Vec<VatDocumentBody>) {
    let mut documents = Vec::with_capacity(invoices.len() + credit_notes.len());
    let (mut vat, mut net) = (0_i64, 0_i64);
    for invoice in invoices {
        let invoice_vat = vat_of(&invoice.lines);
        vat = vat.saturating_add(invoice_vat);
        net = net.saturating_add(invoice.net_total);
        documents.push(VatDocumentBody {
            kind: String::from("invoice"),
            id: invoice.id.to_string(),
            number: invoice.number.clone(),
            date: local_date(Country::GB, invoice.issued_at).to_string(),
            net_amount: invoice.net_total,
            vat_amount: invoice_vat,
        });
    }
    for note in credit_notes {
        let note_vat = vat_of(&note.lines);
        vat = vat.saturating_sub(note_vat);
        net = net.saturating_sub(note.net_total);
        documents.push(VatDocumentBody {
            kind: String::from("credit_note"),
            id: note.id.to_string(),
            number: note.number.clone(),
            date: local_date(Country::GB, note.issued_at).to_string(),
            net_amount: note.net_total.saturating_neg(),
            vat_amount: note_vat.saturating_neg(),
        });
    }
    let boxes = VatBoxesBody {
        box_1: vat,
        box_2: 0,
        box_3: vat,
        box_4: 0,
        box_5: vat,
        box_6: whole_pounds(net),
        box_7: 0,
        box_8: 0,
        box_9: 0,
    };
    (boxes, documents)
}

// ---- GSTR-1 (pure) ----

/// One rate's taxable value and taxes on a document, as GSTR-1 itemises them.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct GstItemBody {
    pub rate_bps: u32,
    pub taxable_value: i64,
    pub igst: i64,
    pub cgst: i64,
    pub sgst: i64,
}

impl GstItemBody {
    fn add(&mut self, other: &GstItemBody, sign: i64) {
        self.taxable_value = self.taxable_value.saturating_add(other.taxable_value.saturating_mul(sign));
        self.igst = self.igst.saturating_add(other.igst.saturating_mul(sign));
        self.cgst = self.cgst.saturating_add(other.cgst.saturating_mul(sign));
        self.sgst = self.sgst.saturating_add(other.sgst.saturating_mul(sign));
    }
}

/// A document in a GSTR-1 section: its number, date, value, place of supply and items.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct GstDocumentBody {
    pub id: String,
    pub number: String,
    #[schema(format = Date)]
    pub date: String,
    /// The document's total, tax included.
    pub value: i64,
    /// The place of supply's state code.
    pub place_of_supply: String,
    /// The recipient's GSTIN (B2B and registered credit notes).
    pub gstin: Option<String>,
    /// A credit note: the invoice it credits.
    pub invoice_number: Option<String>,
    pub items: Vec<GstItemBody>,
}

/// B2C small: per place of supply and rate, net of credit notes.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct B2csBody {
    pub place_of_supply: String,
    /// `intra` (CGST + SGST) or `inter` (IGST).
    pub supply_type: String,
    #[serde(flatten)]
    pub item: GstItemBody,
}

/// The HSN summary: per HSN code and rate.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct HsnBody {
    pub hsn_code: String,
    pub quantity: i64,
    pub total_value: i64,
    #[serde(flatten)]
    pub item: GstItemBody,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Gstr1Body {
    /// `YYYY-MM`.
    pub period: String,
    pub gstin: String,
    #[serde(flatten)]
    pub sections: Gstr1Sections,
}

/// GSTR-1's sections, in paise, rates in basis points.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct Gstr1Sections {
    /// Table 4: to registered buyers, invoice by invoice.
    pub b2b: Vec<GstDocumentBody>,
    /// Table 5: inter-state to unregistered buyers above ₹1,00,000 an invoice.
    pub b2cl: Vec<GstDocumentBody>,
    /// Table 7: every other supply to an unregistered buyer, by state and rate.
    pub b2cs: Vec<B2csBody>,
    /// Table 6A: exports (place of supply 97).
    pub exports: Vec<GstDocumentBody>,
    /// Table 9B: credit notes to registered buyers.
    pub cdnr: Vec<GstDocumentBody>,
    /// Table 9B: credit notes to unregistered buyers of a B2C large invoice (others are
    /// netted in `b2cs`).
    pub cdnur: Vec<GstDocumentBody>,
    /// Table 12: the HSN summary, net of credit notes.
    pub hsn: Vec<HsnBody>,
}

fn items_of(lines: &[InvoiceLineBody]) -> Vec<GstItemBody> {
    let mut items: BTreeMap<u32, GstItemBody> = BTreeMap::new();
    for line in lines {
        let rate = line.rate_bps.unwrap_or(0);
        let item = items.entry(rate).or_insert_with(|| GstItemBody { rate_bps: rate, ..GstItemBody::default() });
        item.taxable_value = item.taxable_value.saturating_add(line.net_amount);
        for tax in &line.taxes {
            let slot = match tax.kind.as_str() {
                "igst" => &mut item.igst,
                "cgst" => &mut item.cgst,
                "sgst" => &mut item.sgst,
                _ => continue,
            };
            *slot = slot.saturating_add(tax.amount);
        }
    }
    items.into_values().collect()
}

/// Where a document's supply is taxed: its place of supply, or the buyer's state.
fn place_of(invoice: &InvoiceBody) -> String {
    invoice
        .place_of_supply
        .as_ref()
        .map(|place| place.code.clone())
        .or_else(|| invoice.customer.state.as_ref().map(|state| state.code.clone()))
        .unwrap_or_default()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Section {
    B2b,
    B2cl,
    B2cs,
    Export,
}

fn section_of(invoice: &InvoiceBody, seller_state: &str) -> Section {
    let place = place_of(invoice);
    if invoice.customer.gstin.is_some() {
        Section::B2b
    } else if place == "97" {
        Section::Export
    } else if place != seller_state && invoice.total > B2CL_INVOICE_VALUE_MIN_PAISE {
        Section::B2cl
    } else {
        Section::B2cs
    }
}

fn document_of(invoice: &InvoiceBody) -> GstDocumentBody {
    GstDocumentBody {
        id: invoice.id.to_string(),
        number: invoice.number.clone(),
        date: local_date(Country::IN, invoice.issued_at).to_string(),
        value: invoice.total,
        place_of_supply: place_of(invoice),
        gstin: invoice.customer.gstin.clone(),
        invoice_number: None,
        items: items_of(&invoice.lines),
    }
}

/// The sections of the period's invoices and credit notes. `credited` holds the
/// invoices the credit notes credit (from any period), to place each note.
pub fn gstr1(
    seller_state: &str,
    invoices: &[InvoiceBody],
    credit_notes: &[CreditNoteBody],
    credited: &[InvoiceBody],
) -> Gstr1Sections {
    let (mut b2b, mut b2cl, mut exports) = (Vec::new(), Vec::new(), Vec::new());
    let mut b2cs: BTreeMap<(String, u32), B2csBody> = BTreeMap::new();
    let mut hsn: BTreeMap<(String, u32), HsnBody> = BTreeMap::new();
    let mut small = |place: String, items: &[GstItemBody], sign: i64| {
        let supply_type = if place == seller_state { "intra" } else { "inter" };
        for item in items {
            let entry = b2cs.entry((place.clone(), item.rate_bps)).or_insert_with(|| B2csBody {
                place_of_supply: place.clone(),
                supply_type: supply_type.to_string(),
                item: GstItemBody { rate_bps: item.rate_bps, ..GstItemBody::default() },
            });
            entry.item.add(item, sign);
        }
    };
    let mut summarise = |lines: &[InvoiceLineBody], sign: i64| {
        for line in lines {
            let rate = line.rate_bps.unwrap_or(0);
            let code = line.hsn_code.clone().unwrap_or_default();
            let entry = hsn.entry((code.clone(), rate)).or_insert_with(|| HsnBody {
                hsn_code: code,
                quantity: 0,
                total_value: 0,
                item: GstItemBody { rate_bps: rate, ..GstItemBody::default() },
            });
            entry.quantity = entry.quantity.saturating_add(i64::from(line.quantity).saturating_mul(sign));
            entry.total_value = entry.total_value.saturating_add(line.total_amount.saturating_mul(sign));
            for item in items_of(std::slice::from_ref(line)) {
                entry.item.add(&item, sign);
            }
        }
    };
    for invoice in invoices {
        summarise(&invoice.lines, 1);
        match section_of(invoice, seller_state) {
            Section::B2b => b2b.push(document_of(invoice)),
            Section::B2cl => b2cl.push(document_of(invoice)),
            Section::Export => exports.push(document_of(invoice)),
            Section::B2cs => small(place_of(invoice), &items_of(&invoice.lines), 1),
        }
    }
    let (mut cdnr, mut cdnur) = (Vec::new(), Vec::new());
    for note in credit_notes {
        summarise(&note.lines, -1);
        let Some(invoice) = credited.iter().find(|invoice| invoice.id == note.invoice_id) else { continue };
        let document = GstDocumentBody {
            id: note.id.to_string(),
            number: note.number.clone(),
            date: local_date(Country::IN, note.issued_at).to_string(),
            value: note.total,
            place_of_supply: place_of(invoice),
            gstin: invoice.customer.gstin.clone(),
            invoice_number: Some(note.invoice_number.clone()),
            items: items_of(&note.lines),
        };
        match section_of(invoice, seller_state) {
            Section::B2b => cdnr.push(document),
            Section::B2cl | Section::Export => cdnur.push(document),
            Section::B2cs => small(place_of(invoice), &items_of(&note.lines), -1),
        }
    }
    Gstr1Sections {
        b2b,
        b2cl,
        b2cs: b2cs.into_values().collect(),
        exports,
        cdnr,
        cdnur,
        hsn: hsn.into_values().collect(),
    }
}

// ---- the routes ----

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct VatReturnParams {
    /// The period's first day, `YYYY-MM-DD` (UK time).
    #[param(format = Date)]
    pub from: String,
    /// Its last day, `YYYY-MM-DD`, at most 366 days on.
    #[param(format = Date)]
    pub to: String,
}

fn date_of(text: &str, param: &str) -> Result<Date, ApiError> {
    let format = time::macros::format_description!("[year]-[month]-[day]");
    Date::parse(text, format).map_err(|_| ApiError::invalid(param, format!("{param} is a date, YYYY-MM-DD.")))
}

/// The documents issued from `from` to `to` inclusive, by the seller's dates.
async fn documents_between(
    tx: &mut Tx,
    principal: &Principal,
    country: Country,
    from: Date,
    to: Date,
) -> Result<(Vec<InvoiceBody>, Vec<CreditNoteBody>), ApiError> {
    // A day either side in UTC, then each document's own date where the seller is.
    let start = from.saturating_sub(Duration::days(1)).midnight().assume_utc();
    let end = to.saturating_add(Duration::days(2)).midnight().assume_utc();
    let within = |at: OffsetDateTime| (from..=to).contains(&local_date(country, at));
    let invoices = store::invoices_issued_between(tx, principal.business_id, start, end, DOCUMENTS_MAX)
        .await?
        .into_iter()
        .map(|body| serde_json::from_value::<InvoiceBody>(body).map_err(|error| ApiError::internal(&error)))
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .filter(|invoice| within(invoice.issued_at))
        .collect();
    let notes = store::credit_notes_issued_between(tx, principal.business_id, start, end, DOCUMENTS_MAX)
        .await?
        .into_iter()
        .map(|body| serde_json::from_value::<CreditNoteBody>(body).map_err(|error| ApiError::internal(&error)))
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .filter(|note| within(note.issued_at))
        .collect();
    Ok((invoices, notes))
}

/// The UK VAT return's nine boxes for a period, from the invoices and credit notes
/// issued in it, with each document behind the figures.
#[utoipa::path(get, path = "/v1/reports/vat_return", tag = "commerce", params(VatReturnParams),
    responses((status = 200, body = VatReturnBody),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json", description = "rule_violated: `to` before `from` or more than 366 days on; the business is not a VAT-registered UK business.")),
    security(("bearer" = [])))]
async fn get_vat_return(
    principal: Principal,
    mut tx: Tx,
    ApiQuery(params): ApiQuery<VatReturnParams>,
) -> Result<axum::Json<VatReturnBody>, ApiError> {
    let (from, to) = (date_of(&params.from, "from")?, date_of(&params.to, "to")?);
    if to < from || (to - from).whole_days() >= PERIOD_DAYS_MAX {
        return Err(ApiError::rule("to", "to is from `from` to 365 days after it."));
    }
    let profile = crate::products::seller(&mut tx, principal.business_id).await?;
    if !matches!((profile.country, &profile.tax_registration), (Country::GB, Some(TaxRegistration::UkVat(_)))) {
        return Err(ApiError::new(
            till_http::ErrorCode::RuleViolated,
            "A VAT return is for a VAT-registered UK business.",
        ));
    }
    let (invoices, notes) = documents_between(&mut tx, &principal, Country::GB, from, to).await?;
    let currency = till_kit::Currency::parse("GBP").map_err(|error| ApiError::internal(&error))?;
    // Sales in another currency are not in a sterling return's boxes as they are.
    let foreign = invoices.iter().filter(|invoice| invoice.currency != currency).count()
        + notes.iter().filter(|note| note.currency != currency).count();
    let invoices: Vec<InvoiceBody> = invoices.into_iter().filter(|invoice| invoice.currency == currency).collect();
    let notes: Vec<CreditNoteBody> = notes.into_iter().filter(|note| note.currency == currency).collect();
    let (boxes, documents) = vat_return(&invoices, &notes);
    let mut notes_text = vec![
        String::from("Boxes 1 to 5 are in pence; boxes 6 to 9 are whole pounds, in pence (pence dropped)."),
        String::from("Box 4 and box 7 are 0: Till records sales, not purchases. Add your purchases before you submit."),
    ];
    if foreign > 0 {
        notes_text
            .push(format!("{foreign} document(s) in other currencies are left out: convert them at HMRC's rate."));
    }
    Ok(axum::Json(VatReturnBody {
        from: from.to_string(),
        to: to.to_string(),
        currency,
        boxes,
        documents,
        notes: notes_text,
    }))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct Gstr1Params {
    /// The month, `YYYY-MM` (India time).
    #[param(pattern = "^[0-9]{4}-(0[1-9]|1[0-2])$")]
    pub period: String,
}

/// India's GSTR-1 for a month: B2B invoice by invoice, B2C large, B2C small by state and
/// rate, exports, credit notes, and the HSN summary.
#[utoipa::path(get, path = "/v1/reports/gstr1", tag = "commerce", params(Gstr1Params),
    responses((status = 200, body = Gstr1Body),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json", description = "rule_violated: the business has no GSTIN, or the month is before GST (July 2017).")),
    security(("bearer" = [])))]
async fn get_gstr1(
    principal: Principal,
    mut tx: Tx,
    ApiQuery(params): ApiQuery<Gstr1Params>,
) -> Result<axum::Json<Gstr1Body>, ApiError> {
    let (year, month) = params
        .period
        .split_once('-')
        .filter(|(year, month)| year.len() == 4 && month.len() == 2)
        .and_then(|(year, month)| Some((year.parse::<i32>().ok()?, month.parse::<u8>().ok()?)))
        .and_then(|(year, month)| Some((year, time::Month::try_from(month).ok()?)))
        .filter(|_| params.period.bytes().all(|byte| byte.is_ascii_digit() || byte == b'-'))
        .ok_or_else(|| ApiError::invalid("period", "period is a month, YYYY-MM."))?;
    let from = Date::from_calendar_date(year, month, 1)
        .map_err(|_| ApiError::invalid("period", "period is a month, YYYY-MM."))?;
    if from < time::macros::date!(2017 - 07 - 01) {
        return Err(ApiError::rule("period", "GST began in July 2017."));
    }
    let next = if month == time::Month::December {
        Date::from_calendar_date(year.saturating_add(1), time::Month::January, 1)
    } else {
        Date::from_calendar_date(year, month.next(), 1)
    }
    .map_err(|_| ApiError::invalid("period", "period is a month, YYYY-MM."))?;
    let to = next.previous_day().unwrap_or(from);
    let profile = crate::products::seller(&mut tx, principal.business_id).await?;
    let Some(TaxRegistration::Gst(gstin)) = &profile.tax_registration else {
        return Err(ApiError::new(till_http::ErrorCode::RuleViolated, "GSTR-1 is for a business with a GSTIN."));
    };
    let (invoices, notes) = documents_between(&mut tx, &principal, Country::IN, from, to).await?;
    let mut credited = Vec::new();
    for note in &notes {
        if let Some(body) = store::find_invoice(&mut tx, note.invoice_id.as_uuid()).await? {
            credited.push(serde_json::from_value::<InvoiceBody>(body).map_err(|error| ApiError::internal(&error))?);
        }
    }
    let sections = gstr1(gstin.state_code(), &invoices, &notes, &credited);
    Ok(axum::Json(Gstr1Body { period: params.period.clone(), gstin: gstin.as_str().to_string(), sections }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_pound_boxes_drop_their_pence_toward_zero() {
        assert_eq!(whole_pounds(123_456), 123_400);
        assert_eq!(whole_pounds(99), 0);
        assert_eq!(whole_pounds(-150), -100);
    }
}
