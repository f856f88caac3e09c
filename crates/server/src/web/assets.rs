//! The pages' static files, compiled into the binary: the vendored ALTCHA widget (see
//! `crates/server/static/altcha/README.md`), the stylesheet, the passkey script and the console's script.

use actix_web::http::header;
use actix_web::{HttpResponse, get, web};

use crate::error::ApiError;

/// A file the binary serves.
struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

const ASSETS: [Asset; 4] = [
    Asset {
        path: "altcha/altcha.min.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../../static/altcha/altcha.min.js"),
    },
    Asset {
        path: "portcullis.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("../../static/portcullis.css"),
    },
    Asset {
        path: "passkeys.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../../static/passkeys.js"),
    },
    Asset {
        path: "console.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../../static/console.js"),
    },
];

/// `GET /static/{path}`: one of the [`ASSETS`], cached for an hour (they change with the
/// binary).
#[get("/static/{path:.+}")]
pub async fn asset(path: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let asset = ASSETS
        .iter()
        .find(|a| a.path == path.as_str())
        .ok_or(ApiError::NotFound)?;
    Ok(HttpResponse::Ok()
        .content_type(asset.content_type)
        .insert_header((header::CACHE_CONTROL, "public, max-age=3600"))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .body(asset.body))
}

#[cfg(test)]
mod tests {
    use sha2::{Digest, Sha256};

    /// The vendored widget is the published file its README names, byte for byte.
    #[test]
    fn the_altcha_widget_is_the_published_3_2_2_build() {
        let widget = &super::ASSETS[0];
        assert_eq!(widget.path, "altcha/altcha.min.js");
        assert_eq!(
            hex::encode(Sha256::digest(widget.body)),
            "71b2d6829de9893e5d6bfc806d343b2c7dead04b2157ff2a5ba3372938c3a6be"
        );
    }
}
