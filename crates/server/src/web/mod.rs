//! The hosted pages: login (with the challenge widget and the second-factor step),
//! registration and the account page on the public listener, and the admin console on the
//! admin listener.
//!
//! Server-rendered HTML (askama templates in `crates/server/templates`) and plain form posts:
//! everything but the challenge widget and the console's polling works without JavaScript.
//! Each post goes through the use case the JSON API uses ([`portcullis_accounts::login`],
//! [`portcullis_accounts::registration`], [`portcullis_accounts::password_change`],
//! [`portcullis_accounts::mfa`]), so a page counts, throttles, challenges and locks out exactly
//! as the API does. Posts carry a CSRF token
//! ([`csrf`]); session and console cookies are HttpOnly and `SameSite=Strict`.

mod account_page;
mod address_pages;
mod admin_console;
mod assets;
pub(crate) mod browser_session;
mod csrf;
mod login_pages;
mod notice_pages;
mod page;
mod passkey_pages;
mod reset_pages;

use actix_web::{HttpRequest, HttpResponse, web};

use crate::error::ApiError;
use crate::routes::HttpState;
use page::PageError;

/// Registers the pages, the console and their static files; a form body over `max_body_bytes`
/// or one that does not parse is a 400 page.
pub fn configure(max_body_bytes: usize) -> impl FnOnce(&mut web::ServiceConfig) {
    move |cfg| {
        cfg.app_data(
            web::FormConfig::default()
                .limit(max_body_bytes)
                .error_handler(|error, _| {
                    PageError(ApiError::bad_request(format!(
                        "the form could not be read: {error}"
                    )))
                    .into()
                }),
        )
        .service(assets::asset)
        .service(login_pages::login_page)
        .service(login_pages::login)
        .service(login_pages::login_second_factor)
        .service(login_pages::login_passkey)
        .service(login_pages::register_page)
        .service(login_pages::register)
        .service(login_pages::change_breached_password)
        .service(reset_pages::forgot_page)
        .service(reset_pages::forgot)
        .service(reset_pages::reset_page)
        .service(reset_pages::reset)
        .service(address_pages::verify_page)
        .service(address_pages::verify)
        .service(notice_pages::not_me_form)
        .service(notice_pages::not_me)
        .service(notice_pages::unlock_form)
        .service(notice_pages::unlock)
        .service(account_page::show)
        .service(account_page::logout)
        .service(account_page::logout_everywhere)
        .service(account_page::change_password)
        .service(account_page::set_address)
        .service(account_page::enrol)
        .service(account_page::confirm)
        .service(account_page::remove)
        .service(passkey_pages::registration_options)
        .service(passkey_pages::add)
        .service(passkey_pages::remove)
        .service(admin_console::to_console)
        .service(admin_console::console)
        .service(admin_console::sign_in)
        .service(admin_console::sign_out);
    }
}

/// Renders a page with forms: `page` gets the browser's CSRF token, and a browser without one
/// gets its cookie.
async fn with_csrf_cookie<Page>(
    http: &HttpState,
    request: &HttpRequest,
    page: impl FnOnce(String) -> Page,
) -> Result<HttpResponse, PageError>
where
    Page: Future<Output = Result<HttpResponse, PageError>>,
{
    let token = csrf::token(request, http.device.secure_cookie)?;
    let mut response = page(token.value).await?;
    if let Some(cookie) = token.new_cookie {
        page::add_cookie(&mut response, &cookie)?;
    }
    Ok(response)
}
