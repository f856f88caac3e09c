//! A real application on port 0, with a clock the test moves.
//!
//! Each [`TestApp`] owns its state: an in-memory SQLite database and a fresh attempt store
//! (or, with [`TestApp::spawn_with`], whatever the settings name), so tests never share counters
//! or accounts. Argon2 runs with cheap parameters to keep suites fast; the hashing pool and its
//! bounds are the production ones.

use std::sync::Arc;
use tracing_appender::non_blocking::WorkerGuard;

use actix_web::dev::ServerHandle;
use portcullis_server::{Application, Settings, telemetry};
use portcullis_store::ManualClock;
use serde_json::{Value, json};

/// A password every fixture account uses unless a test picks another.
pub const PASSWORD: &str = "correct horse battery staple";

/// Settings for a test application: port 0, in-memory SQLite, cheap Argon2, one worker, and no
/// challenge for a network new to an account (most tests log in from addresses of their own
/// choosing; the familiar networks have tests of their own).
pub fn test_settings() -> Settings {
    let mut settings = Settings::default();
    settings.server.port = 0;
    settings.server.workers = 1;
    settings.server.shutdown_timeout_secs = 1;
    settings.database.url = "sqlite::memory:".to_owned();
    settings.argon2.memory_kib = 256;
    settings.argon2.iterations = 1;
    settings.policy.challenge.unfamiliar_networks = false;
    settings
}

/// `test_settings`' network rule as a spawned binary's environment: off, for tests that log in
/// from addresses of their choosing (the familiar networks have tests of their own).
pub const NETWORKS_OFF: (&str, &str) = (
    "PORTCULLIS__POLICY__CHALLENGE__UNFAMILIAR_NETWORKS",
    "false",
);

/// A running application and a client for it.
pub struct TestApp {
    /// `http://127.0.0.1:PORT`.
    pub address: String,
    /// A client without cookies or redirects.
    pub client: reqwest::Client,
    /// The clock the application's store reads.
    pub clock: Arc<ManualClock>,
    handle: ServerHandle,
}

impl TestApp {
    /// Starts an application with [`test_settings`].
    pub async fn spawn() -> Self {
        Self::spawn_with(test_settings()).await
    }

    /// Starts an application with the given settings (port forced to 0).
    pub async fn spawn_with(settings: Settings) -> Self {
        Self::start(settings).await.0
    }

    /// Starts an application with an admin listener (`admin.listen`); returns its port too.
    pub async fn spawn_with_ops(settings: Settings) -> (Self, u16) {
        let (app, ops) = Self::start(settings).await;
        let ops = ops.unwrap_or_else(|| panic!("admin.listen is not set"));
        (app, ops)
    }

    async fn start(mut settings: Settings) -> (Self, Option<u16>) {
        let level = std::env::var("TEST_LOG").unwrap_or_else(|_| "off".to_owned());
        // The first application installs the log writer; it lives as long as the test binary.
        static LOG_WRITER: std::sync::OnceLock<Option<WorkerGuard>> = std::sync::OnceLock::new();
        LOG_WRITER.get_or_init(|| telemetry::init(settings.log_format, &level));
        settings.server.port = 0;
        let clock = Arc::new(ManualClock::default());
        let app = match Application::build_with_clock(settings, clock.clone()).await {
            Ok(app) => app,
            Err(error) => panic!("test application failed to start: {error:#}"),
        };
        let address = format!("http://127.0.0.1:{}", app.port());
        let ops_port = app.ops_port();
        let handle = app.handle();
        tokio::spawn(app.run_until_stopped());
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_else(|e| panic!("building the HTTP client: {e}"));
        let app = Self {
            address,
            client,
            clock,
            handle,
        };
        (app, ops_port)
    }

    /// The full URL of a path.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    /// `POST path` with a JSON body, optionally with an `X-Forwarded-For` header.
    pub async fn post_json(
        &self,
        path: &str,
        body: &Value,
        forwarded_for: Option<&str>,
    ) -> reqwest::Response {
        let mut request = self.client.post(self.url(path)).json(body);
        if let Some(xff) = forwarded_for {
            request = request.header("x-forwarded-for", xff);
        }
        request
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {path}: {e}"))
    }

    /// Registers an account.
    pub async fn register(&self, username: &str, password: &str) -> reqwest::Response {
        let body = json!({ "username": username, "password": password });
        self.post_json("/v1/users", &body, None).await
    }

    /// Logs in from the test's own address.
    pub async fn login(&self, username: &str, password: &str) -> reqwest::Response {
        self.login_from(None, username, password).await
    }

    /// Logs in with an `X-Forwarded-For` header.
    pub async fn login_from(
        &self,
        forwarded_for: Option<&str>,
        username: &str,
        password: &str,
    ) -> reqwest::Response {
        let body = json!({ "username": username, "password": password });
        self.post_json("/v1/login", &body, forwarded_for).await
    }

    /// Logs in and returns the session token, failing the test otherwise.
    pub async fn token(&self, username: &str, password: &str) -> String {
        let response = self.login(username, password).await;
        assert_eq!(response.status(), 200, "login of {username} failed");
        let body: Value = response
            .json()
            .await
            .unwrap_or_else(|e| panic!("login body: {e}"));
        body["token"]
            .as_str()
            .unwrap_or_else(|| panic!("no token in {body}"))
            .to_owned()
    }

    /// `GET /v1/session` with a bearer token.
    pub async fn session(&self, token: &str) -> reqwest::Response {
        self.client
            .get(self.url("/v1/session"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET /v1/session: {e}"))
    }

    /// A request with a bearer token and a JSON body (`POST /v1/mfa/totp`, `POST
    /// /v1/password`, ...).
    pub async fn with_bearer(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        body: &Value,
    ) -> reqwest::Response {
        self.client
            .request(method.clone(), self.url(path))
            .bearer_auth(token)
            .json(body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    /// `POST /v1/logout` with a bearer token.
    pub async fn logout(&self, token: &str) -> reqwest::Response {
        self.client
            .post(self.url("/v1/logout"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST /v1/logout: {e}"))
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        // Stopping returns a future; the server task winds down with the test's runtime.
        drop(self.handle.stop(false));
    }
}
