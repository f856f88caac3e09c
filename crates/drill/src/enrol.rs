//! Second factors for the accounts the scenario gives one (`accounts.mfa_share`): after
//! seeding, each such account logs in once from an address of its own (in 198.18.0.0/15, the
//! benchmarking range, which no other traffic of the drill uses), enrols TOTP through the API
//! and confirms it with a code, so the attack meets real second factors.

use std::net::{IpAddr, Ipv6Addr};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use totp_rs::{Builder, Secret};

use crate::plan::Account;

/// Enrolments in flight at once.
const PARALLEL: usize = 8;

/// Enrols every account with `mfa`; returns each account's TOTP secret (base32), `None` for
/// the others.
pub async fn enrol(
    base_url: &str,
    source: Option<IpAddr>,
    accounts: &[Account],
) -> anyhow::Result<Vec<Option<String>>> {
    let http = reqwest::Client::builder().local_address(source).build()?;
    let base = Arc::new(base_url.trim_end_matches('/').to_owned());
    let permits = Arc::new(Semaphore::new(PARALLEL));
    let mut enrolments = JoinSet::new();
    for (index, account) in accounts.iter().enumerate().filter(|(_, a)| a.mfa) {
        let (http, base, permits, account) =
            (http.clone(), base.clone(), permits.clone(), account.clone());
        enrolments.spawn(async move {
            let _permit = permits.acquire().await;
            let secret = enrol_one(&http, &base, index, &account)
                .await
                .with_context(|| format!("enrolling {} in TOTP", account.username))?;
            Ok::<_, anyhow::Error>((index, secret))
        });
    }
    let mut secrets = vec![None; accounts.len()];
    while let Some(done) = enrolments.join_next().await {
        let (index, secret) = done??;
        secrets[index] = Some(secret);
    }
    Ok(secrets)
}

async fn enrol_one(
    http: &reqwest::Client,
    base: &str,
    index: usize,
    account: &Account,
) -> anyhow::Result<String> {
    let network = 0x8000 | (index & 0x7fff) as u16;
    let from = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, network, 0, 0, 0, 0, 1));
    let login = json!({ "username": account.username, "password": account.password });
    let session = call(http, from, &format!("{base}/v1/login"), None, &login).await?;
    let session = session["token"]
        .as_str()
        .context("no session token")?
        .to_owned();
    let enrolment = call(
        http,
        from,
        &format!("{base}/v1/mfa/totp"),
        Some(&session),
        &json!({}),
    )
    .await?;
    let secret = enrolment["secret"]
        .as_str()
        .context("no secret")?
        .to_owned();
    let confirm = json!({ "code": code(&secret, now_secs())? });
    call(
        http,
        from,
        &format!("{base}/v1/mfa/totp/confirm"),
        Some(&session),
        &confirm,
    )
    .await?;
    Ok(secret)
}

async fn call(
    http: &reqwest::Client,
    from: IpAddr,
    url: &str,
    bearer: Option<&str>,
    body: &Value,
) -> anyhow::Result<Value> {
    let mut request = http
        .post(url)
        .header("x-forwarded-for", from.to_string())
        .json(body);
    if let Some(token) = bearer {
        request = request.bearer_auth(token);
    }
    let response = request.send().await?;
    let status = response.status();
    let body: Value = response.json().await.unwrap_or_default();
    if !status.is_success() {
        bail!("POST {url}: {status} {body}");
    }
    Ok(body)
}

/// The TOTP code of a base32 `secret` at `unix_secs` (RFC 6238: SHA-1, 6 digits, 30 s).
pub fn code(secret: &str, unix_secs: u64) -> anyhow::Result<String> {
    let secret =
        Secret::try_from_base32(secret).map_err(|e| anyhow::anyhow!("TOTP secret: {e}"))?;
    let totp = Builder::new()
        .with_secret(secret)
        .build()
        .map_err(|e| anyhow::anyhow!("TOTP: {e}"))?;
    Ok(totp.generate(unix_secs).to_string())
}

/// Seconds since the Unix epoch.
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
