//! `sluice up`: the whole platform in one process on embedded parts: the
//! Config and workload APIs, the launcher (local executor), the scheduler
//! (cron ticker and retries) and the monitor, over one SQLite file, a
//! secrets directory and log files under the data directory.

mod ticker;
mod webhooks;

use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use jiff::{SignedDuration, Timestamp};
use serde_json::json;
use sluice_api::{App, Keys, Settings};
use sluice_domain::WorkloadStatus;
use sluice_launcher::docker::{DockerExecutor, DockerSettings};
use sluice_launcher::local::LocalExecutor;
use sluice_store::DocKind;
use sluice_store_sqlite::{FileLogs, FileSecrets, SqliteStore};

#[derive(clap::Args)]
pub struct UpArgs {
    /// Where everything is kept: the database, secrets, logs, credentials
    #[arg(long, default_value = ".sluice")]
    data_dir: PathBuf,
    /// The address the API listens on
    #[arg(long, default_value = "127.0.0.1:8000")]
    listen: SocketAddr,
    /// Seconds between a task's heartbeats
    #[arg(long, default_value_t = 10)]
    heartbeat_secs: u64,
    /// Seconds between monitor sweeps (Airbyte's is a minute)
    #[arg(long, default_value_t = 60)]
    monitor_secs: u64,
    /// Days to keep attempt logs and finished workloads
    #[arg(long, default_value_t = 30)]
    retention_days: u64,
    /// The first retry's backoff in seconds (then x3 each time, up to 30 minutes)
    #[arg(long, default_value_t = 10)]
    retry_backoff_secs: u64,
    /// Seconds a running task may go without a heartbeat before the monitor fails it
    #[arg(long, default_value_t = 600)]
    heartbeat_timeout_secs: u64,
    /// Seconds an access token lives
    #[arg(long, default_value_t = 900)]
    token_ttl_secs: u64,
    /// The Docker engine's socket, for connectors published only as images
    /// and `--executor docker` [default: DOCKER_HOST's unix:// path, else /var/run/docker.sock]
    #[arg(long)]
    docker_socket: Option<PathBuf>,
    /// Each task container's CPU limit, in CPUs (Airbyte's JOB_MAIN_CONTAINER_CPU_LIMIT)
    #[arg(long, default_value_t = 1.0)]
    container_cpus: f64,
    /// Each task container's memory limit in MiB (Airbyte's JOB_MAIN_CONTAINER_MEMORY_LIMIT)
    #[arg(long, default_value_t = 2048)]
    container_memory_mib: u32,
    /// A directory of this machine that connector containers see as
    /// `/local` (Airbyte's LOCAL_ROOT): files sources read, destinations write
    #[arg(long)]
    docker_local_root: Option<PathBuf>,
    /// Seconds one Docker Engine API request may take before the task is failed
    #[arg(long, default_value_t = 60)]
    docker_timeout_secs: u64,
    /// The image with the orchestrator, for tasks run with Docker
    #[arg(long, default_value = concat!("sluice/orchestrator:", env!("CARGO_PKG_VERSION")))]
    orchestrator_image: String,
    /// The largest request body accepted, in bytes
    #[arg(long, default_value_t = 2 * 1024 * 1024)]
    max_body_bytes: usize,
    /// At most this many jobs run at once; more wait, pending, and start
    /// oldest first as others end (Airbyte's MAX_SYNC_WORKERS) [default: no limit]
    #[arg(long, env = "SLUICE_MAX_RUNNING_JOBS", value_parser = clap::value_parser!(u32).range(1..))]
    max_running_jobs: Option<u32>,
    /// Let connectors run custom Python code: the components of low-code
    /// manifests (Airbyte's AIRBYTE_ENABLE_UNSAFE_CODE)
    #[arg(long, env = "SLUICE_ENABLE_UNSAFE_CODE")]
    enable_unsafe_code: bool,
    /// Seconds a connection's schema check stays fresh: a sync after that
    /// discovers the source again and applies the connection's
    /// nonBreakingSchemaUpdatesBehavior (Airbyte's default: 24 hours)
    #[arg(long, default_value_t = 24 * 3600)]
    schema_refresh_secs: u64,
    /// Keep everything on AWS (DynamoDB, SQS, Secrets Manager, EventBridge)
    /// instead of the data directory; the endpoint comes from AWS_ENDPOINT_URL
    /// (moto, LocalStack) or the usual AWS settings. Run `sluice provision` first.
    #[arg(long)]
    aws: bool,
    #[command(flatten)]
    aws_names: AwsArgs,
    /// Where tasks run: `local` processes (Docker only for connectors that
    /// exist only as images), `docker` containers for every task (our
    /// reference connectors as their images), or `ecs` tasks on Fargate (with --aws)
    #[arg(long, default_value = "local")]
    executor: Executor,
    #[command(flatten)]
    ecs: EcsArgs,
}

#[derive(clap::ValueEnum, Clone, Copy, PartialEq, Eq)]
enum Executor {
    Local,
    Docker,
    Ecs,
}

/// Where ECS tasks run.
#[derive(clap::Args, Clone)]
struct EcsArgs {
    /// Subnets of the tasks (comma-separated)
    #[arg(long, value_delimiter = ',')]
    ecs_subnets: Vec<String>,
    /// Security groups of the tasks (comma-separated)
    #[arg(long, value_delimiter = ',')]
    ecs_security_groups: Vec<String>,
    #[arg(long, default_value = "arn:aws:iam::000000000000:role/sluice-task-execution")]
    ecs_execution_role_arn: String,
    #[arg(long, default_value = "arn:aws:iam::000000000000:role/sluice-task")]
    ecs_task_role_arn: String,
    /// The workload API as tasks reach it (default: this server's)
    #[arg(long)]
    task_api_url: Option<String>,
}

/// Which AWS resources are ours.
#[derive(clap::Args, Clone)]
pub struct AwsArgs {
    /// The prefix of every table, queue, bus, schedule group and secret
    #[arg(long, default_value = "sluice")]
    pub prefix: String,
    /// The function EventBridge Scheduler invokes for a connection's schedule
    #[arg(long)]
    pub scheduler_function_arn: Option<String>,
    /// The role EventBridge Scheduler assumes to invoke it
    #[arg(long)]
    pub scheduler_role_arn: Option<String>,
}

impl AwsArgs {
    pub fn names(&self) -> sluice_store_aws::Names {
        sluice_store_aws::Names::with_prefix(&self.prefix)
    }

    fn target(&self) -> sluice_store_aws::ScheduleTarget {
        let region = std::env::var("AWS_REGION").unwrap_or_else(|_| "us-east-1".into());
        sluice_store_aws::ScheduleTarget {
            function_arn: self
                .scheduler_function_arn
                .clone()
                .unwrap_or_else(|| format!("arn:aws:lambda:{region}:000000000000:function:{}-scheduler", self.prefix)),
            role_arn: self.scheduler_role_arn.clone().unwrap_or_else(|| format!("arn:aws:iam::000000000000:role/{}-scheduler-invoke", self.prefix)),
        }
    }
}

#[derive(clap::Args)]
pub struct ProvisionArgs {
    #[command(flatten)]
    aws: AwsArgs,
    /// If the platform has no application yet, create one and write its
    /// client id and secret to this file (0600), for the CLI and SDKs
    #[arg(long)]
    credentials_file: Option<PathBuf>,
    /// The Config API's URL, written into the credentials file
    #[arg(long)]
    api_url: Option<String>,
    /// Make no ECS cluster: for LocalStack's community edition, which has no
    /// ECS; syncs then run with `sluice up --aws` and its local executor
    #[arg(long)]
    no_ecs: bool,
}

/// `sluice provision`: creates (or finds) every AWS resource the platform
/// needs, and with `--credentials-file` the first application.
pub fn provision(args: ProvisionArgs) -> anyhow::Result<i32> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let config = sluice_store_aws::sdk_config().await;
        use sluice_store_aws::provision::{provision_with, WithEcs};
        let ecs = if args.no_ecs { WithEcs::NoCluster } else { WithEcs::Cluster };
        let done = provision_with(&config, &args.aws.names(), ecs).await.context("provisioning failed; check AWS_ENDPOINT_URL, AWS_REGION and the credentials")?;
        // The built-in definitions, here rather than at each cold start of the Config API.
        let app = sluice_lambda::app_for(&config, &args.aws.prefix).await?;
        let seeded = sluice_api::config::builtin::seed(&app).await?;
        if seeded > 0 {
            println!("seeded  {seeded} built-in connector definitions");
        }
        if let Some(path) = &args.credentials_file {
            match write_first_application(&app, path, args.api_url.as_deref()).await? {
                true => println!("application credentials in {}", path.display()),
                false => println!("exists  an application (no credentials written)"),
            }
        }
        for created in &done.created {
            println!("created {created}");
        }
        for existing in &done.existing {
            println!("exists  {existing}");
        }
        println!("queue   {}", done.queue_url);
        Ok(0)
    })
}

/// The ports a platform runs on: one SQLite file and directories, or AWS.
struct Parts {
    config: Arc<dyn sluice_store::ConfigStore>,
    jobs: Arc<dyn sluice_store::JobStore>,
    workloads: Arc<dyn sluice_store::WorkloadStore>,
    queue: Arc<dyn sluice_store::WorkloadQueue>,
    secrets: Arc<dyn sluice_store::SecretStore>,
    schedules: Arc<dyn sluice_store::Schedules>,
    events: Arc<dyn sluice_store::Events>,
    launch_key: Option<String>,
}

/// One `sluice up` per data directory (two would launch each other's
/// work), and a data directory it can write: said plainly at start instead
/// of as a database error. The lock lives as long as the process.
fn one_platform_per(data: &Path) -> anyhow::Result<sluice_orchestrator::fence::Fence> {
    let path = data.join("sluice-up.lock");
    let fence = sluice_orchestrator::fence::try_take(&path).map_err(|e| {
        let read_only = e.raw_os_error() == Some(libc::EROFS) || e.kind() == std::io::ErrorKind::PermissionDenied;
        if read_only {
            anyhow::anyhow!("the data directory {} is read-only ({e}); make it writable, or choose another with --data-dir", data.display())
        } else {
            anyhow::anyhow!("cannot write in the data directory {}: {e}", data.display())
        }
    })?;
    let Some(fence) = fence else {
        let holder = std::fs::read_to_string(&path).unwrap_or_default();
        bail!(
            "another `sluice up` (pid {}) is running on the data directory {}; stop it first, or choose another with --data-dir",
            holder.trim(),
            data.display()
        );
    };
    std::fs::write(&path, std::process::id().to_string()).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(fence)
}

async fn embedded_parts(data: &Path, ticker: &ticker::Ticker) -> anyhow::Result<Parts> {
    let store = Arc::new(SqliteStore::open(&data.join("sluice.db")).context("cannot open the database")?);
    let secrets = Arc::new(FileSecrets::open(data.join("secrets")).context("cannot open the secrets directory")?);
    Ok(Parts {
        config: store.clone(),
        jobs: store.clone(),
        workloads: store.clone(),
        queue: store.clone(),
        secrets,
        schedules: Arc::new(ticker.clone()),
        events: Arc::new(webhooks::Webhooks::new(store)),
        launch_key: None,
    })
}

async fn aws_parts(args: &AwsArgs) -> anyhow::Result<Parts> {
    let config = sluice_store_aws::sdk_config().await;
    let names = args.names();
    let queue_url = sluice_store_aws::SqsQueue::url_of(&config, &names.queue)
        .await
        .with_context(|| format!("cannot find the queue {}; run `sluice provision --prefix {}` first", names.queue, args.prefix))?;
    let store = Arc::new(sluice_store_aws::DynamoStore::new(&config, names.clone()));
    let secrets = sluice_store_aws::SecretsManagerStore::new(&config, &names.secrets_prefix);
    let launch_key = sluice_store::SecretStore::get_secret(&secrets, &sluice_store_aws::provision::launch_key_name(&names.secrets_prefix)).await.ok();
    Ok(Parts {
        config: store.clone(),
        jobs: store.clone(),
        workloads: store,
        queue: Arc::new(sluice_store_aws::SqsQueue::new(&config, queue_url)),
        secrets: Arc::new(secrets),
        schedules: Arc::new(sluice_store_aws::EventBridgeSchedules::new(&config, &names.schedule_group, args.target())),
        events: Arc::new(sluice_store_aws::EventBridgeEvents::new(&config, &names.event_bus)),
        launch_key,
    })
}

/// The file with the first application's credentials, which the CLI reads.
pub const CREDENTIALS_FILE: &str = "credentials.json";

pub fn run(args: UpArgs) -> anyhow::Result<i32> {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().context("cannot start the async runtime")?;
    runtime.block_on(serve(args))
}

async fn serve(args: UpArgs) -> anyhow::Result<i32> {
    let started = std::time::Instant::now();
    let data = &args.data_dir;
    std::fs::create_dir_all(data).with_context(|| format!("cannot create the data directory {}", data.display()))?;
    let data = std::fs::canonicalize(data)?;
    // On AWS the queue's claims keep launchers apart; here only the lock does.
    let _only_one = if args.aws { None } else { Some(one_platform_per(&data)?) };
    let logs_dir = data.join("logs");
    let ticker = ticker::Ticker::default();
    let parts = if args.aws { aws_parts(&args.aws_names).await? } else { embedded_parts(&data, &ticker).await? };
    let listener = tokio::net::TcpListener::bind(args.listen).await.with_context(|| {
        format!("cannot listen on {}; is another `sluice up` running? Choose another address with --listen", args.listen)
    })?;
    let address = listener.local_addr()?;

    let key = sluice_api::auth::signing_key(&*parts.config, &*parts.secrets).await?;
    let mut settings = Settings::default();
    settings.retry.backoff_initial = SignedDuration::from_secs(args.retry_backoff_secs as i64);
    settings.deadlines.heartbeat = SignedDuration::from_secs(args.heartbeat_timeout_secs as i64);
    settings.token_ttl = Duration::from_secs(args.token_ttl_secs);
    settings.max_body_bytes = args.max_body_bytes;
    settings.max_running_jobs = args.max_running_jobs.map(|n| n as usize);
    settings.custom_code = args.enable_unsafe_code;
    settings.schema_refresh = Duration::from_secs(args.schema_refresh_secs);
    if !(args.container_cpus > 0.0 && args.container_cpus <= 64.0) || args.container_memory_mib < 6 {
        bail!("--container-cpus must be above 0 and at most 64, and --container-memory-mib at least 6 (Docker's floor)");
    }
    settings.container_cpu_millis = (args.container_cpus * 1000.0).round() as u32;
    settings.container_memory_mib = args.container_memory_mib;
    let app = Arc::new(App {
        config: parts.config,
        jobs: parts.jobs,
        workloads: parts.workloads,
        queue: parts.queue,
        secrets: parts.secrets,
        logs: Arc::new(FileLogs::new(logs_dir.clone())),
        schedules: parts.schedules,
        events: parts.events,
        keys: Keys::new(key.into_bytes()),
        settings,
        work_queued: Arc::new(tokio::sync::Notify::new()),
        launch_key: parts.launch_key,
    });
    sluice_api::config::builtin::seed(&app).await?;
    let credentials = first_application(&app, &data, address).await?;
    // On AWS, EventBridge Scheduler fires the schedules (it invokes the scheduler function).
    let scheduled = if args.aws { 0 } else { ticker.load(&app).await? };
    let recovered = recover(&app).await?;

    let launcher_id = format!("local-{}-{}", std::process::id(), Timestamp::now().as_second());
    let executor = Arc::new(LocalExecutor {
        sluice: std::env::current_exe().context("cannot find the sluice binary")?,
        cache: sluice_connectors::Cache::from_env(),
        work_root: data.join("tasks"),
        logs: FileLogs::new(logs_dir),
        heartbeat_secs: args.heartbeat_secs,
        stop_grace: Duration::from_secs(30),
    });
    let socket = args.docker_socket.clone().unwrap_or_else(sluice_launcher::docker::default_socket);
    let mut docker_settings = DockerSettings::new(args.orchestrator_image.clone(), reference_images());
    docker_settings.call_timeout = Duration::from_secs(args.docker_timeout_secs);
    if let Some(root) = &args.docker_local_root {
        let root = std::fs::canonicalize(root).with_context(|| format!("--docker-local-root {}: no such directory", root.display()))?;
        docker_settings.local_root = Some(root);
    }
    let docker = Arc::new(DockerExecutor::new(socket, docker_settings));
    let all_in_docker = args.executor == Executor::Docker;
    let api_url = format!("http://{address}/api/internal/v1");
    let ecs = match args.executor {
        Executor::Local | Executor::Docker => None,
        Executor::Ecs if !args.aws => bail!("--executor ecs runs tasks on AWS: add --aws"),
        Executor::Ecs => Some(Arc::new(ecs_launcher(&args, &api_url).await?)),
    };
    let ecs_tasks = ecs.as_ref().map(|e| e.tasks.clone());
    tokio::spawn(launch_loop(app.clone(), executor, docker, all_in_docker, ecs, launcher_id, api_url));
    if !args.aws {
        tokio::spawn(ticker.run(app.clone()));
    }
    tokio::spawn(scheduler_loop(app.clone()));
    tokio::spawn(learn_specs(app.clone()));
    tokio::spawn(monitor_loop(app.clone(), ecs_tasks, Duration::from_secs(args.monitor_secs), args.retention_days));

    let kept = if args.aws { format!("state on AWS under the prefix `{}`", args.aws_names.prefix) } else { format!("data in {}", data.display()) };
    let web = if sluice_ui::built() { format!("the web app at http://{address}/") } else { "no web app: this binary was built before ui/".to_owned() };
    sluice_protocol::say!("sluice: listening on http://{address} (Config API at /api/public/v1; {web}), {kept}");
    if let Some(path) = credentials {
        sluice_protocol::say!("sluice: created an application; its client id and secret are in {}", path.display());
    }
    sluice_protocol::say!("sluice: {scheduled} cron schedule(s); recovered {recovered} workload(s); ready in {} ms", started.elapsed().as_millis());
    axum::serve(listener, sluice_api::router(app)).with_graceful_shutdown(shutdown_signal()).await.context("the API server failed")?;
    sluice_protocol::say!("sluice: stopped");
    Ok(0)
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("can handle SIGTERM");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// At first start, an application for the CLI, its credentials in a 0600 file.
async fn first_application(app: &App, data: &Path, address: SocketAddr) -> anyhow::Result<Option<PathBuf>> {
    let path = data.join(CREDENTIALS_FILE);
    let written = write_first_application(app, &path, Some(&format!("http://{address}/api/public/v1"))).await?;
    Ok(written.then_some(path))
}

/// Creates the platform's first application, if it has none, and writes
/// its credentials to `path` (0600). Whether it did.
async fn write_first_application(app: &App, path: &Path, api_url: Option<&str>) -> anyhow::Result<bool> {
    if !app.config.list_docs(DocKind::Application, &[], 1, 0).await?.is_empty() {
        return Ok(false);
    }
    let (application, secret) = sluice_api::config::new_application(app, "sluice-cli").await?;
    let mut body = json!({"client_id": application.client_id, "client_secret": secret});
    if let Some(url) = api_url {
        body["api_url"] = json!(url);
    }
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new().create(true).truncate(true).write(true).mode(0o600).open(path)?;
    file.write_all(serde_json::to_string_pretty(&body)?.as_bytes())?;
    Ok(true)
}

/// After a stop of any kind: workloads that were running died with us, so
/// they fail (and their attempts retry); pending ones are queued again.
async fn recover(app: &App) -> anyhow::Result<usize> {
    let now = Timestamp::now();
    let active = app.workloads.overdue_workloads(Timestamp::MAX).await?;
    for w in &active {
        if w.status == WorkloadStatus::Pending {
            app.queue.enqueue(&w.id, now).await?;
        } else {
            sluice_launcher::fail_launch(app, w, "its task stopped when `sluice up` stopped").await?;
        }
    }
    Ok(active.len())
}

/// Our reference connectors' images, as `task-images/` builds and tags them.
fn reference_images() -> std::collections::BTreeMap<String, String> {
    let mut images: std::collections::BTreeMap<String, String> =
        sluice_connectors::REFERENCE_CONNECTORS.iter().map(|n| (n.to_string(), format!("sluice/{n}:{}", env!("CARGO_PKG_VERSION")))).collect();
    images.insert(sluice_connectors::MANIFEST.into(), sluice_launcher::plan::manifest_runner_image());
    images
}

async fn ecs_launcher(args: &UpArgs, api_url: &str) -> anyhow::Result<sluice_lambda::EcsLauncher> {
    let config = sluice_store_aws::sdk_config().await;
    let names = args.aws_names.names();
    let launch_key_secret_arn = sluice_store_aws::provision::launch_key_arn(&config, &names)
        .await
        .with_context(|| format!("cannot find the launch key; run `sluice provision --prefix {}` first", args.aws_names.prefix))?;
    let settings = sluice_launcher::ecs::EcsSettings {
        orchestrator_image: args.orchestrator_image.clone(),
        reference_images: reference_images(),
        family_prefix: args.aws_names.prefix.clone(),
        log_group: names.task_log_group.clone(),
        region: std::env::var("AWS_REGION").unwrap_or_else(|_| "us-east-1".into()),
        launch_key_secret_arn,
        // `sluice up` serves the workload API itself, without API Gateway in front.
        workload_api_iam: false,
    };
    let placement = sluice_store_aws::EcsPlacement {
        cluster: names.cluster.clone(),
        subnets: args.ecs.ecs_subnets.clone(),
        security_groups: args.ecs.ecs_security_groups.clone(),
        execution_role_arn: args.ecs.ecs_execution_role_arn.clone(),
        task_role_arn: args.ecs.ecs_task_role_arn.clone(),
        assign_public_ip: false,
    };
    Ok(sluice_lambda::EcsLauncher {
        tasks: sluice_store_aws::EcsTasks::new(&config, placement),
        settings,
        api_url: args.ecs.task_api_url.clone().unwrap_or_else(|| api_url.to_owned()),
    })
}

async fn launch_loop(
    app: Arc<App>,
    executor: Arc<LocalExecutor>,
    docker: Arc<DockerExecutor>,
    all_in_docker: bool,
    ecs: Option<Arc<sluice_lambda::EcsLauncher>>,
    launcher_id: String,
    api_url: String,
) {
    loop {
        match sluice_launcher::claim_next(&app, &launcher_id).await {
            Ok(Some(Some(w))) if w.kind == sluice_domain::WorkloadType::Sync && ecs.is_some() => {
                let (app, ecs) = (app.clone(), ecs.clone().expect("checked"));
                tokio::spawn(async move {
                    if let Err(e) = ecs.launch(&app, &w).await {
                        sluice_protocol::say!("sluice: could not launch {} on ECS: {e}", w.id);
                    }
                });
            }
            Ok(Some(Some(w))) => {
                let (app, executor, docker, api_url) = (app.clone(), executor.clone(), docker.clone(), api_url.clone());
                tokio::spawn(async move { sluice_launcher::local::run_claimed(&executor, &docker, all_in_docker, &app, w, &api_url).await });
            }
            Ok(Some(None)) => {}
            Ok(None) => {
                let _ = tokio::time::timeout(Duration::from_secs(1), app.work_queued.notified()).await;
            }
            Err(e) => {
                sluice_protocol::say!("sluice: launcher: {e}");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// Starts attempts whose backoff is over, and jobs nobody started.
async fn scheduler_loop(app: Arc<App>) {
    loop {
        match sluice_platform::start_due_attempts(&app.ports(), Timestamp::now()).await {
            Ok(started) if !started.is_empty() => app.work_queued.notify_one(),
            Ok(_) => {}
            Err(e) => sluice_protocol::say!("sluice: scheduler: {e}"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// `ecs`: the cluster of `--executor ecs`, whose tasks are reconciled with
/// their workloads as the monitor function does.
async fn monitor_loop(app: Arc<App>, ecs: Option<sluice_store_aws::EcsTasks>, every: Duration, retention_days: u64) {
    loop {
        tokio::time::sleep(every).await;
        match sluice_platform::monitor_sweep(&app.ports(), &app.settings.retry, Timestamp::now()).await {
            Ok(failed) if !failed.is_empty() => {
                sluice_protocol::say!("sluice: monitor failed {} workload(s) past their deadline: {}", failed.len(), failed.join(", "));
                app.work_queued.notify_one();
            }
            Ok(_) => {}
            Err(e) => sluice_protocol::say!("sluice: monitor: {e}"),
        }
        if let Some(tasks) = &ecs {
            if let Err(e) = sluice_lambda::stop_tasks_of_ended_workloads(&app, tasks).await {
                sluice_protocol::say!("sluice: monitor: stopping the tasks of ended workloads: {e}");
            }
            match sluice_lambda::fail_workloads_of_stopped_tasks(&app, tasks).await {
                Ok(lost) if !lost.is_empty() => {
                    sluice_protocol::say!("sluice: monitor failed {} workload(s) whose ECS task stopped: {}", lost.len(), lost.join(", "));
                    app.work_queued.notify_one();
                }
                Ok(_) => {}
                Err(e) => sluice_protocol::say!("sluice: monitor: {e}"),
            }
        }
        let cutoff = Timestamp::now() - SignedDuration::from_hours(24 * retention_days as i64);
        if let Err(e) = app.logs.delete_older_than(cutoff).await {
            sluice_protocol::say!("sluice: monitor: cleaning logs: {e}");
        }
        if let Err(e) = app.workloads.purge_finished_workloads(cutoff).await {
            sluice_protocol::say!("sluice: monitor: cleaning finished workloads: {e}");
        }
    }
}

/// Learns the specs of definitions that have none yet, in the background,
/// so that the first source created from them does not wait for a connector
/// to install and start.
async fn learn_specs(app: Arc<App>) {
    let Ok(docs) = app.config.list_docs(DocKind::Definition, &[], 10_000, 0).await else { return };
    for doc in docs {
        let Ok(definition) = serde_json::from_value::<sluice_domain::resources::Definition>(doc.body) else { continue };
        if definition.connection_specification.is_none() && definition.workspace_id.is_none() {
            if let Err(p) = sluice_api::config::connectors::spec(&app, &definition).await {
                sluice_protocol::say!("sluice: could not learn the spec of {}: {}", definition.name, p.detail);
            }
        }
    }
}
