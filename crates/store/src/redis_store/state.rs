//! How a key's state is packed into one Redis string, and read back.
//!
//! A state holds only the field groups its dimension's policy uses ([`Layout`]): an address
//! keeps rate and spray fields, an account its lockout. The first byte names the groups
//! present (`FORMAT_TAG | mask`); then each present group's fields, in [`GROUPS`] order, as
//! big-endian doubles (every value is an integer below 2^53, so exact). Fewer fields is less
//! for the functions to unpack, build and pack on every call: most of what a call costs Redis.
//!
//! This module owns the layout: the functions' codecs are generated from it
//! ([`Layout::lua`]), so Lua and Rust cannot drift. A state written under another policy (a
//! rolling deploy that turned a limit on or off) still reads by the groups it names; anything
//! else (an older format, garbage) reads as fresh. The `held_*` fields are what an attempt's
//! lockout admission changed, kept so a compensating release can take it back exactly; they
//! are not part of the core's state. (The global key's signal counts are not kept here: see
//! `signal`.)

use portcullis_core::{Dimension, KeyPolicy, KeyState, Policy, UnixMillis};

/// The high bits of the first byte; the low ones ([`GROUP_BITS`]) are the groups present.
pub const FORMAT_TAG: u8 = 0x30;
/// The bits of the first byte that name the groups (one per entry of [`GROUPS`]).
const GROUP_BITS: u8 = 0x0F;

/// The field groups, in their packed order: a mask bit and the fields.
pub const GROUPS: [(u8, &[&str]); 4] = [
    (RATE, &["attempt_tat", "throttle_tat", "failure_tat"]),
    (
        LOCKOUT,
        &[
            "failures",
            "last_failure",
            "locked_until",
            "temporary_lockouts",
            "permanent",
            "in_flight",
            "held_by",
            "held_failures",
            "held_last_failure",
            "held_locked_until",
            "held_temporary_lockouts",
        ],
    ),
    (
        SPRAY,
        &[
            "spray_count",
            "spray_window_end",
            "banned_until",
            "bans",
            "last_ban",
        ],
    ),
    (SUCCESS, &["success_counted_until"]),
];

/// The GCRA limits' TATs (attempts, throttle, failures).
const RATE: u8 = 1;
/// The lockout's back-off, and what an admission changed (for release).
const LOCKOUT: u8 = 2;
/// The distinct-username ban.
const SPRAY: u8 = 4;
/// When the account's success stops counting in the under-attack signal again.
const SUCCESS: u8 = 8;

/// Which groups one dimension's states hold, under one policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    mask: u8,
}

impl Layout {
    /// The groups `dimension` needs under `policy`.
    pub fn of(policy: &Policy, dimension: Dimension) -> Self {
        let p = policy.for_dimension(dimension);
        let mut mask = 0;
        if p.attempts.is_some() || p.throttle.is_some() || p.failures.is_some() {
            mask |= RATE;
        }
        if p.lockout.is_some() {
            mask |= LOCKOUT;
        }
        if p.spray.is_some() {
            mask |= SPRAY;
        }
        // The record function marks an account's first success in the signal's bucket.
        if dimension == Dimension::Username && policy.global.attack.is_some() {
            mask |= SUCCESS;
        }
        Self { mask }
    }

    /// Whether the states hold the rate limits' TATs.
    pub fn has_rate(self) -> bool {
        self.mask & RATE != 0
    }

    /// Whether the states hold the signal's success bucket.
    pub fn has_success(self) -> bool {
        self.mask & SUCCESS != 0
    }

    fn fields(self) -> impl Iterator<Item = &'static str> {
        GROUPS
            .into_iter()
            .filter(move |(bit, _)| self.mask & bit != 0)
            .flat_map(|(_, fields)| fields.iter().copied())
    }

    /// The dimension's codec as a Lua table literal: `format` (its first byte), `fresh()` (a
    /// state of zeros), `decode(raw)` (nil unless `raw` is in this layout) and `encode(s)`.
    /// Spelled out field by field: a loop over names costs more than the decision. `spack` and
    /// `sunpack` are the library's bound `struct.pack` / `struct.unpack`.
    pub fn lua(self) -> String {
        let fields: Vec<&str> = self.fields().collect();
        let format = FORMAT_TAG | self.mask;
        let struct_format = format!(">B{}", "d".repeat(fields.len()));
        let values: Vec<String> = (1..=fields.len()).map(|i| format!("v{i}")).collect();
        let assign = |value: &dyn Fn(usize) -> String| {
            fields
                .iter()
                .enumerate()
                .map(|(i, f)| format!("{f} = {}", value(i)))
                .collect::<Vec<_>>()
                .join(", ")
        };
        // Each list with its leading comma, so an empty layout (the global key's) still parses.
        let tail = |items: Vec<String>| items.iter().map(|i| format!(", {i}")).collect::<String>();
        let size = 1 + 8 * fields.len();
        format!(
            "{{format = {format}, mask = {mask}, \
             fresh = function() return {{{zeros}}} end, \
             decode = function(raw) if #raw ~= {size} then return nil end \
             local f{values} = sunpack('{struct_format}', raw) \
             if f ~= {format} then return nil end return {{{named}}} end, \
             encode = function(s) return spack('{struct_format}', {format}{read}) end}}",
            mask = self.mask,
            zeros = assign(&|_| "0".to_owned()),
            values = tail(values.clone()),
            named = assign(&|i| values[i].clone()),
            read = tail(fields.iter().map(|f| format!("s.{f}")).collect()),
        )
    }
}

/// A key's state as Redis holds it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StoredState {
    /// The state, except the spray window's usernames (Redis keeps them in a set of their own).
    pub state: KeyState,
    /// How many distinct usernames that set holds.
    pub distinct_usernames: u32,
}

impl StoredState {
    /// Reads a packed state by the groups its first byte names; anything else (an absent key,
    /// another format) is a fresh state, as in the functions.
    pub fn from_packed(packed: &[u8]) -> Self {
        let Some(values) = unpack(packed) else {
            return Self::default();
        };
        let field = |name: &str| {
            values
                .iter()
                .find(|(f, _)| *f == name)
                .map_or(0, |(_, v)| *v)
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

/// The named values of a packed state, or `None` if it is not one.
fn unpack(packed: &[u8]) -> Option<Vec<(&'static str, u64)>> {
    let (&format, rest) = packed.split_first()?;
    if format & !GROUP_BITS != FORMAT_TAG {
        return None;
    }
    let layout = Layout {
        mask: format & GROUP_BITS,
    };
    let fields: Vec<&str> = layout.fields().collect();
    if rest.len() != fields.len() * 8 {
        return None;
    }
    let values = rest.chunks_exact(8).map(|chunk| {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(chunk);
        // Integers below 2^53 (Unix milliseconds, counts): exact in a double.
        f64::from_be_bytes(bytes) as u64
    });
    Some(fields.into_iter().zip(values).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pack(layout: Layout, value: impl Fn(&str) -> f64) -> Vec<u8> {
        let mut packed = vec![FORMAT_TAG | layout.mask];
        for field in layout.fields() {
            packed.extend_from_slice(&value(field).to_be_bytes());
        }
        packed
    }

    #[test]
    fn each_dimension_keeps_only_the_groups_its_policy_uses() {
        let policy = Policy::default();
        let names = |d| Layout::of(&policy, d).fields().collect::<Vec<_>>();
        let ip = names(Dimension::Ip);
        assert_eq!(ip.len(), 8, "{ip:?}");
        assert!(ip.contains(&"attempt_tat") && ip.contains(&"banned_until"));
        assert!(!ip.contains(&"failures"), "an address has no lockout");
        let account = names(Dimension::Username);
        assert!(account.contains(&"held_by") && account.contains(&"success_counted_until"));
        assert!(
            !account.contains(&"attempt_tat"),
            "an account has no rate limit"
        );
        assert!(!names(Dimension::UsernameIp).contains(&"success_counted_until"));
    }

    #[test]
    fn a_packed_state_reads_back_and_anything_else_is_fresh() {
        let policy = Policy::default();
        let layout = Layout::of(&policy, Dimension::Username);
        let packed = pack(layout, |f| match f {
            "locked_until" => 1_764_400_000_123.0,
            "failures" => 4.0,
            "success_counted_until" => 19.0,
            _ => 0.0,
        });
        let stored = StoredState::from_packed(&packed);
        assert_eq!(stored.state.lockout.locked_until, 1_764_400_000_123);
        assert_eq!(stored.state.lockout.failures, 4);
        assert_eq!(stored.state.success_counted_until, 19);
        // The format before layouts (a 2, then 20 doubles), a cut state, garbage: fresh.
        let mut old = vec![2u8];
        old.extend_from_slice(&[0u8; 160]);
        for other in [&[][..], &packed[..10], &old[..], &[1u8; 161][..]] {
            assert_eq!(StoredState::from_packed(other), StoredState::default());
        }
    }

    #[test]
    fn a_state_reads_by_the_groups_it_names_whatever_the_policy_now() {
        let mut policy = Policy::default();
        let before = pack(Layout::of(&policy, Dimension::Ip), |f| match f {
            "attempt_tat" => 7.0,
            "bans" => 2.0,
            _ => 0.0,
        });
        policy.ip.spray = None;
        assert_ne!(
            Layout::of(&policy, Dimension::Ip).mask,
            before[0] & GROUP_BITS
        );
        let stored = StoredState::from_packed(&before);
        assert_eq!(stored.state.attempt_tat, 7);
        assert_eq!(stored.state.spray.bans, 2);
    }

    #[test]
    fn the_lua_codec_names_every_field_of_its_layout_once() {
        let layout = Layout::of(&Policy::default(), Dimension::Ip);
        let lua = layout.lua();
        assert!(lua.starts_with("{format = 53, mask = 5, "), "{lua}");
        assert!(lua.contains("sunpack('>Bdddddddd', raw)"), "{lua}");
        for field in layout.fields() {
            assert_eq!(
                lua.matches(&format!("s.{field},")).count()
                    + lua.matches(&format!("s.{field})")).count(),
                1,
                "{field}: {lua}"
            );
        }
    }
}
