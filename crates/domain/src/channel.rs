//! Which data channel a sync runs on, by Airbyte's rule: socket mode only
//! when both connector definitions declare a compatible
//! `connectorIPCOptions.dataChannel` (same version, a shared serialization,
//! both speak SOCKET) and nothing forces legacy mode (a reset or clear job,
//! field selection, the connection's own setting); otherwise STDIO.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A connection's say in the choice (Airbyte decides this by feature flags;
/// we keep it on the connection as `dataChannel`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ChannelSetting {
    /// `auto`: socket mode when both connectors support it; `stdio`: always legacy mode.
    #[serde(default)]
    pub mode: ChannelMode,
    /// The number of sockets, instead of Airbyte's rule (two per CPU of the smaller side).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub socket_count: Option<u32>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChannelMode {
    #[default]
    Auto,
    Stdio,
}

impl ChannelSetting {
    pub fn is_default(&self) -> bool {
        *self == ChannelSetting::default()
    }

    /// What a request may set: at least one socket, at most 64.
    pub fn check(&self) -> Result<(), String> {
        match self.socket_count {
            Some(n) if !(1..=64).contains(&n) => Err(format!("socketCount {n} is outside 1..=64")),
            _ => Ok(()),
        }
    }
}

/// The channel chosen for one sync, and why, for the attempt's log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChannelChoice {
    /// `SOCKET` or `STDIO`.
    pub medium: String,
    /// `PROTOBUF` or `JSONL`; socket mode only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub socket_count: Option<u32>,
    pub reason: String,
}

impl ChannelChoice {
    fn stdio(reason: impl Into<String>) -> Self {
        ChannelChoice { medium: "STDIO".into(), format: None, socket_count: None, reason: reason.into() }
    }

    pub fn is_socket(&self) -> bool {
        self.medium == "SOCKET"
    }
}

/// Why a sync must stay in legacy mode whatever its connectors support.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForcesStdio {
    /// Reset and clear jobs run `source-empty`, which speaks stdio.
    ResetOrClear,
    /// The platform must see each record to keep only the selected fields.
    FieldSelection,
}

/// Chooses the data channel. `cpus` are the source's and the destination's.
pub fn choose(source_ipc: Option<&Value>, destination_ipc: Option<&Value>, setting: &ChannelSetting, forced: &[ForcesStdio], cpus: (f64, f64)) -> ChannelChoice {
    if setting.mode == ChannelMode::Stdio {
        return ChannelChoice::stdio("the connection's dataChannel.mode is stdio");
    }
    if let Some(reason) = forced.first() {
        return ChannelChoice::stdio(match reason {
            ForcesStdio::ResetOrClear => "reset and clear jobs run in legacy mode",
            ForcesStdio::FieldSelection => "field selection needs legacy mode, where the platform sees each record",
        });
    }
    let channel = |ipc: Option<&Value>| ipc.and_then(|v| v.get("dataChannel")).cloned();
    let (Some(source), Some(destination)) = (channel(source_ipc), channel(destination_ipc)) else {
        return ChannelChoice::stdio("a connector declares no connectorIPCOptions.dataChannel");
    };
    if source.get("version") != destination.get("version") || source.get("version").is_none() {
        return ChannelChoice::stdio(format!("the connectors' data channel versions differ ({} and {})", source["version"], destination["version"]));
    }
    let supports = |side: &Value, key: &str, value: &str| side[key].as_array().is_some_and(|a| a.iter().any(|v| v.as_str() == Some(value)));
    if !(supports(&source, "supportedTransport", "SOCKET") && supports(&destination, "supportedTransport", "SOCKET")) {
        return ChannelChoice::stdio("a connector does not support the SOCKET transport");
    }
    let Some(format) = ["PROTOBUF", "JSONL"].into_iter().find(|f| supports(&source, "supportedSerialization", f) && supports(&destination, "supportedSerialization", f)) else {
        return ChannelChoice::stdio("the connectors share no serialization");
    };
    let sockets = setting.socket_count.unwrap_or_else(|| socket_count(cpus.0, cpus.1));
    ChannelChoice {
        medium: "SOCKET".into(),
        format: Some(format.into()),
        socket_count: Some(sockets),
        reason: format!("both connectors support SOCKET with {format}"),
    }
}

/// Airbyte's rule: two sockets per CPU of the smaller side, at least one.
pub fn socket_count(source_cpus: f64, destination_cpus: f64) -> u32 {
    ((source_cpus.min(destination_cpus).floor() as u32) * 2).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ipc(serialization: &[&str], transport: &[&str]) -> Value {
        json!({"dataChannel": {"version": "0.0.2", "supportedSerialization": serialization, "supportedTransport": transport}})
    }

    #[test]
    fn socket_mode_needs_both_sides_and_prefers_protobuf() {
        let both = ipc(&["JSONL", "PROTOBUF"], &["SOCKET", "STDIO"]);
        let auto = ChannelSetting::default();
        let chosen = choose(Some(&both), Some(&both), &auto, &[], (2.0, 4.0));
        assert_eq!((chosen.medium.as_str(), chosen.format.as_deref(), chosen.socket_count), ("SOCKET", Some("PROTOBUF"), Some(4)));
        let jsonl_only = ipc(&["JSONL"], &["SOCKET"]);
        assert_eq!(choose(Some(&both), Some(&jsonl_only), &auto, &[], (1.0, 1.0)).format.as_deref(), Some("JSONL"));
        assert!(!choose(Some(&both), None, &auto, &[], (1.0, 1.0)).is_socket(), "mixed capabilities: legacy");
        assert!(!choose(Some(&both), Some(&ipc(&["JSONL"], &["STDIO"])), &auto, &[], (1.0, 1.0)).is_socket());
        let older = json!({"dataChannel": {"version": "0.0.1", "supportedSerialization": ["JSONL"], "supportedTransport": ["SOCKET"]}});
        assert!(choose(Some(&both), Some(&older), &auto, &[], (1.0, 1.0)).reason.contains("versions differ"));
    }

    #[test]
    fn resets_field_selection_and_the_connection_force_legacy_and_counts_can_be_set() {
        let both = ipc(&["PROTOBUF"], &["SOCKET"]);
        let auto = ChannelSetting::default();
        assert!(!choose(Some(&both), Some(&both), &auto, &[ForcesStdio::ResetOrClear], (1.0, 1.0)).is_socket());
        assert!(!choose(Some(&both), Some(&both), &auto, &[ForcesStdio::FieldSelection], (1.0, 1.0)).is_socket());
        let stdio = ChannelSetting { mode: ChannelMode::Stdio, socket_count: None };
        assert!(!choose(Some(&both), Some(&both), &stdio, &[], (1.0, 1.0)).is_socket());
        let eight = ChannelSetting { mode: ChannelMode::Auto, socket_count: Some(8) };
        assert_eq!(choose(Some(&both), Some(&both), &eight, &[], (1.0, 1.0)).socket_count, Some(8));
        assert_eq!(socket_count(0.5, 4.0), 1);
        assert!(ChannelSetting { mode: ChannelMode::Auto, socket_count: Some(0) }.check().is_err());
    }
}
