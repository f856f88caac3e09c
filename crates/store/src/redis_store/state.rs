//! A key's state hash read back by field name (the names `lua/common.lua` lists in `FIELDS`).

use std::collections::HashMap;

use portcullis_core::{KeyPolicy, KeyState, UnixMillis};

/// A key's state as Redis holds it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StoredState {
    /// The state, except the spray window's usernames (Redis keeps them in a set of their own).
    pub state: KeyState,
    /// How many distinct usernames that set holds.
    pub distinct_usernames: u32,
}

impl StoredState {
    /// Reads the hash's fields by name; a missing field is 0, as in the scripts.
    pub fn from_fields(fields: &HashMap<String, u64>) -> Self {
        let field = |name: &str| fields.get(name).copied().unwrap_or(0);
        let small = |name: &str| u32::try_from(field(name)).unwrap_or(u32::MAX);
        let mut state = KeyState {
            attempt_tat: field("attempt_tat"),
            throttle_tat: field("throttle_tat"),
            failure_tat: field("failure_tat"),
            success_counted_until: field("success_counted_until"),
            ..KeyState::default()
        };
        let lockout = &mut state.lockout;
        lockout.failures = small("failures");
        lockout.last_failure = field("last_failure");
        lockout.locked_until = field("locked_until");
        lockout.temporary_lockouts = small("temporary_lockouts");
        lockout.permanent = field("permanent") == 1;
        lockout.in_flight = small("in_flight");
        let spray = &mut state.spray;
        spray.window_end = field("spray_window_end");
        spray.banned_until = field("banned_until");
        spray.bans = small("bans");
        spray.last_ban = field("last_ban");
        let attack = &mut state.attack;
        attack.window = field("attack_window");
        attack.attempts = small("attack_attempts");
        attack.failures = small("attack_failures");
        attack.previous_attempts = small("previous_attempts");
        attack.previous_failures = small("previous_failures");
        Self {
            state,
            distinct_usernames: small("spray_count"),
        }
    }

    /// When the state becomes as good as fresh (`KeyState::expires_at`), counting the spray
    /// window that the usernames set (not in `state`) keeps open.
    pub fn expires_at(&self, policy: &KeyPolicy) -> Option<UnixMillis> {
        let window = if self.distinct_usernames > 0 && policy.spray.is_some() {
            self.state.spray.window_end
        } else {
            0
        };
        self.state.expires_at(policy).map(|at| at.max(window))
    }
}
