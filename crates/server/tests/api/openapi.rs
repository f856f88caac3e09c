//! The OpenAPI 3.1 document at `/openapi.json`: valid for an independent validator (PyPI
//! `openapi-spec-validator`), describing every route with its problem answers and headers, and
//! Swagger UI at `/docs/`.

use portcullis_testkit::TestApp;
use serde_json::Value;

use crate::helpers::interop;

/// The public listener's document.
async fn document(app: &TestApp) -> Value {
    document_at(app, &app.url("/openapi.json")).await
}

/// The document at `url` (a listener's `/openapi.json`).
async fn document_at(app: &TestApp, url: &str) -> Value {
    let response = app.client.get(url).send().await.unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

#[tokio::test]
async fn the_document_is_valid_openapi_3_1() {
    let app = TestApp::spawn().await;
    let document = document(&app).await;
    assert_eq!(document["openapi"], "3.1.0");
    let verdict = interop("openapi_reference.py", &["validate"], &document.to_string());
    assert_eq!(verdict, "valid");
}

#[tokio::test]
async fn every_route_is_described_with_its_problems_and_headers() {
    let app = TestApp::spawn().await;
    let document = document(&app).await;
    let paths = document["paths"].as_object().unwrap();
    for (path, method) in [
        ("/v1/users", "post"),
        ("/v1/users/passkey", "post"),
        ("/v1/login", "post"),
        ("/v1/login/mfa", "post"),
        ("/v1/challenge", "get"),
        ("/v1/password", "post"),
        ("/v1/password", "delete"),
        ("/v1/password/reset", "post"),
        ("/v1/password/reset/confirm", "post"),
        ("/v1/email", "post"),
        ("/v1/email/verify", "post"),
        ("/v1/account/not-me", "post"),
        ("/v1/account/unlock", "post"),
        ("/v1/mfa/totp", "post"),
        ("/v1/mfa/totp", "delete"),
        ("/v1/mfa/totp/confirm", "post"),
        ("/v1/login/passkey/options", "post"),
        ("/v1/login/passkey", "post"),
        ("/v1/passkeys/registration", "post"),
        ("/v1/passkeys", "post"),
        ("/v1/passkeys", "get"),
        ("/v1/passkeys/{id}", "patch"),
        ("/v1/passkeys/{id}", "delete"),
        ("/v1/session", "get"),
        ("/v1/auth", "get"),
        ("/v1/logout", "post"),
        ("/v1/logout/all", "post"),
        ("/.well-known/jwks.json", "get"),
        ("/healthz", "get"),
        ("/readyz", "get"),
        ("/metrics", "get"),
        ("/admin/v1/subjects", "get"),
        ("/admin/v1/unlock", "post"),
        ("/admin/v1/lockouts", "get"),
        ("/admin/v1/outbox", "get"),
        ("/admin/v1/mail/reset", "post"),
        ("/admin/v1/mail/verification", "post"),
        ("/admin/v1/allowlist", "get"),
        ("/admin/v1/allowlist", "put"),
        ("/admin/v1/allowlist", "delete"),
    ] {
        let operation = &paths[path][method];
        let responses = operation["responses"].as_object();
        let responses = responses.unwrap_or_else(|| panic!("{method} {path} is not described"));
        for (status, response) in responses {
            assert!(
                response["description"]
                    .as_str()
                    .is_some_and(|d| !d.is_empty()),
                "{method} {path} {status}"
            );
            // Every error answer is a problem document.
            if status.starts_with('4') || status.starts_with('5') {
                assert!(
                    response["content"]["application/problem+json"].is_object(),
                    "{method} {path} {status}"
                );
            }
            // Every refusal to wait says for how long.
            if status == "429" || status == "503" {
                assert!(
                    response["headers"]["Retry-After"].is_object(),
                    "{method} {path} {status}"
                );
            }
        }
    }
    let login = &paths["/v1/login"]["post"]["responses"];
    assert!(login["200"]["headers"]["Set-Cookie"].is_object());
    for code in ["invalid_credentials", "challenge_required", "mfa_required"] {
        assert!(
            login["401"]["description"].as_str().unwrap().contains(code),
            "{code}"
        );
    }
}

/// With an operations listener, each listener's document describes what answers there: the
/// admin API and metrics only on the operations listener, the rest only on the public one,
/// health on both; each valid on its own.
#[tokio::test]
async fn each_listener_describes_what_it_serves() {
    let mut settings = portcullis_testkit::test_settings();
    settings.admin.listen = Some("127.0.0.1:0".parse().unwrap());
    settings.admin.token = Some("admin-token-for-the-openapi-tests-0123456789".into());
    let (app, ops) = TestApp::spawn_with_ops(settings).await;
    let public = document(&app).await;
    let operations = document_at(&app, &format!("http://127.0.0.1:{ops}/openapi.json")).await;
    let paths = |document: &Value| -> Vec<String> {
        document["paths"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect()
    };
    let (public_paths, operations_paths) = (paths(&public), paths(&operations));
    for path in ["/admin/v1/subjects", "/admin/v1/allowlist", "/metrics"] {
        assert!(
            !public_paths.contains(&path.to_owned()),
            "{path} on the public listener"
        );
        assert!(
            operations_paths.contains(&path.to_owned()),
            "{path} off the operations listener"
        );
    }
    for path in ["/v1/login", "/v1/auth", "/.well-known/jwks.json"] {
        assert!(public_paths.contains(&path.to_owned()), "{path}");
        assert!(!operations_paths.contains(&path.to_owned()), "{path}");
    }
    for path in ["/healthz", "/readyz"] {
        assert!(
            public_paths.contains(&path.to_owned()) && operations_paths.contains(&path.to_owned())
        );
    }
    for document in [&public, &operations] {
        let verdict = interop("openapi_reference.py", &["validate"], &document.to_string());
        assert_eq!(verdict, "valid");
    }
}

#[tokio::test]
async fn swagger_ui_is_served_from_the_binary() {
    let app = TestApp::spawn().await;
    let page = app.client.get(app.url("/docs/")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("swagger-ui"));
    // It reads the listener's own document.
    let initializer = app
        .client
        .get(app.url("/docs/swagger-initializer.js"))
        .send()
        .await
        .unwrap();
    assert!(
        initializer
            .text()
            .await
            .unwrap()
            .contains("\"/openapi.json\"")
    );
    let bare = app.client.get(app.url("/docs")).send().await.unwrap();
    assert_eq!(bare.status(), 308);
    assert_eq!(bare.headers()["location"], "/docs/");
}

#[tokio::test]
async fn a_known_path_with_another_method_is_405_with_allow() {
    let app = TestApp::spawn().await;
    let wrong = app.client.get(app.url("/v1/login")).send().await.unwrap();
    assert_eq!(wrong.status(), 405);
    assert_eq!(wrong.headers()["allow"], "POST");
    let body: Value = wrong.json().await.unwrap();
    assert_eq!(body["code"], "method_not_allowed");
    let several = app
        .client
        .patch(app.url("/admin/v1/allowlist"))
        .send()
        .await
        .unwrap();
    assert_eq!(several.headers()["allow"], "GET, PUT, DELETE");
    let unknown = app.client.get(app.url("/v1/nothing")).send().await.unwrap();
    assert_eq!(unknown.status(), 404);
}
