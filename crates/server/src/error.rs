//! The one error type handlers return, answered as `application/problem+json` (RFC 9457).
//!
//! `status_code` matches every variant with no catch-all, so a new variant forces a decision
//! about its status. A 5xx body never carries internal error text: the cause chain goes to the
//! log, the client gets a short title.

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

/// What can go wrong while answering a request.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request is malformed; the text says how (it is shown to the client).
    #[error("{0}")]
    BadRequest(String),
    /// The body exceeds `server.max_body_bytes`.
    #[error("request body too large")]
    PayloadTooLarge,
    /// The body is not JSON.
    #[error("expected Content-Type: application/json")]
    UnsupportedMediaType,
    /// Wrong username or password; deliberately says which of neither.
    #[error("invalid username or password")]
    InvalidCredentials,
    /// No valid session token.
    #[error("missing, invalid or expired session token")]
    Unauthenticated,
    /// The normalised username is registered already.
    #[error("username is already taken")]
    UsernameTaken,
    /// The policy refuses the attempt for now.
    #[error("too many attempts")]
    Throttled {
        /// Seconds until an attempt would be admitted.
        retry_after_secs: u64,
    },
    /// The account is permanently locked (only with `responses.disclose_lockouts`).
    #[error("account locked: ask an administrator to unlock it")]
    Locked,
    /// A dependency (hashing pool, store, database) cannot take more work right now.
    #[error("service busy")]
    Unavailable {
        /// Seconds after which trying again is reasonable.
        retry_after_secs: u64,
    },
    /// No such route.
    #[error("no such resource")]
    NotFound,
    /// A bug or an infrastructure failure; details only in the log.
    #[error(transparent)]
    Internal(anyhow::Error),
}

#[derive(Serialize)]
struct Problem<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    title: &'a str,
    status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<String>,
}

impl ApiError {
    /// A short, stable title per status, and whether the error's own text may be shown.
    fn title(&self) -> (&'static str, bool) {
        match self {
            ApiError::BadRequest(_) => ("Bad request", true),
            ApiError::PayloadTooLarge => ("Payload too large", true),
            ApiError::UnsupportedMediaType => ("Unsupported media type", true),
            ApiError::InvalidCredentials => ("Unauthorized", true),
            ApiError::Unauthenticated => ("Unauthorized", true),
            ApiError::UsernameTaken => ("Conflict", true),
            ApiError::Throttled { .. } => ("Too many requests", true),
            ApiError::Locked => ("Locked", true),
            ApiError::Unavailable { .. } => ("Service unavailable", false),
            ApiError::NotFound => ("Not found", true),
            ApiError::Internal(_) => ("Internal server error", false),
        }
    }

    fn retry_after(&self) -> Option<u64> {
        match self {
            ApiError::Throttled { retry_after_secs }
            | ApiError::Unavailable { retry_after_secs } => Some(*retry_after_secs),
            _ => None,
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::InvalidCredentials | ApiError::Unauthenticated => StatusCode::UNAUTHORIZED,
            ApiError::UsernameTaken => StatusCode::CONFLICT,
            ApiError::Throttled { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Locked => StatusCode::LOCKED,
            ApiError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.status_code();
        let (title, show_detail) = self.title();
        if status.is_server_error() {
            tracing::error!(error = ?self, "request failed");
        }
        let problem = Problem {
            kind: "about:blank",
            title,
            status: status.as_u16(),
            detail: show_detail.then(|| self.to_string()),
        };
        let mut response = HttpResponse::build(status);
        response.insert_header((
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        ));
        if let Some(secs) = self.retry_after() {
            response.insert_header((header::RETRY_AFTER, secs.max(1).to_string()));
        }
        if matches!(self, ApiError::Unauthenticated) {
            response.insert_header((header::WWW_AUTHENTICATE, "Bearer"));
        }
        response.body(serde_json::to_string(&problem).unwrap_or_default())
    }
}

/// An unreachable database is a 503 the client may retry; anything else is a 500.
impl From<anyhow::Error> for ApiError {
    fn from(error: anyhow::Error) -> Self {
        if error
            .chain()
            .any(|cause| cause.is::<crate::accounts::DatabaseUnavailable>())
        {
            tracing::error!(error = format!("{error:#}"), "database unavailable");
            return ApiError::Unavailable {
                retry_after_secs: 1,
            };
        }
        ApiError::Internal(error)
    }
}

/// A store that cannot answer makes the service unavailable for a moment, not broken.
impl From<portcullis_store::StoreError> for ApiError {
    fn from(error: portcullis_store::StoreError) -> Self {
        tracing::error!(error = %error, "store failed");
        ApiError::Unavailable {
            retry_after_secs: 1,
        }
    }
}

/// A full hashing queue is a 503 the client may retry; a hashing failure is a bug.
impl From<crate::password::HashError> for ApiError {
    fn from(error: crate::password::HashError) -> Self {
        match error {
            crate::password::HashError::Busy => ApiError::Unavailable {
                retry_after_secs: 1,
            },
            crate::password::HashError::Failed(e) => e.into(),
        }
    }
}

impl From<crate::accounts::CreateError> for ApiError {
    fn from(error: crate::accounts::CreateError) -> Self {
        match error {
            crate::accounts::CreateError::Taken => ApiError::UsernameTaken,
            crate::accounts::CreateError::Database(e) => e.into(),
        }
    }
}
