//! The one error type handlers return, answered as `application/problem+json` (RFC 9457) with
//! a stable `code` member (the table in `docs/api.md`): the one place where the use cases'
//! [`Error`] becomes HTTP.
//!
//! `status_code` and `code` match every variant with no catch-all, so a new variant (here or
//! in [`Error`]) forces a decision about both. Causes are logged once, with the whole chain,
//! where the error is answered. A 5xx body never carries internal error text: the client gets
//! a short title.

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, ResponseError};
use portcullis_accounts::Error;
use serde::Serialize;

/// What can go wrong while answering a request: a use case's error, or the HTTP layer's own.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A use case refused the request or failed (most answers).
    #[error(transparent)]
    Accounts(#[from] Error),
    /// The body exceeds `server.max_body_bytes`.
    #[error("request body too large")]
    PayloadTooLarge,
    /// The body is not JSON.
    #[error("expected Content-Type: application/json")]
    UnsupportedMediaType,
    /// No such route.
    #[error("no such resource")]
    NotFound,
    /// The route exists, with other methods.
    #[error("this resource answers {allow} only")]
    MethodNotAllowed {
        /// The methods it answers, for the `Allow` header.
        allow: String,
    },
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
    /// With `mfa_required`: the second factors the account has, `passkey` and/or `totp`.
    #[serde(skip_serializing_if = "Option::is_none")]
    methods: Option<Vec<&'static str>>,
    /// With `password_change_required`: the token `POST /v1/password` takes.
    #[serde(skip_serializing_if = "Option::is_none")]
    password_change_token: Option<&'a str>,
}

impl ApiError {
    /// A malformed request with the generic `bad_request` code.
    pub fn bad_request(detail: impl Into<String>) -> Self {
        Error::bad_request(detail).into()
    }

    /// The stable problem code clients may match on.
    pub fn code(&self) -> &'static str {
        let error = match self {
            ApiError::Accounts(error) => error,
            ApiError::PayloadTooLarge => return "payload_too_large",
            ApiError::UnsupportedMediaType => return "unsupported_media_type",
            ApiError::NotFound => return "not_found",
            ApiError::MethodNotAllowed { .. } => return "method_not_allowed",
        };
        match error {
            Error::BadRequest { code, .. } => code,
            Error::InvalidCredentials => "invalid_credentials",
            Error::Unauthenticated => "unauthenticated",
            Error::UsernameTaken => "username_taken",
            Error::EmailTaken => "email_taken",
            Error::UnknownAccount => "unknown_account",
            Error::NoAddress => "no_address",
            Error::Throttled { .. } => "throttled",
            Error::ChallengeRequired { failed: false, .. } => "challenge_required",
            Error::ChallengeRequired { failed: true, .. } => "challenge_failed",
            Error::WeakPassword(refusal) => refusal.code(),
            Error::MfaRequired { .. } => "mfa_required",
            Error::PasswordChangeRequired { .. } => "password_change_required",
            Error::PasswordResetRequired => "password_reset_required",
            Error::InvalidLoginToken => "invalid_token",
            Error::InvalidCode => "invalid_code",
            Error::CodeReplayed => "code_replayed",
            Error::MfaThrottled { .. } => "mfa_throttled",
            Error::MfaNotEnrolled => "mfa_not_enrolled",
            Error::MfaAlreadyEnabled => "mfa_already_enabled",
            Error::PasskeysOff => "passkeys_off",
            Error::InvalidPasskey => "invalid_passkey",
            Error::InvalidCeremony => "invalid_ceremony",
            Error::PasskeyRefused { .. } => "passkey_refused",
            Error::PasskeyLimit { .. } => "passkey_limit",
            Error::PasskeyRegistered => "passkey_registered",
            Error::LastPasskey => "last_passkey",
            Error::UnknownPasskey => "unknown_passkey",
            Error::Locked => "locked",
            Error::Unavailable { .. } => "unavailable",
            Error::Internal(_) => "internal",
        }
    }

    /// A short, stable title per status (what the status says, so it follows from
    /// `status_code`); a 5xx answer shows the title only, never the error's own text.
    fn title(&self) -> &'static str {
        match self.status_code() {
            StatusCode::BAD_REQUEST => "Bad request",
            StatusCode::UNAUTHORIZED => "Unauthorized",
            StatusCode::FORBIDDEN => "Forbidden",
            StatusCode::NOT_FOUND => "Not found",
            StatusCode::METHOD_NOT_ALLOWED => "Method not allowed",
            StatusCode::CONFLICT => "Conflict",
            StatusCode::PAYLOAD_TOO_LARGE => "Payload too large",
            StatusCode::UNSUPPORTED_MEDIA_TYPE => "Unsupported media type",
            StatusCode::LOCKED => "Locked",
            StatusCode::TOO_MANY_REQUESTS => "Too many requests",
            StatusCode::SERVICE_UNAVAILABLE => "Service unavailable",
            _ => "Internal server error",
        }
    }

    /// Seconds a client should wait, for a Retry-After header.
    pub(crate) fn retry_after(&self) -> Option<u64> {
        match self {
            ApiError::Accounts(
                Error::Throttled { retry_after_secs }
                | Error::MfaThrottled {
                    retry_after_secs, ..
                }
                | Error::Unavailable {
                    retry_after_secs, ..
                },
            ) => Some(*retry_after_secs),
            _ => None,
        }
    }

    /// Marks `response` when this answers a request the guard refused before verification (a
    /// 429, or a challenge asked): the guard's refusal log summarises those, so the request's
    /// own line is DEBUG ([`crate::request_span`] reads the [`Summarised`] mark).
    pub(crate) fn mark(&self, response: &mut HttpResponse) {
        if matches!(self, ApiError::Accounts(error) if error.is_summarised()) {
            response.extensions_mut().insert(Summarised);
        }
    }

    /// Logs a server-side failure once, with its whole cause chain.
    pub(crate) fn log(&self) {
        match self {
            ApiError::Accounts(Error::Unavailable { cause, .. }) => {
                tracing::warn!(
                    code = self.code(),
                    error = format!("{cause:#}"),
                    "unavailable"
                );
            }
            ApiError::Accounts(Error::Internal(cause)) => {
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
        let error = match self {
            ApiError::Accounts(error) => error,
            ApiError::PayloadTooLarge => return StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType => return StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::NotFound => return StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed { .. } => return StatusCode::METHOD_NOT_ALLOWED,
        };
        match error {
            Error::BadRequest { .. }
            | Error::WeakPassword(_)
            | Error::InvalidCeremony
            | Error::PasskeyRefused { .. } => StatusCode::BAD_REQUEST,
            Error::InvalidCredentials
            | Error::Unauthenticated
            | Error::ChallengeRequired { .. }
            | Error::MfaRequired { .. }
            | Error::InvalidLoginToken
            | Error::InvalidCode
            | Error::CodeReplayed
            | Error::InvalidPasskey => StatusCode::UNAUTHORIZED,
            Error::PasswordChangeRequired { .. } | Error::PasswordResetRequired => {
                StatusCode::FORBIDDEN
            }
            Error::UnknownAccount | Error::UnknownPasskey | Error::PasskeysOff => {
                StatusCode::NOT_FOUND
            }
            Error::UsernameTaken
            | Error::EmailTaken
            | Error::NoAddress
            | Error::MfaNotEnrolled
            | Error::MfaAlreadyEnabled
            | Error::PasskeyLimit { .. }
            | Error::PasskeyRegistered
            | Error::LastPasskey => StatusCode::CONFLICT,
            Error::Throttled { .. } | Error::MfaThrottled { .. } => StatusCode::TOO_MANY_REQUESTS,
            Error::Locked => StatusCode::LOCKED,
            Error::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        self.log();
        let status = self.status_code();
        let title = self.title();
        let accounts = match self {
            ApiError::Accounts(error) => Some(error),
            _ => None,
        };
        let problem = Problem {
            kind: "about:blank",
            title,
            status: status.as_u16(),
            code: self.code(),
            detail: (!status.is_server_error()).then(|| self.to_string()),
            challenge: match accounts {
                Some(Error::ChallengeRequired { challenge, .. }) => Some(challenge),
                _ => None,
            },
            reason: match accounts {
                Some(Error::WeakPassword(refusal)) => Some(refusal.to_string()),
                _ => None,
            },
            mfa_token: match accounts {
                Some(Error::MfaRequired { mfa_token, .. }) => Some(mfa_token),
                _ => None,
            },
            methods: match accounts {
                Some(Error::MfaRequired { methods, .. }) => Some(methods.methods()),
                _ => None,
            },
            password_change_token: match accounts {
                Some(Error::PasswordChangeRequired {
                    password_change_token,
                }) => Some(password_change_token),
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
        if matches!(accounts, Some(Error::Unauthenticated)) {
            response.insert_header((header::WWW_AUTHENTICATE, "Bearer"));
        }
        if let ApiError::MethodNotAllowed { allow } = self {
            response.insert_header((header::ALLOW, allow.as_str()));
        }
        let mut response = response.body(serde_json::to_string(&problem).unwrap_or_default());
        self.mark(&mut response);
        response
    }
}

/// The mark of an answer whose request line is DEBUG, because something else summarises it: a
/// refusal before verification (the guard's refusal log, see [`ApiError::mark`]), or forward
/// authentication's answer (a proxy asks once per request it passes;
/// `portcullis_forward_auth_total` counts them).
#[derive(Clone, Copy, Debug)]
pub struct Summarised;

/// The use cases' errors convert here: a database, store or hashing failure met in an adapter
/// is answered as the use cases answer it.
impl From<anyhow::Error> for ApiError {
    fn from(error: anyhow::Error) -> Self {
        Error::from(error).into()
    }
}

impl From<portcullis_store::StoreError> for ApiError {
    fn from(error: portcullis_store::StoreError) -> Self {
        Error::from(error).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_refusals_before_verification_are_marked_summarised() {
        let marked = |error: Error| {
            ApiError::from(error)
                .error_response()
                .extensions()
                .contains::<Summarised>()
        };
        assert!(marked(Error::Throttled {
            retry_after_secs: 1
        }));
        assert!(
            !marked(Error::InvalidCredentials),
            "a verified failure keeps its line"
        );
        assert!(!marked(Error::Locked));
    }
}
