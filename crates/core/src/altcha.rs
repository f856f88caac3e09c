//! The proof-of-work challenge in ALTCHA's v2 protocol (the one the `altcha` widget and the
//! reference libraries speak), with PBKDF2/SHA-256 as the key derivation.
//!
//! A challenge is a set of parameters and an HMAC over their canonical JSON (keys sorted):
//! `algorithm`, `cost` (PBKDF2 iterations per try), `expiresAt` (Unix seconds), `keyLength`,
//! `keyPrefix`, `nonce`, `salt`. A solver tries counters from 0: the key
//! `PBKDF2(nonce ‖ counter as big-endian u32, salt, cost, keyLength)` solves the challenge when
//! its hex starts with `keyPrefix`. The payload it sends back is base64 JSON of
//! `{"challenge": {...}, "solution": {"counter", "derivedKey"}}`.
//!
//! The work a challenge asks is `cost × 16^len(keyPrefix)` iterations on average: the prefix sets
//! the number of tries in steps of 16, the cost fills in between, kept small because the server
//! re-derives one key to verify. Verification is constant-time where secrets meet input (the
//! signature, the derived key); single use is the caller's, keyed by [`Proof::id`].

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::UnixMillis;

/// The key derivation every challenge uses.
pub const ALGORITHM: &str = "PBKDF2/SHA-256";
/// Bytes of a derived key.
const KEY_LENGTH: u32 = 32;
/// The fewest iterations per try: below this, tries are cheap and the prefix long.
const MIN_COST: u64 = 200;
/// The most hex digits of prefix asked (16^8 tries: far beyond any setting).
const MAX_PREFIX: u32 = 8;

/// The signed parameters of a challenge. Fields are declared in sorted order, so their JSON is
/// the canonical form the signature covers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Parameters {
    /// Always [`ALGORITHM`].
    pub algorithm: String,
    /// PBKDF2 iterations per try.
    pub cost: u32,
    /// Unix seconds after which the challenge is refused.
    pub expires_at: u64,
    /// Bytes of the derived key.
    pub key_length: u32,
    /// Hex digits the derived key must start with.
    pub key_prefix: String,
    /// 16 random bytes, hex: the start of every try's password, and the challenge's id.
    pub nonce: String,
    /// 16 random bytes, hex: the PBKDF2 salt.
    pub salt: String,
}

impl Parameters {
    /// Expected PBKDF2 iterations to solve (what the challenge proves once solved).
    pub fn work(&self) -> u64 {
        let digits = u32::try_from(self.key_prefix.len()).unwrap_or(MAX_PREFIX);
        u64::from(self.cost).saturating_mul(16u64.saturating_pow(digits))
    }

    /// The derived key for `counter`.
    pub fn derive(&self, counter: u32) -> Option<Vec<u8>> {
        let nonce = hex::decode(&self.nonce).ok()?;
        let salt = hex::decode(&self.salt).ok()?;
        let mut password = nonce;
        password.extend_from_slice(&counter.to_be_bytes());
        let mut key = vec![0; usize::try_from(self.key_length).ok()?];
        pbkdf2::pbkdf2_hmac::<Sha256>(&password, &salt, self.cost, &mut key);
        Some(key)
    }

    /// Whether a derived key solves the challenge.
    fn solved_by(&self, key: &[u8]) -> bool {
        hex::encode(key).starts_with(&self.key_prefix.to_ascii_lowercase())
    }
}

/// A challenge as `GET /v1/challenge` sends it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Challenge {
    /// What to solve.
    pub parameters: Parameters,
    /// HMAC-SHA-256 of the parameters' canonical JSON, hex.
    pub signature: String,
}

/// A solver's answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Solution {
    /// The counter whose key solves the challenge.
    pub counter: u32,
    /// That key, hex.
    pub derived_key: String,
    /// Milliseconds the solver took (informative; never trusted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<f64>,
}

/// What a client sends back: the challenge it solved and its solution.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Payload {
    /// The challenge, as issued.
    pub challenge: Challenge,
    /// The answer.
    pub solution: Solution,
}

impl Payload {
    /// The payload as the `altcha` form field carries it (base64 of its JSON).
    pub fn to_base64(&self) -> String {
        let json = serde_json::to_vec(self).unwrap_or_default();
        base64::engine::general_purpose::STANDARD.encode(json)
    }
}

/// A verified solution.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Proof {
    /// The challenge's nonce: a solution may be used once, and this names it.
    pub id: String,
    /// When the challenge expires: its id need not be remembered after that.
    pub expires_at: UnixMillis,
    /// The work it proves.
    pub work: u64,
}

/// Why a payload proves nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    /// Not base64 JSON of a payload.
    #[error("the payload is not a base64 ALTCHA v2 payload")]
    Malformed,
    /// The challenge is past its `expiresAt`.
    #[error("the challenge has expired")]
    Expired,
    /// The parameters are not the ones this server signed.
    #[error("the challenge's signature does not match")]
    BadSignature,
    /// The counter does not give the derived key, or the key does not solve the challenge.
    #[error("the solution does not solve the challenge")]
    WrongSolution,
}

/// Issues and verifies challenges with a server key.
#[derive(Clone)]
pub struct Altcha {
    mac: Hmac<Sha256>,
}

impl Altcha {
    /// Challenges signed with `key` (derived from the deployment's secret for this purpose).
    pub fn new(key: &[u8]) -> Self {
        Self {
            mac: crate::keyed_mac(key),
        }
    }

    fn sign(&self, parameters: &Parameters) -> Hmac<Sha256> {
        let mut mac = self.mac.clone();
        // Serialising a struct of strings and integers cannot fail.
        mac.update(&serde_json::to_vec(parameters).unwrap_or_default());
        mac
    }

    /// A challenge of about `work` expected iterations, valid until `expires_at` (Unix
    /// seconds), with 32 random bytes from the caller (nonce, then salt).
    pub fn issue(&self, work: u64, expires_at: u64, random: [u8; 32]) -> Challenge {
        let (cost, prefix) = shape(work);
        let parameters = Parameters {
            algorithm: ALGORITHM.to_owned(),
            cost,
            expires_at,
            key_length: KEY_LENGTH,
            key_prefix: "0".repeat(prefix as usize),
            nonce: hex::encode(&random[..16]),
            salt: hex::encode(&random[16..]),
        };
        let signature = hex::encode(self.sign(&parameters).finalize().into_bytes());
        Challenge {
            parameters,
            signature,
        }
    }

    /// Reads a payload and checks everything but the solution: shape, expiry at `now`, and the
    /// signature (constant-time). Cheap; [`Altcha::check_solution`] does the key derivation.
    pub fn open(&self, payload: &str, now: UnixMillis) -> Result<Payload, ProofError> {
        let bytes = STANDARD_NO_PAD
            .decode(payload.trim().trim_end_matches('='))
            .map_err(|_| ProofError::Malformed)?;
        let payload: Payload = serde_json::from_slice(&bytes).map_err(|_| ProofError::Malformed)?;
        let parameters = &payload.challenge.parameters;
        if parameters.expires_at.saturating_mul(1_000) <= now {
            return Err(ProofError::Expired);
        }
        let signature =
            hex::decode(&payload.challenge.signature).map_err(|_| ProofError::BadSignature)?;
        self.sign(parameters)
            .verify_slice(&signature)
            .map_err(|_| ProofError::BadSignature)?;
        Ok(payload)
    }

    /// Checks an opened payload's solution by deriving its key once (`cost` iterations).
    pub fn check_solution(payload: &Payload) -> Result<Proof, ProofError> {
        let parameters = &payload.challenge.parameters;
        let key = parameters
            .derive(payload.solution.counter)
            .ok_or(ProofError::Malformed)?;
        let claimed = hex::decode(&payload.solution.derived_key).unwrap_or_default();
        let matches: bool = key.ct_eq(&claimed).into();
        if !matches || !parameters.solved_by(&key) {
            return Err(ProofError::WrongSolution);
        }
        Ok(Proof {
            id: parameters.nonce.clone(),
            expires_at: parameters.expires_at.saturating_mul(1_000),
            work: parameters.work(),
        })
    }
}

/// Iterations per try and hex digits of prefix for at least `work` expected iterations (at most
/// one try's cost more).
fn shape(work: u64) -> (u32, u32) {
    let mut prefix = 0;
    while prefix < MAX_PREFIX && work / 16u64.pow(prefix + 1) >= MIN_COST {
        prefix += 1;
    }
    let cost = work.div_ceil(16u64.pow(prefix)).max(1);
    (u32::try_from(cost).unwrap_or(u32::MAX), prefix)
}

/// Solves a challenge by trying counters from 0, as the reference solver does; `None` if no
/// counter up to `max_counter` does (never for a challenge this server issued and a sane
/// bound).
pub fn solve(parameters: &Parameters, max_counter: u32) -> Option<Solution> {
    (0..=max_counter).find_map(|counter| {
        let key = parameters.derive(counter)?;
        parameters.solved_by(&key).then(|| Solution {
            counter,
            derived_key: hex::encode(key),
            time: None,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: UnixMillis = 1_700_000_000_000;
    const EXPIRES: u64 = 1_700_000_300;

    fn altcha() -> Altcha {
        Altcha::new(b"challenge-key")
    }

    fn solved(work: u64) -> Payload {
        let challenge = altcha().issue(work, EXPIRES, [3; 32]);
        let solution = solve(&challenge.parameters, u32::MAX).unwrap();
        Payload {
            challenge,
            solution,
        }
    }

    #[test]
    fn the_shape_gives_at_least_the_asked_work_with_a_small_cost() {
        for work in [1, 1_000, 250_000, 1_000_000, 16_000_000, 1 << 40] {
            let (cost, prefix) = shape(work);
            let tries = 16u64.pow(prefix);
            let given = u64::from(cost) * tries;
            assert!(
                given >= work && given < work + tries,
                "{work}: {cost} x 16^{prefix}"
            );
            assert!(u64::from(cost) < MIN_COST * 16, "{work}: cost {cost}");
        }
    }

    #[test]
    fn the_signed_json_has_sorted_keys() {
        let challenge = altcha().issue(4_000, EXPIRES, [0; 32]);
        let json = serde_json::to_string(&challenge.parameters).unwrap();
        assert!(
            json.starts_with(r#"{"algorithm":"PBKDF2/SHA-256","cost":250,"expiresAt":1700000300,"keyLength":32,"keyPrefix":"0","nonce":"#),
            "{json}"
        );
    }

    #[test]
    fn a_solved_challenge_verifies_and_proves_its_work() {
        let payload = solved(4_000);
        let opened = altcha().open(&payload.to_base64(), NOW).unwrap();
        let proof = Altcha::check_solution(&opened).unwrap();
        assert_eq!(proof.work, payload.challenge.parameters.work());
        assert_eq!(proof.id, payload.challenge.parameters.nonce);
        assert_eq!(proof.expires_at, EXPIRES * 1_000);
    }

    #[test]
    fn tampered_expired_foreign_and_wrong_payloads_are_refused() {
        let payload = solved(4_000);
        let mut cheaper = payload.clone();
        cheaper.challenge.parameters.key_prefix.clear();
        assert_eq!(
            altcha().open(&cheaper.to_base64(), NOW).err(),
            Some(ProofError::BadSignature)
        );
        assert_eq!(
            altcha().open(&payload.to_base64(), EXPIRES * 1_000).err(),
            Some(ProofError::Expired)
        );
        assert_eq!(
            Altcha::new(b"other").open(&payload.to_base64(), NOW).err(),
            Some(ProofError::BadSignature)
        );
        assert_eq!(
            altcha().open("not base64!", NOW).err(),
            Some(ProofError::Malformed)
        );
        let mut wrong = payload.clone();
        wrong.solution.counter += 1;
        let opened = altcha().open(&wrong.to_base64(), NOW).unwrap();
        assert_eq!(
            Altcha::check_solution(&opened).err(),
            Some(ProofError::WrongSolution)
        );
        let mut forged = payload;
        forged.solution.derived_key = "00".repeat(32);
        let opened = altcha().open(&forged.to_base64(), NOW).unwrap();
        assert_eq!(
            Altcha::check_solution(&opened).err(),
            Some(ProofError::WrongSolution)
        );
    }
}
