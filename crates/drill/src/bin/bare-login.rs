//! `bare-login`: the baseline of the HTTP benchmark. The login endpoint's framework, JSON body
//! and problem+json 401, with nothing behind them: no guard, store, database or hash; and a
//! forward-authentication endpoint that passes any `Authorization` header without looking at
//! it. What Portcullis adds to a request is measured against these.

use actix_web::http::header::AUTHORIZATION;
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use serde::Deserialize;

#[derive(Deserialize)]
struct Credentials {
    username: String,
    password: String,
}

async fn login(body: web::Json<Credentials>) -> HttpResponse {
    let refused = body.username.is_empty() || body.password.is_empty();
    HttpResponse::Unauthorized()
        .content_type("application/problem+json")
        .json(serde_json::json!({
            "type": "about:blank",
            "title": if refused { "Bad request" } else { "Invalid credentials" },
            "status": 401,
        }))
}

async fn forward_auth(request: HttpRequest) -> HttpResponse {
    if request.headers().contains_key(AUTHORIZATION) {
        HttpResponse::NoContent()
            .insert_header(("x-portcullis-subject", "bare"))
            .finish()
    } else {
        HttpResponse::Unauthorized().finish()
    }
}

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let address = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8081".to_owned());
    HttpServer::new(|| {
        App::new()
            .route("/v1/login", web::post().to(login))
            .route("/v1/auth", web::get().to(forward_auth))
    })
    .bind(address)?
    .run()
    .await
}
