//! The configuration a user manages: workspaces, connector definitions,
//! sources and destinations, connections, API applications. Plain data that
//! serializes in the public API's own shape (camelCase), so that what the
//! store keeps and what the API answers differ only by masked secrets.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::ConnectionStatus;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Workspace {
    pub workspace_id: String,
    pub name: String,
    #[serde(default = "default_residency")]
    pub data_residency: String,
    /// Where job events are posted (our addition to Airbyte's workspace).
    #[serde(default)]
    pub notification_urls: Vec<String>,
}

fn default_residency() -> String {
    "auto".into()
}

/// Sources and destinations share everything but their name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActorKind {
    Source,
    Destination,
}

impl ActorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ActorKind::Source => "source",
            ActorKind::Destination => "destination",
        }
    }
    /// The key Airbyte's SDK puts in a configuration: `sourceType`, `destinationType`.
    pub fn type_key(self) -> &'static str {
        match self {
            ActorKind::Source => "sourceType",
            ActorKind::Destination => "destinationType",
        }
    }
}

/// A connector that sources or destinations can be made of.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Definition {
    pub id: String,
    pub kind: ActorKind,
    pub name: String,
    /// The `sourceType`/`destinationType` value that selects it, e.g. `faker`.
    pub type_key: String,
    /// How to run it: a reference connector name, `pypi:<package>[==v]`, an
    /// executable path, or `image:<repository>:<tag>`.
    pub runtime: String,
    #[serde(default)]
    pub docker_repository: String,
    #[serde(default)]
    pub docker_image_tag: String,
    #[serde(default = "default_protocol")]
    pub protocol_version: String,
    /// Airbyte's `connectorIPCOptions` (socket mode support), as published.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connector_ipc_options: Option<Value>,
    /// The connector's `connectionSpecification`: validates configs and
    /// marks their `airbyte_secret` fields. `None` until first learnt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_specification: Option<Value>,
    /// `None` for built-in definitions, visible to every workspace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace_id: Option<String>,
    /// A manifest-only connector's low-code manifest, which Airbyte's
    /// declarative runner runs (runtime `manifest`). Every config the
    /// connector gets carries it as `__injected_declarative_manifest`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub declarative_manifest: Option<Value>,
    /// The manifest's version: 1 when created, one more on each update.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub manifest_version: i64,
    /// What Airbyte's registry said of it, when it was imported from one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry: Option<crate::registry::RegistryFacts>,
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}

fn default_protocol() -> String {
    "0.2.0".into()
}

/// A configured source or destination. Its `configuration` holds
/// `{"_secret": ref}` wherever the spec marks a secret.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Actor {
    pub id: String,
    pub kind: ActorKind,
    pub name: String,
    pub workspace_id: String,
    pub definition_id: String,
    pub configuration: Value,
    pub created_at: i64,
}

/// One stream of a connection, as the public API configures it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct StreamConfiguration {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub sync_mode: SyncMode,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cursor_field: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub primary_key: Vec<Vec<String>>,
    /// Top-level fields to keep; empty keeps all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub selected_fields: Vec<SelectedField>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SelectedField {
    pub field_path: Vec<String>,
}

/// The public API's sync modes: how records are read, then how written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SyncMode {
    FullRefreshOverwrite,
    FullRefreshAppend,
    FullRefreshOverwriteDeduped,
    IncrementalAppend,
    IncrementalDedupedHistory,
}

impl SyncMode {
    /// The protocol's (sync_mode, destination_sync_mode) pair.
    pub fn protocol_modes(self) -> (&'static str, &'static str) {
        match self {
            SyncMode::FullRefreshOverwrite => ("full_refresh", "overwrite"),
            SyncMode::FullRefreshAppend => ("full_refresh", "append"),
            SyncMode::FullRefreshOverwriteDeduped => ("full_refresh", "overwrite_dedup"),
            SyncMode::IncrementalAppend => ("incremental", "append"),
            SyncMode::IncrementalDedupedHistory => ("incremental", "append_dedup"),
        }
    }

    pub fn is_incremental(self) -> bool {
        self.protocol_modes().0 == "incremental"
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ScheduleConfig {
    pub schedule_type: ScheduleType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cron_expression: Option<String>,
    /// Our addition: the zone the cron expression is read in (UTC by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cron_time_zone: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScheduleType {
    Manual,
    Cron,
}

impl ScheduleConfig {
    pub fn manual() -> Self {
        ScheduleConfig { schedule_type: ScheduleType::Manual, cron_expression: None, cron_time_zone: None }
    }

    /// The schedule it describes, or why the cron expression is wrong.
    pub fn schedule(&self) -> Result<crate::Schedule, String> {
        match (self.schedule_type, &self.cron_expression) {
            (ScheduleType::Manual, _) => Ok(crate::Schedule::Manual),
            (ScheduleType::Cron, None) => Err("a cron schedule needs `cronExpression`".into()),
            (ScheduleType::Cron, Some(expr)) => {
                crate::Schedule::cron(expr, self.cron_time_zone.as_deref().unwrap_or("UTC")).map_err(|e| e.to_string())
            }
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Connection {
    pub connection_id: String,
    pub name: String,
    pub workspace_id: String,
    pub source_id: String,
    pub destination_id: String,
    pub streams: Vec<StreamConfiguration>,
    pub schedule: ScheduleConfig,
    #[serde(with = "status_text")]
    pub status: ConnectionStatus,
    pub namespace_definition: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_format: Option<String>,
    #[serde(default)]
    pub prefix: String,
    pub non_breaking_schema_updates_behavior: String,
    pub created_at: i64,
    /// Ours: socket mode or not, and how many sockets.
    #[serde(default, skip_serializing_if = "crate::channel::ChannelSetting::is_default")]
    pub data_channel: crate::channel::ChannelSetting,
    /// What the last schema check found and did not apply: `no_change`,
    /// `non_breaking` or `breaking` (Airbyte's `schemaChange`).
    #[serde(default = "no_change")]
    pub schema_change: String,
}

fn no_change() -> String {
    "no_change".into()
}

mod status_text {
    use crate::ConnectionStatus;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(status: &ConnectionStatus, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(status.as_str())
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<ConnectionStatus, D::Error> {
        let text = String::deserialize(d)?;
        ConnectionStatus::parse(&text).ok_or_else(|| serde::de::Error::custom(format!("unknown connection status `{text}`")))
    }
}

/// An API client: its id, the hash of its secret (never the secret), and
/// what it may do.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Application {
    pub id: String,
    pub name: String,
    pub client_id: String,
    pub secret_hash: String,
    pub created_at: i64,
    /// Applications made before roles existed administer the instance.
    #[serde(default)]
    pub permission_type: Role,
    /// The one workspace a `workspace_*` role applies to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace_id: Option<String>,
}

/// What an application may do, under Airbyte's permission names: the whole
/// instance, or one workspace as its admin (everything there, its
/// applications too), editor (everything but the workspace itself and its
/// applications) or reader (reads only).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    #[default]
    InstanceAdmin,
    WorkspaceAdmin,
    WorkspaceEditor,
    WorkspaceReader,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::InstanceAdmin, Role::WorkspaceAdmin, Role::WorkspaceEditor, Role::WorkspaceReader];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::InstanceAdmin => "instance_admin",
            Role::WorkspaceAdmin => "workspace_admin",
            Role::WorkspaceEditor => "workspace_editor",
            Role::WorkspaceReader => "workspace_reader",
        }
    }

    pub fn parse(text: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == text)
    }

    /// Whether this role holds every power of `other` (roles form a line).
    pub fn covers(self, other: Role) -> bool {
        (self as u8) <= (other as u8)
    }
}

/// What a connection resumes from: the state its destination last echoed,
/// as the list of state messages the protocol's `--state` file takes.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ConnectionState {
    pub connection_id: String,
    pub states: Vec<Value>,
    /// Per stream (`namespace.name` or `name`), the generation its data is
    /// at: a refresh, reset or clear starts a new one, so a destination can
    /// drop the older generations' rows.
    #[serde(default)]
    pub generations: std::collections::BTreeMap<String, i64>,
    /// Per stream, the job that started its current generation: that job's
    /// later attempts go on with it (and with the states it committed).
    #[serde(default)]
    pub generation_jobs: std::collections::BTreeMap<String, i64>,
}

/// The namespace a stream lands in at the destination, by Airbyte's rules:
/// `source` keeps the source's, `destination` leaves it to the destination,
/// `custom_format` substitutes `${SOURCE_NAMESPACE}` in the format.
pub fn destination_namespace(definition: &str, format: Option<&str>, source_namespace: Option<&str>) -> Option<String> {
    match definition {
        "destination" => None,
        "custom_format" => {
            let formatted = format.unwrap_or("").replace("${SOURCE_NAMESPACE}", source_namespace.unwrap_or(""));
            (!formatted.is_empty()).then_some(formatted)
        }
        _ => source_namespace.map(str::to_owned),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sync_modes_map_to_the_protocol() {
        let mode: SyncMode = serde_json::from_str("\"incremental_deduped_history\"").unwrap();
        assert_eq!(mode.protocol_modes(), ("incremental", "append_dedup"));
        assert!(mode.is_incremental());
        assert!(serde_json::from_str::<SyncMode>("\"sideways\"").is_err());
    }

    #[test]
    fn schedules_name_what_is_wrong() {
        let cron = |e: &str| ScheduleConfig { schedule_type: ScheduleType::Cron, cron_expression: Some(e.into()), cron_time_zone: None };
        assert!(cron("*/5 * * * * ?").schedule().is_ok());
        assert!(cron("not a cron").schedule().is_err());
        let missing = ScheduleConfig { schedule_type: ScheduleType::Cron, cron_expression: None, cron_time_zone: None };
        assert!(missing.schedule().unwrap_err().contains("cronExpression"));
        assert!(matches!(ScheduleConfig::manual().schedule(), Ok(crate::Schedule::Manual)));
    }

    #[test]
    fn namespaces_follow_the_connection() {
        assert_eq!(destination_namespace("source", None, Some("public")).as_deref(), Some("public"));
        assert_eq!(destination_namespace("destination", None, Some("public")), None);
        assert_eq!(destination_namespace("custom_format", Some("raw_${SOURCE_NAMESPACE}"), Some("db")).as_deref(), Some("raw_db"));
    }
}
