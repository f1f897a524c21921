//! Airbyte's connector registry (`oss_registry.json`) and manifest-only
//! connectors: which entries become which definitions, run how. The rules
//! are PyAirbyte's: a manifest-only connector runs its manifest (no Docker),
//! a Python connector published on PyPI runs from its package, anything
//! else from its image.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::resources::ActorKind;

/// The runtime text of a definition that Airbyte's declarative runner runs.
pub const MANIFEST_RUNTIME: &str = "manifest";

/// The declarative runner's version, which manifest definitions report as
/// their image tag (the version `sluice_connectors::MANIFEST_RUNNER` installs).
pub const RUNNER_VERSION: &str = "7.39.1";

/// Config keys the platform puts into a manifest connector's config, as
/// Airbyte's `ConfigInjector` does; never stored with a user's config.
pub const INJECTED_MANIFEST: &str = "__injected_declarative_manifest";
pub const INJECTED_COMPONENTS: &str = "__injected_components_py";
pub const INJECTED_CHECKSUMS: &str = "__injected_components_py_checksums";

/// What the registry said of an imported definition, kept with it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RegistryFacts {
    /// `python`, `java`, `manifest-only` ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
    /// `community`, `certified`, `archived`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub support_level: Option<String>,
    #[serde(default)]
    pub tombstone: bool,
    /// The PyPI package, when the registry enables it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pypi_package: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub documentation_url: Option<String>,
    /// `releases.breakingChanges`: version -> `{message, upgradeDeadline, ...}`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub breaking_changes: BTreeMap<String, Value>,
}

/// One registry entry, read.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub kind: ActorKind,
    pub id: String,
    pub name: String,
    pub docker_repository: String,
    pub docker_image_tag: String,
    /// The whole ConnectorSpecification, if the entry has one.
    pub spec: Option<Value>,
    pub connector_ipc_options: Option<Value>,
    pub manifest_only: bool,
    pub facts: RegistryFacts,
}

impl Entry {
    /// The connector's short name, as PyAirbyte indexes the registry: the
    /// repository without `airbyte/` (`source-pokeapi`).
    pub fn connector_name(&self) -> &str {
        self.docker_repository.strip_prefix("airbyte/").unwrap_or(&self.docker_repository)
    }

    /// The definition's runtime, chosen as PyAirbyte chooses, and why:
    /// the manifest when it is manifest-only and its manifest was given,
    /// then the PyPI package where the registry enables it, then the image.
    pub fn runtime(&self, has_manifest: bool) -> (String, String) {
        if self.manifest_only && has_manifest {
            return (MANIFEST_RUNTIME.into(), "manifest-only: Airbyte's declarative runner runs its manifest".into());
        }
        let image = format!("image:{}:{}", self.docker_repository, self.docker_image_tag);
        if self.manifest_only {
            return (image, "manifest-only, but no manifest was given for it: it runs from its image".into());
        }
        match &self.facts.pypi_package {
            Some(package) if self.facts.language.as_deref() == Some("python") => {
                (format!("pypi:{package}=={}", self.docker_image_tag), "a Python connector published on PyPI".into())
            }
            _ => (image, "no manifest and no PyPI package: it runs from its image".into()),
        }
    }
}

/// Reads a registry document. Every entry that cannot be used is named
/// with what is wrong (`sources[3].dockerImageTag: is missing`); the
/// others are returned.
pub fn read(registry: &Value) -> (Vec<Entry>, Vec<(String, String)>) {
    let mut entries = Vec::new();
    let mut errors = Vec::new();
    if !registry.is_object() || (registry.get("sources").is_none() && registry.get("destinations").is_none()) {
        errors.push(("$".into(), "a registry is an object with `sources` and/or `destinations` lists".into()));
        return (entries, errors);
    }
    for (list, kind, id_key) in [("sources", ActorKind::Source, "sourceDefinitionId"), ("destinations", ActorKind::Destination, "destinationDefinitionId")] {
        let Some(items) = registry.get(list) else { continue };
        let Some(items) = items.as_array() else {
            errors.push((list.into(), "must be a list".into()));
            continue;
        };
        for (i, item) in items.iter().enumerate() {
            match entry(item, kind, id_key) {
                Ok(e) => entries.push(e),
                Err((field, why)) => errors.push((format!("{list}[{i}].{field}"), why)),
            }
        }
    }
    (entries, errors)
}

fn entry(item: &Value, kind: ActorKind, id_key: &'static str) -> Result<Entry, (&'static str, String)> {
    let text = |key: &'static str| -> Result<String, (&'static str, String)> {
        match item.get(key) {
            Some(Value::String(s)) if !s.trim().is_empty() => Ok(s.clone()),
            Some(Value::String(_)) => Err((key, "is empty".into())),
            Some(other) => Err((key, format!("must be a string, not {other}"))),
            None => Err((key, "is missing".into())),
        }
    };
    let id = text(id_key)?;
    if !looks_like_uuid(&id) {
        return Err((id_key, format!("`{id}` is not a UUID")));
    }
    let docker_repository = text("dockerRepository")?;
    let docker_image_tag = text("dockerImageTag")?;
    if !docker_image_tag.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)) {
        return Err(("dockerImageTag", format!("`{docker_image_tag}` is not a version")));
    }
    let tags: Vec<&str> = item.get("tags").and_then(Value::as_array).map(|t| t.iter().filter_map(Value::as_str).collect()).unwrap_or_default();
    // `language` is the entry's own; older entries carry it only as a tag.
    let language = item
        .get("language")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .or_else(|| tags.iter().find_map(|t| t.strip_prefix("language:")).map(str::to_owned));
    let pypi = &item["remoteRegistries"]["pypi"];
    let pypi_package = (pypi["enabled"] == Value::Bool(true)).then(|| pypi["packageName"].as_str().map(str::to_owned)).flatten();
    let spec = item.get("spec").filter(|s| s.is_object()).cloned();
    if let Some(spec) = &spec {
        if !spec["connectionSpecification"].is_object() {
            return Err(("spec", "has no `connectionSpecification` object".into()));
        }
    }
    let breaking_changes = match &item["releases"]["breakingChanges"] {
        Value::Object(map) => map.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        _ => BTreeMap::new(),
    };
    Ok(Entry {
        kind,
        name: item.get("name").and_then(Value::as_str).map(str::to_owned).unwrap_or_else(|| docker_repository.clone()),
        id,
        manifest_only: language.as_deref() == Some("manifest-only"),
        docker_repository,
        docker_image_tag,
        connector_ipc_options: item.get("connectorIPCOptions").filter(|o| o.is_object()).cloned(),
        spec,
        facts: RegistryFacts {
            language,
            support_level: item.get("supportLevel").and_then(Value::as_str).map(str::to_owned),
            tombstone: item.get("tombstone").and_then(Value::as_bool).unwrap_or(false),
            pypi_package,
            documentation_url: item.get("documentationUrl").and_then(Value::as_str).map(str::to_owned),
            breaking_changes,
        },
    })
}

fn looks_like_uuid(text: &str) -> bool {
    let parts: Vec<&str> = text.split('-').collect();
    parts.iter().map(|p| p.len()).eq([8, 4, 4, 4, 12]) && parts.iter().all(|p| p.chars().all(|c| c.is_ascii_hexdigit()))
}

/// One breaking change crossed by a version change.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BreakingChange {
    pub version: String,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upgrade_deadline: Option<String>,
}

/// The breaking changes a move from version `from` to `to` crosses: those
/// released after `from`, up to and including `to` (in either direction,
/// as a downgrade undoes them just the same).
pub fn breaking_between(changes: &BTreeMap<String, Value>, from: &str, to: &str) -> Vec<BreakingChange> {
    let (low, high) = match compare_versions(from, to) {
        Ordering::Equal => return Vec::new(),
        Ordering::Less => (from, to),
        Ordering::Greater => (to, from),
    };
    let mut crossed: Vec<BreakingChange> = changes
        .iter()
        .filter(|(v, _)| compare_versions(v, low) == Ordering::Greater && compare_versions(v, high) != Ordering::Greater)
        .map(|(v, c)| BreakingChange {
            version: v.clone(),
            message: c["message"].as_str().unwrap_or("(the registry gives no message)").to_owned(),
            upgrade_deadline: c["upgradeDeadline"].as_str().map(str::to_owned),
        })
        .collect();
    crossed.sort_by(|a, b| compare_versions(&a.version, &b.version));
    crossed
}

/// Semantic versions compared by their numbers (`1.10.0` after `1.9.2`);
/// a pre-release sorts before its release.
pub fn compare_versions(a: &str, b: &str) -> Ordering {
    fn key(v: &str) -> (Vec<u64>, bool, &str) {
        let v = v.trim_start_matches('v');
        let (core, pre) = v.split_once('-').map_or((v, ""), |(c, p)| (c, p));
        (core.split('.').map(|n| n.parse().unwrap_or(0)).collect(), pre.is_empty(), pre)
    }
    key(a).cmp(&key(b))
}

/// The spec a manifest declares (`spec.connection_specification`), which
/// the declarative runner's own `spec` command does not print.
pub fn manifest_spec(manifest: &Value) -> Option<Value> {
    let spec = &manifest["spec"];
    spec.get("connection_specification").or_else(|| spec.get("connectionSpecification")).filter(|s| s.is_object()).cloned()
}

/// Checks that a manifest is one the runner can take: an object with
/// `streams` or `dynamic_streams`, a `version` and a spec.
pub fn check_manifest(manifest: &Value) -> Result<(), String> {
    if !manifest.is_object() {
        return Err("a manifest is an object (a low-code YAML document)".into());
    }
    if manifest["version"].as_str().is_none_or(|v| v.trim().is_empty()) {
        return Err("the manifest has no `version` (the CDK version it was written for, e.g. \"6.44.0\")".into());
    }
    if !manifest["streams"].is_array() && !manifest["dynamic_streams"].is_array() {
        return Err("the manifest has no `streams` (or `dynamic_streams`) list".into());
    }
    for list in ["streams", "dynamic_streams"] {
        let items = manifest[list].as_array().into_iter().flatten();
        if let Some((i, _)) = items.enumerate().find(|(_, s)| !s.is_object()) {
            return Err(format!("`{list}[{i}]` is not a stream: each is an object (`type: DeclarativeStream`, `name`, ...)"));
        }
    }
    if manifest_spec(manifest).is_none() {
        return Err("the manifest has no `spec.connection_specification`: a connector's config cannot be checked without it".into());
    }
    Ok(())
}

/// Custom Python code a connector would run: components sent in the config,
/// or a `class_name` component in its manifest. `None` when there is none.
pub fn custom_code(manifest: Option<&Value>, config: &Value) -> Option<String> {
    if config.get(INJECTED_COMPONENTS).is_some_and(|c| !c.is_null()) {
        return Some(format!("the config carries `{INJECTED_COMPONENTS}`"));
    }
    fn find(value: &Value, path: &mut Vec<String>) -> Option<String> {
        match value {
            Value::Object(map) => {
                if let Some(Value::String(class)) = map.get("class_name") {
                    return Some(format!("the manifest names the custom component `{class}` at {}", path.join(".")));
                }
                for (k, v) in map {
                    path.push(k.clone());
                    let found = find(v, path);
                    path.pop();
                    if found.is_some() {
                        return found;
                    }
                }
                None
            }
            Value::Array(items) => items.iter().enumerate().find_map(|(i, v)| {
                path.push(i.to_string());
                let found = find(v, path);
                path.pop();
                found
            }),
            _ => None,
        }
    }
    let manifest = manifest.or_else(|| config.get(INJECTED_MANIFEST))?;
    find(manifest, &mut vec!["$".into()])
}

/// A config without the keys the platform injects: what may be stored.
pub fn strip_injected(config: &mut Value) {
    if let Some(map) = config.as_object_mut() {
        for key in [INJECTED_MANIFEST, INJECTED_COMPONENTS, INJECTED_CHECKSUMS] {
            map.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn registry() -> Value {
        json!({
            "sources": [
                {"sourceDefinitionId": "6e1c7c2b-0f35-4b5a-9d1c-2a9e6b0f4d11", "name": "PokeAPI", "dockerRepository": "airbyte/source-pokeapi",
                 "dockerImageTag": "0.3.2", "language": "manifest-only", "tags": ["language:manifest-only", "cdk:low-code"],
                 "remoteRegistries": {"pypi": {"enabled": false, "packageName": "airbyte-source-pokeapi"}}, "supportLevel": "community",
                 "spec": {"connectionSpecification": {"type": "object"}}},
                {"sourceDefinitionId": "dfd88b22-b603-4c3d-aad7-3701784586b1", "name": "Faker", "dockerRepository": "airbyte/source-faker",
                 "dockerImageTag": "7.2.1", "tags": ["language:python"], "remoteRegistries": {"pypi": {"enabled": true, "packageName": "airbyte-source-faker"}},
                 "releases": {"breakingChanges": {"4.0.0": {"message": "ids changed", "upgradeDeadline": "2023-08-01"}, "7.0.0": {"message": "new users stream"}}}},
                {"sourceDefinitionId": "not-a-uuid", "dockerRepository": "airbyte/x", "dockerImageTag": "1.0.0"}
            ],
            "destinations": [
                {"destinationDefinitionId": "25c5221d-dce2-4163-ade9-739ef790f503", "name": "Postgres", "dockerRepository": "airbyte/destination-postgres",
                 "language": "java", "connectorIPCOptions": {"dataChannel": {"version": "0.0.2", "supportedSerialization": ["JSONL"], "supportedTransport": ["SOCKET", "STDIO"]}}}
            ]
        })
    }

    #[test]
    fn entries_are_read_and_each_bad_one_named() {
        let (entries, errors) = read(&registry());
        assert_eq!(entries.len(), 2);
        assert_eq!(errors, vec![
            ("sources[2].sourceDefinitionId".to_owned(), "`not-a-uuid` is not a UUID".to_owned()),
            ("destinations[0].dockerImageTag".to_owned(), "is missing".to_owned()),
        ]);
        assert!(entries[0].manifest_only && entries[0].facts.pypi_package.is_none());
        assert_eq!(entries[1].facts.language.as_deref(), Some("python"), "from the tag");
        assert_eq!(read(&json!([1])).1[0].0, "$");
    }

    #[test]
    fn runtimes_are_chosen_as_pyairbyte_does() {
        let (entries, _) = read(&registry());
        assert_eq!(entries[0].runtime(true).0, "manifest");
        assert_eq!(entries[0].runtime(false).0, "image:airbyte/source-pokeapi:0.3.2");
        assert_eq!(entries[1].runtime(false).0, "pypi:airbyte-source-faker==7.2.1");
        let mut java = entries[1].clone();
        java.facts.language = Some("java".into());
        assert_eq!(java.runtime(false).0, "image:airbyte/source-faker:7.2.1");
        assert_eq!(entries[0].connector_name(), "source-pokeapi");
    }

    #[test]
    fn breaking_changes_between_versions() {
        let (entries, _) = read(&registry());
        let changes = &entries[1].facts.breaking_changes;
        let crossed = breaking_between(changes, "3.9.0", "7.2.1");
        assert_eq!(crossed.iter().map(|c| c.version.as_str()).collect::<Vec<_>>(), ["4.0.0", "7.0.0"]);
        assert_eq!(crossed[0].upgrade_deadline.as_deref(), Some("2023-08-01"));
        assert!(breaking_between(changes, "7.0.0", "7.2.1").is_empty(), "7.0.0 itself was already taken");
        assert_eq!(breaking_between(changes, "7.2.1", "6.0.0").len(), 1, "a downgrade crosses it too");
        assert_eq!(compare_versions("1.10.0", "1.9.2"), Ordering::Greater);
        assert_eq!(compare_versions("2.0.0-rc.1", "2.0.0"), Ordering::Less);
    }

    #[test]
    fn manifests_are_checked_and_custom_code_found() {
        let ok = json!({"version": "6.44.0", "streams": [], "spec": {"connection_specification": {"type": "object"}}});
        assert!(check_manifest(&ok).is_ok());
        assert!(check_manifest(&json!({"version": "6.44.0", "streams": []})).unwrap_err().contains("spec.connection_specification"));
        assert!(check_manifest(&json!({"streams": []})).unwrap_err().contains("version"));
        let odd = json!({"version": "1", "streams": [[null]], "spec": {"connection_specification": {}}});
        assert!(check_manifest(&odd).unwrap_err().contains("`streams[0]` is not a stream"));
        assert_eq!(manifest_spec(&ok), Some(json!({"type": "object"})));
        assert!(custom_code(Some(&ok), &json!({})).is_none());
        let custom = json!({"streams": [{"transformations": [{"type": "CustomTransformation", "class_name": "components.Add"}]}]});
        assert!(custom_code(Some(&custom), &json!({})).unwrap().contains("components.Add` at $.streams.0.transformations.0"));
        assert!(custom_code(None, &json!({"__injected_components_py": "x = 1"})).unwrap().contains("__injected_components_py"));
        let mut config = json!({"a": 1, "__injected_declarative_manifest": {}, "__injected_components_py": "x"});
        strip_injected(&mut config);
        assert_eq!(config, json!({"a": 1}));
    }
}
