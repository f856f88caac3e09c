//! Distributed mode: replicas sharing one Redis and one PostgreSQL behave as one service.

use std::time::{Duration, Instant};

use futures_util::future::join_all;
use portcullis_testkit::postgres::TestDatabase;
use portcullis_testkit::process::wait_until;
use portcullis_testkit::redis::{RedisCluster, TestRedis};
use portcullis_testkit::replicas::Replicas;
use portcullis_testkit::{NETWORKS_OFF, PASSWORD, TestApp, test_settings};

use crate::helpers::{assert_one_account_per_normalised_name, device_cookie, within_a_second};
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_portcullis");
/// The replicas' username-hashing key (tests derive the same keys and digests).
pub const HMAC_KEY: &str = "0123456789abcdef0123456789abcdef-test-only";

/// Three replicas on one Redis (a private prefix) and one fresh database, trusting the test
/// client as their proxy so each request can carry its own client address.
pub async fn three_replicas(extra: &[(&str, String)]) -> (Replicas, TestRedis, TestDatabase) {
    let redis = TestRedis::start().await;
    let store = [
        ("PORTCULLIS__STORE__REDIS__URL", redis.url.clone()),
        ("PORTCULLIS__STORE__REDIS__PREFIX", redis.prefix.clone()),
    ];
    let (replicas, database) = three_replicas_on(&store, extra).await;
    (replicas, redis, database)
}

/// Three replicas on the Redis `store` names and one fresh database.
async fn three_replicas_on(
    store: &[(&str, String)],
    extra: &[(&str, String)],
) -> (Replicas, TestDatabase) {
    let database = TestDatabase::create().await;
    let mut env = vec![
        ("PORTCULLIS__DATABASE__URL", database.url.clone()),
        ("PORTCULLIS__SECRETS__HMAC_KEY", HMAC_KEY.to_owned()),
        (
            "PORTCULLIS__SERVER__TRUSTED_PROXIES",
            "127.0.0.1".to_owned(),
        ),
        // A loaded CI machine must not trip the breaker into local counting mid-test.
        ("PORTCULLIS__STORE__REDIS__TIMEOUT_MS", "2000".to_owned()),
        (NETWORKS_OFF.0, NETWORKS_OFF.1.to_owned()),
    ];
    env.extend(store.iter().cloned());
    env.extend(extra.iter().cloned());
    let replicas = Replicas::spawn(std::path::Path::new(BIN), 3, &env).await;
    (replicas, database)
}

pub async fn post(url: String, body: Value, forwarded_for: &str) -> reqwest::Response {
    reqwest::Client::new()
        .post(url)
        .header("x-forwarded-for", forwarded_for)
        .json(&body)
        .send()
        .await
        .unwrap()
}

/// Registers `credentials` through replica 0.
pub async fn register(replicas: &Replicas, credentials: &Value) {
    let response = post(
        replicas.url(0, "/v1/users"),
        credentials.clone(),
        "192.0.2.1",
    )
    .await;
    assert_eq!(response.status(), 201);
}

/// Sends `count` wrong passwords for `username`: guess `i` from its own address 198.51.100.`i`,
/// through replica `replica(i)`.
pub async fn wrong_guesses(
    replicas: &Replicas,
    username: &str,
    count: usize,
    replica: impl Fn(usize) -> usize,
) {
    for i in 0..count {
        let guess = json!({ "username": username, "password": format!("guess{i}") });
        let url = replicas.url(replica(i), "/v1/login");
        post(url, guess, &format!("198.51.100.{i}")).await;
    }
}

/// Waits until the replicas have logged `count` finished requests.
async fn logged(replicas: &Replicas, count: usize) {
    wait_until(Duration::from_secs(10), "replica logs", || async {
        ["success", "failure", "denied"]
            .iter()
            .map(|o| replicas.requests_with_outcome(o))
            .sum::<usize>()
            >= count
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_guesses_at_one_account_across_replicas_verify_no_more_than_the_lockout_allows()
{
    let (replicas, redis, _database) = three_replicas(&[]).await;
    guesses_verify_exactly_the_lockout(&replicas).await;
    redis.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn on_a_cluster_sharded_per_subject_concurrent_guesses_verify_exactly_the_lockout() {
    let cluster = RedisCluster::spawn(3).await;
    let store = [
        ("PORTCULLIS__STORE__REDIS__URL", cluster.urls().join(",")),
        ("PORTCULLIS__STORE__REDIS__CLUSTER", "true".to_owned()),
        (
            "PORTCULLIS__STORE__REDIS__SHARDING",
            "per_subject".to_owned(),
        ),
    ];
    let (replicas, _database) = three_replicas_on(&store, &[]).await;
    guesses_verify_exactly_the_lockout(&replicas).await;
    // The counters are tagged per subject: the guesses' address block (198.51.0.0/16), and the
    // account.
    let sharded = cluster.keys("portcullis:c:{*").await;
    assert!(
        sharded
            .iter()
            .any(|k| k.starts_with("portcullis:c:{198.51}:ip:"))
            && sharded.iter().any(|k| k.contains("}:u:")),
        "{sharded:?}"
    );
}

/// 200 wrong passwords for one account from 200 addresses, at once over the three replicas:
/// exactly the lockout's 5 reach Argon2, and the lockout holds on every replica.
async fn guesses_verify_exactly_the_lockout(replicas: &Replicas) {
    let registered = post(
        replicas.url(0, "/v1/users"),
        json!({ "username": "victim", "password": PASSWORD }),
        "192.0.2.1",
    )
    .await;
    assert_eq!(registered.status(), 201);

    let guesses = (0..200).map(|i| {
        let url = replicas.url(i % 3, "/v1/login");
        async move {
            post(
                url,
                json!({ "username": "victim", "password": format!("guess-{i}") }),
                &format!("198.51.{}.{}", i / 200, i % 200),
            )
            .await
        }
    });
    let statuses: Vec<u16> = join_all(guesses)
        .await
        .iter()
        .map(|r| r.status().as_u16())
        .collect();
    assert!(
        statuses.iter().all(|s| [401, 429].contains(s)),
        "{statuses:?}"
    );
    logged(replicas, 200).await;
    // Counted from the replicas' own logs: requests whose password was actually verified.
    let warnings: Vec<String> = replicas
        .logs()
        .iter()
        .filter(|l| l["target"] != "security" && (l["level"] == "WARN" || l["level"] == "ERROR"))
        .map(|l| l.to_string())
        .take(3)
        .collect();
    assert_eq!(
        replicas.requests_with_outcome("failure"),
        5,
        "replica warnings: {warnings:?}"
    );
    assert_eq!(statuses.iter().filter(|&&s| s == 401).count(), 5);

    // The lockout set through whichever replica is enforced by every replica.
    for i in 0..3 {
        let owner = post(
            replicas.url(i, "/v1/login"),
            json!({ "username": "victim", "password": PASSWORD }),
            "203.0.113.50",
        )
        .await;
        assert_eq!(owner.status(), 429, "replica {i}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn one_address_spraying_many_usernames_across_replicas_verifies_no_more_than_its_limit() {
    // The rate limit alone: with challenges on, the failing address is challenged sooner.
    let limit = [
        ("PORTCULLIS__POLICY__IP__ATTEMPTS__BURST", "10".to_owned()),
        (
            "PORTCULLIS__POLICY__IP__ATTEMPTS__INTERVAL_MS",
            "3600000".to_owned(),
        ),
        ("PORTCULLIS__POLICY__CHALLENGE__MODE", "off".to_owned()),
    ];
    let (replicas, redis, _database) = three_replicas(&limit).await;
    let sprays = (0..200).map(|i| {
        post(
            replicas.url(i % 3, "/v1/login"),
            json!({ "username": format!("user{i}"), "password": "Summer2026!" }),
            "203.0.113.66",
        )
    });
    let statuses: Vec<u16> = join_all(sprays)
        .await
        .iter()
        .map(|r| r.status().as_u16())
        .collect();
    logged(&replicas, 200).await;
    assert_eq!(replicas.requests_with_outcome("failure"), 10);
    assert_eq!(statuses.iter().filter(|&&s| s == 429).count(), 190);
    redis.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn one_address_spraying_fifty_usernames_is_banned_before_the_fiftieth_reaches_argon2() {
    // The ban alone: with challenges on, the fourth username is challenged (see challenge.rs).
    let challenges_off = [("PORTCULLIS__POLICY__CHALLENGE__MODE", "off".to_owned())];
    let (replicas, redis, _database) = three_replicas(&challenges_off).await;
    let mut statuses = Vec::new();
    let mut retry_after = None;
    for i in 0..50 {
        let response = post(
            replicas.url(i % 2, "/v1/login"),
            json!({ "username": format!("employee{i}"), "password": "Winter2026!" }),
            "203.0.113.77",
        )
        .await;
        statuses.push(response.status().as_u16());
        if response.status() == 429 {
            retry_after = response.headers().get("retry-after").cloned();
        }
    }
    // The default signal: 10 distinct usernames failing from one address in 10 minutes.
    assert_eq!(statuses[..10], [401; 10]);
    assert_eq!(statuses[10..], [429; 40]);
    assert_eq!(
        retry_after.unwrap(),
        "900",
        "the first ban lasts 15 minutes"
    );
    logged(&replicas, 50).await;
    assert_eq!(replicas.requests_with_outcome("failure"), 10);
    let banned = replicas
        .logs()
        .iter()
        .filter(|l| l["message"] == "request finished" && l["span"]["reason"] == "banned")
        .count();
    assert_eq!(banned, 40);
    let ban_events = replicas
        .logs()
        .iter()
        .filter(|l| l["target"] == "security" && l["event"] == "ban")
        .count();
    assert!(ban_events >= 1, "the ban is a security event");
    // ...and an entry on the Redis Stream a notification service consumes.
    let mut conn = redis.connection().await;
    let stream: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
        .arg(format!("{{{}}}:events", redis.prefix))
        .arg("-")
        .arg("+")
        .query_async(&mut conn)
        .await
        .unwrap();
    let kinds: Vec<&str> = stream
        .iter()
        .flat_map(|(_, fields)| fields.iter())
        .filter(|(name, _)| name == "kind")
        .map(|(_, kind)| kind.as_str())
        .collect();
    assert_eq!(kinds, ["ban"], "{stream:?}");
    let ttl: i64 = redis::cmd("PTTL")
        .arg(format!("{{{}}}:events", redis.prefix))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(ttl > 0, "the stream has a TTL too");
    // Another address is unaffected.
    let other = post(
        replicas.url(2, "/v1/login"),
        json!({ "username": "employee0", "password": "Winter2026!" }),
        "198.51.100.200",
    )
    .await;
    assert_eq!(other.status(), 401);
    redis.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_surge_of_failures_across_replicas_tightens_every_address_and_is_reported() {
    let (replicas, redis, _database) = three_replicas(&[
        (
            "PORTCULLIS__POLICY__GLOBAL__ATTACK__MIN_ATTEMPTS",
            "10".to_owned(),
        ),
        ("PORTCULLIS__POLICY__IP__ATTEMPTS__BURST", "8".to_owned()),
        (
            "PORTCULLIS__POLICY__IP__ATTEMPTS__INTERVAL_MS",
            "3600000".to_owned(),
        ),
    ])
    .await;
    // Ten failures from ten addresses, spread over the replicas: 100% of attempts failed.
    // (The signal is shared off the attempt path, a flush or two behind: docs/defences.md.)
    for i in 0..10 {
        let guess = json!({ "username": format!("victim{i}"), "password": "wrong" });
        post(
            replicas.url(i % 3, "/v1/login"),
            guess,
            &format!("198.51.{i}.1"),
        )
        .await;
    }
    // Each replica shares its counts every 250 ms and reads the service's back: wait until
    // every replica tightens a probing address (each probe a fresh address, failing too).
    let mut probe = 0;
    for i in 0..3 {
        wait_until(Duration::from_secs(10), "the shared signal", || {
            probe += 1;
            let url = replicas.url(i, "/v1/login");
            let from = format!("203.0.114.{probe}");
            async move {
                let mut last = 0;
                for n in 0..3 {
                    let guess = json!({ "username": format!("probe{n}"), "password": "wrong" });
                    last = post(url.clone(), guess, &from).await.status().as_u16();
                }
                last == 429
            }
        })
        .await;
    }
    // A fresh address now gets a quarter of its burst of 8 (and a quarter of the refill).
    let statuses = {
        let mut statuses = Vec::new();
        for i in 0..3 {
            let guess = json!({ "username": format!("fresh{i}"), "password": "wrong" });
            let response = post(replicas.url(i, "/v1/login"), guess, "203.0.113.99").await;
            statuses.push(response.status().as_u16());
        }
        statuses
    };
    assert_eq!(statuses, [401, 401, 429]);
    // Replica 1 admitted the last attempt that got through: it reports the attack.
    let metrics = reqwest::get(replicas.url(1, "/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("portcullis_under_attack 1"), "{metrics}");
    // ...and which detector's trip is in force (one of them, read as of the scrape).
    let tripped: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("portcullis_attack_tripped{") && l.ends_with(" 1"))
        .collect();
    assert_eq!(tripped.len(), 1, "{metrics}");
    redis.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_owner_locked_out_by_an_attacker_across_replicas_still_logs_in_from_a_trusted_device() {
    let (replicas, redis, _database) = three_replicas(&[]).await;
    let credentials = json!({ "username": "owner", "password": PASSWORD });
    register(&replicas, &credentials).await;
    let first = post(
        replicas.url(0, "/v1/login"),
        credentials.clone(),
        "192.0.2.1",
    )
    .await;
    let cookie = device_cookie(&first).unwrap();

    wrong_guesses(&replicas, "owner", 6, |i| i % 3).await;
    let untrusted = post(
        replicas.url(1, "/v1/login"),
        credentials.clone(),
        "192.0.2.1",
    )
    .await;
    assert_eq!(untrusted.status(), 429, "untrusted clients stay locked out");
    let trusted = reqwest::Client::new()
        .post(replicas.url(2, "/v1/login"))
        .header("x-forwarded-for", "192.0.2.1")
        .header("cookie", cookie)
        .json(&credentials)
        .send()
        .await
        .unwrap();
    assert_eq!(
        trusted.status(),
        200,
        "the owner's device cookie works on every replica"
    );
    redis.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_session_from_one_replica_is_valid_on_all_and_logout_on_one_revokes_it_everywhere() {
    let (replicas, redis, _database) = three_replicas(&[]).await;
    let credentials = json!({ "username": "alice", "password": PASSWORD });
    register(&replicas, &credentials).await;
    let login: Value = post(replicas.url(1, "/v1/login"), credentials, "192.0.2.1")
        .await
        .json()
        .await
        .unwrap();
    let token = login["token"].as_str().unwrap().to_owned();
    let client = reqwest::Client::new();
    let session_on = |i: usize| {
        client
            .get(replicas.url(i, "/v1/session"))
            .bearer_auth(&token)
            .send()
    };
    for i in 0..3 {
        assert_eq!(session_on(i).await.unwrap().status(), 200, "replica {i}");
    }
    let logout = client
        .post(replicas.url(2, "/v1/logout"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(logout.status(), 204);
    // The replica that ended it refuses at once; the others within a second, when they hear
    // of the ending (each has the lookup cached).
    assert_eq!(session_on(2).await.unwrap().status(), 401);
    let ended = Instant::now();
    for i in 0..2 {
        within_a_second(ended, 401, || async { session_on(i).await.unwrap() }).await;
    }
    redis.cleanup().await;
}

#[tokio::test]
async fn accounts_live_in_postgresql_with_one_account_per_normalised_name() {
    let database = TestDatabase::create().await;
    let mut settings = test_settings();
    settings.database.url = database.url.clone();
    let app = TestApp::spawn_with(settings).await;
    assert_one_account_per_normalised_name(&app).await;
    assert_eq!(app.login("RACE", PASSWORD).await.status(), 200);
}

#[tokio::test]
async fn the_memory_store_app_also_runs_on_redis_with_an_injected_clock() {
    let redis = TestRedis::start().await;
    let mut settings = test_settings();
    settings.store.redis = Some(portcullis_accounts::settings::RedisSettings {
        url: redis.url.clone(),
        prefix: redis.prefix.clone(),
        timeout_ms: 2_000,
        ..Default::default()
    });
    settings.secrets.hmac_key = Some(HMAC_KEY.into());
    let app = TestApp::spawn_with(settings).await;
    app.register("alice", PASSWORD).await;
    for _ in 0..5 {
        assert_eq!(app.login("alice", "wrong").await.status(), 401);
    }
    assert_eq!(app.login("alice", PASSWORD).await.status(), 429);
    app.clock.advance(60_000);
    assert_eq!(app.login("alice", PASSWORD).await.status(), 200);
    redis.cleanup().await;
}
