//! `bare-login`: the baseline of the HTTP benchmark. The login endpoint's framework, JSON body
//! and problem+json 401, with nothing behind them: no guard, store, database or hash. What
//! Portcullis adds to a request is measured against this.

use actix_web::{App, HttpResponse, HttpServer, web};
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

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let address = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8081".to_owned());
    HttpServer::new(|| App::new().route("/v1/login", web::post().to(login)))
        .bind(address)?
        .run()
        .await
}
