//! Human text: the free-text fields clients send (names, descriptions, metadata).
//!
//! One rule for all of them, so that no field is forgotten: no control characters (C0,
//! DEL and C1; a tab is allowed) and no bidirectional overrides or isolates (U+202A–U+202E,
//! U+2066–U+2069), which can make a name read differently from what it is ("Trojan
//! Source"). A NUL cannot be stored by PostgreSQL at all; CR and LF forge lines in logs,
//! CSV exports and e-mail headers. Lengths are counted in characters, never bytes, and
//! nothing here slices a string by byte index.

/// Human text as a JSON Schema pattern, for the OpenAPI document: no C0 control but tab,
/// no DEL or C1, no bidirectional override or isolate (what [`refusal_of`] refuses).
pub const HUMAN_TEXT_PATTERN: &str =
    "^[^\\u0000-\\u0008\\u000a-\\u001f\\u007f-\\u009f\\u202a-\\u202e\\u2066-\\u2069]*$";

/// A name ([`HumanText::name`]) as a JSON Schema pattern: human text with at least one
/// character that is not white space.
pub const NAME_PATTERN: &str = "^[^\\u0000-\\u0008\\u000a-\\u001f\\u007f-\\u009f\\u202a-\\u202e\\u2066-\\u2069]*[^\\s\\u0000-\\u001f\\u007f-\\u009f\\u202a-\\u202e\\u2066-\\u2069][^\\u0000-\\u0008\\u000a-\\u001f\\u007f-\\u009f\\u202a-\\u202e\\u2066-\\u2069]*$";

/// Text a client sent, checked: see the module documentation.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HumanText(String);

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TextError {
    #[error("must not be empty")]
    Empty,
    #[error("must be at most {chars_max} characters")]
    TooLong { chars_max: usize },
    #[error("must not contain control characters (such as NUL, CR or LF)")]
    ControlCharacter,
    #[error("must not contain bidirectional control characters (U+202A–U+202E, U+2066–U+2069)")]
    BidiControl,
}

/// Whether `character` may appear in human text.
pub fn refusal_of(character: char) -> Option<TextError> {
    if character.is_control() && character != '\t' {
        return Some(TextError::ControlCharacter);
    }
    if matches!(character, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}') {
        return Some(TextError::BidiControl);
    }
    None
}

/// Checks that `text` is at most `chars_max` characters of human text.
pub fn check(text: &str, chars_max: usize) -> Result<(), TextError> {
    if let Some(refusal) = text.chars().find_map(refusal_of) {
        return Err(refusal);
    }
    // Counting stops one past the limit, so a huge input costs no more than a short one.
    if text.chars().take(chars_max.saturating_add(1)).count() > chars_max {
        return Err(TextError::TooLong { chars_max });
    }
    Ok(())
}

impl HumanText {
    /// Text as sent (it may be empty), at most `chars_max` characters.
    pub fn parse(text: &str, chars_max: usize) -> Result<HumanText, TextError> {
        check(text, chars_max)?;
        Ok(HumanText(text.to_string()))
    }

    /// A name: leading and trailing whitespace removed, then 1 to `chars_max` characters.
    pub fn name(text: &str, chars_max: usize) -> Result<HumanText, TextError> {
        let trimmed = text.trim();
        if trimmed.is_empty() {
            return Err(TextError::Empty);
        }
        HumanText::parse(trimmed, chars_max)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

impl std::fmt::Display for HumanText {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(&self.0)
    }
}

impl AsRef<str> for HumanText {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn controls_and_bidi_overrides_are_refused() {
        for bad in ["a\0b", "line\nbreak", "cr\r", "esc\u{1b}[31m", "del\u{7f}", "c1\u{85}"] {
            assert_eq!(HumanText::parse(bad, 100), Err(TextError::ControlCharacter), "{bad:?}");
        }
        for bad in ["\u{202E}gnp.exe", "a\u{2066}b", "\u{202A}", "\u{2069}"] {
            assert_eq!(HumanText::parse(bad, 100), Err(TextError::BidiControl), "{bad:?}");
        }
        assert!(HumanText::parse("tab\tis fine", 100).is_ok());
        assert!(HumanText::parse("Chai Wālā — ₹ 😀 עברית", 100).is_ok());
    }

    #[test]
    fn lengths_are_characters_and_names_are_trimmed() {
        assert!(HumanText::parse(&"é".repeat(200), 200).is_ok());
        assert_eq!(HumanText::parse(&"é".repeat(201), 200), Err(TextError::TooLong { chars_max: 200 }));
        assert_eq!(HumanText::name("  Acme  ", 10).map(HumanText::into_string), Ok("Acme".to_string()));
        assert_eq!(HumanText::name(" \t ", 10), Err(TextError::Empty));
        assert_eq!(HumanText::parse("", 10).map(HumanText::into_string), Ok(String::new()));
    }

    proptest! {
        #[test]
        fn accepted_text_has_no_refused_character(text in "\\PC{0,60}|[\\x00-\\x{3000}]{0,60}") {
            if let Ok(parsed) = HumanText::parse(&text, 60) {
                prop_assert!(parsed.as_str().chars().all(|c| refusal_of(c).is_none()));
                prop_assert!(parsed.as_str().chars().count() <= 60);
            }
        }
    }
}
