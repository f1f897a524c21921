//! What Sluice's Lambda functions share. Each function in `functions/` is
//! a `main` that builds the platform once per container ([`app_from_env`],
//! outside the handler) and hands events to a handler here or to the API's
//! router. [`runtime_api`] serves the Lambda Runtime API on 127.0.0.1, so
//! the real function binaries run (and are tested) on one machine.

pub mod gateway;
pub mod runtime_api;

/// Event payloads as AWS delivers them, captured for tests.
pub mod events {
    pub const REST_PROXY: &str = crate::gateway::REST_PROXY_EVENT;
    pub const SQS_BATCH_DUPLICATED: &str = include_str!("../events/sqs-batch-duplicated.json");
    pub const SCHEDULED_EVENT: &str = include_str!("../events/scheduled-event.json");
}

use std::sync::Arc;

/// The SDK configuration from the environment; load it once per container
/// and hand it to [`app_from_env`] and the ECS helpers.
pub use sluice_store_aws::sdk_config;

use serde_json::{json, Value};
use sluice_api::{App, Keys, Settings};
use sluice_domain::JobType;
use sluice_store_aws::{CloudWatchLogs, DynamoStore, EventBridgeEvents, EventBridgeSchedules, Names, ScheduleTarget, SecretsManagerStore, SqsQueue};

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Error(pub String);

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// `SLUICE_PREFIX`, which names every AWS resource of the platform.
fn prefix() -> String {
    var("SLUICE_PREFIX").unwrap_or_else(|| "sluice".into())
}

/// The platform on its AWS adapters, named by `SLUICE_PREFIX` (default
/// `sluice`), the queue by `SLUICE_QUEUE_URL` (else looked up by name), the
/// schedules' target by `SLUICE_SCHEDULER_FUNCTION_ARN` and
/// `SLUICE_SCHEDULER_ROLE_ARN`, and its settings by [`settings_from_env`].
pub async fn app_from_env(config: &aws_config::SdkConfig) -> Result<Arc<App>, Error> {
    let mut app = app_for(config, &prefix()).await?;
    Arc::get_mut(&mut app).expect("not shared yet").settings = settings_from_env()?;
    Ok(app)
}

/// Settings of the functions, from whole seconds in the environment:
/// `SLUICE_CONNECTOR_WAIT_SECS` (how long a request waits for a spec,
/// check or discover; 25 by default, inside API Gateway's 29-second limit:
/// asked again, it joins the same workload or finds its answer),
/// `SLUICE_RETRY_BACKOFF_SECS`, `SLUICE_HEARTBEAT_TIMEOUT_SECS`,
/// `SLUICE_TOKEN_TTL_SECS`, `SLUICE_SCHEMA_REFRESH_SECS`; and
/// `SLUICE_ENABLE_UNSAFE_CODE=true` lets connectors run custom Python code;
/// `SLUICE_MAX_RUNNING_JOBS` limits the jobs that run at once.
pub fn settings_from_env() -> Result<Settings, Error> {
    let secs = |name: &str| -> Result<Option<u64>, Error> {
        var(name).map(|v| v.parse::<u64>().map_err(|_| Error(format!("{name} must be a whole number of seconds, not `{v}`")))).transpose()
    };
    // API Gateway compresses responses itself (the API's MinimumCompressionSize),
    // and would pass a gzipped body through only as a binary media type.
    let mut settings = Settings { connector_timeout: std::time::Duration::from_secs(25), gzip_app: false, ..Settings::default() };
    if let Some(s) = secs("SLUICE_CONNECTOR_WAIT_SECS")? {
        settings.connector_timeout = std::time::Duration::from_secs(s);
    }
    if let Some(s) = secs("SLUICE_RETRY_BACKOFF_SECS")? {
        settings.retry.backoff_initial = jiff::SignedDuration::from_secs(s as i64);
    }
    if let Some(s) = secs("SLUICE_HEARTBEAT_TIMEOUT_SECS")? {
        settings.deadlines.heartbeat = jiff::SignedDuration::from_secs(s as i64);
    }
    if let Some(s) = secs("SLUICE_TOKEN_TTL_SECS")? {
        settings.token_ttl = std::time::Duration::from_secs(s);
    }
    if let Some(s) = secs("SLUICE_SCHEMA_REFRESH_SECS")? {
        settings.schema_refresh = std::time::Duration::from_secs(s);
    }
    if let Some(v) = var("SLUICE_MAX_RUNNING_JOBS") {
        let n = v.parse::<usize>().ok().filter(|n| *n > 0);
        settings.max_running_jobs = Some(n.ok_or_else(|| Error(format!("SLUICE_MAX_RUNNING_JOBS must be a whole number above 0, not `{v}`")))?);
    }
    settings.custom_code = match var("SLUICE_ENABLE_UNSAFE_CODE").as_deref() {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => return Err(Error(format!("SLUICE_ENABLE_UNSAFE_CODE must be `true` or `false`, not `{other}`"))),
    };
    Ok(settings)
}

/// The platform on the AWS resources named by `prefix`.
pub async fn app_for(config: &aws_config::SdkConfig, prefix: &str) -> Result<Arc<App>, Error> {
    let config = config.clone();
    let names = Names::with_prefix(prefix);
    let target = ScheduleTarget {
        function_arn: var("SLUICE_SCHEDULER_FUNCTION_ARN").unwrap_or_default(),
        role_arn: var("SLUICE_SCHEDULER_ROLE_ARN").unwrap_or_default(),
    };
    let store = Arc::new(DynamoStore::new(&config, names.clone()));
    let secrets = Arc::new(SecretsManagerStore::new(&config, &names.secrets_prefix));
    // Every round trip here is cold-start time: they go out together.
    let queue_url = async {
        match var("SLUICE_QUEUE_URL") {
            Some(url) => Ok(url),
            None => SqsQueue::url_of(&config, &names.queue).await.map_err(|e| Error(format!("cannot find the workload queue {}: {e}", names.queue))),
        }
    };
    let key = async { sluice_api::auth::signing_key(&*store, &*secrets).await.map_err(|e| Error(format!("cannot read the signing key: {e}"))) };
    let launch_key = async { sluice_store::SecretStore::get_secret(&*secrets, &sluice_store_aws::provision::launch_key_name(&names.secrets_prefix)).await.ok() };
    let (queue_url, key, launch_key) = tokio::join!(queue_url, key, launch_key);
    let (queue_url, key) = (queue_url?, key?);
    Ok(Arc::new(App {
        config: store.clone(),
        jobs: store.clone(),
        workloads: store,
        queue: Arc::new(SqsQueue::new(&config, queue_url)),
        secrets,
        logs: Arc::new(CloudWatchLogs::new(&config, &names.log_group)),
        schedules: Arc::new(EventBridgeSchedules::new(&config, &names.schedule_group, target)),
        events: Arc::new(EventBridgeEvents::new(&config, &names.event_bus)),
        keys: Keys::new(key.into_bytes()),
        settings: Settings::default(),
        work_queued: Arc::new(tokio::sync::Notify::new()),
        launch_key,
    }))
}

/// The scheduler function: a schedule's fire (`{"connectionId": ...}`)
/// starts a sync job; a retry's fire (`{"jobId": ...}`) or any other event
/// starts the attempts whose backoff has passed. Returns what it did.
pub async fn scheduler(app: &App, event: &Value) -> Result<Value, Error> {
    if let Some(connection_id) = event["connectionId"].as_str() {
        let (connection, _) = sluice_api::config::connections::connection(app, connection_id).await.map_err(|p| Error(p.detail))?;
        if !connection.status.can_run_jobs() {
            // A schedule that outlived its connection's activity: remove it.
            app.schedules.delete_schedule(connection_id).await.map_err(|e| Error(e.to_string()))?;
            return Ok(json!({"skipped": format!("connection {connection_id} is {}", connection.status.as_str())}));
        }
        let job_type = event["jobType"].as_str().and_then(JobType::parse).unwrap_or(JobType::Sync);
        return match sluice_api::config::jobs::start(app, connection_id, job_type, Vec::new()).await {
            Ok(job) => Ok(json!({"started": job.id})),
            // A fire while the previous sync still runs is skipped, as Airbyte does.
            Err(p) if p.status.as_u16() == 409 => Ok(json!({"skipped": p.detail})),
            Err(p) => Err(Error(p.detail)),
        };
    }
    let started = sluice_platform::start_due_attempts(&app.ports(), jiff::Timestamp::now()).await.map_err(|e| Error(e.to_string()))?;
    Ok(json!({"retried": started.iter().map(|j| j.id).collect::<Vec<_>>()}))
}

/// The monitor function, every minute: fails workloads past their deadline
/// (their attempts retry), stops the ECS tasks of workloads that ended
/// (cancelled, or failed by the monitor) while their task runs on, starts
/// retries that are due, and drops finished workloads past the retention
/// where no TTL does it.
pub async fn monitor(app: &App, tasks: Option<&sluice_store_aws::EcsTasks>, retention: jiff::SignedDuration) -> Result<Value, Error> {
    let now = jiff::Timestamp::now();
    let failed = sluice_platform::monitor_sweep(&app.ports(), &app.settings.retry, now).await.map_err(|e| Error(e.to_string()))?;
    let (stopped, lost) = match tasks {
        Some(tasks) => (stop_tasks_of_ended_workloads(app, tasks).await?, fail_workloads_of_stopped_tasks(app, tasks).await?),
        None => (Vec::new(), Vec::new()),
    };
    let retried = sluice_platform::start_due_attempts(&app.ports(), now).await.map_err(|e| Error(e.to_string()))?;
    let purged = app.workloads.purge_finished_workloads(now - retention).await.map_err(|e| Error(e.to_string()))?;
    Ok(json!({"failed": failed, "stopped": stopped, "lost": lost, "retried": retried.iter().map(|j| j.id).collect::<Vec<_>>(), "purged": purged}))
}

/// The other way round: a task that stopped while its workload had not
/// ended (an image ECS could not pull, a container that could not start, a
/// dependency that failed) never reports; its workload is failed now with
/// ECS's reason rather than at the heartbeat deadline. Returns those workloads.
pub async fn fail_workloads_of_stopped_tasks(app: &App, tasks: &sluice_store_aws::EcsTasks) -> Result<Vec<String>, Error> {
    let mut lost = Vec::new();
    for (arn, workload_id, why) in tasks.stopped().await.map_err(|e| Error(e.to_string()))? {
        let w = match app.workloads.get_workload(&workload_id).await {
            Ok(w) => w,
            Err(sluice_store::StoreError::NotFound { .. }) => continue,
            Err(e) => return Err(Error(e.to_string())),
        };
        // Another task of the same workload (a relaunch) is not this one's business.
        if w.status.is_terminal() || w.task_ref.as_deref().is_some_and(|r| r != arn) {
            continue;
        }
        let reason = format!("its ECS task {arn} stopped before the workload ended: {why}");
        sluice_launcher::fail_workload(app, &w, "system_error", &reason).await.map_err(|e| Error(e.to_string()))?;
        lost.push(workload_id);
    }
    Ok(lost)
}

/// StopTask for each running task whose workload has ended: a cancelled
/// job's task stops itself at its next heartbeat, but a frozen or
/// unreachable one would run (and cost) on. Returns the workloads stopped.
pub async fn stop_tasks_of_ended_workloads(app: &App, tasks: &sluice_store_aws::EcsTasks) -> Result<Vec<String>, Error> {
    let mut stopped = Vec::new();
    for (arn, workload_id) in tasks.running().await.map_err(|e| Error(e.to_string()))? {
        let ended = match app.workloads.get_workload(&workload_id).await {
            Ok(w) => w.status.is_terminal().then(|| format!("workload {workload_id} is {}", w.status.as_str())),
            Err(sluice_store::StoreError::NotFound { .. }) => Some(format!("workload {workload_id} no longer exists")),
            Err(e) => return Err(Error(e.to_string())),
        };
        if let Some(reason) = ended {
            tasks.stop(&arn, &reason).await.map_err(|e| Error(e.to_string()))?;
            stopped.push(workload_id);
        }
    }
    Ok(stopped)
}

/// The ECS cluster of the platform named by `SLUICE_PREFIX`, to stop tasks in.
pub fn ecs_cluster_from_env(config: &aws_config::SdkConfig) -> sluice_store_aws::EcsTasks {
    sluice_store_aws::EcsTasks::in_cluster(config, &Names::with_prefix(&prefix()).cluster)
}

/// Runs workloads as ECS tasks (syncs, and the spec, check and discover
/// questions): the plan becomes a task definition (registered once) and a
/// RunTask; the task's files wait in the secrets port for its init step.
pub struct EcsLauncher {
    pub tasks: sluice_store_aws::EcsTasks,
    pub settings: sluice_launcher::ecs::EcsSettings,
    /// The workload API as tasks reach it.
    pub api_url: String,
}

impl EcsLauncher {
    /// Launches a claimed workload; a failure fails it (and its attempt, which retries).
    pub async fn launch(&self, app: &App, w: &sluice_domain::Workload) -> Result<String, Error> {
        let launched = async {
            if let Some(connection) = sluice_domain::sync_workload_connection(&w.id) {
                fence(&self.tasks, connection, &w.id, FENCE_PATIENCE).await?;
            }
            let plan = sluice_launcher::build_plan(app, w, &self.api_url).await?;
            let run = sluice_launcher::ecs::ecs_task(&plan, &self.settings)?;
            let files = sluice_launcher::containers::task_files(&plan)?;
            sluice_api::workloads::stash_task_files(app, &w.id, &files).await?;
            let arn = self.tasks.run(&run).await?;
            let event = sluice_domain::WorkloadEvent::Launched { task_ref: Some(arn.clone()) };
            sluice_platform::workload_event(&app.ports(), &w.id, &event, jiff::Timestamp::now()).await.map_err(|e| sluice_launcher::LaunchError(e.to_string()))?;
            Ok::<_, sluice_launcher::LaunchError>(arn)
        };
        match launched.await {
            Ok(arn) => Ok(arn),
            Err(e) => {
                sluice_launcher::fail_launch(app, w, &e.0).await.map_err(|f| Error(format!("{}; and recording the failure failed: {f}", e.0)))?;
                Err(Error(e.0))
            }
        }
    }
}

/// The fence between a connection's attempts on ECS: a task of an earlier
/// one that ECS still runs (a frozen task the monitor failed, a cancelled
/// job's task still stopping) is stopped, and `workload`'s task may start
/// only once ECS says the earlier ones have stopped, within `patience`.
/// Returns the tasks it stopped.
pub async fn fence(tasks: &sluice_store_aws::EcsTasks, connection: &str, workload: &str, patience: std::time::Duration) -> Result<Vec<String>, sluice_launcher::LaunchError> {
    let error = |e: sluice_store::StoreError| sluice_launcher::LaunchError(format!("cannot list the cluster's tasks: {e}"));
    let mine = |by: &str| by != workload && by.ends_with("_sync") && sluice_domain::sync_workload_connection(by) == Some(connection);
    let deadline = std::time::Instant::now() + patience;
    let mut told = Vec::new();
    loop {
        let earlier: Vec<(String, String)> = tasks.not_stopped().await.map_err(error)?.into_iter().filter(|(_, by)| mine(by)).collect();
        if earlier.is_empty() {
            return Ok(told);
        }
        for (arn, by) in &earlier {
            if !told.contains(arn) {
                tasks.stop(arn, &format!("{workload} starts; the workload {by} has ended")).await.map_err(error)?;
                told.push(arn.clone());
            }
        }
        if std::time::Instant::now() > deadline {
            let names: Vec<&str> = earlier.iter().map(|(arn, _)| arn.as_str()).collect();
            return Err(sluice_launcher::LaunchError(format!(
                "earlier tasks of this connection are still stopping after {} s ({}); this attempt does not start beside them, and its retry will look again",
                patience.as_secs(),
                names.join(", ")
            )));
        }
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    }
}

/// How long a launch waits for an earlier task of its connection to stop
/// (ECS gives containers 30 s after SIGTERM by default), within the
/// launcher function's 120 s.
pub const FENCE_PATIENCE: std::time::Duration = std::time::Duration::from_secs(60);

/// The launcher function, on an SQS batch (`{"Records": [{"messageId",
/// "body": <workload id>}, ...]}`): claims each workload (a conditional
/// write, so a redelivered message launches nothing twice) and launches it
/// on ECS, whatever its kind. Returns the partial batch response: only messages that hit a
/// transient failure (the store or ECS unavailable) are retried; a workload
/// that cannot be launched is failed, and its message is done.
pub async fn launcher(app: &App, ecs: &EcsLauncher, event: &Value) -> Value {
    let mut retry = Vec::new();
    for record in event["Records"].as_array().into_iter().flatten() {
        let (Some(message_id), Some(workload_id)) = (record["messageId"].as_str(), record["body"].as_str()) else { continue };
        // A duplicated delivery has the same message id but its own receipt:
        // claims by the delivery, so that only one of two can win.
        let receipt = record["receiptHandle"].as_str().unwrap_or_default();
        let by = format!("lambda/{message_id}/{}", sluice_launcher::ecs::fingerprint(receipt));
        match sluice_launcher::claim(app, workload_id.trim(), &by).await {
            Ok(Some(w)) => {
                if let Err(e) = ecs.launch(app, &w).await {
                    eprintln!("sluice: workload {} failed to launch: {e}", w.id);
                }
            }
            Ok(None) => {}
            Err(e) => {
                eprintln!("sluice: cannot claim workload {workload_id}: {e}");
                retry.push(json!({"itemIdentifier": message_id}));
            }
        }
    }
    json!({"batchItemFailures": retry})
}

/// The ECS launcher from the environment: `SLUICE_ORCHESTRATOR_IMAGE`,
/// `SLUICE_TASK_SUBNETS`, `SLUICE_TASK_SECURITY_GROUPS` (comma-separated),
/// `SLUICE_TASK_EXECUTION_ROLE_ARN`, `SLUICE_TASK_ROLE_ARN`,
/// `SLUICE_WORKLOAD_API_URL` (as tasks reach it), `SLUICE_REFERENCE_IMAGE_PREFIX`,
/// `SLUICE_WORKLOAD_API_AUTH` (`aws-iam` when API Gateway's IAM auth guards
/// the workload routes, so tasks sign their calls; `credential` otherwise).
pub async fn ecs_launcher_from_env(config: &aws_config::SdkConfig) -> Result<EcsLauncher, Error> {
    let prefix = prefix();
    let names = Names::with_prefix(&prefix);
    let need = |name: &str| var(name).ok_or_else(|| Error(format!("the launcher needs {name}")));
    let list = |name: &str| -> Result<Vec<String>, Error> { Ok(need(name)?.split(',').map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()).collect()) };
    let version = env!("CARGO_PKG_VERSION");
    let image_prefix = var("SLUICE_REFERENCE_IMAGE_PREFIX").unwrap_or_else(|| "sluice/".into());
    let settings = sluice_launcher::ecs::EcsSettings {
        orchestrator_image: var("SLUICE_ORCHESTRATOR_IMAGE").unwrap_or_else(|| format!("{image_prefix}orchestrator:{version}")),
        reference_images: sluice_connectors::REFERENCE_CONNECTORS
            .iter()
            .map(|n| (n.to_string(), format!("{image_prefix}{n}:{version}")))
            .chain([(sluice_connectors::MANIFEST.to_owned(), sluice_launcher::plan::manifest_runner_image())])
            .collect(),
        family_prefix: prefix.clone(),
        log_group: names.task_log_group.clone(),
        region: var("AWS_REGION").unwrap_or_else(|| "us-east-1".into()),
        launch_key_secret_arn: sluice_store_aws::provision::launch_key_arn(config, &names).await.map_err(|e| Error(format!("cannot find the launch key: {e}")))?,
        workload_api_iam: sluice_launcher::ecs::wants_iam(var(sluice_launcher::ecs::AUTH_VAR).as_deref()).map_err(Error)?,
    };
    let placement = sluice_store_aws::EcsPlacement {
        cluster: names.cluster.clone(),
        subnets: list("SLUICE_TASK_SUBNETS")?,
        security_groups: list("SLUICE_TASK_SECURITY_GROUPS")?,
        execution_role_arn: need("SLUICE_TASK_EXECUTION_ROLE_ARN")?,
        task_role_arn: need("SLUICE_TASK_ROLE_ARN")?,
        assign_public_ip: var("SLUICE_TASK_PUBLIC_IP").is_some_and(|v| v == "true"),
    };
    Ok(EcsLauncher { tasks: sluice_store_aws::EcsTasks::new(config, placement), settings, api_url: need("SLUICE_WORKLOAD_API_URL")? })
}
