//! Small assertions shared by the API tests.

use reqwest::Response;
use serde_json::Value;

/// Asserts a problem+json answer with the given status; returns its body.
pub async fn assert_problem(response: Response, status: u16) -> Value {
    assert_eq!(response.status(), status, "unexpected status");
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert_eq!(content_type, "application/problem+json");
    let body: Value = response.json().await.expect("problem body is JSON");
    assert_eq!(body["status"], status);
    assert!(body["title"].is_string(), "{body}");
    body
}

/// The `Retry-After` header in seconds.
pub fn retry_after(response: &Response) -> u64 {
    response
        .headers()
        .get("retry-after")
        .expect("Retry-After header")
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}
