//! `deploy/nginx/portcullis.conf` through a real nginx, in front of a replica that is stopping
//! and one that is not.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use portcullis_testkit::TestApp;
use portcullis_testkit::nginx::Nginx;
use portcullis_testkit::process::free_port;
use serde_json::json;
use tokio::io::AsyncReadExt;

/// A rolling restart's last gap: a login sent on a connection still in a stopping replica's
/// listen backlog as its listener closes. nginx has sent the POST and the connection ends with
/// no answer, yet the replica never read it, so nginx sends it to the next replica
/// (`non_idempotent`). Without that, the person gets a 502.
#[tokio::test(flavor = "multi_thread")]
async fn a_login_a_stopping_replica_ended_unread_is_answered_by_the_next_replica() {
    let replica = TestApp::spawn().await;
    // The stopping replica: it lets each request arrive, then ends the connection unanswered.
    let stopping = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let stopping_port = stopping.local_addr().unwrap().port();
    let ended = Arc::new(AtomicUsize::new(0));
    tokio::spawn({
        let ended = ended.clone();
        async move {
            while let Ok((mut connection, _)) = stopping.accept().await {
                let mut request = [0u8; 4096];
                if connection.read(&mut request).await.unwrap_or(0) > 0 {
                    ended.fetch_add(1, Ordering::SeqCst);
                }
            }
        }
    });
    let port = free_port();
    let deployed = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/nginx/portcullis.conf"),
    )
    .unwrap();
    // The file's two per-environment includes, written in place: the stopping replica first.
    let upstreams = format!(
        "server 127.0.0.1:{stopping_port};\n server {};",
        replica.address.trim_start_matches("http://")
    );
    let http = deployed
        .replace("include portcullis-upstream.conf;", &upstreams)
        .replace(
            "include portcullis-server.conf;",
            &format!("listen 127.0.0.1:{port};"),
        );
    assert!(http.contains(&upstreams) && http.contains(&format!(":{port};")));
    let nginx = Nginx::start(&http, port).await;

    let client = reqwest::Client::new();
    for _ in 0..4 {
        let answer = client
            .post(format!("http://127.0.0.1:{port}/v1/login"))
            .json(&json!({"username": "alice", "password": "not her password"}))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 401, "{}", nginx.error_log());
    }
    // A login did go to the stopping replica first (nginx then leaves it out for a while): it
    // was sent, ended unanswered, and sent on.
    assert!(
        ended.load(Ordering::SeqCst) >= 1,
        "no login reached the stopping replica: {}",
        nginx.error_log()
    );
}
