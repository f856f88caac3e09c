//! JWT access tokens: with `tokens.access.enabled`, a login also returns a short-lived EdDSA
//! (Ed25519) JWT that other services verify with the keys at `GET /.well-known/jwks.json`,
//! without calling back. The opaque bearer token stays the session, revocable at once; an
//! access token lives `tokens.access.ttl_secs` and cannot be revoked, which is why it is short.
//!
//! The signing key is `secrets.signing_key` (a PKCS#8 PEM), the same on every replica. Keys are
//! named by their RFC 7638 thumbprint (`kid`). For a rotation, publish the next key's public
//! half in `tokens.access.extra_public_keys` (a PEM bundle) first, then make it the signing key and keep the
//! old public key listed until the last token it signed has expired.

use std::sync::Arc;

use anyhow::Context;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey};
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use portcullis_core::UnixMillis;
use portcullis_store::Clock;
use secrecy::ExposeSecret;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::settings::{AccessTokenSettings, SecretSettings};

/// Issues access tokens and publishes the keys that check them.
#[derive(Clone)]
pub struct AccessTokens {
    inner: Arc<Inner>,
}

struct Inner {
    signing: SigningKey,
    kid: String,
    /// Every published key by its `kid`: the signing key's and `extra_public_keys`.
    published: Vec<(String, VerifyingKey)>,
    issuer: String,
    ttl_secs: u64,
    /// The JWKS document, built once.
    jwks: Value,
    clock: Arc<dyn Clock>,
}

/// What a verified access token says.
#[derive(Debug, PartialEq, Eq)]
pub struct Verified {
    /// The account's public id (`sub`).
    pub subject: String,
    /// The account's username (`preferred_username`).
    pub username: String,
    /// When it expires (`exp`), in milliseconds.
    pub expires_at: UnixMillis,
}

/// An issued access token.
#[derive(Debug)]
pub struct AccessToken {
    /// The compact JWT.
    pub jwt: String,
    /// Seconds it is valid for.
    pub expires_in: u64,
}

impl AccessTokens {
    /// The issuer the settings describe: `None` when tokens are off; an error naming the
    /// setting when they are on without a usable key.
    pub fn from_settings(
        settings: &AccessTokenSettings,
        secrets: &SecretSettings,
        clock: Arc<dyn Clock>,
    ) -> anyhow::Result<Option<Self>> {
        if !settings.enabled {
            return Ok(None);
        }
        let pem = secrets.signing_key.as_ref().context(
            "tokens.access.enabled needs secrets.signing_key (PORTCULLIS__SECRETS__SIGNING_KEY): \
             an Ed25519 private key as PKCS#8 PEM, the same on every replica; make one with \
             `openssl genpkey -algorithm ed25519`",
        )?;
        let signing = SigningKey::from_pkcs8_pem(pem.expose_secret()).map_err(|e| {
            anyhow::anyhow!(
                "secrets.signing_key (PORTCULLIS__SECRETS__SIGNING_KEY): not an Ed25519 private \
                 key in PKCS#8 PEM ({e}); make one with `openssl genpkey -algorithm ed25519`"
            )
        })?;
        anyhow::ensure!(
            (1..=86_400).contains(&settings.ttl_secs),
            "tokens.access.ttl_secs: must be in 1..=86400 (an access token cannot be revoked)"
        );
        let mut published = vec![signing.verifying_key()];
        for (n, pem) in pem_blocks(&settings.extra_public_keys).enumerate() {
            let key = VerifyingKey::from_public_key_pem(&pem).map_err(|e| {
                anyhow::anyhow!(
                    "tokens.access.extra_public_keys[{n}]: not an Ed25519 public key in PEM ({e})"
                )
            })?;
            if !published.contains(&key) {
                published.push(key);
            }
        }
        let jwks = json!({ "keys": published.iter().map(jwk).collect::<Vec<_>>() });
        Ok(Some(Self {
            inner: Arc::new(Inner {
                kid: thumbprint(&signing.verifying_key()),
                published: published
                    .iter()
                    .map(|key| (thumbprint(key), *key))
                    .collect(),
                signing,
                issuer: settings.issuer.clone(),
                ttl_secs: settings.ttl_secs,
                jwks,
                clock,
            }),
        }))
    }

    /// A token for the account `subject`, named `username` (`preferred_username`), signed now.
    pub fn issue(&self, subject: &str, username: &str) -> anyhow::Result<AccessToken> {
        let inner = &self.inner;
        let now = inner.clock.now() / 1_000;
        let mut jti = [0u8; 16];
        getrandom::fill(&mut jti).map_err(|e| anyhow::anyhow!("no entropy source: {e}"))?;
        let header = json!({ "alg": "EdDSA", "typ": "JWT", "kid": inner.kid });
        let claims = json!({
            "iss": inner.issuer,
            "sub": subject,
            "preferred_username": username,
            "iat": now,
            "exp": now + inner.ttl_secs,
            "jti": URL_SAFE_NO_PAD.encode(jti),
        });
        let signed = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let signature = inner.signing.sign(signed.as_bytes());
        Ok(AccessToken {
            jwt: format!("{signed}.{}", URL_SAFE_NO_PAD.encode(signature.to_bytes())),
            expires_in: inner.ttl_secs,
        })
    }

    /// Whose `jwt` is and until when, when it is an access token this service issued (signed
    /// by a published key, named by its `kid`; this issuer; not expired), else `None`: what a
    /// relying party's JWT library checks, for forward authentication.
    pub fn verify(&self, jwt: &str) -> Option<Verified> {
        let inner = &self.inner;
        let mut parts = jwt.split('.');
        let (header, claims, signature) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() {
            return None;
        }
        let decode = |part: &str| -> Option<Value> {
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).ok()?).ok()
        };
        let head = decode(header)?;
        if head["alg"] != "EdDSA" {
            return None;
        }
        let kid = head["kid"].as_str()?;
        let (_, key) = inner.published.iter().find(|(id, _)| id == kid)?;
        let signature: [u8; 64] = URL_SAFE_NO_PAD.decode(signature).ok()?.try_into().ok()?;
        key.verify_strict(
            format!("{header}.{claims}").as_bytes(),
            &ed25519_dalek::Signature::from_bytes(&signature),
        )
        .ok()?;
        let claims = decode(claims)?;
        let expires = claims["exp"].as_u64()?;
        if claims["iss"] != inner.issuer.as_str() || expires <= inner.clock.now() / 1_000 {
            return None;
        }
        Some(Verified {
            subject: claims["sub"].as_str()?.to_owned(),
            username: claims["preferred_username"].as_str()?.to_owned(),
            expires_at: expires.saturating_mul(1_000),
        })
    }

    /// The JSON Web Key Set: the signing key's public half first, then any extra ones.
    pub fn jwks(&self) -> &Value {
        &self.inner.jwks
    }
}

/// The PEM blocks of a bundle (concatenated `-----BEGIN ...-----` blocks).
fn pem_blocks(bundle: &str) -> impl Iterator<Item = String> + '_ {
    const END: &str = "-----END ";
    bundle
        .split_inclusive('\n')
        .scan(String::new(), |block, line| {
            block.push_str(line);
            Some(line.starts_with(END).then(|| std::mem::take(block)))
        })
        .flatten()
}

/// A public key as a JWK (RFC 8037), named by its thumbprint.
fn jwk(key: &VerifyingKey) -> Value {
    json!({
        "kty": "OKP",
        "crv": "Ed25519",
        "x": URL_SAFE_NO_PAD.encode(key.as_bytes()),
        "kid": thumbprint(key),
        "use": "sig",
        "alg": "EdDSA",
    })
}

/// The RFC 7638 thumbprint: SHA-256 of the required members in lexicographic order.
fn thumbprint(key: &VerifyingKey) -> String {
    let canonical = format!(
        r#"{{"crv":"Ed25519","kty":"OKP","x":"{}"}}"#,
        URL_SAFE_NO_PAD.encode(key.as_bytes())
    );
    URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::Verifier;
    use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
    use ed25519_dalek::pkcs8::{EncodePrivateKey, EncodePublicKey};
    use portcullis_store::ManualClock;
    use secrecy::SecretString;

    fn pem(seed: u8) -> String {
        SigningKey::from_bytes(&[seed; 32])
            .to_pkcs8_pem(LineEnding::LF)
            .unwrap()
            .to_string()
    }

    fn settings(enabled: bool) -> AccessTokenSettings {
        AccessTokenSettings {
            enabled,
            ..AccessTokenSettings::default()
        }
    }

    fn secrets(key: Option<String>) -> SecretSettings {
        SecretSettings {
            signing_key: key.map(SecretString::from),
            ..SecretSettings::default()
        }
    }

    #[test]
    fn tokens_need_a_signing_key_and_say_which_setting() {
        let clock = Arc::new(ManualClock::new(0));
        assert!(
            AccessTokens::from_settings(&settings(false), &secrets(None), clock.clone())
                .unwrap()
                .is_none()
        );
        for key in [None, Some("not a key".to_owned())] {
            let error = AccessTokens::from_settings(&settings(true), &secrets(key), clock.clone())
                .err()
                .unwrap();
            assert!(error.to_string().contains("secrets.signing_key"), "{error}");
        }
    }

    #[test]
    fn a_token_is_signed_by_the_published_key_with_the_claims_asked_for() {
        let clock = Arc::new(ManualClock::new(1_700_000_000_123));
        let tokens = AccessTokens::from_settings(&settings(true), &secrets(Some(pem(7))), clock)
            .unwrap()
            .unwrap();
        let token = tokens.issue("acct-1", "alice").unwrap();
        let parts: Vec<&str> = token.jwt.split('.').collect();
        let [header, claims, signature] = parts.as_slice() else {
            panic!("{}", token.jwt)
        };
        let claims: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(claims).unwrap()).unwrap();
        assert_eq!(claims["sub"], "acct-1");
        assert_eq!(claims["preferred_username"], "alice");
        assert_eq!(claims["iat"], 1_700_000_000);
        assert_eq!(claims["exp"], 1_700_000_300);
        assert_eq!(claims["iss"], "portcullis");
        let header: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).unwrap()).unwrap();
        let jwk = &tokens.jwks()["keys"][0];
        assert_eq!(header["kid"], jwk["kid"]);
        let key = VerifyingKey::from_bytes(
            &URL_SAFE_NO_PAD.decode(jwk["x"].as_str().unwrap()).unwrap()[..]
                .try_into()
                .unwrap(),
        )
        .unwrap();
        let signed = format!("{}.{}", parts[0], parts[1]);
        let signature =
            ed25519_dalek::Signature::from_slice(&URL_SAFE_NO_PAD.decode(signature).unwrap())
                .unwrap();
        assert!(key.verify(signed.as_bytes(), &signature).is_ok());
        // Each token is its own.
        assert_ne!(tokens.issue("acct-1", "alice").unwrap().jwt, token.jwt);
    }

    #[test]
    fn extra_public_keys_are_published_for_rotation() {
        let next = SigningKey::from_bytes(&[9; 32])
            .verifying_key()
            .to_public_key_pem(LineEnding::LF)
            .unwrap();
        let settings = AccessTokenSettings {
            enabled: true,
            extra_public_keys: next,
            ..AccessTokenSettings::default()
        };
        let clock = Arc::new(ManualClock::new(0));
        let tokens = AccessTokens::from_settings(&settings, &secrets(Some(pem(7))), clock)
            .unwrap()
            .unwrap();
        let keys = tokens.jwks()["keys"].as_array().unwrap();
        assert_eq!(keys.len(), 2);
        assert_ne!(keys[0]["kid"], keys[1]["kid"]);
    }

    #[test]
    fn verify_takes_its_own_live_tokens_and_a_rotated_keys_and_nothing_else() {
        let clock = Arc::new(ManualClock::new(1_700_000_000_000));
        let issuer = |seed: u8, extra: String| {
            let settings = AccessTokenSettings {
                enabled: true,
                extra_public_keys: extra,
                ..AccessTokenSettings::default()
            };
            AccessTokens::from_settings(&settings, &secrets(Some(pem(seed))), clock.clone())
                .unwrap()
                .unwrap()
        };
        let public = |seed: u8| {
            SigningKey::from_bytes(&[seed; 32])
                .verifying_key()
                .to_public_key_pem(LineEnding::LF)
                .unwrap()
        };
        let current = issuer(7, String::new());
        let token = current.issue("acct-1", "alice").unwrap().jwt;
        assert_eq!(
            current.verify(&token),
            Some(Verified {
                subject: "acct-1".to_owned(),
                username: "alice".to_owned(),
                expires_at: 1_700_000_300_000,
            })
        );
        // After a rotation to key 8, the old key's tokens pass while it is still listed.
        let rotated = issuer(8, public(7));
        assert!(rotated.verify(&token).is_some());
        assert!(
            issuer(8, String::new()).verify(&token).is_none(),
            "unlisted"
        );
        // Tampered claims, a signature swapped in from another token, garbage.
        let parts: Vec<&str> = token.split('.').collect();
        let forged_claims = URL_SAFE_NO_PAD
            .encode(r#"{"iss":"portcullis","sub":"acct-2","iat":1700000000,"exp":1700000300}"#);
        let other = current.issue("acct-2", "bob").unwrap().jwt;
        for bad in [
            format!("{}.{forged_claims}.{}", parts[0], parts[2]),
            format!(
                "{}.{}.{}",
                parts[0],
                parts[1],
                other.rsplit('.').next().unwrap()
            ),
            format!("{token}.x"),
            "a.b.c".to_owned(),
            String::new(),
        ] {
            assert!(current.verify(&bad).is_none(), "{bad}");
        }
        // Another issuer's token with the same key.
        let elsewhere = AccessTokens::from_settings(
            &AccessTokenSettings {
                enabled: true,
                issuer: "elsewhere".to_owned(),
                ..AccessTokenSettings::default()
            },
            &secrets(Some(pem(7))),
            clock.clone(),
        )
        .unwrap()
        .unwrap();
        assert!(
            current
                .verify(&elsewhere.issue("acct-1", "alice").unwrap().jwt)
                .is_none()
        );
        // Expiry: valid to the last second before `exp`.
        clock.advance(299_999);
        assert!(current.verify(&token).is_some());
        clock.advance(1);
        assert!(current.verify(&token).is_none());
    }

    #[test]
    fn the_thumbprint_is_rfc_8037s_example() {
        // RFC 8037, appendix A.3: the thumbprint of the example key.
        let x = URL_SAFE_NO_PAD
            .decode("11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo")
            .unwrap();
        let key = VerifyingKey::from_bytes(&x[..].try_into().unwrap()).unwrap();
        assert_eq!(
            thumbprint(&key),
            "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
        );
    }
}
