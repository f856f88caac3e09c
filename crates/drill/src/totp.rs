//! TOTP codes for the drill's accounts with a second factor (RFC 6238: SHA-1, 6 digits, 30 s),
//! computed with `totp-rs` from the secrets the plan made and seeding imported.

use std::time::{SystemTime, UNIX_EPOCH};

use totp_rs::{Builder, Secret};

/// A base32 secret of 160 bits from `bytes`.
pub fn secret(bytes: [u8; 20]) -> String {
    Secret::new(Box::new(bytes)).to_base32()
}

/// The code of a base32 `secret` at `unix_secs`.
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
