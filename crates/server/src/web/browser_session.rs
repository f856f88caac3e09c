//! A session in a browser: the same durable session as the API's, its opaque token held in an
//! HttpOnly cookie instead of an `Authorization` header. The cookie is `SameSite=Lax`: a link
//! from elsewhere (a mail, a bookmark) to an application behind forward authentication must
//! arrive signed in; every form post is still held to its CSRF token, whose cookie is
//! `Strict`, and no page changes anything on a GET.

use actix_web::cookie::time::Duration as CookieDuration;
use actix_web::cookie::{Cookie, SameSite};
use actix_web::{HttpRequest, HttpResponse};
use portcullis_accounts::AppState;
use portcullis_accounts::accounts::Account;
use portcullis_accounts::login::LoggedIn;
use portcullis_accounts::sessions::Session;
use portcullis_accounts::token;

use super::page::see_other;
use crate::error::ApiError;
use crate::return_to::{self, ReturnTo};
use crate::routes::HttpState;

/// The cookie's name.
pub const COOKIE: &str = "portcullis_session";

/// The signed-in browser of a request.
pub struct BrowserSession {
    /// The session token's digest.
    pub digest: String,
    /// The live session.
    pub session: Session,
    /// Its account.
    pub account: Account,
}

/// The request's live session and account, if its cookie carries one.
pub async fn current(
    state: &AppState,
    request: &HttpRequest,
) -> Result<Option<BrowserSession>, ApiError> {
    let Some(digest) = request
        .cookie(COOKIE)
        .and_then(|c| token::digest_of_value(c.value()))
    else {
        return Ok(None);
    };
    let Some(session) = state.sessions.get(&digest).await? else {
        return Ok(None);
    };
    let Some(account) = state.accounts.find_by_id(&session.subject).await? else {
        return Ok(None);
    };
    Ok(Some(BrowserSession {
        digest,
        session,
        account,
    }))
}

/// The answer to a finished login: to the account page (or the return address the login page
/// kept, see [`crate::return_to`]), with the session cookie and, for a new browser, a device
/// cookie.
pub fn signed_in(
    state: &AppState,
    http: &HttpState,
    request: &HttpRequest,
    logged_in: &LoggedIn,
) -> Result<HttpResponse, ApiError> {
    let mut response = see_other(&http.return_to.after_sign_in(request));
    if request.cookie(return_to::COOKIE).is_some() {
        response.cookie(ReturnTo::forget());
    }
    let lifetime = logged_in
        .session
        .expires_at
        .saturating_sub(state.sessions.now())
        .div_ceil(1_000);
    response.cookie(
        Cookie::build(COOKIE, logged_in.token.token.clone())
            .path("/")
            .http_only(true)
            .secure(http.device.secure_cookie)
            .same_site(SameSite::Lax)
            .max_age(CookieDuration::seconds(
                i64::try_from(lifetime).unwrap_or(i64::MAX),
            ))
            .finish(),
    );
    if logged_in.new_device {
        response.cookie(http.new_device_cookie(state, &logged_in.username)?);
    }
    Ok(response.finish())
}

/// A cookie that makes the browser forget its session.
pub fn forget() -> Cookie<'static> {
    let mut cookie = Cookie::build(COOKIE, "").path("/").finish();
    cookie.make_removal();
    cookie
}
