//! Messages survive a parse and a re-serialization, and what we build is valid
//! against the protocol's own JSON Schema.

use serde_json::{json, Value};
use sluice_protocol::*;

fn schema_validator(definition: &str) -> jsonschema::Validator {
    let mut schema: Value =
        serde_json::from_str(include_str!("../schema/airbyte_protocol.json")).expect("bundled schema is JSON");
    // Validate against one definition while keeping the others reachable for `$ref`.
    schema["$ref"] = json!(format!("#/definitions/{definition}"));
    schema.as_object_mut().unwrap().remove("properties");
    jsonschema::draft7::new(&schema).expect("schema compiles")
}

fn assert_valid(definition: &str, value: &Value) {
    let validator = schema_validator(definition);
    let errors: Vec<String> = validator.iter_errors(value).map(|e| format!("{} at {}", e, e.instance_path())).collect();
    assert!(errors.is_empty(), "{definition} invalid: {errors:?}\n{value:#}");
}

fn round_trip(line: &str) -> String {
    let parsed: AirbyteMessage = serde_json::from_str(line).expect("parses");
    parsed.to_line()
}

#[test]
fn every_message_type_round_trips_with_unknown_fields() {
    let lines = [
        r#"{"type":"RECORD","record":{"namespace":"public","stream":"users","data":{"id":1,"nested":{"z":1,"a":[1,2]}},"emitted_at":1700000000000,"meta":{"changes":[]},"file_reference":{"staging_file_url":"/tmp/x"}},"future":true}"#,
        r#"{"type":"STATE","state":{"type":"STREAM","stream":{"stream_descriptor":{"name":"users"},"stream_state":{"updated_at":"2024-01-01"}},"sourceStats":{"recordCount":100.0},"id":7,"partition_id":"p1"}}"#,
        r#"{"type":"STATE","state":{"type":"GLOBAL","global":{"shared_state":{"lsn":10},"stream_states":[{"stream_descriptor":{"name":"a","namespace":"n"},"stream_state":{"c":1}}]}}}"#,
        r#"{"type":"STATE","state":{"data":{"users":{"cursor":3}}}}"#,
        r#"{"type":"LOG","log":{"level":"INFO","message":"hello","stack_trace":"at x"}}"#,
        r#"{"type":"TRACE","trace":{"type":"ERROR","emitted_at":1.0,"error":{"message":"boom","internal_message":"x","failure_type":"config_error","stream_descriptor":{"name":"users"}}}}"#,
        r#"{"type":"TRACE","trace":{"type":"ESTIMATE","emitted_at":1.0,"estimate":{"name":"users","type":"STREAM","row_estimate":10,"byte_estimate":100}}}"#,
        r#"{"type":"TRACE","trace":{"type":"STREAM_STATUS","emitted_at":1.0,"stream_status":{"stream_descriptor":{"name":"users"},"status":"COMPLETE","reasons":[{"type":"RATE_LIMITED"}]}}}"#,
        r#"{"type":"TRACE","trace":{"type":"ANALYTICS","emitted_at":1.0,"analytics":{"type":"cursor-count","value":"2"}}}"#,
        r#"{"type":"CONTROL","control":{"type":"CONNECTOR_CONFIG","emitted_at":1.0,"connectorConfig":{"config":{"token":"new"}}}}"#,
        r#"{"type":"SPEC","spec":{"documentationUrl":"https://example.com","connectionSpecification":{"type":"object"},"supportsIncremental":true,"supported_destination_sync_modes":["append","overwrite","append_dedup","update","soft_delete"],"protocol_version":"0.5.0"}}"#,
        r#"{"type":"CONNECTION_STATUS","connectionStatus":{"status":"FAILED","message":"bad key"}}"#,
        r#"{"type":"CATALOG","catalog":{"streams":[{"name":"users","json_schema":{"type":"object"},"supported_sync_modes":["full_refresh","incremental"],"source_defined_cursor":true,"default_cursor_field":["updated_at"],"source_defined_primary_key":[["id"]],"is_resumable":true}]}}"#,
        r#"{"type":"DESTINATION_CATALOG","destination_catalog":{"operations":[]}}"#,
        r#"{"type":"SOMETHING_NEW","something_new":{"x":1}}"#,
    ];
    for line in lines {
        let original: Value = serde_json::from_str(line).unwrap();
        let again: Value = serde_json::from_str(&round_trip(line)).unwrap();
        assert_eq!(original, again, "round trip changed {line}");
    }
}

#[test]
fn unknown_enum_values_survive() {
    let line = r#"{"type":"TRACE","trace":{"type":"NEW_TRACE","emitted_at":1.0,"new":{}}}"#;
    let parsed: AirbyteMessage = serde_json::from_str(line).unwrap();
    assert_eq!(parsed.trace.as_ref().unwrap().kind, TraceType::Unknown("NEW_TRACE".into()));
    assert_eq!(serde_json::from_str::<Value>(&parsed.to_line()).unwrap(), serde_json::from_str::<Value>(line).unwrap());
}

#[test]
fn configured_catalog_with_every_sync_mode_round_trips() {
    let catalog = json!({"streams": [
        {"stream": {"name": "a", "json_schema": {}, "supported_sync_modes": ["full_refresh"]},
         "sync_mode": "full_refresh", "destination_sync_mode": "overwrite", "generation_id": 2, "minimum_generation_id": 2, "sync_id": 9},
        {"stream": {"name": "b", "json_schema": {}, "supported_sync_modes": ["incremental"]},
         "sync_mode": "incremental", "cursor_field": ["updated_at"], "destination_sync_mode": "append_dedup", "primary_key": [["id"]]},
        {"stream": {"name": "c", "json_schema": {}, "supported_sync_modes": ["incremental"]},
         "sync_mode": "incremental", "destination_sync_mode": "overwrite_dedup"},
        {"stream": {"name": "d", "json_schema": {}, "supported_sync_modes": ["incremental"]},
         "sync_mode": "incremental", "destination_sync_mode": "append", "include_files": false}
    ]});
    let parsed: ConfiguredAirbyteCatalog = serde_json::from_value(catalog.clone()).unwrap();
    assert_eq!(parsed.streams[1].destination_sync_mode, DestinationSyncMode::AppendDedup);
    assert_eq!(parsed.streams[2].destination_sync_mode, DestinationSyncMode::OverwriteDedup);
    assert_eq!(serde_json::to_value(&parsed).unwrap(), catalog);
}

#[test]
fn messages_we_build_match_the_protocol_schema() {
    let descriptor = StreamDescriptor::new("users", Some("public".into()));
    let built = [
        AirbyteMessage::record(AirbyteRecordMessage {
            namespace: Some("public".into()),
            stream: "users".into(),
            data: json!({"id": 1}),
            emitted_at: now_millis(),
            meta: None,
            extra: Extra::new(),
        }),
        AirbyteMessage::state(AirbyteStateMessage {
            id: Some(3),
            source_stats: Some(AirbyteStateStats { record_count: Some(10.0), ..Default::default() }),
            ..AirbyteStateMessage::for_stream(descriptor.clone(), json!({"cursor": 5}))
        }),
        AirbyteMessage::log(LogLevel::Warn, "careful"),
        AirbyteMessage::trace(AirbyteTraceMessage::error(1.0, "boom", FailureType::SystemError)),
        AirbyteMessage::trace(AirbyteTraceMessage::stream_status(1.0, descriptor, StreamStatus::Complete)),
        AirbyteMessage::connection_status(ConnectionStatusKind::Succeeded, None),
    ];
    for message in built {
        assert_valid("AirbyteMessage", &serde_json::to_value(&message).unwrap());
    }
}

#[test]
fn the_schema_check_is_not_vacuous() {
    let validator = schema_validator("AirbyteMessage");
    assert!(!validator.is_valid(&json!({"type": "RECORD", "record": {"stream": 1, "data": {}, "emitted_at": 1}})));
    assert!(!validator.is_valid(&json!({"type": "NOPE"})));
}
