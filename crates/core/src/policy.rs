//! The policy: which limits apply to each dimension, with defaults that follow Keycloak's
//! brute-force detection, Auth0's attack protection and OWASP's guidance.

use serde::{Deserialize, Serialize};

use crate::attack::{AttackSignal, MAX_FAN_OUT_USERNAMES};
use crate::backoff::{Backoff, Strategy};
use crate::challenge::ChallengePolicy;
use crate::gcra::Gcra;
use crate::keys::{AttemptKey, Dimension};
use crate::mfa::MfaPolicy;
use crate::spray::Spray;

const SECOND: u64 = 1_000;
const MINUTE: u64 = 60 * SECOND;
const HOUR: u64 = 60 * MINUTE;

/// The account lockout: Keycloak's knobs, with OWASP's 5 failures rather than Keycloak's 30.
const ACCOUNT_LOCKOUT: Backoff = Backoff {
    max_failures: 5,
    strategy: Strategy::Multiple,
    wait_increment_ms: MINUTE,
    max_wait_ms: 15 * MINUTE,
    failure_reset_ms: 12 * HOUR,
    quick_login_check_ms: 0,
    min_quick_login_wait_ms: MINUTE,
    permanent_after: None,
};

/// The distinct-username ban: `max_usernames` in 10 minutes; bans of 15 minutes, four times
/// longer each time up to a day, forgotten after a week without one (Rauthy-like steps).
const fn stuffing_ban(max_usernames: u32) -> Spray {
    Spray {
        max_usernames,
        window_ms: 10 * MINUTE,
        first_ban_ms: 15 * MINUTE,
        ban_multiplier: 4,
        max_ban_ms: 24 * HOUR,
        level_reset_ms: 7 * 24 * HOUR,
    }
}

/// The limits of one dimension; each part is optional.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyPolicy {
    /// Caps attempts of any outcome (a flood guard), counted when an attempt is admitted.
    pub attempts: Option<Gcra>,
    /// A second, slow cap on attempts of any outcome: suspicious-source throttling (Auth0: 100
    /// attempts, then one every 864 s).
    pub throttle: Option<Gcra>,
    /// Caps failed attempts; never reset by a success.
    pub failures: Option<Gcra>,
    /// Counts consecutive failures and locks out with back-off; reset by a success where the
    /// dimension allows it.
    pub lockout: Option<Backoff>,
    /// Bans a source whose failures hit many distinct usernames (address and subnet only).
    pub spray: Option<Spray>,
    /// The "under attack" signal (global only).
    pub attack: Option<AttackSignal>,
}

impl KeyPolicy {
    /// Whether the dimension limits anything (inactive dimensions are not stored at all).
    pub fn is_active(&self) -> bool {
        self.attempts.is_some()
            || self.throttle.is_some()
            || self.failures.is_some()
            || self.lockout.is_some()
            || self.spray.is_some()
            || self.attack.is_some()
    }
}

/// A policy setting that cannot work.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("policy.{setting}: {problem}")]
pub struct PolicyError {
    /// The setting's path below `policy`.
    pub setting: String,
    /// What is wrong.
    pub problem: &'static str,
}

impl PolicyError {
    pub(crate) fn new(setting: impl Into<String>, problem: &'static str) -> Self {
        Self {
            setting: setting.into(),
            problem,
        }
    }
}

/// The limits of every dimension.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Whether any limit applies. Off only to measure what the defences stop (the drill's
    /// `--policy-off` comparison): then every attempt is verified.
    pub enabled: bool,
    /// Prefix length of an IPv4 client's subnet (24: one /24 network).
    pub ipv4_subnet_prefix: u8,
    /// Prefix length of an IPv6 client's subnet (64: one customer's LAN).
    pub ipv6_subnet_prefix: u8,
    /// Prefix length of an IPv6 client's network (48: one site, or one tunnel broker's
    /// allocation; the 65 536 /64s in it share the `network` limits).
    pub ipv6_network_prefix: u8,
    /// When an attempt must carry a solved proof-of-work challenge.
    pub challenge: ChallengePolicy,
    /// The whole service: by default only the "under attack" signal, never a cap.
    pub global: KeyPolicy,
    /// One client address.
    pub ip: KeyPolicy,
    /// The client's subnet.
    pub subnet: KeyPolicy,
    /// An IPv6 client's network.
    pub network: KeyPolicy,
    /// One account, from anywhere.
    pub username: KeyPolicy,
    /// One account from one address.
    pub username_ip: KeyPolicy,
    /// One trusted device (device cookie): its attempts skip the account's lockouts.
    pub device: KeyPolicy,
    /// Second-factor codes: per login and per account (see [`crate::mfa`]).
    pub mfa: MfaPolicy,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            enabled: true,
            ipv4_subnet_prefix: 24,
            ipv6_subnet_prefix: 64,
            ipv6_network_prefix: 48,
            challenge: ChallengePolicy::default(),
            // Only the under-attack signal: a global cap would let an attacker lock everyone out.
            global: KeyPolicy {
                attack: Some(AttackSignal {
                    window_ms: 5 * MINUTE,
                    // Low, because what it turns on is cheap for people (a sub-second challenge
                    // on new devices) and every attempt before it is a free guess: 30% of the
                    // logins without a trusted device failing is well above the typos of a
                    // normal day (5 to 15%).
                    min_attempts: 20,
                    failure_percent: 30,
                    tighten_factor: 4,
                    // Ten seconds: a list at a few pairs a second shows within its first
                    // handful, and the recent estimate still holds a busy minute's sixth.
                    bucket_ms: 10 * SECOND,
                    // Half an hour: long enough that a surge or an attack of minutes barely
                    // moves it, short enough to follow the day.
                    baseline_half_life_ms: 30 * MINUTE,
                    warm_up_ms: 10 * MINUTE,
                    // Five standard deviations and three counts above the baseline: ordinary
                    // days do not get there, a list's first handful of pairs does.
                    min_z: 5,
                    min_excess: 3,
                    hold_ms: 5 * MINUTE,
                    // As one address's distinct-username ban: 10 in 10 minutes.
                    fan_out_usernames: 10,
                    fan_out_window_ms: 10 * MINUTE,
                }),
                ..KeyPolicy::default()
            },
            ip: KeyPolicy {
                // A client may send 30 attempts at once, then one a second.
                attempts: Some(Gcra {
                    burst: 30,
                    interval_ms: SECOND,
                }),
                // Auth0's suspicious-IP throttling shape: 100 attempts, then one every 864 s
                // (100 a day); offices behind one address belong on the allowlist.
                throttle: Some(Gcra {
                    burst: 100,
                    interval_ms: 864 * SECOND,
                }),
                // ...and the same budget for failures, which successes never refill.
                failures: Some(Gcra {
                    burst: 100,
                    interval_ms: 864 * SECOND,
                }),
                lockout: None,
                // One address failing on 10 accounts in 10 minutes is stuffing, not typos.
                spray: Some(stuffing_ban(10)),
                attack: None,
            },
            subnet: KeyPolicy {
                attempts: Some(Gcra {
                    burst: 120,
                    interval_ms: SECOND / 4,
                }),
                throttle: Some(Gcra {
                    burst: 500,
                    interval_ms: 173 * SECOND,
                }),
                failures: Some(Gcra {
                    burst: 500,
                    interval_ms: 173 * SECOND,
                }),
                lockout: None,
                spray: Some(stuffing_ban(30)),
                attack: None,
            },
            // A /48 holds 65 536 subnets: what one address rotating through them may spend.
            network: KeyPolicy {
                attempts: Some(Gcra {
                    burst: 240,
                    interval_ms: SECOND / 8,
                }),
                // 300 attempts, then 1 000 a day: three times one address's budget, where an
                // office behind one IPv4 address has one (offices belong on the allowlist).
                throttle: Some(Gcra {
                    burst: 300,
                    interval_ms: 86 * SECOND,
                }),
                failures: Some(Gcra {
                    burst: 300,
                    interval_ms: 86 * SECOND,
                }),
                lockout: None,
                spray: Some(stuffing_ban(60)),
                attack: None,
            },
            username: KeyPolicy {
                lockout: Some(ACCOUNT_LOCKOUT),
                ..KeyPolicy::default()
            },
            username_ip: KeyPolicy {
                // Auth0's brute-force protection shape: 10 failures for one account from one
                // address block that pair.
                lockout: Some(Backoff {
                    max_failures: 10,
                    strategy: Strategy::Linear,
                    wait_increment_ms: 15 * MINUTE,
                    max_wait_ms: 24 * HOUR,
                    failure_reset_ms: 24 * HOUR,
                    quick_login_check_ms: 0,
                    min_quick_login_wait_ms: MINUTE,
                    permanent_after: None,
                }),
                ..KeyPolicy::default()
            },
            // OWASP: a trusted device gets the account's own lockout, for itself alone, and (as it
            // skips the source's limits) a rate limit of its own.
            device: KeyPolicy {
                attempts: Some(Gcra {
                    burst: 10,
                    interval_ms: SECOND,
                }),
                lockout: Some(ACCOUNT_LOCKOUT),
                ..KeyPolicy::default()
            },
            mfa: MfaPolicy::default(),
        }
    }
}

impl Policy {
    /// The limits of one dimension.
    pub fn for_dimension(&self, dimension: Dimension) -> &KeyPolicy {
        match dimension {
            Dimension::Global => &self.global,
            Dimension::Ip => &self.ip,
            Dimension::Subnet => &self.subnet,
            Dimension::Network => &self.network,
            Dimension::Username => &self.username,
            Dimension::UsernameIp => &self.username_ip,
            Dimension::Device => &self.device,
        }
    }

    /// A dimension's limits as an attempt meets them: tightened while the service is under
    /// attack, where the dimension allows it.
    pub fn effective(&self, dimension: Dimension, under_attack: bool) -> KeyPolicy {
        let limits = *self.for_dimension(dimension);
        let signal = self
            .global
            .attack
            .filter(|_| under_attack && dimension.tightens_under_attack());
        match signal {
            Some(signal) => KeyPolicy {
                attempts: limits.attempts.map(|g| signal.tighten(g)),
                throttle: limits.throttle.map(|g| signal.tighten(g)),
                failures: limits.failures.map(|g| signal.tighten(g)),
                ..limits
            },
            None => limits,
        }
    }

    /// Keeps the keys whose dimension limits anything (none when the policy is disabled).
    pub fn active_keys(&self, mut keys: Vec<AttemptKey>) -> Vec<AttemptKey> {
        keys.retain(|k| self.enabled && self.for_dimension(k.dimension).is_active());
        keys
    }

    /// Checks that every limit can admit something and every lockout has a threshold.
    pub fn validate(&self) -> Result<(), PolicyError> {
        if self.ipv4_subnet_prefix > 32 {
            return Err(PolicyError::new("ipv4_subnet_prefix", "must be in 0..=32"));
        }
        if self.ipv6_subnet_prefix > 128 {
            return Err(PolicyError::new("ipv6_subnet_prefix", "must be in 0..=128"));
        }
        if self.ipv6_network_prefix > self.ipv6_subnet_prefix {
            return Err(PolicyError::new(
                "ipv6_network_prefix",
                "must be in 0..=ipv6_subnet_prefix",
            ));
        }
        self.challenge.validate()?;
        self.mfa.validate()?;
        for dimension in Dimension::ALL {
            let name = dimension.as_str();
            let limits = self.for_dimension(dimension);
            let gcras = [
                ("attempts", limits.attempts),
                ("throttle", limits.throttle),
                ("failures", limits.failures),
            ];
            for (field, gcra) in gcras {
                let Some(gcra) = gcra else { continue };
                let problem = if gcra.burst == 0 {
                    "burst must be at least 1"
                } else if gcra.interval_ms == 0 {
                    "interval_ms must be at least 1"
                } else {
                    continue;
                };
                return Err(PolicyError::new(format!("{name}.{field}"), problem));
            }
            if let Some(attack) = limits.attack {
                if dimension != Dimension::Global {
                    let setting = format!("{name}.attack");
                    return Err(PolicyError::new(
                        setting,
                        "is only for the global dimension",
                    ));
                }
                let at_least_one = [
                    ("window_ms", attack.window_ms),
                    ("tighten_factor", u64::from(attack.tighten_factor)),
                    ("bucket_ms", attack.bucket_ms),
                    ("baseline_half_life_ms", attack.baseline_half_life_ms),
                    ("fan_out_usernames", u64::from(attack.fan_out_usernames)),
                    ("fan_out_window_ms", attack.fan_out_window_ms),
                ];
                if let Some((field, _)) = at_least_one.iter().find(|(_, value)| *value == 0) {
                    let setting = format!("{name}.attack.{field}");
                    return Err(PolicyError::new(setting, "must be at least 1"));
                }
                if attack.fan_out_usernames > MAX_FAN_OUT_USERNAMES {
                    let setting = format!("{name}.attack.fan_out_usernames");
                    return Err(PolicyError::new(setting, "must be at most 255"));
                }
            }
            if let Some(spray) = limits.spray {
                let setting = |field: &str| format!("{name}.spray.{field}");
                if spray.max_usernames == 0 {
                    return Err(PolicyError::new(
                        setting("max_usernames"),
                        "must be at least 1",
                    ));
                }
                if spray.window_ms == 0 {
                    return Err(PolicyError::new(setting("window_ms"), "must be at least 1"));
                }
                if spray.ban_multiplier == 0 {
                    return Err(PolicyError::new(
                        setting("ban_multiplier"),
                        "must be at least 1",
                    ));
                }
            }
            if let Some(backoff) = limits.lockout {
                if backoff.max_failures == 0 {
                    let setting = format!("{name}.lockout.max_failures");
                    return Err(PolicyError::new(setting, "must be at least 1"));
                }
                if backoff.failure_reset_ms == 0 {
                    let setting = format!("{name}.lockout.failure_reset_ms");
                    return Err(PolicyError::new(setting, "must be at least 1"));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_policy_is_valid_and_has_no_global_cap() {
        let policy = Policy::default();
        assert_eq!(policy.validate(), Ok(()));
        assert!(policy.global.attempts.is_none() && policy.global.throttle.is_none());
        assert!(policy.global.attack.is_some());
    }

    #[test]
    fn a_disabled_policy_counts_nothing() {
        let policy = Policy {
            enabled: false,
            ..Policy::default()
        };
        let deriver = crate::KeyDeriver::new(b"k", 24, 64, 48).unwrap();
        let username = crate::Username::parse("alice").unwrap();
        let keys = deriver.keys("192.0.2.1".parse().unwrap(), &username, None);
        assert!(policy.active_keys(keys.clone()).is_empty());
        assert_eq!(
            Policy::default().active_keys(keys).len(),
            Dimension::ALL.len() - 2,
            "all but the device key, and the network key of IPv6 clients"
        );
    }

    #[test]
    fn a_fan_out_past_what_the_shared_count_holds_is_refused_with_the_setting_name() {
        let mut policy = Policy::default();
        policy.global.attack.as_mut().unwrap().fan_out_usernames = MAX_FAN_OUT_USERNAMES;
        assert!(policy.validate().is_ok());
        policy.global.attack.as_mut().unwrap().fan_out_usernames = MAX_FAN_OUT_USERNAMES + 1;
        let err = policy.validate().unwrap_err();
        assert_eq!(
            err.to_string(),
            "policy.global.attack.fan_out_usernames: must be at most 255"
        );
    }

    #[test]
    fn a_zero_burst_is_refused_with_the_setting_name() {
        let mut policy = Policy::default();
        policy.ip.attempts = Some(Gcra {
            burst: 0,
            interval_ms: 1,
        });
        let err = policy.validate().unwrap_err();
        assert_eq!(
            err.to_string(),
            "policy.ip.attempts: burst must be at least 1"
        );
    }
}
