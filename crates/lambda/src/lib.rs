//! What Sluice's Lambda functions share. Each function in `functions/` is
//! a `main` that builds the platform once per container ([`app_from_env`],
//! outside the handler) and hands events to a handler here or to the API's
//! router. [`runtime_api`] serves the Lambda Runtime API on 127.0.0.1, so
//! the real function binaries run (and are tested) on one machine.

pub mod runtime_api;

use std::sync::Arc;

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

/// The platform on its AWS adapters, named by `SLUICE_PREFIX` (default
/// `sluice`), the queue by `SLUICE_QUEUE_URL` (else looked up by name), the
/// schedules' target by `SLUICE_SCHEDULER_FUNCTION_ARN` and
/// `SLUICE_SCHEDULER_ROLE_ARN`.
pub async fn app_from_env() -> Result<Arc<App>, Error> {
    let config = sluice_store_aws::sdk_config().await;
    let prefix = var("SLUICE_PREFIX").unwrap_or_else(|| "sluice".into());
    app_for(&config, &prefix).await
}

/// The platform on the AWS resources named by `prefix`.
pub async fn app_for(config: &aws_config::SdkConfig, prefix: &str) -> Result<Arc<App>, Error> {
    let config = config.clone();
    let names = Names::with_prefix(prefix);
    let queue_url = match var("SLUICE_QUEUE_URL") {
        Some(url) => url,
        None => SqsQueue::url_of(&config, &names.queue).await.map_err(|e| Error(format!("cannot find the workload queue {}: {e}", names.queue)))?,
    };
    let target = ScheduleTarget {
        function_arn: var("SLUICE_SCHEDULER_FUNCTION_ARN").unwrap_or_default(),
        role_arn: var("SLUICE_SCHEDULER_ROLE_ARN").unwrap_or_default(),
    };
    let store = Arc::new(DynamoStore::new(&config, names.clone()));
    let secrets = Arc::new(SecretsManagerStore::new(&config, &names.secrets_prefix));
    let key = sluice_api::auth::signing_key(&*store, &*secrets).await.map_err(|e| Error(format!("cannot read the signing key: {e}")))?;
    let launch_key = sluice_store::SecretStore::get_secret(&*secrets, &sluice_store_aws::provision::launch_key_name(&names.secrets_prefix)).await.ok();
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
/// (their attempts retry), starts retries that are due, and drops finished
/// workloads past the retention where no TTL does it.
pub async fn monitor(app: &App, retention: jiff::SignedDuration) -> Result<Value, Error> {
    let now = jiff::Timestamp::now();
    let failed = sluice_platform::monitor_sweep(&app.ports(), &app.settings.retry, now).await.map_err(|e| Error(e.to_string()))?;
    let retried = sluice_platform::start_due_attempts(&app.ports(), now).await.map_err(|e| Error(e.to_string()))?;
    let purged = app.workloads.purge_finished_workloads(now - retention).await.map_err(|e| Error(e.to_string()))?;
    Ok(json!({"failed": failed, "retried": retried.iter().map(|j| j.id).collect::<Vec<_>>(), "purged": purged}))
}

/// Runs sync workloads as ECS tasks: the plan becomes a task definition
/// (registered once) and a RunTask; the task's files wait in the secrets
/// port for its init step.
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

/// The launcher function, on an SQS batch (`{"Records": [{"messageId",
/// "body": <workload id>}, ...]}`): claims each workload (a conditional
/// write, so a redelivered message launches nothing twice) and launches it
/// on ECS. Returns the partial batch response: only messages that hit a
/// transient failure (the store or ECS unavailable) are retried; a workload
/// that cannot be launched is failed, and its message is done.
pub async fn launcher(app: &App, ecs: &EcsLauncher, event: &Value) -> Value {
    let mut retry = Vec::new();
    for record in event["Records"].as_array().into_iter().flatten() {
        let (Some(message_id), Some(workload_id)) = (record["messageId"].as_str(), record["body"].as_str()) else { continue };
        let by = format!("lambda/{message_id}");
        match sluice_launcher::claim(app, workload_id.trim(), &by).await {
            Ok(Some(w)) if w.kind == sluice_domain::WorkloadType::Sync => {
                if let Err(e) = ecs.launch(app, &w).await {
                    eprintln!("sluice: workload {} failed to launch: {e}", w.id);
                }
            }
            Ok(Some(w)) => {
                let why = format!("{} workloads run with `sluice up`; the ECS launcher runs syncs", w.kind.as_str());
                if sluice_launcher::fail_launch(app, &w, &why).await.is_err() {
                    retry.push(json!({"itemIdentifier": message_id}));
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
/// `SLUICE_WORKLOAD_API_URL` (as tasks reach it), `SLUICE_REFERENCE_IMAGE_PREFIX`.
pub async fn ecs_launcher_from_env() -> Result<EcsLauncher, Error> {
    let config = sluice_store_aws::sdk_config().await;
    let prefix = var("SLUICE_PREFIX").unwrap_or_else(|| "sluice".into());
    let names = Names::with_prefix(&prefix);
    let need = |name: &str| var(name).ok_or_else(|| Error(format!("the launcher needs {name}")));
    let list = |name: &str| -> Result<Vec<String>, Error> { Ok(need(name)?.split(',').map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()).collect()) };
    let version = env!("CARGO_PKG_VERSION");
    let image_prefix = var("SLUICE_REFERENCE_IMAGE_PREFIX").unwrap_or_else(|| "sluice/".into());
    let settings = sluice_launcher::ecs::EcsSettings {
        orchestrator_image: var("SLUICE_ORCHESTRATOR_IMAGE").unwrap_or_else(|| format!("{image_prefix}orchestrator:{version}")),
        reference_images: ["source-faker", "destination-jsonl", "destination-dev-null", "source-empty"].iter().map(|n| (n.to_string(), format!("{image_prefix}{n}:{version}"))).collect(),
        family_prefix: prefix.clone(),
        log_group: names.task_log_group.clone(),
        region: var("AWS_REGION").unwrap_or_else(|| "us-east-1".into()),
        launch_key_secret_arn: sluice_store_aws::provision::launch_key_arn(&config, &names).await.map_err(|e| Error(format!("cannot find the launch key: {e}")))?,
    };
    let placement = sluice_store_aws::EcsPlacement {
        cluster: names.cluster.clone(),
        subnets: list("SLUICE_TASK_SUBNETS")?,
        security_groups: list("SLUICE_TASK_SECURITY_GROUPS")?,
        execution_role_arn: need("SLUICE_TASK_EXECUTION_ROLE_ARN")?,
        task_role_arn: need("SLUICE_TASK_ROLE_ARN")?,
        assign_public_ip: var("SLUICE_TASK_PUBLIC_IP").is_some_and(|v| v == "true"),
    };
    Ok(EcsLauncher { tasks: sluice_store_aws::EcsTasks::new(&config, placement), settings, api_url: need("SLUICE_WORKLOAD_API_URL")? })
}
