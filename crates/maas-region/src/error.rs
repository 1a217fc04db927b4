//! API errors and how they look on the wire (MAAS's status codes, text or
//! JSON bodies; see section 1.5 of the spec).

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use maas_core::repo::RepositoryError;

/// An API failure, mapped to MAAS's status codes.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// 400 with a text body.
    #[error("{0}")]
    BadRequest(String),
    /// 400 with a JSON body `{"field": ["message"]}`.
    #[error("{field}: {message}")]
    Field {
        /// The parameter.
        field: String,
        /// What is wrong with it.
        message: String,
    },
    /// 401 without credentials.
    #[error("Forbidden")]
    Unauthenticated,
    /// 401 with bad credentials (`Authorization Error: ...`).
    #[error("Authorization Error: {0}")]
    BadCredentials(String),
    /// 403.
    #[error("{0}")]
    Forbidden(String),
    /// 404.
    #[error("{0}")]
    NotFound(String),
    /// 405.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// 409.
    #[error("{0}")]
    Conflict(String),
    /// 410.
    #[error("{0}")]
    Gone(String),
    /// 503: a rack or BMC could not carry out a power action.
    #[error("{0}")]
    Unavailable(String),
    /// 500: a failure of ours (the store); the body does not leak details.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    /// A missing required parameter.
    pub(crate) fn required(field: &str) -> Self {
        ApiError::Field {
            field: field.into(),
            message: "This field is required.".into(),
        }
    }

    /// A parameter with a bad value.
    pub(crate) fn invalid(field: &str, message: impl Into<String>) -> Self {
        ApiError::Field {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl From<RepositoryError> for ApiError {
    fn from(e: RepositoryError) -> Self {
        match e {
            RepositoryError::NotFound { kind, key } => {
                ApiError::NotFound(format!("No {kind} matches the given query ({key})."))
            }
            RepositoryError::AlreadyExists { kind, key } => {
                ApiError::BadRequest(format!("A {kind} named {key} already exists."))
            }
            RepositoryError::Conflict { .. } | RepositoryError::Lifecycle(_) => {
                ApiError::Conflict(e.to_string())
            }
            RepositoryError::NoMatch(why) => {
                ApiError::Conflict(format!("No available machine matches constraints: {why}"))
            }
            RepositoryError::Validation(v) => ApiError::BadRequest(v.to_string()),
            RepositoryError::Ipam(i) => ApiError::Conflict(i.to_string()),
            other => {
                tracing::error!(error = %other, "store failure");
                ApiError::Internal(other.to_string())
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match &self {
            ApiError::BadRequest(_) | ApiError::Field { .. } => StatusCode::BAD_REQUEST,
            ApiError::Unauthenticated | ApiError::BadCredentials(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Gone(_) => StatusCode::GONE,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let mut resp = match &self {
            ApiError::Field { field, message } => (
                status,
                [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
                serde_json::json!({ field.as_str(): [message] }).to_string(),
            )
                .into_response(),
            ApiError::Internal(_) => (
                status,
                [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                "Internal server error.".to_owned(),
            )
                .into_response(),
            other => (
                status,
                [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                other.to_string(),
            )
                .into_response(),
        };
        if matches!(self, ApiError::BadCredentials(_)) {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("OAuth realm=\"OAuth\""),
            );
        }
        resp
    }
}
