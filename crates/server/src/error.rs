//! The one error type handlers return, answered as `application/problem+json` (RFC 9457) with
//! a stable `code` member (the table in `docs/api.md`).
//!
//! `status_code` and `code` match every variant with no catch-all, so a new variant forces a
//! decision about both. Causes are kept (never logged where an error is converted) and logged
//! once, with the whole chain, where the error is answered. A 5xx body never carries internal
//! error text: the client gets a short title.

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

/// What can go wrong while answering a request.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request is malformed; `detail` says how (it is shown to the client).
    #[error("{detail}")]
    BadRequest {
        /// The stable problem code (`bad_request`, `invalid_username`, ...).
        code: &'static str,
        /// What is wrong, for a person.
        detail: String,
    },
    /// The body exceeds `server.max_body_bytes`.
    #[error("request body too large")]
    PayloadTooLarge,
    /// The body is not JSON.
    #[error("expected Content-Type: application/json")]
    UnsupportedMediaType,
    /// Wrong username or password; deliberately says which of neither.
    #[error("invalid username or password")]
    InvalidCredentials,
    /// No valid session token (or admin token).
    #[error("missing, invalid or expired token")]
    Unauthenticated,
    /// The normalised username, or one that looks like it, is registered already.
    #[error("username is already taken")]
    UsernameTaken,
    /// The policy refuses the attempt for now.
    #[error("too many attempts")]
    Throttled {
        /// Seconds until an attempt would be admitted.
        retry_after_secs: u64,
    },
    /// The attempt must first solve a proof-of-work challenge: this one (a fresh one, harder
    /// when the source is riskier).
    #[error("{}", if *.failed { "the challenge solution is invalid, expired or used: solve this challenge" } else { "solve this challenge and send its payload as `altcha`" })]
    ChallengeRequired {
        /// The challenge to solve.
        challenge: Box<portcullis_core::altcha::Challenge>,
        /// Whether the attempt carried a solution that did not count.
        failed: bool,
    },
    /// A new password breaks a rule, or was found in a breach.
    #[error("{0}")]
    WeakPassword(crate::passwords::Refusal),
    /// The password was right; the account's second factor must follow (`POST /v1/login/mfa`).
    #[error("password accepted: send a code from your authenticator app with this mfa_token")]
    MfaRequired {
        /// The single-use token that carries the login to its second step.
        mfa_token: String,
    },
    /// The password was right but found in a breach, and `passwords.breached_login = "block"`.
    #[error(
        "this password has appeared in a data breach: change it with the password_change_token"
    )]
    PasswordChangeRequired {
        /// The single-use token `POST /v1/password` takes instead of a session.
        password_change_token: String,
    },
    /// The `mfa_token` (or password-change token) is unknown, expired or used.
    #[error("the token is unknown, expired or used: log in with your password again")]
    InvalidLoginToken,
    /// A wrong second-factor code or recovery code.
    #[error("the code is wrong")]
    InvalidCode,
    /// A code whose time step was accepted already, or a recovery code used before.
    #[error("this code was used already: wait for the next one")]
    CodeReplayed,
    /// Second-factor codes refused for now.
    #[error("{}", if *.token_spent { "this login has tried all its codes: log in with your password again" } else { "too many wrong codes: wait before trying again" })]
    MfaThrottled {
        /// Seconds until a code is tried again.
        retry_after_secs: u64,
        /// Whether the login's own budget is spent (log in again) rather than the account's.
        token_spent: bool,
    },
    /// The account has no (pending, for confirmation) second factor.
    #[error("no second factor is enrolled (or awaiting confirmation) on this account")]
    MfaNotEnrolled,
    /// The account has a confirmed second factor already.
    #[error("a second factor is enabled already: remove it first")]
    MfaAlreadyEnabled,
    /// The account is permanently locked (only with `responses.disclose_lockouts`).
    #[error("account locked: ask an administrator to unlock it")]
    Locked,
    /// A dependency (hashing pool, store, database) cannot take more work right now.
    #[error("service busy")]
    Unavailable {
        /// Seconds after which trying again is reasonable.
        retry_after_secs: u64,
        /// Why, for the log.
        #[source]
        cause: anyhow::Error,
    },
    /// No such route.
    #[error("no such resource")]
    NotFound,
    /// The route exists, with other methods.
    #[error("this resource answers {allow} only")]
    MethodNotAllowed {
        /// The methods it answers, for the `Allow` header.
        allow: String,
    },
    /// A bug or an infrastructure failure; details only in the log.
    #[error(transparent)]
    Internal(anyhow::Error),
}

/// An error answer (RFC 9457), `application/problem+json`.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Problem<'a> {
    /// Always `about:blank`: `code` says what happened.
    #[serde(rename = "type")]
    kind: &'a str,
    /// A short title per status.
    title: &'a str,
    /// The HTTP status.
    status: u16,
    /// The stable problem code (the table in docs/api.md).
    code: &'a str,
    /// What went wrong, for a person (absent on 5xx answers).
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<String>,
    /// With `challenge_required` / `challenge_failed`: the ALTCHA v2 challenge to solve, as
    /// `GET /v1/challenge` returns one.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    challenge: Option<&'a portcullis_core::altcha::Challenge>,
    /// With `weak_password` / `breached_password`: which rule refused the new password.
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    /// With `mfa_required`: the token `POST /v1/login/mfa` takes.
    #[serde(skip_serializing_if = "Option::is_none")]
    mfa_token: Option<&'a str>,
    /// With `password_change_required`: the token `POST /v1/password` takes.
    #[serde(skip_serializing_if = "Option::is_none")]
    password_change_token: Option<&'a str>,
}

impl ApiError {
    /// A malformed request with the generic `bad_request` code.
    pub fn bad_request(detail: impl Into<String>) -> Self {
        ApiError::BadRequest {
            code: "bad_request",
            detail: detail.into(),
        }
    }

    /// A dependency that cannot answer for a moment.
    pub fn unavailable(cause: impl Into<anyhow::Error>) -> Self {
        ApiError::Unavailable {
            retry_after_secs: 1,
            cause: cause.into(),
        }
    }

    /// The stable problem code clients may match on.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::BadRequest { code, .. } => code,
            ApiError::PayloadTooLarge => "payload_too_large",
            ApiError::UnsupportedMediaType => "unsupported_media_type",
            ApiError::InvalidCredentials => "invalid_credentials",
            ApiError::Unauthenticated => "unauthenticated",
            ApiError::UsernameTaken => "username_taken",
            ApiError::Throttled { .. } => "throttled",
            ApiError::ChallengeRequired { failed: false, .. } => "challenge_required",
            ApiError::ChallengeRequired { failed: true, .. } => "challenge_failed",
            ApiError::WeakPassword(refusal) => refusal.code(),
            ApiError::MfaRequired { .. } => "mfa_required",
            ApiError::PasswordChangeRequired { .. } => "password_change_required",
            ApiError::InvalidLoginToken => "invalid_token",
            ApiError::InvalidCode => "invalid_code",
            ApiError::CodeReplayed => "code_replayed",
            ApiError::MfaThrottled { .. } => "mfa_throttled",
            ApiError::MfaNotEnrolled => "mfa_not_enrolled",
            ApiError::MfaAlreadyEnabled => "mfa_already_enabled",
            ApiError::Locked => "locked",
            ApiError::Unavailable { .. } => "unavailable",
            ApiError::NotFound => "not_found",
            ApiError::MethodNotAllowed { .. } => "method_not_allowed",
            ApiError::Internal(_) => "internal",
        }
    }

    /// A short, stable title per status, and whether the error's own text may be shown.
    fn title(&self) -> (&'static str, bool) {
        match self {
            ApiError::BadRequest { .. } => ("Bad request", true),
            ApiError::PayloadTooLarge => ("Payload too large", true),
            ApiError::UnsupportedMediaType => ("Unsupported media type", true),
            ApiError::InvalidCredentials => ("Unauthorized", true),
            ApiError::Unauthenticated => ("Unauthorized", true),
            ApiError::UsernameTaken => ("Conflict", true),
            ApiError::Throttled { .. } => ("Too many requests", true),
            ApiError::ChallengeRequired { .. } => ("Unauthorized", true),
            ApiError::WeakPassword(_) => ("Bad request", true),
            ApiError::MfaRequired { .. }
            | ApiError::InvalidLoginToken
            | ApiError::InvalidCode
            | ApiError::CodeReplayed => ("Unauthorized", true),
            ApiError::PasswordChangeRequired { .. } => ("Forbidden", true),
            ApiError::MfaThrottled { .. } => ("Too many requests", true),
            ApiError::MfaNotEnrolled | ApiError::MfaAlreadyEnabled => ("Conflict", true),
            ApiError::Locked => ("Locked", true),
            ApiError::Unavailable { .. } => ("Service unavailable", false),
            ApiError::NotFound => ("Not found", true),
            ApiError::MethodNotAllowed { .. } => ("Method not allowed", true),
            ApiError::Internal(_) => ("Internal server error", false),
        }
    }

    /// Seconds a client should wait, for a Retry-After header.
    pub(crate) fn retry_after(&self) -> Option<u64> {
        match self {
            ApiError::Throttled { retry_after_secs }
            | ApiError::MfaThrottled {
                retry_after_secs, ..
            }
            | ApiError::Unavailable {
                retry_after_secs, ..
            } => Some(*retry_after_secs),
            _ => None,
        }
    }

    /// Logs a server-side failure once, with its whole cause chain.
    pub(crate) fn log(&self) {
        match self {
            ApiError::Unavailable { cause, .. } => {
                tracing::warn!(
                    code = self.code(),
                    error = format!("{cause:#}"),
                    "unavailable"
                );
            }
            ApiError::Internal(cause) => {
                tracing::error!(
                    code = self.code(),
                    error = format!("{cause:#}"),
                    "request failed"
                );
            }
            _ => {}
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::BadRequest { .. } | ApiError::WeakPassword(_) => StatusCode::BAD_REQUEST,
            ApiError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::InvalidCredentials
            | ApiError::Unauthenticated
            | ApiError::ChallengeRequired { .. }
            | ApiError::MfaRequired { .. }
            | ApiError::InvalidLoginToken
            | ApiError::InvalidCode
            | ApiError::CodeReplayed => StatusCode::UNAUTHORIZED,
            ApiError::PasswordChangeRequired { .. } => StatusCode::FORBIDDEN,
            ApiError::UsernameTaken | ApiError::MfaNotEnrolled | ApiError::MfaAlreadyEnabled => {
                StatusCode::CONFLICT
            }
            ApiError::Throttled { .. } | ApiError::MfaThrottled { .. } => {
                StatusCode::TOO_MANY_REQUESTS
            }
            ApiError::Locked => StatusCode::LOCKED,
            ApiError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        self.log();
        let status = self.status_code();
        let (title, show_detail) = self.title();
        let problem = Problem {
            kind: "about:blank",
            title,
            status: status.as_u16(),
            code: self.code(),
            detail: show_detail.then(|| self.to_string()),
            challenge: match self {
                ApiError::ChallengeRequired { challenge, .. } => Some(challenge),
                _ => None,
            },
            reason: match self {
                ApiError::WeakPassword(refusal) => Some(refusal.to_string()),
                _ => None,
            },
            mfa_token: match self {
                ApiError::MfaRequired { mfa_token } => Some(mfa_token),
                _ => None,
            },
            password_change_token: match self {
                ApiError::PasswordChangeRequired {
                    password_change_token,
                } => Some(password_change_token),
                _ => None,
            },
        };
        let mut response = HttpResponse::build(status);
        response.insert_header((
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        ));
        if let Some(secs) = self.retry_after() {
            response.insert_header((header::RETRY_AFTER, HeaderValue::from(secs.max(1))));
        }
        if matches!(self, ApiError::Unauthenticated) {
            response.insert_header((header::WWW_AUTHENTICATE, "Bearer"));
        }
        if let ApiError::MethodNotAllowed { allow } = self {
            response.insert_header((header::ALLOW, allow.as_str()));
        }
        let mut response = response.body(serde_json::to_string(&problem).unwrap_or_default());
        crate::refusal_log::mark(self, &mut response);
        response
    }
}

/// An unreachable database is a 503 the client may retry; anything else is a 500.
impl From<anyhow::Error> for ApiError {
    fn from(error: anyhow::Error) -> Self {
        if error
            .chain()
            .any(|cause| cause.is::<crate::accounts::DatabaseUnavailable>())
        {
            return ApiError::unavailable(error);
        }
        ApiError::Internal(error)
    }
}

/// A store that cannot answer makes the service unavailable for a moment; one that answers
/// nonsense is a bug (500).
impl From<portcullis_store::StoreError> for ApiError {
    fn from(error: portcullis_store::StoreError) -> Self {
        match error {
            portcullis_store::StoreError::Unavailable { .. } => ApiError::unavailable(error),
            portcullis_store::StoreError::Protocol(_)
            | portcullis_store::StoreError::Misconfigured(_) => ApiError::Internal(error.into()),
        }
    }
}

/// A full hashing queue is a 503 the client may retry; a hashing failure is a bug.
impl From<crate::passwords::HashError> for ApiError {
    fn from(error: crate::passwords::HashError) -> Self {
        match error {
            crate::passwords::HashError::Busy => {
                ApiError::unavailable(anyhow::anyhow!("the hashing queue is full"))
            }
            crate::passwords::HashError::Failed(e) => e.into(),
        }
    }
}

/// A new password the rules refuse is the client's to fix (400).
impl From<crate::passwords::Refusal> for ApiError {
    fn from(refusal: crate::passwords::Refusal) -> Self {
        ApiError::WeakPassword(refusal)
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
