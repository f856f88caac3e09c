//! CSRF protection for the pages' form posts: a `SameSite=Strict` HttpOnly cookie holding a
//! random token, which every form repeats in a hidden `csrf` field (a double submit). A
//! cross-site page can neither read the cookie nor make the browser send it, so it cannot
//! forge a post that matches.

use actix_web::HttpRequest;
use actix_web::cookie::{Cookie, SameSite};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use subtle::ConstantTimeEq;

/// The cookie's name.
pub const COOKIE: &str = "portcullis_csrf";

/// Random bytes in a token (43 characters once encoded).
const TOKEN_BYTES: usize = 32;

/// The token a page's forms carry.
pub struct CsrfToken {
    /// The value of the hidden `csrf` field.
    pub value: String,
    /// A new cookie to set, when the browser had none (or a malformed one).
    pub new_cookie: Option<Cookie<'static>>,
}

/// The request's token, or a new one (with its cookie) when it has none.
pub fn token(request: &HttpRequest, secure: bool) -> anyhow::Result<CsrfToken> {
    if let Some(cookie) = request.cookie(COOKIE).filter(|c| is_well_formed(c.value())) {
        return Ok(CsrfToken {
            value: cookie.value().to_owned(),
            new_cookie: None,
        });
    }
    let mut random = [0u8; TOKEN_BYTES];
    getrandom::fill(&mut random).map_err(|e| anyhow::anyhow!("no entropy source: {e}"))?;
    let value = URL_SAFE_NO_PAD.encode(random);
    let cookie = Cookie::build(COOKIE, value.clone())
        .path("/")
        .http_only(true)
        .secure(secure)
        .same_site(SameSite::Strict)
        .finish();
    Ok(CsrfToken {
        value,
        new_cookie: Some(cookie),
    })
}

/// Whether a form post's `field` matches the request's cookie.
pub fn matches(request: &HttpRequest, field: &str) -> bool {
    request.cookie(COOKIE).is_some_and(|cookie| {
        is_well_formed(cookie.value())
            && bool::from(cookie.value().as_bytes().ct_eq(field.as_bytes()))
    })
}

fn is_well_formed(value: &str) -> bool {
    value.len() == 43
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    #[test]
    fn a_post_matches_only_its_own_cookie() {
        let issued = token(&TestRequest::default().to_http_request(), true).unwrap();
        let cookie = issued.new_cookie.unwrap();
        assert!(cookie.http_only().unwrap_or(false));
        assert_eq!(cookie.same_site(), Some(SameSite::Strict));
        let request = TestRequest::default().cookie(cookie).to_http_request();
        assert!(matches(&request, &issued.value));
        // The same browser keeps its token.
        let again = token(&request, true).unwrap();
        assert_eq!(again.value, issued.value);
        assert!(again.new_cookie.is_none());

        let other = token(&TestRequest::default().to_http_request(), true).unwrap();
        assert!(!matches(&request, &other.value));
        assert!(!matches(&request, ""));
        assert!(!matches(
            &TestRequest::default().to_http_request(),
            &issued.value
        ));
    }
}
