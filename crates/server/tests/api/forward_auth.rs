//! Forward authentication (`GET /v1/auth`): what a proxy is told for a session cookie, a bearer
//! session, an access JWT and nothing; where a browser is sent to sign in and back; a logout
//! honoured at once here and, through the change channel, on every replica.

use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use ed25519_dalek::pkcs8::EncodePrivateKey;
use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use portcullis_testkit::process::wait_until;
use portcullis_testkit::{PASSWORD, TestApp, test_settings};
use reqwest::header::{ACCEPT, AUTHORIZATION, COOKIE, LOCATION};
use secrecy::SecretString;
use serde_json::{Value, json};

use crate::distributed::{post, register, three_replicas};
use crate::helpers::{assert_problem, within_a_second};
use crate::pages::{Browser, log_in_on_page};

/// An app whose logins may return to `app.example.com` and `localhost:8000`.
async fn app() -> TestApp {
    let mut settings = test_settings();
    settings.server.return_hosts = vec!["app.example.com".to_owned(), "localhost:8000".to_owned()];
    TestApp::spawn_with(settings).await
}

/// `GET /v1/auth` with `headers`.
async fn check(app: &TestApp, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut request = app.client.get(app.url("/v1/auth"));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.unwrap()
}

fn header<'r>(response: &'r reqwest::Response, name: &str) -> Option<&'r str> {
    response.headers().get(name).map(|v| v.to_str().unwrap())
}

#[tokio::test]
async fn a_live_session_by_cookie_or_bearer_passes_with_who_it_is_and_nothing_else_does() {
    let app = app().await;
    let registered: Value = app.register("Zoë", PASSWORD).await.json().await.unwrap();
    let token = app.token("zoë", PASSWORD).await;

    for credential in [
        (AUTHORIZATION.as_str(), format!("Bearer {token}")),
        (COOKIE.as_str(), format!("portcullis_session={token}")),
    ] {
        let response = check(&app, &[(credential.0, &credential.1)]).await;
        assert_eq!(response.status(), 204, "{credential:?}");
        assert_eq!(
            header(&response, "x-portcullis-subject"),
            registered["id"].as_str()
        );
        assert_eq!(header(&response, "x-portcullis-username"), Some("zo%C3%AB"));
        assert_eq!(header(&response, "cache-control"), Some("no-store"));
        assert_eq!(
            header(&response, "x-portcullis-password-change-required"),
            None
        );
        assert!(response.bytes().await.unwrap().is_empty(), "no body");
    }

    // Nothing, a malformed or unknown token, a bearer that is wrong even with a good cookie.
    let forged = "A".repeat(43);
    let cookie = format!("portcullis_session={token}");
    for headers in [
        vec![],
        vec![("authorization", "Bearer nope")],
        vec![("authorization", "Bearer a.b.c")],
        vec![("cookie", "portcullis_session=nope")],
        vec![("cookie", &format!("portcullis_session={forged}"))],
        vec![
            ("authorization", "Basic Zm9vOmJhcg=="),
            ("cookie", cookie.as_str()),
        ],
    ] {
        let response = check(&app, &headers).await;
        assert_eq!(
            header(&response, "location"),
            None,
            "not a browser: {headers:?}"
        );
        let problem = assert_problem(response, 401).await;
        assert_eq!(problem["code"], "unauthenticated");
    }

    // A logout is honoured by the next check, though the replica had the session cached.
    assert_eq!(app.logout(&token).await.status(), 204);
    let bearer = format!("Bearer {token}");
    assert_eq!(
        check(&app, &[("authorization", &bearer)]).await.status(),
        401
    );
    assert_eq!(check(&app, &[("cookie", &cookie)]).await.status(), 401);
}

#[tokio::test]
async fn a_cached_answer_ends_with_its_session_and_a_password_change_ends_the_others() {
    let app = app().await;
    app.register("alice", PASSWORD).await;
    let kept = app.token("alice", PASSWORD).await;
    let other = app.token("alice", PASSWORD).await;
    for token in [&kept, &other] {
        let bearer = format!("Bearer {token}");
        assert_eq!(
            check(&app, &[("authorization", &bearer)]).await.status(),
            204
        );
    }
    let changed = app
        .with_bearer(
            reqwest::Method::POST,
            "/v1/password",
            &kept,
            &json!({"current_password": PASSWORD, "new_password": "another long passphrase 7"}),
        )
        .await;
    assert_eq!(changed.status(), 200);
    let status = |token: String| {
        let app = &app;
        async move {
            let bearer = format!("Bearer {token}");
            check(app, &[("authorization", &bearer)]).await.status()
        }
    };
    assert_eq!(
        status(kept.clone()).await,
        204,
        "the session that changed it"
    );
    assert_eq!(status(other).await, 401, "every other session ended");

    // The session's own expiry ends a cached answer too.
    app.clock.advance(12 * 3_600_000);
    assert_eq!(status(kept).await, 401);
}

#[tokio::test]
async fn a_session_evicted_by_a_newer_one_is_refused_though_it_was_cached() {
    let mut settings = test_settings();
    settings.session.max_per_account = 1;
    let app = TestApp::spawn_with(settings).await;
    app.register("alice", PASSWORD).await;
    let first = format!("Bearer {}", app.token("alice", PASSWORD).await);
    assert_eq!(
        check(&app, &[("authorization", &first)]).await.status(),
        204
    );
    let second = format!("Bearer {}", app.token("alice", PASSWORD).await);
    assert_eq!(
        check(&app, &[("authorization", &first)]).await.status(),
        401
    );
    assert_eq!(
        check(&app, &[("authorization", &second)]).await.status(),
        204
    );
}

#[tokio::test]
async fn a_browser_is_sent_to_sign_in_with_its_address_when_the_host_is_listed() {
    let app = app().await;
    let through_proxy = |host: &'static str| {
        vec![
            ("accept", "text/html,application/xhtml+xml"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", host),
            ("x-forwarded-uri", "/reports?year=2026&q=a b"),
        ]
    };
    let response = check(&app, &through_proxy("app.example.com")).await;
    assert_eq!(response.status(), 401);
    let login = app.url(
        "/login?return_to=https%3A%2F%2Fapp.example.com%2Freports%3Fyear%3D2026%26q%3Da%2520b",
    );
    assert_eq!(header(&response, "location"), Some(login.as_str()));
    assert!(
        header(&response, "content-type")
            .unwrap()
            .starts_with("text/html")
    );
    let page = response.text().await.unwrap();
    assert!(page.contains("http-equiv=\"refresh\""), "{page}");
    assert!(page.contains(&login.replace('&', "&amp;")), "{page}");

    // A host not listed: the login page, and no way back to it.
    let response = check(&app, &through_proxy("evil.example.com")).await;
    assert_eq!(
        header(&response, "location"),
        Some(app.url("/login").as_str())
    );
    // No forwarding headers: the login page.
    let response = check(&app, &[("accept", "text/html")]).await;
    assert_eq!(
        header(&response, "location"),
        Some(app.url("/login").as_str())
    );
}

#[tokio::test]
async fn the_login_page_returns_to_a_listed_address_only_and_at_once_when_signed_in() {
    let app = app().await;
    app.register("alice", PASSWORD).await;
    let back = "https://app.example.com/reports?year=2026";
    let page = |to: &str| {
        app.url(&format!(
            "/login?return_to={}",
            url::form_urlencoded::byte_serialize(to.as_bytes()).collect::<String>()
        ))
    };

    // Not listed: the page shows, keeps nothing, and the login ends on the account page.
    let mut browser = Browser::default();
    let (status, _) = browser.get(&app, &page("https://evil.example.com/")).await;
    assert_eq!(status, 200);
    assert_eq!(browser.cookie("portcullis_return"), None);
    let signed_in = log_in_on_page(&app, &mut browser, "alice", PASSWORD).await;
    assert_eq!(signed_in.headers()[LOCATION], "/account");

    // Listed: the login goes back there, and forgets it.
    let mut browser = Browser::default();
    browser.get(&app, &page(back)).await;
    assert!(browser.cookie("portcullis_return").is_some());
    let signed_in = log_in_on_page(&app, &mut browser, "alice", PASSWORD).await;
    assert_eq!(signed_in.status(), 303);
    assert_eq!(signed_in.headers()[LOCATION], back);
    assert_eq!(browser.cookie("portcullis_return"), None, "used once");
    // The session cookie is Lax: a link from a mail to the application arrives signed in.
    let session_cookie = signed_in
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap())
        .find(|h| h.starts_with("portcullis_session="))
        .unwrap()
        .to_owned();
    assert!(session_cookie.contains("SameSite=Lax"), "{session_cookie}");

    // Signed in already: straight back, without the form.
    let response = app
        .client
        .get(page(back))
        .header(
            COOKIE,
            format!(
                "portcullis_session={}",
                browser.cookie("portcullis_session").unwrap()
            ),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 303);
    assert_eq!(response.headers()[LOCATION], back);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_access_jwt_passes_while_it_lives_and_a_tampered_one_never() {
    let mut settings = test_settings();
    settings.tokens.access.enabled = true;
    let key = SigningKey::from_bytes(&[42; 32])
        .to_pkcs8_pem(LineEnding::LF)
        .unwrap();
    settings.secrets.signing_key = Some(SecretString::from(key.to_string()));
    let app = TestApp::spawn_with(settings).await;
    let registered: Value = app
        .register("jwt-user", PASSWORD)
        .await
        .json()
        .await
        .unwrap();
    let login: Value = app.login("jwt-user", PASSWORD).await.json().await.unwrap();
    let jwt = login["access_token"].as_str().unwrap();

    let bearer = |jwt: &str| format!("Bearer {jwt}");
    let response = check(&app, &[("authorization", &bearer(jwt))]).await;
    assert_eq!(response.status(), 204);
    assert_eq!(
        header(&response, "x-portcullis-subject"),
        registered["id"].as_str()
    );
    assert_eq!(header(&response, "x-portcullis-username"), Some("jwt-user"));

    let mut tampered = jwt.to_owned();
    let last = tampered.pop().unwrap();
    tampered.push(if last == 'A' { 'B' } else { 'A' });
    assert_eq!(
        check(&app, &[("authorization", &bearer(&tampered))])
            .await
            .status(),
        401
    );

    app.clock.advance(300_000);
    assert_eq!(
        check(&app, &[("authorization", &bearer(jwt))])
            .await
            .status(),
        401,
        "expired"
    );
}

/// Three replicas on one Redis, each keeping a session lookup 60 s (the most it may): a logout
/// on one is honoured by the others only because it was announced; the test prints how soon.
#[tokio::test(flavor = "multi_thread")]
async fn a_logout_on_one_replica_is_honoured_by_forward_auth_on_every_replica() {
    let (replicas, _redis, _database) =
        three_replicas(&[("PORTCULLIS__SESSION__CACHE_SECS", "60".to_owned())]).await;
    let credentials = json!({"username": "alice", "password": PASSWORD});
    register(&replicas, &credentials).await;
    let login: Value = post(replicas.url(0, "/v1/login"), credentials, "192.0.2.9")
        .await
        .json()
        .await
        .unwrap();
    let bearer = format!("Bearer {}", login["token"].as_str().unwrap());
    let client = reqwest::Client::new();
    let ask = |replica: usize| {
        let request = client
            .get(replicas.url(replica, "/v1/auth"))
            .header(AUTHORIZATION, &bearer);
        async move { request.send().await.unwrap() }
    };
    // Every replica has the session cached.
    for replica in 0..3 {
        assert_eq!(ask(replica).await.status(), 204);
        assert_eq!(ask(replica).await.status(), 204);
    }
    let logout = client
        .post(replicas.url(0, "/v1/logout"))
        .header(AUTHORIZATION, &bearer)
        .send()
        .await
        .unwrap();
    assert_eq!(logout.status(), 204);
    let ended = Instant::now();
    for replica in 0..3 {
        let took = within_a_second(ended, 401, || ask(replica)).await;
        println!(
            "replica {replica} refused the ended session {} ms after the logout answered",
            took.as_millis()
        );
    }
    // A proxy asks once per request it passes: those lines are DEBUG, the logout's INFO.
    let level = |path: &str| -> Vec<String> {
        let logs = replicas.logs();
        let lines = logs
            .iter()
            .filter(|line| line["message"] == "request finished" && line["span"]["path"] == path);
        lines
            .map(|line| line["level"].as_str().unwrap().to_owned())
            .collect()
    };
    // The replicas' logs are read as they write them: wait for every line asked for (six
    // passes, a refusal on each replica at least, the logout).
    wait_until(
        Duration::from_secs(10),
        "the replicas' request lines",
        || {
            let seen = level("/v1/auth").len() >= 9 && !level("/v1/logout").is_empty();
            async move { seen }
        },
    )
    .await;
    let checks = level("/v1/auth");
    assert!(checks.iter().all(|l| l == "DEBUG"), "{checks:?}");
    assert_eq!(level("/v1/logout"), ["INFO"]);
}

#[tokio::test]
async fn another_method_on_the_endpoint_gets_405() {
    let app = app().await;
    let response = app
        .client
        .post(app.url("/v1/auth"))
        .header(ACCEPT, "application/json")
        .send()
        .await
        .unwrap();
    assert_problem(response, 405).await;
}
