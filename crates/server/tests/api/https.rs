//! HTTPS on the binary's own listener (`server.tls`), talked to by curl with the certificate
//! authority `scripts/dev-cert.sh` makes.

use std::path::{Path, PathBuf};
use std::process::Command;

use portcullis_server::Application;
use portcullis_server::settings::TlsSettings;
use portcullis_testkit::{TestApp, test_settings};

/// A CA and a localhost certificate in a temp dir, made by the repository's script.
pub(crate) fn dev_certs() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/dev-cert.sh");
    let status = Command::new("bash")
        .arg(script)
        .arg(dir.path())
        .stdout(std::process::Stdio::null())
        .status()
        .expect("bash scripts/dev-cert.sh (needs openssl)");
    assert!(status.success());
    let path = dir.path().to_owned();
    (dir, path)
}

/// `curl` against `url`, trusting only `ca`: the status line and headers, or curl's error.
pub(crate) fn curl(url: &str, ca: &Path) -> (bool, String) {
    let output = Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "5",
            "-D",
            "-",
            "-o",
            "/dev/null",
            "--cacert",
        ])
        .arg(ca)
        .arg(url)
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    (output.status.success(), text.to_ascii_lowercase())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_binary_serves_https_with_hsts_to_a_client_trusting_the_dev_ca() {
    let (_dir, certs) = dev_certs();
    let mut settings = test_settings();
    settings.server.tls = Some(TlsSettings {
        cert: certs.join("cert.pem"),
        key: certs.join("key.pem"),
    });
    let app = TestApp::spawn_with(settings).await;
    let https = app.address.replace("http://", "https://");

    let ca = certs.join("ca.pem");
    let (ok, answer) = tokio::task::spawn_blocking({
        let (url, ca) = (format!("{https}/healthz"), ca.clone());
        move || curl(&url, &ca)
    })
    .await
    .unwrap();
    assert!(ok, "{answer}");
    assert!(answer.starts_with("http/1.1 200"), "{answer}");
    assert!(
        answer.contains("strict-transport-security: max-age=31536000"),
        "{answer}"
    );

    // Plain HTTP on the TLS port gets no answer from the service.
    let plain = app.client.get(app.url("/healthz")).send().await;
    assert!(plain.is_err() || !plain.unwrap().status().is_success());
}

#[tokio::test]
async fn an_unreadable_certificate_or_key_stops_start_up_naming_the_setting() {
    let (_dir, certs) = dev_certs();
    let cases = [
        (
            certs.join("missing.pem"),
            certs.join("key.pem"),
            "server.tls.cert",
        ),
        (
            certs.join("cert.pem"),
            certs.join("missing.pem"),
            "server.tls.key",
        ),
        // The CA's key does not fit the server's certificate.
        (certs.join("cert.pem"), certs.join("ca.key"), "server.tls"),
    ];
    for (cert, key, setting) in cases {
        let mut settings = test_settings();
        settings.server.tls = Some(TlsSettings { cert, key });
        let error = Application::build(settings).await.err().unwrap();
        assert!(format!("{error:#}").contains(setting), "{error:#}");
    }
}

#[test]
fn the_compose_nginx_configuration_with_https_passes_nginx_t() {
    let (_dir, certs) = dev_certs();
    let deploy = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/nginx");
    let work = tempfile::tempdir().unwrap();
    // The compose files with the certificates where they are here, and one replica nginx can
    // resolve.
    let server = std::fs::read_to_string(deploy.join("compose/portcullis-server.conf"))
        .unwrap()
        .replace("/etc/nginx/certs", certs.to_str().unwrap())
        .replace("listen 8080;", "listen 127.0.0.1:58080;")
        .replace("listen 8443 ssl;", "listen 127.0.0.1:58443 ssl;");
    assert!(server.contains("ssl_certificate "), "{server}");
    std::fs::write(work.path().join("portcullis-server.conf"), server).unwrap();
    std::fs::write(
        work.path().join("portcullis-upstream.conf"),
        "server 127.0.0.1:8080;\n",
    )
    .unwrap();
    let dir = work.path().display();
    let conf = work.path().join("nginx.conf");
    std::fs::write(
        &conf,
        format!(
            "pid {dir}/nginx.pid;\nerror_log {dir}/error.log;\nevents {{}}\nhttp {{\n\
             access_log off;\nclient_body_temp_path {dir};\nproxy_temp_path {dir};\n\
             include {};\n}}\n",
            deploy.join("portcullis.conf").display()
        ),
    )
    .unwrap();
    let output = Command::new("nginx")
        .arg("-t")
        .arg("-c")
        .arg(&conf)
        .arg("-p")
        .arg(work.path())
        .output()
        .expect("nginx (Debian's nginx-light; scripts/test.sh installs it)");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
