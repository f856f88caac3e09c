//! JWT access tokens (`tokens.access.enabled`): issued with every login, checked by PyPI
//! `pyjwt` with the keys it fetches from `/.well-known/jwks.json`, as another service would.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::SigningKey;
use ed25519_dalek::pkcs8::EncodePrivateKey;
use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use portcullis_testkit::{PASSWORD, TestApp, test_settings};
use secrecy::SecretString;
use serde_json::Value;

use crate::helpers::interop;

async fn app_with_tokens() -> TestApp {
    let mut settings = test_settings();
    settings.tokens.access.enabled = true;
    settings.tokens.access.issuer = "https://login.example".to_owned();
    let key = SigningKey::from_bytes(&[42; 32])
        .to_pkcs8_pem(LineEnding::LF)
        .unwrap();
    settings.secrets.signing_key = Some(SecretString::from(key.to_string()));
    TestApp::spawn_with(settings).await
}

/// The claims pyjwt verified, or `{"error"}`.
fn pyjwt_verify(app: &TestApp, token: &str) -> Value {
    let jwks = app.url("/.well-known/jwks.json");
    let out = interop(
        "jwt_reference.py",
        &["verify", &jwks, "https://login.example"],
        token,
    );
    serde_json::from_str(&out).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn pyjwt_verifies_the_access_token_with_the_published_keys() {
    let app = app_with_tokens().await;
    app.register("jwt-user", PASSWORD).await;
    let login: Value = app.login("jwt-user", PASSWORD).await.json().await.unwrap();
    let access = login["access_token"].as_str().expect("an access token");
    assert_eq!(login["access_token_expires_in"], 300);
    let session: Value = app
        .session(login["token"].as_str().unwrap())
        .await
        .json()
        .await
        .unwrap();

    let claims = pyjwt_verify(&app, access);
    assert_eq!(claims["sub"], session["subject"], "{claims}");
    assert_eq!(claims["iss"], "https://login.example");
    assert_eq!(
        claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(),
        300
    );

    // Claims rewritten to another account keep the signature of the first: refused.
    let parts: Vec<&str> = access.split('.').collect();
    let mut forged: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    forged["sub"] = "someone-else".into();
    let forged = [
        parts[0],
        &URL_SAFE_NO_PAD.encode(forged.to_string()),
        parts[2],
    ]
    .join(".");
    let refused = pyjwt_verify(&app, &forged);
    assert!(
        refused["error"].as_str().unwrap().contains("Signature"),
        "{refused}"
    );

    // The key set is cacheable, unlike every other answer.
    let jwks = app
        .client
        .get(app.url("/.well-known/jwks.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(jwks.headers()["cache-control"], "public, max-age=300");
}

#[tokio::test]
async fn without_tokens_enabled_there_is_no_access_token_and_no_key_set() {
    let app = TestApp::spawn().await;
    app.register("plain-user", PASSWORD).await;
    let login: Value = app
        .login("plain-user", PASSWORD)
        .await
        .json()
        .await
        .unwrap();
    assert!(login.get("access_token").is_none(), "{login}");
    let jwks = app
        .client
        .get(app.url("/.well-known/jwks.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(jwks.status(), 404);
}
