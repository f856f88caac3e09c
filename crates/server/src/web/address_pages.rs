//! The verification link's page (`/verify-email`): the link opens a page whose button posts the
//! token, so a mail scanner that follows links does not use it up; the post goes through the
//! use case the API uses ([`portcullis_accounts::addresses`]).

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, get, post, web};
use askama::Template;
use portcullis_accounts::AppState;
use portcullis_accounts::addresses;
use serde::Deserialize;

use super::page::{Notice, PageError, Refusal, forged_post, html, message, render};
use super::{csrf, with_csrf_cookie};
use crate::routes::HttpState;

#[derive(Template)]
#[template(path = "verify_email.html")]
struct VerifyEmailPage {
    notice: Option<Notice>,
    csrf: String,
    token: String,
}

/// The link's query.
#[derive(Deserialize)]
pub struct LinkQuery {
    #[serde(default)]
    token: String,
}

/// The form's fields.
#[derive(Deserialize)]
pub struct VerifyForm {
    csrf: String,
    token: String,
}

/// `GET /verify-email?token=...`: the button that verifies.
#[get("/verify-email")]
pub async fn verify_page(
    http: web::Data<HttpState>,
    request: HttpRequest,
    query: web::Query<LinkQuery>,
) -> Result<HttpResponse, PageError> {
    with_csrf_cookie(&http, &request, |csrf| async {
        let page = VerifyEmailPage {
            notice: None,
            csrf,
            token: query.token.clone(),
        };
        render(html(StatusCode::OK), &page, None)
    })
    .await
}

/// `POST /verify-email`: the address becomes the account's verified one.
#[post("/verify-email")]
pub async fn verify(
    state: web::Data<AppState>,
    request: HttpRequest,
    form: web::Form<VerifyForm>,
) -> Result<HttpResponse, PageError> {
    if !csrf::matches(&request, &form.csrf) {
        return forged_post();
    }
    match addresses::verify(&state, &form.token).await {
        Ok(email) => message(
            StatusCode::OK,
            "Address verified",
            Notice::info(format!(
                "{email} now receives mail about your account, and nothing else does."
            )),
            "/account",
            "Go to your account",
        ),
        Err(error) => {
            let refusal = Refusal::of(error)?;
            message(
                refusal.status,
                "Address not verified",
                refusal.notice,
                "/account",
                "Go to your account",
            )
        }
    }
}
