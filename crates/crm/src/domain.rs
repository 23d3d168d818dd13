//! What Till's events become in Salesforce, pure: the records (an sObject by an external
//! id field) and the fields each change writes. Amounts are written as JSON numbers with
//! the currency's decimals, made from the integer minor units as text, never through a
//! float.

use serde::Serialize;
use serde_json::value::RawValue;
use till_kit::{Currency, Money};

/// The external id fields the org needs (custom fields, unique, external id).
pub const BUSINESS_ID_FIELD: &str = "Till_Business_Id__c";
pub const PAYMENT_ID_FIELD: &str = "Till_Payment_Id__c";
pub const ORDER_ID_FIELD: &str = "Till_Order_Id__c";

/// One change to one Salesforce record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub sobject: &'static str,
    pub external_field: &'static str,
    pub external_id: String,
    /// The fields, as JSON text (an object).
    pub fields: String,
}

/// The business an event belongs to, as its Account shows it.
#[derive(Debug, Clone)]
pub struct Business<'a> {
    pub id: &'a str,
    pub name: &'a str,
    pub country: &'a str,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MappingError {
    #[error("data.{0} is missing or not what the event's schema says")]
    Field(&'static str),
}

#[derive(Serialize)]
#[allow(non_snake_case)]
struct AccountFields<'a> {
    Name: &'a str,
    BillingCountryCode: &'a str,
}

#[derive(Serialize)]
#[allow(non_snake_case)]
struct AccountReference<'a> {
    Till_Business_Id__c: &'a str,
}

#[derive(Serialize)]
#[allow(non_snake_case)]
struct OpportunityFields<'a> {
    Name: String,
    StageName: &'static str,
    CloseDate: &'a str,
    Amount: &'a RawValue,
    Till_Currency__c: &'a str,
    Account: AccountReference<'a>,
}

#[derive(Serialize)]
#[allow(non_snake_case)]
struct RefundedFields<'a> {
    Till_Amount_Refunded__c: &'a RawValue,
}

/// The business's Account: written with every event, so the Account exists before
/// anything that refers to it (and follows a renamed business).
pub fn account(business: &Business<'_>) -> Change {
    let fields = AccountFields { Name: business.name, BillingCountryCode: business.country };
    Change {
        sobject: "Account",
        external_field: BUSINESS_ID_FIELD,
        external_id: business.id.to_string(),
        fields: serde_json::to_string(&fields).unwrap_or_else(|_| unreachable!("plain fields serialize")),
    }
}

/// An amount in minor units as a JSON number in major units (`1250` GBP → `12.50`).
pub fn amount_json(minor: i64, currency: Currency) -> Box<RawValue> {
    let text = Money::from_minor(minor, currency).to_decimal_string();
    RawValue::from_string(text).unwrap_or_else(|_| unreachable!("a decimal string is a JSON number"))
}

fn text<'a>(data: &'a serde_json::Value, field: &'static str) -> Result<&'a str, MappingError> {
    data.get(field).and_then(serde_json::Value::as_str).ok_or(MappingError::Field(field))
}

fn minor(data: &serde_json::Value, field: &'static str) -> Result<i64, MappingError> {
    data.get(field).and_then(serde_json::Value::as_i64).ok_or(MappingError::Field(field))
}

fn currency(data: &serde_json::Value) -> Result<Currency, MappingError> {
    Currency::parse(text(data, "currency")?).map_err(|_| MappingError::Field("currency"))
}

/// A won Opportunity for a captured payment or a paid order.
fn opportunity(
    business: &Business<'_>,
    external_field: &'static str,
    id: &str,
    name: String,
    amount: i64,
    currency: Currency,
    close_date: &str,
) -> Change {
    let amount = amount_json(amount, currency);
    let fields = OpportunityFields {
        Name: name,
        StageName: "Closed Won",
        CloseDate: close_date,
        Amount: &amount,
        Till_Currency__c: currency.code(),
        Account: AccountReference { Till_Business_Id__c: business.id },
    };
    Change {
        sobject: "Opportunity",
        external_field,
        external_id: id.to_string(),
        fields: serde_json::to_string(&fields).unwrap_or_else(|_| unreachable!("plain fields serialize")),
    }
}

/// What a `payment_intent.succeeded` changes: the Account, and the payment's Opportunity.
pub fn payment_captured(
    business: &Business<'_>,
    data: &serde_json::Value,
    close_date: &str,
) -> Result<Vec<Change>, MappingError> {
    let id = text(data, "id")?;
    let name = format!("Payment {id}");
    let payment =
        opportunity(business, PAYMENT_ID_FIELD, id, name, minor(data, "amount_received")?, currency(data)?, close_date);
    Ok(vec![account(business), payment])
}

/// What an `order.paid` changes: the Account, and the order's Opportunity.
pub fn order_paid(
    business: &Business<'_>,
    data: &serde_json::Value,
    close_date: &str,
) -> Result<Vec<Change>, MappingError> {
    let id = text(data, "id")?;
    let order = opportunity(
        business,
        ORDER_ID_FIELD,
        id,
        format!("Order {id}"),
        minor(data, "total")?,
        currency(data)?,
        close_date,
    );
    Ok(vec![account(business), order])
}

/// What a refund changes: its payment's Opportunity, with everything refunded so far.
pub fn refunded(payment_intent_id: &str, refunded_minor: i64, currency: Currency) -> Change {
    let amount = amount_json(refunded_minor, currency);
    let fields = RefundedFields { Till_Amount_Refunded__c: &amount };
    Change {
        sobject: "Opportunity",
        external_field: PAYMENT_ID_FIELD,
        external_id: payment_intent_id.to_string(),
        fields: serde_json::to_string(&fields).unwrap_or_else(|_| unreachable!("plain fields serialize")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn business() -> Business<'static> {
        Business { id: "biz_1", name: "Acme \"Bread\" Ltd", country: "GB" }
    }

    #[test]
    fn a_captured_payment_is_the_account_then_a_won_opportunity_with_an_exact_amount() {
        let data = serde_json::json!({"id": "pi_1", "amount_received": 1250, "currency": "GBP"});
        let changes = payment_captured(&business(), &data, "2026-12-04").expect("changes");
        assert_eq!(changes[0].sobject, "Account");
        assert_eq!(changes[0].fields, r#"{"Name":"Acme \"Bread\" Ltd","BillingCountryCode":"GB"}"#);
        assert_eq!(
            (changes[1].sobject, changes[1].external_field, changes[1].external_id.as_str()),
            ("Opportunity", PAYMENT_ID_FIELD, "pi_1")
        );
        assert!(changes[1].fields.contains(r#""Amount":12.50"#), "{}", changes[1].fields);
        assert!(changes[1].fields.contains(r#""Account":{"Till_Business_Id__c":"biz_1"}"#), "{}", changes[1].fields);
    }

    #[test]
    fn amounts_keep_their_currency_s_decimals_and_missing_data_is_refused() {
        assert_eq!(amount_json(5, Currency::parse("JPY").expect("JPY")).get(), "5");
        assert_eq!(amount_json(123_456, Currency::parse("INR").expect("INR")).get(), "1234.56");
        assert_eq!(
            refunded("pi_1", 300, Currency::parse("GBP").expect("GBP")).fields,
            r#"{"Till_Amount_Refunded__c":3.00}"#
        );
        let data = serde_json::json!({"id": "pi_1", "currency": "GBP"});
        assert_eq!(payment_captured(&business(), &data, "2026-12-04"), Err(MappingError::Field("amount_received")));
    }
}
