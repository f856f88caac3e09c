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
async fn accounts_made_before_skeletons_keep_working_and_still_block_their_look_alikes() {
    use portcullis_accounts::accounts::{Accounts, CreateError};
    use portcullis_core::Username;
    let dir = tempfile::tempdir().unwrap();
    let mut settings = portcullis_testkit::test_settings().database;
    settings.url = format!("sqlite://{}/accounts.db", dir.path().display());
    let accounts = Accounts::connect(&settings).await.unwrap();
    accounts.migrate().await.unwrap();
    // A row as an older release wrote it: no skeleton.
    let admin = Username::parse("admin").unwrap();
    accounts.create(&admin, "hash", None).await.unwrap();
    sqlx::query("UPDATE accounts SET skeleton = NULL")
        .execute(&accounts.pool())
        .await
        .unwrap();

    accounts.fill_skeletons().await.unwrap();
    let look_alike = Username::parse("\u{430}dmin").unwrap();
    let refused = accounts.create(&look_alike, "hash", None).await;
    assert!(matches!(refused, Err(CreateError::Taken)), "{refused:?}");
    assert!(
        accounts.find(&admin).await.unwrap().is_some(),
        "the old account still logs in"
    );
}
