//! The login page (`/login`, with its second-factor step at `/login/mfa`), the registration
//! page (`/register`) and the forced password change after a breached password (`/password`).
//! Each form post goes through the use case the JSON API uses, so it is counted, throttled,
//! challenged and locked out alike.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, get, post, web};
use askama::Template;
use portcullis_accounts::login::{self as use_case, LoginRequest, PasskeySignIn};
use portcullis_accounts::mfa::Proof;
use portcullis_accounts::passkeys::PublicKeyCredential;
use portcullis_accounts::password_change::{self, Authority};
use portcullis_accounts::registration;
use portcullis_accounts::{AppState, Error};
use portcullis_core::Username;
use secrecy::SecretString;
use serde::Deserialize;

use super::browser_session;
use super::page::{Notice, PageError, Refusal, add_cookie, forged_post, html, render, see_other};
use super::{csrf, with_csrf_cookie};
use crate::routes::{ClientIp, HttpState, checked_password, parse_username};

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    notice: Option<Notice>,
    csrf: String,
    username: String,
    /// The challenge to solve, as JSON for the widget.
    challenge: Option<String>,
    /// Whether passkeys are on (the button, and autofill on the username field).
    passkeys: bool,
}

#[derive(Template)]
#[template(path = "register.html")]
struct RegisterPage {
    notice: Option<Notice>,
    csrf: String,
    username: String,
    challenge: Option<String>,
    min_length: usize,
}

#[derive(Template)]
#[template(path = "second_factor.html")]
struct SecondFactorPage {
    notice: Option<Notice>,
    csrf: String,
    mfa_token: String,
    /// The account's username (the passkey's options name it).
    username: String,
    /// The methods, comma-separated, as the forms carry them on.
    methods: String,
    passkey: bool,
    totp: bool,
}

impl SecondFactorPage {
    /// The step for `mfa_token`, offering `methods` (`passkey`, `totp`, comma-separated) to
    /// `username`'s browser.
    fn new(
        notice: Option<Notice>,
        csrf: &str,
        mfa_token: &str,
        username: &str,
        methods: &str,
    ) -> Self {
        let offers = |method| methods.split(',').any(|m| m == method);
        Self {
            notice,
            csrf: csrf.to_owned(),
            mfa_token: mfa_token.to_owned(),
            username: username.to_owned(),
            methods: methods.to_owned(),
            passkey: offers("passkey"),
            // A code form always, unless the account has a passkey alone.
            totp: offers("totp") || !offers("passkey"),
        }
    }
}

#[derive(Template)]
#[template(path = "change_password.html")]
struct ChangePasswordPage {
    notice: Option<Notice>,
    csrf: String,
    password_change_token: String,
    min_length: usize,
}

/// The login and registration forms' fields.
#[derive(Deserialize)]
pub struct CredentialsForm {
    csrf: String,
    username: String,
    password: SecretString,
    /// The widget's payload, once it solved a challenge.
    #[serde(default)]
    altcha: Option<String>,
    /// Registration only: an address to verify (empty: none).
    #[serde(default)]
    email: Option<String>,
}

impl CredentialsForm {
    fn altcha(&self) -> Option<&str> {
        self.altcha.as_deref().filter(|a| !a.is_empty())
    }

    /// The normalised username and the length-checked password, refused as the API refuses
    /// them.
    fn parsed(&self) -> Result<(Username, SecretString), Error> {
        Ok((
            parse_username(&self.username)?,
            checked_password(self.password.clone(), "password")?,
        ))
    }
}

/// The second-factor forms' fields: a code, a recovery code or a passkey's answer, and what the
/// page shows again after a refusal (the username and the methods, as the first step gave them).
#[derive(Deserialize)]
pub struct SecondFactorForm {
    csrf: String,
    mfa_token: String,
    #[serde(default)]
    username: String,
    #[serde(default)]
    methods: String,
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    recovery_code: Option<String>,
    #[serde(default)]
    ceremony: Option<String>,
    /// The passkey's answer, as JSON.
    #[serde(default)]
    credential: Option<String>,
}

/// The passkey sign-in form's fields: the answer to the options the page's script asked for.
#[derive(Deserialize)]
pub struct PasskeyForm {
    csrf: String,
    ceremony: String,
    /// The passkey's answer, as JSON.
    credential: String,
}

/// A passkey's answer posted by a page as JSON, or 400 when it does not parse.
pub(super) fn passkey_answer(json: &str) -> Result<PublicKeyCredential, Error> {
    serde_json::from_str(json).map_err(|e| Error::BadRequest {
        code: "bad_request",
        detail: format!("the passkey's answer could not be read: {e}"),
    })
}

/// The forced password change's fields.
#[derive(Deserialize)]
pub struct TokenPasswordForm {
    csrf: String,
    password_change_token: String,
    new_password: SecretString,
}

/// The login page's query: where forward authentication asks the browser to be sent back.
#[derive(Deserialize)]
pub struct LoginQuery {
    #[serde(default)]
    return_to: Option<String>,
}

/// `GET /login`; with `?return_to=` on `server.return_hosts` (forward authentication sent the
/// browser), a browser already signed in goes straight back, and one that signs in here goes
/// back once it has (see [`crate::return_to`]).
#[get("/login")]
pub async fn login_page(
    state: web::Data<AppState>,
    http: web::Data<HttpState>,
    request: HttpRequest,
    query: web::Query<LoginQuery>,
) -> Result<HttpResponse, PageError> {
    let back = query
        .return_to
        .as_deref()
        .and_then(|to| http.return_to.cookie(to, http.device.secure_cookie));
    if let Some(back) = &back
        && browser_session::current(&state, &request).await?.is_some()
    {
        return Ok(see_other(back.value()).finish());
    }
    with_csrf_cookie(&http, &request, |csrf| async {
        let page = LoginPage {
            notice: None,
            csrf,
            username: String::new(),
            challenge: None,
            passkeys: state.passkeys.enabled(),
        };
        let mut response = render(html(StatusCode::OK), &page, None)?;
        if let Some(back) = &back {
            add_cookie(&mut response, back)?;
        }
        Ok(response)
    })
    .await
}

/// `POST /login`: the login use case; on to the account page, the second factor, a forced
/// password change, or the form again with what went wrong.
#[post("/login")]
pub async fn login(
    state: web::Data<AppState>,
    http: web::Data<HttpState>,
    request: HttpRequest,
    ClientIp(ip): ClientIp,
    form: web::Form<CredentialsForm>,
) -> Result<HttpResponse, PageError> {
    if !csrf::matches(&request, &form.csrf) {
        return forged_post();
    }
    let attempt = async {
        let (username, password) = form.parsed()?;
        let device = http.trusted_device(&state, &request, &username);
        use_case::login(
            &state,
            LoginRequest {
                ip,
                username: &username,
                password,
                device,
                altcha: form.altcha(),
            },
        )
        .await
    };
    let error = match attempt.await {
        Ok(logged_in) => {
            return Ok(browser_session::signed_in(
                &state, &http, &request, &logged_in,
            )?);
        }
        Err(error) => error,
    };
    match error {
        Error::MfaRequired { mfa_token, methods } => {
            let page = SecondFactorPage::new(
                None,
                &form.csrf,
                &mfa_token,
                form.username.trim(),
                &methods.methods().join(","),
            );
            render(html(StatusCode::OK), &page, None)
        }
        Error::PasswordChangeRequired {
            password_change_token,
        } => {
            let page = ChangePasswordPage {
                notice: None,
                csrf: form.csrf.clone(),
                password_change_token,
                min_length: state.passwords.min_length(),
            };
            render(html(StatusCode::FORBIDDEN), &page, None)
        }
        error => {
            let refusal = Refusal::of(error)?;
            let page = LoginPage {
                notice: Some(refusal.notice),
                csrf: form.csrf.clone(),
                username: form.username.clone(),
                challenge: refusal.challenge,
                passkeys: state.passkeys.enabled(),
            };
            render(html(refusal.status), &page, refusal.retry_after)
        }
    }
}

/// `POST /login/mfa`: the second step, with a code or a recovery code.
#[post("/login/mfa")]
pub async fn login_second_factor(
    state: web::Data<AppState>,
    http: web::Data<HttpState>,
    request: HttpRequest,
    form: web::Form<SecondFactorForm>,
) -> Result<HttpResponse, PageError> {
    if !csrf::matches(&request, &form.csrf) {
        return forged_post();
    }
    let cookie = request.cookie(&http.device.cookie_name);
    let attempt = async {
        let credential = form.credential.as_deref().map(passkey_answer).transpose()?;
        let proof = match (form.ceremony.as_deref(), &credential) {
            (Some(ceremony), Some(credential)) => use_case::SecondFactor::Passkey {
                ceremony,
                credential,
            },
            _ => use_case::SecondFactor::Code(Proof::parse(
                form.code.as_deref().filter(|c| !c.is_empty()),
                form.recovery_code.as_deref().filter(|c| !c.is_empty()),
            )?),
        };
        use_case::login_second_factor(
            &state,
            &form.mfa_token,
            proof,
            cookie.as_ref().map(|c| c.value()),
        )
        .await
    };
    match attempt.await {
        Ok(logged_in) => Ok(browser_session::signed_in(
            &state, &http, &request, &logged_in,
        )?),
        // Nothing left to try with this token: back to the password.
        Err(
            error @ (Error::InvalidLoginToken
            | Error::MfaThrottled {
                token_spent: true, ..
            }),
        ) => {
            let refusal = Refusal::of(error)?;
            let page = LoginPage {
                notice: Some(refusal.notice),
                csrf: form.csrf.clone(),
                username: String::new(),
                challenge: None,
                passkeys: state.passkeys.enabled(),
            };
            render(html(refusal.status), &page, refusal.retry_after)
        }
        Err(error) => {
            let refusal = Refusal::of(error)?;
            let page = SecondFactorPage::new(
                Some(refusal.notice),
                &form.csrf,
                &form.mfa_token,
                &form.username,
                &form.methods,
            );
            render(html(refusal.status), &page, refusal.retry_after)
        }
    }
}

/// `POST /login/passkey`: a passkey sign-in with the answer the page's script got (from the
/// button, or the username field's autofill); on to the account page, or the login page with
/// what went wrong.
#[post("/login/passkey")]
pub async fn login_passkey(
    state: web::Data<AppState>,
    http: web::Data<HttpState>,
    request: HttpRequest,
    ClientIp(ip): ClientIp,
    form: web::Form<PasskeyForm>,
) -> Result<HttpResponse, PageError> {
    if !csrf::matches(&request, &form.csrf) {
        return forged_post();
    }
    let cookie = request.cookie(&http.device.cookie_name);
    let attempt = async {
        let credential = passkey_answer(&form.credential)?;
        use_case::login_passkey(
            &state,
            PasskeySignIn {
                ip,
                ceremony: &form.ceremony,
                credential: &credential,
                device_cookie: cookie.as_ref().map(|c| c.value()),
                altcha: None,
            },
        )
        .await
    };
    match attempt.await {
        Ok(logged_in) => Ok(browser_session::signed_in(
            &state, &http, &request, &logged_in,
        )?),
        Err(error) => {
            let refusal = Refusal::of(error)?;
            let page = LoginPage {
                notice: Some(refusal.notice),
                csrf: form.csrf.clone(),
                username: String::new(),
                challenge: None,
                passkeys: state.passkeys.enabled(),
            };
            render(html(refusal.status), &page, refusal.retry_after)
        }
    }
}

/// `GET /register`.
#[get("/register")]
pub async fn register_page(
    state: web::Data<AppState>,
    http: web::Data<HttpState>,
    request: HttpRequest,
) -> Result<HttpResponse, PageError> {
    with_csrf_cookie(&http, &request, |csrf| async {
        let page = RegisterPage {
            notice: None,
            csrf,
            username: String::new(),
            challenge: None,
            min_length: state.passwords.min_length(),
        };
        render(html(StatusCode::OK), &page, None)
    })
    .await
}

/// `POST /register`: the registration use case; on to the login page, or the form again.
#[post("/register")]
pub async fn register(
    state: web::Data<AppState>,
    request: HttpRequest,
    ClientIp(ip): ClientIp,
    form: web::Form<CredentialsForm>,
) -> Result<HttpResponse, PageError> {
    if !csrf::matches(&request, &form.csrf) {
        return forged_post();
    }
    let email = form.email.as_deref().filter(|e| !e.trim().is_empty());
    match registration::register(&state, ip, form.parsed(), email, form.altcha()).await {
        Ok(registered) => {
            let link = match &registered.email {
                Some(email) => format!(" A link to verify {email} is on its way."),
                None => String::new(),
            };
            let page = LoginPage {
                notice: Some(Notice::info(format!(
                    "Account {} created: log in.{link}",
                    registered.account.username
                ))),
                csrf: form.csrf.clone(),
                username: registered.account.username,
                challenge: None,
                passkeys: state.passkeys.enabled(),
            };
            render(html(StatusCode::CREATED), &page, None)
        }
        Err(error) => {
            let refusal = Refusal::of(error)?;
            let page = RegisterPage {
                notice: Some(refusal.notice),
                csrf: form.csrf.clone(),
                username: form.username.clone(),
                challenge: refusal.challenge,
                min_length: state.passwords.min_length(),
            };
            render(html(refusal.status), &page, refusal.retry_after)
        }
    }
}

/// `POST /password`: the forced change of a breached password, with its single-use token.
#[post("/password")]
pub async fn change_breached_password(
    state: web::Data<AppState>,
    request: HttpRequest,
    form: web::Form<TokenPasswordForm>,
) -> Result<HttpResponse, PageError> {
    if !csrf::matches(&request, &form.csrf) {
        return forged_post();
    }
    let attempt = async {
        let new_password = checked_password(form.new_password.clone(), "new_password")?;
        password_change::change_password(
            &state,
            Authority::Token(&form.password_change_token),
            new_password,
        )
        .await
    };
    match attempt.await {
        Ok(_) => {
            let page = LoginPage {
                notice: Some(Notice::info("Password changed: log in with the new one.")),
                csrf: form.csrf.clone(),
                username: String::new(),
                challenge: None,
                passkeys: state.passkeys.enabled(),
            };
            render(html(StatusCode::OK), &page, None)
        }
        Err(error) => {
            let refusal = Refusal::of(error)?;
            let page = ChangePasswordPage {
                notice: Some(refusal.notice),
                csrf: form.csrf.clone(),
                password_change_token: form.password_change_token.clone(),
                min_length: state.passwords.min_length(),
            };
            render(html(refusal.status), &page, refusal.retry_after)
        }
    }
}
