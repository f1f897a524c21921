//! The local executor: a plan's task as processes on this machine, sharing
//! a private directory. A sync runs the orchestrator (`sluice orchestrate`),
//! which starts both connectors and reports to the workload API over HTTP
//! like any task; spec, check and discover run the connector directly.

use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::{json, Value};
use sluice_api::App;
use sluice_connectors::{Cache, ConnectorRef};
use sluice_domain::{Workload, WorkloadEvent, WorkloadType};
use sluice_orchestrator::Launch;
use sluice_platform::workload_event;

use crate::plan::{files, Container, Runtime, TaskPlan};
use crate::{fail_launch, LaunchError};

pub struct LocalExecutor {
    /// The binary that carries the reference connectors and the orchestrator.
    pub sluice: PathBuf,
    pub cache: Cache,
    /// Each task's private directory is made under this one, and removed after.
    pub work_root: PathBuf,
    /// Attempt logs: the orchestrator's stderr goes to `<logs>/<job>/<attempt>.log`.
    pub logs: sluice_store_sqlite::FileLogs,
    pub heartbeat_secs: u64,
    /// How long a stopped task gets between SIGTERM and SIGKILL.
    pub stop_grace: Duration,
}

/// How long a new attempt waits for an earlier one's processes to exit:
/// they were told to stop, and get a grace period before SIGKILL.
const FENCE_PATIENCE: Duration = Duration::from_secs(120);

fn launch_error(what: &str) -> impl Fn(std::io::Error) -> LaunchError + '_ {
    move |e| LaunchError(format!("{what}: {e}"))
}

/// A socket-mode task's sockets: short, so that every path fits a Unix
/// socket address (the work root may be deep); the bookkeeper makes it 0700.
fn socket_dir(plan: &TaskPlan) -> PathBuf {
    std::env::temp_dir().join(format!("sluice-{}", crate::ecs::fingerprint(&plan.workload_id)))
}

/// Writes a file only its owner can read: configs hold secrets.
fn write_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new().create(true).truncate(true).write(true).mode(0o600).open(path)?;
    file.write_all(contents)
}

impl LocalExecutor {
    /// The command that runs a connector here, installing it if needed.
    async fn command(&self, container: &Container) -> Result<Vec<String>, LaunchError> {
        let reference = match &container.runtime {
            Runtime::Image(image) => {
                return Err(LaunchError(format!(
                    "{} exists only as the image {image}, which the local executor cannot run; use a definition with a PyPI package or an executable, or the Docker executor",
                    container.name
                )))
            }
            Runtime::Reference(name) => name.clone(),
            Runtime::Pypi(spec) => spec.clone(),
            Runtime::Executable(path) => path.clone(),
            Runtime::Manifest => sluice_connectors::MANIFEST.to_owned(),
        };
        let connector: ConnectorRef = reference.parse().map_err(|e: sluice_connectors::Error| LaunchError(e.to_string()))?;
        let (sluice, cache) = (self.sluice.clone(), self.cache.clone());
        tokio::task::spawn_blocking(move || connector.command(&sluice, &cache, &mut |_| {}))
            .await
            .map_err(|e| LaunchError(format!("installing {}: {e}", container.name)))?
            .map_err(|e| LaunchError(e.to_string()))
    }

    /// Runs the plan to its end. Errors are launch failures; the caller
    /// fails the workload with them.
    pub async fn run(&self, app: &App, w: &Workload, plan: &TaskPlan) -> Result<(), LaunchError> {
        let dir = self.work_root.join(&plan.workload_id);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(&dir).map_err(launch_error("cannot create the task directory"))?;
        let result = match plan.kind {
            WorkloadType::Sync => self.run_sync(app, w, plan, &dir).await,
            _ => self.run_connector_command(app, w, plan, &dir).await,
        };
        let _ = std::fs::remove_dir_all(&dir);
        if plan.data_channel.is_some() {
            let _ = std::fs::remove_dir_all(socket_dir(plan));
        }
        result
    }

    async fn run_sync(&self, app: &App, w: &Workload, plan: &TaskPlan, dir: &Path) -> Result<(), LaunchError> {
        let (source, destination) = match (&plan.source, &plan.destination) {
            (Some(s), Some(d)) => (s, d),
            _ => return Err(LaunchError("a sync plan needs a source and a destination".into())),
        };
        let source_launch = Launch::Spawn { command: self.command(source).await?, env: source.env.clone() };
        let destination_launch = Launch::Spawn { command: self.command(destination).await?, env: destination.env.clone() };
        let config = plan.sync_config(source_launch, destination_launch, dir.join("files"), &socket_dir(plan))?;
        let config_path = dir.join("sync.json");
        write_private(&config_path, &serde_json::to_vec(&config).expect("plain data")).map_err(launch_error("cannot write sync.json"))?;

        let (job_id, attempt) = w.job_attempt().ok_or_else(|| LaunchError(format!("sync workload {} names no job", w.id)))?;
        let log_path = self.logs.path(job_id, attempt);
        std::fs::create_dir_all(log_path.parent().expect("has a parent")).map_err(launch_error("cannot create the log directory"))?;
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&log_path).map_err(launch_error("cannot open the attempt log"))?;
        let fence = self.fence(w, &log).await?;

        let mut command = tokio::process::Command::new(&self.sluice);
        command
            .arg("orchestrate")
            .arg("--config")
            .arg(&config_path)
            .arg("--outcome-file")
            .arg(dir.join("outcome.json"))
            .arg("--workload-api")
            .arg(&plan.workload_api_url)
            .arg("--workload-id")
            .arg(&plan.workload_id)
            .env("SLUICE_WORKLOAD_TOKEN", &plan.credential)
            .env("SLUICE_HEARTBEAT_SECS", self.heartbeat_secs.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(false);
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            let fence = fence.raw_fd();
            command.pre_exec(move || {
                // Its own process group, so a stop reaches it and nothing else;
                // and it is told to stop if we die, so no task outlives `sluice up`.
                libc::setpgid(0, 0);
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                // It and its connectors hold the connection's fence until the last exits.
                sluice_orchestrator::fence::inherit_in_child(fence)
            });
        }
        let spawned = command.spawn().map_err(launch_error("cannot start the orchestrator"));
        drop(fence);
        let mut child = spawned?;
        let pid = child.id().unwrap_or(0) as i32;
        let launched = WorkloadEvent::Launched { task_ref: Some(format!("local:{pid}")) };
        if let Err(e) = workload_event(&app.ports(), &w.id, &launched, jiff::Timestamp::now()).await {
            unsafe { libc::kill(-pid, libc::SIGKILL) };
            let _ = child.wait().await;
            return Err(LaunchError(format!("cannot mark the workload launched: {e}")));
        }

        // Wait for it, stopping it if its workload ends meanwhile (a cancel,
        // or the monitor failing it).
        let mut stop_sent: Option<tokio::time::Instant> = None;
        let status = loop {
            tokio::select! {
                status = child.wait() => break status,
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
            match stop_sent {
                None => {
                    let ended = app.workloads.get_workload(&w.id).await.map(|c| c.status.is_terminal()).unwrap_or(false);
                    if ended {
                        unsafe { libc::kill(-pid, libc::SIGTERM) };
                        stop_sent = Some(tokio::time::Instant::now());
                    }
                }
                Some(at) if at.elapsed() > self.stop_grace => unsafe {
                    libc::kill(-pid, libc::SIGKILL);
                },
                Some(_) => {}
            }
        };
        let status = status.map_err(launch_error("waiting for the orchestrator"))?;
        // It reports its own end; if the workload is still active, it died first.
        let current = app.workloads.get_workload(&w.id).await?;
        if current.status.is_active() {
            let tail = std::fs::read(&log_path).map(|log| sluice_connectors::last_lines(&log, 5)).unwrap_or_default();
            return Err(LaunchError(format!("the orchestrator exited ({status}) without reporting the attempt's end: {tail}")));
        }
        Ok(())
    }

    /// Waits until no process of an earlier attempt of this connection is
    /// left (after `sluice up` was killed, its orchestrators stop on their
    /// own, and may still be stopping when the next attempt is launched).
    async fn fence(&self, w: &Workload, log: &std::fs::File) -> Result<sluice_orchestrator::fence::Fence, LaunchError> {
        use std::io::Write;
        let connection = w.mutex_key.as_deref().unwrap_or(&w.id);
        let path = self.work_root.join("fences").join(format!("{connection}.lock"));
        let mut log = log.try_clone().map_err(launch_error("cannot open the attempt log"))?;
        tokio::task::spawn_blocking(move || {
            sluice_orchestrator::fence::take(&path, FENCE_PATIENCE, || {
                let _ = writeln!(log, "sluice: processes of an earlier attempt of this connection are still running; waiting for them to exit");
            })
        })
        .await
        .map_err(|e| LaunchError(format!("waiting for the connection's lock: {e}")))?
        .map_err(LaunchError)
    }

    /// Where the spec of a pinned PyPI connector is kept once learnt: a
    /// released version's spec never changes, and Python connectors take
    /// seconds to print it.
    fn spec_cache(&self, container: &Container) -> Option<PathBuf> {
        match &container.runtime {
            Runtime::Pypi(spec) if spec.contains("==") => {
                let name: String = spec.trim_start_matches("pypi:").chars().map(|c| if c.is_ascii_alphanumeric() || c == '.' { c } else { '-' }).collect();
                Some(self.cache.root.join("specs").join(format!("{name}.json")))
            }
            _ => None,
        }
    }

    async fn run_connector_command(&self, app: &App, w: &Workload, plan: &TaskPlan, dir: &Path) -> Result<(), LaunchError> {
        let container = plan.connector.as_ref().ok_or_else(|| LaunchError("the plan names no connector".into()))?;
        let cached_spec = if plan.kind == WorkloadType::Spec { self.spec_cache(container) } else { None };
        if let Some(body) = cached_spec.as_ref().and_then(|p| std::fs::read(p).ok()).and_then(|b| serde_json::from_slice::<Value>(&b).ok()) {
            let now = jiff::Timestamp::now;
            workload_event(&app.ports(), &w.id, &WorkloadEvent::Launched { task_ref: None }, now()).await.map_err(|e| LaunchError(e.to_string()))?;
            sluice_api::workloads::store_output(app, w, body).await?;
            workload_event(&app.ports(), &w.id, &WorkloadEvent::Succeed, now()).await.map_err(|e| LaunchError(e.to_string()))?;
            return Ok(());
        }
        let command = self.command(container).await?;
        let mut args: Vec<String> = vec![plan.kind.as_str().to_owned()];
        if plan.kind != WorkloadType::Spec {
            let config_path = dir.join(files::CONNECTOR_CONFIG);
            let config = plan.file(files::CONNECTOR_CONFIG).ok_or_else(|| LaunchError("the plan has no connector config".into()))?;
            write_private(&config_path, config.as_bytes()).map_err(launch_error("cannot write the connector config"))?;
            args.extend(["--config".to_owned(), config_path.display().to_string()]);
        }
        let now = jiff::Timestamp::now;
        workload_event(&app.ports(), &w.id, &WorkloadEvent::Launched { task_ref: None }, now()).await.map_err(|e| LaunchError(e.to_string()))?;
        workload_event(&app.ports(), &w.id, &WorkloadEvent::Running, now()).await.map_err(|e| LaunchError(e.to_string()))?;
        let mut process = tokio::process::Command::new(&command[0]);
        process.args(&command[1..]).args(&args).envs(&container.env).current_dir(dir).stdin(Stdio::null()).kill_on_drop(true);
        let output = tokio::time::timeout(app.settings.connector_timeout, process.output())
            .await
            .map_err(|_| LaunchError(format!("{} {} took longer than {:?}", container.name, plan.kind.as_str(), app.settings.connector_timeout)))?
            .map_err(launch_error(&format!("cannot start {}", container.name)))?;

        let status = output.status.to_string();
        let body = record_answer(app, w, plan.kind, &container.name, &output.stdout, &output.stderr, &status).await?;
        if let (Some(body), Some(path)) = (body, &cached_spec) {
            let _ = std::fs::create_dir_all(path.parent().expect("has a parent"));
            let _ = std::fs::write(path, body.to_string());
        }
        Ok(())
    }
}

/// Stores what a spec, check or discover answered (or why it gave no
/// answer) as the workload's output, and ends the workload. Returns the
/// answer, if there was one.
pub(crate) async fn record_answer(
    app: &App,
    w: &Workload,
    kind: WorkloadType,
    name: &str,
    stdout: &[u8],
    stderr: &[u8],
    exit: &str,
) -> Result<Option<Value>, LaunchError> {
    let question = crate::question(kind).ok_or_else(|| LaunchError(format!("a {} workload asks no question", kind.as_str())))?;
    let answer = sluice_orchestrator::ask::answer_or_reason(question, name, stdout, &sluice_connectors::last_lines(stderr, 10), exit);
    let (body, event) = match &answer {
        Ok(body) => (body.clone(), WorkloadEvent::Succeed),
        Err(message) => (json!({"message": message}), WorkloadEvent::Fail { reason: message.clone() }),
    };
    sluice_api::workloads::store_output(app, w, body).await?;
    workload_event(&app.ports(), &w.id, &event, jiff::Timestamp::now()).await.map_err(|e| LaunchError(e.to_string()))?;
    Ok(answer.ok())
}

/// Runs one claimed workload: with Docker when a connector exists only as
/// an image (or `all_in_docker`), else as local processes. A failure to
/// launch fails the workload (and its attempt) with the reason.
pub async fn run_claimed(executor: &LocalExecutor, docker: &crate::docker::DockerExecutor, all_in_docker: bool, app: &App, w: Workload, api_url: &str) {
    let result = match crate::build_plan(app, &w, api_url).await {
        Ok(plan) if all_in_docker || plan.needs_images() => docker.run(app, &w, &plan).await,
        Ok(plan) => executor.run(app, &w, &plan).await,
        Err(e) => Err(e),
    };
    if let Err(e) = result {
        record_failure(app, &w, &e.0).await;
    }
}

/// How long a launch failure the store cannot take (a full disk, another
/// process's lock) is tried again: past it, the monitor's heartbeat timeout
/// fails the workload instead.
const RECORD_PATIENCE: Duration = Duration::from_secs(600);

/// Fails the workload, trying again while the store refuses: left
/// unrecorded, the workload would hold its connection until the monitor
/// noticed, long after the disk had room again.
async fn record_failure(app: &App, w: &Workload, why: &str) {
    let deadline = tokio::time::Instant::now() + RECORD_PATIENCE;
    let (mut pause, mut said) = (Duration::from_secs(1), false);
    while let Err(failed) = fail_launch(app, w, why).await {
        if tokio::time::Instant::now() + pause > deadline {
            sluice_protocol::say!("sluice: could not record that workload {} failed ({why}): {failed}; the monitor will fail it", w.id);
            return;
        }
        if !said {
            sluice_protocol::say!("sluice: cannot record yet that workload {} failed ({failed}); trying again until it can be", w.id);
            said = true;
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(30));
    }
}
