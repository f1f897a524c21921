//! Schema changes, by Airbyte's rules: the diff between the catalog a
//! connection was configured from and the one the source discovers now,
//! whether it breaks the connection, and what the connection's
//! `nonBreakingSchemaUpdatesBehavior` applies of it.
//!
//! Streams added or removed are diffed for every stream; a stream's fields
//! and primary key only for the streams the connection syncs. A change
//! breaks the connection when it removes the cursor of an incremental
//! stream or a primary-key field of a deduplicated one, or changes a
//! deduplicated stream's primary key: that disables the connection
//! whatever the setting.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use serde_json::Value;
use sluice_domain::resources::{SelectedField, StreamConfiguration, SyncMode};
use sluice_protocol::{AirbyteCatalog, AirbyteStream, StreamDescriptor};

/// Airbyte's `CatalogDiff`, in its API's shape.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct CatalogDiff {
    pub transforms: Vec<StreamTransform>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StreamTransform {
    /// `add_stream`, `remove_stream` or `update_stream`.
    pub transform_type: &'static str,
    pub stream_descriptor: StreamDescriptor,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub update_stream: Option<UpdateStream>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UpdateStream {
    pub field_transforms: Vec<FieldTransform>,
    pub stream_attribute_transforms: Vec<AttributeTransform>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FieldTransform {
    /// `add_field`, `remove_field` or `update_field_schema`.
    pub transform_type: &'static str,
    pub field_name: Vec<String>,
    pub breaking: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub add_field: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remove_field: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub update_field_schema: Option<Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AttributeTransform {
    /// `update_primary_key`.
    pub transform_type: &'static str,
    pub breaking: bool,
    pub update_primary_key: Value,
}

/// A connection's `schemaChange`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchemaChange {
    NoChange,
    NonBreaking,
    Breaking,
}

impl SchemaChange {
    pub fn as_str(self) -> &'static str {
        match self {
            SchemaChange::NoChange => "no_change",
            SchemaChange::NonBreaking => "non_breaking",
            SchemaChange::Breaking => "breaking",
        }
    }
}

impl CatalogDiff {
    pub fn is_empty(&self) -> bool {
        self.transforms.is_empty()
    }

    /// Breaking or not: only a selected stream's field or key can break.
    pub fn change(&self) -> SchemaChange {
        let breaking = self.transforms.iter().filter_map(|t| t.update_stream.as_ref()).any(|u| {
            u.field_transforms.iter().any(|f| f.breaking) || u.stream_attribute_transforms.iter().any(|a| a.breaking)
        });
        match (self.is_empty(), breaking) {
            (true, _) => SchemaChange::NoChange,
            (false, true) => SchemaChange::Breaking,
            (false, false) => SchemaChange::NonBreaking,
        }
    }

    /// Why it breaks the connection, in words, for the event and the log.
    pub fn breaking_reasons(&self) -> Vec<String> {
        let mut reasons = Vec::new();
        for t in &self.transforms {
            let Some(update) = &t.update_stream else { continue };
            let stream = &t.stream_descriptor.name;
            for f in update.field_transforms.iter().filter(|f| f.breaking) {
                reasons.push(format!("stream `{stream}` lost field `{}`, which the connection uses as cursor or primary key", f.field_name.join(".")));
            }
            for a in update.stream_attribute_transforms.iter().filter(|a| a.breaking) {
                reasons.push(format!("stream `{stream}` changed its primary key to {}", a.update_primary_key["newPrimaryKey"]));
            }
        }
        reasons
    }
}

fn key(d: &StreamDescriptor) -> (Option<String>, String) {
    (d.namespace.clone(), d.name.clone())
}

fn configured_for<'a>(streams: &'a [StreamConfiguration], stream: &AirbyteStream) -> Option<&'a StreamConfiguration> {
    streams.iter().find(|c| c.name == stream.name && (c.namespace.is_none() || c.namespace == stream.namespace))
}

/// The diff from `old` (what the connection was configured from) to `new`
/// (what the source discovers now), for a connection syncing `streams`.
pub fn diff(old: &AirbyteCatalog, new: &AirbyteCatalog, streams: &[StreamConfiguration]) -> CatalogDiff {
    let old_by: BTreeMap<_, _> = old.streams.iter().map(|s| (key(&s.descriptor()), s)).collect();
    let new_by: BTreeMap<_, _> = new.streams.iter().map(|s| (key(&s.descriptor()), s)).collect();
    let mut transforms = Vec::new();
    for (k, s) in &new_by {
        if !old_by.contains_key(k) {
            transforms.push(StreamTransform { transform_type: "add_stream", stream_descriptor: s.descriptor(), update_stream: None });
        }
    }
    for (k, s) in &old_by {
        if !new_by.contains_key(k) {
            transforms.push(StreamTransform { transform_type: "remove_stream", stream_descriptor: s.descriptor(), update_stream: None });
        }
    }
    for (k, before) in &old_by {
        let (Some(after), Some(config)) = (new_by.get(k), configured_for(streams, before)) else { continue };
        let update = update_stream(before, after, config);
        if !update.field_transforms.is_empty() || !update.stream_attribute_transforms.is_empty() {
            transforms.push(StreamTransform { transform_type: "update_stream", stream_descriptor: before.descriptor(), update_stream: Some(update) });
        }
    }
    CatalogDiff { transforms }
}

/// The cursor and primary key a connection's stream syncs with: its own,
/// else the source's.
fn keys_in_use(stream: &AirbyteStream, config: &StreamConfiguration) -> (Option<Vec<String>>, Vec<Vec<String>>) {
    let cursor = config.sync_mode.is_incremental().then(|| {
        if config.cursor_field.is_empty() || stream.source_defined_cursor == Some(true) {
            stream.default_cursor_field.clone().unwrap_or_default()
        } else {
            config.cursor_field.clone()
        }
    });
    let primary_key = match &stream.source_defined_primary_key {
        Some(pk) if !pk.is_empty() => pk.clone(),
        _ => config.primary_key.clone(),
    };
    (cursor, primary_key)
}

fn is_dedup(mode: SyncMode) -> bool {
    mode.protocol_modes().1.ends_with("dedup")
}

fn update_stream(before: &AirbyteStream, after: &AirbyteStream, config: &StreamConfiguration) -> UpdateStream {
    let (cursor, primary_key) = keys_in_use(before, config);
    let dedup = is_dedup(config.sync_mode);
    let old_fields = fields(&before.json_schema);
    let new_fields = fields(&after.json_schema);
    let mut update = UpdateStream::default();
    for (path, schema) in &new_fields {
        match old_fields.get(path) {
            None => update.field_transforms.push(FieldTransform {
                transform_type: "add_field",
                field_name: path.clone(),
                breaking: false,
                add_field: Some(serde_json::json!({"schema": schema})),
                remove_field: None,
                update_field_schema: None,
            }),
            Some(old) if old != schema => update.field_transforms.push(FieldTransform {
                transform_type: "update_field_schema",
                field_name: path.clone(),
                breaking: false,
                add_field: None,
                remove_field: None,
                update_field_schema: Some(serde_json::json!({"oldSchema": old, "newSchema": schema})),
            }),
            Some(_) => {}
        }
    }
    for (path, schema) in &old_fields {
        if !new_fields.contains_key(path) {
            let breaking = cursor.as_ref() == Some(path) || (dedup && primary_key.contains(path));
            update.field_transforms.push(FieldTransform {
                transform_type: "remove_field",
                field_name: path.clone(),
                breaking,
                add_field: None,
                remove_field: Some(serde_json::json!({"schema": schema})),
                update_field_schema: None,
            });
        }
    }
    let old_pk = before.source_defined_primary_key.clone().unwrap_or_default();
    let new_pk = after.source_defined_primary_key.clone().unwrap_or_default();
    if old_pk != new_pk {
        let in_use: BTreeSet<&Vec<String>> = primary_key.iter().collect();
        let breaking = !new_pk.is_empty() && dedup && in_use != new_pk.iter().collect();
        update.stream_attribute_transforms.push(AttributeTransform {
            transform_type: "update_primary_key",
            breaking,
            update_primary_key: serde_json::json!({"oldPrimaryKey": old_pk, "newPrimaryKey": new_pk}),
        });
    }
    update
}

/// Every field of a JSON schema by its path, with its own schema (without
/// its children, so that a nested change shows once, at its own path).
/// Array items are the path element `items`; the branches of a `oneOf` or
/// `anyOf` are not fields.
fn fields(schema: &Value) -> BTreeMap<Vec<String>, Value> {
    fn walk(node: &Value, path: &mut Vec<String>, out: &mut BTreeMap<Vec<String>, Value>) {
        if let Some(props) = node.get("properties").and_then(Value::as_object) {
            for (name, child) in props {
                path.push(name.clone());
                let mut own = child.clone();
                if let Some(map) = own.as_object_mut() {
                    map.remove("properties");
                    map.remove("items");
                }
                out.insert(path.clone(), own);
                if child.get("type").is_some() {
                    walk(child, path, out);
                }
                path.pop();
            }
        }
        if let Some(items) = node.get("items").filter(|i| i.is_object() && i.get("type").is_some()) {
            if items.get("properties").is_some() {
                path.push("items".into());
                walk(items, path, out);
                path.pop();
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(schema, &mut Vec::new(), &mut out);
    out
}

/// The connection's `nonBreakingSchemaUpdatesBehavior`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behavior {
    Ignore,
    DisableConnection,
    PropagateColumns,
    PropagateFully,
}

impl Behavior {
    pub fn parse(text: &str) -> Behavior {
        match text {
            "disable_connection" => Behavior::DisableConnection,
            "propagate_columns" => Behavior::PropagateColumns,
            "propagate_fully" => Behavior::PropagateFully,
            _ => Behavior::Ignore,
        }
    }
}

/// What a diff does to a connection.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Nothing changed that the connection sees: it now runs on the new catalog.
    Unchanged { catalog: AirbyteCatalog },
    /// Applied: the connection runs with these streams on this catalog.
    Applied { streams: Vec<StreamConfiguration>, catalog: AirbyteCatalog },
    /// Not applied (`ignore`): the connection runs on as it was, its
    /// `schemaChange` says so until someone applies the change.
    Pending,
    /// The connection is disabled, for this reason.
    Disabled { reason: String },
}

/// What the connection's setting makes of `diff` (from `old` to `new`).
pub fn apply(diff: &CatalogDiff, behavior: Behavior, old: &AirbyteCatalog, new: &AirbyteCatalog, streams: &[StreamConfiguration]) -> Outcome {
    match diff.change() {
        SchemaChange::NoChange => return Outcome::Unchanged { catalog: new.clone() },
        SchemaChange::Breaking => return Outcome::Disabled { reason: format!("breaking schema change: {}", diff.breaking_reasons().join("; ")) },
        SchemaChange::NonBreaking => {}
    }
    match behavior {
        Behavior::Ignore => Outcome::Pending,
        Behavior::DisableConnection => Outcome::Disabled { reason: format!("the source's schema changed ({}) and the connection is set to disable_connection", summary(diff)) },
        Behavior::PropagateColumns | Behavior::PropagateFully => {
            let fully = behavior == Behavior::PropagateFully;
            let mut streams = streams.to_vec();
            let mut catalog = new.clone();
            for t in &diff.transforms {
                let d = &t.stream_descriptor;
                let same = |c: &StreamConfiguration| c.name == d.name && (c.namespace.is_none() || c.namespace == d.namespace);
                match t.transform_type {
                    "add_stream" if fully => {
                        if let Some(stream) = new.streams.iter().find(|s| s.descriptor() == *d) {
                            streams.push(new_stream_defaults(stream));
                        }
                    }
                    "remove_stream" if fully => streams.retain(|c| !same(c)),
                    // Kept as configured: the source no longer sends it.
                    "remove_stream" => {
                        if let Some(gone) = old.streams.iter().find(|s| s.descriptor() == *d) {
                            catalog.streams.push(gone.clone());
                        }
                    }
                    "update_stream" => {
                        let added = t.update_stream.iter().flat_map(|u| &u.field_transforms).filter(|f| f.transform_type == "add_field" && f.field_name.len() == 1);
                        let added: Vec<Vec<String>> = added.map(|f| f.field_name.clone()).collect();
                        if let Some(config) = streams.iter_mut().find(|c| same(c)) {
                            // With field selection on, new top-level columns are selected.
                            if !config.selected_fields.is_empty() {
                                for path in added {
                                    if !config.selected_fields.iter().any(|s| s.field_path == path) {
                                        config.selected_fields.push(SelectedField { field_path: path });
                                    }
                                }
                            }
                        }
                    }
                    _ => {}
                }
            }
            Outcome::Applied { streams, catalog }
        }
    }
}

fn summary(diff: &CatalogDiff) -> String {
    let parts: Vec<String> = diff.transforms.iter().map(|t| format!("{} `{}`", t.transform_type, t.stream_descriptor.name)).collect();
    parts.join(", ")
}

/// A new stream's sync modes under `propagate_fully`, Airbyte's way:
/// deduplicated incremental when the source defines a cursor and a primary
/// key, else full refresh overwrite (incremental append when a stream with
/// a cursor supports nothing else).
pub fn new_stream_defaults(stream: &AirbyteStream) -> StreamConfiguration {
    use sluice_protocol::SyncMode as Read;
    let cursor = stream.source_defined_cursor == Some(true);
    let pk = stream.source_defined_primary_key.as_ref().is_some_and(|pk| !pk.is_empty());
    let full_refresh = stream.supported_sync_modes.contains(&Read::FullRefresh);
    let sync_mode = match (cursor, pk, full_refresh) {
        (true, true, _) => SyncMode::IncrementalDedupedHistory,
        (true, false, false) => SyncMode::IncrementalAppend,
        _ => SyncMode::FullRefreshOverwrite,
    };
    StreamConfiguration { name: stream.name.clone(), namespace: stream.namespace.clone(), sync_mode, cursor_field: vec![], primary_key: vec![], selected_fields: vec![] }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn stream(name: &str, props: Value, pk: Option<&str>, cursor: Option<&str>) -> AirbyteStream {
        serde_json::from_value(json!({
            "name": name,
            "json_schema": {"type": "object", "properties": props},
            "supported_sync_modes": if cursor.is_some() { json!(["full_refresh", "incremental"]) } else { json!(["full_refresh"]) },
            "source_defined_cursor": cursor.is_some(),
            "default_cursor_field": cursor.map(|c| vec![c]),
            "source_defined_primary_key": pk.map(|p| vec![vec![p]]),
        }))
        .unwrap()
    }

    fn catalog(streams: Vec<AirbyteStream>) -> AirbyteCatalog {
        AirbyteCatalog { streams, extra: Default::default() }
    }

    fn config(name: &str, mode: SyncMode) -> StreamConfiguration {
        StreamConfiguration { name: name.into(), namespace: None, sync_mode: mode, cursor_field: vec![], primary_key: vec![], selected_fields: vec![] }
    }

    fn items(extra: Value) -> AirbyteStream {
        let mut props = json!({"id": {"type": "integer"}, "updated_at": {"type": "string", "format": "date-time"}});
        props.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        stream("items", props, Some("id"), Some("updated_at"))
    }

    #[test]
    fn an_added_column_is_non_breaking_and_propagated_by_the_propagating_settings() {
        let old = catalog(vec![items(json!({}))]);
        let new = catalog(vec![items(json!({"color": {"type": "string"}}))]);
        let streams = vec![config("items", SyncMode::IncrementalDedupedHistory)];
        let d = diff(&old, &new, &streams);
        assert_eq!(d.change(), SchemaChange::NonBreaking);
        let t = serde_json::to_value(&d).unwrap();
        assert_eq!(t["transforms"][0]["transformType"], "update_stream");
        assert_eq!(t["transforms"][0]["updateStream"]["fieldTransforms"][0]["transformType"], "add_field");
        assert_eq!(t["transforms"][0]["updateStream"]["fieldTransforms"][0]["fieldName"], json!(["color"]));
        assert_eq!(apply(&d, Behavior::Ignore, &old, &new, &streams), Outcome::Pending);
        assert!(matches!(apply(&d, Behavior::DisableConnection, &old, &new, &streams), Outcome::Disabled { .. }));
        let Outcome::Applied { streams: s, catalog: c } = apply(&d, Behavior::PropagateColumns, &old, &new, &streams) else { panic!() };
        assert_eq!(s, streams);
        assert_eq!(c, new);
    }

    #[test]
    fn a_new_stream_flows_only_when_fully_propagated_with_airbytes_default_modes() {
        let old = catalog(vec![items(json!({}))]);
        let orders = stream("orders", json!({"id": {"type": "integer"}}), Some("id"), None);
        let events = stream("events", json!({"id": {"type": "integer"}, "at": {"type": "string"}}), Some("id"), Some("at"));
        let new = catalog(vec![items(json!({})), orders, events]);
        let streams = vec![config("items", SyncMode::IncrementalAppend)];
        let d = diff(&old, &new, &streams);
        assert_eq!(d.transforms.iter().map(|t| t.transform_type).collect::<Vec<_>>(), ["add_stream", "add_stream"]);
        let Outcome::Applied { streams: columns, .. } = apply(&d, Behavior::PropagateColumns, &old, &new, &streams) else { panic!() };
        assert_eq!(columns.len(), 1);
        let Outcome::Applied { streams: fully, .. } = apply(&d, Behavior::PropagateFully, &old, &new, &streams) else { panic!() };
        let modes: Vec<(&str, SyncMode)> = fully.iter().map(|s| (s.name.as_str(), s.sync_mode)).collect();
        assert_eq!(modes, [("items", SyncMode::IncrementalAppend), ("events", SyncMode::IncrementalDedupedHistory), ("orders", SyncMode::FullRefreshOverwrite)]);
    }

    #[test]
    fn losing_the_cursor_or_the_key_breaks_the_connection_whatever_the_setting() {
        let old = catalog(vec![items(json!({}))]);
        let mut lost = items(json!({}));
        lost.json_schema["properties"].as_object_mut().unwrap().remove("updated_at");
        let new = catalog(vec![lost]);
        let incremental = vec![config("items", SyncMode::IncrementalAppend)];
        let d = diff(&old, &new, &incremental);
        assert_eq!(d.change(), SchemaChange::Breaking);
        assert!(d.breaking_reasons()[0].contains("`updated_at`"), "{:?}", d.breaking_reasons());
        for behavior in [Behavior::Ignore, Behavior::PropagateFully] {
            assert!(matches!(apply(&d, behavior, &old, &new, &incremental), Outcome::Disabled { .. }));
        }
        // A full refresh stream uses no cursor: the same loss does not break it.
        let full = vec![config("items", SyncMode::FullRefreshOverwrite)];
        assert_eq!(diff(&old, &new, &full).change(), SchemaChange::NonBreaking);
        // Unselected streams' fields are not diffed at all.
        assert!(diff(&old, &new, &[]).is_empty());
        // A dedup stream whose primary key changes breaks.
        let mut rekeyed = items(json!({}));
        rekeyed.source_defined_primary_key = Some(vec![vec!["updated_at".into()]]);
        let dedup = vec![config("items", SyncMode::IncrementalDedupedHistory)];
        assert_eq!(diff(&old, &catalog(vec![rekeyed]), &dedup).change(), SchemaChange::Breaking);
    }

    #[test]
    fn removed_streams_stay_unless_fully_propagated_and_selected_fields_grow() {
        let users = stream("users", json!({"id": {"type": "integer"}}), Some("id"), None);
        let old = catalog(vec![items(json!({})), users]);
        let new = catalog(vec![items(json!({"color": {"type": "string"}, "size": {"type": "object", "properties": {"w": {"type": "number"}}}}))]);
        let mut items_config = config("items", SyncMode::IncrementalAppend);
        items_config.selected_fields = vec![SelectedField { field_path: vec!["id".into()] }];
        let streams = vec![items_config, config("users", SyncMode::FullRefreshOverwrite)];
        let d = diff(&old, &new, &streams);
        let nested: Vec<Vec<String>> = d.transforms.iter().flat_map(|t| t.update_stream.iter()).flat_map(|u| &u.field_transforms).map(|f| f.field_name.clone()).collect();
        assert!(nested.contains(&vec!["size".to_owned(), "w".to_owned()]), "{nested:?}");
        let Outcome::Applied { streams: kept, catalog } = apply(&d, Behavior::PropagateColumns, &old, &new, &streams) else { panic!() };
        assert_eq!(kept.len(), 2);
        assert!(catalog.streams.iter().any(|s| s.name == "users"), "kept in the catalog");
        let selected: Vec<&str> = kept[0].selected_fields.iter().map(|f| f.field_path[0].as_str()).collect();
        assert_eq!(selected, ["id", "color", "size"]);
        let Outcome::Applied { streams: fully, .. } = apply(&d, Behavior::PropagateFully, &old, &new, &streams) else { panic!() };
        assert_eq!(fully.len(), 1);
    }
}
