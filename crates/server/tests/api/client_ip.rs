//! Which address attempts are counted against, with and without a trusted proxy.

use portcullis_core::gcra::Gcra;
use portcullis_server::Settings;
use portcullis_testkit::{TestApp, test_settings};

/// Settings where an address may make 3 attempts and no more (for a long while).
fn three_attempts_per_ip() -> Settings {
    let mut settings = test_settings();
    settings.policy.ip.attempts = Some(Gcra {
        burst: 3,
        interval_ms: 3_600_000,
    });
    settings
}

async fn statuses(app: &TestApp, forwarded: &[&str]) -> Vec<u16> {
    let mut statuses = Vec::new();
    for (i, xff) in forwarded.iter().enumerate() {
        let response = app
            .login_from(Some(xff), &format!("user{i}"), "guess")
            .await;
        statuses.push(response.status().as_u16());
    }
    statuses
}

#[tokio::test]
async fn a_spoofed_forwarded_for_from_an_untrusted_peer_is_ignored() {
    let app = TestApp::spawn_with(three_attempts_per_ip()).await;
    let spoofed = ["1.1.1.1", "2.2.2.2", "3.3.3.3", "4.4.4.4"];
    assert_eq!(statuses(&app, &spoofed).await, [401, 401, 401, 429]);
}

#[tokio::test]
async fn behind_a_trusted_proxy_each_forwarded_client_is_counted_apart() {
    let mut settings = three_attempts_per_ip();
    settings.server.trusted_proxies = vec!["127.0.0.0/8".parse().unwrap()];
    let app = TestApp::spawn_with(settings).await;
    let clients = [
        "198.51.100.1",
        "198.51.100.2",
        "198.51.100.3",
        "198.51.100.4",
    ];
    assert_eq!(statuses(&app, &clients).await, [401, 401, 401, 401]);
}

#[tokio::test]
async fn the_rightmost_untrusted_entry_is_the_client_not_the_leftmost() {
    let mut settings = three_attempts_per_ip();
    settings.server.trusted_proxies = vec!["127.0.0.0/8".parse().unwrap()];
    let app = TestApp::spawn_with(settings).await;
    // The attacker varies what it writes on the left; the proxy appends the real address.
    let forwarded = [
        "9.9.9.1, 203.0.113.7",
        "9.9.9.2, 203.0.113.7",
        "9.9.9.3, 203.0.113.7",
        "9.9.9.4, 203.0.113.7",
    ];
    assert_eq!(statuses(&app, &forwarded).await, [401, 401, 401, 429]);
}
