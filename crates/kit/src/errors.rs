//! Errors as text for logs.

/// An error and its causes, joined ("error sending request: … : operation timed out"),
/// so that a log line says what actually happened.
pub fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
