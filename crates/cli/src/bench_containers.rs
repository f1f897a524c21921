//! `sluice bench --containers`: what running a task as containers costs.
//!
//! The same transfer (source-faker's users into destination-dev-null) in one
//! run, legacy and socket mode, as local processes (`sluice orchestrate`
//! spawning both connectors) and as the Docker executor's containers (init,
//! source, destination, orchestrator or bookkeeper on the task's volumes,
//! from the images `task-images/build-images.sh` builds); the ratio
//! container/process at two sizes, and from them the ratio of the rates
//! alone and the containers' fixed cost. Then the time from `POST /jobs` to the source
//! container running, under `sluice up --executor docker`, with the images
//! present.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::{json, Value};
use sluice_domain::WorkloadType;
use sluice_launcher::docker::{docker_task, DockerSettings, Engine, EngineBody};
use sluice_launcher::plan::{files, Container, PlanChannel, PlanFile, Resources, Runtime, TaskPlan};
use sluice_protocol::socket::Format;

/// The image of a reference connector or the orchestrator: as
/// `task-images/build-images.sh` names it in its environment, else by our version.
fn image_of(var: &str, name: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| format!("sluice/{name}:{}", env!("CARGO_PKG_VERSION")))
}

fn engine() -> Engine {
    Engine { socket: sluice_launcher::docker::default_socket(), timeout: Duration::from_secs(60) }
}

fn settings() -> DockerSettings {
    let references = [("source-faker", "SLUICE_IMAGE_SOURCE_FAKER"), ("destination-dev-null", "SLUICE_IMAGE_DESTINATION_DEV_NULL")];
    let images: BTreeMap<String, String> = references.iter().map(|(n, var)| (n.to_string(), image_of(var, n))).collect();
    DockerSettings::new(image_of("SLUICE_ORCHESTRATOR_IMAGE", "orchestrator"), images)
}

fn plan(records: u64, record_size: usize, channel: Option<PlanChannel>, catalog: &Value, id: &str) -> TaskPlan {
    let file = |name: &str, value: Value| PlanFile { name: name.into(), contents: value.to_string() };
    let reference = |name: &str| Container { name: name.into(), runtime: Runtime::Reference(name.into()), env: BTreeMap::new() };
    TaskPlan {
        workload_id: id.into(),
        kind: WorkloadType::Sync,
        files: vec![
            file(files::SOURCE_CONFIG, json!({"count": records, "record_size_bytes": record_size, "records_per_slice": 1000})),
            file(files::DESTINATION_CONFIG, json!({})),
            file(files::CATALOG, catalog.clone()),
            file(files::STATE, json!([])),
            file(files::SELECTED_FIELDS, json!([])),
        ],
        connector: None,
        source: Some(reference("source-faker")),
        destination: Some(reference("destination-dev-null")),
        resources: Resources { cpu_millis: 1000 * std::thread::available_parallelism().map_or(1, |n| n.get() as u32), memory_mib: 2048 },
        data_channel: channel,
        workload_api_url: String::new(),
        credential: String::new(),
    }
}

/// One task as containers, reporting to a file instead of a workload API;
/// the seconds from the first connector's start to the platform container's
/// end, and the records it moved.
fn containers_once(plan: &TaskPlan) -> anyhow::Result<(f64, u64)> {
    let e = engine();
    let mut task = docker_task(plan, &settings())?;
    let platform = task.containers.iter_mut().find(|c| c.role == "orchestrator").context("a platform container")?;
    let program = platform.create["Cmd"][0].clone();
    platform.create["Cmd"] = json!([program, "--config", "/sluice/sync.json", "--outcome-file", "/sluice/outcome.json"]);
    let run = || -> anyhow::Result<(f64, u64)> {
        e.prepare(&task)?;
        let started = Instant::now();
        e.start_together(&task.containers.iter().filter(|c| c.role != "init").collect::<Vec<_>>())?;
        let last = &task.containers[task.containers.len() - 1].name;
        let code = e.wait(last, Duration::from_secs(3600))?;
        let secs = started.elapsed().as_secs_f64();
        let (_, tar) = e.request("GET", &format!("/containers/{last}/archive?path=/sluice/outcome.json"), &EngineBody::None)?;
        let outcome: Value = tar_file(&tar).and_then(|b| serde_json::from_slice(b).ok()).with_context(|| format!("the platform container (exit {code}) wrote no outcome"))?;
        if outcome["status"] != "succeeded" {
            bail!("the containers' sync did not succeed: {outcome}");
        }
        Ok((secs, outcome["streams"][0]["emitted"]["records"].as_u64().unwrap_or(0)))
    };
    let result = run();
    let _ = e.remove(&task);
    result
}

/// The first file of a tar archive.
fn tar_file(tar: &[u8]) -> Option<&[u8]> {
    let size = usize::from_str_radix(std::str::from_utf8(tar.get(124..135)?).ok()?.trim_matches(|c: char| c == '\0' || c == ' '), 8).ok()?;
    tar.get(512..512 + size)
}

/// The same task as local processes.
fn processes_once(sluice: &Path, plan: &TaskPlan, dir: &Path) -> anyhow::Result<(f64, u64)> {
    let spawn = |name: &str| sluice_orchestrator::Launch::Spawn { command: vec![sluice.display().to_string(), "connector".into(), name.into()], env: BTreeMap::new() };
    let sockets = std::env::temp_dir().join(format!("sluice-bench-{}", std::process::id()));
    let config = plan.sync_config(spawn("source-faker"), spawn("destination-dev-null"), dir.join("work"), &sockets)?;
    let file = dir.join("sync.json");
    std::fs::write(&file, serde_json::to_vec(&config)?)?;
    let outcome_file = dir.join("outcome.json");
    let started = Instant::now();
    let status = Command::new(sluice).args(["orchestrate", "--config"]).arg(&file).arg("--outcome-file").arg(&outcome_file).stdout(Stdio::null()).stderr(Stdio::null()).status()?;
    let secs = started.elapsed().as_secs_f64();
    let _ = std::fs::remove_dir_all(&sockets);
    let outcome: Value = serde_json::from_slice(&std::fs::read(&outcome_file).with_context(|| format!("orchestrate ({status}) wrote no outcome"))?)?;
    if outcome["status"] != "succeeded" {
        bail!("the processes' sync did not succeed: {outcome}");
    }
    Ok((secs, outcome["streams"][0]["emitted"]["records"].as_u64().unwrap_or(0)))
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// One run's seconds, as processes and as containers, at the small and
/// at the large size.
struct Run {
    processes: [f64; 2],
    containers: [f64; 2],
}

/// `runs` runs of one mode at `records` and at four times as many. Each run
/// takes all four measurements back to back, processes first in one run and
/// containers first in the next, so that a slow spell of a busy machine
/// falls on both ways of one run alike and the ratios are taken within a run.
fn transfer(sluice: &Path, records: u64, record_size: usize, runs: usize, channel: &Option<PlanChannel>, catalog: &Value, dir: &Path) -> anyhow::Result<Vec<Run>> {
    let mut all = Vec::new();
    for run in 0..runs {
        let mut one = Run { processes: [0.0; 2], containers: [0.0; 2] };
        for (size, n) in [records, records * 4].into_iter().enumerate() {
            let plan = plan(n, record_size, channel.clone(), catalog, &format!("bench-{}-{n}-{run}", std::process::id()));
            for containers in if run % 2 == 0 { [false, true] } else { [true, false] } {
                let (secs, moved) = if containers { containers_once(&plan)? } else { processes_once(sluice, &plan, dir)? };
                if moved != n {
                    bail!("the {} moved {moved} of {n} records", if containers { "containers" } else { "processes" });
                }
                if containers { one.containers[size] = secs } else { one.processes[size] = secs }
            }
        }
        all.push(one);
    }
    Ok(all)
}

/// Each mode at `records` and at four times as many: the ratio of the
/// totals, then, from the two sizes (time = fixed + records / rate), the
/// ratio of the rates alone and what containers add at the start and end.
/// Every figure is the median over the runs of that figure within a run.
pub fn run(records: u64, record_size: usize, runs: usize, catalog: &Value, dir: &Path) -> anyhow::Result<()> {
    let sluice = std::env::current_exe()?;
    engine().request("GET", "/version", &EngineBody::None).map_err(|e| anyhow::anyhow!("{}", e.0))?;
    eprintln!("sluice bench --containers: {records} and {} records of {record_size} bytes, {runs} runs each, engine at {}", records * 4, engine().socket.display());
    println!("{:<32} {:>9} {:>13} {:>13} {:>11}", "mode", "records", "processes", "containers", "c/p rate");
    let modes = [("legacy (orchestrator)", None), ("socket PROTOBUF x2 (bookkeeper)", Some(PlanChannel { format: Format::Protobuf, socket_count: 2 }))];
    for (name, channel) in modes {
        let measured = transfer(&sluice, records, record_size, runs, &channel, catalog, dir).with_context(|| name.to_owned())?;
        let of = |f: &dyn Fn(&Run) -> f64| median(measured.iter().map(f).collect());
        // Runs too short for the machine's noise can give a larger size the shorter time.
        let rate = |per_second: f64| if per_second > 0.0 { format!("{per_second:.0} rec/s") } else { "too short".to_owned() };
        for (size, n) in [records, records * 4].into_iter().enumerate() {
            let (p, c) = (of(&|r| n as f64 / r.processes[size]), of(&|r| n as f64 / r.containers[size]));
            println!("{name:<32} {n:>9} {:>13} {:>13} {:>10.2}x", rate(p), rate(c), of(&|r| r.processes[size] / r.containers[size]));
        }
        // Three times the records more: what that costs each way is the rate alone.
        let extra = (3 * records) as f64;
        let per_record = |secs: &[f64; 2]| (secs[1] - secs[0]) / extra;
        let fixed = |r: &Run| (r.containers[0] - per_record(&r.containers) * records as f64) - (r.processes[0] - per_record(&r.processes) * records as f64);
        println!(
            "{name:<32} {:>9} {:>13} {:>13} {:>10.2}x   (containers' fixed cost {:+.0} ms)",
            "rate",
            rate(of(&|r| 1.0 / per_record(&r.processes))),
            rate(of(&|r| 1.0 / per_record(&r.containers))),
            of(&|r| per_record(&r.processes) / per_record(&r.containers)),
            of(&fixed) * 1000.0
        );
    }
    match job_to_container(runs) {
        Ok(latencies) => println!("POST /jobs to the source container running (images present), median of {runs}: {:.0} ms", median(latencies) * 1000.0),
        Err(e) => println!("POST /jobs to the source container: not measured ({e:#})"),
    }
    Ok(())
}

/// Seconds from `POST /jobs` to the engine's `StartedAt` of the job's
/// source container, under a `sluice up --executor docker` of our own.
fn job_to_container(runs: usize) -> anyhow::Result<Vec<f64>> {
    let data = tempdir()?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let mut up = Command::new(std::env::current_exe()?)
        .args(["up", "--executor", "docker", "--data-dir"])
        .arg(&data)
        .args(["--listen", &format!("127.0.0.1:{port}"), "--orchestrator-image", &settings().orchestrator_image])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let result = (|| {
        let deadline = Instant::now() + Duration::from_secs(30);
        let client = loop {
            match crate::remote::Client::connect(&crate::remote::Target::from_credentials(data.join("credentials.json"))) {
                Ok(client) => break client,
                Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
                Err(e) => return Err(e.context("sluice up did not start")),
            }
        };
        let id = |value: Value, key: &str| value[key].as_str().map(String::from).with_context(|| format!("no {key} in {value}"));
        let workspace = id(client.call("POST", "/workspaces", Some(&json!({"name": "bench"})))?, "workspaceId")?;
        // A source that lives about a second, so its container is there to be seen.
        let source = json!({"name": "faker", "workspaceId": workspace, "configuration": {"sourceType": "sluice-faker", "count": 1000, "records_per_slice": 100, "slice_pause_ms": 100}});
        let source = id(client.call("POST", "/sources", Some(&source))?, "sourceId")?;
        let destination = json!({"name": "null", "workspaceId": workspace, "configuration": {"destinationType": "dev-null"}});
        let destination = id(client.call("POST", "/destinations", Some(&destination))?, "destinationId")?;
        let connection = id(client.call("POST", "/connections", Some(&json!({"sourceId": source, "destinationId": destination})))?, "connectionId")?;
        let mut latencies = Vec::new();
        for _ in 0..runs.max(1) {
            let asked = jiff::Timestamp::now();
            let job = client.call("POST", "/jobs", Some(&json!({"connectionId": connection, "jobType": "sync"})))?["jobId"].as_i64().context("a job id")?;
            let prefix = format!("{connection}_{job}_");
            let started = loop {
                let sources = engine().containers_labelled("sluice.role=source").map_err(|e| anyhow::anyhow!(e.0))?;
                let mine = sources.iter().find(|c| c["Labels"]["sluice.workload"].as_str().is_some_and(|w| w.starts_with(&prefix)));
                // A container gone between the listing and the look is looked for again.
                let inspected = mine.and_then(|c| engine().inspect(c["Id"].as_str().unwrap_or_default()).ok());
                if let Some(at) = inspected.and_then(|i| i["State"]["StartedAt"].as_str().and_then(|t| t.parse::<jiff::Timestamp>().ok())).filter(|t| t.as_second() > 0) {
                    break at;
                }
                if (jiff::Timestamp::now() - asked).as_secs() > 60 {
                    bail!("the source container of job {job} did not start in a minute");
                }
                std::thread::sleep(Duration::from_millis(5));
            };
            latencies.push((started - asked).as_secs_f64());
            while !["succeeded", "failed", "cancelled"].contains(&client.call("GET", &format!("/jobs/{job}"), None)?["status"].as_str().unwrap_or("")) {
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        Ok(latencies)
    })();
    unsafe { libc::kill(up.id() as i32, libc::SIGTERM) };
    let _ = up.wait();
    let _ = std::fs::remove_dir_all(&data);
    result
}

fn tempdir() -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("sluice-bench-up-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
