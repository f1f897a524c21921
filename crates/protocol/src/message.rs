//! The Airbyte Protocol's messages as Rust types.
//!
//! Every object keeps the fields it does not know in `extra`, and every enum
//! keeps the values it does not know in `Unknown`, so a message written by a
//! newer connector survives a parse and a re-serialization unchanged.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Fields a type does not model, kept in their original order.
pub type Extra = Map<String, Value>;

/// Declares a string enum of the protocol that also accepts values it does not know.
macro_rules! open_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        pub enum $name {
            $($variant,)+
            /// A value this version of the protocol does not define.
            Unknown(String),
        }

        impl $name {
            pub fn as_str(&self) -> &str {
                match self {
                    $(Self::$variant => $text,)+
                    Self::Unknown(other) => other,
                }
            }
        }

        impl std::str::FromStr for $name {
            type Err = std::convert::Infallible;
            fn from_str(text: &str) -> Result<Self, Self::Err> {
                Ok(match text {
                    $($text => Self::$variant,)+
                    other => Self::Unknown(other.to_owned()),
                })
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = std::borrow::Cow::<'de, str>::deserialize(deserializer)?;
                Ok(text.parse().expect("infallible"))
            }
        }
    };
}

open_enum!(
    /// The `type` of an [`AirbyteMessage`].
    MessageType {
        Record = "RECORD",
        State = "STATE",
        Log = "LOG",
        Spec = "SPEC",
        ConnectionStatus = "CONNECTION_STATUS",
        Catalog = "CATALOG",
        Trace = "TRACE",
        Control = "CONTROL",
        DestinationCatalog = "DESTINATION_CATALOG",
    }
);

open_enum!(StateType { Global = "GLOBAL", Stream = "STREAM", Legacy = "LEGACY" });
open_enum!(LogLevel {
    Fatal = "FATAL",
    Error = "ERROR",
    Warn = "WARN",
    Info = "INFO",
    Debug = "DEBUG",
    Trace = "TRACE",
});
open_enum!(TraceType {
    Error = "ERROR",
    Estimate = "ESTIMATE",
    StreamStatus = "STREAM_STATUS",
    Analytics = "ANALYTICS",
});
open_enum!(FailureType {
    SystemError = "system_error",
    ConfigError = "config_error",
    TransientError = "transient_error",
});
open_enum!(EstimateType { Stream = "STREAM", Sync = "SYNC" });
open_enum!(StreamStatus {
    Started = "STARTED",
    Running = "RUNNING",
    Complete = "COMPLETE",
    Incomplete = "INCOMPLETE",
});
open_enum!(ControlType { ConnectorConfig = "CONNECTOR_CONFIG" });
open_enum!(ConnectionStatusKind { Succeeded = "SUCCEEDED", Failed = "FAILED" });
open_enum!(SyncMode { FullRefresh = "full_refresh", Incremental = "incremental" });
open_enum!(
    /// How a destination writes a stream. `overwrite_dedup` (the API's
    /// `full_refresh_overwrite_deduped`) is not in the protocol's schema:
    /// it is accepted when a platform sends it, never advertised in a spec.
    DestinationSyncMode {
        Append = "append",
        Overwrite = "overwrite",
        AppendDedup = "append_dedup",
        OverwriteDedup = "overwrite_dedup",
        Update = "update",
        SoftDelete = "soft_delete",
    }
);

/// One line of the protocol. Exactly one payload field matches `type`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AirbyteMessage {
    #[serde(rename = "type")]
    pub kind: MessageType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record: Option<AirbyteRecordMessage>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<AirbyteStateMessage>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log: Option<AirbyteLogMessage>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<ConnectorSpecification>,
    #[serde(default, rename = "connectionStatus", skip_serializing_if = "Option::is_none")]
    pub connection_status: Option<AirbyteConnectionStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catalog: Option<AirbyteCatalog>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<AirbyteTraceMessage>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control: Option<AirbyteControlMessage>,
    #[serde(flatten)]
    pub extra: Extra,
}

impl AirbyteMessage {
    fn empty(kind: MessageType) -> Self {
        AirbyteMessage {
            kind,
            record: None,
            state: None,
            log: None,
            spec: None,
            connection_status: None,
            catalog: None,
            trace: None,
            control: None,
            extra: Extra::new(),
        }
    }

    pub fn record(record: AirbyteRecordMessage) -> Self {
        AirbyteMessage { record: Some(record), ..Self::empty(MessageType::Record) }
    }
    pub fn state(state: AirbyteStateMessage) -> Self {
        AirbyteMessage { state: Some(state), ..Self::empty(MessageType::State) }
    }
    pub fn log(level: LogLevel, message: impl Into<String>) -> Self {
        let log = AirbyteLogMessage { level, message: message.into(), stack_trace: None, extra: Extra::new() };
        AirbyteMessage { log: Some(log), ..Self::empty(MessageType::Log) }
    }
    pub fn spec(spec: ConnectorSpecification) -> Self {
        AirbyteMessage { spec: Some(spec), ..Self::empty(MessageType::Spec) }
    }
    pub fn connection_status(status: ConnectionStatusKind, message: Option<String>) -> Self {
        let status = AirbyteConnectionStatus { status, message, extra: Extra::new() };
        AirbyteMessage { connection_status: Some(status), ..Self::empty(MessageType::ConnectionStatus) }
    }
    pub fn catalog(catalog: AirbyteCatalog) -> Self {
        AirbyteMessage { catalog: Some(catalog), ..Self::empty(MessageType::Catalog) }
    }
    pub fn trace(trace: AirbyteTraceMessage) -> Self {
        AirbyteMessage { trace: Some(trace), ..Self::empty(MessageType::Trace) }
    }
    pub fn control(control: AirbyteControlMessage) -> Self {
        AirbyteMessage { control: Some(control), ..Self::empty(MessageType::Control) }
    }

    /// One protocol line, without its newline.
    pub fn to_line(&self) -> String {
        serde_json::to_string(self).expect("protocol messages always serialize")
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AirbyteRecordMessage {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub stream: String,
    pub data: Value,
    pub emitted_at: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meta: Option<Value>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct StreamDescriptor {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

impl StreamDescriptor {
    pub fn new(name: impl Into<String>, namespace: Option<String>) -> Self {
        StreamDescriptor { name: name.into(), namespace }
    }
}

impl std::fmt::Display for StreamDescriptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.namespace {
            Some(namespace) => write!(f, "{namespace}.{}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct AirbyteStateMessage {
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<StateType>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<AirbyteStreamState>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub global: Option<AirbyteGlobalState>,
    /// The LEGACY form's whole state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
    #[serde(default, rename = "sourceStats", skip_serializing_if = "Option::is_none")]
    pub source_stats: Option<AirbyteStateStats>,
    #[serde(default, rename = "destinationStats", skip_serializing_if = "Option::is_none")]
    pub destination_stats: Option<AirbyteStateStats>,
    /// Added by the platform to every source STATE (in socket mode, by the
    /// source); the destination echoes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<u64>,
    /// Socket mode: the source partition whose records this state covers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition_id: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

impl AirbyteStateMessage {
    /// A missing `type` means LEGACY, as the protocol says.
    pub fn state_type(&self) -> StateType {
        self.kind.clone().unwrap_or(StateType::Legacy)
    }

    pub fn for_stream(descriptor: StreamDescriptor, stream_state: Value) -> Self {
        AirbyteStateMessage {
            kind: Some(StateType::Stream),
            stream: Some(AirbyteStreamState { stream_descriptor: descriptor, stream_state: Some(stream_state), extra: Extra::new() }),
            ..Default::default()
        }
    }

    /// The state as a connector's `--state` file holds it: without the
    /// platform's bookkeeping (`id`, record counts).
    pub fn without_bookkeeping(&self) -> Self {
        AirbyteStateMessage { source_stats: None, destination_stats: None, id: None, partition_id: None, ..self.clone() }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AirbyteStreamState {
    pub stream_descriptor: StreamDescriptor,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_state: Option<Value>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AirbyteGlobalState {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shared_state: Option<Value>,
    pub stream_states: Vec<AirbyteStreamState>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct AirbyteStateStats {
    #[serde(default, rename = "recordCount", skip_serializing_if = "Option::is_none")]
    pub record_count: Option<f64>,
    #[serde(default, rename = "rejectedRecordCount", skip_serializing_if = "Option::is_none")]
    pub rejected_record_count: Option<f64>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AirbyteLogMessage {
    pub level: LogLevel,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stack_trace: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AirbyteTraceMessage {
    #[serde(rename = "type")]
    pub kind: TraceType,
    pub emitted_at: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<AirbyteErrorTraceMessage>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimate: Option<AirbyteEstimateTraceMessage>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_status: Option<AirbyteStreamStatusTraceMessage>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analytics: Option<AirbyteAnalyticsTraceMessage>,
    #[serde(flatten)]
    pub extra: Extra,
}

impl AirbyteTraceMessage {
    fn empty(kind: TraceType, emitted_at: f64) -> Self {
        AirbyteTraceMessage { kind, emitted_at, error: None, estimate: None, stream_status: None, analytics: None, extra: Extra::new() }
    }

    pub fn error(emitted_at: f64, message: impl Into<String>, failure_type: FailureType) -> Self {
        let error = AirbyteErrorTraceMessage {
            message: message.into(),
            internal_message: None,
            stack_trace: None,
            failure_type: Some(failure_type),
            stream_descriptor: None,
            extra: Extra::new(),
        };
        AirbyteTraceMessage { error: Some(error), ..Self::empty(TraceType::Error, emitted_at) }
    }

    pub fn stream_status(emitted_at: f64, stream: StreamDescriptor, status: StreamStatus) -> Self {
        let stream_status =
            AirbyteStreamStatusTraceMessage { stream_descriptor: stream, status, reasons: None, extra: Extra::new() };
        AirbyteTraceMessage { stream_status: Some(stream_status), ..Self::empty(TraceType::StreamStatus, emitted_at) }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AirbyteErrorTraceMessage {
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub internal_message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stack_trace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_type: Option<FailureType>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_descriptor: Option<StreamDescriptor>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AirbyteEstimateTraceMessage {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: EstimateType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub row_estimate: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub byte_estimate: Option<i64>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AirbyteStreamStatusTraceMessage {
    pub stream_descriptor: StreamDescriptor,
    pub status: StreamStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasons: Option<Vec<Value>>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AirbyteAnalyticsTraceMessage {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AirbyteControlMessage {
    #[serde(rename = "type")]
    pub kind: ControlType,
    pub emitted_at: f64,
    #[serde(default, rename = "connectorConfig", skip_serializing_if = "Option::is_none")]
    pub connector_config: Option<AirbyteControlConnectorConfigMessage>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AirbyteControlConnectorConfigMessage {
    pub config: Value,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AirbyteConnectionStatus {
    pub status: ConnectionStatusKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConnectorSpecification {
    #[serde(default, rename = "documentationUrl", skip_serializing_if = "Option::is_none")]
    pub documentation_url: Option<String>,
    #[serde(default, rename = "changelogUrl", skip_serializing_if = "Option::is_none")]
    pub changelog_url: Option<String>,
    #[serde(rename = "connectionSpecification")]
    pub connection_specification: Value,
    #[serde(default, rename = "supportsIncremental", skip_serializing_if = "Option::is_none")]
    pub supports_incremental: Option<bool>,
    #[serde(default, rename = "supportsNormalization", skip_serializing_if = "Option::is_none")]
    pub supports_normalization: Option<bool>,
    #[serde(default, rename = "supportsDBT", skip_serializing_if = "Option::is_none")]
    pub supports_dbt: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supported_destination_sync_modes: Option<Vec<DestinationSyncMode>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advanced_auth: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol_version: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct AirbyteCatalog {
    pub streams: Vec<AirbyteStream>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AirbyteStream {
    pub name: String,
    pub json_schema: Value,
    pub supported_sync_modes: Vec<SyncMode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_defined_cursor: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_cursor_field: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_defined_primary_key: Option<Vec<Vec<String>>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_resumable: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_file_based: Option<bool>,
    #[serde(flatten)]
    pub extra: Extra,
}

impl AirbyteStream {
    pub fn descriptor(&self) -> StreamDescriptor {
        StreamDescriptor::new(&self.name, self.namespace.clone())
    }
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ConfiguredAirbyteCatalog {
    pub streams: Vec<ConfiguredAirbyteStream>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConfiguredAirbyteStream {
    pub stream: AirbyteStream,
    pub sync_mode: SyncMode,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor_field: Option<Vec<String>>,
    pub destination_sync_mode: DestinationSyncMode,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary_key: Option<Vec<Vec<String>>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation_id: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minimum_generation_id: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync_id: Option<i64>,
    #[serde(flatten)]
    pub extra: Extra,
}

impl ConfiguredAirbyteStream {
    /// A stream configured with the source's own defaults: incremental when
    /// the source offers it (appending), else a full refresh that overwrites.
    pub fn with_defaults(stream: AirbyteStream) -> Self {
        let incremental = stream.supported_sync_modes.contains(&SyncMode::Incremental)
            && (stream.source_defined_cursor == Some(true) || stream.default_cursor_field.is_some());
        let (sync_mode, destination_sync_mode) = if incremental {
            (SyncMode::Incremental, DestinationSyncMode::Append)
        } else {
            (SyncMode::FullRefresh, DestinationSyncMode::Overwrite)
        };
        ConfiguredAirbyteStream {
            cursor_field: if incremental { stream.default_cursor_field.clone() } else { None },
            primary_key: stream.source_defined_primary_key.clone(),
            stream,
            sync_mode,
            destination_sync_mode,
            generation_id: None,
            minimum_generation_id: None,
            sync_id: None,
            extra: Extra::new(),
        }
    }
}
