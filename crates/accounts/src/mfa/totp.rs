//! TOTP after RFC 6238 (HMAC-SHA-1, 6 digits, 30-second steps), through `totp-rs`: secrets,
//! the `otpauth://` URI and its QR code for enrolment, and the steps a code matches. Which of
//! those steps may be accepted (±1 step, never one used before) is core policy
//! ([`portcullis_core::mfa`]).

use portcullis_core::UnixMillis;
use portcullis_core::mfa::{STEP_MS, candidate_steps};
use qrcode::QrCode;
use qrcode::render::svg;
use subtle::ConstantTimeEq;
use totp_rs::{Builder, Secret, Totp};

/// Bytes of a new secret: 160 bits, RFC 4226's recommendation.
pub const SECRET_BYTES: usize = 20;

/// A new random secret.
pub fn new_secret() -> anyhow::Result<[u8; SECRET_BYTES]> {
    let mut secret = [0u8; SECRET_BYTES];
    getrandom::fill(&mut secret).map_err(|e| anyhow::anyhow!("no entropy source: {e}"))?;
    Ok(secret)
}

fn totp(secret: &[u8], issuer: &str, account: &str) -> anyhow::Result<Totp> {
    Builder::new()
        .with_secret(Secret::new(secret.into()))
        .with_issuer(Some(issuer))
        .with_account_name(account)
        .build()
        .map_err(|e| anyhow::anyhow!("building a TOTP: {e}"))
}

/// A TOTP secret that is not base32 of at least 128 bits.
#[derive(Debug, thiserror::Error)]
#[error("not a TOTP secret: base32 (RFC 4648) of at least 128 bits expected")]
pub struct SecretFormat;

/// The bytes of a base32 secret (RFC 4648, padding optional), refused unless it holds at least
/// 128 bits (RFC 4226's minimum).
pub fn decode_secret(base32: &str) -> Result<Vec<u8>, SecretFormat> {
    let secret = Secret::try_from_base32(base32.trim()).map_err(|_| SecretFormat)?;
    let bytes = secret.as_bytes().to_vec();
    if bytes.len() < 16 {
        return Err(SecretFormat);
    }
    Ok(bytes)
}

/// What an authenticator app needs to enrol (the answer of `POST /v1/mfa/totp`).
pub struct Enrolment {
    /// The secret, base32 (RFC 4648, no padding).
    pub secret: String,
    /// `otpauth://totp/Issuer:account?secret=...&issuer=...`.
    pub otpauth_uri: String,
    /// The URI as a QR code, SVG.
    pub qr_svg: String,
}

/// The enrolment data of `secret` for `account` at `issuer`.
pub fn enrolment(secret: &[u8], issuer: &str, account: &str) -> anyhow::Result<Enrolment> {
    let totp = totp(secret, issuer, account)?;
    let otpauth_uri = totp
        .to_url()
        .map_err(|e| anyhow::anyhow!("building the otpauth URI: {e}"))?;
    let qr_svg = QrCode::new(otpauth_uri.as_bytes())
        .map_err(|e| anyhow::anyhow!("drawing the QR code: {e}"))?
        .render::<svg::Color>()
        .min_dimensions(200, 200)
        .build();
    Ok(Enrolment {
        secret: totp.secret().to_base32(),
        otpauth_uri,
        qr_svg,
    })
}

/// Whether `code` has the shape of a code: exactly six ASCII digits.
pub fn is_well_formed(code: &str) -> bool {
    code.len() == 6 && code.bytes().all(|b| b.is_ascii_digit())
}

/// The steps around `now` whose code is `code` (compared in constant time).
pub fn matching_steps(secret: &[u8], code: &str, now: UnixMillis) -> anyhow::Result<Vec<u64>> {
    let totp = totp(secret, "-", "-")?;
    Ok(candidate_steps(now)
        .filter(|step| {
            let expected = totp.generate(step * (STEP_MS / 1_000)).to_string();
            bool::from(expected.as_bytes().ct_eq(code.as_bytes()))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The code of `secret` at `now`.
    pub fn code_at(secret: &[u8], now: UnixMillis) -> anyhow::Result<String> {
        Ok(totp(secret, "-", "-")?.generate(now / 1_000).to_string())
    }

    /// RFC 6238 appendix B, SHA-1 (8 digits there; the last 6 are the 6-digit code).
    #[test]
    fn codes_follow_the_rfc_6238_test_vectors() {
        let secret = b"12345678901234567890";
        for (seconds, code) in [
            (59, "287082"),
            (1_111_111_109, "081804"),
            (2_000_000_000, "279037"),
        ] {
            assert_eq!(code_at(secret, seconds * 1_000).unwrap(), code);
            assert!(
                matching_steps(secret, code, seconds * 1_000)
                    .unwrap()
                    .contains(&(seconds / 30))
            );
        }
    }

    #[test]
    fn the_enrolment_uri_names_the_issuer_and_account() {
        let enrolment = enrolment(&[7u8; SECRET_BYTES], "Portcullis", "alice").unwrap();
        assert!(
            enrolment
                .otpauth_uri
                .starts_with("otpauth://totp/Portcullis:alice?")
        );
        assert!(
            enrolment
                .otpauth_uri
                .contains(&format!("secret={}", enrolment.secret))
        );
        assert!(enrolment.qr_svg.contains("<svg"));
    }

    #[test]
    fn only_six_digits_are_a_code() {
        for code in [
            "12345",
            "1234567",
            "12345a",
            " 12345",
            "123 45",
            "１２３４５６",
        ] {
            assert!(!is_well_formed(code), "{code}");
        }
        assert!(is_well_formed("012345"));
    }
}
