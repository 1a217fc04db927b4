//! The one error type of this crate.

use std::path::PathBuf;

/// What went wrong reading a stream, syncing it, or using the store.
///
/// `Display` names the thing that was wrong and never repeats the source
/// error's text; walk `source()` for the chain.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImageError {
    /// A local file or directory could not be read or written.
    #[error("I/O error on {path}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// An HTTP transfer failed before an answer (connection refused, reset,
    /// timed out, cut mid-body).
    #[error("transfer of {url} failed")]
    Transfer {
        /// What was being fetched.
        url: String,
        /// The cause.
        #[source]
        source: reqwest::Error,
    },
    /// The server answered with a status we cannot use.
    #[error("{url} answered HTTP {status}")]
    HttpStatus {
        /// What was being fetched.
        url: String,
        /// The status code.
        status: u16,
    },
    /// The source has no such document or file (HTTP 404, no such file).
    #[error("{location} does not exist")]
    NotFound {
        /// The URL or path.
        location: String,
    },
    /// The source ended a file before the size the stream announced (a
    /// connection closed early); the bytes so far are kept for a resume.
    #[error("{path}: the transfer ended after {actual} of {expected} bytes")]
    Truncated {
        /// The stream path of the file.
        path: String,
        /// Size announced by the stream.
        expected: u64,
        /// Bytes received.
        actual: u64,
    },
    /// A metadata file (index or products) is not the JSON we expect.
    #[error("{path} is not a valid SimpleStreams document")]
    BadMetadata {
        /// The stream path of the document.
        path: String,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
    /// A stream names something this crate refuses to follow (a path with
    /// `..`, an absolute path, a missing field).
    #[error("{path}: {reason}")]
    InvalidStream {
        /// The stream path of the document or item.
        path: String,
        /// What was wrong.
        reason: String,
    },
    /// A keyring is configured and the stream offers no signed document
    /// (or the document is not an OpenPGP cleartext-signed message).
    #[error("{path} is not signed, and a keyring is configured")]
    Unsigned {
        /// The stream path that was expected to be signed.
        path: String,
    },
    /// The document is signed, but no signature verifies with any key of the
    /// keyring (tampered text, or a key we do not trust).
    #[error("the signature on {path} does not verify with the keyring")]
    BadSignature {
        /// The stream path of the signed document.
        path: String,
    },
    /// A keyring or signing key could not be read.
    #[error("cannot use OpenPGP key material from {what}")]
    Key {
        /// Which key or file.
        what: String,
        /// The cause.
        #[source]
        source: pgp::errors::Error,
    },
    /// Signing a document failed.
    #[error("cannot sign {path}")]
    Sign {
        /// The stream path of the document.
        path: String,
        /// The cause.
        #[source]
        source: pgp::errors::Error,
    },
    /// A downloaded or uploaded file's size is not what the stream says.
    #[error("{path}: size {actual} bytes, the stream says {expected}")]
    SizeMismatch {
        /// The stream path of the file.
        path: String,
        /// Size announced by the stream.
        expected: u64,
        /// Size received (at least; reading stops one byte past `expected`).
        actual: u64,
    },
    /// A downloaded file's sha256 is not what the stream says.
    #[error("{path}: sha256 {actual}, the stream says {expected}")]
    DigestMismatch {
        /// The stream path of the file.
        path: String,
        /// Digest announced by the stream.
        expected: String,
        /// Digest of the bytes received.
        actual: String,
    },
    /// The selections matched no product in the stream.
    #[error("no product in the stream matches the selections")]
    NothingSelected,
    /// A name given to the store (custom image name, architecture, file
    /// type) is not usable in a path.
    #[error("invalid {field} {value:?}: {reason}")]
    InvalidName {
        /// Which field.
        field: &'static str,
        /// The value given.
        value: String,
        /// What is wrong with it.
        reason: &'static str,
    },
}

impl ImageError {
    /// Whether trying the same operation again may succeed (network trouble,
    /// a server error), as opposed to a stream that is wrong.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Transfer { .. } | Self::Truncated { .. } => true,
            Self::HttpStatus { status, .. } => *status >= 500 || *status == 429 || *status == 408,
            _ => false,
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
}
