//! The hosted pages and the admin console over plain HTTP (the browser suite drives them in
//! Chromium): forms count in the API's counters, CSRF tokens, cookies, bad forms, the console's
//! cookie and the admin API it reads.

use portcullis_store::Clock;
use portcullis_testkit::{PASSWORD, TestApp, test_settings};
use reqwest::header::{CONTENT_TYPE, COOKIE, SET_COOKIE};
use reqwest::{Method, Response};
use serde_json::{Value, json};

use crate::helpers::{assert_problem, retry_after};

const TOKEN: &str = "admin-token-for-the-page-tests-0123456789";

/// A browser without JavaScript: the cookies it was given, by name.
#[derive(Default)]
pub(crate) struct Browser {
    cookies: Vec<(String, String)>,
}

impl Browser {
    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(name, value)| format!("{name}={value}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    pub(crate) fn cookie(&self, name: &str) -> Option<&str> {
        self.cookies
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Keeps the cookies a response sets (a removal drops one); returns their headers.
    fn keep(&mut self, response: &Response) -> Vec<String> {
        let headers: Vec<String> = response
            .headers()
            .get_all(SET_COOKIE)
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect();
        for header in &headers {
            let pair = header.split(';').next().unwrap();
            let (name, value) = pair.split_once('=').unwrap();
            self.cookies.retain(|(n, _)| n != name);
            if !value.is_empty() {
                self.cookies.push((name.to_owned(), value.to_owned()));
            }
        }
        headers
    }

    pub(crate) async fn get(&mut self, app: &TestApp, url: &str) -> (u16, String) {
        let response = app
            .client
            .get(url)
            .header(COOKIE, self.cookie_header())
            .send()
            .await
            .unwrap();
        self.keep(&response);
        let status = response.status().as_u16();
        (status, response.text().await.unwrap())
    }

    /// Posts a form from the page at `page_url` (its CSRF token included).
    pub(crate) async fn post(
        &mut self,
        app: &TestApp,
        page_url: &str,
        url: &str,
        fields: &[(&str, &str)],
    ) -> Response {
        let (_, page) = self.get(app, page_url).await;
        let csrf = field_value(&page, "csrf");
        let mut form = vec![("csrf", csrf.as_str())];
        form.extend_from_slice(fields);
        let response = app
            .client
            .post(url)
            .header(COOKIE, self.cookie_header())
            .form(&form)
            .send()
            .await
            .unwrap();
        self.keep(&response);
        response
    }
}

/// The `value` of the first input named `name` in a page.
fn field_value(page: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = page
        .find(&marker)
        .unwrap_or_else(|| panic!("no {name} in {page}"))
        + marker.len();
    page[start..][..page[start..].find('"').unwrap()].to_owned()
}

/// The text of the page's notice.
pub(crate) fn notice(page: &str) -> &str {
    let start = page.find("id=\"notice\">").expect("a notice") + "id=\"notice\">".len();
    &page[start..][..page[start..].find("</p>").unwrap()]
}

pub(crate) async fn log_in_on_page(
    app: &TestApp,
    browser: &mut Browser,
    user: &str,
    pw: &str,
) -> Response {
    let fields = [("username", user), ("password", pw)];
    browser
        .post(app, &app.url("/login"), &app.url("/login"), &fields)
        .await
}

#[tokio::test]
async fn the_login_page_counts_in_the_api_counters_and_says_how_long_to_wait() {
    let app = TestApp::spawn().await;
    assert_eq!(app.register("alice", PASSWORD).await.status(), 201);
    let mut browser = Browser::default();

    // Four wrong passwords on the page and one through the API: the account's five.
    for _ in 0..4 {
        let response = log_in_on_page(&app, &mut browser, "alice", "wrong password here").await;
        assert_eq!(response.status(), 401);
        assert_eq!(
            notice(&response.text().await.unwrap()),
            "Wrong username or password."
        );
    }
    assert_eq!(
        app.login("alice", "wrong password here").await.status(),
        401
    );

    let refused = log_in_on_page(&app, &mut browser, "alice", PASSWORD).await;
    assert_eq!(refused.status(), 429);
    let wait = retry_after(&refused);
    let page = refused.text().await.unwrap();
    assert_eq!(
        notice(&page),
        format!("Too many attempts. Try again in {wait} seconds.")
    );
    assert_eq!(app.login("alice", PASSWORD).await.status(), 429);

    // Once the lockout ends, the page logs in: a session cookie and the account page.
    app.clock.advance(wait * 1_000);
    let response = log_in_on_page(&app, &mut browser, "alice", PASSWORD).await;
    assert_eq!(response.status(), 303);
    assert_eq!(response.headers()["location"], "/account");
    // The session's cookie is Lax (a link from a mail to a protected application arrives
    // signed in); the device cookie is only ever read by a login post.
    for (name, same_site) in [
        ("portcullis_session", "SameSite=Lax"),
        ("portcullis_device", "SameSite=Strict"),
    ] {
        let header = response
            .headers()
            .get_all(SET_COOKIE)
            .iter()
            .map(|v| v.to_str().unwrap())
            .find(|h| h.starts_with(&format!("{name}=")))
            .unwrap_or_else(|| panic!("no {name} cookie"));
        for attribute in ["HttpOnly", same_site, "Secure", "Path=/"] {
            assert!(header.contains(attribute), "{header}");
        }
    }
    let (status, page) = browser.get(&app, &app.url("/account")).await;
    assert_eq!(status, 200);
    assert!(
        page.contains("<strong id=\"username\">alice</strong>"),
        "{page}"
    );

    // The browser's session is an API session: the token in its cookie introspects.
    let token = browser.cookie("portcullis_session").unwrap().to_owned();
    assert_eq!(app.session(&token).await.status(), 200);
    let response = browser
        .post(&app, &app.url("/account"), &app.url("/account/logout"), &[])
        .await;
    assert_eq!(response.status(), 303);
    assert_eq!(app.session(&token).await.status(), 401);
    let (_, page) = browser.get(&app, &app.url("/account")).await;
    assert!(!page.contains("username\">alice"), "signed out");
}

#[tokio::test]
async fn a_post_without_its_csrf_token_is_refused_and_counts_nothing() {
    let mut settings = test_settings();
    settings.admin.token = Some(TOKEN.into());
    let app = TestApp::spawn_with(settings).await;
    assert_eq!(app.register("alice", PASSWORD).await.status(), 201);
    let mut browser = Browser::default();
    browser.get(&app, &app.url("/login")).await;
    let cookie = browser.cookie("portcullis_csrf").unwrap().to_owned();
    let forged = |csrf: &'static str, with_cookie: bool| {
        let mut request = app.client.post(app.url("/login")).form(&[
            ("csrf", csrf),
            ("username", "alice"),
            ("password", "wrong password here"),
        ]);
        if with_cookie {
            request = request.header(COOKIE, format!("portcullis_csrf={cookie}"));
        }
        request.send()
    };
    for (csrf, with_cookie) in [("", true), ("forged", true), ("forged", false)] {
        let response = forged(csrf, with_cookie).await.unwrap();
        assert_eq!(response.status(), 403);
        assert!(response.text().await.unwrap().contains("Form refused"));
    }
    let counters: Value = app
        .client
        .get(app.url("/admin/v1/subjects?username=alice"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(counters["keys"][0]["failures"], 0, "{counters}");
}

#[tokio::test]
async fn an_unreadable_form_is_a_400_page_and_a_weak_password_says_why() {
    let app = TestApp::spawn().await;
    let mut browser = Browser::default();
    // Missing fields, and JSON where a form belongs.
    let missing = browser
        .post(&app, &app.url("/login"), &app.url("/login"), &[])
        .await;
    assert_eq!(missing.status(), 400);
    assert!(
        missing
            .text()
            .await
            .unwrap()
            .contains("the form could not be read")
    );
    let json = app
        .client
        .post(app.url("/register"))
        .json(&json!({"username": "x", "password": "y"}))
        .send()
        .await
        .unwrap();
    assert_eq!(json.status(), 400);
    assert!(
        json.headers()[CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );

    let weak = browser
        .post(
            &app,
            &app.url("/register"),
            &app.url("/register"),
            &[("username", "bob"), ("password", "password")],
        )
        .await;
    assert_eq!(weak.status(), 400);
    let page = weak.text().await.unwrap();
    assert!(notice(&page).starts_with("Choose another password: use at least 15 characters"));
    assert_eq!(
        app.login("bob", "password").await.status(),
        401,
        "not registered"
    );

    let taken = browser
        .post(
            &app,
            &app.url("/register"),
            &app.url("/register"),
            &[("username", "bob"), ("password", PASSWORD)],
        )
        .await;
    assert_eq!(taken.status(), 201);
    let again = browser
        .post(
            &app,
            &app.url("/register"),
            &app.url("/register"),
            &[("username", "BOB"), ("password", PASSWORD)],
        )
        .await;
    assert_eq!(again.status(), 409);
}

#[tokio::test]
async fn the_console_answers_on_the_admin_listener_with_a_cookie_that_is_not_the_token() {
    let mut settings = test_settings();
    settings.admin.token = Some(TOKEN.into());
    settings.admin.listen = Some("127.0.0.1:0".parse().unwrap());
    let (app, ops) = TestApp::spawn_with_ops(settings).await;
    let console = format!("http://127.0.0.1:{ops}/admin/");
    let (status, _) = Browser::default().get(&app, &app.url("/admin/")).await;
    assert_eq!(status, 404, "not on the public listener");

    let mut browser = Browser::default();
    let (status, page) = browser.get(&app, &console).await;
    assert_eq!(status, 200);
    assert!(page.contains("name=\"token\""), "the token form");
    let session = format!("http://127.0.0.1:{ops}/admin/session");
    let wrong = browser
        .post(&app, &console, &session, &[("token", "not the token")])
        .await;
    assert_eq!(wrong.status(), 401);
    let right = browser
        .post(&app, &console, &session, &[("token", TOKEN)])
        .await;
    assert_eq!(right.status(), 303);
    let header = right.headers()[SET_COOKIE].to_str().unwrap().to_owned();
    for attribute in [
        "HttpOnly",
        "SameSite=Strict",
        "Path=/admin",
        "Max-Age=28800",
    ] {
        assert!(header.contains(attribute), "{header}");
    }
    let cookie = browser.cookie("portcullis_admin").unwrap().to_owned();
    assert!(!cookie.contains(TOKEN));
    let (_, page) = browser.get(&app, &console).await;
    assert!(page.contains("id=\"restriction-rows\""), "the console");

    // The cookie authenticates the admin API; a changed or expired one does not.
    let call = |cookie: String| {
        app.client
            .get(format!("http://127.0.0.1:{ops}/admin/v1/status"))
            .header(COOKIE, format!("portcullis_admin={cookie}"))
            .send()
    };
    let status: Value = call(cookie.clone()).await.unwrap().json().await.unwrap();
    assert_eq!(status["store"], "ready");
    assert_eq!(status["decisions"].as_array().unwrap().len(), 10);
    let (expires, tag) = cookie.split_once('.').unwrap();
    let later = format!("{}.{tag}", expires.parse::<u64>().unwrap() + 1);
    let expired = format!("1.{tag}");
    for bad in [later, expired, "garbage".to_owned()] {
        assert_problem(call(bad).await.unwrap(), 401).await;
    }
}

#[tokio::test]
async fn the_admin_api_shows_status_and_events_and_unlocks_by_listed_key() {
    let mut settings = test_settings();
    settings.admin.token = Some(TOKEN.into());
    let app = TestApp::spawn_with(settings).await;
    let admin = |method: Method, path: &str, body: Option<Value>| {
        let mut request = app.client.request(method, app.url(path)).bearer_auth(TOKEN);
        if let Some(body) = body {
            request = request.json(&body);
        }
        request.send()
    };
    assert_eq!(app.register("alice", PASSWORD).await.status(), 201);
    for _ in 0..5 {
        assert_eq!(
            app.login("alice", "wrong password here").await.status(),
            401
        );
    }
    assert_eq!(app.login("alice", PASSWORD).await.status(), 429);

    let status: Value = admin(Method::GET, "/admin/v1/status", None)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let now = &status["decisions"][9];
    assert_eq!(
        now["allowed"], 6,
        "a registration and five logins: {status}"
    );
    assert_eq!(now["denied"]["locked_out"], 1, "{status}");
    assert_eq!(status["attack_signal"]["under_attack"], false);
    let detectors: Vec<&str> = status["attack_signal"]["detectors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["detector"].as_str().unwrap())
        .collect();
    assert_eq!(
        detectors,
        ["failures", "unknown_usernames", "failed_accounts", "floor"],
        "{status}"
    );
    assert_eq!(status["attack_signal"]["warm"], false, "a new service");

    let events: Value = admin(Method::GET, "/admin/v1/events?limit=5", None)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let newest = &events["events"][0];
    assert_eq!(newest["kind"], "lockout", "{events}");
    assert!(newest["at"].as_u64().unwrap() <= app.clock.now());

    let listed: Value = admin(Method::GET, "/admin/v1/lockouts", None)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let key = listed["restrictions"][0]["key"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(key.starts_with("u:"), "{listed}");
    for bad in ["g", "nope:1", ""] {
        let response = admin(
            Method::POST,
            "/admin/v1/unlock",
            Some(json!({ "key": bad })),
        );
        assert_problem(response.await.unwrap(), 400).await;
    }
    let cleared: Value = admin(
        Method::POST,
        "/admin/v1/unlock",
        Some(json!({ "key": key })),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(cleared["cleared"], 1);
    assert_eq!(app.login("alice", PASSWORD).await.status(), 200);
}
