//! The pages of the links in notices (`/not-me`, `/unlock`): a link opens a page whose button
//! posts the token, so a mail scanner that follows links uses nothing up; the post goes through
//! the use case the API uses ([`portcullis_accounts::notices`]).

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, get, post, web};
use askama::Template;
use portcullis_accounts::{AppState, notices};
use serde::Deserialize;

use super::page::{Notice, PageError, Refusal, forged_post, html, message, render};
use super::{csrf, with_csrf_cookie};
use crate::routes::HttpState;

#[derive(Template)]
#[template(path = "owner_link.html")]
struct LinkPage {
    notice: Option<Notice>,
    csrf: String,
    token: String,
    /// The page's heading.
    title: &'static str,
    /// What the button does.
    explanation: &'static str,
    /// Where the button posts.
    action: &'static str,
    /// The button's label.
    button: &'static str,
}

/// A link's query.
#[derive(Deserialize)]
pub struct LinkQuery {
    #[serde(default)]
    token: String,
}

/// The form's fields.
#[derive(Deserialize)]
pub struct LinkForm {
    csrf: String,
    token: String,
}

async fn link_page(
    http: &HttpState,
    request: &HttpRequest,
    token: &str,
    page: fn(String, String) -> LinkPage,
) -> Result<HttpResponse, PageError> {
    with_csrf_cookie(http, request, |csrf| async move {
        render(html(StatusCode::OK), &page(csrf, token.to_owned()), None)
    })
    .await
}

fn not_me_page(csrf: String, token: String) -> LinkPage {
    LinkPage {
        notice: None,
        csrf,
        token,
        title: "This wasn't me",
        explanation: "Someone signed in to your account from a browser it had not used. If it \
            was not you, they hold your password: this ends every session of the account, locks \
            it until you choose a new password, and mails you the link to do so.",
        action: "/not-me",
        button: "End every session and reset my password",
    }
}

fn unlock_page(csrf: String, token: String) -> LinkPage {
    LinkPage {
        notice: None,
        csrf,
        token,
        title: "Unlock your account",
        explanation: "Failed sign-ins locked your account. This lifts the lock so that you can \
            sign in now; if the failures were not yours, choose a stronger password afterwards.",
        action: "/unlock",
        button: "Unlock my account",
    }
}

/// `GET /not-me?token=...`: the button that disowns a new-device login.
#[get("/not-me")]
pub async fn not_me_form(
    http: web::Data<HttpState>,
    request: HttpRequest,
    query: web::Query<LinkQuery>,
) -> Result<HttpResponse, PageError> {
    link_page(&http, &request, &query.token, not_me_page).await
}

/// `POST /not-me`: every session ends, the account locks until a reset, whose link is mailed.
#[post("/not-me")]
pub async fn not_me(
    state: web::Data<AppState>,
    request: HttpRequest,
    form: web::Form<LinkForm>,
) -> Result<HttpResponse, PageError> {
    if !csrf::matches(&request, &form.csrf) {
        return forged_post();
    }
    let disowned = notices::disown_login(&state, &form.token).await.map(drop);
    answer(
        disowned,
        "Every session ended",
        "Whoever signed in is signed out, and the account is locked until you choose a new \
         password. The link to do so is on its way to your address.",
    )
}

/// `GET /unlock?token=...`: the button that lifts the account's lockout.
#[get("/unlock")]
pub async fn unlock_form(
    http: web::Data<HttpState>,
    request: HttpRequest,
    query: web::Query<LinkQuery>,
) -> Result<HttpResponse, PageError> {
    link_page(&http, &request, &query.token, unlock_page).await
}

/// `POST /unlock`: the account's lockout is lifted.
#[post("/unlock")]
pub async fn unlock(
    state: web::Data<AppState>,
    request: HttpRequest,
    form: web::Form<LinkForm>,
) -> Result<HttpResponse, PageError> {
    if !csrf::matches(&request, &form.csrf) {
        return forged_post();
    }
    let unlocked = notices::unlock(&state, &form.token).await;
    answer(unlocked, "Account unlocked", "You can sign in again.")
}

/// The page after a link's post: what it did, or why nothing changed.
fn answer(
    done: Result<(), portcullis_accounts::Error>,
    title: &str,
    text: &str,
) -> Result<HttpResponse, PageError> {
    let (status, title, notice) = match done {
        Ok(()) => (StatusCode::OK, title, Notice::info(text)),
        Err(error) => {
            let refusal = Refusal::of(error)?;
            (refusal.status, "Nothing changed", refusal.notice)
        }
    };
    message(status, title, notice, "/login", "Go to the login page")
}
