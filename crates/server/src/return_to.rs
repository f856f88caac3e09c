//! Where a browser goes back to after signing in, when forward authentication sent it to the
//! login page: only to an address on one of `server.return_hosts`, over http(s); anything else
//! (another host, a `javascript:` URL, credentials in the address) goes to `/account`, so the
//! login page is never an open redirect.
//!
//! The address travels from `GET /v1/auth` (built from the proxy's `X-Forwarded-Proto`,
//! `X-Forwarded-Host` and `X-Forwarded-Uri`) as `/login?return_to=…`; the login page keeps it
//! in a short-lived cookie, so every way of finishing the login (password, second factor,
//! passkey, forced change) honours it, and each read checks it again.

use actix_web::HttpRequest;
use actix_web::cookie::time::Duration as CookieDuration;
use actix_web::cookie::{Cookie, SameSite};
use url::Url;

/// The cookie holding the return address between the login page and the signed-in answer.
pub const COOKIE: &str = "portcullis_return";

/// Minutes the return address is kept for a login to finish.
const KEEP_MINUTES: i64 = 15;

/// The login page's address and the hosts a login may return to.
#[derive(Clone, Debug)]
pub struct ReturnTo {
    login_url: String,
    hosts: Vec<String>,
}

impl ReturnTo {
    /// Sign-in at `public_url`'s `/login`, returning to `hosts` (lower-cased `host` or
    /// `host:port`, as `server.return_hosts` reads them).
    pub fn new(public_url: &str, hosts: Vec<String>) -> Self {
        Self {
            login_url: format!("{}/login", public_url.trim_end_matches('/')),
            hosts,
        }
    }

    /// `raw` as an address a login may return to, or `None`.
    pub fn allowed(&self, raw: &str) -> Option<String> {
        let url = Url::parse(raw).ok()?;
        let host = url.host_str()?.to_ascii_lowercase();
        let plain = matches!(url.scheme(), "http" | "https")
            && url.username().is_empty()
            && url.password().is_none();
        let listed = self.hosts.iter().any(|entry| match url.port() {
            // An entry with a port names that port only; one without, the scheme's own.
            Some(port) => *entry == format!("{host}:{port}"),
            None => *entry == host,
        });
        (plain && listed).then(|| url.into())
    }

    /// The login page's address for a browser that asked for `back` (through a proxy's
    /// forward authentication): with `?return_to=` when `back` is allowed.
    pub fn login_page(&self, back: Option<&str>) -> String {
        match back.and_then(|back| self.allowed(back)) {
            Some(back) => format!(
                "{}?return_to={}",
                self.login_url,
                url::form_urlencoded::byte_serialize(back.as_bytes()).collect::<String>()
            ),
            None => self.login_url.clone(),
        }
    }

    /// The address the request's proxy says the browser asked for: `X-Forwarded-Proto`,
    /// `X-Forwarded-Host` and `X-Forwarded-Uri` (nginx's `$scheme`, `$host`, `$request_uri`).
    pub fn forwarded(request: &HttpRequest) -> Option<String> {
        let header = |name| request.headers().get(name)?.to_str().ok();
        let proto = header("x-forwarded-proto")?;
        let host = header("x-forwarded-host")?;
        let uri = header("x-forwarded-uri").unwrap_or("/");
        uri.starts_with('/')
            .then(|| format!("{proto}://{host}{uri}"))
    }

    /// The cookie keeping an allowed `return_to` while the login finishes; `None` when it is
    /// not allowed.
    pub fn cookie(&self, return_to: &str, secure: bool) -> Option<Cookie<'static>> {
        let back = self.allowed(return_to)?;
        Some(
            Cookie::build(COOKIE, back)
                .path("/")
                .http_only(true)
                .secure(secure)
                .same_site(SameSite::Lax)
                .max_age(CookieDuration::minutes(KEEP_MINUTES))
                .finish(),
        )
    }

    /// Where a browser that just signed in goes: the address its cookie kept, when allowed,
    /// else `/account`.
    pub fn after_sign_in(&self, request: &HttpRequest) -> String {
        request
            .cookie(COOKIE)
            .and_then(|cookie| self.allowed(cookie.value()))
            .unwrap_or_else(|| "/account".to_owned())
    }

    /// A cookie that makes the browser forget the return address.
    pub fn forget() -> Cookie<'static> {
        let mut cookie = Cookie::build(COOKIE, "").path("/").finish();
        cookie.make_removal();
        cookie
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn returns() -> ReturnTo {
        ReturnTo::new(
            "https://login.example.com/",
            vec!["app.example.com".to_owned(), "localhost:8000".to_owned()],
        )
    }

    #[test]
    fn only_http_addresses_on_a_listed_host_and_port_come_back() {
        let returns = returns();
        for ok in [
            "https://app.example.com/reports?q=1",
            "http://APP.example.com/",
            "http://localhost:8000/items/3",
        ] {
            assert!(returns.allowed(ok).is_some(), "{ok}");
        }
        for refused in [
            "https://evil.example.com/",
            "https://app.example.com.evil.com/",
            "https://app.example.com:8443/",
            "http://localhost/",
            "http://localhost:8001/",
            "javascript:alert(1)//app.example.com",
            "https://user:pw@app.example.com/",
            "//app.example.com/",
            "/account",
            "",
        ] {
            assert!(returns.allowed(refused).is_none(), "{refused}");
        }
    }

    #[test]
    fn the_login_page_carries_an_allowed_address_encoded_and_drops_any_other() {
        let returns = returns();
        assert_eq!(
            returns.login_page(Some("https://app.example.com/a b?x=1&y=2")),
            "https://login.example.com/login?return_to=\
             https%3A%2F%2Fapp.example.com%2Fa%2520b%3Fx%3D1%26y%3D2"
        );
        assert_eq!(
            returns.login_page(Some("https://evil.example.com/")),
            "https://login.example.com/login"
        );
        assert_eq!(returns.login_page(None), "https://login.example.com/login");
    }
}
