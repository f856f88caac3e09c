//! Mail to an account's owner, the one channel that reaches the owner rather than whoever sent
//! a request: what a message says ([`Mail`]), the outbox that never loses it ([`outbox`]), the
//! transports ([`transport`]) and the sender every replica runs ([`sender`]).
//!
//! A use case writes its mail into the outbox in the transaction of the change that causes it.
//! What a message looks like is composed when it is sent, by a [`Compose`] the server gives
//! (its templates), so this crate holds no markup.

pub mod outbox;
pub mod sender;
pub mod transport;

use serde::{Deserialize, Serialize};

/// A message as the outbox keeps it: what it is about and what it must carry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Mail {
    /// A link that makes this address the account's verified one.
    VerifyAddress {
        /// The account's username.
        username: String,
        /// The link's single-use token (only its digest is stored elsewhere).
        token: String,
    },
    /// The account's verified address changed; sent to the old one.
    AddressChanged {
        /// The account's username.
        username: String,
    },
    /// A link that sets a new password.
    ResetPassword {
        /// The account's username.
        username: String,
        /// The link's single-use token (only its digest is stored elsewhere).
        token: String,
    },
    /// The account's password was reset: every session ended.
    PasswordReset {
        /// The account's username.
        username: String,
    },
    /// The account's password was changed in band.
    PasswordChanged {
        /// The account's username.
        username: String,
    },
    /// A login from a browser without the account's device cookie, with a "this wasn't me"
    /// link.
    NewDeviceLogin {
        /// The account's username.
        username: String,
        /// The "this wasn't me" link's single-use token.
        token: String,
    },
    /// The account was locked by failed logins, with a link that lifts the lockout.
    AccountLocked {
        /// The account's username.
        username: String,
        /// The unlock link's single-use token.
        token: String,
    },
    /// A second factor was added.
    SecondFactorAdded {
        /// The account's username.
        username: String,
    },
    /// The second factor was removed.
    SecondFactorRemoved {
        /// The account's username.
        username: String,
    },
    /// A passkey was added.
    PasskeyAdded {
        /// The account's username.
        username: String,
    },
    /// A passkey was removed.
    PasskeyRemoved {
        /// The account's username.
        username: String,
    },
}

impl Mail {
    /// What the message is about (the outbox's `kind` column, shown to operators).
    pub fn kind(&self) -> &'static str {
        match self {
            Mail::VerifyAddress { .. } => "verify_address",
            Mail::AddressChanged { .. } => "address_changed",
            Mail::ResetPassword { .. } => "reset_password",
            Mail::PasswordReset { .. } => "password_reset",
            Mail::PasswordChanged { .. } => "password_changed",
            Mail::NewDeviceLogin { .. } => "new_device_login",
            Mail::AccountLocked { .. } => "account_locked",
            Mail::SecondFactorAdded { .. } => "second_factor_added",
            Mail::SecondFactorRemoved { .. } => "second_factor_removed",
            Mail::PasskeyAdded { .. } => "passkey_added",
            Mail::PasskeyRemoved { .. } => "passkey_removed",
        }
    }
}

/// A message ready to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Composed {
    /// The subject line.
    pub subject: String,
    /// The plain-text body.
    pub text: String,
    /// The HTML body.
    pub html: String,
}

/// Turns a [`Mail`] into words (the server's templates, with links built from
/// `server.public_url`).
pub trait Compose: Send + Sync {
    /// The message `mail` becomes.
    fn compose(&self, mail: &Mail) -> anyhow::Result<Composed>;
}
