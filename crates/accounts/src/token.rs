//! Session and login tokens: 256-bit CSPRNG values, handed to the client once and stored only as their
//! SHA-256 digest, so a store dump yields no usable token.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

/// Length of an encoded token: 32 bytes in unpadded base64url.
const TOKEN_CHARS: usize = 43;

/// A new token and the digest to store it under.
pub struct IssuedToken {
    /// The bearer value for the client.
    pub token: String,
    /// What the store keeps.
    pub digest: String,
}

/// Draws a new token from the operating system's CSPRNG.
pub fn issue() -> anyhow::Result<IssuedToken> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("no entropy source: {e}"))?;
    let token = URL_SAFE_NO_PAD.encode(bytes);
    let digest = digest(&token);
    Ok(IssuedToken { token, digest })
}

/// A public random id (an account's, a passkey's): 128 bits, hex.
pub fn random_id() -> anyhow::Result<String> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("no entropy source: {e}"))?;
    Ok(hex::encode(bytes))
}

/// The digest a token is stored under (hex SHA-256).
pub fn digest(token: &str) -> String {
    portcullis_core::hex_string(&Sha256::digest(token.as_bytes()))
}

/// The digest of a well-formed `Authorization` value, `Bearer <token>`; `None` for anything
/// else.
pub fn bearer_digest(value: &str) -> Option<String> {
    let (scheme, token) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    digest_of_value(token.trim())
}

/// The digest of a well-formed token value (as [`issue`] makes them); `None` for anything
/// else, so malformed input never reaches a query.
pub fn digest_of_value(token: &str) -> Option<String> {
    let well_formed = token.len() == TOKEN_CHARS
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    well_formed.then(|| digest(token))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_digest_is_the_hex_sha_256_of_the_token() {
        for token in ["", "abc", &"x".repeat(43)] {
            assert_eq!(digest(token), hex::encode(Sha256::digest(token.as_bytes())));
        }
        // FIPS 180-2's example.
        assert_eq!(
            digest("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn an_issued_token_is_found_by_its_digest_and_tokens_differ() {
        let a = issue().unwrap();
        let b = issue().unwrap();
        assert_ne!(a.token, b.token);
        assert_eq!(a.token.len(), TOKEN_CHARS);
        assert_eq!(
            bearer_digest(&format!("Bearer {}", a.token)),
            Some(a.digest)
        );
    }

    #[test]
    fn malformed_authorization_headers_are_refused() {
        for value in [
            "Bearer",
            "Basic abc",
            "Bearer short",
            &format!("Bearer {}!", "a".repeat(42)),
        ] {
            assert_eq!(bearer_digest(value), None, "{value}");
        }
    }

    proptest! {
        #[test]
        fn any_header_value_is_parsed_without_panic(value in "[ -~]{0,100}") {
            let _ = bearer_digest(&value);
        }
    }
}
