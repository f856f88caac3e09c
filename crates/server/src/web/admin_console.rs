//! The admin console (`/admin/`, on the admin listener): the admin token entered once, then a
//! console cookie (`SameSite=Strict`, HttpOnly, path `/admin`, see
//! [`AdminApi::console_cookie`]) authenticates the console's calls to the admin API. The page
//! is a frame; `static/console.js` polls `/admin/v1/status`, `lockouts`, `allowlist` and
//! `events` and sends unlocks and allowlist changes. Those are JSON posts, which a cross-site
//! form cannot make, carrying a cookie a cross-site request never gets.

use actix_web::cookie::time::Duration as CookieDuration;
use actix_web::cookie::{Cookie, SameSite};
use actix_web::http::StatusCode;
use actix_web::web::Redirect;
use actix_web::{HttpRequest, HttpResponse, Responder, ResponseError, get, post, web};
use askama::Template;
use portcullis_accounts::{AppState, Error};
use portcullis_core::Reason;
use serde::Deserialize;

use super::page::{Notice, PageError, forged_post, html, notice_of, render, see_other};
use super::{csrf, with_csrf_cookie};
use crate::error::ApiError;
use crate::routes::HttpState;
use crate::routes::admin::{
    CONSOLE_COOKIE, CONSOLE_COOKIE_SECS, admin_api, refuse_admin, unix_now_secs,
};

/// How often the console polls, in seconds (console.js says the same).
const POLL_SECS: u64 = 5;

#[derive(Template)]
#[template(path = "console_login.html")]
struct ConsoleLoginPage {
    notice: Option<Notice>,
    csrf: String,
    hours: u64,
}

#[derive(Template)]
#[template(path = "console.html")]
struct ConsolePage {
    notice: Option<Notice>,
    csrf: String,
    poll_secs: u64,
    /// Refusal reasons, as column headings.
    reasons: Vec<String>,
}

/// The token form's fields.
#[derive(Deserialize)]
pub struct TokenForm {
    csrf: String,
    token: String,
}

/// The sign-out form's fields.
#[derive(Deserialize)]
pub struct SignOutForm {
    csrf: String,
}

fn login_page(csrf: String, notice: Option<Notice>) -> ConsoleLoginPage {
    ConsoleLoginPage {
        notice,
        csrf,
        hours: CONSOLE_COOKIE_SECS / 3_600,
    }
}

/// `GET /admin`: to `/admin/`.
#[get("/admin")]
pub async fn to_console() -> impl Responder {
    Redirect::to("/admin/").permanent()
}

/// `GET /admin/`: the console, or the token form without a console cookie; 404 off the admin
/// listener or without `admin.token`.
#[get("/admin/")]
pub async fn console(
    http: web::Data<HttpState>,
    request: HttpRequest,
) -> Result<HttpResponse, PageError> {
    let signed_in = admin_api(&http, &request)?.accepts(&request);
    with_csrf_cookie(&http, &request, |csrf| async move {
        if signed_in {
            let page = ConsolePage {
                notice: None,
                csrf,
                poll_secs: POLL_SECS,
                reasons: Reason::ALL
                    .iter()
                    .map(|r| r.as_str().replace('_', " "))
                    .collect(),
            };
            render(html(StatusCode::OK), &page, None)
        } else {
            render(html(StatusCode::OK), &login_page(csrf, None), None)
        }
    })
    .await
}

/// `POST /admin/session`: checks the token once and sets the console cookie; a wrong token is
/// refused and counted like one sent to the admin API.
#[post("/admin/session")]
pub async fn sign_in(
    state: web::Data<AppState>,
    http: web::Data<HttpState>,
    request: HttpRequest,
    form: web::Form<TokenForm>,
) -> Result<HttpResponse, PageError> {
    let api = admin_api(&http, &request)?;
    if !csrf::matches(&request, &form.csrf) {
        return forged_post();
    }
    if !api.is_token(&form.token) {
        let error = refuse_admin(&state, &request).await;
        let notice = match &error {
            ApiError::Accounts(Error::Unauthenticated) => {
                Notice::error("That is not the admin token.")
            }
            other => notice_of(other),
        };
        let page = login_page(form.csrf.clone(), Some(notice));
        return render(html(error.status_code()), &page, error.retry_after());
    }
    let expires = unix_now_secs() + CONSOLE_COOKIE_SECS;
    let cookie = Cookie::build(CONSOLE_COOKIE, api.console_cookie(expires))
        .path("/admin")
        .http_only(true)
        .secure(http.device.secure_cookie)
        .same_site(SameSite::Strict)
        .max_age(CookieDuration::seconds(
            i64::try_from(CONSOLE_COOKIE_SECS).unwrap_or(i64::MAX),
        ))
        .finish();
    Ok(see_other("/admin/").cookie(cookie).finish())
}

/// `POST /admin/logout`: forgets the console cookie.
#[post("/admin/logout")]
pub async fn sign_out(
    http: web::Data<HttpState>,
    request: HttpRequest,
    form: web::Form<SignOutForm>,
) -> Result<HttpResponse, PageError> {
    admin_api(&http, &request)?;
    if !csrf::matches(&request, &form.csrf) {
        return forged_post();
    }
    let mut cookie = Cookie::build(CONSOLE_COOKIE, "").path("/admin").finish();
    cookie.make_removal();
    Ok(see_other("/admin/").cookie(cookie).finish())
}
