use portcullis_testkit::TestApp;

#[tokio::test]
async fn healthz_and_readyz_answer_ok() {
    let app = TestApp::spawn().await;
    for path in ["/healthz", "/readyz"] {
        let response = app.client.get(app.url(path)).send().await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
    }
}

#[tokio::test]
async fn every_response_carries_a_fresh_request_id() {
    let app = TestApp::spawn().await;
    let mut ids = Vec::new();
    for path in ["/healthz", "/no-such-route"] {
        let response = app.client.get(app.url(path)).send().await.unwrap();
        let id = response.headers()["x-request-id"]
            .to_str()
            .unwrap()
            .to_owned();
        assert_eq!(id.len(), 24, "{id}");
        ids.push(id);
    }
    assert_ne!(ids[0], ids[1]);
}

#[tokio::test]
async fn metrics_count_decisions_logins_hashing_and_store_calls() {
    let app = TestApp::spawn().await;
    for _ in 0..6 {
        app.login("metered", "wrong").await;
    }
    let response = app.client.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    for needle in [
        "portcullis_decisions_total{outcome=\"allowed\"}",
        "portcullis_decisions_total{outcome=\"denied\",reason=\"locked_out\",dimension=\"username\"}",
        "portcullis_logins_total{outcome=\"failure\"}",
        "portcullis_hash_wait_seconds_bucket",
        "portcullis_hash_in_flight",
        "portcullis_store_call_seconds_bucket{op=\"attempt\"",
    ] {
        assert!(text.contains(needle), "{needle} missing from:\n{text}");
    }
}
