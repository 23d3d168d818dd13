//! `Secret<T>`: a value that must not leak through logs, debug output or serialization.
//!
//! `Debug` and `Display` print a mask, there is no `Serialize`, and reading the value takes
//! an explicit `expose_secret()` so every use is easy to find in review.

use std::fmt;

#[derive(Clone, PartialEq, Eq)]
pub struct Secret<T>(T);

impl<T> Secret<T> {
    pub fn new(value: T) -> Secret<T> {
        Secret(value)
    }

    pub fn expose_secret(&self) -> &T {
        &self.0
    }

    pub fn into_exposed(self) -> T {
        self.0
    }
}

impl<T> From<T> for Secret<T> {
    fn from(value: T) -> Secret<T> {
        Secret(value)
    }
}

impl<T> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl<T> fmt::Display for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        #[test]
        fn debug_and_display_never_show_the_value(value in "[a-zA-Z0-9]{4,40}") {
            let secret = Secret::new(value.clone());
            let debug = format!("{secret:?}");
            let display = format!("{secret}");
            let nested = format!("{:#?}", Some(&secret));
            proptest::prop_assert!(!debug.contains(&value));
            proptest::prop_assert!(!display.contains(&value));
            proptest::prop_assert!(!nested.contains(&value));
            proptest::prop_assert_eq!(secret.expose_secret(), &value);
        }
    }
}
