//! The one error type of this crate.

use crate::purpose::BootPurpose;

/// Why a boot configuration could not be built.
///
/// Every variant is a permanent problem with the input: retrying with the
/// same parameters gives the same answer. Rejected values are kept (cut to 128
/// characters) and shown with `{:?}` so a newline or a quote in them is
/// visible in a log line instead of breaking it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BootConfigError {
    /// A kernel parameter, or a value that becomes one, has a character a
    /// loader script would interpret (whitespace, a quote, `$`, `;`...).
    #[error("invalid kernel parameter {value:?}: {reason}")]
    InvalidKernelParam {
        /// The rejected text.
        value: String,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// A URL that is not a plain `http://host[:port][/path]`.
    #[error("invalid URL {value:?}: {reason}")]
    InvalidUrl {
        /// The rejected text.
        value: String,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// A path on the rack's HTTP server that is empty, climbs out of its
    /// root (`..`) or has characters outside `A-Z a-z 0-9 . _ - + ~`.
    #[error("invalid path {value:?}: {reason}")]
    InvalidPath {
        /// The rejected text.
        value: String,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// The purpose boots the ephemeral environment with the machine's own
    /// credentials (`by-id/<system_id>/?op=get_preseed`), so it needs the
    /// machine's system id.
    #[error("booting to {purpose} needs the machine's system id")]
    MissingSystemId {
        /// The purpose that was asked for.
        purpose: BootPurpose,
    },
    /// The kernel command line is longer than the kernel accepts.
    #[error("the kernel command line is {len} bytes, more than the {max} the kernel accepts")]
    CommandLineTooLong {
        /// Its length, with loader variables counted at their expanded size.
        len: usize,
        /// The limit.
        max: usize,
    },
}

/// Cuts a rejected value to 128 characters for an error message.
pub(crate) fn shown(value: &str) -> String {
    if value.chars().count() > 128 {
        value.chars().take(128).collect::<String>() + "..."
    } else {
        value.to_owned()
    }
}
