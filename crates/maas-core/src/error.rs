//! Validation errors shared by the vocabulary types.

use std::fmt;

/// A value that failed validation: which field, what was given, and why.
///
/// The offending value is kept (truncated) so the message a user sees names it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {field} {value:?}: {reason}")]
pub struct ValidationError {
    /// The field or parameter name, as a user would write it.
    pub field: String,
    /// The rejected value (at most 128 characters of it).
    pub value: String,
    /// Why it was rejected.
    pub reason: String,
}

impl ValidationError {
    /// A new validation error; long values are cut to 128 characters.
    pub fn new(
        field: impl Into<String>,
        value: impl fmt::Display,
        reason: impl Into<String>,
    ) -> Self {
        let mut value = value.to_string();
        if value.chars().count() > 128 {
            value = value.chars().take(128).collect::<String>() + "...";
        }
        ValidationError {
            field: field.into(),
            value,
            reason: reason.into(),
        }
    }
}
