//! Passwords: what a new one must be ([`rules`]), whether it was seen in a breach
//! ([`breached`]), and Argon2id hashing on a bounded pool ([`hasher`]).
//!
//! [`PasswordPolicy`] is the one check every new password passes (registration, password
//! change, `portcullis users import`), and the one place a login asks whether the password it
//! just verified is breached.

pub mod breached;
mod hasher;
pub mod rules;

use std::sync::Arc;

use anyhow::Context;
use portcullis_core::Username;

use crate::settings::PasswordSettings;

pub use breached::BreachedFilter;
pub use hasher::{HashError, LOW_SHARE_PERCENT, MAX_PASSWORD_BYTES, PasswordHasher, Priority};
pub use rules::{PasswordRules, Refusal};

/// The rules for new passwords and the breached-password filter, if one is configured.
#[derive(Clone)]
pub struct PasswordPolicy {
    rules: Arc<PasswordRules>,
    breached: Option<Arc<BreachedFilter>>,
}

impl PasswordPolicy {
    /// A policy applying `rules`, and refusing what `breached` holds.
    pub fn new(rules: PasswordRules, breached: Option<BreachedFilter>) -> Self {
        Self {
            rules: Arc::new(rules),
            breached: breached.map(Arc::new),
        }
    }

    /// The least number of characters a new password has (`passwords.min_length`).
    pub fn min_length(&self) -> usize {
        self.rules.min_length()
    }

    /// The rules of `passwords.*` and, when `passwords.breached_filter` is set, the filter
    /// (a start-up error naming the setting when it cannot be loaded).
    pub fn from_settings(settings: &PasswordSettings) -> anyhow::Result<Self> {
        let rules = PasswordRules::new(settings)?;
        let breached = settings
            .breached_filter
            .as_deref()
            .map(|path| {
                BreachedFilter::load(path)
                    .context("passwords.breached_filter (PORTCULLIS__PASSWORDS__BREACHED_FILTER)")
            })
            .transpose()?;
        if let Some(filter) = &breached {
            tracing::info!(
                entries = filter.entries(),
                "breached-password filter loaded"
            );
        }
        Ok(Self::new(rules, breached))
    }

    /// Checks a new password for `username`: the rules, then the breached filter.
    pub fn check_new(&self, password: &str, username: &Username) -> Result<(), Refusal> {
        self.rules.check(password, username.as_str())?;
        if self.is_breached(password) {
            return Err(Refusal::Breached);
        }
        Ok(())
    }

    /// Whether the breached filter holds the password (false without a filter).
    pub fn is_breached(&self, password: &str) -> bool {
        self.breached
            .as_ref()
            .is_some_and(|filter| filter.contains_password(password))
    }
}
