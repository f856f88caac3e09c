//! Password reset's pages: `/forgot` asks for a link, `/reset?token=` sets the new password.
//! Each post goes through the use case the API uses ([`portcullis_accounts::password_reset`]),
//! so a page counts, throttles and challenges as the API does, and answers alike whatever the
//! account. Like every page, they send `Referrer-Policy: no-referrer`, so the link's token never
//! leaves in a `Referer`.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, get, post, web};
use askama::Template;
use portcullis_accounts::AppState;
use portcullis_accounts::password_reset;
use secrecy::SecretString;
use serde::Deserialize;

use super::page::{Notice, PageError, Refusal, forged_post, html, message, render};
use super::{csrf, with_csrf_cookie};
use crate::routes::password::RESET_REQUESTED;
use crate::routes::{ClientIp, HttpState, checked_password, parse_username};

#[derive(Template)]
#[template(path = "forgot.html")]
struct ForgotPage {
    notice: Option<Notice>,
    csrf: String,
    username: String,
    challenge: Option<String>,
}

#[derive(Template)]
#[template(path = "reset.html")]
struct ResetPage {
    notice: Option<Notice>,
    csrf: String,
    token: String,
    min_length: usize,
}

/// The forgot form's fields.
#[derive(Deserialize)]
pub struct ForgotForm {
    csrf: String,
    username: String,
    #[serde(default)]
    altcha: Option<String>,
}

/// The reset link's query.
#[derive(Deserialize)]
pub struct LinkQuery {
    #[serde(default)]
    token: String,
}

/// The reset form's fields.
#[derive(Deserialize)]
pub struct ResetForm {
    csrf: String,
    token: String,
    new_password: SecretString,
}

/// `GET /forgot`.
#[get("/forgot")]
pub async fn forgot_page(
    http: web::Data<HttpState>,
    request: HttpRequest,
) -> Result<HttpResponse, PageError> {
    with_csrf_cookie(&http, &request, |csrf| async {
        let page = ForgotPage {
            notice: None,
            csrf,
            username: String::new(),
            challenge: None,
        };
        render(html(StatusCode::OK), &page, None)
    })
    .await
}

/// `POST /forgot`: the same page for every account, or the form again with what went wrong
/// (a limit, a challenge, an unreadable username).
#[post("/forgot")]
pub async fn forgot(
    state: web::Data<AppState>,
    request: HttpRequest,
    ClientIp(ip): ClientIp,
    form: web::Form<ForgotForm>,
) -> Result<HttpResponse, PageError> {
    if !csrf::matches(&request, &form.csrf) {
        return forged_post();
    }
    let altcha = form.altcha.as_deref().filter(|a| !a.is_empty());
    let username = parse_username(&form.username);
    match password_reset::request(state.into_inner(), ip, username, altcha).await {
        Ok(()) => message(
            StatusCode::ACCEPTED,
            "Check your mail",
            Notice::info(RESET_REQUESTED),
            "/login",
            "Go to the login page",
        ),
        Err(error) => {
            let refusal = Refusal::of(error)?;
            let page = ForgotPage {
                notice: Some(refusal.notice),
                csrf: form.csrf.clone(),
                username: form.username.clone(),
                challenge: refusal.challenge,
            };
            render(html(refusal.status), &page, refusal.retry_after)
        }
    }
}

/// `GET /reset?token=...`: the new password's form.
#[get("/reset")]
pub async fn reset_page(
    state: web::Data<AppState>,
    http: web::Data<HttpState>,
    request: HttpRequest,
    query: web::Query<LinkQuery>,
) -> Result<HttpResponse, PageError> {
    with_csrf_cookie(&http, &request, |csrf| async {
        let page = ResetPage {
            notice: None,
            csrf,
            token: query.token.clone(),
            min_length: state.passwords.min_length(),
        };
        render(html(StatusCode::OK), &page, None)
    })
    .await
}

/// `POST /reset`: the new password; on to the login page, or the form again with why not.
#[post("/reset")]
pub async fn reset(
    state: web::Data<AppState>,
    request: HttpRequest,
    form: web::Form<ResetForm>,
) -> Result<HttpResponse, PageError> {
    if !csrf::matches(&request, &form.csrf) {
        return forged_post();
    }
    let attempt = async {
        let new_password = checked_password(form.new_password.clone(), "new_password")?;
        password_reset::confirm(&state, &form.token, new_password).await
    };
    match attempt.await {
        Ok(_) => message(
            StatusCode::OK,
            "Password changed",
            Notice::info("Your password is changed and every session ended: log in with it."),
            "/login",
            "Go to the login page",
        ),
        Err(error) => {
            let refusal = Refusal::of(error)?;
            let page = ResetPage {
                notice: Some(refusal.notice),
                csrf: form.csrf.clone(),
                token: form.token.clone(),
                min_length: state.passwords.min_length(),
            };
            render(html(refusal.status), &page, refusal.retry_after)
        }
    }
}
