//! The notifications domain, pure: recipients parsed once (e-mail addresses, E.164 phone
//! numbers), channels, statuses, and the rules that say which event notifies whom.

use std::fmt;

/// An e-mail address: RFC 5321/5322 syntax (the `email_address` crate), at most 254
/// characters, ASCII only (Till's messages are not sent with SMTPUTF8), no display name,
/// no line break or control character (nothing can become a second header).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EmailAddress(String);

pub const EMAIL_CHARS_MAX: usize = 254;

impl EmailAddress {
    pub fn parse(text: &str) -> Result<EmailAddress, String> {
        if text.is_empty() || text.len() > EMAIL_CHARS_MAX {
            return Err(format!("must be 1 to {EMAIL_CHARS_MAX} characters"));
        }
        if !text.bytes().all(|byte| byte.is_ascii_graphic()) {
            return Err(String::from("must be printable ASCII, without spaces or line breaks"));
        }
        let options = email_address::Options {
            allow_display_text: false,
            allow_domain_literal: false,
            ..email_address::Options::default()
        }
        .with_required_tld();
        let parsed = email_address::EmailAddress::parse_with_options(text, options)
            .map_err(|error| format!("is not an e-mail address ({error})"))?;
        if !parsed.domain().contains('.') {
            return Err(String::from("must have a domain with a dot (name@example.com)"));
        }
        Ok(EmailAddress(text.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// For people who may not see it whole (viewers, logs): `a***@example.com`.
    pub fn masked(&self) -> String {
        let (local, domain) = self.0.split_once('@').unwrap_or((&self.0, ""));
        let first: String = local.chars().take(1).collect();
        format!("{first}***@{domain}")
    }
}

/// A phone number in E.164 (`+` then 8 to 15 digits, no leading zero). An Indian number
/// (+91) is a 10-digit mobile number starting 6 to 9 (what TRAI's numbering plan gives
/// mobiles, and what SMS reaches); a UK one (+44) has 10 digits after the country code.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PhoneNumber(String);

impl PhoneNumber {
    pub fn parse(text: &str) -> Result<PhoneNumber, String> {
        let Some(digits) = text.strip_prefix('+') else {
            return Err(String::from("must be in E.164 form: + then the country code and number (+447700900123)"));
        };
        if !(8..=15).contains(&digits.len()) || !digits.bytes().all(|byte| byte.is_ascii_digit()) {
            return Err(String::from("must be + then 8 to 15 digits"));
        }
        if digits.starts_with('0') {
            return Err(String::from("a country code never starts with 0"));
        }
        if let Some(national) = digits.strip_prefix("91") {
            let mobile = national.len() == 10 && matches!(national.as_bytes().first(), Some(b'6'..=b'9'));
            if !mobile {
                return Err(String::from("an Indian number is +91 and 10 digits starting 6, 7, 8 or 9"));
            }
        }
        if let Some(national) = digits.strip_prefix("44") {
            if national.len() != 10 {
                return Err(String::from("a UK number is +44 and 10 digits (no leading 0)"));
            }
        }
        Ok(PhoneNumber(text.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `+44*******123`: the country code's first digits and the last three.
    pub fn masked(&self) -> String {
        let chars: Vec<char> = self.0.chars().collect();
        let head: String = chars.iter().take(3).collect();
        let tail: String = chars.iter().skip(chars.len().saturating_sub(3)).collect();
        format!("{head}{}{tail}", "*".repeat(chars.len().saturating_sub(6)))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Channel {
    Email,
    Sms,
}

impl Channel {
    pub fn parse(text: &str) -> Result<Channel, String> {
        match text {
            "email" => Ok(Channel::Email),
            "sms" => Ok(Channel::Sms),
            _ => Err(String::from("must be email or sms")),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Email => "email",
            Channel::Sms => "sms",
        }
    }
}

/// Where one notification goes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Address {
    Email(EmailAddress),
    Phone(PhoneNumber),
}

impl Address {
    pub fn as_str(&self) -> &str {
        match self {
            Address::Email(email) => email.as_str(),
            Address::Phone(phone) => phone.as_str(),
        }
    }

    pub fn masked(&self) -> String {
        match self {
            Address::Email(email) => email.masked(),
            Address::Phone(phone) => phone.masked(),
        }
    }

    /// A stored recipient, as the channel that stored it reads it.
    pub fn parse(channel: Channel, text: &str) -> Result<Address, String> {
        match channel {
            Channel::Email => EmailAddress::parse(text).map(Address::Email),
            Channel::Sms => PhoneNumber::parse(text).map(Address::Phone),
        }
    }
}

/// Whom a rule notifies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recipient {
    /// The customer the event names (a payment's `customer_email`, an order's customer).
    Customer,
    /// The business's finance contact, from its notification settings.
    Finance,
    /// This address.
    Fixed(Address),
}

impl Recipient {
    /// `customer`, `finance`, or an address of the rule's channel.
    pub fn parse(channel: Channel, text: &str) -> Result<Recipient, String> {
        match text {
            "customer" => Ok(Recipient::Customer),
            "finance" => Ok(Recipient::Finance),
            other => Address::parse(channel, other).map(Recipient::Fixed).map_err(|why| {
                format!(
                    "must be customer, finance, or an {} that {why}",
                    match channel {
                        Channel::Email => "e-mail address",
                        Channel::Sms => "E.164 phone number",
                    }
                )
            }),
        }
    }

    pub fn as_text(&self) -> &str {
        match self {
            Recipient::Customer => "customer",
            Recipient::Finance => "finance",
            Recipient::Fixed(address) => address.as_str(),
        }
    }
}

/// A rule's name: what tells one rule's notification of an event from another's.
/// 1–40 of `a-z`, `0-9`, `_`, `-`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RuleName(String);

impl RuleName {
    pub fn parse(text: &str) -> Result<RuleName, String> {
        let valid = (1..=40).contains(&text.len())
            && text
                .bytes()
                .all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'_' || byte == b'-');
        if !valid {
            return Err(String::from("must be 1 to 40 of a-z, 0-9, _ and -"));
        }
        Ok(RuleName(text.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// One rule: this event, by this channel, to this recipient, with this template (or the
/// built-in one for the event and channel).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub name: RuleName,
    pub event_type: &'static str,
    pub channel: Channel,
    pub recipient: Recipient,
    pub template_id: Option<uuid::Uuid>,
}

pub const RULES_MAX: usize = 20;

/// The rules a business has. Names are unique; at most [`RULES_MAX`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rules(Vec<Rule>);

impl Rules {
    pub fn new(rules: Vec<Rule>) -> Result<Rules, (usize, String)> {
        if rules.len() > RULES_MAX {
            return Err((RULES_MAX, format!("at most {RULES_MAX} rules")));
        }
        for (index, rule) in rules.iter().enumerate() {
            if rules.iter().take(index).any(|earlier| earlier.name == rule.name) {
                return Err((index, format!("the name {:?} is used by an earlier rule", rule.name.as_str())));
            }
        }
        Ok(Rules(rules))
    }

    /// What a new business starts with: a receipt by e-mail to the customer of every
    /// captured payment.
    pub fn default_for_new_business() -> Rules {
        Rules(vec![Rule {
            name: RuleName(String::from("receipt")),
            event_type: "payment_intent.succeeded",
            channel: Channel::Email,
            recipient: Recipient::Customer,
            template_id: None,
        }])
    }

    pub fn iter(&self) -> impl Iterator<Item = &Rule> {
        self.0.iter()
    }

    pub fn for_event<'a>(&'a self, event_type: &'a str) -> impl Iterator<Item = &'a Rule> {
        self.0.iter().filter(move |rule| rule.event_type == event_type)
    }
}

/// A notification's status. `queued` until a provider took it (`sent`), the provider
/// confirmed delivery (`delivered`, SMS), it gave up (`failed`, with the reason), or it
/// was never to be sent (`suppressed`: no recipient for it, with the reason).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Queued,
    Sent,
    Delivered,
    Failed,
    Suppressed,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Queued => "queued",
            Status::Sent => "sent",
            Status::Delivered => "delivered",
            Status::Failed => "failed",
            Status::Suppressed => "suppressed",
        }
    }

    pub fn parse(text: &str) -> Option<Status> {
        Some(match text {
            "queued" => Status::Queued,
            "sent" => Status::Sent,
            "delivered" => Status::Delivered,
            "failed" => Status::Failed,
            "suppressed" => Status::Suppressed,
            _ => return None,
        })
    }
}

impl fmt::Display for Status {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn email_addresses_are_parsed_once_and_hostile_ones_refused() {
        for good in ["ada@example.com", "a.b+tag@mail.example.co.uk"] {
            assert!(EmailAddress::parse(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "ada",
            "ada@localhost",
            "Ada <ada@example.com>",
            "ada@example.com\r\nBcc: eve@example.com",
            "ada@exa mple.com",
            "ädä@example.com",
            "ada@[127.0.0.1]",
        ] {
            assert!(EmailAddress::parse(bad).is_err(), "{bad:?}");
        }
        assert!(EmailAddress::parse(&format!("{}@example.com", "a".repeat(250))).is_err());
        assert_eq!(EmailAddress::parse("ada@example.com").map(|email| email.masked()), Ok("a***@example.com".into()));
    }

    #[test]
    fn phone_numbers_are_e164_and_indian_ones_are_mobiles() {
        for good in ["+447700900123", "+919876543210", "+14155550100"] {
            assert!(PhoneNumber::parse(good).is_ok(), "{good}");
        }
        for bad in ["07700900123", "+44 7700 900123", "+9112345678", "+915876543210", "+4477009001", "+0123456789", "+"]
        {
            assert!(PhoneNumber::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(PhoneNumber::parse("+447700900123").map(|phone| phone.masked()), Ok("+44*******123".into()));
    }

    #[test]
    fn rule_names_are_unique_and_bounded() {
        let rule = |name: &str| Rule {
            name: RuleName::parse(name).expect("a name"),
            event_type: "payout.failed",
            channel: Channel::Email,
            recipient: Recipient::Finance,
            template_id: None,
        };
        assert!(Rules::new(vec![rule("a"), rule("b")]).is_ok());
        assert_eq!(Rules::new(vec![rule("a"), rule("a")]).map_err(|(index, _)| index), Err(1));
        assert!(Rules::new((0..21).map(|n| rule(&format!("r{n}"))).collect()).is_err());
        assert!(RuleName::parse("Receipt").is_err());
    }
}
