//! Portcullis' login policy as pure functions: the specification every store implements.
//!
//! Nothing here performs I/O or reads a clock. Every rule is a function of
//! `(policy, state, event, now)`, where `now` is milliseconds since the Unix epoch
//! ([`UnixMillis`]). The stores (memory, Redis) fetch the state of the keys an attempt touches,
//! let this crate decide, and write the new state back atomically.
//!
//! - [`attack`]: the service-wide "under attack" signal (challenges, tighter per-address limits).
//! - [`gcra`]: rate limits (generic cell rate algorithm).
//! - [`backoff`]: Keycloak-style failure counting and lockout back-off.
//! - [`challenge`]: when an attempt must first solve a proof-of-work challenge, and how hard.
//! - [`altcha`]: that challenge in ALTCHA's v2 protocol: issued, solved and verified.
//! - [`spray`]: the credential-stuffing signature (many usernames from one source) and bans.
//! - [`username`]: username normalisation.
//! - [`device`]: device cookies, so an account's owner is not locked out with its attacker.
//! - [`familiar`]: the networks each account logged in from, so a new one can be challenged.
//! - [`mfa`]: second-factor codes: per-login and per-account limits, TOTP steps and replay.
//! - [`keys`]: the dimensions an attempt is counted under, and their store keys.
//! - [`policy`]: the per-dimension policy and its defaults.
//! - [`decision`]: the decision across dimensions and the effect of an outcome.
//! - [`model`]: a reference model (a plain map of key states) used by property tests.

pub mod altcha;
pub mod attack;
pub mod backoff;
pub mod challenge;
pub mod decision;
pub mod device;
pub mod familiar;
pub mod gcra;
pub mod keys;
pub mod mfa;
pub mod model;
pub mod policy;
pub mod spray;
pub mod username;

/// A point in time: milliseconds since the Unix epoch. Durations are plain millisecond counts.
pub type UnixMillis = u64;

/// HMAC-SHA-256 keyed with `key`, the one way this crate keys its MACs (usernames in keys,
/// device cookies, challenges).
fn keyed_mac(key: &[u8]) -> hmac::Hmac<sha2::Sha256> {
    use hmac::KeyInit;
    // HMAC takes keys of any length; the fallback never happens.
    hmac::Hmac::new_from_slice(key).unwrap_or_else(|_| hmac::Hmac::new(&Default::default()))
}

/// `bytes` in lowercase hex, written into the string at once rather than through `hex::encode`'s
/// character iterator: every request writes some (its request id, the username's digest, a
/// bearer token's digest), refused floods included.
pub fn hex_string(bytes: &[u8]) -> String {
    let mut text = vec![0u8; bytes.len() * 2];
    // Neither fails (the buffer has the length hex needs, and hex is ASCII).
    match hex::encode_to_slice(bytes, &mut text).map(|()| String::from_utf8(text)) {
        Ok(Ok(text)) => text,
        _ => hex::encode(bytes),
    }
}

pub use challenge::{ChallengeMode, ChallengePolicy};
pub use decision::{Decision, Denial, KeyState, LockoutEvent, Outcome, Reason, Verified};
pub use device::{DeviceCookies, DeviceId};
pub use keys::{AttemptKey, Dimension, KeyDeriver};
pub use policy::{KeyPolicy, Policy};
pub use username::{Username, UsernameError};
