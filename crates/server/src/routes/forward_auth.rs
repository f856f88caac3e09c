//! `GET /v1/auth`: forward authentication. A reverse proxy (nginx `auth_request`, Traefik
//! `ForwardAuth`, Caddy `forward_auth`) asks it, for every request to an application it
//! protects, whether the request carries a live session: the pages' session cookie, or a bearer
//! token (a session's opaque token, or an access JWT when `tokens.access.enabled`).
//!
//! A live one answers 204 with who it is in `X-Portcullis-*` headers, which the proxy passes to
//! the application; anything else answers 401. A browser (`Accept: text/html`) is also told
//! where to sign in (`Location`, and a page that goes there), with the address it asked for as
//! the return address when that is on `server.return_hosts` (see [`ReturnTo`]).
//!
//! It is cheap on purpose: no Argon2, no attempt-store call. A session is looked up in the
//! replica's session cache (`session.cache_secs`, revocations announced to every replica), an
//! access token is checked by its signature alone (it cannot be revoked; it is short-lived).

use actix_web::body::BoxBody;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, ResponseError, get, web};
use portcullis_accounts::session_cache::Identity;
use portcullis_accounts::{AppState, Error, token};

use super::openapi::Unavailable;
use super::{HttpState, bearer_digest};
use crate::error::{ApiError, Problem, Summarised};
use crate::return_to::ReturnTo;
use crate::web::browser_session;

/// The endpoint's path, for the request span (the route's attributes spell it too; a test holds
/// them together).
pub const PATH: &str = "/v1/auth";
/// The account's public id.
pub const SUBJECT: &str = "x-portcullis-subject";
/// The account's username, percent-encoded where it is not visible ASCII (see [`header_safe`]).
pub const USERNAME: &str = "x-portcullis-username";
/// `true` when the session was opened with a breached password not changed since.
pub const PASSWORD_CHANGE_REQUIRED: &str = "x-portcullis-password-change-required";

/// 204 for a live session (who it is in the headers), 401 otherwise.
#[utoipa::path(
    tag = "sessions",
    security(("session" = []), ()),
    responses(
        (status = 204, description = "A live session: its account is in the headers",
            headers(
                ("X-Portcullis-Subject" = String, description = "The account's public id"),
                ("X-Portcullis-Username" = String, description = "The account's username, \
                    UTF-8 percent-encoded outside visible ASCII and for `%`"),
                ("X-Portcullis-Password-Change-Required" = String, description = "`true` \
                    when the session was opened with a breached password (sessions only)"),
            )),
        (status = 401, description = "No live session. A browser (`Accept: text/html`) gets \
            the login page's address in `Location` (with `return_to` when the proxy's \
            `X-Forwarded-Proto`, `-Host` and `-Uri` name an address on `server.return_hosts`) \
            and a page that goes there; anything else problem+json",
            content(
                (Problem = "application/problem+json"),
                (String = "text/html"),
            ),
            headers(
                ("WWW-Authenticate" = String, description = "`Bearer`"),
                ("Location" = String, description = "The login page (browsers only)"),
            )),
        Unavailable,
    )
)]
#[get("/v1/auth")]
pub async fn forward_auth(
    state: web::Data<AppState>,
    http: web::Data<HttpState>,
    request: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let identity = identify(&state, &request).await?;
    metrics::counter!(
        "portcullis_forward_auth_total",
        "result" => if identity.is_some() { "live" } else { "refused" }
    )
    .increment(1);
    let mut response = match identity {
        Some(identity) => granted(&identity),
        None => refused(&http.return_to, &request),
    };
    // The proxy asks once per request it passes: the metric counts them, the line is DEBUG.
    response.extensions_mut().insert(Summarised);
    Ok(response)
}

/// Who the request's credential belongs to, if it is live: the bearer token when there is
/// one (a malformed one is not passed over for the cookie), else the session cookie.
async fn identify(state: &AppState, request: &HttpRequest) -> Result<Option<Identity>, Error> {
    let Some(authorization) = request.headers().get(header::AUTHORIZATION) else {
        let cookie = request.cookie(browser_session::COOKIE);
        return match cookie.and_then(|c| token::digest_of_value(c.value())) {
            Some(digest) => Ok(state.sessions.identify(&digest).await?),
            None => Ok(None),
        };
    };
    if let Some(digest) = bearer_digest(request) {
        return Ok(state.sessions.identify(&digest).await?);
    }
    let jwt = authorization
        .to_str()
        .ok()
        .and_then(|value| value.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, jwt)| jwt.trim());
    let verified = jwt
        .zip(state.access_tokens.as_ref())
        .and_then(|(jwt, tokens)| tokens.verify(jwt));
    Ok(verified.map(|verified| Identity {
        subject: verified.subject,
        username: verified.username,
        expires_at: verified.expires_at,
        password_change_required: false,
    }))
}

/// 204 with the identity's headers (`RequestSpan` adds `Cache-Control: no-store`, as to every
/// answer).
fn granted(identity: &Identity) -> HttpResponse {
    let mut response = HttpResponse::NoContent();
    response
        .insert_header((SUBJECT, identity.subject.as_str()))
        .insert_header((USERNAME, header_safe(&identity.username)));
    if identity.password_change_required {
        response.insert_header((PASSWORD_CHANGE_REQUIRED, "true"));
    }
    response.finish()
}

/// 401; for a browser, with where to sign in.
fn refused(return_to: &ReturnTo, request: &HttpRequest) -> HttpResponse {
    let mut response = ApiError::from(Error::Unauthenticated).error_response();
    let browser = request
        .headers()
        .get(header::ACCEPT)
        .and_then(|accept| accept.to_str().ok())
        .is_some_and(|accept| accept.contains("text/html"));
    if !browser {
        return response;
    }
    let login = return_to.login_page(ReturnTo::forwarded(request).as_deref());
    let Ok(location) = HeaderValue::from_str(&login) else {
        return response;
    };
    let headers = response.headers_mut();
    headers.insert(header::LOCATION, location);
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    let escaped = login
        .replace('&', "&amp;")
        .replace('"', "&quot;")
        .replace('<', "&lt;");
    response.set_body(BoxBody::new(format!(
        "<!doctype html><meta charset=\"utf-8\"><meta http-equiv=\"refresh\" content=\"0; \
         url={escaped}\"><title>Sign in</title><p><a href=\"{escaped}\">Sign in</a> to go on.</p>\n"
    )))
}

/// `value` with every byte outside visible ASCII, and `%`, percent-encoded: a header carries it
/// unchanged when it is plain ASCII, and any username round-trips through a URL decoder.
pub fn header_safe(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_graphic() && byte != b'%' {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use actix_web::App;
    use actix_web::test::{TestRequest, call_service, init_service};

    use super::{PATH, forward_auth, header_safe};

    #[actix_web::test]
    async fn the_path_is_the_routes() {
        let app = init_service(App::new().service(forward_auth)).await;
        // No state is given: the route is found (and cannot answer), or it is not.
        let response = call_service(&app, TestRequest::get().uri(PATH).to_request());
        assert_ne!(response.await.status(), 404);
        let elsewhere = TestRequest::get().uri("/v1/elsewhere").to_request();
        assert_eq!(call_service(&app, elsewhere).await.status(), 404);
    }

    #[test]
    fn a_username_is_sent_as_is_when_visible_ascii_and_percent_encoded_otherwise() {
        assert_eq!(header_safe("alice.smith"), "alice.smith");
        assert_eq!(header_safe("zoë"), "zo%C3%AB");
        assert_eq!(header_safe("100%"), "100%25");
        assert_eq!(header_safe("a b"), "a%20b");
    }
}
