//! The drill's passkey users: a soft authenticator (webauthn-authenticator-rs's `SoftPasskey`)
//! for every passkey-only account, whose credential is made for the deployment's relying party
//! with a local webauthn-rs. Seeding imports the credentials (`portcullis users
//! import-passkeys`), so no enrolment runs through the service: a run's signal sees only its own
//! traffic. A user signs in username-first, as a browser's "Sign in with a passkey" does.

use std::collections::HashMap;
use std::sync::Mutex;

use anyhow::Context;
use url::Url;
use webauthn_authenticator_rs::WebauthnAuthenticator;
use webauthn_authenticator_rs::softpasskey::SoftPasskey;
use webauthn_rs::prelude::{Uuid, WebauthnBuilder};
use webauthn_rs_proto::{PublicKeyCredential, RequestChallengeResponse};

use crate::plan::Account;

/// The authenticators of a run's passkey-only accounts, by account index.
pub struct Keyring {
    origin: Url,
    authenticators: HashMap<usize, Mutex<SoftPasskey>>,
}

impl Keyring {
    /// Makes a passkey for every passkey-only account of `accounts`, for pages at `origin`
    /// (its host is the relying party id); returns the keyring and the import's lines.
    pub fn enrol(accounts: &[Account], origin: &Url) -> anyhow::Result<(Self, Vec<String>)> {
        let mut authenticators = HashMap::new();
        let mut lines = Vec::new();
        if !accounts.iter().any(|a| a.passkey_only) {
            // No relying party needed (a deployment at an address has none).
            let keyring = Self {
                origin: origin.clone(),
                authenticators,
            };
            return Ok((keyring, lines));
        }
        let rp_id = origin
            .host_str()
            .context("the passkey origin has no host")?;
        let webauthn = WebauthnBuilder::new(rp_id, origin)
            .and_then(|b| b.build())
            .with_context(|| {
                format!("a relying party {rp_id} at {origin} (passkeys need a domain)")
            })?;
        for (index, account) in accounts.iter().enumerate() {
            if !account.passkey_only {
                continue;
            }
            let (options, state) = webauthn
                .start_passkey_registration(
                    Uuid::from_u128(index as u128),
                    &account.username,
                    &account.username,
                    None,
                )
                .context("starting a registration")?;
            let mut authenticator = SoftPasskey::new(true);
            let credential = authenticator
                .do_registration(origin.clone(), options)
                .map_err(|e| anyhow::anyhow!("the soft passkey did not register: {e:?}"))?;
            let passkey = webauthn
                .finish_passkey_registration(&credential, &state)
                .context("finishing a registration")?;
            lines.push(format!(
                "{}\n",
                serde_json::json!({
                    "username": account.username,
                    "name": "Drill passkey",
                    "credential": passkey,
                    "passkey_only": true,
                })
            ));
            authenticators.insert(index, Mutex::new(authenticator));
        }
        let keyring = Self {
            origin: origin.clone(),
            authenticators,
        };
        Ok((keyring, lines))
    }

    /// The assertion account `index`'s authenticator makes for sign-in `options` (the answer of
    /// `POST /v1/login/passkey/options`).
    pub fn answer(
        &self,
        index: usize,
        options: &serde_json::Value,
    ) -> anyhow::Result<PublicKeyCredential> {
        let options: RequestChallengeResponse =
            serde_json::from_value(options.clone()).context("reading sign-in options")?;
        let mut authenticator = self
            .authenticators
            .get(&index)
            .context("this account has no passkey")?
            .lock()
            .map_err(|_| anyhow::anyhow!("an authenticator's lock was poisoned"))?;
        authenticator
            .do_authentication(self.origin.clone(), options)
            .map_err(|e| anyhow::anyhow!("the soft passkey did not answer: {e:?}"))
    }
}
