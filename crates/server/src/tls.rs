//! HTTPS on the public listener (`server.tls`): rustls with the ring provider, TLS 1.2 and
//! 1.3, the certificate chain and key read from PEM files at start-up. A file that is missing,
//! empty or not PEM, or a key that does not match the certificate, stops start-up naming the
//! setting. With TLS on, every answer carries `Strict-Transport-Security` (see
//! [`crate::request_span`]).

use std::sync::Arc;

use anyhow::Context;
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::settings::TlsSettings;

/// The `Strict-Transport-Security` value: a year, as browsers' preload lists expect.
pub const HSTS: &str = "max-age=31536000";

/// The rustls configuration `server.tls` describes.
pub fn server_config(settings: &TlsSettings) -> anyhow::Result<ServerConfig> {
    let cert = settings.cert.display();
    let chain = CertificateDer::pem_file_iter(&settings.cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| {
            anyhow::anyhow!("server.tls.cert: cannot read {cert} as PEM certificates: {e}")
        })?;
    anyhow::ensure!(
        !chain.is_empty(),
        "server.tls.cert: {cert} holds no certificate"
    );
    let key = PrivateKeyDer::from_pem_file(&settings.key).map_err(|e| {
        anyhow::anyhow!(
            "server.tls.key: cannot read {} as a PEM private key: {e}",
            settings.key.display()
        )
    })?;
    ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .context("server.tls: no TLS version available")?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| anyhow::anyhow!("server.tls: the key does not fit the certificate: {e}"))
}
