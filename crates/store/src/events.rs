//! Security events: lockouts, bans, unlocks, new-device logins, password and second-factor
//! changes, for a notification service.
//!
//! Every event is also a tracing event on target `security` (the server logs it); the log here
//! is what another service consumes: a Redis Stream capped with `MAXLEN ~` in a distributed
//! deployment, an in-process ring buffer in the embedded one.

use serde::{Deserialize, Serialize};

use portcullis_core::UnixMillis;

/// How many events the memory ring buffer keeps (the Redis Stream keeps about ten times more).
pub const MEMORY_EVENTS: usize = 1_000;

/// What happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A temporary lockout started.
    Lockout,
    /// A permanent lockout started.
    PermanentLockout,
    /// A source was banned for the stuffing signature.
    Ban,
    /// An administrator lifted a lockout or ban, or the owner an account's lockout (the link in
    /// a lockout notice).
    Unlock,
    /// An account logged in from a device it had not used.
    NewDeviceLogin,
    /// A call to the admin API presented a wrong or no token.
    AdminAuthFailed,
    /// An account's password was changed (its other sessions were revoked).
    PasswordChanged,
    /// An account's password was reset through a link mailed to its verified address (every
    /// session revoked, its lockout lifted).
    PasswordReset,
    /// A correct password found in the breached-password filter was used to log in.
    BreachedPasswordLogin,
    /// An account turned on a second factor (TOTP).
    MfaEnabled,
    /// An account turned its second factor off.
    MfaDisabled,
    /// Wrong second-factor codes locked an account's second factor.
    MfaLockout,
    /// A recovery code was used (one fewer left).
    RecoveryCodeUsed,
    /// The owner disowned a new-device login ("this wasn't me" in its notice): every session
    /// ended, a reset link mailed.
    LoginDisowned,
    /// An account gave up its password (it signs in with passkeys only).
    PasswordRemoved,
    /// An account registered a passkey.
    PasskeyAdded,
    /// An account removed a passkey.
    PasskeyRemoved,
    /// An account signed in with a passkey.
    PasskeyLogin,
    /// A passkey's signature counter did not move forward: two copies of its key may exist.
    /// The assertion was refused.
    PasskeyPossibleClone,
}

impl EventKind {
    /// The kind's name in logs and streams.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Lockout => "lockout",
            EventKind::PermanentLockout => "permanent_lockout",
            EventKind::Ban => "ban",
            EventKind::Unlock => "unlock",
            EventKind::NewDeviceLogin => "new_device_login",
            EventKind::AdminAuthFailed => "admin_auth_failed",
            EventKind::PasswordChanged => "password_changed",
            EventKind::PasswordReset => "password_reset",
            EventKind::BreachedPasswordLogin => "breached_password_login",
            EventKind::MfaEnabled => "mfa_enabled",
            EventKind::MfaDisabled => "mfa_disabled",
            EventKind::MfaLockout => "mfa_lockout",
            EventKind::RecoveryCodeUsed => "recovery_code_used",
            EventKind::LoginDisowned => "login_disowned",
            EventKind::PasswordRemoved => "password_removed",
            EventKind::PasskeyAdded => "passkey_added",
            EventKind::PasskeyRemoved => "passkey_removed",
            EventKind::PasskeyLogin => "passkey_login",
            EventKind::PasskeyPossibleClone => "passkey_possible_clone",
        }
    }
}

/// One security event. Usernames appear only as keyed hashes (inside `key`); `subject` is an
/// account id, never a name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecurityEvent {
    /// What happened.
    pub kind: EventKind,
    /// The dimension concerned (`ip`, `username`, ...), if any.
    pub dimension: Option<String>,
    /// The counter key concerned, if any.
    pub key: Option<String>,
    /// The account concerned, if known.
    pub subject: Option<String>,
    /// When the restriction ends, if it does.
    pub until: Option<UnixMillis>,
}

/// A security event as the log holds it: with the time it was appended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedEvent {
    /// When it was appended (Redis: the stream entry's id; memory: the store's clock).
    pub at: UnixMillis,
    /// The event.
    #[serde(flatten)]
    pub event: SecurityEvent,
}
