use portcullis_testkit::{PASSWORD, TestApp};
use serde_json::Value;

use crate::helpers::assert_problem;

#[tokio::test]
async fn a_session_is_introspected_then_revoked_by_logout() {
    let app = TestApp::spawn().await;
    let registered: Value = app.register("alice", PASSWORD).await.json().await.unwrap();
    let token = app.token("alice", PASSWORD).await;

    let session = app.session(&token).await;
    assert_eq!(session.status(), 200);
    let body: Value = session.json().await.unwrap();
    assert_eq!(body["subject"], registered["id"]);
    assert_eq!(body["active"], true);
    assert!(body["expires_at"].is_string());

    assert_eq!(app.logout(&token).await.status(), 204);
    assert_problem(app.session(&token).await, 401).await;
    assert_problem(app.logout(&token).await, 401).await;
}

#[tokio::test]
async fn a_session_expires_after_its_ttl() {
    let app = TestApp::spawn().await;
    app.register("alice", PASSWORD).await;
    let token = app.token("alice", PASSWORD).await;
    app.clock.advance(12 * 3_600_000 - 1);
    assert_eq!(app.session(&token).await.status(), 200);
    app.clock.advance(1);
    assert_eq!(app.session(&token).await.status(), 401);
}

#[tokio::test]
async fn missing_or_malformed_tokens_get_401_with_a_bearer_challenge() {
    let app = TestApp::spawn().await;
    let forged = "A".repeat(43);
    for auth in [
        None,
        Some("Bearer nope"),
        Some("Basic Zm9vOmJhcg=="),
        Some(forged.as_str()),
    ] {
        let mut request = app.client.get(app.url("/v1/session"));
        if let Some(auth) = auth {
            request = request.header("authorization", auth);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.headers()["www-authenticate"], "Bearer");
        assert_problem(response, 401).await;
    }
}
