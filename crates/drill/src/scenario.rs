//! A drill scenario: the accounts to seed, the attacker's credential list and sources, and the
//! legitimate users logging in meanwhile. Read from TOML (`drill/scenarios/*.toml`); every
//! section rejects unknown keys and every bad value is refused with the setting's name.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, ensure};
use serde::{Deserialize, Serialize};

/// One scenario file.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Short name, used for report files.
    pub name: String,
    /// What the scenario plays, in a sentence.
    pub description: String,
    /// Seed of the generator behind usernames, passwords, hit positions and choices, so a
    /// scenario replays identically.
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// The accounts seeded before the run.
    pub accounts: Accounts,
    /// The credential-stuffing (or brute-force) traffic.
    pub attacker: Attacker,
    /// Real users logging in while the attack runs.
    #[serde(default)]
    pub legit: Legit,
    /// Settings the drill's own stacks run with, by their path (`"policy.global.attack.
    /// warm_up_ms" = 20000`), for short forms of long scenarios; a running target cannot take
    /// them, so the drill refuses to send such a scenario there.
    #[serde(default)]
    pub settings: BTreeMap<String, toml::Value>,
}

/// The accounts seeded before the run.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Accounts {
    /// How many accounts exist.
    pub count: usize,
    /// Share of accounts with a second factor (TOTP), enrolled through the API after seeding.
    #[serde(default)]
    pub mfa_share: f64,
    /// Share of accounts with a passkey and no password (their owners sign in with a soft
    /// passkey of the drill's; the attacker's list still holds their old passwords). Seeded with
    /// `portcullis users import-passkeys`; such an account has no TOTP.
    #[serde(default)]
    pub passkey_share: f64,
}

/// The attacker: a credential list replayed from many addresses.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Attacker {
    /// Pairs in the credential list (M), one login attempt each; 0 for no attacker (a day of
    /// legitimate traffic alone).
    pub attempts: usize,
    /// Distinct existing accounts the list names (1 for a brute force on one account); pair `i`
    /// names account `i % targets`.
    pub targets: usize,
    /// Share of pairs naming a username that has no account here (leaked from elsewhere).
    #[serde(default)]
    pub unknown_usernames: f64,
    /// Share of pairs whose password is right (password reuse): these compromise an account if
    /// they get through.
    pub hit_rate: f64,
    /// Source addresses (K), used in turn.
    pub ips: usize,
    /// Subnets the addresses are spread over (S): /24 networks for IPv4, /64 for IPv6.
    pub subnets: usize,
    /// 4 or 6.
    #[serde(default = "default_ip_version")]
    pub ip_version: u8,
    /// Attempts per second; 0 sends flat out.
    #[serde(default)]
    pub rate: f64,
    /// Requests in flight at once.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// Whether the attacker solves the proof-of-work challenges it is asked (then retries the
    /// pair with the solution), as a determined botnet would.
    #[serde(default)]
    pub solves_challenges: bool,
    /// Threads the attacker solves on (its CPU time is measured, sending and solving).
    #[serde(default = "default_solver_threads")]
    pub solver_threads: usize,
    /// Seconds after which the attacker stops, its list done or not (0: no limit), for
    /// attackers slowed down by challenges.
    #[serde(default)]
    pub max_secs: f64,
    /// Whether the service knows this list as a leak: the drill writes its passwords as a HIBP
    /// file, builds the breached-password filter from it with `portcullis passwords
    /// build-filter`, and its stacks run with that filter (where `passwords.breached_login`
    /// defaults to `block`). The legitimate users' passwords are never in the list.
    #[serde(default)]
    pub known_leak: bool,
}

/// Legitimate users logging in during the attack, from their own addresses.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Legit {
    /// Users (the last accounts seeded); 0 sends no legitimate traffic.
    pub users: usize,
    /// Logins per second, all users together.
    pub rate: f64,
    /// Share of logins from a new device (no device cookie, another address in the same /24).
    pub new_device: f64,
    /// Share of logins whose first try is a typo, retried with the right password.
    pub typo: f64,
    /// Seconds legitimate logins go on at least, even after the attacker is done: a refused
    /// attacker finishes fast, and lockouts outlast the attack.
    pub min_secs: f64,
    /// Seconds legitimate logins go on before the attacker starts (latency before the attack).
    pub lead_secs: f64,
    /// A surge of legitimate logins (a marketing mail): none by default.
    pub surge: Option<Surge>,
}

/// Legitimate logins rising from `legit.rate` to `factor` times it.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Surge {
    /// When the rise starts, from the first legitimate login.
    pub at_secs: f64,
    /// The rate it rises to, as a multiple of `legit.rate`.
    pub factor: f64,
    /// How long the rise takes (linear).
    pub ramp_secs: f64,
}

impl Legit {
    /// Logins per second `secs` after the first.
    pub fn rate_at(&self, secs: f64) -> f64 {
        let Some(surge) = self.surge else {
            return self.rate;
        };
        let risen = ((secs - surge.at_secs) / surge.ramp_secs.max(1e-3)).clamp(0.0, 1.0);
        self.rate * (1.0 + (surge.factor - 1.0) * risen)
    }
}

impl Default for Legit {
    fn default() -> Self {
        Self {
            users: 0,
            rate: 2.0,
            new_device: 0.1,
            typo: 0.05,
            min_secs: 10.0,
            lead_secs: 3.0,
            surge: None,
        }
    }
}

fn default_seed() -> u64 {
    1
}

fn default_ip_version() -> u8 {
    4
}

fn default_concurrency() -> usize {
    8
}

fn default_solver_threads() -> usize {
    2
}

/// Legitimate users get addresses 172.16.0.0/12, one /24 each.
pub const MAX_LEGIT_USERS: usize = 4096;
/// Attacker /24 networks within 10.0.0.0/8.
pub const MAX_IPV4_SUBNETS: usize = 65_536;
/// Attacker addresses per IPv4 /24 (hosts .1 to .254).
pub const MAX_IPV4_HOSTS: usize = 254;

impl Scenario {
    /// The scenario with one more setting for its stacks, as its `[settings]` would give it.
    pub fn with_setting(mut self, path: &str, value: impl Into<toml::Value>) -> Self {
        self.settings.insert(path.to_owned(), value.into());
        self
    }

    /// The scenario's settings as the `PORTCULLIS__*` environment of a stack.
    pub fn settings_env(&self) -> Vec<(String, String)> {
        self.settings
            .iter()
            .map(|(path, value)| {
                let name = format!("PORTCULLIS__{}", path.replace('.', "__").to_uppercase());
                let value = match value {
                    toml::Value::String(text) => text.clone(),
                    other => other.to_string(),
                };
                (name, value)
            })
            .collect()
    }

    /// Reads and validates a scenario file.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let scenario: Self =
            toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        scenario
            .validate()
            .with_context(|| format!("invalid scenario {}", path.display()))?;
        Ok(scenario)
    }

    /// Checks ranges and combinations serde cannot.
    pub fn validate(&self) -> anyhow::Result<()> {
        ensure!(
            !self.name.is_empty()
                && self
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-'),
            "name: letters, digits and '-' only (it names report files)"
        );
        ensure!(
            self.accounts.count >= 1,
            "accounts.count: must be at least 1"
        );
        let attacker = &self.attacker;
        ensure!(
            (1..=self.accounts.count).contains(&attacker.targets),
            "attacker.targets: must be between 1 and accounts.count"
        );
        for (name, share) in [
            ("accounts.mfa_share", self.accounts.mfa_share),
            ("accounts.passkey_share", self.accounts.passkey_share),
            ("attacker.unknown_usernames", attacker.unknown_usernames),
            ("attacker.hit_rate", attacker.hit_rate),
            ("legit.new_device", self.legit.new_device),
            ("legit.typo", self.legit.typo),
        ] {
            ensure!(
                (0.0..=1.0).contains(&share),
                "{name}: must be between 0 and 1"
            );
        }
        ensure!(
            attacker.subnets >= 1,
            "attacker.subnets: must be at least 1"
        );
        ensure!(
            attacker.ips >= attacker.subnets,
            "attacker.ips: must be at least attacker.subnets (every subnet gets an address)"
        );
        match attacker.ip_version {
            4 => {
                ensure!(
                    attacker.subnets <= MAX_IPV4_SUBNETS,
                    "attacker.subnets: at most {MAX_IPV4_SUBNETS} /24 networks for IPv4"
                );
                ensure!(
                    attacker.ips.div_ceil(attacker.subnets) <= MAX_IPV4_HOSTS,
                    "attacker.ips: at most {MAX_IPV4_HOSTS} addresses per IPv4 subnet"
                );
            }
            6 => ensure!(
                attacker.subnets <= usize::from(u16::MAX),
                "attacker.subnets: at most 65535 /64 networks for IPv6"
            ),
            _ => anyhow::bail!("attacker.ip_version: 4 or 6"),
        }
        ensure!(
            attacker.rate >= 0.0 && attacker.rate.is_finite(),
            "attacker.rate: attempts per second, 0 for flat out"
        );
        ensure!(
            (1..=1024).contains(&attacker.concurrency),
            "attacker.concurrency: between 1 and 1024"
        );
        ensure!(
            (1..=64).contains(&attacker.solver_threads),
            "attacker.solver_threads: between 1 and 64"
        );
        ensure!(
            (0.0..=3600.0).contains(&attacker.max_secs),
            "attacker.max_secs: between 0 (no limit) and 3600"
        );
        ensure!(
            self.legit.users <= MAX_LEGIT_USERS.min(self.accounts.count),
            "legit.users: at most accounts.count and {MAX_LEGIT_USERS}"
        );
        ensure!(
            self.legit.users == 0 || (self.legit.rate > 0.0 && self.legit.rate.is_finite()),
            "legit.rate: logins per second, above 0 when there are users"
        );
        for (name, secs) in [
            ("legit.min_secs", self.legit.min_secs),
            ("legit.lead_secs", self.legit.lead_secs),
        ] {
            ensure!((0.0..=3600.0).contains(&secs), "{name}: between 0 and 3600");
        }
        if let Some(surge) = self.legit.surge {
            ensure!(
                (0.0..=3600.0).contains(&surge.at_secs)
                    && (0.0..=3600.0).contains(&surge.ramp_secs),
                "legit.surge: at_secs and ramp_secs between 0 and 3600"
            );
            ensure!(
                (0.1..=100.0).contains(&surge.factor),
                "legit.surge.factor: between 0.1 and 100"
            );
        }
        for (path, value) in &self.settings {
            ensure!(
                !path.is_empty()
                    && path.split('.').all(|part| !part.is_empty()
                        && part
                            .chars()
                            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')),
                "settings.{path}: a setting's path, lowercase words joined by dots"
            );
            ensure!(
                !matches!(value, toml::Value::Table(_) | toml::Value::Array(_)),
                "settings.{path}: one value, not a table or a list"
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> anyhow::Result<Scenario> {
        let scenario: Scenario = toml::from_str(text)?;
        scenario.validate()?;
        Ok(scenario)
    }

    const MINIMAL: &str = r#"
        name = "tiny"
        description = "one address guessing one password"
        [accounts]
        count = 10
        [attacker]
        attempts = 20
        targets = 1
        hit_rate = 0.05
        ips = 1
        subnets = 1
    "#;

    #[test]
    fn a_minimal_scenario_gets_defaults() {
        let scenario = parse(MINIMAL).unwrap();
        assert_eq!(scenario.seed, 1);
        assert_eq!(scenario.attacker.ip_version, 4);
        assert_eq!(scenario.attacker.concurrency, 8);
        assert_eq!(scenario.legit.users, 0);
    }

    #[test]
    fn bad_values_name_their_setting() {
        let cases = [
            ("targets = 1", "targets = 11", "attacker.targets"),
            ("hit_rate = 0.05", "hit_rate = 1.5", "attacker.hit_rate"),
            ("ips = 1", "ips = 300", "attacker.ips"),
            (
                "subnets = 1",
                "subnets = 1\nip_version = 5",
                "attacker.ip_version",
            ),
            ("name = \"tiny\"", "name = \"../x\"", "name"),
        ];
        for (from, to, setting) in cases {
            let error = parse(&MINIMAL.replace(from, to)).unwrap_err().to_string();
            assert!(error.starts_with(setting), "{to}: {error}");
        }
    }

    #[test]
    fn settings_become_the_stacks_environment() {
        let text = format!("{MINIMAL}\n[settings]\n\"policy.global.attack.warm_up_ms\" = 20000\n");
        let scenario = parse(&text).unwrap();
        assert_eq!(
            scenario.settings_env(),
            [(
                "PORTCULLIS__POLICY__GLOBAL__ATTACK__WARM_UP_MS".to_owned(),
                "20000".to_owned()
            )]
        );
        let bad = format!("{MINIMAL}\n[settings]\n\"policy..x\" = 1\n");
        assert!(
            parse(&bad)
                .unwrap_err()
                .to_string()
                .starts_with("settings.")
        );
    }

    #[test]
    fn a_surge_rises_linearly_to_its_factor() {
        let legit = Legit {
            rate: 4.0,
            surge: Some(Surge {
                at_secs: 10.0,
                factor: 5.0,
                ramp_secs: 20.0,
            }),
            ..Legit::default()
        };
        assert_eq!(legit.rate_at(5.0), 4.0);
        assert_eq!(legit.rate_at(20.0), 12.0);
        assert_eq!(legit.rate_at(60.0), 20.0);
    }

    #[test]
    fn unknown_keys_are_refused() {
        let error = parse(&MINIMAL.replace("ips = 1", "ips = 1\nspeed = 3")).unwrap_err();
        assert!(error.to_string().contains("speed"), "{error}");
    }

    #[test]
    fn the_shipped_scenarios_are_valid() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../drill/scenarios");
        let mut seen = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            Scenario::load(&path).unwrap();
            seen += 1;
        }
        assert!(seen >= 6, "{seen} scenarios");
    }
}
