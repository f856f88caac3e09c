//! What every page shares: the HTML answer with its security headers, the notices that tell a
//! person what happened (the pages' counterpart of the API's problem `code`s), and the error
//! answer of a page that cannot be shown.

use actix_web::cookie::Cookie;
use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, HttpResponseBuilder, ResponseError};
use askama::Template;
use portcullis_accounts::Error;
use portcullis_core::altcha::Challenge;

use crate::error::ApiError;

/// The pages' Content-Security-Policy: scripts only from this origin (the ALTCHA widget and
/// the console's script are served by the binary); the widget styles itself inline and solves
/// in workers it starts from blobs.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self' 'unsafe-inline'; worker-src 'self' blob:; img-src 'self' data:; \
     connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// A message above a page's form.
pub struct Notice {
    /// `error` or `info` (a CSS class).
    pub kind: &'static str,
    /// What happened, and what to do, for a person.
    pub text: String,
}

impl Notice {
    /// A message that something was refused.
    pub fn error(text: impl Into<String>) -> Self {
        Self {
            kind: "error",
            text: text.into(),
        }
    }

    /// A message that something worked.
    pub fn info(text: impl Into<String>) -> Self {
        Self {
            kind: "info",
            text: text.into(),
        }
    }
}

/// How a page tells a person about a refusal: the status the API would answer, and words.
/// Errors a page answers in its own way (a challenge, the second factor) never get here; if
/// one does, it gets the API's text.
pub fn notice_of(error: &ApiError) -> Notice {
    let ApiError::Accounts(error) = error else {
        return Notice::error(error.to_string());
    };
    let text = match error {
        Error::InvalidCredentials => "Wrong username or password.".to_owned(),
        Error::Throttled { retry_after_secs } => format!(
            "Too many attempts. Try again in {}.",
            wait(*retry_after_secs)
        ),
        Error::Locked => {
            "This account is locked after too many failed logins. Ask an administrator to \
             unlock it."
                .to_owned()
        }
        Error::WeakPassword(refusal) => format!("Choose another password: {refusal}."),
        Error::UsernameTaken => {
            "This username, or one that looks like it, is taken. Choose another.".to_owned()
        }
        Error::MfaThrottled {
            token_spent: true, ..
        } => "This login has used all its tries: log in with your password again.".to_owned(),
        Error::MfaThrottled {
            retry_after_secs, ..
        } => format!(
            "Too many wrong codes. Try again in {}.",
            wait(*retry_after_secs)
        ),
        Error::InvalidCode => "That code is wrong.".to_owned(),
        Error::CodeReplayed => "That code was used already: wait for the next one.".to_owned(),
        Error::InvalidLoginToken => {
            "This login has expired: log in with your password again.".to_owned()
        }
        Error::Unavailable { .. } => {
            "The service is busy right now. Try again in a few seconds.".to_owned()
        }
        Error::Internal(_) => "Something went wrong on our side. Try again later.".to_owned(),
        other => other.to_string(),
    };
    Notice::error(text)
}

/// A wait, in words: "30 seconds", "1 minute", "2 hours".
pub fn wait(secs: u64) -> String {
    let secs = secs.max(1);
    let (n, unit) = match secs {
        0..=99 => (secs, "second"),
        100..=5_999 => (secs.div_ceil(60), "minute"),
        _ => (secs.div_ceil(3_600), "hour"),
    };
    format!("{n} {unit}{}", if n == 1 { "" } else { "s" })
}

/// A challenge as the widget's `challenge` attribute takes it.
fn challenge_json(challenge: &Challenge) -> Result<String, PageError> {
    serde_json::to_string(challenge)
        .map_err(|e| PageError::from(anyhow::anyhow!("encoding a challenge: {e}")))
}

/// What a refused form shows: the notice, the status and, for a challenge, the challenge.
pub struct Refusal {
    /// The status the API would answer.
    pub status: StatusCode,
    /// What to tell the person.
    pub notice: Notice,
    /// The challenge to solve, as JSON for the widget's `challenge` attribute.
    pub challenge: Option<String>,
    /// Seconds to wait, for Retry-After.
    pub retry_after: Option<u64>,
}

impl Refusal {
    /// How a form shows `error` (logged as the API would).
    pub fn of(error: impl Into<ApiError>) -> Result<Self, PageError> {
        let error = error.into();
        error.log();
        let (notice, challenge) = match &error {
            ApiError::Accounts(Error::ChallengeRequired { challenge, failed }) => (
                Notice::info(format!(
                    "{} Enter your password again and send the form once the box says \
                     Verified.",
                    if *failed {
                        "The puzzle's answer did not count (it expired or was used): your \
                         browser is solving a new one."
                    } else {
                        "One more step: your browser is solving a small puzzle before this \
                         password is checked."
                    }
                )),
                Some(challenge_json(challenge)?),
            ),
            other => (notice_of(other), None),
        };
        Ok(Self {
            status: error.status_code(),
            notice,
            challenge,
            retry_after: error.retry_after(),
        })
    }
}

/// An HTML answer with the pages' headers: not cached, not framed, no referrer, the CSP.
pub fn html(status: StatusCode) -> HttpResponseBuilder {
    let mut response = HttpResponse::build(status);
    response
        .content_type("text/html; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header((header::X_FRAME_OPTIONS, "DENY"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY));
    response
}

/// Renders `page` with `status`; a refusal's Retry-After comes along.
pub fn render(
    mut response: HttpResponseBuilder,
    page: &impl Template,
    retry_after: Option<u64>,
) -> Result<HttpResponse, PageError> {
    if let Some(secs) = retry_after {
        response.insert_header((header::RETRY_AFTER, HeaderValue::from(secs.max(1))));
    }
    let body = page
        .render()
        .map_err(|e| PageError::from(anyhow::anyhow!("rendering a page: {e}")))?;
    Ok(response.body(body))
}

/// Adds a cookie to a rendered answer.
pub fn add_cookie(response: &mut HttpResponse, cookie: &Cookie<'_>) -> Result<(), PageError> {
    response
        .add_cookie(cookie)
        .map_err(|e| PageError::from(anyhow::anyhow!("setting cookie {}: {e}", cookie.name())))
}

/// A 303 to `location` (after a form post).
pub fn see_other(location: &str) -> HttpResponseBuilder {
    let mut response = HttpResponse::SeeOther();
    response
        .insert_header((header::LOCATION, location))
        .insert_header((header::CACHE_CONTROL, "no-store"));
    response
}

/// A page that cannot be shown: the status the API would answer, a short HTML page that says
/// why, and the log line the API would write.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct PageError(pub ApiError);

impl From<ApiError> for PageError {
    fn from(error: ApiError) -> Self {
        PageError(error)
    }
}

impl From<Error> for PageError {
    fn from(error: Error) -> Self {
        PageError(error.into())
    }
}

impl From<anyhow::Error> for PageError {
    fn from(error: anyhow::Error) -> Self {
        PageError(error.into())
    }
}

/// The page of an error: its title and the way on.
#[derive(Template)]
#[template(path = "message.html")]
struct MessagePage<'a> {
    notice: Option<Notice>,
    title: &'a str,
    link: &'a str,
    link_text: &'a str,
}

impl ResponseError for PageError {
    fn status_code(&self) -> StatusCode {
        self.0.status_code()
    }

    fn error_response(&self) -> HttpResponse {
        self.0.log();
        let page = MessagePage {
            notice: Some(notice_of(&self.0)),
            title: "This page could not be shown",
            link: "/login",
            link_text: "Go to the login page",
        };
        let mut response = html(self.status_code());
        if let Some(secs) = self.0.retry_after() {
            response.insert_header((header::RETRY_AFTER, HeaderValue::from(secs.max(1))));
        }
        let mut response = response.body(page.render().unwrap_or_default());
        self.0.mark(&mut response);
        response
    }
}

/// A page that says one thing and links on.
pub fn message(
    status: StatusCode,
    title: &str,
    notice: Notice,
    link: &str,
    link_text: &str,
) -> Result<HttpResponse, PageError> {
    let page = MessagePage {
        notice: Some(notice),
        title,
        link,
        link_text,
    };
    render(html(status), &page, None)
}

/// The answer to a form post whose CSRF token does not match its cookie (403).
pub fn forged_post() -> Result<HttpResponse, PageError> {
    message(
        StatusCode::FORBIDDEN,
        "Form refused",
        Notice::error(
            "This form expired or did not come from this site. Go back, reload the page and try \
             again.",
        ),
        "/login",
        "Go to the login page",
    )
}

#[cfg(test)]
mod tests {
    use super::wait;

    #[test]
    fn waits_read_as_people_say_them() {
        assert_eq!(wait(0), "1 second");
        assert_eq!(wait(30), "30 seconds");
        assert_eq!(wait(100), "2 minutes");
        assert_eq!(wait(900), "15 minutes");
        assert_eq!(wait(3_600), "60 minutes");
        assert_eq!(wait(7_200), "2 hours");
    }
}
