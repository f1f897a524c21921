//! The Docker executor: a plan's task as containers on a Docker engine,
//! sharing volumes, as ECS runs it on Fargate.
//!
//! [`docker_task`] turns a plan into plain data: the volumes, the files put
//! in before anything starts (an archive into the first container, so
//! configs and the workload credential appear in no container's
//! environment or command line), and one Engine API `ContainerCreate` body
//! per container, in start order. [`DockerExecutor::run`] carries it out
//! through the engine's socket ([`Engine`]).
//!
//! A sync runs four containers, with the volumes of [`crate::containers`]:
//! - `init` (root) makes the named pipes and opens each connector's volume
//!   to its image's user;
//! - `source` and `destination` wait for their catalog (the orchestrator
//!   writes it last), then run the connector on its pipes with the
//!   orchestrator's attach wrapper, which stops it when `cancel` appears;
//! - `orchestrator` (or `bookkeeper`) runs the attempt and reports to the
//!   workload API; its output is the attempt's log.
//!
//! While it runs the executor watches the containers: a connector
//! container that died from outside (`docker kill`, the kernel's OOM
//! killer) cannot say so, so the executor writes its `exit` and `cause`
//! onto its volume for the orchestrator, which fails the attempt naming the
//! container and the cause. Containers and volumes are removed at the end,
//! whatever happened.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::Duration;

use serde_json::{json, Value};
use sluice_domain::WorkloadType;

pub use crate::containers::SHARED;
use crate::containers::{
    connector_command, connector_env, init_script, mounted_in, orchestrator_command, platform_mode, question_config, role_dir, shared, task_files, volumes,
    CONNECTOR, INIT_USER, PLATFORM_UID, PLATFORM_USER,
};
use crate::plan::{files, Container, Runtime, TaskPlan};
use crate::LaunchError;

/// Where connector containers see `DockerSettings::local_root`, as Airbyte's do.
pub const LOCAL_ROOT: &str = "/local";

/// The Engine API version spoken: Docker 20.10 and every later engine.
pub const API: &str = "/v1.41";

#[derive(Debug, Clone)]
pub struct DockerSettings {
    /// The image with the `orchestrator` and `bookkeeper` binaries and a POSIX shell.
    pub orchestrator_image: String,
    /// Images of our reference connectors, by name (`source-faker` -> `sluice/source-faker:0.1.0`).
    pub reference_images: BTreeMap<String, String>,
    /// `host` lets the orchestrator reach a workload API on the host's 127.0.0.1.
    pub network_mode: String,
    /// How long one Engine API request may take (waits and log streams aside).
    pub call_timeout: Duration,
    /// A host directory connector containers see at `/local` (Airbyte's
    /// LOCAL_ROOT: files a source reads or a destination writes).
    pub local_root: Option<PathBuf>,
}

impl DockerSettings {
    pub fn new(orchestrator_image: String, reference_images: BTreeMap<String, String>) -> Self {
        DockerSettings { orchestrator_image, reference_images, network_mode: "host".into(), call_timeout: Duration::from_secs(60), local_root: None }
    }
}

/// A plan as Docker objects, in the order they are made and started.
#[derive(Debug, Clone, PartialEq)]
pub struct DockerTask {
    pub volumes: Vec<String>,
    pub volume_labels: Value,
    /// Files put into the first container at `files_path` before it starts.
    pub files: Vec<TarFile>,
    pub files_path: String,
    pub containers: Vec<DockerContainer>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DockerContainer {
    pub name: String,
    /// `init`, `source`, `destination`, `orchestrator` or `connector`.
    pub role: &'static str,
    pub image: String,
    /// The Engine API `ContainerCreate` body.
    pub create: Value,
}

/// One file of an archive: its name, contents, mode and owner.
#[derive(Debug, Clone, PartialEq)]
pub struct TarFile {
    pub name: String,
    pub data: Vec<u8>,
    pub mode: u32,
    pub uid: u32,
}

impl DockerTask {
    pub fn container(&self, role: &str) -> Option<&DockerContainer> {
        self.containers.iter().find(|c| c.role == role)
    }
}

/// A connector container's image.
fn image(container: &Container, settings: &DockerSettings) -> Result<String, LaunchError> {
    match &container.runtime {
        Runtime::Image(image) => Ok(image.clone()),
        Runtime::Reference(name) => settings
            .reference_images
            .get(name)
            .cloned()
            .ok_or_else(|| LaunchError(format!("no image is configured for the reference connector {name}"))),
        Runtime::Manifest => Ok(settings.reference_images.get(sluice_connectors::MANIFEST).cloned().unwrap_or_else(crate::plan::manifest_runner_image)),
        Runtime::Pypi(spec) => Err(LaunchError(format!("{} comes from PyPI ({spec}); run it with the local executor", container.name))),
        Runtime::Executable(path) => Err(LaunchError(format!("{} is the executable {path}; run it with the local executor", container.name))),
    }
}

struct Body<'a> {
    image: &'a str,
    cmd: Vec<String>,
    env: BTreeMap<String, String>,
    /// `None`: the image's own user.
    user: Option<&'a str>,
    role: &'static str,
}

fn create_body(body: Body, plan: &TaskPlan, mounts: Vec<Value>, settings: &DockerSettings) -> Value {
    let env: Vec<String> = body.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let mut create = json!({
        "Image": body.image,
        // `[""]` resets the image's entrypoint: the command below is the whole story.
        "Entrypoint": [""],
        "Cmd": body.cmd,
        "Env": env,
        "Labels": labels(plan, body.role),
        "HostConfig": {
            "Mounts": mounts,
            "NanoCpus": u64::from(plan.resources.cpu_millis) * 1_000_000,
            "Memory": u64::from(plan.resources.memory_mib) * 1024 * 1024,
            // No swap beyond the limit: a connector over it is stopped, not slowed to a crawl.
            "MemorySwap": u64::from(plan.resources.memory_mib) * 1024 * 1024,
            "NetworkMode": settings.network_mode,
            "AutoRemove": false,
        },
    });
    if let Some(user) = body.user {
        create["User"] = json!(user);
    }
    create
}

/// A sync task's objects also carry its connection: the next attempt's
/// task removes what an earlier one left running (see `clear_earlier_tasks`).
fn labels(plan: &TaskPlan, role: &str) -> Value {
    let mut labels = json!({"sluice.workload": plan.workload_id, "sluice.kind": plan.kind.as_str(), "sluice.role": role});
    if let Some(connection) = sluice_domain::sync_workload_connection(&plan.workload_id) {
        labels["sluice.connection"] = json!(connection);
    }
    labels
}

/// The engine's name for one of the task's volumes.
fn volume_name(task: &str, volume: &str) -> String {
    format!("{task}-{volume}")
}

/// The plan as Docker objects. Pure: nothing is created here.
pub fn docker_task(plan: &TaskPlan, settings: &DockerSettings) -> Result<DockerTask, LaunchError> {
    let task = format!("sluice-{}", plan.workload_id.to_lowercase().replace(|c: char| !c.is_ascii_alphanumeric() && c != '-', "-"));
    let layout = volumes(plan);
    let mounts = |role: &str| -> Vec<Value> {
        let mut mounts: Vec<Value> = mounted_in(&layout, role).map(|v| json!({"Type": "volume", "Source": volume_name(&task, v.name), "Target": v.path})).collect();
        // Connectors, never the platform's containers, see the local root, as Airbyte's do.
        if let (Some(root), "source" | "destination" | "connector") = (&settings.local_root, role) {
            mounts.push(json!({"Type": "bind", "Source": root, "Target": LOCAL_ROOT}));
        }
        mounts
    };
    let mut containers = Vec::new();
    let mut push = |role: &'static str, body: Body, mounts: Vec<Value>| {
        let image = body.image.to_owned();
        containers.push(DockerContainer { name: format!("{task}-{role}"), role, image, create: create_body(body, plan, mounts, settings) });
    };
    let (files, files_path) = match plan.kind {
        WorkloadType::Sync => {
            let (source, destination) = match (&plan.source, &plan.destination) {
                (Some(s), Some(d)) => (s, d),
                _ => return Err(LaunchError("a sync plan needs a source and a destination".into())),
            };
            let init = vec!["/bin/sh".to_owned(), "-c".to_owned(), init_script(plan)];
            let image_of = &settings.orchestrator_image;
            push("init", Body { image: image_of, cmd: init, env: BTreeMap::new(), user: Some(INIT_USER), role: "init" }, mounts("init"));
            for (role, container) in [("source", source), ("destination", destination)] {
                let image = image(container, settings)?;
                push(role, Body { image: &image, cmd: connector_command(role), env: connector_env(plan, container), user: None, role }, mounts(role));
            }
            let env = BTreeMap::from([("SLUICE_WORKLOAD_TOKEN_FILE".to_owned(), shared("credential")), platform_mode(plan)]);
            let body = Body { image: image_of, cmd: orchestrator_command(plan), env, user: Some(PLATFORM_USER), role: "orchestrator" };
            push("orchestrator", body, mounts("orchestrator"));
            // Sorted by name, so `credential` comes before `sync.json`; only the platform's user reads them.
            let files = task_files(plan)?.into_iter().map(|(name, contents)| TarFile { name, data: contents.into_bytes(), mode: 0o600, uid: PLATFORM_UID }).collect();
            (files, SHARED.to_owned())
        }
        kind => {
            // One container, no init and no orchestrator: the executor reads the answer off its output.
            let connector = plan.connector.as_ref().ok_or_else(|| LaunchError("the plan names no connector".into()))?;
            let mut cmd: Vec<String> = CONNECTOR.map(String::from).to_vec();
            cmd.push(kind.as_str().to_owned());
            let mut files = Vec::new();
            if kind != WorkloadType::Spec {
                let config = plan.file(files::CONNECTOR_CONFIG).ok_or_else(|| LaunchError("the plan has no connector config".into()))?;
                files.push(TarFile { name: "config.json".into(), data: config.as_bytes().to_vec(), mode: 0o644, uid: 0 });
                cmd.extend(["--config".to_owned(), question_config()]);
            }
            let image = image(connector, settings)?;
            push("connector", Body { image: &image, cmd, env: connector.env.clone(), user: None, role: "connector" }, mounts("connector"));
            (files, role_dir("connector").display().to_string())
        }
    };
    // The volumes some container of this task mounts: a question here is its connector alone.
    let volumes = layout.iter().filter(|v| containers.iter().any(|c| v.roles.contains(&c.role))).map(|v| volume_name(&task, v.name)).collect();
    let mut volume_labels = labels(plan, "volume");
    volume_labels["sluice.volume"] = json!("task");
    Ok(DockerTask { volumes, volume_labels, files, files_path, containers })
}

/// A POSIX tar (ustar) archive of regular files.
pub fn tar(files: &[TarFile]) -> Vec<u8> {
    let mut out = Vec::new();
    for file in files {
        let (name, data) = (&file.name, &file.data);
        let mut header = [0u8; 512];
        header[..name.len().min(100)].copy_from_slice(&name.as_bytes()[..name.len().min(100)]);
        let octal = |field: &mut [u8], value: u64| {
            let text = format!("{value:0width$o}\0", width = field.len() - 1);
            field.copy_from_slice(text.as_bytes());
        };
        octal(&mut header[100..108], u64::from(file.mode));
        octal(&mut header[108..116], u64::from(file.uid));
        octal(&mut header[116..124], u64::from(file.uid));
        octal(&mut header[124..136], data.len() as u64);
        octal(&mut header[136..148], 0);
        header[156] = b'0';
        header[257..263].copy_from_slice(b"ustar\0");
        header[263..265].copy_from_slice(b"00");
        header[148..156].copy_from_slice(b"        ");
        let sum: u64 = header.iter().map(|&b| u64::from(b)).sum();
        let text = format!("{sum:06o}\0 ");
        header[148..156].copy_from_slice(text.as_bytes());
        out.extend_from_slice(&header);
        out.extend_from_slice(data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.resize(out.len() + 1024, 0);
    out
}

/// The body of an Engine API request.
#[derive(Debug, Clone, PartialEq)]
pub enum EngineBody {
    None,
    Json(Value),
    /// A tar archive (`application/x-tar`).
    Tar(Vec<u8>),
}

/// A Docker engine, reached through its Unix socket: one request per
/// connection, each bounded by `timeout` except the streams.
#[derive(Debug, Clone)]
pub struct Engine {
    pub socket: PathBuf,
    pub timeout: Duration,
}

impl Engine {
    fn unreachable(&self, e: impl std::fmt::Display) -> LaunchError {
        LaunchError(format!("the Docker engine at {} does not answer ({e}); start Docker, or point `sluice up --docker-socket` (or DOCKER_HOST) at a running engine", self.socket.display()))
    }

    /// Sends a request; its status and its body, as a reader.
    fn open(&self, method: &str, path: &str, body: &EngineBody, timeout: Option<Duration>) -> Result<(u16, Dechunk<std::os::unix::net::UnixStream>), LaunchError> {
        let mut stream = std::os::unix::net::UnixStream::connect(&self.socket).map_err(|e| self.unreachable(e))?;
        stream.set_read_timeout(timeout).and_then(|_| stream.set_write_timeout(Some(self.timeout))).map_err(|e| self.unreachable(e))?;
        let (content_type, bytes): (&str, std::borrow::Cow<[u8]>) = match body {
            EngineBody::None => ("application/json", std::borrow::Cow::Borrowed(&[])),
            EngineBody::Json(v) => ("application/json", std::borrow::Cow::Owned(v.to_string().into_bytes())),
            EngineBody::Tar(t) => ("application/x-tar", std::borrow::Cow::Borrowed(t)),
        };
        let sent = write!(stream, "{method} {API}{path} HTTP/1.1\r\nHost: docker\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", bytes.len())
            .and_then(|_| stream.write_all(&bytes));
        sent.map_err(|e| self.timed_out(method, path, e))?;
        let mut reader = std::io::BufReader::new(stream);
        let mut status_line = String::new();
        std::io::BufRead::read_line(&mut reader, &mut status_line).map_err(|e| self.timed_out(method, path, e))?;
        let status = status_line.split_whitespace().nth(1).and_then(|s| s.parse().ok()).ok_or_else(|| self.unreachable(format!("it answered {method} {path} with `{}`", status_line.trim())))?;
        let mut chunked = false;
        loop {
            let mut line = String::new();
            std::io::BufRead::read_line(&mut reader, &mut line).map_err(|e| self.timed_out(method, path, e))?;
            if line.trim().is_empty() {
                break;
            }
            if line.to_ascii_lowercase().starts_with("transfer-encoding:") && line.to_ascii_lowercase().contains("chunked") {
                chunked = true;
            }
        }
        Ok((status, Dechunk { inner: reader, chunked, left: 0, done: false }))
    }

    fn timed_out(&self, method: &str, path: &str, e: std::io::Error) -> LaunchError {
        match e.kind() {
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => LaunchError(format!(
                "the Docker engine at {} did not answer {method} {path} within {:?}; is it overloaded or stuck?",
                self.socket.display(),
                self.timeout
            )),
            _ => self.unreachable(e),
        }
    }

    /// One request; its status and whole body.
    pub fn request(&self, method: &str, path: &str, body: &EngineBody) -> Result<(u16, Vec<u8>), LaunchError> {
        self.request_within(method, path, body, self.timeout)
    }

    fn request_within(&self, method: &str, path: &str, body: &EngineBody, timeout: Duration) -> Result<(u16, Vec<u8>), LaunchError> {
        let (status, mut reader) = self.open(method, path, body, Some(timeout))?;
        let mut body = Vec::new();
        reader.read_to_end(&mut body).map_err(|e| self.timed_out(method, path, e))?;
        Ok((status, body))
    }

    /// A request that must succeed (2xx, or 404 for a DELETE: already gone).
    pub fn call(&self, method: &str, path: &str, body: &EngineBody) -> Result<Vec<u8>, LaunchError> {
        let (status, body) = self.request(method, path, body)?;
        if (200..300).contains(&status) || (method == "DELETE" && status == 404) {
            return Ok(body);
        }
        Err(LaunchError(format!("the Docker engine refused {method} {path} ({status}): {}", engine_message(&body))))
    }

    pub fn inspect(&self, container: &str) -> Result<Value, LaunchError> {
        let body = self.call("GET", &format!("/containers/{container}/json"), &EngineBody::None)?;
        serde_json::from_slice(&body).map_err(|e| LaunchError(format!("the Docker engine described {container} in no JSON: {e}")))
    }

    /// Waits for a container to stop; its exit status.
    pub fn wait(&self, container: &str, within: Duration) -> Result<i64, LaunchError> {
        let (status, body) = self.request_within("POST", &format!("/containers/{container}/wait"), &EngineBody::None, within)?;
        if status != 200 {
            return Err(LaunchError(format!("the Docker engine would not wait for {container} ({status}): {}", engine_message(&body))));
        }
        let answer: Value = serde_json::from_slice(&body).unwrap_or_default();
        Ok(answer["StatusCode"].as_i64().unwrap_or(-1))
    }

    /// A container's output so far: stdout and stderr.
    pub fn output(&self, container: &str) -> Result<(Vec<u8>, Vec<u8>), LaunchError> {
        let (status, body) = self.request("GET", &format!("/containers/{container}/logs?stdout=1&stderr=1"), &EngineBody::None)?;
        if status != 200 {
            return Err(LaunchError(format!("the Docker engine would not give the logs of {container} ({status})")));
        }
        let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
        demux(&mut &body[..], |stream, frame| if stream == 2 { stderr.extend_from_slice(frame) } else { stdout.extend_from_slice(frame) });
        Ok((stdout, stderr))
    }

    /// Follows a container's output until it stops, handing each frame on.
    pub fn follow(&self, container: &str, mut each: impl FnMut(u8, &[u8])) -> Result<(), LaunchError> {
        let path = format!("/containers/{container}/logs?stdout=1&stderr=1&follow=1");
        let (status, reader) = self.open("GET", &path, &EngineBody::None, None)?;
        if status != 200 {
            return Err(LaunchError(format!("the Docker engine would not follow the logs of {container} ({status})")));
        }
        let mut reader = reader;
        demux(&mut reader, &mut each);
        Ok(())
    }

    /// Makes sure the image is on the engine, pulling it if not.
    pub fn ensure_image(&self, image: &str, role: &str) -> Result<(), LaunchError> {
        let (status, _) = self.request("GET", &format!("/images/{}/json", encode(image)), &EngineBody::None)?;
        if status == 200 {
            return Ok(());
        }
        let (name, tag) = match image.rsplit_once(':').filter(|(_, t)| !t.contains('/')) {
            Some((n, t)) => (n, t),
            None => (image, "latest"),
        };
        let pulled = self.request_within("POST", &format!("/images/create?fromImage={}&tag={}", encode(name), encode(tag)), &EngineBody::None, Duration::from_secs(1800));
        let why = match pulled {
            Ok((200, body)) => {
                // The pull reports its errors inside a 200 stream of JSON lines.
                let error = body.split(|&b| b == b'\n').filter_map(|l| serde_json::from_slice::<Value>(l).ok()).find_map(|v| v["error"].as_str().map(String::from));
                match error {
                    None => return Ok(()),
                    Some(e) => e,
                }
            }
            Ok((status, body)) => format!("{status}: {}", engine_message(&body)),
            Err(e) => e.0,
        };
        Err(LaunchError(format!("the {role} image {image} is not on the Docker engine, and pulling it failed: {why}")))
    }

    /// Puts an archive's files into a container's file system at `path`.
    pub fn put_files(&self, container: &str, path: &str, files: &[TarFile]) -> Result<(), LaunchError> {
        self.call("PUT", &format!("/containers/{container}/archive?path={}", encode(path)), &EngineBody::Tar(tar(files))).map(drop)
    }

    /// Makes a task's objects on the engine (pulling missing images), puts
    /// its files in, and runs its init step, if it has one, to its end.
    /// Nothing else starts.
    pub fn prepare(&self, task: &DockerTask) -> Result<(), LaunchError> {
        self.request("GET", "/version", &EngineBody::None)?;
        let mut pulled = Vec::new();
        for c in &task.containers {
            if !pulled.contains(&c.image) {
                self.ensure_image(&c.image, c.role)?;
                pulled.push(c.image.clone());
            }
        }
        for volume in &task.volumes {
            self.call("POST", "/volumes/create", &EngineBody::Json(json!({"Name": volume, "Labels": task.volume_labels})))?;
        }
        // The engine makes containers concurrently; one at a time, a task's four cost four round trips.
        std::thread::scope(|s| {
            let made: Vec<_> = task
                .containers
                .iter()
                .map(|c| {
                    s.spawn(move || {
                        self.call("POST", &format!("/containers/create?name={}", c.name), &EngineBody::Json(c.create.clone()))
                            .map_err(|err| LaunchError(format!("cannot create the {} container (image {}): {}", c.role, c.image, err.0)))
                    })
                })
                .collect();
            made.into_iter().try_for_each(|m| m.join().expect("a create thread panicked").map(drop))
        })?;
        self.put_files(&task.containers[0].name, &task.files_path, &task.files)?;
        if let Some(init) = task.container("init") {
            self.start(init)?;
            let code = self.wait(&init.name, Duration::from_secs(120))?;
            if code != 0 {
                let (out, err) = self.output(&init.name).unwrap_or_default();
                return Err(LaunchError(format!("the init container {} failed (exit status {code}): {}{}", init.name, String::from_utf8_lossy(&out), String::from_utf8_lossy(&err))));
            }
        }
        Ok(())
    }

    /// Starts the containers at once, as a task's connectors start together.
    pub fn start_together(&self, containers: &[&DockerContainer]) -> Result<(), LaunchError> {
        std::thread::scope(|s| {
            let started: Vec<_> = containers.iter().map(|c| s.spawn(move || self.start(c))).collect();
            started.into_iter().try_for_each(|t| t.join().expect("a start thread panicked"))
        })
    }

    pub fn start(&self, c: &DockerContainer) -> Result<(), LaunchError> {
        self.call("POST", &format!("/containers/{}/start", c.name), &EngineBody::None)
            .map(drop)
            .map_err(|err| LaunchError(format!("cannot start the {} container {} (image {}): {}", c.role, c.name, c.image, err.0)))
    }

    /// Removes a task's containers, running or not, and its volumes; what is already gone is fine.
    pub fn remove(&self, task: &DockerTask) -> Result<(), LaunchError> {
        for c in &task.containers {
            self.call("DELETE", &format!("/containers/{}?force=true&v=true", c.name), &EngineBody::None)?;
        }
        for volume in &task.volumes {
            self.call("DELETE", &format!("/volumes/{volume}?force=true"), &EngineBody::None)?;
        }
        Ok(())
    }

    /// The fence between a connection's attempts on Docker: containers of
    /// its earlier tasks outlive a killed `sluice up` (and a task still
    /// stopping may linger), so before the next attempt's task is made they
    /// are removed, killed if still running, with their volumes. Their
    /// workloads have ended (a connection runs one attempt at a time), so
    /// nothing they still do can commit. Returns what was removed.
    pub fn clear_earlier_tasks(&self, connection: &str, workload: &str) -> Result<Vec<String>, LaunchError> {
        let label = format!("sluice.connection={connection}");
        let mut removed = Vec::new();
        for c in self.containers_labelled(&label)? {
            if c["Labels"]["sluice.workload"] == workload {
                continue;
            }
            let name = c["Names"][0].as_str().unwrap_or_default().trim_start_matches('/').to_owned();
            self.call("DELETE", &format!("/containers/{}?force=true&v=true", c["Id"].as_str().unwrap_or_default()), &EngineBody::None)?;
            removed.push(format!("{name} ({})", c["State"].as_str().unwrap_or("unknown state")));
        }
        for v in self.volumes_labelled(&label)? {
            if v["Labels"]["sluice.workload"] != workload {
                self.call("DELETE", &format!("/volumes/{}?force=true", v["Name"].as_str().unwrap_or_default()), &EngineBody::None)?;
            }
        }
        Ok(removed)
    }

    /// The volumes that carry `label` (`key` or `key=value`).
    pub fn volumes_labelled(&self, label: &str) -> Result<Vec<Value>, LaunchError> {
        let filter = encode(&json!({"label": [label]}).to_string());
        let body: Value = serde_json::from_slice(&self.call("GET", &format!("/volumes?filters={filter}"), &EngineBody::None)?)
            .map_err(|e| LaunchError(format!("the Docker engine listed volumes in no JSON: {e}")))?;
        Ok(body["Volumes"].as_array().cloned().unwrap_or_default())
    }

    /// The containers, stopped ones too, that carry `label` (`key` or `key=value`).
    pub fn containers_labelled(&self, label: &str) -> Result<Vec<Value>, LaunchError> {
        let filter = encode(&json!({"label": [label]}).to_string());
        let body = self.call("GET", &format!("/containers/json?all=1&filters={filter}"), &EngineBody::None)?;
        serde_json::from_slice(&body).map_err(|e| LaunchError(format!("the Docker engine listed containers in no JSON: {e}")))
    }

    /// Whether a file exists in a container's file system (its volumes included).
    pub fn has_file(&self, container: &str, path: &str) -> Result<bool, LaunchError> {
        let (status, _) = self.request("HEAD", &format!("/containers/{container}/archive?path={}", encode(path)), &EngineBody::None)?;
        Ok(status == 200)
    }
}

/// What an Engine API error body says: its `message`, or the text itself.
fn engine_message(body: &[u8]) -> String {
    serde_json::from_slice::<Value>(body).ok().and_then(|v| v["message"].as_str().map(String::from)).unwrap_or_else(|| String::from_utf8_lossy(body).trim().to_owned())
}

/// Percent-encodes a query or path value.
pub fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' | b':' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Splits the Engine API's multiplexed log stream (8-byte frame headers:
/// stream, 0, 0, 0, big-endian length) into its frames.
pub fn demux(reader: &mut dyn Read, mut each: impl FnMut(u8, &[u8])) {
    let mut header = [0u8; 8];
    let mut frame = Vec::new();
    while reader.read_exact(&mut header).is_ok() {
        let length = u32::from_be_bytes([header[4], header[5], header[6], header[7]]) as usize;
        frame.resize(length, 0);
        if reader.read_exact(&mut frame).is_err() {
            break;
        }
        each(header[0], &frame);
    }
}

/// A response body, undoing HTTP/1.1 chunked transfer encoding if the
/// response used it.
pub struct Dechunk<R> {
    inner: std::io::BufReader<R>,
    chunked: bool,
    left: usize,
    done: bool,
}

impl<R: Read> Dechunk<R> {
    fn next_size(&mut self) -> std::io::Result<Option<usize>> {
        use std::io::BufRead;
        let mut line = String::new();
        loop {
            line.clear();
            if self.inner.read_line(&mut line)? == 0 {
                return Ok(None);
            }
            if !line.trim().is_empty() {
                break;
            }
        }
        Ok(usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16).ok())
    }
}

impl<R: Read> Read for Dechunk<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if !self.chunked {
            return self.inner.read(buf);
        }
        if self.done {
            return Ok(0);
        }
        if self.left == 0 {
            match self.next_size()? {
                Some(0) | None => {
                    self.done = true;
                    return Ok(0);
                }
                Some(size) => self.left = size,
            }
        }
        let want = buf.len().min(self.left);
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            self.done = true;
        }
        self.left -= n;
        Ok(n)
    }
}

/// Runs plans on a Docker engine.
pub struct DockerExecutor {
    /// The engine's socket, `/var/run/docker.sock` by default.
    pub socket: PathBuf,
    pub settings: DockerSettings,
    /// How long a stopped task gets between SIGTERM and its removal.
    pub stop_grace: Duration,
}

/// How often the executor looks at a running task's containers.
const WATCH_EVERY: Duration = Duration::from_millis(250);
/// How long the engine may stay unreachable under a running task before the task is given up.
const ENGINE_PATIENCE: Duration = Duration::from_secs(30);

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T, LaunchError> + Send + 'static) -> Result<T, LaunchError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| LaunchError(format!("an engine call panicked: {e}")))?
}

/// What became of a container that stopped, in words, from the engine's state.
pub fn stopped_because(state: &Value, memory_mib: u32) -> String {
    let code = state["ExitCode"].as_i64().unwrap_or(-1);
    if state["OOMKilled"].as_bool() == Some(true) {
        return format!("killed by the kernel for exceeding its memory limit of {memory_mib} MiB (OOM kill; exit status {code})");
    }
    let error = state["Error"].as_str().unwrap_or_default();
    match code {
        137 => "killed with SIGKILL from outside the task (exit status 137)".to_owned(),
        143 => "stopped with SIGTERM from outside the task (exit status 143)".to_owned(),
        _ if !error.is_empty() => format!("exit status {code}: {error}"),
        _ => format!("exit status {code}"),
    }
}

impl DockerExecutor {
    pub fn new(socket: PathBuf, settings: DockerSettings) -> Self {
        DockerExecutor { socket, settings, stop_grace: Duration::from_secs(30) }
    }

    fn engine(&self) -> Engine {
        Engine { socket: self.socket.clone(), timeout: self.settings.call_timeout }
    }

    /// Runs the plan to its end, then removes its containers and volumes,
    /// whatever the outcome. Errors are launch failures; the caller fails
    /// the workload with them.
    pub async fn run(&self, app: &sluice_api::App, w: &sluice_domain::Workload, plan: &TaskPlan) -> Result<(), LaunchError> {
        let engine = self.engine();
        let task = docker_task(plan, &self.settings)?;
        let result = self.run_task(app, w, plan, &engine, &task).await;
        let (e, t) = (engine.clone(), task.clone());
        let cleaned = blocking(move || e.remove(&t)).await;
        if let Err(e) = cleaned {
            sluice_protocol::say!("sluice: removing the containers of {}: {e}", w.id);
        }
        result
    }

    async fn run_task(&self, app: &sluice_api::App, w: &sluice_domain::Workload, plan: &TaskPlan, engine: &Engine, task: &DockerTask) -> Result<(), LaunchError> {
        if let (Some(connection), Some((job_id, attempt))) = (sluice_domain::sync_workload_connection(&w.id), w.job_attempt()) {
            let (e, c, id) = (engine.clone(), connection.to_owned(), w.id.clone());
            let removed = blocking(move || e.clear_earlier_tasks(&c, &id)).await?;
            if !removed.is_empty() {
                let said = format!("sluice: removed the containers an earlier attempt of this connection left: {}\n", removed.join(", "));
                let _ = app.logs.append(job_id, attempt, &said).await;
            }
        }
        let (e, t) = (engine.clone(), task.clone());
        blocking(move || {
            e.prepare(&t)?;
            // All but the last: it reports to the workload API, which must know the task launched first.
            let (_, rest) = t.containers.split_last().expect("one container at least");
            e.start_together(&rest.iter().filter(|c| c.role != "init").collect::<Vec<_>>())
        })
        .await?;
        let last = task.containers.last().expect("one container at least");
        let now = jiff::Timestamp::now;
        let launched = sluice_domain::WorkloadEvent::Launched { task_ref: Some(format!("docker:{}", last.name)) };
        sluice_platform::workload_event(&app.ports(), &w.id, &launched, now()).await.map_err(|e| LaunchError(e.to_string()))?;
        let (e, c) = (engine.clone(), last.clone());
        blocking(move || e.start(&c)).await?;
        match plan.kind {
            WorkloadType::Sync => self.watch_sync(app, w, plan, engine, task).await,
            kind => {
                sluice_platform::workload_event(&app.ports(), &w.id, &sluice_domain::WorkloadEvent::Running, now()).await.map_err(|e| LaunchError(e.to_string()))?;
                let (e, name, within) = (engine.clone(), last.name.clone(), app.settings.connector_timeout);
                let (code, state, stdout, stderr) = blocking(move || {
                    let code = e.wait(&name, within).map_err(|err| LaunchError(format!("{} did not answer in time: {}", name, err.0)))?;
                    let state = e.inspect(&name)?["State"].clone();
                    let (stdout, stderr) = e.output(&name)?;
                    Ok((code, state, stdout, stderr))
                })
                .await?;
                let name = plan.connector.as_ref().map_or("connector", |c| c.name.as_str());
                let exit = if code == 0 { "container exited".to_owned() } else { format!("its container {} was {}", last.name, stopped_because(&state, plan.resources.memory_mib)) };
                crate::local::record_answer(app, w, kind, name, &stdout, &stderr, &exit).await?;
                Ok(())
            }
        }
    }

    /// Follows a sync's containers until the platform container stops:
    /// its output into the attempt log, a connector container that died
    /// from outside told to the orchestrator, a workload that ended (a
    /// cancel, the monitor) stopping the task.
    async fn watch_sync(&self, app: &sluice_api::App, w: &sluice_domain::Workload, plan: &TaskPlan, engine: &Engine, task: &DockerTask) -> Result<(), LaunchError> {
        let (job_id, attempt) = w.job_attempt().ok_or_else(|| LaunchError(format!("sync workload {} names no job", w.id)))?;
        let platform = task.container("orchestrator").expect("a sync has a platform container").name.clone();
        // The platform container's output is the attempt's log.
        let follower = {
            let (e, name, logs, handle) = (engine.clone(), platform.clone(), app.logs.clone(), tokio::runtime::Handle::current());
            tokio::task::spawn_blocking(move || {
                let mut pending = Vec::new();
                e.follow(&name, |_, frame| {
                    pending.extend_from_slice(frame);
                    if let Some(end) = pending.iter().rposition(|&b| b == b'\n') {
                        let text = String::from_utf8_lossy(&pending[..=end]).into_owned();
                        pending.drain(..=end);
                        let _ = handle.block_on(logs.append(job_id, attempt, &text));
                    }
                })?;
                if !pending.is_empty() {
                    let _ = handle.block_on(logs.append(job_id, attempt, &String::from_utf8_lossy(&pending)));
                }
                Ok::<(), LaunchError>(())
            })
        };
        let connectors: Vec<&DockerContainer> = task.containers.iter().filter(|c| c.role == "source" || c.role == "destination").collect();
        let mut told: Vec<&str> = Vec::new();
        let mut stop_sent: Option<tokio::time::Instant> = None;
        let mut unreachable_since: Option<tokio::time::Instant> = None;
        let mut last_status_check = tokio::time::Instant::now();
        let platform_state = loop {
            tokio::time::sleep(WATCH_EVERY).await;
            let (e, names) = (engine.clone(), std::iter::once(platform.clone()).chain(connectors.iter().map(|c| c.name.clone())).collect::<Vec<_>>());
            let states = match blocking(move || names.iter().map(|n| e.inspect(n).map(|v| v["State"].clone())).collect::<Result<Vec<Value>, _>>()).await {
                Ok(states) => {
                    unreachable_since = None;
                    states
                }
                Err(e) => {
                    let since = *unreachable_since.get_or_insert_with(tokio::time::Instant::now);
                    if since.elapsed() > ENGINE_PATIENCE {
                        return Err(LaunchError(format!("lost the task's containers: {}", e.0)));
                    }
                    continue;
                }
            };
            if states[0]["Running"].as_bool() != Some(true) {
                break states[0].clone();
            }
            for (c, state) in connectors.iter().zip(&states[1..]) {
                if state["Running"].as_bool() == Some(true) || told.contains(&c.role) {
                    continue;
                }
                told.push(c.role);
                self.tell_orchestrator(engine, &platform, c, state, plan).await;
            }
            // A workload that ended under the task (cancelled, failed by the monitor) stops it.
            if last_status_check.elapsed() >= Duration::from_secs(1) {
                last_status_check = tokio::time::Instant::now();
                match stop_sent {
                    None => {
                        let ended = app.workloads.get_workload(&w.id).await.map(|c| c.status.is_terminal()).unwrap_or(false);
                        if ended {
                            let (e, name) = (engine.clone(), platform.clone());
                            let _ = blocking(move || e.call("POST", &format!("/containers/{name}/kill?signal=SIGTERM"), &EngineBody::None)).await;
                            stop_sent = Some(tokio::time::Instant::now());
                        }
                    }
                    Some(at) if at.elapsed() > self.stop_grace => break json!({"ExitCode": -1, "Error": "stopped by Sluice"}),
                    Some(_) => {}
                }
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(10), follower).await;
        // What the connectors' own containers printed outside their pipes (a wrapper's error).
        for c in &connectors {
            let (e, name) = (engine.clone(), c.name.clone());
            if let Ok((out, err)) = blocking(move || e.output(&name)).await {
                let text = format!("{}{}", String::from_utf8_lossy(&out), String::from_utf8_lossy(&err));
                if !text.trim().is_empty() {
                    let _ = app.logs.append(job_id, attempt, &format!("[{} container] {}\n", c.role, text.trim_end())).await;
                }
            }
        }
        // The orchestrator reports its own end; an active workload means it died first.
        let current = app.workloads.get_workload(&w.id).await?;
        if current.status.is_active() {
            return Err(LaunchError(format!(
                "the {} container {platform} stopped without reporting the attempt's end: {}",
                crate::containers::platform_program(plan),
                stopped_because(&platform_state, plan.resources.memory_mib)
            )));
        }
        Ok(())
    }

    /// A connector container stopped. If the wrapper inside could not
    /// record its exit (the container was killed with it), or the kernel
    /// killed it for memory, the orchestrator learns it from us: `cause`,
    /// and `exit` where missing, written onto the connector's volume
    /// through the platform container, which mounts it too.
    async fn tell_orchestrator(&self, engine: &Engine, platform: &str, container: &DockerContainer, state: &Value, plan: &TaskPlan) {
        let dir = role_dir(container.role).display().to_string();
        let oom = state["OOMKilled"].as_bool() == Some(true);
        let (e, platform, name, image, role) = (engine.clone(), platform.to_owned(), container.name.clone(), container.image.clone(), container.role);
        let because = stopped_because(state, plan.resources.memory_mib);
        let code = state["ExitCode"].as_i64().unwrap_or(137);
        let told = blocking(move || {
            let has_exit = e.has_file(&platform, &format!("{dir}/exit"))?;
            if has_exit && !oom {
                return Ok(());
            }
            let cause = format!("the {role} container {name} (image {image}) was {because}");
            let mut files = vec![TarFile { name: "cause".into(), data: cause.into_bytes(), mode: 0o644, uid: 0 }];
            if !has_exit {
                files.push(TarFile { name: "exit".into(), data: format!("{code}\n").into_bytes(), mode: 0o644, uid: 0 });
            }
            e.put_files(&platform, &dir, &files)
        })
        .await;
        if let Err(e) = told {
            sluice_protocol::say!("sluice: could not tell the orchestrator of {} that {} stopped: {e}", plan.workload_id, container.name);
        }
    }
}

/// The Docker engine's socket: the one `DOCKER_HOST` names (`unix:///path`),
/// else Docker's default.
pub fn default_socket() -> PathBuf {
    let from_env = std::env::var("DOCKER_HOST").ok().and_then(|host| host.strip_prefix("unix://").map(PathBuf::from));
    from_env.unwrap_or_else(|| PathBuf::from("/var/run/docker.sock"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_frames_split_into_stdout_and_stderr_through_chunking() {
        let mut frames = Vec::new();
        for (stream, text) in [(1u8, "{\"type\":\"SPEC\"}\n"), (2, "warming up\n"), (1, "done\n")] {
            frames.extend_from_slice(&[stream, 0, 0, 0]);
            frames.extend_from_slice(&(text.len() as u32).to_be_bytes());
            frames.extend_from_slice(text.as_bytes());
        }
        let (a, b) = frames.split_at(10);
        let mut chunked = Vec::new();
        for part in [a, b] {
            chunked.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
            chunked.extend_from_slice(part);
            chunked.extend_from_slice(b"\r\n");
        }
        chunked.extend_from_slice(b"0\r\n\r\n");
        let read = |body: &[u8], chunked: bool| {
            let mut out = Vec::new();
            Dechunk { inner: std::io::BufReader::new(body), chunked, left: 0, done: false }.read_to_end(&mut out).unwrap();
            out
        };
        assert_eq!(read(&chunked, true), frames);
        assert_eq!(read(&frames, false), frames, "a body that is not chunked stays as it is");
        let (mut out, mut err) = (String::new(), String::new());
        demux(&mut &frames[..], |s, f| if s == 2 { err.push_str(std::str::from_utf8(f).unwrap()) } else { out.push_str(std::str::from_utf8(f).unwrap()) });
        assert_eq!((out.as_str(), err.as_str()), ("{\"type\":\"SPEC\"}\ndone\n", "warming up\n"));
    }

    #[test]
    fn a_stopped_container_is_described_from_the_engine_state() {
        assert!(stopped_because(&json!({"ExitCode": 137, "OOMKilled": true}), 64).contains("memory limit of 64 MiB (OOM kill"));
        assert!(stopped_because(&json!({"ExitCode": 137, "OOMKilled": false}), 64).contains("SIGKILL"));
        assert_eq!(stopped_because(&json!({"ExitCode": 3, "OOMKilled": false, "Error": ""}), 64), "exit status 3");
    }
}
