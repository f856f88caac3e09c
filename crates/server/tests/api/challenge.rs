//! Proof-of-work challenges (ALTCHA v2): asked where the policy says, solved by the reference
//! implementation (PyPI `altcha`, installed by scripts/test.sh), single-use on every path; the
//! IPv6 network limits; trusted devices behind a banned shared address.

use portcullis_accounts::settings::RedisSettings;
use portcullis_core::ChallengeMode;
use portcullis_core::altcha::{self, Challenge, Payload};
use portcullis_server::settings::Settings;
use portcullis_testkit::redis::TestRedis;
use portcullis_testkit::{PASSWORD, TestApp, test_settings};
use serde_json::{Value, json};

use crate::helpers::{account_key, assert_problem, device_cookie, interop, wait_until_in_flight};

const HMAC_KEY: &str = "challenge-test-hmac-key-of-32-characters";

/// Test settings behind a trusted local proxy, with small work so that tests solve fast.
fn settings(mode: ChallengeMode) -> Settings {
    let mut settings = test_settings();
    settings.server.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
    settings.secrets.hmac_key = Some(HMAC_KEY.to_owned().into());
    settings.policy.challenge.mode = mode;
    settings.policy.challenge.min_work = 4_000;
    settings.policy.challenge.max_work = 64_000;
    settings
}

/// The key challenges are signed with (the server derives it from `secrets.hmac_key`).
fn challenge_key_hex() -> String {
    hex::encode([HMAC_KEY.as_bytes(), b"/altcha-challenges"].concat())
}

async fn post(
    app: &TestApp,
    path: &str,
    from: &str,
    cookie: Option<&str>,
    body: Value,
) -> reqwest::Response {
    let mut request = app
        .client
        .post(app.url(path))
        .header("x-forwarded-for", from)
        .json(&body);
    if let Some(cookie) = cookie {
        request = request.header("cookie", cookie);
    }
    request.send().await.unwrap()
}

async fn login(
    app: &TestApp,
    from: &str,
    user: &str,
    password: &str,
    altcha: Option<&str>,
) -> reqwest::Response {
    let body = json!({ "username": user, "password": password, "altcha": altcha });
    post(app, "/v1/login", from, None, body).await
}

/// Registers an account, solving the challenge registration asks for in mode `always`.
async fn register(app: &TestApp, user: &str) {
    let body = json!({ "username": user, "password": PASSWORD });
    let asked = post(app, "/v1/users", "192.0.2.99", None, body).await;
    let altcha = solve(challenge_of(asked, "challenge_required").await);
    let body = json!({ "username": user, "password": PASSWORD, "altcha": altcha });
    assert_eq!(
        post(app, "/v1/users", "192.0.2.99", None, body)
            .await
            .status(),
        201
    );
}

async fn fetch_challenge(app: &TestApp) -> Challenge {
    let response = app
        .client
        .get(app.url("/v1/challenge"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

/// Solves with this crate's solver (the same algorithm; the reference one is tested below).
fn solve(challenge: Challenge) -> String {
    let solution = altcha::solve(&challenge.parameters, u32::MAX).unwrap();
    Payload {
        challenge,
        solution,
    }
    .to_base64()
}

/// The challenge a problem answer carries.
async fn challenge_of(response: reqwest::Response, code: &str) -> Challenge {
    let body = assert_problem(response, 401).await;
    assert_eq!(body["code"], code, "{body}");
    serde_json::from_value(body["challenge"].clone()).unwrap()
}

/// Runs the reference implementation (see tests/interop/altcha_reference.py).
fn reference(args: &[&str], stdin: &str) -> String {
    interop("altcha_reference.py", args, stdin)
}

#[tokio::test]
async fn the_reference_implementation_solves_our_challenges_and_we_accept_its_own() {
    let app = TestApp::spawn_with(settings(ChallengeMode::Always)).await;
    register(&app, "alice").await;
    let challenge = fetch_challenge(&app).await;
    assert_eq!(challenge.parameters.algorithm, "PBKDF2/SHA-256");
    assert_eq!(challenge.signature.len(), 64);

    // The reference solves what we issued; we accept its payload...
    let payload = reference(&["solve"], &serde_json::to_string(&challenge).unwrap());
    let response = login(&app, "192.0.2.1", "alice", PASSWORD, Some(&payload)).await;
    assert_eq!(response.status(), 200);
    // ...and with our key it verifies it too: the same canonical JSON, the same signature.
    assert_eq!(
        reference(&["verify", &challenge_key_hex()], &payload),
        "verified"
    );

    // A challenge the reference created with our key, solved: we verify its signature too.
    let created: Challenge =
        serde_json::from_str(&reference(&["create", &challenge_key_hex()], "")).unwrap();
    let response = login(&app, "192.0.2.1", "alice", PASSWORD, Some(&solve(created))).await;
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn tampered_expired_wrong_and_replayed_payloads_are_refused_with_a_fresh_challenge() {
    let app = TestApp::spawn_with(settings(ChallengeMode::Always)).await;
    register(&app, "alice").await;
    let from = "192.0.2.2";

    let first = login(&app, from, "alice", PASSWORD, None).await;
    let challenge = challenge_of(first, "challenge_required").await;
    let payload = solve(challenge.clone());
    assert_eq!(
        login(&app, from, "alice", PASSWORD, Some(&payload))
            .await
            .status(),
        200
    );
    // A solved challenge admits exactly one password check.
    let replayed = login(&app, from, "alice", PASSWORD, Some(&payload)).await;
    let fresh = challenge_of(replayed, "challenge_failed").await;
    assert_ne!(fresh.parameters.nonce, challenge.parameters.nonce);

    let mut cheaper = fresh.clone();
    cheaper.parameters.cost = 1;
    let tampered = login(&app, from, "alice", PASSWORD, Some(&solve(cheaper))).await;
    challenge_of(tampered, "challenge_failed").await;

    let mut wrong = Payload {
        solution: altcha::solve(&fresh.parameters, u32::MAX).unwrap(),
        challenge: fresh,
    };
    wrong.solution.counter += 1;
    let response = login(&app, from, "alice", PASSWORD, Some(&wrong.to_base64())).await;
    challenge_of(response, "challenge_failed").await;

    let garbage = login(&app, from, "alice", PASSWORD, Some("bm90IGEgcGF5bG9hZA==")).await;
    challenge_of(garbage, "challenge_failed").await;

    let late = solve(fetch_challenge(&app).await);
    app.clock.advance(601_000);
    let expired = login(&app, from, "alice", PASSWORD, Some(&late)).await;
    challenge_of(expired, "challenge_failed").await;
}

#[tokio::test]
async fn challenge_answers_count_against_rate_limits_but_are_not_password_failures() {
    let app = TestApp::spawn_with(settings(ChallengeMode::Always)).await;
    register(&app, "alice").await;
    // Unsolved attempts at alice's account spend the address's burst (tightened to a quarter
    // once the unanswered challenges put the service under attack).
    let mut challenged = 0;
    loop {
        let response = login(&app, "192.0.2.3", "alice", "guess", None).await;
        if response.status() == 429 {
            assert_problem(response, 429).await;
            break;
        }
        challenge_of(response, "challenge_required").await;
        challenged += 1;
        assert!(challenged <= 30, "never throttled");
    }
    assert!(challenged > 5, "{challenged}");
    // None of them was a failure of alice's: five would have locked her out.
    let challenge = fetch_challenge(&app).await;
    let response = login(
        &app,
        "192.0.2.4",
        "alice",
        PASSWORD,
        Some(&solve(challenge)),
    )
    .await;
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn a_failing_source_is_challenged_harder_as_it_goes_on_and_a_clean_one_is_not() {
    let app = TestApp::spawn_with(settings(ChallengeMode::Risk)).await;
    app.register("alice", PASSWORD).await;
    let sprayer = "203.0.113.9";
    for i in 0..3 {
        let response = login(&app, sprayer, &format!("user{i}"), "Winter2026!", None).await;
        assert_eq!(
            assert_problem(response, 401).await["code"],
            "invalid_credentials"
        );
    }
    // Three of the ten usernames that would ban it: 30%, the default threshold.
    let asked = challenge_of(
        login(&app, sprayer, "user3", "Winter2026!", None).await,
        "challenge_required",
    )
    .await;
    let mut works = vec![asked.parameters.work()];
    let mut challenge = asked;
    for i in 3..9 {
        let response = login(
            &app,
            sprayer,
            &format!("user{i}"),
            "Winter2026!",
            Some(&solve(challenge)),
        )
        .await;
        assert_eq!(response.status(), 401);
        challenge = challenge_of(
            login(&app, sprayer, "next", "x", None).await,
            "challenge_required",
        )
        .await;
        works.push(challenge.parameters.work());
    }
    assert!(
        works.windows(2).all(|w| w[0] < w[1]),
        "work rises with the risk: {works:?}"
    );
    assert!(
        works[0] >= 4_000 / 16 && *works.last().unwrap() <= 64_000,
        "{works:?}"
    );

    // Registration from that source is challenged too.
    let body = json!({ "username": "newcomer", "password": PASSWORD });
    let register = post(&app, "/v1/users", sprayer, None, body).await;
    challenge_of(register, "challenge_required").await;
    // A clean address is asked nothing.
    assert_eq!(
        login(&app, "198.51.100.20", "alice", PASSWORD, None)
            .await
            .status(),
        200
    );
}

#[tokio::test]
async fn rotating_through_the_64s_of_one_48_is_refused_before_the_400th_username() {
    let app = TestApp::spawn_with(settings(ChallengeMode::Risk)).await;
    // The problem code of each answer: which were verified, challenged, refused.
    let mut codes = Vec::new();
    for i in 0..400 {
        let from = format!("2001:db8:42:{i:x}::1");
        let response = login(&app, &from, &format!("user{i}"), "Winter2026!", None).await;
        let body: Value = response.json().await.unwrap();
        codes.push(body["code"].as_str().unwrap().to_owned());
    }
    let count = |code: &str| codes.iter().filter(|c| *c == code).count();
    let first_refusal = codes.iter().position(|c| c == "throttled");
    println!(
        "400 /64s of one /48: first 429 at attempt {first_refusal:?}; {} verified, {} challenged, {} refused",
        count("invalid_credentials"),
        count("challenge_required"),
        count("throttled"),
    );
    assert!(first_refusal.is_some_and(|i| i < 399), "{codes:?}");
    // The /48's risk (its distinct failed usernames) has it challenged long before that.
    assert!(count("invalid_credentials") < 30, "{codes:?}");
}

/// An office's shared address (its NAT).
const OFFICE: &str = "198.51.100.7";

/// alice logs in from the office, with a device cookie or without.
async fn alice_from_the_office(app: &TestApp, cookie: Option<&str>) -> reqwest::Response {
    let body = json!({ "username": "alice", "password": PASSWORD });
    post(app, "/v1/login", OFFICE, cookie, body).await
}

#[tokio::test]
async fn a_trusted_device_logs_in_from_a_shared_address_an_attacker_got_banned() {
    let app = TestApp::spawn_with(settings(ChallengeMode::Risk)).await;
    app.register("alice", PASSWORD).await;
    let first = alice_from_the_office(&app, None).await;
    assert_eq!(first.status(), 200);
    let cookie = device_cookie(&first).unwrap();
    // An attacker behind the same NAT sprays usernames, solving every challenge asked, until the
    // address is banned.
    let (mut victim, mut challenge, mut banned) = (0, None::<Challenge>, false);
    while !banned && victim < 20 {
        let altcha = challenge.take().map(solve);
        let response = login(
            &app,
            OFFICE,
            &format!("victim{victim}"),
            "Winter2026!",
            altcha.as_deref(),
        )
        .await;
        match response.status().as_u16() {
            429 => banned = true,
            401 => {
                let body: Value = response.json().await.unwrap();
                challenge = serde_json::from_value(body["challenge"].clone()).ok();
                if challenge.is_none() {
                    victim += 1;
                }
            }
            other => panic!("victim {victim}: {other}"),
        }
    }
    assert!(banned, "the shared address was banned");
    let without = alice_from_the_office(&app, None).await;
    assert_eq!(without.status(), 429);
    let with = alice_from_the_office(&app, Some(&cookie)).await;
    assert_eq!(with.status(), 200);
}

/// A password checked while the service came under attack is answered with a challenge, not
/// with whether it was right: a guess admitted just before the trip learns nothing that one
/// sent a moment later could not. Alice's stored hash is slow (she registered under costlier
/// Argon2 parameters, so her check takes seconds where an unknown name's takes a millisecond);
/// a spread-thin list trips the signal while hers runs. Solving the challenge then logs her in:
/// the withheld answer was not counted against her.
#[tokio::test]
async fn a_password_checked_as_the_service_came_under_attack_gets_a_challenge_not_its_answer() {
    let dir = tempfile::tempdir().unwrap();
    let redis = TestRedis::start().await;
    let mut fast = settings(ChallengeMode::Risk);
    fast.database.url = format!("sqlite://{}/accounts.db", dir.path().display());
    // One thread for alice's check, one for the list's.
    fast.argon2.workers = 2;
    let mut slow = fast.clone();
    slow.argon2.memory_kib = 65_536;
    slow.argon2.iterations = 40;
    let app = TestApp::spawn_with(slow).await;
    app.register("alice", PASSWORD).await;
    drop(app);
    // On a Redis of its own, where the test can see alice's attempt in flight.
    fast.store.redis = Some(RedisSettings {
        url: redis.url.clone(),
        prefix: redis.prefix.clone(),
        ..Default::default()
    });
    let app = TestApp::spawn_with(fast).await;
    let alice_key = account_key(&redis, HMAC_KEY, "alice");

    let alice = login(&app, "192.0.2.10", "alice", PASSWORD, None);
    let list = async {
        // Alice is admitted first (a clean source, a calm service); her check begins as the
        // list goes on.
        wait_until_in_flight(&redis, &alice_key).await;
        for i in 0..=60 {
            let from = format!("10.{i}.0.1");
            let response = login(&app, &from, &format!("leaked{i}"), "hunter2", None).await;
            if response.status() == 401 {
                let body: Value = response.json().await.unwrap();
                if body["code"] == "challenge_required" {
                    return i;
                }
                assert_eq!(body["code"], "invalid_credentials", "{body}");
            } else {
                panic!("leaked{i}: {}", response.status());
            }
        }
        panic!("the list never tripped the signal");
    };
    let (alice, tripped_at) = tokio::join!(alice, list);
    assert!(
        tripped_at > 0,
        "the list was challenged from its first pair"
    );
    let challenge = challenge_of(alice, "challenge_required").await;
    let response = login(
        &app,
        "192.0.2.10",
        "alice",
        PASSWORD,
        Some(&solve(challenge)),
    )
    .await;
    assert_eq!(response.status(), 200);
    redis.cleanup().await;
}

#[tokio::test]
async fn a_login_from_a_network_new_to_its_account_is_challenged_in_memory_and_on_redis() {
    // On by default; the test settings turn it off for the other tests.
    assert!(Settings::default().policy.challenge.unfamiliar_networks);
    let redis = TestRedis::start().await;
    let mut on_redis = settings(ChallengeMode::Risk);
    on_redis.store.redis = Some(RedisSettings {
        url: redis.url.clone(),
        prefix: redis.prefix.clone(),
        ..Default::default()
    });
    for mut settings in [settings(ChallengeMode::Risk), on_redis] {
        settings.policy.challenge.unfamiliar_networks = true;
        let app = TestApp::spawn_with(settings).await;
        assert_eq!(app.register("alice", PASSWORD).await.status(), 201);

        // No history: the first login without a device cookie solves a challenge, right
        // password or wrong alike, before any password work.
        let wrong = login(&app, "192.0.2.7", "alice", "not her password", None).await;
        challenge_of(wrong, "challenge_required").await;
        let asked = login(&app, "192.0.2.7", "alice", PASSWORD, None).await;
        let altcha = solve(challenge_of(asked, "challenge_required").await);
        let signed_in = login(&app, "192.0.2.7", "alice", PASSWORD, Some(&altcha)).await;
        assert_eq!(signed_in.status(), 200);
        let cookie = device_cookie(&signed_in).unwrap();

        // Her network is now familiar: another device at home goes straight in.
        let laptop = login(&app, "192.0.2.99", "alice", PASSWORD, None).await;
        assert_eq!(laptop.status(), 200);
        // From another network, without her device cookie, a challenge first...
        let elsewhere = login(&app, "198.51.100.7", "alice", PASSWORD, None).await;
        challenge_of(elsewhere, "challenge_required").await;
        // ...with it, not: the device vouches wherever it is.
        let body = json!({ "username": "alice", "password": PASSWORD });
        let travelling = post(&app, "/v1/login", "198.51.100.7", Some(&cookie), body).await;
        assert_eq!(travelling.status(), 200);
        // Her network is hers alone.
        assert_eq!(app.register("bob", PASSWORD).await.status(), 201);
        let bob = login(&app, "192.0.2.7", "bob", PASSWORD, None).await;
        challenge_of(bob, "challenge_required").await;
        // An account knows the network it was registered from.
        let body = json!({ "username": "carol", "password": PASSWORD });
        let registered = post(&app, "/v1/users", "203.0.113.5", None, body).await;
        assert_eq!(registered.status(), 201);
        let carol = login(&app, "203.0.113.77", "carol", PASSWORD, None).await;
        assert_eq!(carol.status(), 200);
    }
}
