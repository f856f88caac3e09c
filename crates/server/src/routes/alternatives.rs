//! The OpenAPI schemas of the bodies whose members are alternatives: exactly one of a code, a
//! recovery code or a passkey's answer; a current password or a change token. The derive states
//! each member on its own, so these are written as JSON Schema (`oneOf`, each alternative
//! closed, the other alternatives' members allowed only as `null`, as serde reads them), and a
//! test holds each to the handler's own checks, case by case.

use serde_json::{Value, json};
use utoipa::openapi::{RefOr, Schema};

/// A code from an authenticator app, as `totp::is_well_formed` takes it.
fn code() -> Value {
    json!({"type": "string", "pattern": "^[0-9]{6}$",
        "description": "Six digits from the authenticator app."})
}

/// A recovery code, as the second factors read it: its 16 characters in any case, hyphens
/// anywhere.
fn recovery_code() -> Value {
    json!({"type": "string", "pattern": "^-*(?:[a-kmnp-zA-KMNP-Z2-9]-*){16}$",
        "description": "One of the account's recovery codes (xxxx-xxxx-xxxx-xxxx)."})
}

/// A password in a body: at most 1024 bytes (JSON Schema counts characters).
fn password(description: &str) -> Value {
    json!({"type": "string", "minLength": 1, "maxLength": 1024,
        "description": format!("{description} At most 1024 bytes.")})
}

/// A member of another alternative, which serde reads as absent when `null`.
fn absent() -> Value {
    json!({"type": "null"})
}

fn altcha() -> Value {
    json!({"type": ["string", "null"],
        "description": "The payload of a solved challenge, when one was asked."})
}

fn ceremony() -> Value {
    json!({"type": "string",
        "description": "The ceremony of `POST /v1/login/passkey/options` (or of the options \
            the step began with)."})
}

fn credential() -> Value {
    json!({"type": "object",
        "description": "`PublicKeyCredential.toJSON()` of the passkey's assertion."})
}

/// An object with exactly `members` (the `required` ones required).
fn object(title: &str, required: &[&str], members: &[(&str, Value)]) -> Value {
    let properties: serde_json::Map<String, Value> = members
        .iter()
        .map(|(name, schema)| ((*name).to_owned(), schema.clone()))
        .collect();
    json!({"type": "object", "title": title, "required": required,
        "properties": properties, "additionalProperties": false})
}

/// `DELETE /v1/mfa/totp`: `{"code"}` or `{"recovery_code"}`.
pub fn code_or_recovery_code() -> Value {
    json!({"description": "A code or one of the recovery codes.", "oneOf": [
        object("code", &["code"], &[("code", code()), ("recovery_code", absent())]),
        object("recovery code", &["recovery_code"],
            &[("recovery_code", recovery_code()), ("code", absent())]),
    ]})
}

/// `POST /v1/mfa/totp/confirm`: `{"code"}`.
pub fn code_only() -> Value {
    object("code", &["code"], &[("code", code())])
}

/// `POST /v1/login/mfa`: the `mfa_token` with a code, a recovery code, or a passkey's answer.
pub fn second_factor() -> Value {
    let token = || {
        json!({"type": "string",
            "description": "The `mfa_token` of the `mfa_required` answer."})
    };
    json!({"description": "The second step of a login.", "oneOf": [
        object("code", &["mfa_token", "code"], &[("mfa_token", token()), ("code", code()),
            ("recovery_code", absent()), ("ceremony", absent()), ("credential", absent())]),
        object("recovery code", &["mfa_token", "recovery_code"], &[("mfa_token", token()),
            ("recovery_code", recovery_code()), ("code", absent()), ("ceremony", absent()),
            ("credential", absent())]),
        object("passkey", &["mfa_token", "ceremony", "credential"], &[("mfa_token", token()),
            ("ceremony", ceremony()), ("credential", credential()), ("code", absent()),
            ("recovery_code", absent())]),
    ]})
}

/// `POST /v1/password`: the current password with a session, or a change token without one.
pub fn password_change() -> Value {
    let new = || password("The new password (the rules of docs/defences.md).");
    json!({"description": "A password change.", "oneOf": [
        object("with a session", &["current_password", "new_password"], &[
            ("current_password", password("The password now (checked like a login).")),
            ("new_password", new()), ("altcha", altcha()), ("password_change_token", absent())]),
        object("with a change token", &["password_change_token", "new_password"], &[
            ("password_change_token", json!({"type": "string",
                "description": "The token of a `password_change_required` answer."})),
            ("new_password", new()), ("altcha", altcha()), ("current_password", absent())]),
    ]})
}

/// A step-up: the account's password, or a passkey's answer.
pub fn step_up() -> Value {
    json!({"description": "The step-up before a change to how the account signs in.", "oneOf": [
        object("password", &["current_password"], &[
            ("current_password", password("The account's password.")), ("altcha", altcha()),
            ("ceremony", absent()), ("credential", absent())]),
        object("passkey", &["ceremony", "credential"], &[("ceremony", ceremony()),
            ("credential", credential()), ("altcha", altcha()),
            ("current_password", absent())]),
    ]})
}

/// `schema` as utoipa's schema (an empty object schema if it were not one, which a test rules
/// out).
pub fn to_schema(schema: Value) -> RefOr<Schema> {
    serde_json::from_value(schema).unwrap_or_else(|_| RefOr::T(Schema::Object(Default::default())))
}

/// Implements `ToSchema` for a body type with the schema a function above writes.
macro_rules! written_schema {
    ($body:ty, $schema:path) => {
        impl utoipa::PartialSchema for $body {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::Schema> {
                $crate::routes::alternatives::to_schema($schema())
            }
        }
        impl utoipa::ToSchema for $body {}
    };
}
pub(crate) use written_schema;

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether `body` is valid against `schema`, by the `jsonschema` crate (Draft 2020-12, as
    /// OpenAPI 3.1), with patterns enforced.
    fn valid(schema: &Value, body: &Value) -> bool {
        jsonschema::draft202012::is_valid(schema, body)
    }

    #[test]
    fn every_written_schema_reads_as_a_schema() {
        for schema in [
            code_or_recovery_code(),
            code_only(),
            second_factor(),
            password_change(),
            step_up(),
        ] {
            let read: Result<RefOr<Schema>, _> = serde_json::from_value(schema.clone());
            assert!(read.is_ok(), "{schema}");
        }
    }

    #[test]
    fn the_alternatives_take_exactly_the_bodies_the_handlers_take() {
        let code = "123456";
        let recovery = "abcd-efgh-ijkm-npqr";
        let remove = code_or_recovery_code();
        for (body, ok) in [
            (json!({"code": code}), true),
            (json!({"recovery_code": recovery}), true),
            (json!({"recovery_code": "ABCDEFGHIJKMNPQR"}), true),
            (json!({"code": code, "recovery_code": null}), true),
            (json!({"code": code, "recovery_code": recovery}), false),
            (json!({"code": "12345"}), false),
            (json!({"code": "1234567"}), false),
            (json!({"recovery_code": "abcd-efgh-ijkl-npqr"}), false),
            (json!({}), false),
            (json!({"code": null}), false),
            (json!({"code": code, "extra": 1}), false),
        ] {
            assert_eq!(valid(&remove, &body), ok, "{body}");
            let parsed = portcullis_accounts::mfa::Proof::parse(
                body["code"].as_str(),
                body["recovery_code"].as_str(),
            );
            if body.get("extra").is_none() {
                assert_eq!(parsed.is_ok(), ok, "the handler on {body}");
            }
        }
        let login = second_factor();
        for (body, ok) in [
            (json!({"mfa_token": "t", "code": code}), true),
            (
                json!({"mfa_token": "t", "recovery_code": recovery, "ceremony": null}),
                true,
            ),
            (
                json!({"mfa_token": "t", "ceremony": "c", "credential": {}}),
                true,
            ),
            (
                json!({"mfa_token": "t", "ceremony": "c", "credential": {}, "code": code}),
                false,
            ),
            (json!({"mfa_token": "t", "ceremony": "c"}), false),
            (json!({"code": code}), false),
        ] {
            assert_eq!(valid(&login, &body), ok, "{body}");
        }
        let change = password_change();
        for (body, ok) in [
            (json!({"current_password": "p", "new_password": "n"}), true),
            (
                json!({"password_change_token": "t", "new_password": "n", "altcha": null}),
                true,
            ),
            (
                json!({"current_password": "p", "password_change_token": "t", "new_password": "n"}),
                false,
            ),
            (json!({"new_password": "n"}), false),
            (json!({"current_password": "", "new_password": "n"}), false),
        ] {
            assert_eq!(valid(&change, &body), ok, "{body}");
        }
        let step = step_up();
        for (body, ok) in [
            (json!({"current_password": "p"}), true),
            (
                json!({"ceremony": "c", "credential": {}, "altcha": "a"}),
                true,
            ),
            (
                json!({"current_password": "p", "ceremony": "c", "credential": {}}),
                false,
            ),
            (json!({}), false),
        ] {
            assert_eq!(valid(&step, &body), ok, "{body}");
        }
    }
}
