//! Second factors: TOTP enrolment, confirmation with recovery codes, removal, and the check of
//! a code or recovery code, under the limits of `policy.mfa` (see [`portcullis_core::mfa`]).
//!
//! A check runs in three steps, like a password check through the guard: admit (the login's
//! code budget and the account's lockout, counted provisionally with compare-and-sets, so
//! replicas racing cannot outrun them), verify (the code's step is accepted once, with a
//! compare-and-set on the account's last step), settle (the provisional failure stands, is
//! forgotten on success, or is taken back for a replay, which is not a guess).

mod records;
pub mod sealing;
pub mod totp;

use std::sync::Arc;

use portcullis_core::backoff::Lockout;
use portcullis_core::mfa::{CodeOutcome, MfaPolicy, MfaRefusal, StepCheck, accepted_step};
use portcullis_store::{Clock, EventKind};
use sha2::{Digest, Sha256};
use sqlx::AnyPool;

use crate::accounts::Account;
use crate::error::Error;
use crate::login_tokens::{LoginToken, LoginTokens};
use crate::notices::{Notice, Notices};
use crate::security_events::SecurityEvents;
use records::{Factor, Records, RecoveryCodeUse};
use sealing::SecretSealer;

pub use totp::{Enrolment, SecretFormat};

/// Recovery codes handed out at confirmation.
pub const RECOVERY_CODES: usize = 10;
/// Compare-and-set retries before a check gives up (503) on a state that keeps changing.
const CAS_TRIES: usize = 16;
/// The recovery codes' alphabet: 32 characters, none easily mistaken for another.
const RECOVERY_ALPHABET: &[u8; 32] = b"abcdefghijkmnpqrstuvwxyz23456789";
const RECOVERY_CHARS: usize = 16;

/// What proves the second factor.
#[derive(Clone, Copy, Debug)]
pub enum Proof<'a> {
    /// A six-digit TOTP code.
    Code(&'a str),
    /// A recovery code (`xxxx-xxxx-xxxx-xxxx`).
    RecoveryCode(&'a str),
}

impl<'a> Proof<'a> {
    /// The proof in a request: exactly one of a code or a recovery code, well formed (400
    /// otherwise, before anything is counted).
    pub fn parse(code: Option<&'a str>, recovery_code: Option<&'a str>) -> Result<Self, Error> {
        let malformed = |detail: &str| Error::BadRequest {
            code: "malformed_code",
            detail: detail.to_owned(),
        };
        match (code, recovery_code) {
            (Some(code), None) if totp::is_well_formed(code) => Ok(Proof::Code(code)),
            (Some(_), None) => Err(malformed("`code` must be exactly six digits")),
            (None, Some(recovery)) if normalise_recovery_code(recovery).is_some() => {
                Ok(Proof::RecoveryCode(recovery))
            }
            (None, Some(_)) => Err(malformed(
                "`recovery_code` must be one of the codes given at enrolment (xxxx-xxxx-xxxx-xxxx)",
            )),
            _ => Err(malformed("send exactly one of `code` and `recovery_code`")),
        }
    }
}

/// The second factors of every account.
#[derive(Clone)]
pub struct SecondFactors {
    records: Records,
    sealer: SecretSealer,
    policy: MfaPolicy,
    issuer: String,
    clock: Arc<dyn Clock>,
    events: SecurityEvents,
    notices: Notices,
}

/// Imports a TOTP secret (base32) as the account's confirmed second factor, as when moving
/// accounts from another identity provider; returns false when it has one already. No
/// recovery codes are made: the account owner makes new ones by enrolling again.
pub async fn import_secret(
    pool: AnyPool,
    sealer: &SecretSealer,
    account_id: &str,
    secret_base32: &str,
) -> anyhow::Result<bool> {
    let secret = totp::decode_secret(secret_base32)?;
    let sealed = sealer.seal(account_id, &secret)?;
    Records::new(pool)
        .put_confirmed(account_id, &sealed, sealer.key_id())
        .await
}

/// How a verified proof turned out.
enum Verdict {
    /// Right; for a pending factor, at this step (confirmation records it).
    Accepted(Option<u64>),
    Wrong,
    /// Right, but used before: not a guess, not counted.
    Replayed,
}

impl SecondFactors {
    /// Second factors in `pool`, sealed with `sealer`, limited by `policy`, labelled `issuer`.
    pub fn new(
        pool: AnyPool,
        sealer: SecretSealer,
        policy: MfaPolicy,
        issuer: String,
        clock: Arc<dyn Clock>,
        events: SecurityEvents,
        notices: Notices,
    ) -> Self {
        Self {
            records: Records::new(pool),
            sealer,
            policy,
            issuer,
            clock,
            events,
            notices,
        }
    }

    /// Refuses to start when second factors were sealed under another key: they would not open,
    /// and their accounts could not log in.
    pub async fn check_sealing_key(&self) -> anyhow::Result<()> {
        let foreign = self
            .records
            .sealed_under_other_keys(self.sealer.key_id())
            .await?;
        anyhow::ensure!(
            foreign == 0,
            "secrets.hmac_key (PORTCULLIS__SECRETS__HMAC_KEY): {foreign} TOTP secrets were \
             sealed under another key; start with the key they were sealed under"
        );
        Ok(())
    }

    /// Starts (or restarts) enrolment: a new secret, pending until confirmed with a code.
    pub async fn enrol(&self, account_id: &str, username: &str) -> Result<Enrolment, Error> {
        let secret = totp::new_secret()?;
        let sealed = self.sealer.seal(account_id, &secret)?;
        if !self
            .records
            .put_pending(account_id, &sealed, self.sealer.key_id())
            .await?
        {
            return Err(Error::MfaAlreadyEnabled);
        }
        Ok(totp::enrolment(&secret, &self.issuer, username)?)
    }

    /// Confirms a pending enrolment of `account` with a first code; returns the recovery codes,
    /// shown once.
    pub async fn confirm(&self, account: &Account, code: &str) -> Result<Vec<String>, Error> {
        let account_id = account.id.as_str();
        let factor = self
            .records
            .load(account_id)
            .await?
            .filter(|f| !f.confirmed)
            .ok_or(Error::MfaNotEnrolled)?;
        let step = match self
            .check(account_id, &factor, Proof::Code(code), None)
            .await?
        {
            Some(step) => step,
            None => return Err(Error::InvalidCode),
        };
        let codes = (0..RECOVERY_CODES)
            .map(|_| new_recovery_code())
            .collect::<anyhow::Result<Vec<_>>>()?;
        let digests: Vec<String> = codes
            .iter()
            .filter_map(|c| normalise_recovery_code(c))
            .map(|c| recovery_digest(&c))
            .collect();
        if !self.records.confirm(account_id, step, &digests).await? {
            return Err(Error::MfaNotEnrolled);
        }
        self.events
            .report_account(EventKind::MfaEnabled, account_id)
            .await;
        self.notices.send(account, Notice::SecondFactorAdded).await;
        Ok(codes)
    }

    /// Removes `account`'s confirmed factor, proven with a code or a recovery code.
    pub async fn remove(&self, account: &Account, proof: Proof<'_>) -> Result<(), Error> {
        let account_id = account.id.as_str();
        self.verify(account_id, proof, None).await?;
        self.records.remove(account_id).await?;
        self.events
            .report_account(EventKind::MfaDisabled, account_id)
            .await;
        self.notices
            .send(account, Notice::SecondFactorRemoved)
            .await;
        Ok(())
    }

    /// Verifies the second factor of a login (`token`: its `mfa_token`) or of an account
    /// change (`None`).
    pub async fn verify(
        &self,
        account_id: &str,
        proof: Proof<'_>,
        token: Option<(&LoginTokens, &LoginToken)>,
    ) -> Result<(), Error> {
        let factor = self
            .records
            .load(account_id)
            .await?
            .filter(|f| f.confirmed)
            .ok_or(Error::MfaNotEnrolled)?;
        self.check(account_id, &factor, proof, token).await?;
        Ok(())
    }

    /// Admits, verifies and settles one proof; `Ok(step)` when it is right (the step for a
    /// pending factor's code), an error answer otherwise.
    async fn check(
        &self,
        account_id: &str,
        factor: &Factor,
        proof: Proof<'_>,
        token: Option<(&LoginTokens, &LoginToken)>,
    ) -> Result<Option<u64>, Error> {
        let started = self.admit(account_id, token).await.inspect_err(|_| {
            metrics::counter!("portcullis_mfa_codes_total", "result" => "refused").increment(1);
        })?;
        let verdict = match self.verdict(account_id, factor, proof).await {
            Ok(verdict) => verdict,
            Err(error) => {
                self.settle(account_id, CodeOutcome::NotCounted, started, token)
                    .await?;
                return Err(error);
            }
        };
        let outcome = match verdict {
            Verdict::Accepted(_) => CodeOutcome::Accepted,
            Verdict::Wrong => CodeOutcome::Wrong,
            Verdict::Replayed => CodeOutcome::NotCounted,
        };
        self.settle(account_id, outcome, started, token).await?;
        let result = match verdict {
            Verdict::Accepted(_) => "accepted",
            Verdict::Wrong => "wrong",
            Verdict::Replayed => "replayed",
        };
        metrics::counter!("portcullis_mfa_codes_total", "result" => result).increment(1);
        match verdict {
            Verdict::Accepted(step) => {
                if matches!(proof, Proof::RecoveryCode(_)) {
                    self.events
                        .report_account(EventKind::RecoveryCodeUsed, account_id)
                        .await;
                }
                Ok(step)
            }
            Verdict::Wrong => Err(Error::InvalidCode),
            Verdict::Replayed => Err(Error::CodeReplayed),
        }
    }

    /// Counts the proof provisionally against the login's budget and the account's lockout;
    /// returns the lockout the admission started.
    async fn admit(
        &self,
        account_id: &str,
        token: Option<(&LoginTokens, &LoginToken)>,
    ) -> Result<Option<Lockout>, Error> {
        for _ in 0..CAS_TRIES {
            let factor = self
                .records
                .load(account_id)
                .await?
                .ok_or(Error::MfaNotEnrolled)?;
            let used = match token {
                Some((tokens, token)) => {
                    tokens
                        .reload(token)
                        .await?
                        .ok_or(Error::InvalidLoginToken)?
                        .codes_used
                }
                None => 0,
            };
            let (state, started) = self
                .policy
                .admit(used, &factor.lockout, self.clock.now())
                .map_err(refusal)?;
            if let Some((tokens, token)) = token
                && !tokens.set_codes_used(token, used, used + 1).await?
            {
                continue;
            }
            if self
                .records
                .store_lockout(account_id, factor.version, &state)
                .await?
            {
                return Ok(started);
            }
            if let Some((tokens, token)) = token {
                tokens.set_codes_used(token, used + 1, used).await?;
            }
        }
        Err(Error::unavailable(anyhow::anyhow!(
            "second-factor state kept changing under the check"
        )))
    }

    async fn verdict(
        &self,
        account_id: &str,
        factor: &Factor,
        proof: Proof<'_>,
    ) -> Result<Verdict, Error> {
        match proof {
            Proof::Code(code) => {
                let secret = self
                    .sealer
                    .open(account_id, &factor.key_id, &factor.sealed_secret)?;
                let matching = totp::matching_steps(&secret, code, self.clock.now())?;
                let last = (factor.last_step > 0).then_some(factor.last_step);
                Ok(match accepted_step(matching, last) {
                    StepCheck::Accept(step) if !factor.confirmed => Verdict::Accepted(Some(step)),
                    StepCheck::Accept(step) => {
                        // Another replica may have accepted this step a moment ago.
                        if self.records.advance_step(account_id, step).await? {
                            Verdict::Accepted(None)
                        } else {
                            Verdict::Replayed
                        }
                    }
                    StepCheck::Replayed => Verdict::Replayed,
                    StepCheck::Wrong => Verdict::Wrong,
                })
            }
            Proof::RecoveryCode(_) if !factor.confirmed => Ok(Verdict::Wrong),
            Proof::RecoveryCode(code) => {
                let digest = normalise_recovery_code(code)
                    .map(|c| recovery_digest(&c))
                    .unwrap_or_default();
                Ok(
                    match self.records.use_recovery_code(account_id, &digest).await? {
                        RecoveryCodeUse::Used => Verdict::Accepted(None),
                        RecoveryCodeUse::UsedBefore => Verdict::Replayed,
                        RecoveryCodeUse::Unknown => Verdict::Wrong,
                    },
                )
            }
        }
    }

    /// Settles an admitted proof with its outcome.
    async fn settle(
        &self,
        account_id: &str,
        outcome: CodeOutcome,
        started: Option<Lockout>,
        token: Option<(&LoginTokens, &LoginToken)>,
    ) -> Result<(), Error> {
        if outcome == CodeOutcome::NotCounted
            && let Some((tokens, token)) = token
        {
            tokens.uncount_code(token).await?;
        }
        for _ in 0..CAS_TRIES {
            // A factor removed meanwhile has nothing left to settle.
            let Some(factor) = self.records.load(account_id).await? else {
                return Ok(());
            };
            let next = MfaPolicy::settle(&factor.lockout, outcome, started);
            if self
                .records
                .store_lockout(account_id, factor.version, &next)
                .await?
            {
                if outcome == CodeOutcome::Wrong
                    && let Some(Lockout::Temporary { until }) = started
                {
                    self.events
                        .report(portcullis_store::SecurityEvent {
                            kind: EventKind::MfaLockout,
                            dimension: None,
                            key: None,
                            subject: Some(account_id.to_owned()),
                            until: Some(until),
                        })
                        .await;
                }
                return Ok(());
            }
        }
        Err(Error::unavailable(anyhow::anyhow!(
            "second-factor state kept changing while settling"
        )))
    }
}

fn refusal(refusal: MfaRefusal) -> Error {
    match refusal {
        MfaRefusal::TokenSpent => Error::MfaThrottled {
            retry_after_secs: 1,
            token_spent: true,
        },
        MfaRefusal::Locked { retry_after_ms } => Error::MfaThrottled {
            retry_after_secs: retry_after_ms.div_ceil(1_000).max(1),
            token_spent: false,
        },
    }
}

/// A new recovery code, `xxxx-xxxx-xxxx-xxxx` (80 random bits).
fn new_recovery_code() -> anyhow::Result<String> {
    let mut bytes = [0u8; 10];
    getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("no entropy source: {e}"))?;
    let mut bits = bytes
        .iter()
        .fold(0u128, |acc, b| (acc << 8) | u128::from(*b));
    let mut chars = Vec::with_capacity(RECOVERY_CHARS);
    for _ in 0..RECOVERY_CHARS {
        chars.push(char::from(RECOVERY_ALPHABET[(bits & 31) as usize]));
        bits >>= 5;
    }
    Ok(chars
        .chunks(4)
        .map(|c| c.iter().collect::<String>())
        .collect::<Vec<_>>()
        .join("-"))
}

/// A recovery code as stored: lower case, without hyphens; `None` unless it has the shape of
/// one.
fn normalise_recovery_code(code: &str) -> Option<String> {
    let plain: String = code
        .chars()
        .filter(|c| *c != '-')
        .map(|c| c.to_ascii_lowercase())
        .collect();
    (plain.len() == RECOVERY_CHARS && plain.bytes().all(|b| RECOVERY_ALPHABET.contains(&b)))
        .then_some(plain)
}

fn recovery_digest(normalised: &str) -> String {
    hex::encode(Sha256::digest(normalised.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recovery_codes_are_well_formed_distinct_and_read_back_in_any_case() {
        let a = new_recovery_code().unwrap();
        let b = new_recovery_code().unwrap();
        assert_ne!(a, b);
        assert_eq!(a.len(), 19);
        assert_eq!(
            normalise_recovery_code(&a.to_uppercase()),
            normalise_recovery_code(&a)
        );
        assert!(
            normalise_recovery_code("abcd-efgh-ijkl-mnop").is_none(),
            "l is not in the alphabet"
        );
        assert!(normalise_recovery_code("abcd efgh ijkm npqr").is_none());
    }

    #[test]
    fn a_proof_is_one_well_formed_code() {
        assert!(matches!(
            Proof::parse(Some("123456"), None),
            Ok(Proof::Code(_))
        ));
        for (code, recovery) in [
            (Some("12345"), None),
            (Some("1234567"), None),
            (Some("12a456"), None),
            (Some(" 123456"), None),
            (None, Some("nope")),
            (None, None),
            (Some("123456"), Some("abcd-efgh-ijkm-npqr")),
        ] {
            let err = Proof::parse(code, recovery).unwrap_err();
            assert!(
                matches!(
                    err,
                    Error::BadRequest {
                        code: "malformed_code",
                        ..
                    }
                ),
                "{err}"
            );
        }
    }
}
