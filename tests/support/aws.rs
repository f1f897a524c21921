//! AWS as the tests have it: one moto per test binary on 127.0.0.1, and a
//! stand-in for what moto does not do: run the containers of ECS tasks,
//! as real containers on the tests' Docker engine, with the task role's
//! credentials endpoint.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sluice_launcher::docker::{Engine, EngineBody};

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
/// secrets its definition names) and exactly that runs as containers on
/// the tests' Docker engine, with the images the definition names: a
/// Docker volume per task volume, each container's mount points, user,
/// entrypoint, command and environment, `dependsOn` honoured (a container
/// starts once its dependencies reached their condition), and the task
/// ending when an essential container exits, as ECS ends it (the others
/// stopped, the task stopped in moto with ECS's reason). A task told to
/// stop (StopTask) has its containers stopped. Containers share the
/// host's network, as a task's containers share theirs: they reach the
/// workload API and moto on 127.0.0.1, and the task role's credentials
/// endpoint there instead of 169.254.170.2.
///
/// `storage` are host directories every container sees at the same path:
/// the stand-in for where a destination writes (on ECS, S3 or EFS), so a
/// test reads what a destination wrote.
pub struct EcsPlayer {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// The containers of each task, by the workload it runs.
    containers: Arc<Mutex<HashMap<String, Vec<String>>>>,
}

impl EcsPlayer {
    pub fn start(cluster: &str, storage: Vec<PathBuf>) -> EcsPlayer {
        let stop = Arc::new(AtomicBool::new(false));
        let containers = Arc::new(Mutex::new(HashMap::new()));
        let (cluster, stop_flag, by_workload) = (cluster.to_owned(), stop.clone(), containers.clone());
        for dir in &storage {
            std::fs::create_dir_all(dir).unwrap();
            // The connectors run as their images' users, never root.
            std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
        }
        let thread = std::thread::spawn(move || play(cluster, storage, stop_flag, by_workload));
        EcsPlayer { stop, thread: Some(thread), containers }
    }

    /// Freezes the workload task's running containers (`docker pause`):
    /// its heartbeats stop. Returns how many it froze.
    pub fn freeze(&self, workload: &str) -> usize {
        let names = self.containers.lock().unwrap().get(workload).cloned().unwrap_or_default();
        let engine = super::docker::engine();
        names.iter().filter(|name| engine.call("POST", &format!("/containers/{name}/pause"), &EngineBody::None).is_ok()).count()
    }
}

impl Drop for EcsPlayer {
    fn drop(&mut self) {
        // Each task's thread sees the flag, stops its containers and removes them.
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// One container of a played task.
struct TaskContainer {
    /// Its name in the task definition.
    name: String,
    /// Its name on the engine.
    engine_name: String,
    essential: bool,
    /// (container, condition): START, COMPLETE, SUCCESS or HEALTHY.
    depends_on: Vec<(String, String)>,
    create: Value,
}

/// A task as the engine runs it.
struct PlayedTask {
    workload: String,
    volumes: Vec<String>,
    containers: Vec<TaskContainer>,
}

fn play(cluster: String, storage: Vec<PathBuf>, stop: Arc<AtomicBool>, by_workload: Arc<Mutex<HashMap<String, Vec<String>>>>) {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let config = sluice_store_aws::moto::sdk_config(moto()).await;
        let ecs = aws_sdk_ecs::Client::new(&config);
        let secrets = aws_sdk_secretsmanager::Client::new(&config);
        let mut seen = HashSet::new();
        // Each running task: its thread (which returns why the task
        // stopped) and the flag that tells it ECS was told to stop it.
        let mut running: HashMap<String, (std::thread::JoinHandle<String>, Arc<AtomicBool>)> = HashMap::new();
        while !stop.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if !running.is_empty() {
                let arns: Vec<String> = running.keys().cloned().collect();
                if let Ok(described) = ecs.describe_tasks().cluster(&cluster).set_tasks(Some(arns)).send().await {
                    for task in described.tasks().iter().filter(|t| t.desired_status() == Some("STOPPED")) {
                        running[task.task_arn().unwrap()].1.store(true, Ordering::SeqCst);
                    }
                }
            }
            let ended: Vec<String> = running.iter().filter(|(_, (thread, _))| thread.is_finished()).map(|(arn, _)| arn.clone()).collect();
            for arn in ended {
                let (thread, _) = running.remove(&arn).unwrap();
                let reason = thread.join().unwrap_or_else(|_| "the player's task thread panicked".into());
                let _ = ecs.stop_task().cluster(&cluster).task(&arn).reason(reason).send().await;
            }
            let Ok(listed) = ecs.list_tasks().cluster(&cluster).send().await else { continue };
            for arn in listed.task_arns().iter().filter(|a| seen.insert(a.to_string())) {
                let task = ecs.describe_tasks().cluster(&cluster).tasks(arn).send().await.unwrap().tasks()[0].clone();
                let definition = ecs.describe_task_definition().task_definition(task.task_definition_arn().unwrap()).send().await.unwrap().task_definition.unwrap();
                let id = arn.rsplit('/').next().unwrap().to_owned();
                let overrides: HashMap<String, Vec<String>> = task
                    .overrides()
                    .map(|o| o.container_overrides())
                    .unwrap_or_default()
                    .iter()
                    .map(|o| (o.name().unwrap_or_default().to_owned(), o.environment().iter().map(|kv| format!("{}={}", kv.name().unwrap(), kv.value().unwrap())).collect()))
                    .collect();
                // CPU units, at most what this machine has: the engine refuses more.
                let host_units = std::thread::available_parallelism().map_or(1, |n| n.get() as u64) * 1024;
                let cpus = definition.cpu().and_then(|c| c.parse::<u64>().ok()).unwrap_or(1024).min(host_units);
                let memory_mib = definition.memory().and_then(|m| m.parse::<u64>().ok()).unwrap_or(2048);
                let volume_name = |volume: &str| format!("ecs-{id}-{volume}").to_lowercase();
                let mut containers = Vec::new();
                for c in definition.container_definitions() {
                    let name = c.name().unwrap_or_default().to_owned();
                    // As ECS sets for every container of a Fargate task, then the definition's own, then the overrides.
                    let mut env = vec!["AWS_REGION=us-east-1".to_owned(), "AWS_DEFAULT_REGION=us-east-1".to_owned(), "SLUICE_HEARTBEAT_SECS=1".to_owned()];
                    if definition.task_role_arn().is_some() {
                        env.push(format!("AWS_CONTAINER_CREDENTIALS_FULL_URI={}", credentials_endpoint()));
                    }
                    env.extend(c.environment().iter().map(|kv| format!("{}={}", kv.name().unwrap(), kv.value().unwrap())));
                    for secret in c.secrets() {
                        let value = secrets.get_secret_value().secret_id(secret.value_from()).send().await.unwrap().secret_string.unwrap();
                        env.push(format!("{}={value}", secret.name()));
                    }
                    env.extend(overrides.get(&name).cloned().unwrap_or_default());
                    let mut mounts: Vec<Value> = c
                        .mount_points()
                        .iter()
                        .map(|m| json!({"Type": "volume", "Source": volume_name(m.source_volume().unwrap()), "Target": m.container_path().unwrap(), "ReadOnly": m.read_only().unwrap_or(false)}))
                        .collect();
                    mounts.extend(storage.iter().map(|dir| json!({"Type": "bind", "Source": dir, "Target": dir})));
                    let mut create = json!({
                        "Image": c.image().unwrap(),
                        "Env": env,
                        "Labels": {"sluice.ecs-task": id, "sluice.ecs-container": name},
                        "HostConfig": {
                            "NetworkMode": "host",
                            "Mounts": mounts,
                            // Fargate limits the task; here each container gets the task's size.
                            "NanoCpus": cpus * 1_000_000_000 / 1024,
                            "Memory": memory_mib * 1024 * 1024,
                            "MemoryReservation": c.memory_reservation().unwrap_or(0) as u64 * 1024 * 1024,
                        },
                    });
                    if !c.entry_point().is_empty() {
                        create["Entrypoint"] = json!(c.entry_point());
                    }
                    if !c.command().is_empty() {
                        create["Cmd"] = json!(c.command());
                    }
                    if let Some(user) = c.user() {
                        create["User"] = json!(user);
                    }
                    let depends_on = c.depends_on().iter().map(|d| (d.container_name().to_owned(), d.condition().as_str().to_owned())).collect();
                    containers.push(TaskContainer { engine_name: format!("ecs-{id}-{name}"), name, essential: c.essential().unwrap_or(true), depends_on, create });
                }
                let volumes = definition.volumes().iter().filter_map(|v| v.name()).map(volume_name).collect();
                let workload = task.started_by().unwrap_or_default().to_owned();
                by_workload.lock().unwrap().insert(workload.clone(), containers.iter().map(|c| c.engine_name.clone()).collect());
                let played = PlayedTask { workload, volumes, containers };
                let (told_to_stop, player_stops) = (Arc::new(AtomicBool::new(false)), stop.clone());
                let thread = std::thread::spawn({
                    let told_to_stop = told_to_stop.clone();
                    move || run_task(&super::docker::engine(), &played, &told_to_stop, &player_stops)
                });
                running.insert(arn.clone(), (thread, told_to_stop));
            }
        }
        for (_, (thread, _)) in running.drain() {
            let _ = thread.join();
        }
    });
}

/// Runs one task to its end; returns why it stopped, as ECS words it.
fn run_task(engine: &Engine, task: &PlayedTask, told_to_stop: &AtomicBool, player_stops: &AtomicBool) -> String {
    let reason = drive_task(engine, task, told_to_stop, player_stops);
    for c in &task.containers {
        if let Ok(info) = engine.inspect(&c.engine_name) {
            let code = info["State"]["ExitCode"].as_i64().unwrap_or(0);
            if code != 0 && !told_to_stop.load(Ordering::SeqCst) {
                let (out, err) = engine.output(&c.engine_name).unwrap_or_default();
                let tail = |b: &[u8]| String::from_utf8_lossy(&b[b.len().saturating_sub(2000)..]).into_owned();
                eprintln!("ecs player: {} of {} exited {code}:\n{}{}", c.name, task.workload, tail(&out), tail(&err));
            }
        }
        let _ = engine.call("DELETE", &format!("/containers/{}?force=true&v=true", c.engine_name), &EngineBody::None);
    }
    for volume in &task.volumes {
        let _ = engine.call("DELETE", &format!("/volumes/{volume}?force=true"), &EngineBody::None);
    }
    reason
}

fn drive_task(engine: &Engine, task: &PlayedTask, told_to_stop: &AtomicBool, player_stops: &AtomicBool) -> String {
    for volume in &task.volumes {
        if let Err(e) = engine.call("POST", "/volumes/create", &EngineBody::Json(json!({"Name": volume, "Labels": {"sluice.volume": "ecs-task"}}))) {
            return format!("ResourceInitializationError: {}", e.0);
        }
    }
    for c in &task.containers {
        if let Err(e) = engine.call("POST", &format!("/containers/create?name={}", c.engine_name), &EngineBody::Json(c.create.clone())) {
            return format!("CannotPullContainerError: {}: {}", c.name, e.0);
        }
    }
    // (exit status once exited) by container; started ones are in `started`.
    let mut started: HashSet<&str> = HashSet::new();
    let mut exited: HashMap<&str, i64> = HashMap::new();
    let stop_all = |signal_first: bool| {
        for c in &task.containers {
            // A frozen container takes no signal until thawed.
            let _ = engine.call("POST", &format!("/containers/{}/unpause", c.engine_name), &EngineBody::None);
            let path = if signal_first { format!("/containers/{}/stop?t=10", c.engine_name) } else { format!("/containers/{}/kill", c.engine_name) };
            let _ = engine.request("POST", &path, &EngineBody::None);
        }
    };
    let since = Instant::now();
    loop {
        if player_stops.load(Ordering::SeqCst) {
            stop_all(false);
            return "the tests' ECS player stopped".into();
        }
        if told_to_stop.load(Ordering::SeqCst) {
            stop_all(true);
            return "Task stopped by user".into();
        }
        for c in &task.containers {
            if started.contains(c.name.as_str()) {
                continue;
            }
            let met = |(on, condition): &(String, String)| match condition.as_str() {
                "COMPLETE" => exited.contains_key(on.as_str()),
                "SUCCESS" => exited.get(on.as_str()) == Some(&0),
                _ => started.contains(on.as_str()),
            };
            // A dependency that can no longer be met stops the task, as on ECS.
            if let Some((on, _)) = c.depends_on.iter().find(|(on, condition)| condition == "SUCCESS" && exited.get(on.as_str()).is_some_and(|&code| code != 0)) {
                stop_all(true);
                return format!("Essential container in task exited: {} depends on {on}, which failed ({})", c.name, exited[on.as_str()]);
            }
            if c.depends_on.iter().all(met) {
                if let Err(e) = engine.call("POST", &format!("/containers/{}/start", c.engine_name), &EngineBody::None) {
                    stop_all(false);
                    return format!("CannotStartContainerError: {}: {}", c.name, e.0);
                }
                started.insert(c.name.as_str());
            }
        }
        for c in &task.containers {
            if !started.contains(c.name.as_str()) || exited.contains_key(c.name.as_str()) {
                continue;
            }
            let Ok(info) = engine.inspect(&c.engine_name) else { continue };
            if info["State"]["Status"] == "exited" || info["State"]["Status"] == "dead" {
                exited.insert(c.name.as_str(), info["State"]["ExitCode"].as_i64().unwrap_or(-1));
                if c.essential {
                    stop_all(true);
                    return "Essential container in task exited".into();
                }
            }
        }
        if started.is_empty() && since.elapsed() > Duration::from_secs(60) {
            stop_all(false);
            return "the task's containers never started".into();
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

// S3 on moto: buckets for destination-s3's tests, and what they hold.

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

pub fn s3(rt: &tokio::runtime::Runtime) -> aws_sdk_s3::Client {
    let config = rt.block_on(sluice_store_aws::moto::sdk_config(moto()));
    aws_sdk_s3::Client::from_conf(aws_sdk_s3::config::Builder::from(&config).force_path_style(true).build())
}

/// A new bucket on moto, named for the test.
pub fn bucket(name: &str) -> String {
    let rt = runtime();
    let name = format!("{name}-{}", std::process::id());
    rt.block_on(s3(&rt).create_bucket().bucket(&name).send()).unwrap();
    name
}

pub struct Object {
    pub key: String,
    pub body: Vec<u8>,
    pub generation: Option<i64>,
}

/// Every object of `bucket` under `prefix`, with its generation.
pub fn objects(bucket: &str, prefix: &str) -> Vec<Object> {
    let rt = runtime();
    let client = s3(&rt);
    let listed = rt.block_on(client.list_objects_v2().bucket(bucket).prefix(prefix).send()).unwrap();
    let mut found = Vec::new();
    for object in listed.contents() {
        let key = object.key().unwrap().to_owned();
        let got = rt.block_on(client.get_object().bucket(bucket).key(&key).send()).unwrap();
        let generation = got.metadata().and_then(|m| m.get("ab-generation-id")).and_then(|g| g.parse().ok());
        let body = rt.block_on(got.body.collect()).unwrap().into_bytes().to_vec();
        found.push(Object { key, body, generation });
    }
    found
}
