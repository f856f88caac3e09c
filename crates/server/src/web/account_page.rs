//! The account page (`/account`): the browser's sessions with sign-out and sign-out-everywhere,
//! TOTP enrolment (QR code, confirmation, recovery codes) and removal, the verified address,
//! and password change.
//! Without a signed-in browser every route here leads to the login page.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, get, post, web};
use askama::Template;
use portcullis_accounts::addresses;
use portcullis_accounts::login::{Reauthentication, StepUp};
use portcullis_accounts::mfa::{Enrolment, Proof};
use portcullis_accounts::password_change::{self, Authority};
use portcullis_accounts::{AppState, Error};
use secrecy::SecretString;
use serde::Deserialize;

use super::browser_session::{self, BrowserSession};
use super::page::{
    Notice, PageError, Refusal, add_cookie, forged_post, html, message, render, see_other,
};
use super::passkey_pages::StepUpFields;
use super::{csrf, with_csrf_cookie};
use crate::error::ApiError;
use crate::routes::{ClientIp, HttpState, checked_password, rfc3339};

/// One passkey, as the page lists it.
struct PasskeyRow {
    id: String,
    name: String,
    created_at: String,
    /// When it last signed in, or `never`.
    last_used_at: String,
}

/// One session, as the page lists it.
struct SessionRow {
    created_at: String,
    expires_at: String,
    current: bool,
}

#[derive(Template)]
#[template(path = "account.html")]
struct AccountPage {
    notice: Option<Notice>,
    csrf: String,
    username: String,
    password_change_required: bool,
    sessions: Vec<SessionRow>,
    has_totp: bool,
    /// Whether passkeys are on.
    passkeys_on: bool,
    passkeys: Vec<PasskeyRow>,
    /// Whether the account has a password (its step-up; a passkey's without one).
    has_password: bool,
    /// `password` or `passkey`: how the passkey forms step up.
    step_up: &'static str,
    /// The verified address, if any.
    email: Option<String>,
    /// A challenge the password form must solve, as JSON for the widget.
    challenge: Option<String>,
    min_length: usize,
}

#[derive(Template)]
#[template(path = "totp_enrol.html")]
struct TotpEnrolPage {
    notice: Option<Notice>,
    csrf: String,
    secret: String,
    otpauth_uri: String,
    qr_svg: String,
}

#[derive(Template)]
#[template(path = "recovery_codes.html")]
struct RecoveryCodesPage {
    notice: Option<Notice>,
    recovery_codes: Vec<String>,
}

/// A form with nothing but its CSRF token (sign out, start enrolment).
#[derive(Deserialize)]
pub struct PlainForm {
    csrf: String,
}

/// A form with a code: six digits, or (to turn the factor off) a recovery code.
#[derive(Deserialize)]
pub struct CodeForm {
    csrf: String,
    code: String,
}

/// The password change form.
#[derive(Deserialize)]
pub struct PasswordForm {
    csrf: String,
    current_password: SecretString,
    new_password: SecretString,
    #[serde(default)]
    altcha: Option<String>,
}

/// The address form.
#[derive(Deserialize)]
pub struct AddressForm {
    csrf: String,
    email: String,
    #[serde(flatten)]
    step_up: StepUpFields,
    #[serde(default)]
    altcha: Option<String>,
}

/// Renders the account page of `browser` with `status`, a `notice` and, for the password form,
/// a `challenge`.
pub(super) async fn account_page(
    state: &AppState,
    browser: &BrowserSession,
    csrf: String,
    refusal: Option<Refusal>,
    notice: Option<Notice>,
) -> Result<HttpResponse, PageError> {
    let sessions = state
        .sessions
        .list(&browser.account.id, &browser.digest)
        .await
        .map_err(ApiError::from)?
        .into_iter()
        .map(|s| SessionRow {
            created_at: rfc3339(s.created_at),
            expires_at: rfc3339(s.expires_at),
            current: s.current,
        })
        .collect();
    let passkeys = state
        .passkeys
        .list(&browser.account.id)
        .await
        .map_err(ApiError::from)?
        .into_iter()
        .map(|p| PasskeyRow {
            id: p.id,
            name: p.name,
            created_at: rfc3339(p.created_at),
            last_used_at: p.last_used_at.map_or_else(|| "never".to_owned(), rfc3339),
        })
        .collect();
    let has_password = browser.account.has_password();
    let (status, notice, challenge, retry_after) = match refusal {
        Some(r) => (r.status, Some(r.notice), r.challenge, r.retry_after),
        None => (StatusCode::OK, notice, None, None),
    };
    let page = AccountPage {
        notice,
        csrf,
        username: browser.account.username.clone(),
        password_change_required: browser.session.password_change_required,
        sessions,
        has_totp: browser.account.second_factors.totp,
        passkeys_on: state.passkeys.enabled(),
        passkeys,
        has_password,
        step_up: if has_password { "password" } else { "passkey" },
        email: browser.account.email.clone(),
        challenge,
        min_length: state.passwords.min_length(),
    };
    render(html(status), &page, retry_after)
}

/// The signed-in browser of a form post whose CSRF token matches, or the answer to give
/// instead: 403 for a forged post, to the login page without a session.
pub(super) async fn signed_in_post(
    state: &AppState,
    request: &HttpRequest,
    csrf_field: &str,
) -> Result<Result<BrowserSession, HttpResponse>, PageError> {
    if !csrf::matches(request, csrf_field) {
        return forged_post().map(Err);
    }
    Ok(match browser_session::current(state, request).await? {
        Some(browser) => Ok(browser),
        None => Err(see_other("/login").finish()),
    })
}

/// `GET /account`.
#[get("/account")]
pub async fn show(
    state: web::Data<AppState>,
    http: web::Data<HttpState>,
    request: HttpRequest,
) -> Result<HttpResponse, PageError> {
    let Some(browser) = browser_session::current(&state, &request).await? else {
        return Ok(see_other("/login").finish());
    };
    with_csrf_cookie(&http, &request, |csrf| {
        account_page(&state, &browser, csrf, None, None)
    })
    .await
}

/// `POST /account/logout`: ends this browser's session.
#[post("/account/logout")]
pub async fn logout(
    state: web::Data<AppState>,
    request: HttpRequest,
    form: web::Form<PlainForm>,
) -> Result<HttpResponse, PageError> {
    let browser = match signed_in_post(&state, &request, &form.csrf).await? {
        Ok(browser) => browser,
        Err(answer) => return Ok(answer),
    };
    state
        .sessions
        .revoke(&browser.digest)
        .await
        .map_err(ApiError::from)?;
    Ok(see_other("/login")
        .cookie(browser_session::forget())
        .finish())
}

/// `POST /account/logout-all`: ends every session of the account, this one included.
#[post("/account/logout-all")]
pub async fn logout_everywhere(
    state: web::Data<AppState>,
    request: HttpRequest,
    form: web::Form<PlainForm>,
) -> Result<HttpResponse, PageError> {
    let browser = match signed_in_post(&state, &request, &form.csrf).await? {
        Ok(browser) => browser,
        Err(answer) => return Ok(answer),
    };
    let revoked = state
        .sessions
        .revoke_all(&browser.digest)
        .await
        .map_err(ApiError::from)?;
    let mut response = message(
        StatusCode::OK,
        "Signed out everywhere",
        Notice::info(format!(
            "{revoked} session{} ended, this one included.",
            if revoked == 1 { "" } else { "s" }
        )),
        "/login",
        "Log in again",
    )?;
    add_cookie(&mut response, &browser_session::forget())?;
    Ok(response)
}

/// `POST /account/password`: the password change use case, with the current password checked
/// like a login (counted, challengeable, lockable).
#[post("/account/password")]
pub async fn change_password(
    state: web::Data<AppState>,
    http: web::Data<HttpState>,
    request: HttpRequest,
    ClientIp(ip): ClientIp,
    form: web::Form<PasswordForm>,
) -> Result<HttpResponse, PageError> {
    let browser = match signed_in_post(&state, &request, &form.csrf).await? {
        Ok(browser) => browser,
        Err(answer) => return Ok(answer),
    };
    let device_cookie = request.cookie(&http.device.cookie_name);
    let attempt = async {
        let new_password = checked_password(form.new_password.clone(), "new_password")?;
        let current_password = checked_password(form.current_password.clone(), "current_password")?;
        password_change::change_password(
            &state,
            Authority::Session(Reauthentication {
                session_digest: browser.digest.clone(),
                ip,
                step_up: StepUp::Password(current_password),
                device_cookie: device_cookie.as_ref().map(|c| c.value()),
                altcha: form.altcha.as_deref().filter(|a| !a.is_empty()),
            }),
            new_password,
        )
        .await
    };
    match attempt.await {
        Ok(revoked) => {
            // The session's breach flag is cleared: show the page as it is now.
            let browser = browser_session::current(&state, &request)
                .await?
                .unwrap_or(browser);
            let notice = Notice::info(format!(
                "Password changed. {revoked} other session{} ended.",
                if revoked == 1 { "" } else { "s" }
            ));
            account_page(&state, &browser, form.csrf.clone(), None, Some(notice)).await
        }
        Err(Error::Unauthenticated) => Ok(see_other("/login").finish()),
        Err(error) => {
            let refusal = Refusal::of(error)?;
            account_page(&state, &browser, form.csrf.clone(), Some(refusal), None).await
        }
    }
}

/// `POST /account/email`: sends a verification link to the address.
#[post("/account/email")]
pub async fn set_address(
    state: web::Data<AppState>,
    http: web::Data<HttpState>,
    request: HttpRequest,
    ClientIp(ip): ClientIp,
    form: web::Form<AddressForm>,
) -> Result<HttpResponse, PageError> {
    let browser = match signed_in_post(&state, &request, &form.csrf).await? {
        Ok(browser) => browser,
        Err(answer) => return Ok(answer),
    };
    let attempt = async {
        let step_up = form.step_up.body(form.altcha.as_deref())?.request(
            &request,
            &http,
            browser.digest.clone(),
            ip,
        )?;
        Ok::<_, ApiError>(
            addresses::request(&state, step_up.reauthentication(), &form.email).await?,
        )
    };
    match attempt.await {
        Ok(email) => {
            let notice = Notice::info(format!(
                "A link is on its way to {email}: follow it within 24 hours to verify the address."
            ));
            account_page(&state, &browser, form.csrf.clone(), None, Some(notice)).await
        }
        Err(ApiError::Accounts(Error::Unauthenticated)) => Ok(see_other("/login").finish()),
        Err(error) => {
            let refusal = Refusal::of(error)?;
            account_page(&state, &browser, form.csrf.clone(), Some(refusal), None).await
        }
    }
}

/// `POST /account/totp`: starts enrolment; shows the QR code and the key.
#[post("/account/totp")]
pub async fn enrol(
    state: web::Data<AppState>,
    request: HttpRequest,
    form: web::Form<PlainForm>,
) -> Result<HttpResponse, PageError> {
    let browser = match signed_in_post(&state, &request, &form.csrf).await? {
        Ok(browser) => browser,
        Err(answer) => return Ok(answer),
    };
    match state
        .mfa
        .enrol(&browser.account.id, &browser.account.username)
        .await
    {
        Ok(enrolment) => enrolment_page(&form.csrf, enrolment),
        Err(error) => {
            let refusal = Refusal::of(error)?;
            account_page(&state, &browser, form.csrf.clone(), Some(refusal), None).await
        }
    }
}

fn enrolment_page(csrf: &str, enrolment: Enrolment) -> Result<HttpResponse, PageError> {
    let page = TotpEnrolPage {
        notice: None,
        csrf: csrf.to_owned(),
        secret: enrolment.secret,
        otpauth_uri: enrolment.otpauth_uri,
        qr_svg: enrolment.qr_svg,
    };
    render(html(StatusCode::OK), &page, None)
}

/// `POST /account/totp/confirm`: turns the factor on with a first code; shows the recovery
/// codes once.
#[post("/account/totp/confirm")]
pub async fn confirm(
    state: web::Data<AppState>,
    request: HttpRequest,
    form: web::Form<CodeForm>,
) -> Result<HttpResponse, PageError> {
    let browser = match signed_in_post(&state, &request, &form.csrf).await? {
        Ok(browser) => browser,
        Err(answer) => return Ok(answer),
    };
    let attempt = async {
        match Proof::parse(Some(form.code.trim()), None)? {
            Proof::Code(code) => state.mfa.confirm(&browser.account, code).await,
            Proof::RecoveryCode(_) => Err(Error::InvalidCode),
        }
    };
    match attempt.await {
        Ok(recovery_codes) => {
            let page = RecoveryCodesPage {
                notice: None,
                recovery_codes,
            };
            render(html(StatusCode::OK), &page, None)
        }
        Err(error) => {
            let refusal = Refusal::of(error)?;
            let notice = Notice::error(format!(
                "{} Set up the authenticator app again.",
                refusal.notice.text
            ));
            account_page(&state, &browser, form.csrf.clone(), None, Some(notice)).await
        }
    }
}

/// `POST /account/totp/remove`: turns the factor off, proven with a code or a recovery code.
#[post("/account/totp/remove")]
pub async fn remove(
    state: web::Data<AppState>,
    request: HttpRequest,
    form: web::Form<CodeForm>,
) -> Result<HttpResponse, PageError> {
    let browser = match signed_in_post(&state, &request, &form.csrf).await? {
        Ok(browser) => browser,
        Err(answer) => return Ok(answer),
    };
    let code = form.code.trim();
    let attempt = async {
        let proof = if code.len() == 6 && code.bytes().all(|b| b.is_ascii_digit()) {
            Proof::parse(Some(code), None)?
        } else {
            Proof::parse(None, Some(code))?
        };
        state.mfa.remove(&browser.account, proof).await
    };
    match attempt.await {
        Ok(()) => {
            let browser = browser_session::current(&state, &request)
                .await?
                .unwrap_or(browser);
            let notice = Notice::info("Two-factor authentication is off.");
            account_page(&state, &browser, form.csrf.clone(), None, Some(notice)).await
        }
        Err(error) => {
            let refusal = Refusal::of(error)?;
            account_page(&state, &browser, form.csrf.clone(), Some(refusal), None).await
        }
    }
}
