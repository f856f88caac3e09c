//! Notices to the account's owner through a real SMTP server: a new-device login with its
//! "this wasn't me" link, a lockout with its unlock link, a changed password and second factor;
//! each capped per account and kind, and each with a setting that turns it off.

use portcullis_store::Clock;
use portcullis_testkit::{PASSWORD, TestApp};
use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{assert_problem, device_cookie, pyotp_code};
use crate::mail::{SmtpServer, link_token, outbox_settled, smtp_settings};
use crate::reset::with_address;

const NEW_PASSWORD: &str = "quiet walrus under amber lanterns";

async fn follow(app: &TestApp, path: &str, token: &str) -> reqwest::Response {
    app.post_json(path, &json!({ "token": token }), None).await
}

#[tokio::test]
async fn a_new_device_login_tells_the_owner_and_this_wasnt_me_ends_every_session_and_mails_a_reset()
{
    let smtp = SmtpServer::running();
    let app = TestApp::spawn_with(smtp_settings(&smtp)).await;
    with_address(&app, &smtp, "alice", 0).await;
    let login = app.login("alice", PASSWORD).await;
    assert_eq!(login.status(), 200);
    let cookie = device_cookie(&login).unwrap();
    let session = login.json::<Value>().await.unwrap()["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let notice = &smtp.wait_for_subject("A new sign-in to alice", 1).await[0];
    assert_eq!(notice["to"], "alice@example.com");
    let token = link_token(notice, "/not-me");

    // The same browser again is no news.
    let again = app
        .client
        .post(app.url("/v1/login"))
        .header("cookie", &cookie)
        .json(&json!({ "username": "alice", "password": PASSWORD }))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 200);

    // Opening the link's page uses nothing (a mail scanner may open it).
    let page = app
        .client
        .get(app.url(&format!("/not-me?token={token}")))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("End every session"));
    assert_eq!(app.session(&session).await.status(), 200);

    let disowned = follow(&app, "/v1/account/not-me", &token).await;
    assert_eq!(disowned.status(), 200);
    let disowned: Value = disowned.json().await.unwrap();
    assert_eq!(disowned["revoked_sessions"], 2, "both sessions: {disowned}");
    assert_eq!(app.session(&session).await.status(), 401);
    // The password is in someone else's hands: it opens nothing until the owner resets it.
    assert_eq!(app.login("alice", PASSWORD).await.status(), 429);
    let used = assert_problem(follow(&app, "/v1/account/not-me", &token).await, 400).await;
    assert_eq!(used["code"], "invalid_link");
    let reset = &smtp
        .wait_for_subject("Reset the password of alice", 1)
        .await[0];
    let confirm = json!({ "token": link_token(reset, "/reset"), "new_password": NEW_PASSWORD });
    let confirmed = app
        .post_json("/v1/password/reset/confirm", &confirm, None)
        .await;
    assert_eq!(confirmed.status(), 200);
    assert_eq!(app.login("alice", NEW_PASSWORD).await.status(), 200);
    assert_eq!(
        smtp.subjects()
            .iter()
            .filter(|s| *s == "A new sign-in to alice")
            .count(),
        1,
        "the known browser's login told nobody: {:?}",
        smtp.subjects()
    );
}

#[tokio::test]
async fn a_lockout_tells_the_owner_and_the_unlock_link_lifts_it_once() {
    let smtp = SmtpServer::running();
    let mut settings = smtp_settings(&smtp);
    settings.server.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
    let app = TestApp::spawn_with(settings).await;
    with_address(&app, &smtp, "alice", 0).await;
    // Someone else's guesses, from addresses of their own, lock the account (5 failures).
    for i in 0..5 {
        let guess = app
            .login_from(Some(&format!("198.51.{i}.7")), "alice", "not her password")
            .await;
        assert_eq!(guess.status(), 401);
    }
    assert_eq!(
        app.login_from(Some("203.0.113.9"), "alice", PASSWORD)
            .await
            .status(),
        429
    );
    let notice = &smtp
        .wait_for_subject("alice was locked after failed sign-ins", 1)
        .await[0];
    let token = link_token(notice, "/unlock");
    let wrong = assert_problem(
        follow(&app, "/v1/account/unlock", &"A".repeat(43)).await,
        400,
    )
    .await;
    assert_eq!(wrong["code"], "invalid_link");
    assert_eq!(
        app.login_from(Some("203.0.113.9"), "alice", PASSWORD)
            .await
            .status(),
        429,
        "a wrong link lifts nothing"
    );

    assert_eq!(
        follow(&app, "/v1/account/unlock", &token).await.status(),
        204
    );
    assert_eq!(
        app.login_from(Some("203.0.113.9"), "alice", PASSWORD)
            .await
            .status(),
        200
    );
    let used = assert_problem(follow(&app, "/v1/account/unlock", &token).await, 400).await;
    assert_eq!(used["code"], "invalid_link");
}

#[tokio::test]
async fn each_kind_of_notice_is_capped_per_hour_and_one_kind_never_uses_up_another() {
    let smtp = SmtpServer::running();
    let app = TestApp::spawn_with(smtp_settings(&smtp)).await;
    with_address(&app, &smtp, "alice", 0).await;
    for _ in 0..5 {
        assert_eq!(app.login("alice", PASSWORD).await.status(), 200);
    }
    let session = app.token("alice", PASSWORD).await;
    let changed = app
        .with_bearer(
            Method::POST,
            "/v1/password",
            &session,
            &json!({ "current_password": PASSWORD, "new_password": NEW_PASSWORD }),
        )
        .await;
    assert_eq!(changed.status(), 200);
    let notice = &smtp
        .wait_for_subject("The password of alice was changed", 1)
        .await[0];
    assert!(
        notice["text"].as_str().unwrap().contains("/forgot"),
        "{notice}"
    );
    // The verification, three of six new-device notices, the change.
    outbox_settled(&app.url("/admin/v1/outbox"), 5).await;
    let new_device = |smtp: &SmtpServer| {
        smtp.subjects()
            .iter()
            .filter(|s| *s == "A new sign-in to alice")
            .count()
    };
    assert_eq!(new_device(&smtp), 3, "{:?}", smtp.subjects());

    // An hour later the budget is back.
    app.clock.advance(3_600_001);
    assert_eq!(app.login("alice", NEW_PASSWORD).await.status(), 200);
    smtp.wait_for_subject("A new sign-in to alice", 4).await;
}

#[tokio::test]
async fn adding_and_removing_a_second_factor_tells_the_owner_and_a_notice_turned_off_is_not_sent() {
    let smtp = SmtpServer::running();
    let mut settings = smtp_settings(&smtp);
    settings.mail.notices.new_device = false;
    let app = TestApp::spawn_with(settings).await;
    with_address(&app, &smtp, "alice", 0).await;
    let session = app.token("alice", PASSWORD).await;
    let uri = crate::mfa::enrol(&app, "alice", &session).await.uri;
    smtp.wait_for_subject("A second factor was added to alice", 1)
        .await;
    let code = pyotp_code(&uri, app.clock.now());
    let removed = app
        .with_bearer(
            Method::DELETE,
            "/v1/mfa/totp",
            &session,
            &json!({ "code": code }),
        )
        .await;
    assert_eq!(removed.status(), 204);
    smtp.wait_for_subject("The second factor of alice was removed", 1)
        .await;
    assert!(
        !smtp
            .subjects()
            .iter()
            .any(|s| s.starts_with("A new sign-in")),
        "mail.notices.new_device = false: {:?}",
        smtp.subjects()
    );
}
