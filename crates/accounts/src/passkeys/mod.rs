//! Passkeys (WebAuthn, with webauthn-rs): what a leaked password cannot open.
//!
//! - **Enrolment** from a session that stepped up (the caller checks that): options naming the
//!   account's passkeys as excluded, then the authenticator's answer, which becomes a stored
//!   passkey. A credential id is unique across accounts; an account has at most
//!   `webauthn.max_per_account`.
//! - **Sign-in**: options for a username (its passkeys, or for a name without any, a
//!   deterministic list of fake credential ids in the same shape, so the answer reveals
//!   nothing), or discoverable options (the authenticator names the account). The answer is
//!   verified against the ceremony it echoes, once; a signature counter that did not move
//!   forward is refused as a possible clone. Counting the attempt is the login use case's (see
//!   [`crate::login::login_passkey`]).
//!
//! Every ceremony's state stays on the server (`ceremonies.rs`). An account's user handle, which
//! authenticators keep, is its id (128 random bits) as a UUID.

mod ceremonies;
mod records;

use std::sync::Arc;

use portcullis_core::Username;
use portcullis_store::{Clock, EventKind};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::AnyPool;
use webauthn_rs::fake::{FakePasskeyDistribution, WebauthnFakeCredentialGenerator};
use webauthn_rs::prelude::{
    DiscoverableAuthentication, Passkey, PasskeyAuthentication, PasskeyRegistration, Uuid,
    Webauthn, WebauthnBuilder, WebauthnError,
};
use webauthn_rs_proto::{AllowCredentials, ResidentKeyRequirement};

use crate::accounts::Account;
use crate::error::Error;
use crate::notices::{Notice, Notices};
use crate::security_events::SecurityEvents;
use ceremonies::Ceremonies;
use records::{Records, Refused, Removal};

pub use records::StoredPasskey;
pub use webauthn_rs::prelude::{
    CreationChallengeResponse, PublicKeyCredential, RegisterPublicKeyCredential,
    RequestChallengeResponse, Url,
};
pub use webauthn_rs_proto::{
    Mediation, PublicKeyCredentialCreationOptions, PublicKeyCredentialRequestOptions,
};

/// The longest passkey name, in characters.
pub const MAX_NAME_CHARS: usize = 64;

/// Who passkeys are for: the relying party id (a domain) and the origins pages run on.
#[derive(Clone, Debug)]
pub struct RelyingParty {
    /// The domain credentials are scoped to (`login.example.com`, or a parent of it).
    pub id: String,
    /// The origins a ceremony may come from (`https://login.example.com`).
    pub origins: Vec<Url>,
    /// The service's name, shown by authenticators.
    pub name: String,
}

/// A ceremony between its options and its answer: what it is for, and webauthn-rs's state.
#[derive(Serialize, Deserialize)]
enum Ceremony {
    /// Adding a passkey to the account the ceremony names.
    Registration(PasskeyRegistration),
    /// Signing in to the account the ceremony names, with one of its passkeys.
    SignIn(PasskeyAuthentication),
    /// Signing in with whichever passkey the authenticator offers.
    Discoverable(DiscoverableAuthentication),
    /// Registering a new account with this passkey and no password: the account is created
    /// when the answer is in.
    SignUp {
        /// The username it will have.
        username: String,
        /// The id it will have (the user handle in the options).
        account_id: String,
        /// An address to verify once it exists.
        email: Option<String>,
        /// webauthn-rs's state.
        state: PasskeyRegistration,
    },
    /// Signing in to a name with no passkey (or no account): no answer finishes it.
    Decoy,
}

/// A ceremony's options, and the id its answer echoes.
pub struct Started<T> {
    /// The ceremony's id (single use, 5 minutes).
    pub ceremony: String,
    /// What the browser's `navigator.credentials` call takes (`{"publicKey": ...}`).
    pub options: T,
}

/// A new account's passkey, verified: what a registration without a password creates.
pub struct SignUp {
    /// The username the account will have.
    pub username: String,
    /// The id it will have.
    pub account_id: String,
    /// An address to verify, if one was given.
    pub email: Option<String>,
    /// The passkey, not stored yet.
    passkey: Passkey,
}

/// How a sign-in answer turned out.
pub enum Assertion {
    /// Verified, with user verification: the passkey's account.
    Verified {
        /// The account signed in to.
        account_id: String,
    },
    /// Not verified: an unknown, used or expired ceremony, a credential it does not allow, a
    /// bad signature, another origin, or a counter that went backwards.
    Refused,
}

/// Every account's passkeys, and the ceremonies that add and use them.
#[derive(Clone)]
pub struct Passkeys {
    /// None when passkeys are off (no relying party: the service is reached at an address).
    webauthn: Option<Arc<Webauthn>>,
    records: Records,
    ceremonies: Ceremonies,
    fakes: Arc<WebauthnFakeCredentialGenerator<FakePasskeyDistribution>>,
    max_per_account: u32,
    events: SecurityEvents,
    notices: Notices,
}

impl Passkeys {
    /// Passkeys for `relying_party` (none: off) in `pool`, at most `max_per_account` each; fake
    /// credential ids keyed from `secret` (the instance key: whoever holds it tells fake ids
    /// from real ones).
    pub fn new(
        relying_party: Option<&RelyingParty>,
        pool: AnyPool,
        clock: Arc<dyn Clock>,
        secret: &[u8],
        max_per_account: u32,
        events: SecurityEvents,
        notices: Notices,
    ) -> anyhow::Result<Self> {
        let webauthn = relying_party.map(build).transpose()?.map(Arc::new);
        Ok(Self {
            webauthn,
            records: Records::new(pool.clone(), clock.clone()),
            ceremonies: Ceremonies::new(pool, clock),
            fakes: Arc::new(
                WebauthnFakeCredentialGenerator::new(&Sha256::digest(
                    [secret, b"/passkey-fakes"].concat(),
                ))
                .map_err(|e| anyhow::anyhow!("fake passkey credential key: {e:?}"))?,
            ),
            max_per_account,
            events,
            notices,
        })
    }

    /// Whether passkeys are on (the service has a relying party).
    pub fn enabled(&self) -> bool {
        self.webauthn.is_some()
    }

    fn webauthn(&self) -> Result<&Webauthn, Error> {
        self.webauthn.as_deref().ok_or(Error::PasskeysOff)
    }

    /// Starts adding a passkey to `account` (which stepped up): the options exclude the
    /// passkeys it has; 409 `passkey_limit` when it has as many as it may.
    pub async fn start_registration(
        &self,
        account: &Account,
    ) -> Result<Started<CreationChallengeResponse>, Error> {
        let webauthn = self.webauthn()?;
        let existing = self.records.of_account(&account.id).await?;
        if existing.len() >= self.max_per_account as usize {
            return Err(Error::PasskeyLimit {
                max: self.max_per_account,
            });
        }
        let exclude = existing
            .iter()
            .map(|p| p.passkey.cred_id().clone())
            .collect();
        let (mut options, state) = webauthn
            .start_passkey_registration(
                user_handle(&account.id)?,
                &account.username,
                &account.username,
                Some(exclude),
            )
            .map_err(|e| anyhow::anyhow!("starting a passkey registration: {e:?}"))?;
        prefer_discoverable(&mut options);
        let ceremony = self
            .ceremonies
            .start(Some(&account.id), &Ceremony::Registration(state))
            .await?;
        Ok(Started { ceremony, options })
    }

    /// Starts registering `username` with a passkey and no password (`email`: an address to
    /// verify once it exists): options for an account that does not exist yet, whose id is
    /// chosen now for the user handle. Only the ceremony is stored, so a registration never
    /// finished holds no name and leaves nothing to clean up.
    pub async fn start_sign_up(
        &self,
        username: &Username,
        email: Option<String>,
    ) -> Result<Started<CreationChallengeResponse>, Error> {
        let webauthn = self.webauthn()?;
        let account_id = crate::token::random_id()?;
        let (mut options, state) = webauthn
            .start_passkey_registration(
                user_handle(&account_id)?,
                username.as_str(),
                username.as_str(),
                None,
            )
            .map_err(|e| anyhow::anyhow!("starting a passkey registration: {e:?}"))?;
        prefer_discoverable(&mut options);
        let sign_up = Ceremony::SignUp {
            username: username.as_str().to_owned(),
            account_id,
            email,
            state,
        };
        let ceremony = self.ceremonies.start(None, &sign_up).await?;
        Ok(Started { ceremony, options })
    }

    /// Verifies the authenticator's answer to the sign-up ceremony `ceremony` (taken once).
    pub async fn finish_sign_up(
        &self,
        ceremony: &str,
        credential: &RegisterPublicKeyCredential,
    ) -> Result<SignUp, Error> {
        let webauthn = self.webauthn()?;
        let Some(Ceremony::SignUp {
            username,
            account_id,
            email,
            state,
        }) = self
            .ceremonies
            .take::<Ceremony>(ceremony)
            .await?
            .map(|taken| taken.state)
        else {
            return Err(Error::InvalidCeremony);
        };
        let passkey = webauthn
            .finish_passkey_registration(credential, &state)
            .map_err(|e| Error::PasskeyRefused {
                detail: format!("the authenticator's answer does not verify ({e})"),
            })?;
        Ok(SignUp {
            username,
            account_id,
            email,
            passkey,
        })
    }

    /// Stores the passkey of `sign_up` on its new `account` as `name`.
    pub async fn add_signed_up(
        &self,
        account: &Account,
        name: &str,
        sign_up: &SignUp,
    ) -> Result<StoredPasskey, Error> {
        let name = checked_name(name)?;
        match self
            .records
            .add(&account.id, &name, &sign_up.passkey, self.max_per_account)
            .await?
        {
            Ok(stored) => {
                self.events
                    .report_account(EventKind::PasskeyAdded, &account.id)
                    .await;
                Ok(stored)
            }
            Err(Refused::Registered) => Err(Error::PasskeyRegistered),
            Err(Refused::Full) => Err(Error::PasskeyLimit {
                max: self.max_per_account,
            }),
        }
    }

    /// Finishes adding a passkey named `name` to `account` with the authenticator's answer to
    /// the ceremony `ceremony`.
    pub async fn finish_registration(
        &self,
        account: &Account,
        ceremony: &str,
        name: &str,
        credential: &RegisterPublicKeyCredential,
    ) -> Result<StoredPasskey, Error> {
        let webauthn = self.webauthn()?;
        let name = checked_name(name)?;
        let taken = self.ceremonies.take::<Ceremony>(ceremony).await?;
        let state = match taken {
            Some(taken) if taken.account_id.as_deref() == Some(account.id.as_str()) => {
                match taken.state {
                    Ceremony::Registration(state) => state,
                    _ => return Err(Error::InvalidCeremony),
                }
            }
            _ => return Err(Error::InvalidCeremony),
        };
        let passkey = webauthn
            .finish_passkey_registration(credential, &state)
            .map_err(|e| Error::PasskeyRefused {
                detail: format!("the authenticator's answer does not verify ({e})"),
            })?;
        let stored = match self
            .records
            .add(&account.id, &name, &passkey, self.max_per_account)
            .await?
        {
            Ok(stored) => stored,
            Err(Refused::Full) => {
                return Err(Error::PasskeyLimit {
                    max: self.max_per_account,
                });
            }
            Err(Refused::Registered) => return Err(Error::PasskeyRegistered),
        };
        self.events
            .report_account(EventKind::PasskeyAdded, &account.id)
            .await;
        self.notices.send(account, Notice::PasskeyAdded).await;
        Ok(stored)
    }

    /// The passkeys of `account_id`, oldest first.
    pub async fn list(&self, account_id: &str) -> Result<Vec<StoredPasskey>, Error> {
        Ok(self.records.of_account(account_id).await?)
    }

    /// How many accounts have at least one passkey.
    pub async fn accounts_with_passkeys(&self) -> Result<u64, Error> {
        Ok(self.records.accounts_with_passkeys().await?)
    }

    /// Renames `account_id`'s passkey `id` (404 `unknown_passkey` if it has none such).
    pub async fn rename(&self, account_id: &str, id: &str, name: &str) -> Result<(), Error> {
        let name = checked_name(name)?;
        if !self.records.rename(account_id, id, &name).await? {
            return Err(Error::UnknownPasskey);
        }
        Ok(())
    }

    /// Removes `account`'s passkey `id` (which stepped up; 404 `unknown_passkey` if it has none
    /// such, 409 `last_passkey` for the last of an account without a password).
    pub async fn remove(&self, account: &Account, id: &str) -> Result<(), Error> {
        match self.records.remove(&account.id, id).await? {
            Removal::Removed => {}
            Removal::Unknown => return Err(Error::UnknownPasskey),
            Removal::Last => return Err(Error::LastPasskey),
        }
        self.events
            .report_account(EventKind::PasskeyRemoved, &account.id)
            .await;
        self.notices.send(account, Notice::PasskeyRemoved).await;
        Ok(())
    }

    /// Removes every passkey of `account_id` on `conn`, in the transaction of a reset: whoever
    /// resets has lost theirs, or is taking the account back from whoever added one. Returns
    /// how many.
    pub async fn remove_all_in(
        &self,
        conn: &mut sqlx::AnyConnection,
        account_id: &str,
    ) -> Result<u64, Error> {
        Ok(Records::remove_all_in(conn, account_id).await?)
    }

    /// Sign-in options: for `username`, naming `account` (the account it names, if any), its
    /// passkeys, or fake ones in the same shape; without a username, discoverable options
    /// (conditional mediation, for autofill).
    pub async fn sign_in_options(
        &self,
        username: Option<&Username>,
        account: Option<&Account>,
    ) -> Result<Started<RequestChallengeResponse>, Error> {
        let webauthn = self.webauthn()?;
        let Some(username) = username else {
            let (options, state) = webauthn
                .start_discoverable_authentication()
                .map_err(|e| anyhow::anyhow!("starting a discoverable sign-in: {e:?}"))?;
            let ceremony = self
                .ceremonies
                .start(None, &Ceremony::Discoverable(state))
                .await?;
            return Ok(Started { ceremony, options });
        };
        // The same queries whether or not the name has an account, so timing tells nothing.
        let passkeys: Vec<_> = self
            .records
            .of_account(account.map_or("", |a| a.id.as_str()))
            .await?
            .into_iter()
            .map(|stored| stored.passkey)
            .collect();
        let (mut options, ceremony) = if passkeys.is_empty() {
            let (mut options, _) = webauthn
                .start_discoverable_authentication()
                .map_err(|e| anyhow::anyhow!("starting a decoy sign-in: {e:?}"))?;
            let fakes = self.fake_credentials(username)?;
            options.public_key.allow_credentials = fakes
                .into_iter()
                .map(|id| AllowCredentials {
                    type_: "public-key".to_owned(),
                    id,
                    transports: None,
                })
                .collect();
            (options, Ceremony::Decoy)
        } else {
            let (options, state) = webauthn
                .start_passkey_authentication(&passkeys)
                .map_err(|e| anyhow::anyhow!("starting a passkey sign-in: {e:?}"))?;
            (options, Ceremony::SignIn(state))
        };
        // One shape for real and decoy options: transports are hints a decoy cannot know, and
        // nothing of the discoverable request remains.
        for allowed in &mut options.public_key.allow_credentials {
            allowed.transports = None;
        }
        options.public_key.extensions = None;
        options.mediation = None;
        let ceremony = self
            .ceremonies
            .start(account.map(|a| a.id.as_str()), &ceremony)
            .await?;
        Ok(Started { ceremony, options })
    }

    /// The fake credential ids of `username`: the same every time, and none only for about one
    /// name in four million (the generator's distribution gives some 15% of names none, a list
    /// no account with a passkey shows, so it is asked again), so every name looks like an
    /// account with passkeys.
    fn fake_credentials(&self, username: &Username) -> Result<Vec<Vec<u8>>, Error> {
        let mut input = username.as_str().as_bytes().to_vec();
        let mut fakes = Vec::new();
        for round in 0..8u8 {
            fakes = self
                .fakes
                .generate(&input)
                .map_err(|e| anyhow::anyhow!("fake passkey credentials: {e:?}"))?;
            if !fakes.is_empty() {
                break;
            }
            // A name no account can have (usernames hold no NUL), so no real name meets it.
            input.extend([0, round]);
        }
        Ok(fakes)
    }

    /// Verifies a sign-in answer against the ceremony it echoes (taken once, whatever the
    /// outcome); a verified passkey's counter and last use are stored.
    pub async fn verify(
        &self,
        ceremony: &str,
        credential: &PublicKeyCredential,
    ) -> Result<Assertion, Error> {
        let webauthn = self.webauthn()?;
        let Some(taken) = self.ceremonies.take::<Ceremony>(ceremony).await? else {
            return Ok(Assertion::Refused);
        };
        let Some(mut stored) = self
            .records
            .by_credential_id(credential.get_credential_id())
            .await?
        else {
            return Ok(Assertion::Refused);
        };
        let result = match taken.state {
            Ceremony::SignIn(state)
                if taken.account_id.as_deref() == Some(stored.account_id.as_str()) =>
            {
                webauthn.finish_passkey_authentication(credential, &state)
            }
            Ceremony::Discoverable(state) => {
                match webauthn.identify_discoverable_authentication(credential) {
                    Ok((handle, _)) if account_id_of(handle) == stored.account_id => webauthn
                        .finish_discoverable_authentication_v2(credential, state, &stored.passkey),
                    _ => return Ok(Assertion::Refused),
                }
            }
            _ => return Ok(Assertion::Refused),
        };
        let result = match result {
            Ok(result) => result,
            Err(WebauthnError::CredentialPossibleCompromise) => {
                tracing::warn!(
                    subject = stored.account_id,
                    passkey = stored.id,
                    "passkey signature counter went backwards: refused as a possible clone"
                );
                self.events
                    .report_account(EventKind::PasskeyPossibleClone, &stored.account_id)
                    .await;
                return Ok(Assertion::Refused);
            }
            Err(error) => {
                tracing::debug!(%error, "passkey assertion refused");
                return Ok(Assertion::Refused);
            }
        };
        stored.passkey.update_credential(&result);
        self.records.record_use(&stored).await?;
        Ok(Assertion::Verified {
            account_id: stored.account_id,
        })
    }
}

/// What an operator's import of one passkey came to.
#[derive(Debug, PartialEq, Eq)]
pub enum Imported {
    /// Added to the account.
    Added,
    /// Its credential id is registered already (to this account or another): kept as it was.
    Registered,
    /// The account has as many passkeys as it may.
    Full,
    /// Not webauthn-rs's `Passkey` JSON.
    Invalid,
}

/// Adds `credential` (webauthn-rs 0.6's `Passkey` as JSON: a credential another system
/// registered for this relying party id) to `account_id` as `name`, at most `max_per_account`
/// per account: `portcullis users import-passkeys`. No ceremony and no notice: the operator
/// vouches for it, as for an imported TOTP secret.
pub async fn import(
    pool: AnyPool,
    clock: Arc<dyn Clock>,
    account_id: &str,
    name: &str,
    credential: &serde_json::Value,
    max_per_account: u32,
) -> anyhow::Result<Imported> {
    let (Ok(passkey), Ok(name)) = (
        serde_json::from_value(credential.clone()),
        checked_name(name),
    ) else {
        return Ok(Imported::Invalid);
    };
    Ok(
        match Records::new(pool, clock)
            .add(account_id, &name, &passkey, max_per_account)
            .await?
        {
            Ok(_) => Imported::Added,
            Err(Refused::Registered) => Imported::Registered,
            Err(Refused::Full) => Imported::Full,
        },
    )
}

/// The webauthn-rs instance for `relying_party`, or a start-up error naming the setting.
fn build(relying_party: &RelyingParty) -> anyhow::Result<Webauthn> {
    let (first, others) = relying_party
        .origins
        .split_first()
        .ok_or_else(|| anyhow::anyhow!("webauthn.rp_origins: name at least one origin"))?;
    let mut builder = WebauthnBuilder::new(&relying_party.id, first).map_err(|e| {
        anyhow::anyhow!(
            "webauthn.rp_id `{}` and origin `{first}`: {e} (the id must be the origin's host \
             or a parent domain of it)",
            relying_party.id
        )
    })?;
    for origin in others {
        builder = builder.append_allowed_origin(origin);
    }
    builder
        .rp_name(&relying_party.name)
        .build()
        .map_err(|e| anyhow::anyhow!("webauthn.rp_id / webauthn.rp_origins: {e}"))
}

/// Asks for a discoverable credential where the authenticator can keep one (browsers create one
/// for `preferred`), so the username field's autofill offers it; one that cannot (a security
/// key full of resident keys) still registers for username-first sign-in.
fn prefer_discoverable(options: &mut CreationChallengeResponse) {
    if let Some(selection) = options.public_key.authenticator_selection.as_mut() {
        selection.resident_key = Some(ResidentKeyRequirement::Preferred);
    }
}

/// The user handle authenticators keep for `account_id`: its 128 random bits.
fn user_handle(account_id: &str) -> anyhow::Result<Uuid> {
    hex::decode(account_id)
        .ok()
        .and_then(|bytes| Uuid::from_slice(&bytes).ok())
        .ok_or_else(|| anyhow::anyhow!("account id `{account_id}` is not 128 bits of hex"))
}

/// The account id a user handle stands for.
fn account_id_of(handle: Uuid) -> String {
    hex::encode(handle.as_bytes())
}

/// A passkey's name, trimmed: 1 to [`MAX_NAME_CHARS`] characters, none of them control
/// characters (400 `invalid_name`).
fn checked_name(name: &str) -> Result<String, Error> {
    let name = name.trim();
    let chars = name.chars().count();
    if chars == 0 || chars > MAX_NAME_CHARS || name.chars().any(char::is_control) {
        return Err(Error::BadRequest {
            code: "invalid_name",
            detail: format!(
                "a passkey's name has 1 to {MAX_NAME_CHARS} characters, none of them control \
                 characters"
            ),
        });
    }
    Ok(name.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_account_id_is_its_own_user_handle() {
        let id = "0123456789abcdef0123456789abcdef";
        assert_eq!(account_id_of(user_handle(id).unwrap()), id);
        assert!(user_handle("not hex").is_err());
        assert!(user_handle("abcd").is_err());
    }

    #[test]
    fn names_are_trimmed_and_bounded() {
        assert_eq!(checked_name("  Laptop ").unwrap(), "Laptop");
        for bad in ["", "   ", "tab\there", &"x".repeat(MAX_NAME_CHARS + 1)] {
            assert!(checked_name(bad).is_err(), "{bad:?}");
        }
        assert!(checked_name(&"é".repeat(MAX_NAME_CHARS)).is_ok());
    }
}
