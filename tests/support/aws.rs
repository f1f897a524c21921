//! AWS as the tests have it: one moto per test binary on 127.0.0.1, and a
//! stand-in for what moto does not do: run the containers of ECS tasks,
//! with the task role's credentials endpoint.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

pub fn moto_venv() -> PathBuf {
    let cache = sluice_connectors::Cache { root: super::cache_dir() };
    cache.python_env(sluice_store_aws::moto::PACKAGE, Some(sluice_store_aws::moto::VERSION), &mut |_| {}).expect("moto installs from PyPI")
}

/// moto's URL; started on first use.
pub fn moto() -> &'static str {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| sluice_store_aws::moto::start(&moto_venv().join("bin/moto_server")).expect("moto_server starts"))
}

pub fn aws_env() -> Vec<(&'static str, &'static str)> {
    vec![("AWS_ENDPOINT_URL", moto()), ("AWS_ACCESS_KEY_ID", "test"), ("AWS_SECRET_ACCESS_KEY", "test"), ("AWS_REGION", "us-east-1")]
}

/// `sluice provision --prefix <prefix>`; returns what it printed.
pub fn provision(prefix: &str) -> String {
    let output = super::sluice().args(["provision", "--prefix", prefix]).envs(aws_env()).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The default VPC's first subnet and security group, as moto makes them.
pub fn default_network() -> (String, String) {
    sluice_store_aws::moto::default_network(&moto_venv(), moto()).unwrap()
}

/// The tasks' role, as the tests give it to the launcher.
pub const TASK_ROLE_ARN: &str = "arn:aws:iam::123456789012:role/task";

/// The task role's credentials, as the player's stand-in for ECS's
/// credentials endpoint hands them to a task whose definition names a role.
pub fn task_role() -> sluice_lambda::gateway::Principal {
    sluice_lambda::gateway::Principal {
        arn: "arn:aws:sts::123456789012:assumed-role/task/task-session".into(),
        access_key_id: "ASIATASKROLEEXAMPLE1".into(),
        secret_access_key: "task-role-secret-key/EXAMPLE".into(),
        session_token: Some("task-role-session-token".into()),
    }
}

/// ECS's credentials endpoint (169.254.170.2 on a real task) on 127.0.0.1:
/// every GET answers the task role's credentials, valid for an hour.
fn credentials_endpoint() -> &'static str {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| {
        use std::io::{BufRead, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/v2/credentials/task", listener.local_addr().unwrap());
        std::thread::spawn(move || {
            for mut stream in listener.incoming().flatten() {
                let mut reader = std::io::BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                while reader.read_line(&mut line).map(|n| n > 0 && line != "\r\n").unwrap_or(false) {
                    line.clear();
                }
                let role = task_role();
                let expires = sluice_protocol::time::format_utc(jiff::Timestamp::now().as_second() + 3600);
                let body = serde_json::json!({"RoleArn": TASK_ROLE_ARN, "AccessKeyId": role.access_key_id,
                    "SecretAccessKey": role.secret_access_key, "Token": role.session_token, "Expiration": expires}).to_string();
                let _ = write!(stream, "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}", body.len());
            }
        });
        url
    })
}

/// Plays ECS for moto, which runs no containers: every task RunTask made
/// in `cluster` is read back (its task definition, its overrides, the
/// secrets its definition names) and exactly that is executed as local
/// processes, each task in its own thread, with the shared volume a
/// directory and each image's program a local one (`programs`: image name
/// part, program). A task told to stop (StopTask) is killed; a task whose
/// essential container exited is stopped in moto, as ECS would.
pub struct EcsPlayer {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// The processes of each task, by the workload it runs.
    pub pids: Arc<Mutex<HashMap<String, Vec<u32>>>>,
}

impl EcsPlayer {
    pub fn start(cluster: &str, scratch: PathBuf, programs: Vec<(String, String)>) -> EcsPlayer {
        let stop = Arc::new(AtomicBool::new(false));
        let pids = Arc::new(Mutex::new(HashMap::new()));
        let (cluster, stop_flag, pid_map) = (cluster.to_owned(), stop.clone(), pids.clone());
        let thread = std::thread::spawn(move || play(cluster, scratch, programs, stop_flag, pid_map));
        EcsPlayer { stop, thread: Some(thread), pids }
    }

    /// Freezes every process of the workload's task (SIGSTOP): its heartbeats stop.
    pub fn freeze(&self, workload: &str) -> usize {
        let pids = self.pids.lock().unwrap().get(workload).cloned().unwrap_or_default();
        for pid in &pids {
            unsafe { libc::kill(*pid as i32, libc::SIGSTOP) };
        }
        pids.len()
    }
}

impl Drop for EcsPlayer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for pid in self.pids.lock().unwrap().values().flatten() {
            unsafe { libc::kill(*pid as i32, libc::SIGKILL) };
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn play(cluster: String, scratch: PathBuf, programs: Vec<(String, String)>, stop: Arc<AtomicBool>, pids: Arc<Mutex<HashMap<String, Vec<u32>>>>) {
    let sluice = env!("CARGO_BIN_EXE_sluice");
    let bin = scratch.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    // The platform container's programs: `sluice orchestrate` runs the bookkeeper for socket mode.
    for program in ["orchestrator", "bookkeeper"] {
        let shim = bin.join(program);
        std::fs::write(&shim, format!("#!/bin/sh\nexec {sluice} orchestrate \"$@\"\n")).unwrap();
        std::fs::set_permissions(&shim, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    }
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let config = sluice_store_aws::moto::sdk_config(moto()).await;
        let ecs = aws_sdk_ecs::Client::new(&config);
        let secrets = aws_sdk_secretsmanager::Client::new(&config);
        let mut seen = HashSet::new();
        let mut running: HashMap<String, (String, std::thread::JoinHandle<()>)> = HashMap::new();
        while !stop.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(200)).await;
            // Tasks that ECS was told to stop: their processes go.
            if !running.is_empty() {
                let arns: Vec<String> = running.keys().cloned().collect();
                if let Ok(described) = ecs.describe_tasks().cluster(&cluster).set_tasks(Some(arns)).send().await {
                    for task in described.tasks() {
                        if task.desired_status() == Some("STOPPED") {
                            let (workload, _) = &running[task.task_arn().unwrap()];
                            for pid in pids.lock().unwrap().get(workload).into_iter().flatten() {
                                unsafe { libc::kill(*pid as i32, libc::SIGKILL) };
                            }
                        }
                    }
                }
            }
            // As ECS does when a task's essential container exits: the task stops.
            let ended: Vec<String> = running.iter().filter(|(_, (_, thread))| thread.is_finished()).map(|(arn, _)| arn.clone()).collect();
            for arn in ended {
                let _ = ecs.stop_task().cluster(&cluster).task(&arn).reason("Essential container in task exited").send().await;
                running.remove(&arn);
            }
            let Ok(listed) = ecs.list_tasks().cluster(&cluster).send().await else { continue };
            for arn in listed.task_arns().iter().filter(|a| seen.insert(a.to_string())) {
                let task = ecs.describe_tasks().cluster(&cluster).tasks(arn).send().await.unwrap().tasks()[0].clone();
                let overrides: Vec<(String, String)> = task.overrides().unwrap().container_overrides()[0]
                    .environment()
                    .iter()
                    .map(|kv| (kv.name().unwrap().to_owned(), kv.value().unwrap().to_owned()))
                    .collect();
                let definition = ecs.describe_task_definition().task_definition(task.task_definition_arn().unwrap()).send().await.unwrap().task_definition.unwrap();
                let volume = scratch.join(arn.rsplit('/').next().unwrap());
                std::fs::create_dir_all(&volume).unwrap();
                let local = |text: &str| text.replace("/sluice", &volume.display().to_string());
                // The task's volumes are directories under this one, at their mount points.
                for c in definition.container_definitions() {
                    for path in c.mount_points().iter().filter_map(|m| m.container_path()) {
                        std::fs::create_dir_all(local(path)).unwrap();
                    }
                }
                let mut containers = Vec::new();
                for c in definition.container_definitions() {
                    let mut command: Vec<String> = c.command().iter().map(|a| local(a)).collect();
                    let mut process = std::process::Command::new(command.remove(0));
                    process.args(&command).current_dir(&volume).env("PATH", &path).envs(overrides.iter().map(|(k, v)| (k, local(v))));
                    // A task has only its role's credentials, never those of whoever runs the tests.
                    for name in ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"] {
                        process.env_remove(name);
                    }
                    process.env("SLUICE_HEARTBEAT_SECS", "1");
                    for kv in c.environment() {
                        process.env(kv.name().unwrap(), local(kv.value().unwrap()));
                    }
                    for secret in c.secrets() {
                        let value = secrets.get_secret_value().secret_id(secret.value_from()).send().await.unwrap().secret_string.unwrap();
                        process.env(secret.name(), value);
                    }
                    // As ECS does for every container of a task with a task role.
                    if definition.task_role_arn().is_some() {
                        process.env("AWS_CONTAINER_CREDENTIALS_FULL_URI", credentials_endpoint());
                    }
                    let image = c.image().unwrap();
                    if let Some((_, program)) = programs.iter().find(|(part, _)| image.contains(part.as_str())) {
                        process.env("AIRBYTE_ENTRYPOINT", program);
                    }
                    containers.push((c.name().unwrap_or_default().to_owned(), process));
                }
                let workload = task.started_by().unwrap_or_default().to_owned();
                let (pids, volume) = (pids.clone(), volume.clone());
                let thread = std::thread::spawn({
                    let workload = workload.clone();
                    move || run_task(&workload, containers, &volume, &pids)
                });
                running.insert(arn.clone(), (workload, thread));
            }
        }
    });
}

/// One task: init to its end, then the others together; the task ends
/// with its essential container, the last one (the orchestrator).
fn run_task(workload: &str, containers: Vec<(String, std::process::Command)>, volume: &std::path::Path, pids: &Mutex<HashMap<String, Vec<u32>>>) {
    let mut children = Vec::new();
    for (name, mut process) in containers {
        if name == "init" {
            let status = process.status().unwrap();
            assert!(status.success(), "the init container of {workload} failed");
            // The files name the volume by its mount point; here it is a directory.
            let sync = volume.join("sync.json");
            if let Ok(text) = std::fs::read_to_string(&sync) {
                std::fs::write(&sync, text.replace("/sluice", &volume.display().to_string())).unwrap();
            }
        } else {
            let child = process.spawn().unwrap();
            pids.lock().unwrap().entry(workload.to_owned()).or_default().push(child.id());
            children.push(child);
        }
    }
    let mut essential = children.pop().expect("the orchestrator container");
    let _ = essential.wait();
    for mut child in children {
        let _ = child.kill();
        let _ = child.wait();
    }
}
