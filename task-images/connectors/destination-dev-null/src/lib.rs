//! `destination-dev-null`: parses every message it is sent, stores nothing,
//! and echoes each STATE at once: the fastest destination that still does
//! the work of reading the protocol: a record as the other destinations read
//! theirs, the message whole and its data checked as JSON, not built as a
//! tree. In socket mode it reads every socket in parallel and releases each
//! STATE once all its records arrived.

use serde_json::json;
use sluice_connector_kit::sockets::{self, Sink};
use sluice_connector_kit::{each_input_line, echo_state, parse_message, parse_record, read_json, Command, Failure, Output};
use sluice_protocol::socket::SocketRecord;
use sluice_protocol::*;

pub const NAME: &str = "destination-dev-null";

pub fn main(args: &[String]) -> i32 {
    sluice_connector_kit::main(NAME, args, run)
}

fn run(command: Command, out: &mut Output) -> Result<(), Failure> {
    match command {
        Command::Spec => {
            let spec: ConnectorSpecification = serde_json::from_value(json!({
                "documentationUrl": "https://docs.airbyte.com/integrations/destinations/dev-null",
                "connectionSpecification": {"type": "object", "title": "Dev Null", "properties": {}},
                "supported_destination_sync_modes": ["append", "overwrite", "append_dedup"],
                "protocol_version": "0.5.2"
            }))
            .expect("static spec");
            Ok(out.message(&AirbyteMessage::spec(spec))?)
        }
        Command::Check { config } => {
            let _: serde_json::Value = read_json("config", &config)?;
            Ok(out.message(&AirbyteMessage::connection_status(ConnectionStatusKind::Succeeded, None))?)
        }
        Command::Write { config, catalog } => {
            let _: serde_json::Value = read_json("config", &config)?;
            let catalog: ConfiguredAirbyteCatalog = read_json("catalog", &catalog)?;
            if let Some(channel) = socket::DataChannel::from_env().map_err(Failure::config)? {
                let shared = std::sync::Mutex::new(std::mem::take(out));
                let result = sockets::write(&channel, &catalog, &Discard, &shared);
                *out = shared.into_inner().expect("stdout lock");
                return result.map(drop);
            }
            let mut since_state = 0u64;
            each_input_line(|number, line| {
                if parse_record(number, line)?.is_some() {
                    since_state += 1;
                } else if let Some(state) = parse_message(number, line)?.state {
                    echo_state(out, state, since_state)?;
                    since_state = 0;
                }
                Ok(())
            })
        }
        Command::Discover { .. } | Command::Read { .. } => Err(Failure::config("destination-dev-null is a destination: it only runs spec, check and write")),
    }
}

/// Socket mode: every frame is decoded by the reader; nothing is kept.
struct Discard;

impl Sink for Discard {
    type Local = ();
    fn local(&self) {}
    fn record(&self, _: &mut (), _: usize, _: &[String], _: &SocketRecord<'_>) -> Result<(), Failure> {
        Ok(())
    }
    fn checkpoint(&self, _: &mut ()) -> Result<(), Failure> {
        Ok(())
    }
    fn status(&self, _: usize, _: StreamStatus) {}
}
