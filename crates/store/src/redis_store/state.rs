//! A key's packed state read back: a format byte, then the fields `lua/common.lua` lists in
//! `FIELDS`, in that order, as big-endian doubles. The `held_*` fields are what an attempt's
//! lockout admission changed, kept so a compensating release can take it back exactly; they are
//! not part of the core's state. (The global key's signal counts are not kept here: see
//! `signal`.)

use portcullis_core::{KeyPolicy, KeyState, UnixMillis};

/// The packed layout's format byte (`PACKED_FORMAT` in `lua/common.lua`).
const PACKED_FORMAT: u8 = 2;

/// The fields in their packed order (`FIELDS` in `lua/common.lua`).
const FIELDS: [&str; 20] = [
    "attempt_tat",
    "throttle_tat",
    "failure_tat",
    "failures",
    "last_failure",
    "locked_until",
    "temporary_lockouts",
    "permanent",
    "in_flight",
    "spray_count",
    "spray_window_end",
    "banned_until",
    "bans",
    "last_ban",
    "held_by",
    "held_failures",
    "held_last_failure",
    "held_locked_until",
    "held_temporary_lockouts",
    "success_counted_until",
];

/// A key's state as Redis holds it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StoredState {
    /// The state, except the spray window's usernames (Redis keeps them in a set of their own).
    pub state: KeyState,
    /// How many distinct usernames that set holds.
    pub distinct_usernames: u32,
}

impl StoredState {
    /// Reads a packed state; anything else (an absent key, another format) is a fresh state,
    /// as in the functions.
    pub fn from_packed(packed: &[u8]) -> Self {
        let values: Vec<u64> = match packed.split_first() {
            Some((&PACKED_FORMAT, rest)) if rest.len() == FIELDS.len() * 8 => rest
                .chunks_exact(8)
                .map(|chunk| {
                    let mut bytes = [0u8; 8];
                    bytes.copy_from_slice(chunk);
                    // Integers below 2^53 (Unix milliseconds, counts): exact in a double.
                    f64::from_be_bytes(bytes) as u64
                })
                .collect(),
            _ => vec![0; FIELDS.len()],
        };
        let field = |name: &str| {
            FIELDS
                .iter()
                .position(|f| *f == name)
                .map_or(0, |at| values[at])
        };
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The Lua side's field list is this one, in this order.
    #[test]
    fn the_packed_order_is_the_lua_fields_order() {
        let lua = include_str!("lua/common.lua");
        let start = lua.find("local FIELDS = {").unwrap();
        let end = start + lua[start..].find('}').unwrap();
        let listed: Vec<&str> = lua[start..end].split('\'').skip(1).step_by(2).collect();
        assert_eq!(listed, FIELDS);
        let format = lua.split("local PACKED = '>B").nth(1).unwrap();
        let doubles = format.chars().take_while(|&c| c == 'd').count();
        assert_eq!(doubles, FIELDS.len(), "PACKED holds one double a field");
    }

    #[test]
    fn a_packed_state_reads_back_and_anything_else_is_fresh() {
        let mut packed = vec![PACKED_FORMAT];
        for (i, field) in FIELDS.iter().enumerate() {
            let value = if *field == "locked_until" {
                1_764_400_000_123.0
            } else {
                i as f64
            };
            packed.extend_from_slice(&f64::to_be_bytes(value));
        }
        let stored = StoredState::from_packed(&packed);
        assert_eq!(stored.state.lockout.locked_until, 1_764_400_000_123);
        assert_eq!(stored.state.throttle_tat, 1);
        assert_eq!(stored.distinct_usernames, 9);
        assert_eq!(stored.state.success_counted_until, 19);
        for other in [&[][..], &packed[..10], &[1u8; 161][..]] {
            assert_eq!(StoredState::from_packed(other), StoredState::default());
        }
    }
}
