//! Familiar networks: where an account's owner has logged in before (Entra ID's familiar
//! locations, Auth0's new-location detection).
//!
//! A leaked list is replayed from addresses its owner never used, and it carries no device
//! cookie. So with `policy.challenge.unfamiliar_networks` on (the default), a login with no
//! trusted device, from a network the account has not logged in from within `familiar_days`
//! (nor was registered from), must first solve a challenge (see [`crate::challenge`]), whatever
//! the signal says: the first guesses of a list, on a cold or busy service, no longer reach the
//! hash unpaid. An account with no history knows no network. A person pays one sub-second proof
//! per new network and browser. The signal does not count these challenges
//! ([`crate::ChallengePolicy::signal_counts`]).
//!
//! A network is the attempt's IPv6 network (/48 by default) or, for IPv4, its subnet (/24): the
//! same key text the source is counted under, so a new device at home is familiar. Each account
//! remembers its [`MAX_FAMILIAR_NETWORKS`] latest, each until `familiar_days` after its last
//! success there.

use crate::UnixMillis;
use crate::keys::{AttemptKey, Dimension};

/// How many networks an account remembers; the one whose memory ends first makes room.
pub const MAX_FAMILIAR_NETWORKS: usize = 8;

/// The networks an account logged in from, each with when it stops being familiar.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FamiliarNetworks {
    /// (network key text, until), ordered by until and then by network (as Redis orders a
    /// sorted set by score and then by member).
    networks: Vec<(String, UnixMillis)>,
}

impl FamiliarNetworks {
    /// Whether `network` is familiar at `now`.
    pub fn knows(&self, network: &str, now: UnixMillis) -> bool {
        self.networks
            .iter()
            .any(|(known, until)| known == network && *until > now)
    }

    /// Remembers a success from `network` until `until`, forgetting what ended by `now` and,
    /// past [`MAX_FAMILIAR_NETWORKS`], the networks whose memory ends first.
    pub fn remember(&mut self, network: &str, until: UnixMillis, now: UnixMillis) {
        self.networks
            .retain(|(known, ends)| known != network && *ends > now);
        if until > now {
            self.networks.push((network.to_owned(), until));
        }
        self.networks
            .sort_by(|(a, a_until), (b, b_until)| a_until.cmp(b_until).then_with(|| a.cmp(b)));
        let excess = self.networks.len().saturating_sub(MAX_FAMILIAR_NETWORKS);
        self.networks.drain(..excess);
    }

    /// When the last network stops being familiar (0: none is).
    pub fn expires_at(&self) -> UnixMillis {
        self.networks
            .iter()
            .map(|(_, until)| *until)
            .max()
            .unwrap_or(0)
    }
}

/// The key an attempt's network is remembered under among its `keys`: the IPv6 network's if
/// there is one, else the subnet's (`None` when the policy counts neither).
pub fn network_of(keys: &[AttemptKey]) -> Option<&AttemptKey> {
    let find = |dimension| keys.iter().find(|k| k.dimension == dimension);
    find(Dimension::Network).or_else(|| find(Dimension::Subnet))
}

/// The account's key among an attempt's `keys`, which holds its familiar networks (absent for
/// an attempt from a trusted device, which is counted per device alone).
pub fn account_of(keys: &[AttemptKey]) -> Option<&AttemptKey> {
    keys.iter().find(|k| k.dimension == Dimension::Username)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{KeyDeriver, Username};

    const DAY: UnixMillis = 86_400_000;

    #[test]
    fn a_network_is_familiar_until_its_memory_ends() {
        let mut known = FamiliarNetworks::default();
        assert!(!known.knows("net:192.0.2.0/24", 0));
        known.remember("net:192.0.2.0/24", 30 * DAY, 0);
        assert!(known.knows("net:192.0.2.0/24", 30 * DAY - 1));
        assert!(!known.knows("net:192.0.2.0/24", 30 * DAY));
        assert!(!known.knows("net:198.51.100.0/24", 1));
        // Another success there extends it.
        known.remember("net:192.0.2.0/24", 40 * DAY, 20 * DAY);
        assert!(known.knows("net:192.0.2.0/24", 35 * DAY));
        assert_eq!(known.expires_at(), 40 * DAY);
    }

    #[test]
    fn the_network_whose_memory_ends_first_makes_room() {
        let mut known = FamiliarNetworks::default();
        for i in 0..=MAX_FAMILIAR_NETWORKS as u64 {
            known.remember(&format!("net:10.0.{i}.0/24"), DAY + i, i);
        }
        assert!(!known.knows("net:10.0.0.0/24", 0));
        for i in 1..=MAX_FAMILIAR_NETWORKS as u64 {
            assert!(known.knows(&format!("net:10.0.{i}.0/24"), MAX_FAMILIAR_NETWORKS as u64));
        }
    }

    #[test]
    fn the_network_is_the_ipv6_networks_else_the_subnets() {
        let deriver = KeyDeriver::new(b"k", 24, 64, 48).unwrap();
        let name = Username::parse("alice").unwrap();
        let v4 = deriver.keys("192.0.2.7".parse().unwrap(), &name, None);
        assert_eq!(network_of(&v4).unwrap().key, "net:192.0.2.0/24");
        let v6 = deriver.keys("2001:db8:1:2::7".parse().unwrap(), &name, None);
        assert_eq!(network_of(&v6).unwrap().key, "nw:2001:db8:1::/48");
        assert_eq!(account_of(&v4).unwrap().dimension, Dimension::Username);
    }
}
