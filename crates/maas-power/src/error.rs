//! What can go wrong talking to a BMC, and whether trying again can help.

/// A boxed error cause, kept as the `source` of a [`PowerError`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why a power operation (or setting a driver up) failed.
///
/// [`PowerError::is_retryable`] is what the [`Executor`](crate::Executor)
/// asks: connection and action failures are retried with backoff; bad
/// settings, refused credentials, a missing tool and unsupported operations
/// stop at once. Messages never contain secrets: secret parameters are
/// named, never shown.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PowerError {
    /// No driver of that name is registered.
    #[error("no power driver named {name:?} is registered")]
    UnknownDriver {
        /// The name asked for.
        name: String,
    },
    /// A driver of that name is already registered.
    #[error("a power driver named {name:?} is already registered")]
    DuplicateDriver {
        /// The name.
        name: String,
    },
    /// A parameter the driver does not declare.
    #[error("power parameter {field:?} is not a setting of driver {driver:?}")]
    UnknownParameter {
        /// The driver.
        driver: String,
        /// The parameter.
        field: String,
    },
    /// A required parameter is missing or empty.
    #[error("power parameter {field:?} is required by driver {driver:?}")]
    MissingParameter {
        /// The driver.
        driver: String,
        /// The parameter.
        field: String,
    },
    /// A parameter's value does not fit its field (the value is shown only
    /// for fields that are not secret).
    #[error("power parameter {field:?} is invalid: {reason}")]
    InvalidParameter {
        /// The parameter.
        field: String,
        /// What is wrong, with the value where it is not secret.
        reason: String,
    },
    /// The BMC cannot be reached (refused, reset, timed out, DNS).
    #[error("cannot reach BMC {target}")]
    Connection {
        /// The BMC (address or URI, never credentials).
        target: String,
        /// The cause.
        #[source]
        source: BoxError,
    },
    /// The BMC refused the credentials.
    #[error("BMC {target} refused the credentials")]
    Auth {
        /// The BMC.
        target: String,
    },
    /// The BMC's TLS certificate is not trusted (and self-signed
    /// certificates were not accepted by the settings).
    #[error("BMC {target} presented a TLS certificate that is not trusted")]
    Tls {
        /// The BMC.
        target: String,
        /// The cause.
        #[source]
        source: BoxError,
    },
    /// The BMC was reached but the action failed (a 5xx, a command error,
    /// the state did not change): worth another try.
    #[error("BMC {target} failed to {operation}: {detail}")]
    Action {
        /// The BMC.
        target: String,
        /// What was asked (`power on`, `query`...).
        operation: String,
        /// What the BMC said.
        detail: String,
    },
    /// No answer within the time allowed for one attempt.
    #[error("BMC {target} did not answer {operation} within {after:?}")]
    Timeout {
        /// The BMC.
        target: String,
        /// What was asked.
        operation: String,
        /// The time allowed.
        after: std::time::Duration,
    },
    /// The BMC refused the request as malformed or not allowed (an HTTP
    /// 4xx other than 401/403/404): another try would be refused again.
    #[error("BMC {target} refused to {operation}: {detail}")]
    Refused {
        /// The BMC.
        target: String,
        /// What was asked.
        operation: String,
        /// What the BMC said.
        detail: String,
    },
    /// The BMC answered with something we cannot parse.
    #[error("BMC {target} sent a reply we cannot use: {detail}")]
    BadReply {
        /// The BMC.
        target: String,
        /// What is wrong with it.
        detail: String,
    },
    /// The BMC does not know the machine or resource the settings name
    /// (no such domain, no such system): a settings problem.
    #[error("BMC {target} has no {what}")]
    NotFound {
        /// The BMC.
        target: String,
        /// What was looked for (`domain "node-1"`, `system "abc"`).
        what: String,
    },
    /// The driver or this BMC does not support the operation.
    #[error("driver {driver:?} does not support {operation} here")]
    Unsupported {
        /// The driver.
        driver: String,
        /// The operation.
        operation: String,
    },
    /// A program the driver runs is not installed.
    #[error("the {tool:?} program is not available")]
    ToolMissing {
        /// The program.
        tool: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

impl PowerError {
    /// Whether trying again, later, can succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            PowerError::Connection { .. }
                | PowerError::Action { .. }
                | PowerError::Timeout { .. }
                | PowerError::BadReply { .. }
        )
    }

    /// A short stable name for the kind of error (for records and metrics).
    pub fn kind(&self) -> &'static str {
        match self {
            PowerError::UnknownDriver { .. } => "unknown_driver",
            PowerError::DuplicateDriver { .. } => "duplicate_driver",
            PowerError::UnknownParameter { .. } => "unknown_parameter",
            PowerError::MissingParameter { .. } => "missing_parameter",
            PowerError::InvalidParameter { .. } => "invalid_parameter",
            PowerError::Connection { .. } => "connection",
            PowerError::Auth { .. } => "auth",
            PowerError::Tls { .. } => "tls",
            PowerError::Action { .. } => "action",
            PowerError::Timeout { .. } => "timeout",
            PowerError::Refused { .. } => "refused",
            PowerError::BadReply { .. } => "bad_reply",
            PowerError::NotFound { .. } => "not_found",
            PowerError::Unsupported { .. } => "unsupported",
            PowerError::ToolMissing { .. } => "tool_missing",
        }
    }

    /// The error and its chain of causes on one line (`a: b: c`).
    pub fn chain(&self) -> String {
        let mut out = self.to_string();
        let mut cur = std::error::Error::source(self);
        while let Some(e) = cur {
            out.push_str(": ");
            out.push_str(&e.to_string());
            cur = e.source();
        }
        out
    }
}
