//! Passkeys, driven by real software authenticators (webauthn-authenticator-rs's `SoftPasskey`,
//! and its `SoftToken` where a test copies an authenticator): enrolment with a step-up, sign-in
//! by username and discoverable, the list, rename and removal, and every way an answer is
//! refused (another origin, a replay, another account's credential, a cloned authenticator),
//! counted against the source and never against the account.

use portcullis_testkit::{PASSWORD, TestApp, test_settings};
use reqwest::Method;
use serde_json::{Value, json};
use url::Url;
use webauthn_authenticator_rs::WebauthnAuthenticator;
use webauthn_authenticator_rs::softpasskey::SoftPasskey;
use webauthn_authenticator_rs::softtoken::SoftToken;
use webauthn_rs_proto::{
    AllowCredentials, CreationChallengeResponse, PublicKeyCredential, RequestChallengeResponse,
};

use crate::helpers::{admin_get, assert_problem, device_cookie};

const ADMIN_TOKEN: &str = "admin-token-for-the-passkey-tests-0123456";

/// The origin the service's pages run on by default: `localhost` on its port.
fn origin(app: &TestApp) -> Url {
    let port = Url::parse(&app.address).unwrap().port().unwrap();
    Url::parse(&format!("http://localhost:{port}")).unwrap()
}

async fn app() -> TestApp {
    let mut settings = test_settings();
    settings.admin.token = Some(ADMIN_TOKEN.into());
    TestApp::spawn_with(settings).await
}

/// Registers `username` and returns a session token.
async fn signed_up(app: &TestApp, username: &str) -> String {
    assert_eq!(app.register(username, PASSWORD).await.status(), 201);
    app.token(username, PASSWORD).await
}

/// Starts an enrolment with the session `token` (the current password as step-up): the
/// ceremony and its options.
async fn registration_options(app: &TestApp, token: &str) -> (String, CreationChallengeResponse) {
    let started = app
        .with_bearer(
            Method::POST,
            "/v1/passkeys/registration",
            token,
            &json!({ "current_password": PASSWORD }),
        )
        .await;
    assert_eq!(started.status(), 200);
    let started: Value = started.json().await.unwrap();
    let ceremony = started["ceremony"].as_str().unwrap().to_owned();
    (ceremony, serde_json::from_value(started).unwrap())
}

/// Enrols `authenticator` on the session `token` as `name`; returns the stored passkey.
async fn enrol(
    app: &TestApp,
    token: &str,
    authenticator: &mut impl WebauthnAuthenticator,
    name: &str,
) -> Value {
    let (ceremony, options) = registration_options(app, token).await;
    let credential = authenticator.do_registration(origin(app), options).unwrap();
    let added = app
        .with_bearer(
            Method::POST,
            "/v1/passkeys",
            token,
            &json!({ "ceremony": ceremony, "name": name, "credential": credential }),
        )
        .await;
    assert_eq!(added.status(), 201);
    added.json().await.unwrap()
}

/// Sign-in options for `username` (none: discoverable).
async fn sign_in_options(app: &TestApp, username: Option<&str>) -> (String, Value) {
    let body = match username {
        Some(username) => json!({ "username": username }),
        None => json!({}),
    };
    let options = app
        .post_json("/v1/login/passkey/options", &body, None)
        .await;
    assert_eq!(options.status(), 200);
    let options: Value = options.json().await.unwrap();
    (options["ceremony"].as_str().unwrap().to_owned(), options)
}

/// The assertion `authenticator` makes for `options`, from `origin`.
fn assert_with(
    authenticator: &mut impl WebauthnAuthenticator,
    origin: Url,
    options: &Value,
) -> PublicKeyCredential {
    let options: RequestChallengeResponse = serde_json::from_value(options.clone()).unwrap();
    authenticator.do_authentication(origin, options).unwrap()
}

/// `{"ceremony", "credential"}`: `authenticator`'s answer to `username`'s sign-in options,
/// as a step-up body.
async fn passkey_step_up(
    app: &TestApp,
    username: &str,
    authenticator: &mut impl WebauthnAuthenticator,
) -> Value {
    let (ceremony, options) = sign_in_options(app, Some(username)).await;
    let assertion = assert_with(authenticator, origin(app), &options);
    json!({ "ceremony": ceremony, "credential": assertion })
}

async fn sign_in(
    app: &TestApp,
    ceremony: &str,
    credential: &PublicKeyCredential,
) -> reqwest::Response {
    app.post_json(
        "/v1/login/passkey",
        &json!({ "ceremony": ceremony, "credential": credential }),
        None,
    )
    .await
}

async fn event_kinds(app: &TestApp) -> Vec<String> {
    let events = admin_get(app, ADMIN_TOKEN, "/admin/v1/events?limit=100").await;
    events["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap().to_owned())
        .collect()
}

/// The console's count of accounts with a passkey.
async fn accounts_with_passkeys(app: &TestApp) -> u64 {
    let status = admin_get(app, ADMIN_TOKEN, "/admin/v1/status").await;
    status["accounts_with_passkeys"].as_u64().unwrap()
}

async fn passkeys(app: &TestApp, token: &str) -> Vec<Value> {
    let listed = app
        .client
        .get(app.url("/v1/passkeys"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(listed.status(), 200);
    let listed: Value = listed.json().await.unwrap();
    listed["passkeys"].as_array().unwrap().clone()
}

#[tokio::test]
async fn a_passkey_enrolled_with_a_step_up_signs_in_once_per_ceremony_and_can_be_renamed_and_removed()
 {
    let app = app().await;
    let token = signed_up(&app, "alice").await;
    let mut laptop = SoftPasskey::new(true);

    // The step-up: no session (whatever the body: it learns nothing from how that would be
    // refused), or a wrong current password, starts nothing.
    for body in [
        json!({ "current_password": PASSWORD }),
        json!({ "ceremony": 1, "credential": "not one" }),
    ] {
        let anonymous = app
            .post_json("/v1/passkeys/registration", &body, None)
            .await;
        assert_eq!(
            assert_problem(anonymous, 401).await["code"],
            "unauthenticated"
        );
    }
    let wrong = app
        .with_bearer(
            Method::POST,
            "/v1/passkeys/registration",
            &token,
            &json!({ "current_password": "not the password" }),
        )
        .await;
    assert_eq!(
        assert_problem(wrong, 401).await["code"],
        "invalid_credentials"
    );

    let added = enrol(&app, &token, &mut laptop, " Laptop ").await;
    assert_eq!(added["name"], "Laptop");
    assert_eq!(accounts_with_passkeys(&app).await, 1);
    assert!(added["last_used_at"].is_null(), "{added}");
    let id = added["id"].as_str().unwrap().to_owned();

    // Username first: the options name the passkey; the answer opens a session, from a new
    // browser with a device cookie, and satisfies everything a password login would.
    let (ceremony, options) = sign_in_options(&app, Some("alice")).await;
    assert!(options.get("mediation").is_none(), "{options}");
    let credential = assert_with(&mut laptop, origin(&app), &options);
    let signed_in = sign_in(&app, &ceremony, &credential).await;
    assert_eq!(signed_in.status(), 200);
    assert!(device_cookie(&signed_in).is_some());
    let signed_in: Value = signed_in.json().await.unwrap();
    let session = app.session(signed_in["token"].as_str().unwrap()).await;
    assert_eq!(session.status(), 200);

    // The same answer again finds its ceremony used.
    let replayed = sign_in(&app, &ceremony, &credential).await;
    assert_eq!(
        assert_problem(replayed, 401).await["code"],
        "invalid_passkey"
    );

    let listed = passkeys(&app, &token).await;
    assert_eq!(listed.len(), 1);
    assert!(listed[0]["last_used_at"].is_string(), "{listed:?}");

    let renamed = app
        .with_bearer(
            Method::PATCH,
            &format!("/v1/passkeys/{id}"),
            &token,
            &json!({ "name": "Work laptop" }),
        )
        .await;
    assert_eq!(renamed.status(), 200);
    assert_eq!(passkeys(&app, &token).await[0]["name"], "Work laptop");
    let bad_name = app
        .with_bearer(
            Method::PATCH,
            &format!("/v1/passkeys/{id}"),
            &token,
            &json!({ "name": "x".repeat(65) }),
        )
        .await;
    assert_eq!(assert_problem(bad_name, 400).await["code"], "invalid_name");

    // Removal steps up too; another account's id, or an unknown one, is not found.
    let bob = signed_up(&app, "bob").await;
    let not_bobs = app
        .with_bearer(
            Method::DELETE,
            &format!("/v1/passkeys/{id}"),
            &bob,
            &json!({ "current_password": PASSWORD }),
        )
        .await;
    assert_eq!(
        assert_problem(not_bobs, 404).await["code"],
        "unknown_passkey"
    );
    let removed = app
        .with_bearer(
            Method::DELETE,
            &format!("/v1/passkeys/{id}"),
            &token,
            &json!({ "current_password": PASSWORD }),
        )
        .await;
    assert_eq!(removed.status(), 204);
    assert!(passkeys(&app, &token).await.is_empty());
    assert_eq!(accounts_with_passkeys(&app).await, 0);
    // The removed credential signs in no more, even where a ceremony names it.
    let (ceremony, options) = sign_in_options(&app, Some("alice")).await;
    let mut options: RequestChallengeResponse = serde_json::from_value(options).unwrap();
    options.public_key.allow_credentials = vec![AllowCredentials {
        type_: "public-key".to_owned(),
        id: credential.raw_id.clone(),
        transports: None,
    }];
    let removed_credential = laptop.do_authentication(origin(&app), options).unwrap();
    let refused = sign_in(&app, &ceremony, &removed_credential).await;
    assert_eq!(
        assert_problem(refused, 401).await["code"],
        "invalid_passkey"
    );

    let kinds = event_kinds(&app).await;
    for kind in ["passkey_added", "passkey_login", "passkey_removed"] {
        assert!(kinds.iter().any(|k| k == kind), "{kind} in {kinds:?}");
    }
}

#[tokio::test]
async fn a_discoverable_sign_in_finds_the_account_by_its_user_handle_and_no_other() {
    let app = app().await;
    let alice = signed_up(&app, "alice").await;
    signed_up(&app, "bob").await;
    let mut phone = SoftPasskey::new(true);
    let (ceremony, options) = registration_options(&app, &alice).await;
    let alice_handle = options.public_key.user.id.clone();
    let credential = phone.do_registration(origin(&app), options).unwrap();
    let added = app
        .with_bearer(
            Method::POST,
            "/v1/passkeys",
            &alice,
            &json!({ "ceremony": ceremony, "credential": credential }),
        )
        .await;
    assert_eq!(added.status(), 201);
    let credential_id = credential.raw_id.clone();

    // The software authenticator keeps no resident keys: the test plays the browser's part,
    // naming the credential it chose and the user handle it kept.
    let discover = |options: &Value| {
        let mut options: RequestChallengeResponse =
            serde_json::from_value(options.clone()).unwrap();
        assert!(options.public_key.allow_credentials.is_empty());
        options.public_key.allow_credentials = vec![AllowCredentials {
            type_: "public-key".to_owned(),
            id: credential_id.clone(),
            transports: None,
        }];
        options
    };
    let (ceremony, options) = sign_in_options(&app, None).await;
    assert_eq!(options["mediation"], "conditional");
    let mut assertion = phone
        .do_authentication(origin(&app), discover(&options))
        .unwrap();
    assertion.response.user_handle = Some(alice_handle.clone());
    let signed_in = sign_in(&app, &ceremony, &assertion).await;
    assert_eq!(signed_in.status(), 200);

    // Alice's credential presented as Bob's (another user handle) signs nobody in.
    let (ceremony, options) = sign_in_options(&app, None).await;
    let mut assertion = phone
        .do_authentication(origin(&app), discover(&options))
        .unwrap();
    let mut other = alice_handle.clone();
    other[0] ^= 1;
    assertion.response.user_handle = Some(other);
    let refused = sign_in(&app, &ceremony, &assertion).await;
    assert_eq!(
        assert_problem(refused, 401).await["code"],
        "invalid_passkey"
    );
}

#[tokio::test]
async fn answers_from_another_origin_or_for_another_account_are_refused() {
    let app = app().await;
    let alice = signed_up(&app, "alice").await;
    let bob = signed_up(&app, "bob").await;
    let mut alices = SoftPasskey::new(true);
    let mut bobs = SoftPasskey::new(true);
    enrol(&app, &alice, &mut alices, "Alice's").await;
    let bob_passkey = enrol(&app, &bob, &mut bobs, "Bob's").await;
    assert_ne!(bob_passkey["id"], Value::Null);

    // A page on another origin (here: another port of the same host) is not the service.
    let port = origin(&app).port().unwrap();
    let elsewhere = Url::parse(&format!("http://localhost:{}", port + 1)).unwrap();
    let (ceremony, options) = sign_in_options(&app, Some("alice")).await;
    let phished = assert_with(&mut alices, elsewhere.clone(), &options);
    assert_eq!(
        assert_problem(sign_in(&app, &ceremony, &phished).await, 401).await["code"],
        "invalid_passkey"
    );
    let (ceremony, options) = registration_options(&app, &alice).await;
    let credential = SoftPasskey::new(true)
        .do_registration(elsewhere, options)
        .unwrap();
    let added = app
        .with_bearer(
            Method::POST,
            "/v1/passkeys",
            &alice,
            &json!({ "ceremony": ceremony, "credential": credential }),
        )
        .await;
    assert_eq!(assert_problem(added, 400).await["code"], "passkey_refused");

    // Bob's ceremony answered with Alice's credential signs in neither.
    let (ceremony, options) = sign_in_options(&app, Some("bob")).await;
    let mut for_bob: RequestChallengeResponse = serde_json::from_value(options).unwrap();
    let (_, alice_options) = sign_in_options(&app, Some("alice")).await;
    let alice_options: RequestChallengeResponse = serde_json::from_value(alice_options).unwrap();
    for_bob.public_key.allow_credentials = alice_options.public_key.allow_credentials;
    let crossed = alices.do_authentication(origin(&app), for_bob).unwrap();
    assert_eq!(
        assert_problem(sign_in(&app, &ceremony, &crossed).await, 401).await["code"],
        "invalid_passkey"
    );

    // A ceremony answers only to its own kind: a registration's id does not sign in.
    let (registration, _) = registration_options(&app, &alice).await;
    let (_, options) = sign_in_options(&app, Some("alice")).await;
    let assertion = assert_with(&mut alices, origin(&app), &options);
    assert_problem(sign_in(&app, &registration, &assertion).await, 401).await;
}

#[tokio::test]
async fn a_cloned_authenticator_whose_counter_went_backwards_is_refused_and_reported() {
    let app = app().await;
    let token = signed_up(&app, "alice").await;
    let (mut original, _) = SoftToken::new(true).unwrap();
    enrol(&app, &token, &mut original, "Key").await;
    let copy = original.to_cbor().unwrap();
    for _ in 0..2 {
        let (ceremony, options) = sign_in_options(&app, Some("alice")).await;
        let assertion = assert_with(&mut original, origin(&app), &options);
        assert_eq!(sign_in(&app, &ceremony, &assertion).await.status(), 200);
    }
    let mut clone = SoftToken::from_cbor(&copy).unwrap();
    let (ceremony, options) = sign_in_options(&app, Some("alice")).await;
    let assertion = assert_with(&mut clone, origin(&app), &options);
    let refused = sign_in(&app, &ceremony, &assertion).await;
    assert_eq!(
        assert_problem(refused, 401).await["code"],
        "invalid_passkey"
    );
    assert!(
        event_kinds(&app)
            .await
            .iter()
            .any(|k| k == "passkey_possible_clone")
    );
    // The original, ahead of the stored counter, still signs in.
    let (ceremony, options) = sign_in_options(&app, Some("alice")).await;
    let assertion = assert_with(&mut original, origin(&app), &options);
    assert_eq!(sign_in(&app, &ceremony, &assertion).await.status(), 200);
}

/// The shape of a JSON value: its keys and the kinds of their values, arrays by their first
/// element (lengths and contents aside).
fn shape(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(key, value)| (key.clone(), shape(value)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.first().map(shape).into_iter().collect()),
        Value::String(_) => json!("string"),
        Value::Number(_) => json!("number"),
        Value::Bool(_) => json!("bool"),
        Value::Null => Value::Null,
    }
}

#[tokio::test]
async fn options_for_an_unknown_name_or_an_account_without_passkeys_look_like_a_real_accounts() {
    let app = app().await;
    let alice = signed_up(&app, "alice").await;
    signed_up(&app, "bob").await;
    enrol(&app, &alice, &mut SoftPasskey::new(true), "Laptop").await;

    let (_, real) = sign_in_options(&app, Some("alice")).await;
    // Enough names that the fake generator's empty lists (some 15% of names) would show.
    let names = ["bob".to_owned()]
        .into_iter()
        .chain((0..30).map(|i| format!("nobody{i}")));
    for name in names {
        // Options count against the address (30 at once, then one a second).
        app.clock.advance(2_000);
        let (_, decoy) = sign_in_options(&app, Some(&name)).await;
        assert_eq!(
            shape(&decoy),
            shape(&real),
            "{name}: {decoy} against {real}"
        );
        // The same fake credentials every time, as a real account's are.
        let (_, again) = sign_in_options(&app, Some(&name)).await;
        assert_eq!(
            again["publicKey"]["allowCredentials"],
            decoy["publicKey"]["allowCredentials"]
        );
    }
    let (_, nobody) = sign_in_options(&app, Some("nobody")).await;
    let (_, bob) = sign_in_options(&app, Some("bob")).await;
    assert_ne!(
        nobody["publicKey"]["allowCredentials"],
        bob["publicKey"]["allowCredentials"]
    );
}

#[tokio::test]
async fn refused_answers_count_against_the_source_never_against_the_account() {
    let mut settings = test_settings();
    settings.server.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
    settings.policy.ip.failures = Some(portcullis_core::gcra::Gcra {
        burst: 3,
        interval_ms: 3_600_000,
    });
    // Without challenges, so the failure budget itself answers (with them, a failing source is
    // asked to solve one first, as for passwords).
    settings.policy.challenge.mode = portcullis_core::ChallengeMode::Off;
    let app = TestApp::spawn_with(settings).await;
    let token = signed_up(&app, "alice").await;
    let mut laptop = SoftPasskey::new(true);
    enrol(&app, &token, &mut laptop, "Laptop").await;
    let from = |ip: &'static str, body: Value| {
        let app = &app;
        async move { app.post_json("/v1/login/passkey", &body, Some(ip)).await }
    };

    let mut statuses = Vec::new();
    for _ in 0..5 {
        let (ceremony, options) = sign_in_options(&app, Some("alice")).await;
        // A stale assertion: signed for this ceremony's options by another origin.
        let port = origin(&app).port().unwrap();
        let elsewhere = Url::parse(&format!("http://localhost:{}", port + 1)).unwrap();
        let assertion = assert_with(&mut laptop, elsewhere, &options);
        let answer = from(
            "198.51.100.7",
            json!({ "ceremony": ceremony, "credential": assertion }),
        )
        .await;
        let status = answer.status().as_u16();
        let body: Value = answer.json().await.unwrap();
        statuses.push((status, body["code"].as_str().unwrap().to_owned()));
    }
    let codes: Vec<&str> = statuses.iter().map(|(_, code)| code.as_str()).collect();
    assert_eq!(
        codes,
        [
            "invalid_passkey",
            "invalid_passkey",
            "invalid_passkey",
            "throttled",
            "throttled"
        ],
        "{statuses:?}"
    );

    // The account is not locked: its owner signs in from anywhere else, both ways.
    let (ceremony, options) = sign_in_options(&app, Some("alice")).await;
    let assertion = assert_with(&mut laptop, origin(&app), &options);
    let elsewhere = from(
        "203.0.113.9",
        json!({ "ceremony": ceremony, "credential": assertion }),
    )
    .await;
    assert_eq!(elsewhere.status(), 200);
    // Her password is accepted (the passkey then follows as its second factor).
    let password = app
        .login_from(Some("203.0.113.10"), "alice", PASSWORD)
        .await;
    assert_eq!(assert_problem(password, 401).await["code"], "mfa_required");
}

#[tokio::test]
async fn enrolment_is_bounded_and_bad_input_changes_nothing() {
    let mut settings = test_settings();
    settings.webauthn.max_per_account = 2;
    let app = TestApp::spawn_with(settings).await;
    let token = signed_up(&app, "alice").await;
    enrol(&app, &token, &mut SoftPasskey::new(true), "One").await;

    // The options exclude what the account has.
    let (ceremony, options) = registration_options(&app, &token).await;
    let excluded = options.public_key.exclude_credentials.clone().unwrap();
    assert_eq!(excluded.len(), 1);
    let credential = SoftPasskey::new(true)
        .do_registration(origin(&app), options)
        .unwrap();
    let finish = |ceremony: String, name: &str| {
        let body = json!({ "ceremony": ceremony, "name": name, "credential": credential });
        let app = &app;
        let token = &token;
        async move {
            app.with_bearer(Method::POST, "/v1/passkeys", token, &body)
                .await
        }
    };
    // A bad name, or a ceremony nobody started, uses nothing up.
    let unnamed = finish(ceremony.clone(), "\u{7}").await;
    assert_eq!(assert_problem(unnamed, 400).await["code"], "invalid_name");
    let unknown = finish("x".repeat(43), "Two").await;
    assert_eq!(
        assert_problem(unknown, 400).await["code"],
        "invalid_ceremony"
    );
    assert_eq!(finish(ceremony.clone(), "Two").await.status(), 201);
    let again = finish(ceremony, "Three").await;
    assert_eq!(assert_problem(again, 400).await["code"], "invalid_ceremony");

    let full = app
        .with_bearer(
            Method::POST,
            "/v1/passkeys/registration",
            &token,
            &json!({ "current_password": PASSWORD }),
        )
        .await;
    assert_eq!(assert_problem(full, 409).await["code"], "passkey_limit");

    for body in [
        json!({ "ceremony": "x".repeat(43), "credential": {} }),
        json!({ "ceremony": "nope", "name": "n" }),
    ] {
        let refused = app
            .with_bearer(Method::POST, "/v1/passkeys", &token, &body)
            .await;
        assert_eq!(
            assert_problem(refused, 400).await["code"],
            "bad_request",
            "{body}"
        );
    }
    let unknown = app
        .post_json(
            "/v1/login/passkey",
            &json!({ "ceremony": "x", "credential": "not a credential" }),
            None,
        )
        .await;
    assert_eq!(assert_problem(unknown, 400).await["code"], "bad_request");
    assert_eq!(passkeys(&app, &token).await.len(), 2);
}

/// The account's failures as the admin API counts them.
async fn account_failures(app: &TestApp, username: &str) -> u64 {
    let subject = admin_get(
        app,
        ADMIN_TOKEN,
        &format!("/admin/v1/subjects?username={username}"),
    )
    .await;
    let keys = subject["keys"].as_array().unwrap();
    let account = keys.iter().find(|k| k["dimension"] == "username").unwrap();
    account["failures"].as_u64().unwrap()
}

#[tokio::test]
async fn an_account_that_gave_up_its_password_refuses_every_password_as_a_wrong_one() {
    let app = app().await;
    let alice = signed_up(&app, "alice").await;
    let bob = signed_up(&app, "bob").await;
    let mut laptop = SoftPasskey::new(true);
    let laptop_id = enrol(&app, &alice, &mut laptop, "Laptop").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // A password proves nothing a leak cannot: no step-up for this.
    let with_password = app
        .with_bearer(
            Method::DELETE,
            "/v1/password",
            &alice,
            &json!({ "current_password": PASSWORD }),
        )
        .await;
    assert_eq!(
        assert_problem(with_password, 400).await["code"],
        "bad_request"
    );
    // Alice's passkey steps up Alice's session, not Bob's.
    let body = passkey_step_up(&app, "alice", &mut laptop).await;
    let crossed = app
        .with_bearer(Method::DELETE, "/v1/password", &bob, &body)
        .await;
    assert_eq!(
        assert_problem(crossed, 401).await["code"],
        "invalid_passkey"
    );
    let body = passkey_step_up(&app, "alice", &mut laptop).await;
    let removed = app
        .with_bearer(Method::DELETE, "/v1/password", &alice, &body)
        .await;
    assert_eq!(removed.status(), 204);

    // Her old password now answers as Bob's wrong one does, and counts as one.
    let right_once = assert_problem(app.login("alice", PASSWORD).await, 401).await;
    let wrong = assert_problem(app.login("bob", "not bob's password at all").await, 401).await;
    assert_eq!(right_once, wrong);
    assert_eq!(right_once["code"], "invalid_credentials");
    assert_eq!(account_failures(&app, "alice").await, 1);
    assert_eq!(account_failures(&app, "bob").await, 1);
    // A password step-up fails the same way.
    let stepped = app
        .with_bearer(
            Method::POST,
            "/v1/passkeys/registration",
            &alice,
            &json!({ "current_password": PASSWORD }),
        )
        .await;
    assert_eq!(
        assert_problem(stepped, 401).await["code"],
        "invalid_credentials"
    );

    // The passkey signs in, and steps up what the password no longer can.
    let (ceremony, options) = sign_in_options(&app, Some("alice")).await;
    let assertion = assert_with(&mut laptop, origin(&app), &options);
    assert_eq!(sign_in(&app, &ceremony, &assertion).await.status(), 200);
    let body = passkey_step_up(&app, "alice", &mut laptop).await;
    let stepped = app
        .with_bearer(Method::POST, "/v1/passkeys/registration", &alice, &body)
        .await;
    assert_eq!(stepped.status(), 200);
    assert!(
        event_kinds(&app)
            .await
            .iter()
            .any(|k| k == "password_removed")
    );

    // Its last passkey stays: without it nothing would open the account.
    let body = passkey_step_up(&app, "alice", &mut laptop).await;
    let last = app
        .with_bearer(
            Method::DELETE,
            &format!("/v1/passkeys/{laptop_id}"),
            &alice,
            &body,
        )
        .await;
    assert_eq!(assert_problem(last, 409).await["code"], "last_passkey");
    assert_eq!(passkeys(&app, &alice).await.len(), 1);
}

#[tokio::test]
async fn thirty_passkey_sign_ins_beside_thirty_password_logins_on_the_default_argon2() {
    let mut settings = test_settings();
    // The default configuration's hashing, as a password login in production pays it.
    settings.argon2 = portcullis_server::Settings::default().argon2;
    let app = TestApp::spawn_with(settings).await;
    let token = signed_up(&app, "alice").await;
    let mut laptop = SoftPasskey::new(true);
    enrol(&app, &token, &mut laptop, "Laptop").await;
    // Bob logs in with his password alone (Alice's would ask for her passkey as well).
    signed_up(&app, "bob").await;
    let mut passkey = Vec::new();
    let mut password = Vec::new();
    // Thirty of each: the address's daily budget is 100 attempts.
    for _ in 0..30 {
        // Three requests count against this address (one a second): move the clock on.
        app.clock.advance(5_000);
        let started = std::time::Instant::now();
        let (ceremony, options) = sign_in_options(&app, Some("alice")).await;
        let assertion = assert_with(&mut laptop, origin(&app), &options);
        assert_eq!(sign_in(&app, &ceremony, &assertion).await.status(), 200);
        passkey.push(started.elapsed());
        let started = std::time::Instant::now();
        assert_eq!(app.login("bob", PASSWORD).await.status(), 200);
        password.push(started.elapsed());
    }
    passkey.sort();
    password.sort();
    let (passkey, password) = (passkey[15], password[15]);
    // Reported, not asserted: this machine is shared.
    println!(
        "median of 30, options + answer against a password login: {passkey:?} / {password:?} = {:.3}",
        passkey.as_secs_f64() / password.as_secs_f64()
    );
}

/// The first step of `username`'s login with the right password: its `mfa_required` answer.
async fn password_step(app: &TestApp, username: &str) -> Value {
    let body = assert_problem(app.login(username, PASSWORD).await, 401).await;
    assert_eq!(body["code"], "mfa_required", "{body}");
    body
}

async fn second_step(app: &TestApp, body: &Value) -> reqwest::Response {
    app.post_json("/v1/login/mfa", body, None).await
}

#[tokio::test]
async fn after_the_password_a_passkey_of_the_account_is_the_second_factor_beside_totp() {
    let app = app().await;
    let alice = signed_up(&app, "alice").await;
    let bob = signed_up(&app, "bob").await;
    let mut laptop = SoftPasskey::new(true);
    let mut phone = SoftPasskey::new(true);
    enrol(&app, &alice, &mut laptop, "Laptop").await;
    enrol(&app, &bob, &mut phone, "Phone").await;

    // A passkey is a second factor: the right password alone opens nothing, and says which
    // factors may follow. A wrong one answers as for an account without any.
    let first = password_step(&app, "alice").await;
    assert_eq!(first["methods"], json!(["passkey"]));
    let wrong = assert_problem(app.login("alice", "not the password").await, 401).await;
    assert_eq!(wrong["code"], "invalid_credentials");
    assert!(wrong.get("methods").is_none(), "{wrong}");
    crate::mfa::enrol(&app, "alice", &alice).await;
    let first = password_step(&app, "alice").await;
    assert_eq!(first["methods"], json!(["passkey", "totp"]));
    let mfa_token = first["mfa_token"].as_str().unwrap();

    // Exactly one proof: a code beside a passkey's answer, or half an answer, is malformed.
    let step = passkey_step_up(&app, "alice", &mut laptop).await;
    let mut both = step.clone();
    both["mfa_token"] = json!(mfa_token);
    both["code"] = json!("123456");
    let mut half = json!({ "mfa_token": mfa_token, "ceremony": step["ceremony"] });
    for body in [&both, &half] {
        let refused = assert_problem(second_step(&app, body).await, 400).await;
        assert_eq!(refused["code"], "malformed_code", "{body}");
    }
    half["ceremony"] = json!(null);

    // Bob's passkey proves nothing about Alice's password; nor does Alice's answer sent twice.
    let mut crossed = passkey_step_up(&app, "bob", &mut phone).await;
    crossed["mfa_token"] = json!(mfa_token);
    let refused = assert_problem(second_step(&app, &crossed).await, 401).await;
    assert_eq!(refused["code"], "invalid_passkey");
    let mut own = passkey_step_up(&app, "alice", &mut laptop).await;
    own["mfa_token"] = json!(mfa_token);
    let logged_in = second_step(&app, &own).await;
    assert_eq!(logged_in.status(), 200);
    assert!(device_cookie(&logged_in).is_some(), "a new browser");
    let logged_in: Value = logged_in.json().await.unwrap();
    assert_eq!(
        app.session(logged_in["token"].as_str().unwrap())
            .await
            .status(),
        200
    );
    let replayed = assert_problem(second_step(&app, &own).await, 401).await;
    assert_eq!(replayed["code"], "invalid_token");
}

#[tokio::test]
async fn a_reset_removes_every_passkey_so_whoever_lost_them_gets_back_in_with_a_password() {
    let smtp = crate::mail::SmtpServer::running();
    let mut settings = crate::mail::smtp_settings(&smtp);
    settings.admin.token = Some(ADMIN_TOKEN.into());
    let app = TestApp::spawn_with(settings).await;
    crate::reset::with_address(&app, &smtp, "alice", 0).await;
    let alice = app.token("alice", PASSWORD).await;
    // Pages run at the public address here.
    let origin = Url::parse("https://login.example.test").unwrap();
    let mut laptop = SoftPasskey::new(true);
    let (ceremony, options) = registration_options(&app, &alice).await;
    let credential = laptop.do_registration(origin.clone(), options).unwrap();
    let body = json!({ "ceremony": ceremony, "name": "Laptop", "credential": credential });
    let added = app
        .with_bearer(Method::POST, "/v1/passkeys", &alice, &body)
        .await;
    assert_eq!(added.status(), 201);
    // Passkeys only, and then the laptop is lost: nothing Alice still holds opens the account.
    let (ceremony, options) = sign_in_options(&app, Some("alice")).await;
    let assertion = assert_with(&mut laptop, origin, &options);
    let body = json!({ "ceremony": ceremony, "credential": assertion });
    let removed = app
        .with_bearer(Method::DELETE, "/v1/password", &alice, &body)
        .await;
    assert_eq!(removed.status(), 204);
    drop(laptop);
    assert_eq!(app.login("alice", PASSWORD).await.status(), 401);

    let asked = app
        .post_json("/v1/password/reset", &json!({ "username": "alice" }), None)
        .await;
    assert_eq!(asked.status(), 202);
    let messages = smtp
        .wait_for_subject("Reset the password of alice", 1)
        .await;
    let token = crate::mail::link_token(&messages[0], "/reset");
    let new_password = "quiet walrus under amber lanterns";
    let reset = app
        .post_json(
            "/v1/password/reset/confirm",
            &json!({ "token": token, "new_password": new_password }),
            None,
        )
        .await;
    assert_eq!(reset.status(), 200);

    // The reset took the passkeys with it (the lost one, or one an intruder added), so the
    // new password is the whole login again, and the owner was told.
    assert_eq!(app.session(&alice).await.status(), 401);
    let logged_in = app.login("alice", new_password).await;
    assert_eq!(logged_in.status(), 200);
    let logged_in: Value = logged_in.json().await.unwrap();
    assert!(
        passkeys(&app, logged_in["token"].as_str().unwrap())
            .await
            .is_empty()
    );
    assert_eq!(accounts_with_passkeys(&app).await, 0);
    let notice = smtp
        .wait_for_subject("The password of alice was reset", 1)
        .await;
    assert!(
        notice[0].to_string().contains("passkeys were removed"),
        "{}",
        notice[0]
    );
}

/// Starts a registration without a password for `username`: the ceremony and its options.
async fn passkey_registration(
    app: &TestApp,
    username: &str,
) -> (String, CreationChallengeResponse) {
    let started = app
        .post_json("/v1/users", &json!({ "username": username }), None)
        .await;
    assert_eq!(started.status(), 200);
    let started: Value = started.json().await.unwrap();
    let ceremony = started["ceremony"].as_str().unwrap().to_owned();
    (ceremony, serde_json::from_value(started).unwrap())
}

#[tokio::test]
async fn an_account_registered_without_a_password_exists_once_its_passkey_is_in() {
    let app = app().await;
    let mut laptop = SoftPasskey::new(true);
    let (ceremony, options) = passkey_registration(&app, "erin").await;
    // Until the answer is in there is no account, and the name holds nothing.
    assert_eq!(app.login("erin", PASSWORD).await.status(), 401);
    let credential = laptop.do_registration(origin(&app), options).unwrap();
    let body = json!({ "ceremony": ceremony, "name": "Laptop", "credential": credential });
    let registered = app.post_json("/v1/users/passkey", &body, None).await;
    assert_eq!(registered.status(), 201);
    let registered: Value = registered.json().await.unwrap();
    assert_eq!(registered["username"], "erin");
    let replayed = app.post_json("/v1/users/passkey", &body, None).await;
    assert_eq!(
        assert_problem(replayed, 400).await["code"],
        "invalid_ceremony"
    );

    // Its passkey signs in, to the account whose id the options' user handle held; no
    // password does.
    let (ceremony, options) = sign_in_options(&app, Some("erin")).await;
    let assertion = assert_with(&mut laptop, origin(&app), &options);
    let signed_in = sign_in(&app, &ceremony, &assertion).await;
    assert_eq!(signed_in.status(), 200);
    let token: Value = signed_in.json().await.unwrap();
    let session = app.session(token["token"].as_str().unwrap()).await;
    let session: Value = session.json().await.unwrap();
    assert_eq!(session["subject"], registered["id"]);
    let password = assert_problem(app.login("erin", PASSWORD).await, 401).await;
    assert_eq!(password["code"], "invalid_credentials");
    assert_eq!(accounts_with_passkeys(&app).await, 1);
    let listed = passkeys(&app, token["token"].as_str().unwrap()).await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["name"], "Laptop");
}

#[tokio::test]
async fn a_registration_without_a_password_loses_a_name_taken_meanwhile_and_stores_nothing() {
    let app = app().await;
    signed_up(&app, "alice").await;
    let taken = app
        .post_json("/v1/users", &json!({ "username": "ALICE" }), None)
        .await;
    assert_eq!(assert_problem(taken, 409).await["code"], "username_taken");

    // Frank starts; someone registers the name with a password before his answer is in.
    let mut laptop = SoftPasskey::new(true);
    let (ceremony, options) = passkey_registration(&app, "frank").await;
    assert_eq!(app.register("frank", PASSWORD).await.status(), 201);
    let credential = laptop.do_registration(origin(&app), options).unwrap();
    let late = app
        .post_json(
            "/v1/users/passkey",
            &json!({ "ceremony": ceremony, "credential": credential }),
            None,
        )
        .await;
    assert_eq!(assert_problem(late, 409).await["code"], "username_taken");
    assert_eq!(accounts_with_passkeys(&app).await, 0);
    // The other Frank's password still opens his account, and only it.
    assert_eq!(app.login("frank", PASSWORD).await.status(), 200);

    // A sign-in's ceremony registers nothing.
    let (ceremony, _) = sign_in_options(&app, Some("frank")).await;
    let (_, options) = passkey_registration(&app, "grace").await;
    let credential = laptop.do_registration(origin(&app), options).unwrap();
    let crossed = app
        .post_json(
            "/v1/users/passkey",
            &json!({ "ceremony": ceremony, "credential": credential }),
            None,
        )
        .await;
    assert_eq!(
        assert_problem(crossed, 400).await["code"],
        "invalid_ceremony"
    );
    assert_eq!(app.login("grace", PASSWORD).await.status(), 401);
}
