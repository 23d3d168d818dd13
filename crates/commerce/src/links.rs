//! Links a customer can open without a Till login: an invoice's printable page at
//! `/v1/invoice_documents/{token}`, where the token is the business, the invoice and an
//! expiry sealed with the keyring (ChaCha20-Poly1305, bound to its purpose), so it
//! cannot be made, changed or moved to another invoice by anyone without the keys, and
//! it says nothing readable. A rotated keyring still opens the links the old key sealed.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use till_kit::{BusinessId, Keyring};
use time::OffsetDateTime;

use crate::InvoiceId;

/// The path under which the links are served.
pub const DOCUMENTS_PATH: &str = "/v1/invoice_documents/{token}";
/// How long a link opens its invoice.
pub const LIFETIME: Duration = Duration::from_secs(90 * 24 * 60 * 60);
const PURPOSE: &[u8] = b"till/commerce/invoice-document-link/v1";

#[derive(Clone)]
pub struct DocumentLinks {
    keyring: Arc<Keyring>,
    /// This Till as customers reach it (`TILL_PUBLIC_URL`), without a trailing slash.
    public_url: String,
}

impl std::fmt::Debug for DocumentLinks {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("DocumentLinks").field("public_url", &self.public_url).finish_non_exhaustive()
    }
}

impl DocumentLinks {
    pub fn new(keyring: Arc<Keyring>, public_url: &str) -> DocumentLinks {
        DocumentLinks { keyring, public_url: public_url.trim_end_matches('/').to_string() }
    }

    /// The link to `invoice` of `business`, opening it until `LIFETIME` after `now`.
    pub fn url(&self, business: BusinessId, invoice: InvoiceId, now: OffsetDateTime) -> String {
        let expires = (now + LIFETIME).unix_timestamp();
        let mut plaintext = Vec::with_capacity(40);
        plaintext.extend_from_slice(business.as_uuid().as_bytes());
        plaintext.extend_from_slice(invoice.as_uuid().as_bytes());
        plaintext.extend_from_slice(&expires.to_be_bytes());
        let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(self.keyring.seal(PURPOSE, &plaintext));
        format!("{}/v1/invoice_documents/{token}", self.public_url)
    }

    /// The business and invoice a token opens, if it is one of ours and has not expired.
    pub fn open(&self, token: &str, now: OffsetDateTime) -> Option<(BusinessId, InvoiceId)> {
        if token.len() > 200 {
            return None;
        }
        let sealed = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(token).ok()?;
        let plaintext = self.keyring.open(PURPOSE, &sealed).ok()?;
        let (business, rest) = plaintext.split_first_chunk::<16>()?;
        let (invoice, rest) = rest.split_first_chunk::<16>()?;
        let expires = i64::from_be_bytes(*<&[u8; 8]>::try_from(rest).ok()?);
        if expires < now.unix_timestamp() {
            return None;
        }
        Some((
            BusinessId::from_uuid(uuid::Uuid::from_bytes(*business)),
            InvoiceId::from_uuid(uuid::Uuid::from_bytes(*invoice)),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn links(id: &str) -> DocumentLinks {
        let text = Keyring::generate_text(id).expect("a keyring");
        DocumentLinks::new(Arc::new(Keyring::parse(&text).expect("parses")), "https://till.example/")
    }

    #[test]
    fn a_link_opens_its_invoice_until_it_expires_and_nothing_else() {
        let links = links("k1");
        let (business, invoice) = (BusinessId::generate(), InvoiceId::generate());
        let now = OffsetDateTime::now_utc();
        let url = links.url(business, invoice, now);
        let token = url.strip_prefix("https://till.example/v1/invoice_documents/").expect("the path");
        assert_eq!(links.open(token, now), Some((business, invoice)));
        assert_eq!(links.open(token, now + LIFETIME + Duration::from_secs(1)), None, "expired");
        let mut tampered = token.to_string().into_bytes();
        tampered[10] = if tampered[10] == b'A' { b'B' } else { b'A' };
        assert_eq!(links.open(&String::from_utf8(tampered).expect("ascii"), now), None);
        assert_eq!(self::links("k2").open(token, now), None, "another keyring's link");
        assert_eq!(links.open("not-a-token", now), None);
    }
}
