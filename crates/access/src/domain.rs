//! The access domain: businesses and API key secrets. Parse, don't validate: each value
//! has one fallible constructor, and code that holds one never checks it again.

use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use till_kit::{ApiKeyId, Currency, HumanText, Secret};

/// A value that does not parse: the field at fault and, for humans, why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccessError {
    /// The field breaks a rule its schema states (400).
    #[error("{1}")]
    Invalid(&'static str, String),
    /// The field is well-formed but breaks a rule no schema can state, such as a check
    /// digit or agreement with another field (422 `rule_violated`).
    #[error("{1}")]
    Rule(&'static str, String),
}

impl AccessError {
    pub fn field(&self) -> &'static str {
        match self {
            AccessError::Invalid(field, _) | AccessError::Rule(field, _) => field,
        }
    }
}

const LEGAL_NAME_CHARS_MAX: usize = 200;
const KEY_NAME_CHARS_MAX: usize = 100;

/// A business's registered legal name: 1–200 characters of human text (no control or
/// bidirectional control characters), trimmed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LegalName(HumanText);

impl LegalName {
    pub fn parse(text: &str) -> Result<LegalName, AccessError> {
        HumanText::name(text, LEGAL_NAME_CHARS_MAX)
            .map(LegalName)
            .map_err(|refusal| AccessError::Invalid("legal_name", format!("legal_name {refusal}.")))
    }

    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

/// The countries Till serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Country {
    GB,
    IN,
}

impl Country {
    pub fn parse(code: &str) -> Result<Country, AccessError> {
        match code {
            "GB" => Ok(Country::GB),
            "IN" => Ok(Country::IN),
            _ => Err(AccessError::Invalid("country", "country must be GB or IN.".into())),
        }
    }

    pub fn code(self) -> &'static str {
        match self {
            Country::GB => "GB",
            Country::IN => "IN",
        }
    }

    pub fn home_currency(self) -> Currency {
        match self {
            Country::GB => Currency::GBP,
            Country::IN => Currency::INR,
        }
    }
}

/// A UK VAT registration number: `GB` then 9 digits passing HMRC's modulus 97 check
/// (either the original or the "97-55" series), 12 digits for a branch trader (the first
/// nine checked the same way), or `GBGD`/`GBHA` and three digits for government
/// departments (000–499) and health authorities (500–999). Spaces are ignored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UkVatNumber(String);

impl UkVatNumber {
    pub fn parse(text: &str) -> Result<UkVatNumber, AccessError> {
        let invalid =
            || AccessError::Rule("tax_registration", "not a valid UK VAT number (GB followed by 9 digits).".into());
        let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect::<String>().to_ascii_uppercase();
        // Only ASCII letters and digits from here on (a non-ASCII character used to be
        // sliced inside: a 500), and the checks below work on bytes, never str slices.
        if !compact.bytes().all(|byte| byte.is_ascii_alphanumeric()) {
            return Err(invalid());
        }
        let rest = compact.as_bytes().strip_prefix(b"GB").ok_or_else(invalid)?;
        let valid = match rest {
            [b'G', b'D', number @ ..] if number.len() == 3 => digits(number).is_some_and(|n| n <= 499),
            [b'H', b'A', number @ ..] if number.len() == 3 => digits(number).is_some_and(|n| (500..=999).contains(&n)),
            nine if nine.len() == 9 => mod97_valid(nine),
            [nine @ .., b0, b1, b2] if nine.len() == 9 => mod97_valid(nine) && digits(&[*b0, *b1, *b2]).is_some(),
            _ => false,
        };
        if valid {
            Ok(UkVatNumber(compact))
        } else {
            Err(invalid())
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The number written in ASCII digits `bytes` (at most 9 of them), if they all are.
fn digits(bytes: &[u8]) -> Option<u32> {
    if bytes.is_empty() || bytes.len() > 9 || !bytes.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(bytes.iter().fold(0, |number, digit| number * 10 + u32::from(digit - b'0')))
}

fn mod97_valid(bytes: &[u8]) -> bool {
    if bytes.len() != 9 || !bytes.iter().all(u8::is_ascii_digit) {
        return false;
    }
    let weighted: u32 =
        bytes[..7].iter().zip((2..=8).rev()).map(|(digit, weight)| u32::from(digit - b'0') * weight).sum();
    let check = u32::from(bytes[7] - b'0') * 10 + u32::from(bytes[8] - b'0');
    let total = weighted + check;
    total.is_multiple_of(97) || (total + 55).is_multiple_of(97)
}

/// An Indian GST identification number: 2-digit state code, the holder's 10-character
/// PAN, an entity number, `Z`, and a base-36 check character.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gstin(String);

const GSTIN_ALPHABET: &[u8; 36] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ";

impl Gstin {
    pub fn parse(text: &str) -> Result<Gstin, AccessError> {
        let invalid = |why: &str| AccessError::Rule("tax_registration", format!("not a valid GSTIN: {why}."));
        let gstin = text.trim().to_ascii_uppercase();
        let bytes = gstin.as_bytes();
        if bytes.len() != 15 || !bytes.iter().all(|b| GSTIN_ALPHABET.contains(b)) {
            return Err(invalid("it must be 15 letters and digits"));
        }
        let state: u32 = digits(&bytes[..2]).ok_or_else(|| invalid("it must start with a state code"))?;
        if !((1..=38).contains(&state) || state == 97 || state == 99) {
            return Err(invalid("the state code is not one of India's"));
        }
        let pan = &bytes[2..12];
        let pan_shape = pan[..5].iter().all(u8::is_ascii_uppercase)
            && pan[5..9].iter().all(u8::is_ascii_digit)
            && pan[9].is_ascii_uppercase();
        if !pan_shape {
            return Err(invalid("characters 3 to 12 must be a PAN (5 letters, 4 digits, 1 letter)"));
        }
        if bytes[12] == b'0' || bytes[13] != b'Z' {
            return Err(invalid("character 13 must be 1-9 or A-Z and character 14 must be Z"));
        }
        if gstin_check_character(&bytes[..14]) != Some(bytes[14]) {
            return Err(invalid("the check character does not match"));
        }
        Ok(Gstin(gstin))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn state_code(&self) -> &str {
        // A GSTIN is 15 ASCII characters (checked by `parse`), so 2 is a boundary.
        self.0.get(..2).unwrap_or_default()
    }
}

/// GSTN's check character: a Luhn mod 36 over the first 14 characters, weights 1 and 2
/// alternating from the left.
fn gstin_check_character(first14: &[u8]) -> Option<u8> {
    let mut sum = 0_u32;
    for (index, byte) in first14.iter().enumerate() {
        let value = GSTIN_ALPHABET.iter().position(|c| c == byte)? as u32;
        let weighted = value * if index.is_multiple_of(2) { 1 } else { 2 };
        sum += weighted / 36 + weighted % 36;
    }
    Some(GSTIN_ALPHABET[((36 - sum % 36) % 36) as usize])
}

/// A tax registration, tied to the business's country.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaxRegistration {
    UkVat(UkVatNumber),
    Gst(Gstin),
}

impl TaxRegistration {
    pub fn parse(country: Country, text: &str) -> Result<TaxRegistration, AccessError> {
        match country {
            Country::GB => UkVatNumber::parse(text).map(TaxRegistration::UkVat),
            Country::IN => Gstin::parse(text).map(TaxRegistration::Gst),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            TaxRegistration::UkVat(number) => number.as_str(),
            TaxRegistration::Gst(gstin) => gstin.as_str(),
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            TaxRegistration::UkVat(_) => "gb_vat",
            TaxRegistration::Gst(_) => "in_gst",
        }
    }
}

/// A business about to be created.
#[derive(Debug, Clone)]
pub struct NewBusiness {
    pub legal_name: LegalName,
    pub country: Country,
    pub default_currency: Currency,
    pub tax_registration: Option<TaxRegistration>,
}

impl NewBusiness {
    pub fn parse(
        legal_name: &str,
        country: &str,
        default_currency: Option<&str>,
        tax_registration: Option<&str>,
    ) -> Result<NewBusiness, AccessError> {
        let legal_name = LegalName::parse(legal_name)?;
        let country = Country::parse(country)?;
        let default_currency = match default_currency {
            None => country.home_currency(),
            Some(code) => {
                Currency::parse(code).map_err(|error| AccessError::Invalid("default_currency", error.to_string()))?
            }
        };
        let tax_registration = tax_registration.map(|text| TaxRegistration::parse(country, text)).transpose()?;
        Ok(NewBusiness { legal_name, country, default_currency, tax_registration })
    }
}

/// The name of an API key, for humans: 1–100 characters of human text, trimmed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyName(HumanText);

impl KeyName {
    pub fn parse(text: &str) -> Result<KeyName, AccessError> {
        HumanText::name(text, KEY_NAME_CHARS_MAX)
            .map(KeyName)
            .map_err(|refusal| AccessError::Invalid("name", format!("name {refusal}.")))
    }

    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

pub const API_KEY_PREFIX: &str = "till_sk_";
const SECRET_BYTES: usize = 32;
const TOKEN_BYTES: usize = 16 + SECRET_BYTES;

/// An API key as shown to its creator, once: `till_sk_` then base64url of the key's id
/// (16 bytes) and 256 random bits. The id lets authentication find the key's row by
/// primary key; the random part is stored only as its SHA-256 and compared in constant time.
pub struct IssuedApiKey {
    pub id: ApiKeyId,
    pub token: Secret<String>,
    pub secret_hash: [u8; 32],
}

impl IssuedApiKey {
    pub fn generate() -> IssuedApiKey {
        let id = ApiKeyId::generate();
        let mut secret = [0_u8; SECRET_BYTES];
        rand::rngs::OsRng.fill_bytes(&mut secret);
        let mut raw = Vec::with_capacity(TOKEN_BYTES);
        raw.extend_from_slice(id.as_uuid().as_bytes());
        raw.extend_from_slice(&secret);
        let token = format!("{API_KEY_PREFIX}{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&raw));
        IssuedApiKey { id, token: Secret::new(token), secret_hash: Sha256::digest(secret).into() }
    }
}

/// An API key as presented in `Authorization: Bearer`, parsed but not yet verified.
pub struct PresentedApiKey {
    pub id: ApiKeyId,
    secret_hash: [u8; 32],
}

impl PresentedApiKey {
    /// `None` when the text is not shaped like a Till API key at all.
    pub fn parse(token: &str) -> Option<PresentedApiKey> {
        let encoded = token.strip_prefix(API_KEY_PREFIX)?;
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(encoded).ok()?;
        if raw.len() != TOKEN_BYTES {
            return None;
        }
        let id = uuid::Uuid::from_slice(&raw[..16]).ok()?;
        Some(PresentedApiKey { id: ApiKeyId::from_uuid(id), secret_hash: Sha256::digest(&raw[16..]).into() })
    }

    /// Compares with the stored hash in constant time, so response timing says nothing
    /// about how much of a guessed secret was right.
    pub fn matches(&self, stored_hash: &[u8]) -> bool {
        stored_hash.len() == self.secret_hash.len() && bool::from(self.secret_hash.ct_eq(stored_hash))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn uk_vat_numbers() {
        for valid in ["GB999999973", "GB 999 9999 73", "gb999999973", "GB999999973001", "GBGD001", "GBHA599"] {
            assert!(UkVatNumber::parse(valid).is_ok(), "{valid}");
        }
        for invalid in [
            "GB999999974",
            "999999973",
            "GB99999997",
            "GBGD500",
            "GBHA499",
            "GB99999997X",
            "FR999999973",
            "",
            "GB12345678é12",
            "GBGé12",
            "GB99999997٣",
        ] {
            assert!(UkVatNumber::parse(invalid).is_err(), "{invalid}");
        }
    }

    #[test]
    fn gstins() {
        let valid = Gstin::parse("27AAPFU0939F1ZV");
        assert_eq!(valid.as_ref().map(Gstin::state_code), Ok("27"));
        assert!(Gstin::parse("27aapfu0939f1zv").is_ok(), "case is normalised");
        for invalid in [
            "27AAPFU0939F1ZW", // wrong check character
            "00AAPFU0939F1ZV", // no such state
            "40AAPFU0939F1ZV", // no such state
            "27AAPF00939F1ZV", // PAN shape
            "27AAPFU0939F0ZV", // entity number 0
            "27AAPFU0939F1YV", // 14th not Z
            "27AAPFU0939F1Z",  // short
            "27AAPFU0939F1Z-", // alphabet
        ] {
            assert!(Gstin::parse(invalid).is_err(), "{invalid}");
        }
    }

    #[test]
    fn tax_registration_follows_the_country() {
        assert!(TaxRegistration::parse(Country::GB, "27AAPFU0939F1ZV").is_err());
        assert!(TaxRegistration::parse(Country::IN, "GB999999973").is_err());
        assert!(NewBusiness::parse("Acme", "IN", None, Some("27AAPFU0939F1ZV")).is_ok());
        assert_eq!(NewBusiness::parse("Acme", "GB", None, None).map(|b| b.default_currency), Ok(Currency::GBP));
        assert!(NewBusiness::parse("Acme", "FR", None, None).is_err());
        assert!(NewBusiness::parse("  ", "GB", None, None).is_err());
        for hostile in ["Acme\0", "Acme\r\nLtd", "\u{202e}emcA", "Acme\u{1b}[2J"] {
            let refused = NewBusiness::parse(hostile, "GB", None, None).map(|_| ());
            assert!(matches!(&refused, Err(AccessError::Invalid("legal_name", _))), "{hostile:?}: {refused:?}");
        }
        let detail = KeyName::parse("").map(|_| ()).map_err(|error| error.to_string());
        assert_eq!(detail, Err("name must not be empty.".to_string()), "the detail says why, not just the field");
    }

    #[test]
    fn issued_keys_verify_and_others_do_not() {
        let issued = IssuedApiKey::generate();
        let presented = PresentedApiKey::parse(issued.token.expose_secret());
        let presented = presented.expect("a generated key parses");
        assert_eq!(presented.id, issued.id);
        assert!(presented.matches(&issued.secret_hash));
        let other = IssuedApiKey::generate();
        assert!(!presented.matches(&other.secret_hash));
        assert!(!presented.matches(&issued.secret_hash[..31]));
    }

    proptest! {
        #[test]
        fn a_changed_character_never_verifies(index in 8_usize..72, replacement in "[A-Za-z0-9_-]") {
            let issued = IssuedApiKey::generate();
            let token = issued.token.expose_secret().clone();
            prop_assume!(index < token.len());
            let mut tampered = token.clone();
            tampered.replace_range(index..=index, &replacement);
            prop_assume!(tampered != token);
            let verified = PresentedApiKey::parse(&tampered).is_some_and(|p| p.id == issued.id && p.matches(&issued.secret_hash));
            prop_assert!(!verified);
        }

        #[test]
        fn gstin_check_character_catches_any_single_substitution(index in 0_usize..14, replacement in 0_usize..36) {
            let valid = b"27AAPFU0939F1ZV";
            let mut changed = *valid;
            changed[index] = GSTIN_ALPHABET[replacement];
            prop_assume!(changed != *valid);
            prop_assert_ne!(gstin_check_character(&changed[..14]), Some(valid[14]));
        }

        #[test]
        fn parsers_never_panic(text in "\\PC{0,40}") {
            let _ = Gstin::parse(&text);
            let _ = UkVatNumber::parse(&text);
            let _ = UkVatNumber::parse(&format!("GB{text}"));
            let _ = PresentedApiKey::parse(&text);
        }
        /// Outside input of any kind (every Unicode scalar, control characters, up to
        /// thousands of characters): each parser answers, naming its field, with a
        /// detail that says what is wrong rather than only which field.
        #[test]
        fn hostile_input_is_refused_naming_the_field_with_a_reason(
            chars in proptest::collection::vec(any::<char>(), 0..3_000),
            prefix in prop_oneof![Just(""), Just("GB"), Just("27"), Just("  ")],
        ) {
            let text: String = prefix.chars().chain(chars).collect();
            let refusals = [
                ("tax_registration", TaxRegistration::parse(Country::GB, &text).err()),
                ("tax_registration", TaxRegistration::parse(Country::IN, &text).err()),
                ("legal_name", LegalName::parse(&text).err()),
                ("name", KeyName::parse(&text).err()),
                ("country", Country::parse(&text).err()),
            ];
            for (field, refusal) in refusals {
                let Some(refusal) = refusal else { continue };
                prop_assert_eq!(refusal.field(), field);
                let detail = refusal.to_string();
                prop_assert!(detail.len() > field.len() + 8, "{field}: the detail {detail:?} says too little");
                prop_assert!(detail.chars().count() < 300, "the detail echoes the input: {detail:?}");
            }
        }
    }
}
