//! What one sync attempt runs: the two connectors, the catalog, the state to
//! resume from, and the limits. This is the orchestrator's whole input.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sluice_protocol::socket::DataChannel;
use sluice_protocol::{AirbyteStateMessage, ConfiguredAirbyteCatalog, StreamDescriptor};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncConfig {
    pub source: ConnectorConfig,
    pub destination: ConnectorConfig,
    /// The streams to sync; records of other streams never reach the destination.
    pub catalog: ConfiguredAirbyteCatalog,
    /// The committed state to resume from, as a list of state messages.
    #[serde(default)]
    pub state: Vec<AirbyteStateMessage>,
    /// Per stream, the only top-level fields of `data` the destination may see.
    #[serde(default)]
    pub selected_fields: Vec<FieldSelection>,
    /// Where the connectors' config, catalog and state files are written.
    pub work_dir: PathBuf,
    #[serde(default)]
    pub limits: Limits,
    /// Socket mode: records go from source to destination over these
    /// sockets, and the platform container is the bookkeeper. `None`: legacy
    /// mode, every message through the orchestrator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_channel: Option<DataChannel>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectorConfig {
    /// The name used in logs and errors, e.g. `source-faker`.
    pub name: String,
    pub launch: Launch,
    /// The connector's own configuration, written to its `--config` file.
    pub config: Value,
}

/// How the orchestrator reaches a connector.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Launch {
    /// Start it as a child process: `command` plus the protocol's arguments.
    Spawn {
        command: Vec<String>,
        #[serde(default)]
        env: BTreeMap<String, String>,
    },
    /// Attach to a connector started by someone else (another container of
    /// the task) through named pipes in `dir`: `stdout`, `stderr`, `stdin`
    /// (destination only), and a file `exit` that receives its exit status.
    Attach { dir: PathBuf },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldSelection {
    pub stream: StreamDescriptor,
    pub fields: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// A protocol line longer than this fails the attempt.
    pub max_line_bytes: usize,
    /// The source must emit a RECORD or STATE at least this often.
    pub source_idle_timeout_secs: u64,
    /// The destination must accept input or answer at least this often.
    pub destination_idle_timeout_secs: u64,
    /// How long a stopped connector gets between SIGTERM and SIGKILL.
    pub shutdown_grace_secs: u64,
    /// Committed state is handed to the reporter at most this often (and always at the end).
    pub state_flush_interval_secs: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_line_bytes: 100 * 1024 * 1024,
            source_idle_timeout_secs: 3 * 3600,
            destination_idle_timeout_secs: 2 * 3600,
            shutdown_grace_secs: 10,
            state_flush_interval_secs: 1,
        }
    }
}
