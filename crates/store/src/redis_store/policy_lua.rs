//! The policy as the Lua functions read it: Lua table literals generated from the core's `Policy`
//! through serde, so every field reaches Lua by the name it has in Rust (and in the configuration):
//! `POLICIES` (per dimension, each with the codec of its states' layout and, where the signal
//! tightens it, its rate limits under attack), `CHALLENGE` and `MAX_FAMILIAR_NETWORKS`; and the packed layout itself
//! (`GROUPS`, `FORMAT_TAG`), from [`super::state`]. The literals open the library, so the library's
//! SHA-1 (its name) names its policy too.

use portcullis_core::familiar::MAX_FAMILIAR_NETWORKS;
use portcullis_core::{Dimension, Policy};
use serde_json::Value;

use super::state::{self, Layout};
use crate::StoreError;

/// `local GROUPS = ...`, `local POLICIES = { <dimension> = { attempts = { burst = 30, ... },
/// ..., layout = { ... } }, ... }`, `local CHALLENGE = { mode = 'risk', ... }` and
/// `local MAX_FAMILIAR_NETWORKS = 8`.
pub fn prelude(policy: &Policy) -> Result<String, StoreError> {
    let mut out = format!(
        "local FORMAT_TAG = {}\nlocal GROUPS = {{{}}}\n",
        state::FORMAT_TAG,
        state::GROUPS
            .iter()
            .map(|(bit, fields)| {
                let names: Vec<String> = fields.iter().map(|f| format!("'{f}'")).collect();
                format!("{{{bit}, {{{}}}}}", names.join(", "))
            })
            .collect::<Vec<_>>()
            .join(", ")
    );
    out.push_str("local POLICIES = {");
    // The codecs are Lua code, not data: set after the literals.
    let mut codecs = String::new();
    for dimension in Dimension::ALL {
        let layout = Layout::of(policy, dimension);
        codecs.push_str(&format!(
            "POLICIES.{}.layout = {}\n",
            dimension.as_str(),
            layout.lua()
        ));
        let mut value = serde_json::to_value(policy.for_dimension(dimension))
            .map_err(|e| StoreError::Misconfigured(format!("encoding the policy: {e}")))?;
        if let Value::Object(fields) = &mut value {
            fields.insert(
                "resets_on_success".to_owned(),
                Value::Bool(dimension.resets_on_success()),
            );
            // The limits while under attack, as the core tightens them (absent where nothing
            // tightens), so the functions pick a table instead of computing one.
            let tightened = policy.effective(dimension, true);
            if tightened != *policy.for_dimension(dimension) {
                let limits = serde_json::to_value(tightened)
                    .map_err(|e| StoreError::Misconfigured(format!("encoding the policy: {e}")))?;
                fields.insert("tightened".to_owned(), limits);
            }
            fields.insert("is_source".to_owned(), Value::Bool(dimension.is_source()));
            fields.insert("rate".to_owned(), Value::Bool(layout.has_rate()));
            fields.insert("success".to_owned(), Value::Bool(layout.has_success()));
        }
        out.push_str(&format!("{} = {}, ", dimension.as_str(), literal(&value)?));
    }
    out.push_str("}\n");
    out.push_str(&codecs);
    let challenge = serde_json::to_value(policy.challenge)
        .map_err(|e| StoreError::Misconfigured(format!("encoding the policy: {e}")))?;
    out.push_str(&format!("local CHALLENGE = {}\n", literal(&challenge)?));
    out.push_str(&format!(
        "local MAX_FAMILIAR_NETWORKS = {MAX_FAMILIAR_NETWORKS}\n"
    ));
    Ok(out)
}

/// A JSON value as a Lua literal; `null` fields are left out (nil: the limit is off).
fn literal(value: &Value) -> Result<String, StoreError> {
    Ok(match value {
        Value::Null => "nil".to_owned(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) if n.is_u64() || n.is_i64() => n.to_string(),
        Value::String(s) if s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') => {
            format!("'{s}'")
        }
        Value::Object(fields) => {
            let mut parts = Vec::new();
            for (name, field) in fields {
                if field.is_null() {
                    continue;
                }
                if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                    return Err(StoreError::Misconfigured(format!("policy field `{name}`")));
                }
                parts.push(format!("{name} = {}", literal(field)?));
            }
            format!("{{{}}}", parts.join(", "))
        }
        other => {
            return Err(StoreError::Misconfigured(format!(
                "policy value `{other}` has no Lua form"
            )));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_prelude_names_every_dimension_and_field() {
        let lua = prelude(&Policy::default()).unwrap();
        assert!(
            lua.starts_with("local FORMAT_TAG = 48\nlocal GROUPS = {{1, {'attempt_tat', "),
            "{lua}"
        );
        assert!(lua.contains("\nlocal POLICIES = {global = {"), "{lua}");
        assert!(lua.contains("POLICIES.ip.layout = {format = 53, "), "{lua}");
        assert!(lua.contains("username = {"), "{lua}");
        assert!(lua.contains("lockout = {"), "{lua}");
        assert!(lua.contains("max_failures = 5"), "{lua}");
        assert!(lua.contains("strategy = 'multiple'"), "{lua}");
        assert!(lua.contains("resets_on_success = true"), "{lua}");
        // The address's limits under attack, tightened by the default factor of 4.
        assert!(
            lua.contains("tightened = {attempts = {burst = 7, interval_ms = 4000}"),
            "{lua}"
        );
        assert_eq!(
            lua.matches("tightened = ").count(),
            1,
            "only the address tightens"
        );
        assert!(lua.contains("network = {"), "{lua}");
        assert!(
            lua.contains(
                "local CHALLENGE = {familiar_days = 90, max_work = 16000000, min_work = 1000000, mode = 'risk'"
            ),
            "{lua}"
        );
        assert!(
            !lua.contains("null") && !lua.contains("permanent_after"),
            "{lua}"
        );
    }
}
