//! What a use case refuses, or what goes wrong while it runs: one error type for every use
//! case. The server answers each variant as problem+json (its `ApiError`, the one place that
//! maps them to statuses and codes); nothing here knows about HTTP.
//!
//! Causes are kept (never logged where an error is converted) and logged once, with the whole
//! chain, where the error is answered.

/// What a use case refuses, or what goes wrong while it runs.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The input is malformed; `detail` says how (it is shown to the client).
    #[error("{detail}")]
    BadRequest {
        /// The stable problem code (`bad_request`, `invalid_username`, ...).
        code: &'static str,
        /// What is wrong, for a person.
        detail: String,
    },
    /// Wrong username or password; deliberately says which of neither.
    #[error("invalid username or password")]
    InvalidCredentials,
    /// No valid session token (or admin token).
    #[error("missing, invalid or expired token")]
    Unauthenticated,
    /// The normalised username, or one that looks like it, is registered already.
    #[error("username is already taken")]
    UsernameTaken,
    /// The address is another account's verified address already.
    #[error("this address is verified for another account already")]
    EmailTaken,
    /// No account has this username (told to operators only: every public answer is alike
    /// for unknown names).
    #[error("no account has this username")]
    UnknownAccount,
    /// The account has no address the mail asked for could go to: no verified one for a
    /// reset, no pending one for a verification.
    #[error("the account has no address to send this to")]
    NoAddress,
    /// The policy refuses the attempt for now.
    #[error("too many attempts")]
    Throttled {
        /// Seconds until an attempt would be admitted.
        retry_after_secs: u64,
    },
    /// The attempt must first solve a proof-of-work challenge: this one (a fresh one, harder
    /// when the source is riskier).
    #[error("{}", if *.failed { "the challenge solution is invalid, expired or used: solve this challenge" } else { "solve this challenge and send its payload as `altcha`" })]
    ChallengeRequired {
        /// The challenge to solve.
        challenge: Box<portcullis_core::altcha::Challenge>,
        /// Whether the attempt carried a solution that did not count.
        failed: bool,
    },
    /// A new password breaks a rule, or was found in a breach.
    #[error("{0}")]
    WeakPassword(crate::passwords::Refusal),
    /// The password was right; the account's second factor must follow (`POST /v1/login/mfa`).
    #[error(
        "password accepted: with this mfa_token, send a code from your authenticator app or \
         your passkey's answer, as `methods` offers"
    )]
    MfaRequired {
        /// The single-use token that carries the login to its second step.
        mfa_token: String,
        /// The second factors the account has.
        methods: crate::accounts::SecondFactors,
    },
    /// The password was right but found in a breach, `passwords.breached_login = "block"`, and
    /// nothing but the password proved the sender is the owner: no session, no token.
    #[error(
        "this password has appeared in a data breach and cannot sign in from a new device: if \
         the account has a verified address, a link to reset it is on its way"
    )]
    PasswordResetRequired,
    /// The password was right but found in a breach, `passwords.breached_login = "block"`, and
    /// the login proved possession beyond it (the account's device cookie or second factor).
    #[error(
        "this password has appeared in a data breach: change it with the password_change_token"
    )]
    PasswordChangeRequired {
        /// The single-use token `POST /v1/password` takes instead of a session.
        password_change_token: String,
    },
    /// The `mfa_token` (or password-change token) is unknown, expired or used.
    #[error("the token is unknown, expired or used: log in with your password again")]
    InvalidLoginToken,
    /// A wrong second-factor code or recovery code.
    #[error("the code is wrong")]
    InvalidCode,
    /// A code whose time step was accepted already, or a recovery code used before.
    #[error("this code was used already: wait for the next one")]
    CodeReplayed,
    /// Second-factor codes refused for now.
    #[error("{}", if *.token_spent { "this login has tried all its codes: log in with your password again" } else { "too many wrong codes: wait before trying again" })]
    MfaThrottled {
        /// Seconds until a code is tried again.
        retry_after_secs: u64,
        /// Whether the login's own budget is spent (log in again) rather than the account's.
        token_spent: bool,
    },
    /// The account has no (pending, for confirmation) second factor.
    #[error("no second factor is enrolled (or awaiting confirmation) on this account")]
    MfaNotEnrolled,
    /// The account has a confirmed second factor already.
    #[error("a second factor is enabled already: remove it first")]
    MfaAlreadyEnabled,
    /// Passkeys are off: the service has no relying party id (it is reached at an address,
    /// not a domain).
    #[error(
        "passkeys are off on this service: set webauthn.rp_id (a domain) and \
         webauthn.rp_origins, or a server.public_url on a domain"
    )]
    PasskeysOff,
    /// A sign-in answer that does not verify: an unknown, used or expired ceremony, a
    /// credential it does not allow, a bad signature, another origin, a counter that went
    /// backwards. Deliberately says which of none.
    #[error("the passkey could not be verified: start again")]
    InvalidPasskey,
    /// A registration's ceremony is unknown, used, expired or another account's.
    #[error("the passkey ceremony is unknown, expired or used: start again")]
    InvalidCeremony,
    /// The authenticator's answer to a registration does not verify.
    #[error("{detail}")]
    PasskeyRefused {
        /// Why, for a person.
        detail: String,
    },
    /// The account has as many passkeys as it may.
    #[error("this account has {max} passkeys, as many as it may: remove one first")]
    PasskeyLimit {
        /// `webauthn.max_per_account`.
        max: u32,
    },
    /// The credential is registered already, to this account or another.
    #[error("this passkey is registered already")]
    PasskeyRegistered,
    /// The passkey is the last of an account without a password: removing it would lock its
    /// owner out.
    #[error("this is the account's last passkey and it has no password: add another passkey first")]
    LastPasskey,
    /// The account has no passkey with this id.
    #[error("no passkey of this account has this id")]
    UnknownPasskey,
    /// The account is permanently locked (only with `responses.disclose_lockouts`).
    #[error("account locked: ask an administrator to unlock it")]
    Locked,
    /// A dependency (hashing pool, store, database) cannot take more work right now.
    #[error("service busy")]
    Unavailable {
        /// Seconds after which trying again is reasonable.
        retry_after_secs: u64,
        /// Why, for the log.
        #[source]
        cause: anyhow::Error,
    },
    /// A bug or an infrastructure failure; details only in the log.
    #[error(transparent)]
    Internal(anyhow::Error),
}

impl Error {
    /// Malformed input with the generic `bad_request` code.
    pub fn bad_request(detail: impl Into<String>) -> Self {
        Error::BadRequest {
            code: "bad_request",
            detail: detail.into(),
        }
    }

    /// A mailed link's token that is unknown, expired or used.
    pub fn invalid_link() -> Self {
        Error::BadRequest {
            code: "invalid_link",
            detail: "this link is unknown, expired or used: ask for a new one".to_owned(),
        }
    }

    /// A dependency that cannot answer for a moment.
    pub fn unavailable(cause: impl Into<anyhow::Error>) -> Self {
        Error::Unavailable {
            retry_after_secs: 1,
            cause: cause.into(),
        }
    }

    /// A refusal before verification (a 429, or a challenge asked): the guard's refusal log
    /// summarises these, so the request's own line is DEBUG.
    pub fn is_summarised(&self) -> bool {
        matches!(
            self,
            Error::Throttled { .. } | Error::ChallengeRequired { .. }
        )
    }
}

/// An unreachable database is a 503 the client may retry; anything else is a 500.
impl From<anyhow::Error> for Error {
    fn from(error: anyhow::Error) -> Self {
        if error
            .chain()
            .any(|cause| cause.is::<crate::accounts::DatabaseUnavailable>())
        {
            return Error::unavailable(error);
        }
        Error::Internal(error)
    }
}

/// A store that cannot answer makes the service unavailable for a moment; one that answers
/// nonsense is a bug (500).
impl From<portcullis_store::StoreError> for Error {
    fn from(error: portcullis_store::StoreError) -> Self {
        match error {
            portcullis_store::StoreError::Unavailable { .. } => Error::unavailable(error),
            portcullis_store::StoreError::Protocol(_)
            | portcullis_store::StoreError::Misconfigured(_) => Error::Internal(error.into()),
        }
    }
}

/// A full hashing queue is a 503 the client may retry; a hashing failure is a bug.
impl From<crate::passwords::HashError> for Error {
    fn from(error: crate::passwords::HashError) -> Self {
        match error {
            crate::passwords::HashError::Busy => {
                Error::unavailable(anyhow::anyhow!("the hashing queue is full"))
            }
            crate::passwords::HashError::Failed(e) => e.into(),
        }
    }
}

/// A new password the rules refuse is the client's to fix (400).
impl From<crate::passwords::Refusal> for Error {
    fn from(refusal: crate::passwords::Refusal) -> Self {
        Error::WeakPassword(refusal)
    }
}

impl From<crate::accounts::CreateError> for Error {
    fn from(error: crate::accounts::CreateError) -> Self {
        match error {
            crate::accounts::CreateError::Taken => Error::UsernameTaken,
            crate::accounts::CreateError::Database(e) => e.into(),
        }
    }
}
