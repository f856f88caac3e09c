//! The OpenAPI 3.1 description of the API, built from the handlers' `#[utoipa::path]`
//! annotations as the routes are registered (`utoipa-actix-web`: a path is written once, in the
//! handler's route macro), served at `GET /openapi.json`, with Swagger UI at `/docs/`. The same
//! document tells the fallback which methods a known path answers (405 with `Allow`).
//!
//! Each listener describes what it serves: with an operations listener (`admin.listen`), the
//! admin API and `/metrics` answer only there, so the public listener's document leaves them
//! out and the operations listener's has them (and health) alone. With one listener, its
//! document has everything.

use std::collections::HashMap;

use actix_web::http::header::ContentType;
use actix_web::{HttpRequest, HttpResponse, get, web};
use utoipa::openapi::OpenApi as Document;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::error::{ApiError, Problem};

/// What the generated paths are added to: the document's head and shared parts.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Portcullis",
        description = "A login service that stops credential stuffing. Errors are \
            `application/problem+json` with a stable `code` (docs/api.md has the table).",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    modifiers(&BearerSchemes),
    tags(
        (name = "login", description = "Logging in, challenges, the second step"),
        (name = "accounts", description = "Registration and password change"),
        (name = "sessions", description = "Introspection and logout"),
        (name = "mfa", description = "TOTP second factors"),
        (name = "passkeys", description = "Passkeys (WebAuthn): enrolment, the list, removal"),
        (name = "tokens", description = "Access tokens' public keys"),
        (name = "operations", description = "Health, readiness, metrics"),
        (name = "admin", description = "The admin API (on the operations listener, with the admin token)"),
    ),
)]
pub struct ApiDoc;

/// The two bearer schemes: a session token, and the admin token.
struct BearerSchemes;

impl Modify for BearerSchemes {
    fn modify(&self, document: &mut Document) {
        let components = document.components.get_or_insert_with(Default::default);
        for (name, about) in [
            ("session", "The opaque token of a login answer"),
            ("admin", "`admin.token`"),
        ] {
            components.add_security_scheme(
                name,
                SecurityScheme::Http(
                    HttpBuilder::new()
                        .scheme(HttpAuthScheme::Bearer)
                        .description(Some(about))
                        .build(),
                ),
            );
        }
    }
}

/// The methods each described path answers, for requests no route took.
pub struct KnownPaths {
    allow: HashMap<String, String>,
}

impl KnownPaths {
    /// The paths of `document` and their methods (`GET, POST`).
    pub fn of(document: &Document) -> Self {
        let allow = document
            .paths
            .paths
            .iter()
            .map(|(path, item)| {
                let methods: Vec<&str> = [
                    ("GET", item.get.is_some()),
                    ("PUT", item.put.is_some()),
                    ("POST", item.post.is_some()),
                    ("PATCH", item.patch.is_some()),
                    ("DELETE", item.delete.is_some()),
                ]
                .into_iter()
                .filter_map(|(method, present)| present.then_some(method))
                .collect();
                (path.clone(), methods.join(", "))
            })
            .collect();
        Self { allow }
    }
}

/// The `/openapi.json` of each listener, serialised once.
pub struct Documents {
    public: String,
    /// The operations listener's, when there is one.
    operations: Option<String>,
}

impl Documents {
    /// The documents of `full` (every described operation), split when `separate_operations`
    /// (an operations listener is configured).
    pub fn new(full: &Document, separate_operations: bool) -> Self {
        let keep = |only_operations: bool| {
            let mut document = full.clone();
            document.paths.paths.retain(|path, _| {
                let health = path == "/healthz" || path == "/readyz";
                health || is_operations_path(path) == only_operations
            });
            serde_json::to_string(&document).unwrap_or_default()
        };
        if separate_operations {
            Self {
                public: keep(false),
                operations: Some(keep(true)),
            }
        } else {
            Self {
                public: serde_json::to_string(full).unwrap_or_default(),
                operations: None,
            }
        }
    }
}

/// Whether `path` answers on the operations listener only, when there is one.
fn is_operations_path(path: &str) -> bool {
    path.starts_with("/admin/") || path == "/metrics"
}

/// `GET /openapi.json`: the document of the listener asked.
#[get("/openapi.json")]
pub async fn serve_document(
    request: HttpRequest,
    http: web::Data<crate::routes::HttpState>,
    documents: web::Data<Documents>,
) -> HttpResponse {
    let chosen = match &documents.operations {
        Some(operations) if http.is_ops_request(&request) => operations,
        _ => &documents.public,
    };
    HttpResponse::Ok()
        .content_type(ContentType::json())
        .body(chosen.clone())
}

/// What a request no route took gets: 405 with `Allow` on a described path, 404 elsewhere.
pub async fn fallback(
    request: HttpRequest,
    known: web::Data<KnownPaths>,
) -> Result<String, ApiError> {
    Err(match known.allow.get(request.path()) {
        Some(allow) => ApiError::MethodNotAllowed {
            allow: allow.clone(),
        },
        None => ApiError::NotFound,
    })
}

// Answers several operations share, described once (`responses(..., Throttled)`). The types are
// never built: they only carry the description.

/// The JSON body's own refusals.
#[derive(utoipa::IntoResponses)]
pub enum BodyRefused {
    /// `payload_too_large`: over `server.max_body_bytes`.
    #[response(status = 413, content_type = "application/problem+json")]
    TooLarge(Problem<'static>),
    /// `unsupported_media_type`: not `application/json`.
    #[response(status = 415, content_type = "application/problem+json")]
    NotJson(Problem<'static>),
}

/// `throttled`: refused by a rate limit, lockout or ban.
#[derive(utoipa::IntoResponses)]
#[response(
    status = 429,
    content_type = "application/problem+json",
    headers(("Retry-After" = u64, description = "Seconds until an attempt would be admitted"))
)]
pub struct Throttled(pub Problem<'static>);

/// `mfa_throttled`: too many wrong codes for the account, or for this login.
#[derive(utoipa::IntoResponses)]
#[response(
    status = 429,
    content_type = "application/problem+json",
    headers(("Retry-After" = u64, description = "Seconds until a code is tried again"))
)]
pub struct MfaThrottled(pub Problem<'static>);

/// `unavailable`: the database, the attempt store or the hashing queue cannot answer now.
#[derive(utoipa::IntoResponses)]
#[response(
    status = 503,
    content_type = "application/problem+json",
    headers(("Retry-After" = u64, description = "Seconds to wait"))
)]
pub struct Unavailable(pub Problem<'static>);

/// `unauthenticated`: no live session token.
#[derive(utoipa::IntoResponses)]
#[response(
    status = 401,
    content_type = "application/problem+json",
    headers(("WWW-Authenticate" = String, description = "`Bearer`"))
)]
pub struct NoSession(pub Problem<'static>);

/// `passkeys_off`: the service has no relying party (it is reached at an address; set
/// `webauthn.rp_id`).
#[derive(utoipa::IntoResponses)]
#[response(status = 404, content_type = "application/problem+json")]
pub struct PasskeysOff(pub Problem<'static>);

/// What every admin call may answer besides its own (with [`Throttled`] for wrong tokens and
/// [`Unavailable`]).
#[derive(utoipa::IntoResponses)]
pub enum AdminRefused {
    /// `unauthenticated`: a missing or wrong admin token (counted against the source's limits).
    #[response(status = 401, content_type = "application/problem+json")]
    Unauthenticated(Problem<'static>),
    /// `not_found`: the admin API is off (`admin.token` unset) or asked off the operations
    /// listener; for `DELETE /admin/v1/allowlist`, also a network that was not listed.
    #[response(status = 404, content_type = "application/problem+json")]
    Off(Problem<'static>),
}
