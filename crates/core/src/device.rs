//! Device cookies (OWASP "slow down online guessing with device cookies").
//!
//! A successful login hands the browser a cookie that proves "this device logged into this
//! account before": a random device id and an HMAC over the normalised username and that id.
//! Attempts presenting a valid cookie for their username are counted per device instead of per
//! account, so an attacker who locks an account out (from devices without the cookie) does not
//! lock its owner out of a device they have used. The id is random, so it reveals nothing; the
//! MAC binds it to one username, so a cookie for one account is worth nothing for another.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::username::Username;

const VERSION: &str = "v1";
/// Hex characters of a device id (128 random bits).
const ID_CHARS: usize = 32;

/// A device that proved a past login to the account it claims (its random id, hex).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct DeviceId(String);

impl DeviceId {
    /// The id, as it appears in the device's counter key.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Issues and checks device cookies with a server secret.
#[derive(Clone)]
pub struct DeviceCookies {
    mac: Hmac<Sha256>,
}

impl DeviceCookies {
    /// Cookies signed with `key` (derived from the deployment's HMAC secret).
    pub fn new(key: &[u8]) -> Self {
        Self {
            mac: crate::keyed_mac(key),
        }
    }

    fn sign(&self, username: &Username, id: &str) -> Hmac<Sha256> {
        let mut mac = self.mac.clone();
        mac.update(VERSION.as_bytes());
        mac.update(&[0]);
        mac.update(username.as_str().as_bytes());
        mac.update(&[0]);
        mac.update(id.as_bytes());
        mac
    }

    /// The cookie value for a new device of `username`, with 16 random bytes from the caller.
    pub fn issue(&self, username: &Username, random: [u8; 16]) -> String {
        let id = hex::encode(random);
        let tag = hex::encode(self.sign(username, &id).finalize().into_bytes());
        format!("{VERSION}.{id}.{tag}")
    }

    /// The device a cookie proves for `username`; `None` for anything forged, malformed or
    /// issued for another username. The MAC is compared in constant time.
    pub fn verify(&self, cookie: &str, username: &Username) -> Option<DeviceId> {
        let mut parts = cookie.split('.');
        let (version, id, tag) = (parts.next()?, parts.next()?, parts.next()?);
        let well_formed = version == VERSION
            && parts.next().is_none()
            && id.len() == ID_CHARS
            && id.bytes().all(|b| b.is_ascii_hexdigit());
        if !well_formed {
            return None;
        }
        let tag = hex::decode(tag).ok()?;
        self.sign(username, id).verify_slice(&tag).ok()?;
        Some(DeviceId(id.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn user(name: &str) -> Username {
        Username::parse(name).unwrap()
    }

    #[test]
    fn a_cookie_proves_its_device_for_its_username_only() {
        let cookies = DeviceCookies::new(b"secret");
        let cookie = cookies.issue(&user("alice"), [7; 16]);
        let device = cookies.verify(&cookie, &user("Alice")).unwrap();
        assert_eq!(device.as_str(), hex::encode([7u8; 16]));
        assert_eq!(cookies.verify(&cookie, &user("bob")), None);
        assert_eq!(
            DeviceCookies::new(b"other").verify(&cookie, &user("alice")),
            None
        );
    }

    #[test]
    fn tampered_and_malformed_cookies_prove_nothing() {
        let cookies = DeviceCookies::new(b"secret");
        let cookie = cookies.issue(&user("alice"), [7; 16]);
        let tampered = cookie.replacen("0707", "0708", 1);
        for bad in [
            tampered.as_str(),
            "",
            "v1",
            "v1..",
            "v2.abc.def",
            &format!("{cookie}.x"),
        ] {
            assert_eq!(cookies.verify(bad, &user("alice")), None, "{bad}");
        }
    }

    proptest! {
        #[test]
        fn any_cookie_text_is_checked_without_panic(text in any::<String>()) {
            let _ = DeviceCookies::new(b"k").verify(&text, &user("alice"));
        }
    }
}
