//! An invoice or a credit note as a printable HTML page: self-contained (inline style,
//! no script, no outside resource), with every text from the document escaped, since
//! names and addresses come from customers.

use std::fmt::Write;

use till_kit::Currency;
use time::OffsetDateTime;

use crate::credit_notes::CreditNoteBody;
use crate::invoices::{printed, InvoiceBody, InvoiceCustomerBody, InvoiceLineBody, SupplierBody};
use crate::quotes::{PlaceOfSupplyBody, RateGroupBody};

/// What a page prints, from an invoice or a credit note.
pub struct Printable<'a> {
    pub title: &'static str,
    pub number: &'a str,
    pub issued_at: OffsetDateTime,
    /// The invoice's time of supply.
    pub tax_point: Option<&'a str>,
    /// A credit note's invoice and reason.
    pub credits: Option<(&'a str, &'a str)>,
    pub supplier: &'a SupplierBody,
    pub customer: &'a InvoiceCustomerBody,
    pub place_of_supply: Option<&'a PlaceOfSupplyBody>,
    pub lines: &'a [InvoiceLineBody],
    pub breakdown: &'a [RateGroupBody],
    pub currency: Currency,
    pub net_total: i64,
    pub tax_total: i64,
    pub total: i64,
    /// The payment that paid it, or the refund that gave the money back.
    pub payment: String,
}

impl Printable<'_> {
    pub fn of_invoice(invoice: &InvoiceBody) -> Printable<'_> {
        Printable {
            title: title_of(&invoice.kind),
            number: &invoice.number,
            issued_at: invoice.issued_at,
            tax_point: Some(&invoice.tax_point),
            credits: None,
            supplier: &invoice.supplier,
            customer: &invoice.customer,
            place_of_supply: invoice.place_of_supply.as_ref(),
            lines: &invoice.lines,
            breakdown: &invoice.breakdown,
            currency: invoice.currency,
            net_total: invoice.net_total,
            tax_total: invoice.tax_total,
            total: invoice.total,
            payment: format!("Paid: payment {}", invoice.payment_intent_id),
        }
    }

    pub fn of_credit_note(note: &CreditNoteBody) -> Printable<'_> {
        Printable {
            title: "Credit note",
            number: &note.number,
            issued_at: note.issued_at,
            tax_point: None,
            credits: Some((&note.invoice_number, &note.reason)),
            supplier: &note.supplier,
            customer: &note.customer,
            place_of_supply: note.place_of_supply.as_ref(),
            lines: &note.lines,
            breakdown: &note.breakdown,
            currency: note.currency,
            net_total: note.net_total,
            tax_total: note.tax_total,
            total: note.total,
            payment: format!("Refunded: refund {}", note.refund_id),
        }
    }
}

/// Escapes text for HTML content and attribute values.
pub fn escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for character in text.chars() {
        match character {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            other => escaped.push(other),
        }
    }
    escaped
}

fn title_of(kind: &str) -> &'static str {
    match kind {
        "vat_invoice" => "VAT invoice",
        "simplified_vat_invoice" => "Simplified VAT invoice",
        "tax_invoice" => "Tax invoice",
        "bill_of_supply" => "Bill of supply",
        _ => "Invoice",
    }
}

/// A rate in basis points as a percentage for print (`1800` → `18%`, `250` → `2.5%`).
pub fn percent(bps: u32) -> String {
    let (whole, rest) = (bps / 100, bps % 100);
    if rest == 0 {
        format!("{whole}%")
    } else if rest % 10 == 0 {
        format!("{whole}.{}%", rest / 10)
    } else {
        format!("{whole}.{rest:02}%")
    }
}

/// The page. `write!` into a `String` cannot fail, so its results are ignored.
pub fn render(invoice: &Printable<'_>) -> String {
    let currency = invoice.currency;
    let money = |amount: i64| escape(&format!("{} {}", currency.code(), printed(amount, currency)));
    let mut page = String::with_capacity(4096);
    let title = invoice.title;
    let _ = write!(
        page,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title} {number}</title>\
         <style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse;width:100%}}\
         th,td{{border:1px solid #999;padding:4px;text-align:left}}td.n{{text-align:right}}</style></head><body>",
        number = escape(invoice.number)
    );
    let _ = write!(page, "<h1>{title}</h1><p>Number: <strong>{}</strong><br>", escape(invoice.number));
    let _ = write!(page, "Date of issue: {}", escape(&invoice.issued_at.date().to_string()));
    if let Some(tax_point) = invoice.tax_point {
        let _ = write!(page, "<br>Time of supply: {}", escape(tax_point));
    }
    if let Some((credited, reason)) = invoice.credits {
        let _ = write!(page, "<br>Credits invoice {} ({})", escape(credited), escape(reason));
    }
    page.push_str("</p>");

    let supplier = invoice.supplier;
    let _ = write!(page, "<h2>Supplier</h2><p>{}<br>", escape(&supplier.name));
    for line in &supplier.address {
        let _ = write!(page, "{}<br>", escape(line));
    }
    if let Some(number) = &supplier.vat_number {
        let _ = write!(page, "VAT registration number: {}<br>", escape(number));
    }
    if let Some(gstin) = &supplier.gstin {
        let _ = write!(page, "GSTIN: {}<br>", escape(gstin));
    }
    if let Some(state) = &supplier.state {
        let _ = write!(page, "State: {} ({})<br>", escape(&state.name), escape(&state.code));
    }
    page.push_str("</p>");

    let customer = invoice.customer;
    let _ = write!(page, "<h2>Customer</h2><p>{}<br>", escape(&customer.name));
    for line in &customer.address {
        let _ = write!(page, "{}<br>", escape(line));
    }
    if let Some(gstin) = &customer.gstin {
        let _ = write!(page, "GSTIN: {}<br>", escape(gstin));
    }
    if let Some(state) = &customer.state {
        let _ = write!(page, "State: {} ({})<br>", escape(&state.name), escape(&state.code));
    }
    page.push_str("</p>");
    if let Some(place) = invoice.place_of_supply {
        let _ = write!(page, "<p>Place of supply: {} ({})</p>", escape(&place.name), escape(&place.code));
    }

    let hsn = invoice.lines.iter().any(|line| line.hsn_code.is_some());
    page.push_str("<table><thead><tr><th>Description</th>");
    if hsn {
        page.push_str("<th>HSN/SAC</th>");
    }
    page.push_str(
        "<th>Quantity</th><th>Unit price</th><th>Discount</th><th>Rate</th><th>Net</th><th>Tax</th><th>Total</th></tr></thead><tbody>",
    );
    for line in invoice.lines {
        let _ = write!(page, "<tr><td>{}</td>", escape(&line.description));
        if hsn {
            let _ = write!(page, "<td>{}</td>", escape(line.hsn_code.as_deref().unwrap_or("")));
        }
        let rate = line.rate_bps.map_or_else(|| escape(&line.category), percent);
        let taxes: Vec<String> = line
            .taxes
            .iter()
            .map(|tax| format!("{} {}", escape(&tax.kind.to_uppercase()), money(tax.amount)))
            .collect();
        let _ = write!(
            page,
            "<td class=\"n\">{}</td><td class=\"n\">{}{}</td><td class=\"n\">{}</td><td>{}</td><td class=\"n\">{}</td><td>{}</td><td class=\"n\">{}</td></tr>",
            line.quantity,
            money(line.unit_amount),
            if line.tax_inclusive { " incl. tax" } else { "" },
            money(line.discount_amount),
            rate,
            money(line.net_amount),
            if taxes.is_empty() { String::from("—") } else { taxes.join("<br>") },
            money(line.total_amount),
        );
    }
    page.push_str("</tbody></table><h2>Tax by rate</h2><table><thead><tr><th>Rate</th><th>Net</th><th>Tax</th></tr></thead><tbody>");
    for group in invoice.breakdown {
        let rate = group.rate_bps.map_or_else(|| escape(&group.category), percent);
        let taxes: Vec<String> = group
            .taxes
            .iter()
            .map(|tax| {
                format!(
                    "{} {} {}",
                    escape(&tax.kind.to_uppercase()),
                    percent(share_of(tax.rate_bps, tax.share_bps)),
                    money(tax.amount)
                )
            })
            .collect();
        let _ = write!(
            page,
            "<tr><td>{rate} ({})</td><td class=\"n\">{}</td><td>{}</td></tr>",
            escape(&group.category),
            money(group.net_amount),
            if taxes.is_empty() { String::from("—") } else { taxes.join("<br>") }
        );
    }
    let _ = write!(
        page,
        "</tbody></table><p>Total excluding tax: {}<br>Tax: {}<br><strong>Total: {}</strong></p>\
         <p>{}</p></body></html>",
        money(invoice.net_total),
        money(invoice.tax_total),
        money(invoice.total),
        escape(&invoice.payment)
    );
    page
}

/// The part of `rate_bps` a tax levies (CGST's half of 18 % is 9 %).
fn share_of(rate_bps: u32, share_bps: u32) -> u32 {
    u32::try_from(u64::from(rate_bps) * u64::from(share_bps) / 10_000).unwrap_or(rate_bps)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped() {
        assert_eq!(
            escape("<script>alert('x')</script> & \"q\""),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;q&quot;"
        );
    }

    #[test]
    fn rates_print_as_percentages() {
        assert_eq!(percent(2000), "20%");
        assert_eq!(percent(250), "2.5%");
        assert_eq!(percent(25), "0.25%");
        assert_eq!(percent(0), "0%");
        assert_eq!(share_of(1800, 5000), 900);
    }
}
