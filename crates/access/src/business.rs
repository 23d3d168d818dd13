//! A business as other services read it, in process: who sells (its legal name, country
//! and tax registration), for the prices and invoices it issues. Read in the caller's
//! transaction, under its tenant, so row-level security still scopes it.

use sqlx::PgConnection;
use till_kit::BusinessId;

use crate::domain::{Country, TaxRegistration};

/// The seller's facts that tax depends on.
#[derive(Debug, Clone)]
pub struct BusinessProfile {
    pub legal_name: String,
    pub country: Country,
    /// Its VAT number (GB) or GSTIN (IN); `None` if it is not registered.
    pub tax_registration: Option<TaxRegistration>,
}

#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    /// A stored row the domain refuses: a bug or a hand edit, never the caller's input.
    #[error("business {0} is stored with {1}")]
    Corrupt(BusinessId, String),
}

/// The business's profile; `None` if no such business is visible.
pub async fn profile(
    connection: &mut PgConnection,
    business: BusinessId,
) -> Result<Option<BusinessProfile>, ProfileError> {
    let Some(row) = crate::store::find_business(connection, business).await? else {
        return Ok(None);
    };
    let corrupt = |what: String| ProfileError::Corrupt(business, what);
    let country = Country::parse(&row.country).map_err(|_| corrupt(format!("country {:?}", row.country)))?;
    let tax_registration = row
        .tax_registration
        .as_deref()
        .map(|text| TaxRegistration::parse(country, text))
        .transpose()
        .map_err(|_| corrupt(String::from("a tax registration its country does not take")))?;
    Ok(Some(BusinessProfile { legal_name: row.legal_name, country, tax_registration }))
}
