//! From a connection's stream settings and the source's discovered catalog
//! to the configured catalog a sync runs with: checked stream by stream,
//! with the source's own cursor and primary key where the user gave none.

use serde_json::Value;
use sluice_domain::resources::{ConnectionState, StreamConfiguration, SyncMode};
use sluice_domain::{Job, JobType};
use sluice_protocol::{AirbyteCatalog, AirbyteStream, ConfiguredAirbyteCatalog, ConfiguredAirbyteStream, StreamDescriptor};

/// What a sync runs with: the catalog, and per stream the only top-level
/// fields the destination may see (streams with all fields are absent).
#[derive(Debug, Clone, PartialEq)]
pub struct Configured {
    pub catalog: ConfiguredAirbyteCatalog,
    pub selected_fields: Vec<(StreamDescriptor, Vec<String>)>,
}

/// The stream settings a connection gets when it names none: every
/// stream, incremental where the source can, deduplicated where it also
/// has a primary key.
pub fn default_streams(catalog: &AirbyteCatalog) -> Vec<StreamConfiguration> {
    catalog
        .streams
        .iter()
        .map(|s| {
            let defaults = ConfiguredAirbyteStream::with_defaults(s.clone());
            let incremental = defaults.sync_mode == sluice_protocol::SyncMode::Incremental;
            let has_pk = s.source_defined_primary_key.as_ref().is_some_and(|pk| !pk.is_empty());
            let sync_mode = match (incremental, has_pk) {
                (true, true) => SyncMode::IncrementalDedupedHistory,
                (true, false) => SyncMode::IncrementalAppend,
                (false, _) => SyncMode::FullRefreshOverwrite,
            };
            StreamConfiguration { name: s.name.clone(), namespace: s.namespace.clone(), sync_mode, cursor_field: vec![], primary_key: vec![], selected_fields: vec![] }
        })
        .collect()
}

/// Checks `streams` against `catalog`; each error names its field, e.g.
/// `configurations.streams[1].cursorField`.
pub fn configure(streams: &[StreamConfiguration], catalog: &AirbyteCatalog) -> Result<Configured, Vec<(String, String)>> {
    let mut errors = Vec::new();
    let mut configured = Vec::new();
    let mut selected_fields = Vec::new();
    for (i, wanted) in streams.iter().enumerate() {
        let field = |name: &str| format!("configurations.streams[{i}].{name}");
        let found = catalog.streams.iter().find(|s| s.name == wanted.name && (wanted.namespace.is_none() || s.namespace == wanted.namespace));
        let Some(stream) = found else {
            let names: Vec<&str> = catalog.streams.iter().map(|s| s.name.as_str()).collect();
            errors.push((field("name"), format!("the source has no stream `{}`; it has: {}", wanted.name, names.join(", "))));
            continue;
        };
        if streams[..i].iter().any(|earlier| earlier.name == wanted.name && earlier.namespace == wanted.namespace) {
            errors.push((field("name"), format!("stream `{}` is configured twice", wanted.name)));
            continue;
        }
        match configure_stream(wanted, stream) {
            Ok((c, fields)) => {
                if let Some(fields) = fields {
                    selected_fields.push((c.stream.descriptor(), fields));
                }
                configured.push(c);
            }
            Err((name, message)) => errors.push((field(name), message)),
        }
    }
    if streams.is_empty() {
        errors.push(("configurations.streams".into(), "select at least one stream".into()));
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(Configured { catalog: ConfiguredAirbyteCatalog { streams: configured, extra: Default::default() }, selected_fields })
}

type StreamResult = Result<(ConfiguredAirbyteStream, Option<Vec<String>>), (&'static str, String)>;

fn configure_stream(wanted: &StreamConfiguration, stream: &AirbyteStream) -> StreamResult {
    let (sync, destination) = wanted.sync_mode.protocol_modes();
    let incremental = wanted.sync_mode.is_incremental();
    if incremental && !stream.supported_sync_modes.contains(&sluice_protocol::SyncMode::Incremental) {
        return Err(("syncMode", format!("stream `{}` supports only full refresh", stream.name)));
    }
    let cursor = if !incremental {
        None
    } else if stream.source_defined_cursor == Some(true) || wanted.cursor_field.is_empty() {
        match stream.default_cursor_field.clone().filter(|c| !c.is_empty()) {
            Some(cursor) => Some(cursor),
            None if wanted.cursor_field.is_empty() => {
                return Err(("cursorField", format!("stream `{}` has no default cursor; name one for incremental sync", stream.name)))
            }
            None => Some(wanted.cursor_field.clone()),
        }
    } else {
        if !has_property(stream, &wanted.cursor_field[0]) {
            return Err(("cursorField", format!("stream `{}` has no field `{}`", stream.name, wanted.cursor_field[0])));
        }
        Some(wanted.cursor_field.clone())
    };
    let dedup = destination.ends_with("dedup");
    let primary_key = match (&stream.source_defined_primary_key, wanted.primary_key.is_empty()) {
        (Some(pk), _) if !pk.is_empty() => Some(pk.clone()),
        (_, false) => Some(wanted.primary_key.clone()),
        _ if dedup => return Err(("primaryKey", format!("stream `{}` has no primary key; name one for a deduplicated sync", stream.name))),
        _ => None,
    };
    let selected = if wanted.selected_fields.is_empty() {
        None
    } else {
        let mut fields = Vec::new();
        for selected in &wanted.selected_fields {
            let Some(top) = selected.field_path.first() else { return Err(("selectedFields", "a field path is empty".into())) };
            if !has_property(stream, top) {
                return Err(("selectedFields", format!("stream `{}` has no field `{top}`", stream.name)));
            }
            fields.push(top.clone());
        }
        // The destination cannot dedup or resume without these.
        let needed = primary_key.iter().flatten().chain(cursor.iter()).filter_map(|path| path.first());
        for field in needed {
            if !fields.contains(field) {
                fields.push(field.clone());
            }
        }
        Some(fields)
    };
    let configured = ConfiguredAirbyteStream {
        stream: stream.clone(),
        sync_mode: sync.parse().unwrap_or_else(|never| match never {}),
        cursor_field: cursor,
        destination_sync_mode: destination.parse().unwrap_or_else(|never| match never {}),
        primary_key,
        generation_id: None,
        minimum_generation_id: None,
        sync_id: None,
        extra: Default::default(),
    };
    Ok((configured, selected))
}

fn has_property(stream: &AirbyteStream, name: &str) -> bool {
    stream.json_schema.get("properties").and_then(|p| p.get(name)).is_some()
}

/// What a job's attempt runs, beyond the connection's catalog.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feed {
    /// The source reads, from the committed state.
    Source,
    /// No source: the destination overwrites the chosen streams with
    /// nothing (reset and clear).
    Empty,
}

fn stream_key(descriptor: &StreamDescriptor) -> String {
    match &descriptor.namespace {
        Some(ns) => format!("{ns}.{}", descriptor.name),
        None => descriptor.name.clone(),
    }
}

/// Shapes a sync of `job`'s type: generation ids on every stream; for a
/// refresh, a new generation and no state for the chosen streams; for a
/// reset or clear, only the chosen streams, overwritten with nothing. An
/// overwrite starts a new generation with every job, as Airbyte's does, so
/// that a destination that keeps generations side by side (object
/// storage) can delete the older ones once the stream completes. A
/// generation is started once per job: a retry goes on with it.
/// Returns what feeds the destination; `state` is updated in place and must
/// be stored before the attempt starts.
pub fn prepare(job: &Job, catalog: &mut ConfiguredAirbyteCatalog, state: &mut ConnectionState) -> Feed {
    let chosen = |d: &StreamDescriptor| job.streams.is_empty() || job.streams.iter().any(|s| s == &d.name || s == &stream_key(d));
    let starts_over = matches!(job.job_type, JobType::Refresh | JobType::Reset | JobType::Clear);
    if matches!(job.job_type, JobType::Reset | JobType::Clear) {
        catalog.streams.retain(|s| chosen(&s.stream.descriptor()));
    }
    let mut dropped = Vec::new();
    for stream in &mut catalog.streams {
        let descriptor = stream.stream.descriptor();
        let key = stream_key(&descriptor);
        if matches!(job.job_type, JobType::Reset | JobType::Clear) {
            stream.sync_mode = sluice_protocol::SyncMode::FullRefresh;
            stream.destination_sync_mode = sluice_protocol::DestinationSyncMode::Overwrite;
            stream.cursor_field = None;
        }
        let overwrite = matches!(stream.destination_sync_mode.as_str(), "overwrite" | "overwrite_dedup");
        let refreshed = starts_over && chosen(&descriptor);
        let generation = state.generations.entry(key.clone()).or_insert(0);
        if (refreshed || overwrite) && state.generation_jobs.get(&key) != Some(&job.id) {
            *generation += 1;
            state.generation_jobs.insert(key, job.id);
            if refreshed {
                dropped.push(descriptor);
            }
        }
        stream.generation_id = Some(*generation);
        stream.minimum_generation_id = Some(if overwrite || refreshed { *generation } else { 0 });
        stream.sync_id = Some(job.id);
    }
    drop_states(&mut state.states, &dropped);
    if matches!(job.job_type, JobType::Reset | JobType::Clear) {
        Feed::Empty
    } else {
        Feed::Source
    }
}

/// Removes the given streams from a list of state messages: their STREAM
/// states, their entries in a GLOBAL state; a LEGACY state goes whole.
fn drop_states(states: &mut Vec<Value>, streams: &[StreamDescriptor]) {
    if streams.is_empty() {
        return;
    }
    let named = |v: &Value| {
        let d = &v["stream_descriptor"];
        streams.iter().any(|s| d["name"] == s.name.as_str() && d["namespace"].as_str() == s.namespace.as_deref())
    };
    states.retain_mut(|state| match state["type"].as_str() {
        Some("STREAM") => !named(&state["stream"]),
        Some("GLOBAL") => {
            if let Some(list) = state["global"]["stream_states"].as_array_mut() {
                list.retain(|s| !named(s));
            }
            true
        }
        _ => false,
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn catalog() -> AirbyteCatalog {
        serde_json::from_value(json!({"streams": [
            {"name": "users", "json_schema": {"properties": {"id": {}, "name": {}, "updated_at": {}}},
             "supported_sync_modes": ["full_refresh", "incremental"], "source_defined_cursor": true,
             "default_cursor_field": ["updated_at"], "source_defined_primary_key": [["id"]]},
            {"name": "files", "json_schema": {"properties": {"path": {}}}, "supported_sync_modes": ["full_refresh"]}
        ]}))
        .unwrap()
    }

    fn stream(name: &str, mode: SyncMode) -> StreamConfiguration {
        StreamConfiguration { name: name.into(), namespace: None, sync_mode: mode, cursor_field: vec![], primary_key: vec![], selected_fields: vec![] }
    }

    #[test]
    fn defaults_take_the_sources_cursor_and_key() {
        let streams = default_streams(&catalog());
        assert_eq!(streams[0].sync_mode, SyncMode::IncrementalDedupedHistory);
        assert_eq!(streams[1].sync_mode, SyncMode::FullRefreshOverwrite);
        let configured = configure(&streams, &catalog()).unwrap();
        let users = &configured.catalog.streams[0];
        assert_eq!(users.cursor_field.as_deref(), Some(&["updated_at".to_owned()][..]));
        assert_eq!(users.destination_sync_mode, sluice_protocol::DestinationSyncMode::AppendDedup);
        assert!(configured.selected_fields.is_empty());
    }

    #[test]
    fn each_bad_stream_is_named() {
        let mut no_cursor = stream("files", SyncMode::IncrementalAppend);
        no_cursor.cursor_field = vec!["path".into()];
        let errors = configure(&[stream("nope", SyncMode::FullRefreshAppend), no_cursor, stream("files", SyncMode::FullRefreshAppend)], &catalog()).unwrap_err();
        let fields: Vec<&str> = errors.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(fields, ["configurations.streams[0].name", "configurations.streams[1].syncMode", "configurations.streams[2].name"]);
        assert!(errors[2].1.contains("twice"));
        let errors = configure(&[stream("files", SyncMode::FullRefreshOverwriteDeduped)], &catalog()).unwrap_err();
        assert_eq!(errors[0].0, "configurations.streams[0].primaryKey");
        assert!(configure(&[], &catalog()).is_err());
    }

    fn job(id: i64, job_type: JobType, streams: &[&str]) -> Job {
        Job::new(id, "c", job_type, streams.iter().map(|s| s.to_string()).collect(), jiff::Timestamp::UNIX_EPOCH)
    }

    fn committed() -> ConnectionState {
        let stream = |name: &str, cursor: i64| json!({"type": "STREAM", "stream": {"stream_descriptor": {"name": name}, "stream_state": {"cursor": cursor}}});
        ConnectionState { connection_id: "c".into(), states: vec![stream("users", 5), stream("files", 9)], ..Default::default() }
    }

    #[test]
    fn a_sync_keeps_state_and_marks_generations() {
        let mut synced = configure(&default_streams(&catalog()), &catalog()).unwrap().catalog;
        let mut state = committed();
        assert_eq!(prepare(&job(7, JobType::Sync, &[]), &mut synced, &mut state), Feed::Source);
        assert_eq!(state.states.len(), 2);
        let users = &synced.streams[0];
        assert_eq!((users.generation_id, users.minimum_generation_id, users.sync_id), (Some(0), Some(0), Some(7)));
        let files = &synced.streams[1];
        assert_eq!((files.generation_id, files.minimum_generation_id), (Some(1), Some(1)), "an overwrite starts a generation and keeps only it");
        // The job's next attempt goes on with that generation; the next job starts another.
        let mut retry = configure(&default_streams(&catalog()), &catalog()).unwrap().catalog;
        prepare(&job(7, JobType::Sync, &[]), &mut retry, &mut state);
        assert_eq!(retry.streams[1].generation_id, Some(1));
        let mut next = configure(&default_streams(&catalog()), &catalog()).unwrap().catalog;
        prepare(&job(8, JobType::Sync, &[]), &mut next, &mut state);
        assert_eq!((next.streams[0].generation_id, next.streams[1].generation_id), (Some(0), Some(2)));
    }

    #[test]
    fn refresh_and_reset_start_the_chosen_streams_over() {
        let mut refreshed = configure(&default_streams(&catalog()), &catalog()).unwrap().catalog;
        let mut state = committed();
        prepare(&job(7, JobType::Refresh, &["users"]), &mut refreshed, &mut state);
        assert_eq!(state.generations["users"], 1);
        assert_eq!(state.generations["files"], 1, "an overwrite stream starts a generation in every job");
        assert_eq!(state.states.len(), 1, "the refreshed stream's state is gone");
        assert_eq!((refreshed.streams[0].generation_id, refreshed.streams[0].minimum_generation_id), (Some(1), Some(1)));
        // A retry of the refresh goes on from what its first attempt committed.
        state.states.push(json!({"type": "STREAM", "stream": {"stream_descriptor": {"name": "users"}, "stream_state": {"cursor": 1}}}));
        let mut retried = configure(&default_streams(&catalog()), &catalog()).unwrap().catalog;
        prepare(&job(7, JobType::Refresh, &["users"]), &mut retried, &mut state);
        assert_eq!((state.generations["users"], state.states.len()), (1, 2));

        let mut again = configure(&default_streams(&catalog()), &catalog()).unwrap().catalog;
        assert_eq!(prepare(&job(8, JobType::Reset, &["files"]), &mut again, &mut state), Feed::Empty);
        assert_eq!(again.streams.len(), 1);
        assert_eq!(again.streams[0].destination_sync_mode.as_str(), "overwrite");
        assert_eq!(state.states.len(), 1, "the reset stream's state is gone, the other's stays");
        assert_eq!(state.generations["files"], 2);
    }

    #[test]
    fn selected_fields_keep_the_key_and_cursor() {
        let mut users = stream("users", SyncMode::IncrementalDedupedHistory);
        users.selected_fields = vec![sluice_domain::resources::SelectedField { field_path: vec!["name".into()] }];
        let configured = configure(&[users], &catalog()).unwrap();
        assert_eq!(configured.selected_fields[0].1, ["name", "id", "updated_at"]);
    }
}
