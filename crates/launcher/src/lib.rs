//! The launcher: takes workloads off the queue, claims each (a conditional
//! write, so a redelivered message launches nothing twice), turns it into a
//! [`TaskPlan`] and hands the plan to an executor.
//!
//! [`build_plan`] is shared by every executor; [`local`] runs a plan as
//! processes on this machine, [`docker`] describes it as containers.

pub mod containers;
pub mod docker;
pub mod ecs;
pub mod local;
pub mod plan;

use std::sync::Arc;

use jiff::SignedDuration;
use serde_json::{json, Value};
use sluice_api::config::{actors, connections, load};
use sluice_api::App;
use sluice_domain::channel::ForcesStdio;
use sluice_domain::resources::{ActorKind, ConnectionState, Definition};
use sluice_protocol::socket::Format;
use sluice_domain::{FailureReason, Workload, WorkloadEvent, WorkloadType};
use sluice_platform::{workload_event, AttemptEnd, PlatformError};
use sluice_store::{DocKind, StoreError};

pub use plan::{Container, PlanFile, Resources, Runtime, TaskPlan};

/// Why a workload could not be planned or launched; it fails with this.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct LaunchError(pub String);

impl From<sluice_api::Problem> for LaunchError {
    fn from(p: sluice_api::Problem) -> Self {
        LaunchError(p.detail)
    }
}

impl From<StoreError> for LaunchError {
    fn from(e: StoreError) -> Self {
        LaunchError(e.to_string())
    }
}

/// The question a spec, check or discover workload asks its connector.
pub fn question(kind: WorkloadType) -> Option<sluice_orchestrator::ask::Question> {
    sluice_orchestrator::ask::Question::parse(kind.as_str())
}

fn input(w: &Workload) -> Value {
    serde_json::from_str(&w.input).unwrap_or(Value::Null)
}

fn container(definition: &Definition) -> Container {
    Container { name: definition_name(definition), runtime: Runtime::parse(&definition.runtime), env: Default::default() }
}

/// A connector's config file as its definition runs it, and the container
/// to run it in: a manifest connector's config carries its manifest, as
/// Airbyte's `ConfigInjector` puts it there, and custom Python code runs
/// only where the operator allowed it.
async fn connector_input(app: &App, definition: &Definition, configuration: &Value) -> Result<(Value, Container), LaunchError> {
    use sluice_domain::registry::{custom_code, INJECTED_CHECKSUMS, INJECTED_COMPONENTS, INJECTED_MANIFEST};
    let mut config = actors::plain_config(app, configuration).await?;
    let mut container = container(definition);
    if let (Some(manifest), Some(map)) = (&definition.declarative_manifest, config.as_object_mut()) {
        map.insert(INJECTED_MANIFEST.into(), manifest.clone());
    }
    if let Some(why) = custom_code(definition.declarative_manifest.as_ref(), &config) {
        if !app.settings.custom_code {
            return Err(LaunchError(format!(
                "{} would run custom Python code ({why}), which this platform does not allow; an operator allows it with `sluice up --enable-unsafe-code` (SLUICE_ENABLE_UNSAFE_CODE=true for the functions), Airbyte's AIRBYTE_ENABLE_UNSAFE_CODE",
                definition.name
            )));
        }
        // The runner refuses code without a checksum; the platform vouches
        // for what the user stored, as Airbyte's does.
        if let Some(code) = config.get(INJECTED_COMPONENTS).and_then(Value::as_str).map(str::to_owned) {
            if config.get(INJECTED_CHECKSUMS).is_none_or(Value::is_null) {
                config[INJECTED_CHECKSUMS] = json!({"sha256": sluice_api::auth::hex(&sha256(code.as_bytes()))});
            }
        }
        container.env.insert("AIRBYTE_ENABLE_UNSAFE_CODE".into(), "true".into());
    }
    Ok((config, container))
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).into()
}

fn definition_name(d: &Definition) -> String {
    match Runtime::parse(&d.runtime) {
        Runtime::Pypi(text) => text.trim_start_matches("pypi:").split("==").next().unwrap_or_default().trim_start_matches("airbyte-").to_owned(),
        Runtime::Reference(name) => name,
        _ => format!("{}-{}", d.kind.as_str(), d.type_key),
    }
}

fn file(name: &str, value: &impl serde::Serialize) -> PlanFile {
    PlanFile { name: name.to_owned(), contents: serde_json::to_string(value).expect("plain data") }
}

/// Everything the workload's task needs, read from the store now, with
/// secrets resolved into the config files (and nowhere else).
pub async fn build_plan(app: &App, w: &Workload, api_url: &str) -> Result<TaskPlan, LaunchError> {
    let input = input(w);
    let text = |key: &str| input[key].as_str().map(str::to_owned).ok_or_else(|| LaunchError(format!("workload {} has no `{key}` in its input", w.id)));
    let mut plan = TaskPlan {
        workload_id: w.id.clone(),
        kind: w.kind,
        files: Vec::new(),
        connector: None,
        source: None,
        destination: None,
        resources: Resources { cpu_millis: app.settings.container_cpu_millis, memory_mib: app.settings.container_memory_mib },
        data_channel: None,
        workload_api_url: api_url.to_owned(),
        credential: app.keys.workload_token(&w.id),
    };
    match w.kind {
        WorkloadType::Spec => {
            let (definition, _) = load::<Definition>(app, DocKind::Definition, &text("definitionId")?).await?;
            plan.connector = Some(container(&definition));
        }
        WorkloadType::Check | WorkloadType::Discover => {
            let (kind, id) = if w.kind == WorkloadType::Discover {
                (ActorKind::Source, text("sourceId")?)
            } else {
                let kind = if text("actorKind")? == "destination" { ActorKind::Destination } else { ActorKind::Source };
                (kind, text("actorId")?)
            };
            let (actor, _) = actors::actor(app, kind, &id).await?;
            let (definition, _) = load::<Definition>(app, DocKind::Definition, &actor.definition_id).await?;
            let (config, container) = connector_input(app, &definition, &actor.configuration).await?;
            plan.connector = Some(container);
            plan.files.push(file(plan::files::CONNECTOR_CONFIG, &config));
        }
        WorkloadType::Sync => sync_plan(app, w, &mut plan).await?,
    }
    Ok(plan)
}

async fn sync_plan(app: &App, w: &Workload, plan: &mut TaskPlan) -> Result<(), LaunchError> {
    let connection_id = w.mutex_key.clone().ok_or_else(|| LaunchError(format!("sync workload {} names no connection", w.id)))?;
    let (connection, _) = connections::connection(app, &connection_id).await?;
    let (source, _) = actors::actor(app, ActorKind::Source, &connection.source_id).await?;
    let (destination, _) = actors::actor(app, ActorKind::Destination, &connection.destination_id).await?;
    let (source_definition, _) = load::<Definition>(app, DocKind::Definition, &source.definition_id).await?;
    let (destination_definition, _) = load::<Definition>(app, DocKind::Definition, &destination.definition_id).await?;
    let (job_id, attempt) = w.job_attempt().ok_or_else(|| LaunchError(format!("sync workload {} names no job", w.id)))?;
    let job = app.jobs.get_job(job_id).await?;
    // As Airbyte's sync workflow does: the schema is checked before the
    // sync, and a connection that check disabled does not sync.
    let (connection, catalog) = match sluice_api::config::schema::before_sync(app, connection, &job).await? {
        Ok(checked) => checked,
        Err(reason) => {
            let line = format!("{} launcher INFO the schema check before this sync disabled the connection: {reason}\n", jiff::Timestamp::now());
            app.logs.append(job_id, attempt, &line).await?;
            match sluice_platform::cancel_job(&app.ports(), job_id, jiff::Timestamp::now()).await {
                Ok(_) | Err(PlatformError::Transition(_)) => {}
                Err(e) => return Err(LaunchError(e.to_string())),
            }
            return Err(LaunchError(format!("the connection was disabled: {reason}")));
        }
    };
    let configured = sluice_platform::catalog::configure(&connection.streams, &catalog).map_err(|errors| {
        let listed: Vec<String> = errors.iter().map(|(f, m)| format!("{f}: {m}")).collect();
        LaunchError(format!("the connection's streams no longer match the source's catalog: {}", listed.join("; ")))
    })?;
    let mut catalog = configured.catalog;
    for stream in &mut catalog.streams {
        stream.stream.namespace = sluice_domain::resources::destination_namespace(
            &connection.namespace_definition,
            connection.namespace_format.as_deref(),
            stream.stream.namespace.as_deref(),
        );
        if !connection.prefix.is_empty() {
            stream.stream.name = format!("{}{}", connection.prefix, stream.stream.name);
        }
    }
    let mut state = match load::<ConnectionState>(app, DocKind::State, &connection_id).await {
        Ok((state, _)) => state,
        Err(p) if p.status.as_u16() == 404 => ConnectionState { connection_id: connection_id.clone(), ..Default::default() },
        Err(p) => return Err(p.into()),
    };
    let feed = sluice_platform::catalog::prepare(&job, &mut catalog, &mut state);
    // Stored before the task starts: a reset's dropped state stays dropped
    // even if the attempt fails, and generations only ever go up.
    sluice_api::workloads::save_connection_state(app, &state).await?;
    let state = state.states;
    let selected: Vec<Value> = configured.selected_fields.iter().map(|(stream, fields)| json!({"stream": stream, "fields": fields})).collect();
    let (source_config, source_container) = connector_input(app, &source_definition, &source.configuration).await?;
    let (destination_config, destination_container) = connector_input(app, &destination_definition, &destination.configuration).await?;
    plan.files.push(file(plan::files::SOURCE_CONFIG, &source_config));
    plan.files.push(file(plan::files::DESTINATION_CONFIG, &destination_config));
    plan.files.push(file(plan::files::CATALOG, &catalog));
    plan.files.push(file(plan::files::STATE, &state));
    plan.files.push(file(plan::files::SELECTED_FIELDS, &selected));
    plan.source = Some(match feed {
        sluice_platform::catalog::Feed::Source => source_container,
        sluice_platform::catalog::Feed::Empty => Container { name: "source-empty".into(), runtime: Runtime::Reference("source-empty".into()), env: Default::default() },
    });
    plan.destination = Some(destination_container);
    let mut forced = Vec::new();
    if feed == sluice_platform::catalog::Feed::Empty {
        forced.push(ForcesStdio::ResetOrClear);
    }
    if !selected.is_empty() {
        forced.push(ForcesStdio::FieldSelection);
    }
    let cpus = f64::from(plan.resources.cpu_millis) / 1000.0;
    let choice = sluice_domain::channel::choose(
        source_definition.connector_ipc_options.as_ref(),
        destination_definition.connector_ipc_options.as_ref(),
        &connection.data_channel,
        &forced,
        (cpus, cpus),
    );
    if let (Some(format), Some(socket_count)) = (choice.format.as_deref().and_then(Format::parse), choice.socket_count) {
        plan.data_channel = Some(plan::PlanChannel { format, socket_count });
    }
    // The attempt's log says which channel and why, before the task's own lines.
    let detail = match (&choice.format, choice.socket_count) {
        (Some(format), Some(n)) => format!("{} {format} over {n} sockets", choice.medium),
        _ => choice.medium.clone(),
    };
    // The attempt's details say how its records travel.
    sluice_platform::record_data_channel(&app.ports(), job_id, &w.id, &choice, jiff::Timestamp::now()).await.map_err(|e| LaunchError(e.to_string()))?;
    let line = format!("{} launcher INFO data channel: {detail} ({})\n", jiff::Timestamp::now(), choice.reason);
    app.logs.append(job_id, attempt, &line).await?;
    Ok(())
}

/// Fails a workload that could not be launched, and its attempt, which the
/// retry policy then retries or ends.
pub async fn fail_launch(app: &App, w: &Workload, why: &str) -> Result<(), PlatformError> {
    fail_workload(app, w, "launch_error", why).await
}

/// Fails a workload that can no longer report for itself, and the attempt
/// it ran (which the policy retries or ends); one that ended meanwhile is
/// left as it is, unless it failed with its attempt still running: the
/// attempt's end was not stored (a full disk), and is ended here.
pub async fn fail_workload(app: &App, w: &Workload, failure_type: &str, why: &str) -> Result<(), PlatformError> {
    let now = jiff::Timestamp::now();
    let failed = match workload_event(&app.ports(), &w.id, &WorkloadEvent::Fail { reason: why.to_owned() }, now).await {
        Ok(w) => w,
        Err(PlatformError::Transition(_)) => match app.workloads.get_workload(&w.id).await? {
            ended if ended.status == sluice_domain::WorkloadStatus::Failure => ended,
            _ => return Ok(()),
        },
        Err(e) => return Err(e),
    };
    if let Some((job_id, _)) = failed.job_attempt() {
        let failure = FailureReason { origin: "platform".into(), failure_type: failure_type.into(), message: why.to_owned(), stream: None };
        let end = AttemptEnd::Failed { failure, stats: Default::default(), streams: Vec::new() };
        match sluice_platform::finish_attempt(&app.ports(), job_id, &failed.id, &end, &app.settings.retry, now).await {
            Ok(_) | Err(PlatformError::Transition(_)) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Claims a delivered workload for `by` (a launcher and its delivery):
/// `None` if it needs no work (gone, no longer pending, or claimed by
/// another delivery). Of two deliveries of one workload, one claim wins.
pub async fn claim(app: &App, workload_id: &str, by: &str) -> Result<Option<Workload>, PlatformError> {
    let now = jiff::Timestamp::now();
    let current = match app.workloads.get_workload(workload_id).await {
        Ok(w) => w,
        Err(StoreError::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    if current.status != sluice_domain::WorkloadStatus::Pending {
        return Ok(None);
    }
    match workload_event(&app.ports(), workload_id, &WorkloadEvent::Claim { by: by.to_owned() }, now).await {
        Ok(w) if w.claimed_by.as_deref() == Some(by) => Ok(Some(w)),
        Ok(_) | Err(PlatformError::Transition(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

/// How long a received message stays invisible before it is delivered
/// again: enough to claim and launch; after that the claim guards it.
pub const VISIBILITY: SignedDuration = SignedDuration::from_secs(120);

/// Takes the next message off the queue and claims its workload. `None`
/// when the queue is empty; `Some(None)` when the message needed no work
/// (the workload already ended, or someone else claimed it).
pub async fn claim_next(app: &Arc<App>, launcher_id: &str) -> Result<Option<Option<Workload>>, PlatformError> {
    let now = jiff::Timestamp::now();
    let Some(delivery) = app.queue.receive(now, VISIBILITY).await? else { return Ok(None) };
    let claimed = claim(app, &delivery.workload_id, &format!("{launcher_id}/{}", delivery.receipt)).await?;
    // Claimed (or not ours to run): the claim, not the message, now guards it.
    match app.queue.acknowledge(&delivery.receipt).await {
        Ok(()) | Err(StoreError::NotFound { .. }) => {}
        Err(e) => return Err(e.into()),
    }
    Ok(Some(claimed))
}
