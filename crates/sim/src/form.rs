//! Form bodies as providers such as Stripe take them: `key=value` pairs, with nested keys
//! written `metadata[order]=42`.

use std::collections::BTreeMap;

/// A parsed form: each key's last value, and `metadata[…]` gathered apart.
#[derive(Debug, Default)]
pub struct Form {
    pub fields: BTreeMap<String, String>,
    pub metadata: BTreeMap<String, String>,
}

impl Form {
    pub fn parse(body: &[u8]) -> Form {
        let mut form = Form::default();
        for (key, value) in form_urlencoded::parse(body) {
            match key.strip_prefix("metadata[").and_then(|rest| rest.strip_suffix(']')) {
                Some(name) => {
                    form.metadata.insert(name.to_string(), value.into_owned());
                }
                None => {
                    form.fields.insert(key.into_owned(), value.into_owned());
                }
            }
        }
        form
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.fields.get(key).map(String::as_str)
    }

    /// Every field except those in `known`: the simulator refuses them, as the provider does.
    pub fn unknown(&self, known: &[&str]) -> Option<&str> {
        self.fields.keys().map(String::as_str).find(|key| !known.contains(key) && !key.starts_with("expand["))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_metadata_and_plain_fields() {
        let form = Form::parse(b"amount=1000&currency=gbp&metadata%5Border%5D=42&metadata[note]=a%20b");
        assert_eq!(form.get("amount"), Some("1000"));
        assert_eq!(form.metadata.get("order").map(String::as_str), Some("42"));
        assert_eq!(form.metadata.get("note").map(String::as_str), Some("a b"));
        assert_eq!(form.unknown(&["amount", "currency"]), None);
        assert_eq!(form.unknown(&["amount"]), Some("currency"));
    }
}
