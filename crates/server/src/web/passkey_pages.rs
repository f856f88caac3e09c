//! The account page's passkeys: the options an enrolment needs (JSON for the page's script,
//! after the step-up), the new passkey the authenticator made, and removal. The step-up is the
//! current password, or for an account without one a passkey's answer the script puts in
//! `step_up_ceremony` and `step_up_credential`.

use actix_web::{HttpRequest, HttpResponse, post, web};
use portcullis_accounts::login as use_case;
use portcullis_accounts::{AppState, Error};
use secrecy::SecretString;
use serde::Deserialize;

use super::account_page::{account_page, signed_in_post};
use super::login_pages::passkey_answer;
use super::page::{Notice, PageError, Refusal, see_other};
use crate::error::ApiError;
use crate::routes::{ClientIp, HttpState, StepUpBody};

/// The name a passkey gets when its form gives none.
const DEFAULT_NAME: &str = "Passkey";

/// A form with nothing but a step-up.
#[derive(Deserialize)]
pub struct StepUpForm {
    csrf: String,
    #[serde(flatten)]
    step_up: StepUpFields,
}

/// What a page form steps up with (`step_up.html`).
#[derive(Deserialize)]
pub struct StepUpFields {
    #[serde(default)]
    current_password: Option<SecretString>,
    #[serde(default)]
    step_up_ceremony: Option<String>,
    /// A passkey's answer, as JSON.
    #[serde(default)]
    step_up_credential: Option<String>,
}

impl StepUpFields {
    /// The step-up body these fields make (empty fields are absent), with the `altcha` payload
    /// of a solved challenge, if any.
    pub(super) fn body(&self, altcha: Option<&str>) -> Result<StepUpBody, Error> {
        let filled = |field: &Option<String>| field.clone().filter(|v| !v.is_empty());
        Ok(StepUpBody {
            current_password: self.current_password.clone(),
            ceremony: filled(&self.step_up_ceremony),
            credential: filled(&self.step_up_credential)
                .as_deref()
                .map(passkey_answer)
                .transpose()?,
            altcha: altcha.filter(|a| !a.is_empty()).map(str::to_owned),
        })
    }
}

/// The finished enrolment's fields.
#[derive(Deserialize)]
pub struct NewPasskeyForm {
    csrf: String,
    #[serde(default)]
    name: String,
    ceremony: String,
    /// The authenticator's answer, as JSON.
    credential: String,
}

/// `POST /account/passkeys/options`: after the step-up, the options `navigator.credentials
/// .create` takes, as JSON (the page's script asks; a refusal is a problem+json).
#[post("/account/passkeys/options")]
pub async fn registration_options(
    state: web::Data<AppState>,
    http: web::Data<HttpState>,
    request: HttpRequest,
    ClientIp(ip): ClientIp,
    form: web::Form<StepUpForm>,
) -> Result<HttpResponse, ApiError> {
    let browser = match signed_in_post(&state, &request, &form.csrf).await {
        Ok(Ok(browser)) => browser,
        Ok(Err(_)) => return Err(Error::Unauthenticated.into()),
        Err(PageError(error)) => return Err(error),
    };
    let step_up = form
        .step_up
        .body(None)?
        .request(&request, &http, browser.digest, ip)?;
    let account = use_case::reauthenticate(&state, step_up.reauthentication(), |_| Ok(())).await?;
    let started = state.passkeys.start_registration(&account).await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "ceremony": started.ceremony,
        "publicKey": started.options.public_key,
    })))
}

/// `POST /account/passkeys`: stores the passkey the authenticator made; the account page
/// again, with what happened.
#[post("/account/passkeys")]
pub async fn add(
    state: web::Data<AppState>,
    request: HttpRequest,
    form: web::Form<NewPasskeyForm>,
) -> Result<HttpResponse, PageError> {
    let browser = match signed_in_post(&state, &request, &form.csrf).await? {
        Ok(browser) => browser,
        Err(answer) => return Ok(answer),
    };
    let attempt = async {
        let credential = serde_json::from_str(&form.credential).map_err(|e| Error::BadRequest {
            code: "bad_request",
            detail: format!("the authenticator's answer could not be read: {e}"),
        })?;
        let name = Some(form.name.as_str()).filter(|n| !n.trim().is_empty());
        state
            .passkeys
            .finish_registration(
                &browser.account,
                &form.ceremony,
                name.unwrap_or(DEFAULT_NAME),
                &credential,
            )
            .await
    };
    match attempt.await {
        Ok(stored) => {
            let notice = Notice::info(format!("Passkey “{}” added.", stored.name));
            account_page(&state, &browser, form.csrf.clone(), None, Some(notice)).await
        }
        Err(error) => {
            let refusal = Refusal::of(error)?;
            account_page(&state, &browser, form.csrf.clone(), Some(refusal), None).await
        }
    }
}

/// `POST /account/passkeys/{id}/remove`: removes a passkey after the step-up.
#[post("/account/passkeys/{id}/remove")]
pub async fn remove(
    state: web::Data<AppState>,
    http: web::Data<HttpState>,
    request: HttpRequest,
    ClientIp(ip): ClientIp,
    id: web::Path<String>,
    form: web::Form<StepUpForm>,
) -> Result<HttpResponse, PageError> {
    let browser = match signed_in_post(&state, &request, &form.csrf).await? {
        Ok(browser) => browser,
        Err(answer) => return Ok(answer),
    };
    let attempt = async {
        let step_up =
            form.step_up
                .body(None)?
                .request(&request, &http, browser.digest.clone(), ip)?;
        let account =
            use_case::reauthenticate(&state, step_up.reauthentication(), |_| Ok(())).await?;
        state.passkeys.remove(&account, &id).await?;
        Ok::<_, ApiError>(())
    };
    match attempt.await {
        Ok(()) => {
            let notice = Notice::info("Passkey removed.");
            account_page(&state, &browser, form.csrf.clone(), None, Some(notice)).await
        }
        Err(ApiError::Accounts(Error::Unauthenticated)) => Ok(see_other("/login").finish()),
        Err(error) => {
            let refusal = Refusal::of(error)?;
            account_page(&state, &browser, form.csrf.clone(), Some(refusal), None).await
        }
    }
}
