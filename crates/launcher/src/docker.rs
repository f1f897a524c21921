//! The Docker executor: a plan as containers sharing one volume, for
//! connectors that exist only as Airbyte images.
//!
//! [`docker_task`] turns a plan into plain data: the volume, the files the
//! init step needs (put into the init container as an archive, so configs
//! and the workload credential appear in no container's environment or
//! command line), and one Engine API `ContainerCreate` body per container,
//! in start order. [`engine_calls`] is the sequence of Engine API requests
//! that runs it; `run` sends them to the daemon's socket.
//!
//! A sync runs four containers on the volume mounted at `/sluice`:
//! - `init` makes the named pipes the orchestrator attaches through;
//! - `source` and `destination` wait for their catalog (the orchestrator
//!   writes it last), then run the connector on the pipes with the
//!   orchestrator's attach wrapper, which stops it when `cancel` appears;
//! - `orchestrator` runs the attempt and reports to the workload API.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use sluice_domain::WorkloadType;

use crate::containers::{connector_command, connector_env, orchestrator_command, platform_mode, pipes_script, shared, task_files, CONNECTOR};
pub use crate::containers::SHARED;
use crate::plan::{files, Container, Runtime, TaskPlan};
use crate::LaunchError;

#[derive(Debug, Clone)]
pub struct DockerSettings {
    /// The image with the `orchestrator` binary and a POSIX shell.
    pub orchestrator_image: String,
    /// Images of our reference connectors, by name (`source-faker` -> `sluice/source-faker:0.1.0`).
    pub reference_images: BTreeMap<String, String>,
    /// `host` lets the orchestrator reach a workload API on the host's 127.0.0.1.
    pub network_mode: String,
}

/// A plan as Docker objects, in the order they are made and started.
#[derive(Debug, Clone, PartialEq)]
pub struct DockerTask {
    pub volume: String,
    /// Files put under `/sluice` through the init container before it starts.
    pub files: Vec<(String, Vec<u8>)>,
    pub containers: Vec<DockerContainer>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DockerContainer {
    pub name: String,
    /// The Engine API `ContainerCreate` body.
    pub create: Value,
}

impl DockerTask {
    pub fn container(&self, role: &str) -> Option<&DockerContainer> {
        self.containers.iter().find(|c| c.name.ends_with(&format!("-{role}")))
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
        Runtime::Pypi(spec) => Err(LaunchError(format!("{} comes from PyPI ({spec}); run it with the local executor", container.name))),
        Runtime::Executable(path) => Err(LaunchError(format!("{} is the executable {path}; run it with the local executor", container.name))),
    }
}

fn create_body(image: &str, cmd: Vec<String>, env: &BTreeMap<String, String>, plan: &TaskPlan, volume: &str, settings: &DockerSettings) -> Value {
    let env: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    json!({
        "Image": image,
        // `[""]` resets the image's entrypoint: the command below is the whole story.
        "Entrypoint": [""],
        "Cmd": cmd,
        "Env": env,
        "WorkingDir": SHARED,
        "Labels": {"sluice.workload": plan.workload_id, "sluice.kind": plan.kind.as_str()},
        "HostConfig": {
            "Mounts": [{"Type": "volume", "Source": volume, "Target": SHARED}],
            "NanoCpus": u64::from(plan.resources.cpu_millis) * 1_000_000,
            "Memory": u64::from(plan.resources.memory_mib) * 1024 * 1024,
            "NetworkMode": settings.network_mode,
            "AutoRemove": false,
        },
    })
}

/// The plan as Docker objects. Pure: nothing is created here.
pub fn docker_task(plan: &TaskPlan, settings: &DockerSettings) -> Result<DockerTask, LaunchError> {
    let volume = format!("sluice-{}", plan.workload_id.to_lowercase().replace(|c: char| !c.is_ascii_alphanumeric() && c != '-', "-"));
    let name = |role: &str| format!("{volume}-{role}");
    let no_env = BTreeMap::new();
    let mut task = DockerTask { volume: volume.clone(), files: Vec::new(), containers: Vec::new() };
    match plan.kind {
        WorkloadType::Sync => {
            let (source, destination) = match (&plan.source, &plan.destination) {
                (Some(s), Some(d)) => (s, d),
                _ => return Err(LaunchError("a sync plan needs a source and a destination".into())),
            };
            // Sorted by name, so `credential` comes before `sync.json`.
            task.files.extend(task_files(plan)?.into_iter().map(|(name, contents)| (name, contents.into_bytes())));
            let init = vec!["/bin/sh".to_owned(), "-c".to_owned(), pipes_script(WorkloadType::Sync)];
            task.containers.push(DockerContainer { name: name("init"), create: create_body(&settings.orchestrator_image, init, &no_env, plan, &volume, settings) });
            for (role, container) in [("source", source), ("destination", destination)] {
                let create = create_body(&image(container, settings)?, connector_command(role), &connector_env(plan, container), plan, &volume, settings);
                task.containers.push(DockerContainer { name: name(role), create });
            }
            let cmd = orchestrator_command(plan);
            let env = BTreeMap::from([("SLUICE_WORKLOAD_TOKEN_FILE".to_owned(), shared("credential")), platform_mode(plan)]);
            task.containers.push(DockerContainer { name: name("orchestrator"), create: create_body(&settings.orchestrator_image, cmd, &env, plan, &volume, settings) });
        }
        kind => {
            let connector = plan.connector.as_ref().ok_or_else(|| LaunchError("the plan names no connector".into()))?;
            let mut cmd: Vec<String> = CONNECTOR.map(String::from).to_vec();
            cmd.push(kind.as_str().to_owned());
            if kind != WorkloadType::Spec {
                let config = plan.file(files::CONNECTOR_CONFIG).ok_or_else(|| LaunchError("the plan has no connector config".into()))?;
                task.files.push((files::CONNECTOR_CONFIG.into(), config.as_bytes().to_vec()));
                cmd.extend(["--config".to_owned(), shared(files::CONNECTOR_CONFIG)]);
            }
            // The connector's own container receives the files: there is no init step.
            let create = create_body(&image(connector, settings)?, cmd, &connector.env, plan, &volume, settings);
            task.containers.push(DockerContainer { name: name("connector"), create });
        }
    }
    Ok(task)
}

/// One request to the Docker Engine API.
#[derive(Debug, Clone, PartialEq)]
pub struct EngineCall {
    pub method: &'static str,
    pub path: String,
    pub body: EngineBody,
}

#[derive(Debug, Clone, PartialEq)]
pub enum EngineBody {
    None,
    Json(Value),
    /// A tar archive (`application/x-tar`).
    Tar(Vec<u8>),
}

/// The requests that run a task: make the volume and the containers, put
/// the files in through the first container, start them in order, wait for
/// the last (the orchestrator, or the lone connector), then clean up.
pub fn engine_calls(task: &DockerTask) -> Vec<EngineCall> {
    let call = |method, path: String, body| EngineCall { method, path, body };
    let mut calls = vec![call("POST", "/v1.43/volumes/create".into(), EngineBody::Json(json!({"Name": task.volume, "Labels": {"sluice.volume": "task"}})))];
    for c in &task.containers {
        calls.push(call("POST", format!("/v1.43/containers/create?name={}", c.name), EngineBody::Json(c.create.clone())));
    }
    let first = &task.containers[0].name;
    calls.push(call("PUT", format!("/v1.43/containers/{first}/archive?path={SHARED}"), EngineBody::Tar(tar(&task.files))));
    for (i, c) in task.containers.iter().enumerate() {
        calls.push(call("POST", format!("/v1.43/containers/{}/start", c.name), EngineBody::None));
        // The init step must finish before the others start.
        if i == 0 && task.containers.len() > 1 {
            calls.push(call("POST", format!("/v1.43/containers/{}/wait", c.name), EngineBody::None));
        }
    }
    let last = &task.containers[task.containers.len() - 1].name;
    calls.push(call("POST", format!("/v1.43/containers/{last}/wait"), EngineBody::None));
    for c in &task.containers {
        calls.push(call("DELETE", format!("/v1.43/containers/{}?force=true", c.name), EngineBody::None));
    }
    calls.push(call("DELETE", format!("/v1.43/volumes/{}", task.volume), EngineBody::None));
    calls
}

/// A POSIX tar (ustar) archive of regular files, mode 0600.
pub fn tar(files: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, data) in files {
        let mut header = [0u8; 512];
        header[..name.len().min(100)].copy_from_slice(&name.as_bytes()[..name.len().min(100)]);
        let octal = |field: &mut [u8], value: u64| {
            let text = format!("{value:0width$o}\0", width = field.len() - 1);
            field.copy_from_slice(text.as_bytes());
        };
        octal(&mut header[100..108], 0o600);
        octal(&mut header[108..116], 0);
        octal(&mut header[116..124], 0);
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

/// Runs plans on a Docker daemon, for connectors that exist only as images.
pub struct DockerExecutor {
    /// The daemon's socket, `/var/run/docker.sock` by default.
    pub socket: PathBuf,
    pub settings: DockerSettings,
}

impl DockerExecutor {
    pub async fn run(&self, app: &sluice_api::App, w: &sluice_domain::Workload, plan: &TaskPlan) -> Result<(), LaunchError> {
        if !self.socket.exists() {
            return Err(LaunchError(format!(
                "a connector of this workload exists only as an image, and there is no Docker daemon at {}; start Docker, or define the connector by a PyPI package or an executable",
                self.socket.display()
            )));
        }
        let task = docker_task(plan, &self.settings)?;
        let calls = engine_calls(&task);
        // Everything up to the last container's start, then "launched", then the wait and cleanup.
        let last_start = calls.iter().rposition(|c| c.path.ends_with("/start")).expect("a task starts its containers");
        let (start, finish) = calls.split_at(last_start + 1);
        let socket = self.socket.clone();
        let blocking = |calls: Vec<EngineCall>| {
            let socket = socket.clone();
            tokio::task::spawn_blocking(move || run(&socket, &calls))
        };
        blocking(start.to_vec()).await.map_err(|e| LaunchError(e.to_string()))??;
        let last = task.containers.last().expect("one container at least").name.clone();
        let launched = sluice_domain::WorkloadEvent::Launched { task_ref: Some(format!("docker:{last}")) };
        sluice_platform::workload_event(&app.ports(), &w.id, &launched, jiff::Timestamp::now()).await.map_err(|e| LaunchError(e.to_string()))?;
        if plan.kind != WorkloadType::Sync {
            sluice_platform::workload_event(&app.ports(), &w.id, &sluice_domain::WorkloadEvent::Running, jiff::Timestamp::now())
                .await
                .map_err(|e| LaunchError(e.to_string()))?;
        }
        let (waits, cleanup): (Vec<EngineCall>, Vec<EngineCall>) = finish.iter().cloned().partition(|c| c.method != "DELETE");
        let waited = blocking(waits).await.map_err(|e| LaunchError(e.to_string()))?;
        let output = if plan.kind == WorkloadType::Sync || waited.is_err() {
            None
        } else {
            let (socket, name) = (self.socket.clone(), last.clone());
            Some(tokio::task::spawn_blocking(move || container_output(&socket, &name)).await.map_err(|e| LaunchError(e.to_string()))??)
        };
        let cleaned = blocking(cleanup).await.map_err(|e| LaunchError(e.to_string()))?;
        waited?;
        if let Err(e) = cleaned {
            eprintln!("sluice: cleaning up after {}: {e}", w.id);
        }
        if let Some((stdout, stderr)) = output {
            let name = plan.connector.as_ref().map_or("connector", |c| c.name.as_str());
            crate::local::record_answer(app, w, plan.kind, name, &stdout, &stderr, "container exited").await?;
        } else {
            // A sync's orchestrator reports its own end; an active workload means it died first.
            let current = app.workloads.get_workload(&w.id).await?;
            if current.status.is_active() {
                return Err(LaunchError(format!("the orchestrator container {last} exited without reporting the attempt's end")));
            }
        }
        Ok(())
    }
}

/// A stopped container's stdout and stderr, from the Engine API's
/// multiplexed log stream (8-byte frame headers: stream, 0, 0, 0, length).
fn container_output(socket: &Path, name: &str) -> Result<(Vec<u8>, Vec<u8>), LaunchError> {
    let call = EngineCall { method: "GET", path: format!("/v1.43/containers/{name}/logs?stdout=1&stderr=1"), body: EngineBody::None };
    let (status, body) = send(socket, &call).map_err(|e| LaunchError(format!("reading the logs of {name}: {e}")))?;
    if status != 200 {
        return Err(LaunchError(format!("Docker would not give the logs of {name} ({status})")));
    }
    let body = dechunk(&body);
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    let mut rest = &body[..];
    while rest.len() >= 8 {
        let length = u32::from_be_bytes([rest[4], rest[5], rest[6], rest[7]]) as usize;
        let frame = &rest[8..(8 + length).min(rest.len())];
        if rest[0] == 2 { stderr.extend_from_slice(frame) } else { stdout.extend_from_slice(frame) }
        rest = &rest[(8 + length).min(rest.len())..];
    }
    Ok((stdout, stderr))
}

/// Undoes HTTP/1.1 chunked transfer encoding, if the body uses it.
fn dechunk(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut rest = body;
    loop {
        let Some(line_end) = rest.windows(2).position(|w| w == b"\r\n") else { return body.to_vec() };
        let Ok(size) = usize::from_str_radix(std::str::from_utf8(&rest[..line_end]).unwrap_or("x").trim(), 16) else { return body.to_vec() };
        if size == 0 {
            return out;
        }
        let start = line_end + 2;
        if rest.len() < start + size {
            return body.to_vec();
        }
        out.extend_from_slice(&rest[start..start + size]);
        rest = &rest[(start + size + 2).min(rest.len())..];
    }
}

/// Sends the calls to the Docker daemon at `socket` (`/var/run/docker.sock`).
pub fn run(socket: &Path, calls: &[EngineCall]) -> Result<(), LaunchError> {
    for call in calls {
        let (status, body) = send(socket, call).map_err(|e| LaunchError(format!("Docker at {}: {} {}: {e}", socket.display(), call.method, call.path)))?;
        // Cleaning up what is already gone is fine.
        let ok = (200..300).contains(&status) || (call.method == "DELETE" && status == 404);
        if !ok {
            return Err(LaunchError(format!("Docker refused {} {} ({status}): {}", call.method, call.path, String::from_utf8_lossy(&body))));
        }
    }
    Ok(())
}

fn send(socket: &Path, call: &EngineCall) -> std::io::Result<(u16, Vec<u8>)> {
    use std::io::{Read, Write};
    let mut stream = std::os::unix::net::UnixStream::connect(socket)?;
    let (content_type, body) = match &call.body {
        EngineBody::None => ("application/json", Vec::new()),
        EngineBody::Json(v) => ("application/json", v.to_string().into_bytes()),
        EngineBody::Tar(t) => ("application/x-tar", t.clone()),
    };
    write!(stream, "{} {} HTTP/1.1\r\nHost: docker\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", call.method, call.path, body.len())?;
    stream.write_all(&body)?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let head_end = response.windows(4).position(|w| w == b"\r\n\r\n").map_or(response.len(), |p| p + 4);
    let status = std::str::from_utf8(&response[..head_end]).ok().and_then(|h| h.split_whitespace().nth(1)).and_then(|s| s.parse().ok()).unwrap_or(0);
    Ok((status, response[head_end..].to_vec()))
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
        let body = dechunk(&chunked);
        assert_eq!(body, frames);
        assert_eq!(dechunk(&frames), frames, "a body that is not chunked stays as it is");
    }
}
