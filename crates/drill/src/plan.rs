//! A scenario made concrete: the accounts with their passwords, the attacker's credential list
//! with a source address per pair, and the legitimate users' addresses. Generated from the
//! scenario's seed alone, so the policy-on and policy-off runs replay the same traffic.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::scenario::Scenario;

/// One seeded account.
#[derive(Clone, Debug)]
pub struct Account {
    /// Its username.
    pub username: String,
    /// Its password.
    pub password: String,
    /// Its TOTP secret (base32), if it has a second factor.
    pub totp_secret: Option<String>,
    /// Whether it has a passkey and no password (`accounts.passkey_share`).
    pub passkey_only: bool,
}

/// One pair of the credential list, with the address it is sent from.
#[derive(Clone, Debug)]
pub struct Attempt {
    /// The username tried.
    pub username: String,
    /// The password tried.
    pub password: String,
    /// The client address the server should see.
    pub source: IpAddr,
    /// Whether the password is the account's own.
    pub hit: bool,
}

/// A legitimate user: an account and the addresses its owner logs in from.
#[derive(Clone, Debug)]
pub struct LegitUser {
    /// Index into [`Plan::accounts`].
    pub account: usize,
    /// The address of the known device.
    pub home: IpAddr,
    /// The address of a new device, in the same /24.
    pub roaming: IpAddr,
}

/// Everything a run sends.
#[derive(Clone, Debug)]
pub struct Plan {
    /// Accounts to seed.
    pub accounts: Vec<Account>,
    /// The attacker's list, in sending order.
    pub attacks: Vec<Attempt>,
    /// Legitimate users.
    pub legit: Vec<LegitUser>,
}

impl Plan {
    /// Generates the plan of `scenario`.
    pub fn new(scenario: &Scenario) -> Self {
        let mut rng = SplitMix64(scenario.seed);
        // A stream of its own, so a second factor changes no other part of the plan.
        let mut mfa = SplitMix64(scenario.seed ^ 0x6d66_615f_7368_6172);
        // And passkeys one of their own.
        let mut passkeys = SplitMix64(scenario.seed ^ 0x7061_7373_6b65_7973);
        let accounts: Vec<Account> = (0..scenario.accounts.count)
            .map(|i| {
                let totp_secret = mfa.chance(scenario.accounts.mfa_share).then(|| {
                    let mut bytes = [0u8; 20];
                    for chunk in bytes.chunks_mut(8) {
                        chunk.copy_from_slice(&mfa.next_u64().to_le_bytes()[..chunk.len()]);
                    }
                    crate::totp::secret(bytes)
                });
                let passkey_only = passkeys.chance(scenario.accounts.passkey_share);
                Account {
                    username: format!("user{i:06}"),
                    password: format!("pw-{:016x}", rng.next_u64()),
                    totp_secret: totp_secret.filter(|_| !passkey_only),
                    passkey_only,
                }
            })
            .collect();
        let attacker = &scenario.attacker;
        let first_legit = accounts.len() - scenario.legit.users;
        let mut attacks = Vec::with_capacity(attacker.attempts);
        // Pairs naming a real account: only these can be hits (and, when the service knows the
        // list as a leak, not a legitimate user's: their passwords are not in it).
        let mut known = Vec::new();
        for i in 0..attacker.attempts {
            let username = if rng.chance(attacker.unknown_usernames) {
                format!("ghost{i:06}")
            } else {
                let account = i % attacker.targets;
                if !(attacker.known_leak && account >= first_legit) {
                    known.push(i);
                }
                accounts[account].username.clone()
            };
            attacks.push(Attempt {
                username,
                password: format!("guess-{:08x}", rng.next_u64() as u32),
                source: attacker_address(i % attacker.ips, attacker.subnets, attacker.ip_version),
                hit: false,
            });
        }
        // The hits: a fixed share of the list, at random positions among those pairs.
        let hits =
            ((attacker.attempts as f64 * attacker.hit_rate).round() as usize).min(known.len());
        for n in 0..hits {
            let pick = n + rng.below(known.len() - n);
            known.swap(n, pick);
            let attempt = &mut attacks[known[n]];
            attempt.hit = true;
            attempt.password = accounts[known[n] % attacker.targets].password.clone();
        }
        let legit = (0..scenario.legit.users)
            .map(|u| LegitUser {
                account: first_legit + u,
                home: legit_address(u, 10),
                roaming: legit_address(u, 20),
            })
            .collect();
        Self {
            accounts,
            attacks,
            legit,
        }
    }
}

/// Attacker address `index` of `subnets` networks: 10.0.0.0/8 in /24s, or 2001:db8::/32 in /64s.
fn attacker_address(index: usize, subnets: usize, version: u8) -> IpAddr {
    let (subnet, host) = (index % subnets, index / subnets + 1);
    if version == 6 {
        IpAddr::V6(Ipv6Addr::new(
            0x2001,
            0xdb8,
            0,
            subnet as u16,
            0,
            0,
            (host >> 16) as u16,
            host as u16,
        ))
    } else {
        IpAddr::V4(Ipv4Addr::new(
            10,
            (subnet >> 8) as u8,
            subnet as u8,
            host as u8,
        ))
    }
}

/// Legitimate user `user`'s address: one /24 of 172.16.0.0/12 each.
fn legit_address(user: usize, host: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(172, 16 + (user >> 8) as u8, user as u8, host))
}

/// A small deterministic generator (SplitMix64): the drill needs repeatability, not secrecy.
#[derive(Clone, Debug)]
pub struct SplitMix64(pub u64);

impl SplitMix64 {
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        ((self.next_u64() >> 11) as f64 / (1u64 << 53) as f64) < p
    }

    /// A number below `n` (which must be above 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;
    use crate::scenario::{Attacker, Legit, Scenario};

    fn scenario(attacker: Attacker) -> Scenario {
        Scenario {
            name: "test".into(),
            description: String::new(),
            seed: 3,
            accounts: crate::scenario::Accounts {
                count: 100,
                mfa_share: 0.0,
                passkey_share: 0.0,
            },
            attacker,
            legit: Legit {
                users: 10,
                ..Legit::default()
            },
            settings: Default::default(),
        }
    }

    #[test]
    fn a_second_factor_share_picks_that_share_of_accounts_and_changes_nothing_else() {
        let without = Plan::new(&scenario(stuffing()));
        let mut with = scenario(stuffing());
        with.accounts.mfa_share = 0.3;
        let with = Plan::new(&with);
        let share = with
            .accounts
            .iter()
            .filter(|a| a.totp_secret.is_some())
            .count();
        assert!((20..=40).contains(&share), "{share} of 100");
        assert!(without.accounts.iter().all(|a| a.totp_secret.is_none()));
        let pairs = |p: &Plan| {
            p.attacks
                .iter()
                .map(|a| (a.username.clone(), a.password.clone(), a.source))
                .collect::<Vec<_>>()
        };
        assert_eq!(pairs(&without), pairs(&with));
    }

    #[test]
    fn a_passkey_share_picks_accounts_without_totp_and_changes_no_pair() {
        let mut without = scenario(stuffing());
        without.accounts.mfa_share = 0.3;
        let mut with = without.clone();
        with.accounts.passkey_share = 0.3;
        let (without, with) = (Plan::new(&without), Plan::new(&with));
        let passkey_only = with.accounts.iter().filter(|a| a.passkey_only).count();
        assert!((20..=40).contains(&passkey_only), "{passkey_only} of 100");
        assert!(
            with.accounts
                .iter()
                .all(|a| !(a.passkey_only && a.totp_secret.is_some()))
        );
        // The list is the same: it still names their (old) passwords.
        let pairs = |p: &Plan| {
            p.attacks
                .iter()
                .map(|a| (a.username.clone(), a.password.clone(), a.hit))
                .collect::<Vec<_>>()
        };
        assert_eq!(pairs(&without), pairs(&with));
    }

    fn stuffing() -> Attacker {
        Attacker {
            attempts: 1000,
            targets: 100,
            unknown_usernames: 0.3,
            hit_rate: 0.05,
            ips: 200,
            subnets: 20,
            ip_version: 4,
            rate: 0.0,
            concurrency: 1,
            solves_challenges: false,
            solver_threads: 1,
            max_secs: 0.0,
            known_leak: false,
        }
    }

    #[test]
    fn a_known_leak_holds_no_legitimate_users_password_and_as_many_hits() {
        let plan = Plan::new(&scenario(Attacker {
            targets: 100,
            hit_rate: 0.2,
            known_leak: true,
            ..stuffing()
        }));
        let legit: HashSet<&str> = plan
            .legit
            .iter()
            .map(|u| plan.accounts[u.account].password.as_str())
            .collect();
        assert!(
            plan.attacks
                .iter()
                .all(|a| !legit.contains(a.password.as_str()))
        );
        assert_eq!(plan.attacks.iter().filter(|a| a.hit).count(), 200);
        let without = Plan::new(&scenario(Attacker {
            targets: 100,
            hit_rate: 0.2,
            ..stuffing()
        }));
        assert!(
            without
                .attacks
                .iter()
                .any(|a| legit.contains(a.password.as_str())),
            "without a known leak, legitimate users' passwords may be hits"
        );
    }

    #[test]
    fn hits_carry_the_accounts_password_and_misses_do_not() {
        let plan = Plan::new(&scenario(stuffing()));
        let passwords: HashSet<&str> = plan.accounts.iter().map(|a| a.password.as_str()).collect();
        assert_eq!(plan.attacks.iter().filter(|a| a.hit).count(), 50);
        for attempt in &plan.attacks {
            assert_eq!(attempt.hit, passwords.contains(attempt.password.as_str()));
            if attempt.hit {
                let account = plan
                    .accounts
                    .iter()
                    .find(|a| a.username == attempt.username);
                assert_eq!(account.unwrap().password, attempt.password);
            }
        }
        let ghosts = plan
            .attacks
            .iter()
            .filter(|a| a.username.starts_with("ghost"))
            .count();
        assert!((200..400).contains(&ghosts), "{ghosts} unknown usernames");
    }

    #[test]
    fn addresses_spread_over_the_configured_subnets() {
        let plan = Plan::new(&scenario(stuffing()));
        let addresses: HashSet<IpAddr> = plan.attacks.iter().map(|a| a.source).collect();
        let subnets: HashSet<[u8; 3]> = addresses
            .iter()
            .map(|a| match a {
                IpAddr::V4(v4) => [v4.octets()[0], v4.octets()[1], v4.octets()[2]],
                IpAddr::V6(_) => unreachable!(),
            })
            .collect();
        assert_eq!((addresses.len(), subnets.len()), (200, 20));
    }

    #[test]
    fn ipv6_rotation_stays_in_one_64() {
        let plan = Plan::new(&scenario(Attacker {
            ips: 500,
            subnets: 1,
            ip_version: 6,
            ..stuffing()
        }));
        let addresses: HashSet<IpAddr> = plan.attacks.iter().map(|a| a.source).collect();
        assert_eq!(addresses.len(), 500);
        for address in addresses {
            let IpAddr::V6(v6) = address else {
                unreachable!()
            };
            assert_eq!(v6.segments()[..4], [0x2001, 0xdb8, 0, 0]);
        }
    }

    #[test]
    fn the_same_seed_replays_the_same_plan_and_legit_users_own_their_24() {
        let (a, b) = (
            Plan::new(&scenario(stuffing())),
            Plan::new(&scenario(stuffing())),
        );
        let pairs = |p: &Plan| -> Vec<(String, String, IpAddr)> {
            p.attacks
                .iter()
                .map(|a| (a.username.clone(), a.password.clone(), a.source))
                .collect()
        };
        assert_eq!(pairs(&a), pairs(&b));
        assert_eq!(a.legit.len(), 10);
        assert_eq!(a.legit[9].account, 99);
        let homes: HashSet<IpAddr> = a.legit.iter().map(|u| u.home).collect();
        assert_eq!(homes.len(), 10);
    }
}
