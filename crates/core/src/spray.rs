//! The credential-stuffing signature: one source, many accounts, one try each.
//!
//! A source (an address or a subnet) whose failures hit `max_usernames` distinct usernames
//! within `window_ms` is banned. Bans escalate: the first lasts `first_ban_ms`, each next one
//! `ban_multiplier` times longer, capped at `max_ban_ms`; the escalation is forgotten after
//! `level_reset_ms` without a ban. Only usernames' keyed hashes are kept, at most
//! `max_usernames` of them per source, so memory stays bounded whatever the attacker sends.

use serde::{Deserialize, Serialize};

use crate::UnixMillis;

/// Settings of the distinct-username signal for one dimension.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spray {
    /// Distinct usernames failing from one source within the window that start a ban.
    pub max_usernames: u32,
    /// The window, from the first failure counted in it.
    pub window_ms: u64,
    /// The first ban.
    pub first_ban_ms: u64,
    /// Each further ban lasts this many times longer than the one before.
    pub ban_multiplier: u32,
    /// The longest ban.
    pub max_ban_ms: u64,
    /// Bans are forgotten (the next is a first one again) after this long without one.
    pub level_reset_ms: u64,
}

/// One source's distinct failed usernames and ban.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SprayState {
    /// Keyed hashes of the usernames that failed in the current window (at most
    /// `max_usernames`).
    pub usernames: Vec<String>,
    /// When the current window ends (0: no window open).
    pub window_end: UnixMillis,
    /// Attempts are refused until then.
    pub banned_until: UnixMillis,
    /// Bans so far, for the escalation.
    pub bans: u32,
    /// When the last ban started.
    pub last_ban: UnixMillis,
}

impl Spray {
    /// The length of the ban after `bans` earlier ones.
    pub fn ban_length(&self, bans: u32) -> u64 {
        let mut length = self.first_ban_ms;
        for _ in 0..bans {
            length = length.saturating_mul(u64::from(self.ban_multiplier));
            if length >= self.max_ban_ms {
                break;
            }
        }
        length.min(self.max_ban_ms)
    }

    /// Records a failure for the username with keyed hash `username` at `now`; returns when
    /// the ban it started ends, if it started one.
    pub fn on_failure(
        &self,
        state: &mut SprayState,
        username: &str,
        now: UnixMillis,
    ) -> Option<UnixMillis> {
        if now >= state.window_end {
            state.usernames.clear();
            state.window_end = now.saturating_add(self.window_ms);
        }
        let limit = usize::try_from(self.max_usernames).unwrap_or(usize::MAX);
        if state.usernames.len() < limit && !state.usernames.iter().any(|u| u == username) {
            state.usernames.push(username.to_owned());
        }
        if state.usernames.len() < limit {
            return None;
        }
        if state.bans > 0 && now.saturating_sub(state.last_ban) >= self.level_reset_ms {
            state.bans = 0;
        }
        let until = now.saturating_add(self.ban_length(state.bans));
        state.banned_until = state.banned_until.max(until);
        state.bans = state.bans.saturating_add(1);
        state.last_ban = now;
        state.usernames.clear();
        state.window_end = 0;
        Some(state.banned_until)
    }

    /// Distinct usernames failed from the source in its window open at `now`.
    pub fn usernames_at(&self, state: &SprayState, now: UnixMillis) -> u32 {
        if now >= state.window_end {
            return 0;
        }
        u32::try_from(state.usernames.len()).unwrap_or(u32::MAX)
    }

    /// Milliseconds the source is banned for at `now` (`None`: not banned).
    pub fn banned_for(&self, state: &SprayState, now: UnixMillis) -> Option<u64> {
        (state.banned_until > now).then(|| state.banned_until - now)
    }

    /// When the state becomes equivalent to a fresh one.
    pub fn expires_at(&self, state: &SprayState) -> UnixMillis {
        let window = if state.usernames.is_empty() {
            0
        } else {
            state.window_end
        };
        let escalation = if state.bans > 0 {
            state.last_ban.saturating_add(self.level_reset_ms)
        } else {
            0
        };
        window.max(state.banned_until).max(escalation)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SPRAY: Spray = Spray {
        max_usernames: 3,
        window_ms: 10_000,
        first_ban_ms: 1_000,
        ban_multiplier: 4,
        max_ban_ms: 20_000,
        level_reset_ms: 100_000,
    };

    #[test]
    fn distinct_usernames_within_the_window_start_a_ban() {
        let mut state = SprayState::default();
        assert_eq!(SPRAY.on_failure(&mut state, "a", 0), None);
        assert_eq!(
            SPRAY.on_failure(&mut state, "a", 1),
            None,
            "a repeat is not distinct"
        );
        assert_eq!(SPRAY.on_failure(&mut state, "b", 2), None);
        assert_eq!(SPRAY.on_failure(&mut state, "c", 3), Some(1_003));
        assert_eq!(SPRAY.banned_for(&state, 500), Some(503));
        assert_eq!(SPRAY.banned_for(&state, 1_003), None);
    }

    #[test]
    fn usernames_outside_the_window_do_not_add_up() {
        let mut state = SprayState::default();
        SPRAY.on_failure(&mut state, "a", 0);
        SPRAY.on_failure(&mut state, "b", 1);
        assert_eq!(SPRAY.on_failure(&mut state, "c", 10_000), None);
        assert_eq!(state.usernames, ["c"]);
    }

    #[test]
    fn bans_escalate_and_the_escalation_is_forgotten_later() {
        assert_eq!(
            (0..5).map(|n| SPRAY.ban_length(n)).collect::<Vec<_>>(),
            [1_000, 4_000, 16_000, 20_000, 20_000]
        );
        let mut state = SprayState::default();
        let mut now = 0;
        let mut bans = Vec::new();
        for round in 0..3 {
            for user in ["a", "b", "c"] {
                if let Some(until) = SPRAY.on_failure(&mut state, &format!("{round}{user}"), now) {
                    bans.push(until - now);
                }
                now += 1;
            }
        }
        assert_eq!(bans, [1_000, 4_000, 16_000]);
        now += SPRAY.level_reset_ms;
        for user in ["x", "y", "z"] {
            SPRAY.on_failure(&mut state, user, now);
        }
        assert_eq!(state.banned_until - now, 1_000);
    }

    proptest! {
        /// However many usernames fail, the state holds at most `max_usernames` of them.
        #[test]
        fn memory_per_source_is_bounded(users in proptest::collection::vec(0u32..1_000, 0..200)) {
            let mut state = SprayState::default();
            for (i, user) in users.iter().enumerate() {
                SPRAY.on_failure(&mut state, &user.to_string(), i as u64);
                prop_assert!(state.usernames.len() <= SPRAY.max_usernames as usize);
            }
        }
    }
}
