use portcullis_testkit::{PASSWORD, TestApp};
use serde_json::Value;

use crate::helpers::{assert_one_account_per_normalised_name, assert_problem};

#[tokio::test]
async fn registering_answers_201_with_the_normalised_username() {
    let app = TestApp::spawn().await;
    let response = app.register("  Alice ", PASSWORD).await;
    assert_eq!(response.status(), 201);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["username"], "alice");
    assert_eq!(body["id"].as_str().unwrap().len(), 32);
}

#[tokio::test]
async fn a_variant_of_a_taken_username_is_refused_with_409() {
    let app = TestApp::spawn().await;
    assert_eq!(app.register("admin", PASSWORD).await.status(), 201);
    for variant in ["Admin", "ADMIN ", "ａｄｍｉｎ"] {
        assert_problem(app.register(variant, PASSWORD).await, 409).await;
    }
}

#[tokio::test]
async fn concurrent_registrations_of_one_name_create_exactly_one_account() {
    let app = TestApp::spawn().await;
    assert_one_account_per_normalised_name(&app).await;
}

#[tokio::test]
async fn short_passwords_are_refused_with_400() {
    let app = TestApp::spawn().await;
    let body = assert_problem(app.register("bob", "short").await, 400).await;
    assert!(
        body["detail"].as_str().unwrap().contains("at least 8"),
        "{body}"
    );
}
