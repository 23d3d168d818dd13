//! Who a payout goes to, checked offline before anything is stored or sent (pure).
//!
//! Three kinds: a UK account (sort code and account number, which must pass modulus
//! checking), an Indian bank account (IFSC and account number) and an Indian VPA. Every
//! refusal names the field, so the API answers a 400 that says what to fix.

use till_kit::HumanText;

use crate::modulus::{self, Malformed};

/// Characters in a beneficiary's name. FPS carries 140 in a payee name field, CoP
/// compares the name the bank holds; 140 leaves room for any real one.
pub const NAME_CHARS_MAX: usize = 140;
/// Digits in an Indian account number: no RBI-wide format exists; banks issue 9 to 18.
pub const IN_ACCOUNT_DIGITS: std::ops::RangeInclusive<usize> = 9..=18;

/// Where the money goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    UkAccount { sort_code: String, account_number: String },
    InAccount { ifsc: String, account_number: String },
    InVpa { vpa: String },
}

impl Destination {
    pub fn kind(&self) -> &'static str {
        match self {
            Destination::UkAccount { .. } => "uk_account",
            Destination::InAccount { .. } => "in_account",
            Destination::InVpa { .. } => "in_vpa",
        }
    }

    /// The last four digits of its account number, the most the API shows of it (`None`
    /// for a VPA, an address the payee shares whole).
    pub fn last4(&self) -> Option<&str> {
        match self {
            Destination::UkAccount { account_number, .. } | Destination::InAccount { account_number, .. } => {
                account_number.get(account_number.len().saturating_sub(4)..)
            }
            Destination::InVpa { .. } => None,
        }
    }
}

/// A beneficiary as asked for, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewBeneficiary {
    pub name: HumanText,
    pub destination: Destination,
}

/// The field at fault and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub field: &'static str,
    pub message: String,
    /// A rule between fields (one the kind needs is missing, or one it does not take is
    /// there), rather than a field that is wrong in itself.
    pub between_fields: bool,
}

fn refuse(field: &'static str, message: impl Into<String>) -> Refusal {
    Refusal { field, message: message.into(), between_fields: false }
}

fn rule(field: &'static str, message: impl Into<String>) -> Refusal {
    Refusal { field, message: message.into(), between_fields: true }
}

/// The request's fields, as sent (the API's JSON, already typed as strings).
#[derive(Debug, Default, Clone)]
pub struct Fields<'a> {
    pub kind: &'a str,
    pub name: Option<&'a str>,
    pub sort_code: Option<&'a str>,
    pub account_number: Option<&'a str>,
    pub ifsc: Option<&'a str>,
    pub vpa: Option<&'a str>,
}

/// Checks a beneficiary: its name, the fields its kind needs (and none it does not),
/// their syntax, and for a UK account, modulus checking.
pub fn parse(fields: &Fields<'_>) -> Result<NewBeneficiary, Refusal> {
    let name = fields.name.ok_or_else(|| refuse("name", "name is required."))?;
    let name = HumanText::name(name, NAME_CHARS_MAX).map_err(|error| refuse("name", format!("name {error}.")))?;
    let need = |field: &'static str, value: Option<&str>| -> Result<String, Refusal> {
        value.map(str::to_string).ok_or_else(|| rule(field, format!("{field} is required for a {}.", fields.kind)))
    };
    let forbid = |field: &'static str, value: Option<&str>| -> Result<(), Refusal> {
        match value {
            Some(_) => Err(rule(field, format!("{field} is not a field of a {}.", fields.kind))),
            None => Ok(()),
        }
    };
    let destination = match fields.kind {
        "uk_account" => {
            forbid("ifsc", fields.ifsc)?;
            forbid("vpa", fields.vpa)?;
            let sort_code = need("sort_code", fields.sort_code)?;
            let account_number = need("account_number", fields.account_number)?;
            match modulus::check(&sort_code, &account_number) {
                Err(Malformed::SortCode) => return Err(refuse("sort_code", "sort_code is 6 digits.")),
                Err(Malformed::AccountNumber) => {
                    return Err(refuse("account_number", "account_number is 8 digits."));
                }
                Ok(outcome) if !outcome.passes() => {
                    return Err(refuse(
                        "account_number",
                        "The sort code and account number fail modulus checking: one of them is mistyped.",
                    ));
                }
                Ok(_) => {}
            }
            Destination::UkAccount { sort_code, account_number }
        }
        "in_account" => {
            forbid("sort_code", fields.sort_code)?;
            forbid("vpa", fields.vpa)?;
            let ifsc = need("ifsc", fields.ifsc)?;
            if !till_kit::bank::is_ifsc(&ifsc) {
                return Err(refuse(
                    "ifsc",
                    "ifsc is 4 capital letters, a 0, then 6 capital letters or digits (HDFC0000001).",
                ));
            }
            let account_number = need("account_number", fields.account_number)?;
            if !IN_ACCOUNT_DIGITS.contains(&account_number.len()) || !account_number.bytes().all(|b| b.is_ascii_digit())
            {
                return Err(refuse("account_number", "account_number is 9 to 18 digits."));
            }
            Destination::InAccount { ifsc, account_number }
        }
        "in_vpa" => {
            forbid("sort_code", fields.sort_code)?;
            forbid("ifsc", fields.ifsc)?;
            forbid("account_number", fields.account_number)?;
            let vpa = need("vpa", fields.vpa)?;
            if !till_kit::bank::is_vpa(&vpa) {
                return Err(refuse("vpa", "vpa is a UPI address, name@handle (letters, digits, . - _ before the @)."));
            }
            Destination::InVpa { vpa }
        }
        _ => return Err(refuse("type", "type is uk_account, in_account or in_vpa.")),
    };
    Ok(NewBeneficiary { name, destination })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uk<'a>(sort_code: &'a str, account_number: &'a str) -> Fields<'a> {
        Fields {
            kind: "uk_account",
            name: Some("Acme Supplies Ltd"),
            sort_code: Some(sort_code),
            account_number: Some(account_number),
            ..Fields::default()
        }
    }

    fn field_of(fields: &Fields<'_>) -> &'static str {
        parse(fields).expect_err("refused").field
    }

    #[test]
    fn a_uk_account_that_passes_modulus_checking_is_taken() {
        let taken = parse(&uk("089999", "66374958")).expect("valid");
        assert_eq!(taken.destination.kind(), "uk_account");
        assert_eq!(taken.destination.last4(), Some("4958"));
    }

    #[test]
    fn uk_refusals_name_the_field() {
        assert_eq!(field_of(&uk("08999", "66374958")), "sort_code");
        assert_eq!(field_of(&uk("0899991", "66374958")), "sort_code");
        assert_eq!(field_of(&uk("089999", "6637495a")), "account_number");
        assert_eq!(field_of(&uk("089999", "66374959")), "account_number", "fails modulus 10");
        assert_eq!(field_of(&Fields { ifsc: Some("HDFC0000001"), ..uk("089999", "66374958") }), "ifsc");
    }

    #[test]
    fn names_are_one_to_140_characters_of_text() {
        assert_eq!(field_of(&Fields { name: Some(""), ..uk("089999", "66374958") }), "name");
        assert_eq!(field_of(&Fields { name: Some("   "), ..uk("089999", "66374958") }), "name");
        let long = "x".repeat(200);
        assert_eq!(field_of(&Fields { name: Some(&long), ..uk("089999", "66374958") }), "name");
        assert_eq!(field_of(&Fields { name: Some("A\r\nBcc: x"), ..uk("089999", "66374958") }), "name");
        assert_eq!(field_of(&Fields { name: None, ..uk("089999", "66374958") }), "name");
        let taken = parse(&Fields { name: Some("  Zoë Ltd  "), ..uk("089999", "66374958") }).expect("valid");
        assert_eq!(taken.name.as_str(), "Zoë Ltd");
    }

    #[test]
    fn indian_accounts_and_vpas() {
        let account = Fields {
            kind: "in_account",
            name: Some("Sharma Traders"),
            ifsc: Some("HDFC0000001"),
            account_number: Some("50100012345678"),
            ..Fields::default()
        };
        assert_eq!(parse(&account).expect("valid").destination.last4(), Some("5678"));
        assert_eq!(field_of(&Fields { ifsc: Some("HDFC1000001"), ..account.clone() }), "ifsc");
        assert_eq!(field_of(&Fields { ifsc: Some("hdfc0000001"), ..account.clone() }), "ifsc");
        assert_eq!(field_of(&Fields { account_number: Some("12345678"), ..account.clone() }), "account_number");
        assert_eq!(
            field_of(&Fields { account_number: Some("1234567890123456789"), ..account.clone() }),
            "account_number"
        );
        assert_eq!(field_of(&Fields { ifsc: None, ..account.clone() }), "ifsc");
        let vpa = Fields { kind: "in_vpa", name: Some("Ravi"), vpa: Some("ravi@okhdfcbank"), ..Fields::default() };
        assert_eq!(parse(&vpa).expect("valid").destination, Destination::InVpa { vpa: "ravi@okhdfcbank".into() });
        assert_eq!(field_of(&Fields { vpa: Some("ravi"), ..vpa.clone() }), "vpa");
        assert_eq!(field_of(&Fields { vpa: Some("ravi@ok@x"), ..vpa.clone() }), "vpa");
        assert_eq!(field_of(&Fields { account_number: Some("123456789"), ..vpa.clone() }), "account_number");
        assert_eq!(field_of(&Fields { kind: "iban", ..vpa }), "type");
    }

    proptest::proptest! {
        #[test]
        fn never_panics(kind in "\\PC{0,12}", name in "\\PC{0,160}", a in "\\PC{0,20}", b in "\\PC{0,20}") {
            let fields = Fields { kind: &kind, name: Some(&name), sort_code: Some(&a), account_number: Some(&b),
                                  ifsc: None, vpa: None };
            let _ = parse(&fields);
        }
    }
}
