//! The task plan: one plain value that says everything a workload's task
//! runs, for any executor (local processes, Docker, ECS) to carry out.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sluice_domain::WorkloadType;

/// What a task runs for one workload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskPlan {
    pub workload_id: String,
    pub kind: WorkloadType,
    /// The init step: files written into the shared directory before any
    /// connector starts (configs, catalog, state; secrets among them, so
    /// written 0600).
    pub files: Vec<PlanFile>,
    /// For spec, check and discover: the one connector, and its command.
    pub connector: Option<Container>,
    /// For syncs: both connectors and the orchestrator between them.
    pub source: Option<Container>,
    pub destination: Option<Container>,
    pub resources: Resources,
    /// Socket mode: records go from source to destination over this many
    /// sockets in this framing, and the bookkeeper runs instead of the
    /// orchestrator. `None`: legacy mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_channel: Option<PlanChannel>,
    /// Where the task reports, and the credential that opens its workload only.
    pub workload_api_url: String,
    pub credential: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlanChannel {
    pub format: sluice_protocol::socket::Format,
    pub socket_count: u32,
}

impl PlanChannel {
    /// The channel with its sockets in `dir`, which every container of the task shares.
    pub fn in_dir(&self, dir: &std::path::Path) -> sluice_protocol::socket::DataChannel {
        sluice_protocol::socket::DataChannel::in_dir(dir, self.socket_count as usize, self.format)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlanFile {
    /// A name inside the shared directory.
    pub name: String,
    pub contents: String,
}

/// One connector: a command to run locally, or an image for containers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Container {
    /// For logs and errors, e.g. `source-faker`.
    pub name: String,
    pub runtime: Runtime,
    pub env: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Runtime {
    /// Sluice's own reference connector, built into the `sluice` binary.
    Reference(String),
    /// An Airbyte connector from PyPI, installed into its own virtualenv.
    Pypi(String),
    /// An executable on the machine running the task.
    Executable(String),
    /// A container image (Docker or ECS executors only).
    Image(String),
    /// Airbyte's declarative runner, with the manifest in the config: from
    /// PyPI locally, its image ([`manifest_runner_image`]) in containers.
    Manifest,
}

/// The declarative runner's image: `SLUICE_MANIFEST_RUNNER_IMAGE`, else
/// Airbyte's `airbyte/source-declarative-manifest` at the CDK version
/// Sluice runs from PyPI.
pub fn manifest_runner_image() -> String {
    std::env::var("SLUICE_MANIFEST_RUNNER_IMAGE")
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| format!("airbyte/source-declarative-manifest:{}", sluice_connectors::MANIFEST_RUNNER.version))
}

impl Runtime {
    /// From a definition's `runtime` text: `image:<ref>`, `pypi:<pkg>`, a
    /// reference connector's name, or a path.
    pub fn parse(text: &str) -> Runtime {
        if let Some(image) = text.strip_prefix("image:") {
            Runtime::Image(image.to_owned())
        } else if text == sluice_connectors::MANIFEST {
            Runtime::Manifest
        } else if text.starts_with("pypi:") {
            Runtime::Pypi(text.to_owned())
        } else if sluice_connectors::REFERENCE_CONNECTORS.contains(&text) {
            Runtime::Reference(text.to_owned())
        } else {
            Runtime::Executable(text.to_owned())
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Resources {
    pub cpu_millis: u32,
    pub memory_mib: u32,
}

impl Default for Resources {
    fn default() -> Self {
        Resources { cpu_millis: 1000, memory_mib: 2048 }
    }
}

/// Names of the init step's files.
pub mod files {
    pub const SOURCE_CONFIG: &str = "source_config.json";
    pub const DESTINATION_CONFIG: &str = "destination_config.json";
    pub const CONNECTOR_CONFIG: &str = "connector_config.json";
    pub const CATALOG: &str = "catalog.json";
    pub const STATE: &str = "state.json";
    pub const SELECTED_FIELDS: &str = "selected_fields.json";
}

impl TaskPlan {
    /// Whether a connector of the plan exists only as a container image.
    pub fn needs_images(&self) -> bool {
        [&self.connector, &self.source, &self.destination].into_iter().flatten().any(|c| matches!(c.runtime, Runtime::Image(_)))
    }

    pub fn file(&self, name: &str) -> Option<&str> {
        self.files.iter().find(|f| f.name == name).map(|f| f.contents.as_str())
    }
}

impl TaskPlan {
    /// The orchestrator's (or bookkeeper's) input for a sync plan, with each
    /// connector reached the executor's way (started as a child, or attached
    /// through pipes), and in socket mode the sockets in `socket_dir`.
    pub fn sync_config(
        &self,
        source_launch: sluice_orchestrator::Launch,
        destination_launch: sluice_orchestrator::Launch,
        work_dir: std::path::PathBuf,
        socket_dir: &std::path::Path,
    ) -> Result<sluice_orchestrator::SyncConfig, crate::LaunchError> {
        use crate::LaunchError;
        let (source, destination) = match (&self.source, &self.destination) {
            (Some(s), Some(d)) => (s, d),
            _ => return Err(LaunchError("a sync plan needs a source and a destination".into())),
        };
        fn parse<T: serde::de::DeserializeOwned>(plan: &TaskPlan, name: &str) -> Result<T, LaunchError> {
            let text = plan.file(name).ok_or_else(|| LaunchError(format!("the plan has no {name}")))?;
            serde_json::from_str(text).map_err(|e| LaunchError(format!("{name} in the plan: {e}")))
        }
        Ok(sluice_orchestrator::SyncConfig {
            source: sluice_orchestrator::ConnectorConfig { name: source.name.clone(), launch: source_launch, config: parse(self, files::SOURCE_CONFIG)? },
            destination: sluice_orchestrator::ConnectorConfig {
                name: destination.name.clone(),
                launch: destination_launch,
                config: parse(self, files::DESTINATION_CONFIG)?,
            },
            catalog: parse(self, files::CATALOG)?,
            state: parse(self, files::STATE)?,
            selected_fields: parse(self, files::SELECTED_FIELDS)?,
            work_dir,
            limits: sluice_orchestrator::Limits::default(),
            data_channel: self.data_channel.as_ref().map(|c| c.in_dir(socket_dir)),
        })
    }
}
