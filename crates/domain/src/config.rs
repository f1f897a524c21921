//! Connector configurations against their specs: validation that names each
//! failing path, and the `airbyte_secret` fields split out, masked and put
//! back.
//!
//! A secret is found by walking the config together with the spec's
//! `connectionSpecification`: a value whose property schema says
//! `"airbyte_secret": true` (in `properties`, in any `oneOf`/`anyOf`/`allOf`
//! branch, or in array `items`) is a secret.

use serde_json::{Map, Value};

/// What every response and log line shows instead of a secret.
pub const MASK: &str = "**********";
/// A stored config holds `{"_secret": "<reference>"}` where a secret was.
pub const SECRET_REF_KEY: &str = "_secret";

/// One way a config fails its spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigViolation {
    /// A JSON pointer into the config, e.g. `/credentials/api_key` (`` for the root).
    pub path: String,
    pub message: String,
}

impl std::fmt::Display for ConfigViolation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let path = if self.path.is_empty() { "/" } else { &self.path };
        write!(f, "{path}: {}", self.message)
    }
}

/// Checks `config` against a connector's `connectionSpecification`.
pub fn validate(connection_specification: &Value, config: &Value) -> Result<(), Vec<ConfigViolation>> {
    let validator = jsonschema::validator_for(connection_specification).map_err(|e| {
        vec![ConfigViolation { path: String::new(), message: format!("the connector's spec is not a valid JSON Schema: {e}") }]
    })?;
    let mut violations: Vec<ConfigViolation> = validator
        .iter_errors(config)
        .map(|e| ConfigViolation { path: e.instance_path().to_string(), message: e.to_string() })
        .collect();
    if violations.is_empty() {
        return Ok(());
    }
    // Masked secrets in the message would be noise; real ones must never be echoed.
    for v in &mut violations {
        if is_secret_path(connection_specification, config, &v.path) {
            v.message = "invalid secret value".into();
        }
    }
    Err(violations)
}

/// The config with every secret replaced by `{"_secret": reference(path)}`,
/// and the secrets taken out, by JSON pointer. `"**********"` (a masked value
/// sent back unchanged) is left for [`restore`] to fill from the old config.
pub fn split_secrets(
    connection_specification: &Value,
    config: &Value,
    mut reference: impl FnMut(&str) -> String,
) -> (Value, Vec<(String, String)>) {
    let mut secrets = Vec::new();
    let stripped = map_secrets(connection_specification, config, "", &mut |path, value| match value {
        Value::String(s) if s == MASK => value.clone(),
        Value::Object(o) if o.contains_key(SECRET_REF_KEY) => value.clone(),
        _ => {
            let text = match value {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            let id = reference(path);
            secrets.push((id.clone(), text));
            Value::Object(Map::from_iter([(SECRET_REF_KEY.to_owned(), Value::String(id))]))
        }
    });
    (stripped, secrets)
}

/// The config as users may see it: every secret shown as `"**********"`.
pub fn mask(connection_specification: &Value, config: &Value) -> Value {
    map_secrets(connection_specification, config, "", &mut |_, _| Value::String(MASK.into()))
}

/// Puts secrets back: `{"_secret": id}` becomes `lookup(id)`; a masked
/// value takes the value at the same path in `previous` (an update that
/// kept the secret it was shown).
pub fn restore(config: &Value, previous: Option<&Value>, lookup: &mut dyn FnMut(&str) -> Option<String>) -> Result<Value, String> {
    fn walk(value: &Value, previous: Option<&Value>, path: &str, lookup: &mut dyn FnMut(&str) -> Option<String>) -> Result<Value, String> {
        match value {
            Value::Object(o) if o.len() == 1 && o.contains_key(SECRET_REF_KEY) => {
                let id = o[SECRET_REF_KEY].as_str().ok_or_else(|| format!("{path}: secret reference is not a string"))?;
                lookup(id).map(Value::String).ok_or_else(|| format!("{path}: secret {id} is missing from the secrets store"))
            }
            Value::String(s) if s == MASK => match previous {
                Some(old) => walk(old, None, path, lookup),
                None => Err(format!("{path}: `{MASK}` stands for a secret, but there is no earlier value to keep")),
            },
            Value::Object(o) => {
                let mut out = Map::new();
                for (k, v) in o {
                    let old = previous.and_then(|p| p.get(k));
                    out.insert(k.clone(), walk(v, old, &format!("{path}/{}", escape(k)), lookup)?);
                }
                Ok(Value::Object(out))
            }
            Value::Array(items) => items
                .iter()
                .enumerate()
                .map(|(i, v)| walk(v, previous.and_then(|p| p.get(i)), &format!("{path}/{i}"), lookup))
                .collect::<Result<Vec<_>, _>>()
                .map(Value::Array),
            other => Ok(other.clone()),
        }
    }
    walk(config, previous, "", lookup)
}

/// Every secret reference (`{"_secret": ref}`) in a stored config.
pub fn secret_refs(config: &Value) -> Vec<String> {
    let mut found = Vec::new();
    map_refs(config.clone(), &mut |reference| {
        found.push(reference.to_owned());
        Value::Null
    });
    found
}

/// The config with each `{"_secret": ref}` replaced by `f(ref)`.
pub fn map_refs(config: Value, f: &mut dyn FnMut(&str) -> Value) -> Value {
    match config {
        Value::Object(o) if o.len() == 1 && o.get(SECRET_REF_KEY).is_some_and(Value::is_string) => f(o[SECRET_REF_KEY].as_str().expect("checked")),
        Value::Object(o) => Value::Object(o.into_iter().map(|(k, v)| (k, map_refs(v, f))).collect()),
        Value::Array(items) => Value::Array(items.into_iter().map(|v| map_refs(v, f)).collect()),
        other => other,
    }
}

fn is_secret_path(spec: &Value, config: &Value, path: &str) -> bool {
    let mut found = false;
    map_secrets(spec, config, "", &mut |p, v| {
        found |= path.starts_with(p);
        v.clone()
    });
    found
}

/// Rebuilds `config`, passing each secret value (with its path) through `f`.
fn map_secrets(schema: &Value, config: &Value, path: &str, f: &mut dyn FnMut(&str, &Value) -> Value) -> Value {
    match config {
        Value::Object(fields) => {
            let mut out = Map::new();
            for (key, value) in fields {
                let child_path = format!("{path}/{}", escape(key));
                let schemas = property_schemas(schema, key);
                let mapped = if schemas.iter().any(|s| s.get("airbyte_secret") == Some(&Value::Bool(true))) {
                    f(&child_path, value)
                } else {
                    // Walk every candidate schema: a secret in any branch is a secret.
                    let mut mapped = value.clone();
                    for s in &schemas {
                        mapped = map_secrets(s, &mapped, &child_path, f);
                    }
                    mapped
                };
                out.insert(key.clone(), mapped);
            }
            Value::Object(out)
        }
        Value::Array(items) => {
            let item_schemas = subschemas(schema).into_iter().filter_map(|s| s.get("items")).collect::<Vec<_>>();
            Value::Array(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| item_schemas.iter().fold(item.clone(), |v, s| map_secrets(s, &v, &format!("{path}/{i}"), f)))
                    .collect(),
            )
        }
        other => other.clone(),
    }
}

/// A schema and every branch of its `oneOf`, `anyOf` and `allOf`, recursively.
fn subschemas(schema: &Value) -> Vec<&Value> {
    let mut all = vec![schema];
    for key in ["oneOf", "anyOf", "allOf"] {
        if let Some(Value::Array(branches)) = schema.get(key) {
            for branch in branches {
                all.extend(subschemas(branch));
            }
        }
    }
    all
}

fn property_schemas<'a>(schema: &'a Value, key: &str) -> Vec<&'a Value> {
    subschemas(schema).into_iter().filter_map(|s| s.get("properties")?.get(key)).collect()
}

fn escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec() -> Value {
        json!({
            "type": "object",
            "required": ["host", "credentials"],
            "properties": {
                "host": {"type": "string"},
                "port": {"type": "integer", "minimum": 1, "maximum": 65535},
                "api_key": {"type": "string", "airbyte_secret": true},
                "credentials": {"oneOf": [
                    {"type": "object", "properties": {"method": {"const": "password"}, "password": {"type": "string", "airbyte_secret": true}}},
                    {"type": "object", "properties": {"method": {"const": "token"}, "token": {"type": "string", "airbyte_secret": true}}}
                ]},
                "tunnels": {"type": "array", "items": {"type": "object", "properties": {"ssh_key": {"type": "string", "airbyte_secret": true}}}}
            }
        })
    }

    fn config() -> Value {
        json!({"host": "db", "port": 5432, "api_key": "k-123",
               "credentials": {"method": "token", "token": "t-456"},
               "tunnels": [{"ssh_key": "s-789", "user": "u"}]})
    }

    #[test]
    fn validation_names_each_failing_path() {
        assert_eq!(validate(&spec(), &config()), Ok(()));
        let errors = validate(&spec(), &json!({"port": 70000, "credentials": {}})).unwrap_err();
        let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
        assert!(paths.contains(&"/port"), "{errors:?}");
        assert!(errors.iter().any(|e| e.path.is_empty() && e.message.contains("host")), "{errors:?}");
        let secret_error = validate(&spec(), &json!({"host": "h", "credentials": {}, "api_key": 12345})).unwrap_err();
        assert!(secret_error.iter().all(|e| !e.message.contains("12345")), "a secret is never echoed: {secret_error:?}");
    }

    #[test]
    fn secrets_are_split_out_everywhere_the_spec_marks_them() {
        let (stripped, secrets) = split_secrets(&spec(), &config(), |path| format!("ref{path}"));
        let text = stripped.to_string();
        for secret in ["k-123", "t-456", "s-789"] {
            assert!(!text.contains(secret), "{secret} left in {text}");
        }
        assert_eq!(stripped["credentials"]["token"], json!({"_secret": "ref/credentials/token"}));
        assert_eq!(stripped["tunnels"][0]["user"], "u");
        assert_eq!(secrets.len(), 3);

        let masked = mask(&spec(), &config());
        assert_eq!(masked["api_key"], MASK);
        assert_eq!(masked["tunnels"][0]["ssh_key"], MASK);
        assert_eq!(masked["host"], "db");

        let store: std::collections::HashMap<String, String> = secrets.into_iter().collect();
        let restored = restore(&stripped, None, &mut |id| store.get(id).cloned()).unwrap();
        assert_eq!(restored, config());
    }

    #[test]
    fn an_update_that_sends_the_mask_back_keeps_the_old_secret() {
        let (stored, secrets) = split_secrets(&spec(), &config(), |path| format!("ref{path}"));
        let store: std::collections::HashMap<String, String> = secrets.into_iter().collect();
        let mut update = mask(&spec(), &config());
        update["host"] = json!("db2");
        let (stripped, new_secrets) = split_secrets(&spec(), &update, |path| format!("ref{path}"));
        assert!(new_secrets.is_empty(), "masks are not new secrets");
        let restored = restore(&stripped, Some(&stored), &mut |id| store.get(id).cloned()).unwrap();
        assert_eq!(restored["api_key"], "k-123");
        assert_eq!(restored["host"], "db2");
        let err = restore(&json!({"api_key": MASK}), None, &mut |_| None).unwrap_err();
        assert!(err.starts_with("/api_key:"), "{err}");
    }
}
