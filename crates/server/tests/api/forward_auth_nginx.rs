//! `deploy/nginx/forward-auth.conf` through a real nginx: an application behind it (an echo of
//! the headers it is given) is reached only with a live session, hears whose it is and nothing
//! a client claims, and a browser goes to sign in and back.

use portcullis_testkit::nginx::Nginx;
use portcullis_testkit::process::free_port;
use portcullis_testkit::{PASSWORD, TestApp, test_settings};
use reqwest::header::{ACCEPT, AUTHORIZATION, COOKIE, LOCATION};
use serde_json::Value;

/// Portcullis and the application's nginx at `port`, whose address it names as its own.
async fn stack() -> (TestApp, Nginx, String) {
    let port = free_port();
    let echo = free_port();
    let public = format!("http://127.0.0.1:{port}");
    let mut settings = test_settings();
    settings.server.public_url = Some(public.clone());
    settings.server.return_hosts = vec![format!("127.0.0.1:{port}")];
    settings.server.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
    let app = TestApp::spawn_with(settings).await;
    let snippet = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../deploy/nginx/forward-auth.conf")
        .canonicalize()
        .unwrap();
    let portcullis = app.address.trim_start_matches("http://");
    let http = format!(
        "upstream portcullis {{ server {portcullis}; keepalive 4; }}\n\
         upstream app {{ server 127.0.0.1:{echo}; }}\n\
         server {{\n listen 127.0.0.1:{port};\n include {};\n\
           location / {{ proxy_pass http://app; }}\n}}\n\
         server {{\n listen 127.0.0.1:{echo};\n\
           location / {{ default_type text/plain; return 200 \
           \"subject=$http_x_portcullis_subject username=$http_x_portcullis_username \
           uri=$request_uri\"; }}\n}}\n",
        snippet.display()
    );
    let nginx = Nginx::start(&http, port).await;
    (app, nginx, public)
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_application_behind_nginx_is_reached_with_a_live_session_only_and_told_whose() {
    let (app, nginx, public) = stack().await;
    let registered: Value = app.register("alice", PASSWORD).await.json().await.unwrap();
    let client = client();
    let private = format!("{public}/reports/2026?q=1");

    // No session: an API client gets 401, a browser the login page with its way back.
    let refused = client.get(&private).send().await.unwrap();
    assert_eq!(refused.status(), 401, "{}", nginx.error_log());
    let browser = client
        .get(&private)
        .header(ACCEPT, "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(browser.status(), 302, "{}", nginx.error_log());
    let sign_in = browser.headers()[LOCATION].to_str().unwrap().to_owned();
    assert_eq!(
        sign_in,
        format!(
            "{public}/login?return_to=http%3A%2F%2F127.0.0.1%3A{}%2Freports%2F2026%3Fq%3D1",
            public.rsplit(':').next().unwrap()
        )
    );

    // The login page through nginx, and a sign-in on it, ends back at the application.
    let page = client.get(&sign_in).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let cookies: Vec<String> = page
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().split(';').next().unwrap().to_owned())
        .collect();
    let body = page.text().await.unwrap();
    let marker = "name=\"csrf\" value=\"";
    let start = body.find(marker).unwrap() + marker.len();
    let csrf = &body[start..][..body[start..].find('"').unwrap()];
    let signed_in = client
        .post(format!("{public}/login"))
        .header(COOKIE, cookies.join("; "))
        .form(&[
            ("csrf", csrf),
            ("username", "alice"),
            ("password", PASSWORD),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(signed_in.status(), 303);
    assert_eq!(signed_in.headers()[LOCATION], private.as_str());
    let session = signed_in
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().split(';').next().unwrap().to_owned())
        .find(|c| c.starts_with("portcullis_session="))
        .unwrap();

    // With the session's cookie, or its token as a bearer, the application answers and is told
    // whose session it is, whatever the client claimed.
    let token = app.token("alice", PASSWORD).await;
    for (name, value) in [
        (COOKIE.as_str(), session.clone()),
        (AUTHORIZATION.as_str(), format!("Bearer {token}")),
    ] {
        let answer = client
            .get(&private)
            .header(name, &value)
            .header("x-portcullis-subject", "someone-else")
            .header("x-portcullis-username", "admin")
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 200);
        assert_eq!(
            answer.text().await.unwrap(),
            format!(
                "subject={} username=alice uri=/reports/2026?q=1",
                registered["id"].as_str().unwrap()
            )
        );
    }

    // A claim without a session never reaches the application.
    let claimed = client
        .get(&private)
        .header("x-portcullis-subject", registered["id"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(claimed.status(), 401);

    // A logout through nginx: the next request is refused.
    let logout = client
        .post(format!("{public}/v1/logout"))
        .header(AUTHORIZATION, format!("Bearer {token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(logout.status(), 204);
    let after = client
        .get(&private)
        .header(AUTHORIZATION, format!("Bearer {token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(after.status(), 401);
}
