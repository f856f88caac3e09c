//! The rules a new password must meet, after NIST SP 800-63B rev. 4 (§3.1.1.2): a length
//! range in code points, no composition rules, and a refusal of what attackers try first — a
//! blocklist of common passwords, words from the context (the username, the service's name),
//! repetitive or sequential strings — plus a zxcvbn strength score.
//!
//! Checks run cheapest first. A refusal names the rule a person can act on, never the list
//! entry that matched.

use std::sync::LazyLock;

use anyhow::ensure;

use super::MAX_PASSWORD_BYTES;
use crate::settings::PasswordSettings;

/// The common-password blocklist: 100 000 entries, lower-cased and sorted (see
/// `crates/accounts/data/README.md` for its source and licence).
static BLOCKLIST: LazyLock<Vec<&'static str>> = LazyLock::new(|| {
    include_str!("../../data/common-passwords.txt")
        .lines()
        .collect()
});

/// zxcvbn reads at most this many characters (it ignores the rest itself).
const ZXCVBN_CHARS: usize = 100;
/// Context words shorter than this are matched only as the whole password: a two-letter
/// username inside a long passphrase is a coincidence, not a weakness.
const MIN_CONTAINED_CHARS: usize = 4;
/// A repeated or sequential run covering this share of the password (in percent) refuses it.
const RUN_SHARE_PERCENT: usize = 50;

/// Why a new password is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Fewer code points than `passwords.min_length`.
    #[error(
        "use at least {min} characters; a few unrelated words make a long password easy to remember"
    )]
    TooShort {
        /// The minimum.
        min: usize,
    },
    /// More code points than `passwords.max_length`, or bytes than the hashing cap.
    #[error("use at most {max} characters")]
    TooLong {
        /// The maximum.
        max: usize,
    },
    /// On the list of common passwords.
    #[error("this is one of the most common passwords; choose one nobody else would")]
    Common,
    /// Contains the username or the service's name.
    #[error("do not use {0} in your password")]
    ContextWord(&'static str),
    /// Mostly one repeated character or block, or a sequence (`aaaa`, `abcabc`, `12345`).
    #[error("avoid repeated characters and sequences such as `aaaa` or `1234`")]
    Repetitive,
    /// zxcvbn estimates it guessable.
    #[error("this password is too easy to guess{}", .0.as_deref().map(|w| format!(" ({w})")).unwrap_or_default())]
    Guessable(Option<String>),
    /// Found in the breached-password filter.
    #[error("this password has appeared in a data breach; choose another one")]
    Breached,
}

impl Refusal {
    /// The problem code the API answers with.
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::Breached => "breached_password",
            _ => "weak_password",
        }
    }
}

/// The rules for new passwords, from `passwords.*`.
#[derive(Clone, Debug)]
pub struct PasswordRules {
    min_chars: usize,
    max_chars: usize,
    min_score: u8,
    /// Lower-cased service names (`passwords.context_words`).
    context_words: Vec<String>,
}

impl PasswordRules {
    /// The least number of code points a new password has.
    pub fn min_length(&self) -> usize {
        self.min_chars
    }

    /// Rules from the settings, refusing ranges that cannot work.
    pub fn new(settings: &PasswordSettings) -> anyhow::Result<Self> {
        ensure!(
            settings.min_length >= 1,
            "passwords.min_length: must be at least 1"
        );
        ensure!(
            (64..=MAX_PASSWORD_BYTES / 4).contains(&settings.max_length),
            "passwords.max_length: must be in 64..={} (NIST: at least 64; the hash takes at \
             most {MAX_PASSWORD_BYTES} bytes)",
            MAX_PASSWORD_BYTES / 4
        );
        ensure!(
            settings.min_length <= settings.max_length,
            "passwords.min_length: must not exceed passwords.max_length"
        );
        ensure!(
            settings.min_zxcvbn_score <= 4,
            "passwords.min_zxcvbn_score: must be in 0..=4"
        );
        Ok(Self {
            min_chars: settings.min_length,
            max_chars: settings.max_length,
            min_score: settings.min_zxcvbn_score,
            context_words: settings
                .context_words
                .iter()
                .map(|w| w.trim().to_lowercase())
                .filter(|w| !w.is_empty())
                .collect(),
        })
    }

    /// Checks a new password of the account `username` (normalised).
    pub fn check(&self, password: &str, username: &str) -> Result<(), Refusal> {
        let chars = password.chars().count();
        if chars < self.min_chars {
            return Err(Refusal::TooShort {
                min: self.min_chars,
            });
        }
        if chars > self.max_chars || password.len() > MAX_PASSWORD_BYTES {
            return Err(Refusal::TooLong {
                max: self.max_chars,
            });
        }
        let lower = password.to_lowercase();
        if is_repetitive(&lower) {
            return Err(Refusal::Repetitive);
        }
        if contains_word(&lower, username) {
            return Err(Refusal::ContextWord("your username"));
        }
        if self.context_words.iter().any(|w| contains_word(&lower, w)) {
            return Err(Refusal::ContextWord("the name of this service"));
        }
        if BLOCKLIST.binary_search(&lower.as_str()).is_ok() {
            return Err(Refusal::Common);
        }
        if self.min_score > 0 {
            let head: String = password.chars().take(ZXCVBN_CHARS).collect();
            let mut inputs: Vec<&str> = vec![username];
            inputs.extend(self.context_words.iter().map(String::as_str));
            let entropy = zxcvbn::zxcvbn(&head, &inputs);
            if u8::from(entropy.score()) < self.min_score {
                let warning = entropy
                    .feedback()
                    .and_then(|f| f.warning())
                    .map(|w| w.to_string());
                return Err(Refusal::Guessable(warning));
            }
        }
        Ok(())
    }
}

/// Whether `word` (lower-cased) is the password, or inside it when it is long enough to mean
/// something.
fn contains_word(password: &str, word: &str) -> bool {
    let word = word.to_lowercase();
    if word.is_empty() {
        return false;
    }
    if word.chars().count() < MIN_CONTAINED_CHARS {
        return password == word;
    }
    password.contains(&word)
}

/// Whether the password is one block repeated (`abcabcabc`), or a run of one character or of
/// consecutive characters (`aaaa`, `1234`, `zyxw`) covers half of it or more.
fn is_repetitive(password: &str) -> bool {
    let chars: Vec<char> = password.chars().collect();
    let n = chars.len();
    if n < 2 {
        return false;
    }
    let repeats_a_block = (1..=n / 2)
        .filter(|block| n.is_multiple_of(*block))
        .any(|block| chars.chunks(block).all(|c| c == &chars[..block]));
    if repeats_a_block {
        return true;
    }
    let threshold = (n * RUN_SHARE_PERCENT).div_ceil(100).max(3);
    // The longest run in which every step is the same: 0 (repeated), +1 or -1 (sequential).
    let mut longest = 1;
    let mut run = 1;
    let mut run_step: Option<i64> = None;
    for pair in chars.windows(2) {
        let step = i64::from(u32::from(pair[1])) - i64::from(u32::from(pair[0]));
        if (-1..=1).contains(&step) && (run_step.is_none() || run_step == Some(step)) {
            run += 1;
            run_step = Some(step);
        } else if (-1..=1).contains(&step) {
            run = 2;
            run_step = Some(step);
        } else {
            run = 1;
            run_step = None;
        }
        longest = longest.max(run);
    }
    longest >= threshold
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> PasswordRules {
        PasswordRules::new(&PasswordSettings::default()).unwrap()
    }

    fn lenient(min_length: usize) -> PasswordRules {
        PasswordRules::new(&PasswordSettings {
            min_length,
            min_zxcvbn_score: 0,
            ..PasswordSettings::default()
        })
        .unwrap()
    }

    #[test]
    fn the_blocklist_is_sorted_and_holds_at_least_100_000_entries() {
        assert!(BLOCKLIST.len() >= 100_000, "{}", BLOCKLIST.len());
        assert!(BLOCKLIST.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn the_seed_examples_are_refused_and_a_passphrase_is_not() {
        let rules = rules();
        assert_eq!(
            rules.check("password", "bob"),
            Err(Refusal::TooShort { min: 15 })
        );
        assert_eq!(
            lenient(8).check("12345678", "carol"),
            Err(Refusal::Repetitive)
        );
        assert_eq!(lenient(8).check("password", "bob"), Err(Refusal::Common));
        assert_eq!(lenient(8).check("PassWord", "bob"), Err(Refusal::Common));
        assert_eq!(rules.check("correct horse battery staple", "alice"), Ok(()));
    }

    #[test]
    fn length_counts_code_points_and_the_maximum_is_at_least_64() {
        let rules = rules();
        let emoji = "🦀🐙🦑🐢🦎🐍🦂🕷🐝🦋🐌🐞🦗🦟🪲";
        assert_eq!(emoji.chars().count(), 15);
        assert!(!matches!(
            rules.check(emoji, "alice"),
            Err(Refusal::TooShort { .. })
        ));
        let long: String = "gravel lantern orbit ".repeat(4);
        assert_eq!(long.chars().count(), 84);
        assert_eq!(rules.check(&long[..64], "alice"), Ok(()));
        let over = format!("{long}{long}{long}{long}");
        assert_eq!(
            rules.check(&over, "alice"),
            Err(Refusal::TooLong { max: 64 })
        );
    }

    #[test]
    fn context_words_are_refused_without_naming_a_list_entry() {
        let rules = PasswordRules::new(&PasswordSettings {
            context_words: vec!["Portcullis".to_owned()],
            ..PasswordSettings::default()
        })
        .unwrap();
        assert_eq!(
            rules.check("my portcullis passphrase 7", "alice"),
            Err(Refusal::ContextWord("the name of this service"))
        );
        assert_eq!(
            rules.check("alexandria wrote 7 letters", "alexandria"),
            Err(Refusal::ContextWord("your username"))
        );
        assert_eq!(rules.check("al went home at dusk, late", "al"), Ok(()));
        let reason = lenient(8).check("sunshine", "x").unwrap_err().to_string();
        assert!(!reason.contains("sunshine"), "{reason}");
    }

    #[test]
    fn repetitive_and_sequential_strings_are_refused() {
        for password in [
            "aaaaaaaaaaaaaaaa",
            "abcabcabcabcabcabc",
            "123456789012345x",
            "zyxwvutsrqponmlk",
            "correct horse battery staplecorrect horse battery staple",
        ] {
            assert_eq!(
                rules().check(password, "u"),
                Err(Refusal::Repetitive),
                "{password}"
            );
        }
        assert!(!is_repetitive("abc horse gravel moon 1"));
    }

    #[test]
    fn zxcvbn_refuses_guessable_long_passwords_with_its_warning() {
        let refusal = rules().check("baseballfootball", "alice").unwrap_err();
        assert!(matches!(refusal, Refusal::Guessable(_)), "{refusal:?}");
        assert_eq!(refusal.code(), "weak_password");
    }

    #[test]
    fn settings_that_cannot_work_are_refused_by_name() {
        let err = PasswordRules::new(&PasswordSettings {
            max_length: 32,
            ..PasswordSettings::default()
        })
        .unwrap_err();
        assert!(err.to_string().starts_with("passwords.max_length"), "{err}");
        let err = PasswordRules::new(&PasswordSettings {
            min_zxcvbn_score: 5,
            ..PasswordSettings::default()
        })
        .unwrap_err();
        assert!(
            err.to_string().starts_with("passwords.min_zxcvbn_score"),
            "{err}"
        );
    }
}
