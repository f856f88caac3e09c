//! The OpenAPI 3.1 description of the API, built from the handlers' `#[utoipa::path]`
//! annotations as the routes are registered (`utoipa-actix-web`: a path is written once, in the
//! handler's route macro), served at `GET /openapi.json`, with Swagger UI at `/docs/`. The same
//! document tells the fallback which methods a known path answers (405 with `Allow`).

use std::collections::HashMap;

use actix_web::{HttpRequest, web};
use utoipa::openapi::OpenApi as Document;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

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

/// What a request no route took gets: 405 with `Allow` on a described path, 404 elsewhere.
pub async fn fallback(
    request: HttpRequest,
    known: web::Data<KnownPaths>,
) -> Result<String, crate::error::ApiError> {
    Err(match known.allow.get(request.path()) {
        Some(allow) => crate::error::ApiError::MethodNotAllowed {
            allow: allow.clone(),
        },
        None => crate::error::ApiError::NotFound,
    })
}
