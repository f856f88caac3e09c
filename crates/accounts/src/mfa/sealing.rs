//! TOTP secrets at rest: sealed with ChaCha20-Poly1305 under a key derived from
//! `secrets.hmac_key` with its own label, bound to the account id (as associated data), so a
//! database dump yields no secret and a sealed secret copied onto another account opens to
//! nothing.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Nonce};
use hmac::Mac as _;

const NONCE_BYTES: usize = 12;

/// Seals and opens TOTP secrets.
#[derive(Clone)]
pub struct SecretSealer {
    cipher: ChaCha20Poly1305,
    key_id: String,
}

impl SecretSealer {
    /// A sealer whose key is derived from the instance's secret key.
    pub fn new(instance_key: &[u8]) -> anyhow::Result<Self> {
        let key = keyed(instance_key, b"portcullis/totp-secrets/v1");
        let cipher = ChaCha20Poly1305::new_from_slice(&key)
            .map_err(|_| anyhow::anyhow!("deriving the TOTP sealing key"))?;
        // Names the key without revealing it, so a secret sealed under another key is told
        // apart from a damaged one.
        let key_id = hex::encode(&keyed(&key, b"key-id")[..8]);
        Ok(Self { cipher, key_id })
    }

    /// The id stored next to each sealed secret.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// Seals `secret` for `account_id`: base64 of the nonce and the ciphertext.
    pub fn seal(&self, account_id: &str, secret: &[u8]) -> anyhow::Result<String> {
        let mut nonce = [0u8; NONCE_BYTES];
        getrandom::fill(&mut nonce).map_err(|e| anyhow::anyhow!("no entropy source: {e}"))?;
        let sealed = self
            .cipher
            .encrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: secret,
                    aad: account_id.as_bytes(),
                },
            )
            .map_err(|_| anyhow::anyhow!("sealing a TOTP secret"))?;
        Ok(STANDARD_NO_PAD.encode([nonce.as_slice(), &sealed].concat()))
    }

    /// Opens a secret sealed for `account_id` under `key_id`.
    pub fn open(&self, account_id: &str, key_id: &str, sealed: &str) -> anyhow::Result<Vec<u8>> {
        anyhow::ensure!(
            key_id == self.key_id,
            "a TOTP secret was sealed under another secrets.hmac_key (key id {key_id}, current \
             {}); start with the key it was sealed under",
            self.key_id
        );
        let bytes = STANDARD_NO_PAD
            .decode(sealed)
            .map_err(|_| anyhow::anyhow!("a sealed TOTP secret is not base64"))?;
        anyhow::ensure!(
            bytes.len() > NONCE_BYTES,
            "a sealed TOTP secret is truncated"
        );
        let (nonce, sealed) = bytes.split_at(NONCE_BYTES);
        let mut fixed = [0u8; NONCE_BYTES];
        fixed.copy_from_slice(nonce);
        self.cipher
            .decrypt(
                &Nonce::from(fixed),
                Payload {
                    msg: sealed,
                    aad: account_id.as_bytes(),
                },
            )
            .map_err(|_| anyhow::anyhow!("a sealed TOTP secret does not open (damaged or moved)"))
    }
}

fn keyed(key: &[u8], label: &[u8]) -> Vec<u8> {
    let mut mac = <hmac::Hmac<sha2::Sha256> as hmac::KeyInit>::new_from_slice(key)
        .unwrap_or_else(|_| <hmac::Hmac<sha2::Sha256> as hmac::KeyInit>::new(&Default::default()));
    mac.update(label);
    mac.finalize().into_bytes().to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_secret_opens_for_its_account_only_and_names_a_foreign_key() {
        let sealer = SecretSealer::new(b"instance key").unwrap();
        let sealed = sealer.seal("acct-1", b"0123456789abcdefghij").unwrap();
        assert!(!sealed.contains("0123456789"));
        assert_eq!(
            sealer.open("acct-1", sealer.key_id(), &sealed).unwrap(),
            b"0123456789abcdefghij"
        );
        assert!(sealer.open("acct-2", sealer.key_id(), &sealed).is_err());
        let other = SecretSealer::new(b"another key").unwrap();
        let err = other.open("acct-1", sealer.key_id(), &sealed).unwrap_err();
        assert!(err.to_string().contains("secrets.hmac_key"), "{err}");
    }
}
