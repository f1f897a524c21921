//! `orchestrator --config sync.json [--state-file s.json] [--outcome-file o.json]
//!  [--workload-api URL --workload-id ID]`
//!
//! Runs one attempt as the task's orchestrator container does: the attempt
//! log goes to stderr, the committed state to `--state-file` as it advances,
//! and the outcome as JSON to stdout (and `--outcome-file`). With a workload
//! API (credential in `SLUICE_WORKLOAD_TOKEN`), state, heartbeats and the
//! end go to the platform instead, and a cancelled workload stops the
//! attempt. Exit status: 0 succeeded, 1 failed, 3 cancelled, 2 bad usage.
//!
//! Also `orchestrator fetch-files` (a container task's init step) and
//! `orchestrator ask spec|check|discover` (a container task that asks a
//! connector one question).

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use std::time::Duration;

use crate::aws_iam::Signer;
use crate::workload_api::{ApiReporter, WorkloadApi};
use crate::{AttemptStatus, FileReporter, SyncConfig};

/// Runs one attempt: the orchestrator's (legacy mode) or the bookkeeper's (socket mode).
pub type Runner = fn(&SyncConfig, &mut dyn crate::Reporter, &AtomicBool) -> crate::Outcome;

/// The orchestrator's command line; returns the exit status.
pub fn main(args: &[String]) -> i32 {
    main_with(args, "orchestrator", crate::run)
}

/// The command line of the platform container `name`, whose attempts `runner` runs.
pub fn main_with(args: &[String], name: &str, runner: Runner) -> i32 {
    match run(args, runner) {
        Ok(code) => code,
        Err(message) => {
            sluice_protocol::say!("{name}: {message}");
            2
        }
    }
}

fn run(args: &[String], runner: Runner) -> Result<i32, String> {
    match args.first().map(String::as_str) {
        Some("fetch-files") => return fetch_files(&args[1..]),
        Some("ask") => return ask(&args[1..]),
        _ => {}
    }
    let mut args = args.iter();
    let (mut config, mut state_file, mut outcome_file) = (None, None, None);
    let (mut api_url, mut workload_id) = (None, None);
    while let Some(flag) = args.next() {
        let mut value = || args.next().map(PathBuf::from).ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--config" => config = Some(value()?),
            "--state-file" => state_file = Some(value()?),
            "--outcome-file" => outcome_file = Some(value()?),
            "--workload-api" => api_url = Some(value()?.display().to_string()),
            "--workload-id" => workload_id = Some(value()?.display().to_string()),
            other => return Err(format!("unexpected argument `{other}`; usage: orchestrator --config FILE [--state-file FILE] [--outcome-file FILE] [--workload-api URL --workload-id ID]")),
        }
    }
    let config_path = config.ok_or("missing --config FILE")?;
    let text = std::fs::read_to_string(&config_path).map_err(|e| format!("cannot read {}: {e}", config_path.display()))?;
    let config: SyncConfig = serde_json::from_str(&text).map_err(|e| format!("{} is not a valid sync config: {e}", config_path.display()))?;

    let cancel = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(signal, cancel.clone()).map_err(|e| format!("cannot handle signals: {e}"))?;
    }
    let api = match (api_url, workload_id) {
        (Some(url), Some(id)) => Some((url, id, credential()?)),
        (None, None) => None,
        _ => return Err("--workload-api and --workload-id go together".into()),
    };
    let outcome = match api {
        Some((url, id, token)) => {
            let api = WorkloadApi::new(&url, &id, token, Signer::from_env()?);
            let mut reporter = ApiReporter::new(api, Box::new(std::io::stderr()), cancel.clone(), heartbeat_every());
            // Running only once the connectors are about to start: the platform's clock for heartbeats.
            reporter.api.post("running", &serde_json::json!({})).map_err(|e| format!("cannot reach the workload API: {e}"))?;
            let outcome = runner(&config, &mut reporter, &cancel);
            if let Err(e) = reporter.api.report_end(&outcome) {
                sluice_protocol::say!("orchestrator: could not report the attempt's end: {e}");
            }
            outcome
        }
        None => {
            let mut reporter = FileReporter { log: Box::new(std::io::stderr()), state_file, source_config_file: None, destination_config_file: None };
            runner(&config, &mut reporter, &cancel)
        }
    };
    let json = serde_json::to_string_pretty(&outcome).expect("outcome serializes");
    if let Some(path) = outcome_file {
        std::fs::write(&path, &json).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    println!("{json}");
    Ok(match outcome.status {
        AttemptStatus::Succeeded => 0,
        AttemptStatus::Failed => 1,
        AttemptStatus::Cancelled => 3,
    })
}

/// The workload's credential: from a file when a container runtime put it
/// on the shared volume, so that it appears in no container's environment.
fn credential() -> Result<String, String> {
    match std::env::var_os("SLUICE_WORKLOAD_TOKEN_FILE") {
        Some(path) => Ok(std::fs::read_to_string(&path).map_err(|e| format!("cannot read SLUICE_WORKLOAD_TOKEN_FILE: {e}"))?.trim().to_owned()),
        None => std::env::var("SLUICE_WORKLOAD_TOKEN").map_err(|_| "--workload-api needs the workload's credential in SLUICE_WORKLOAD_TOKEN or SLUICE_WORKLOAD_TOKEN_FILE".into()),
    }
}

fn heartbeat_every() -> Duration {
    Duration::from_secs(std::env::var("SLUICE_HEARTBEAT_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(10))
}

const ASK_USAGE: &str = "usage: orchestrator ask spec|check|discover --connector-dir DIR --name NAME --workload-api URL --workload-id ID";

/// `orchestrator ask <question> ...`: a spec, check or discover task's
/// orchestrator container. Exit status 0 if the connector answered, 1 if
/// not (the workload is failed with the reason), 2 on bad usage.
fn ask(args: &[String]) -> Result<i32, String> {
    let question = args.first().and_then(|q| crate::ask::Question::parse(q)).ok_or(ASK_USAGE)?;
    let (mut dir, mut name, mut url, mut id) = (None, None, None, None);
    let mut rest = args[1..].iter();
    while let Some(flag) = rest.next() {
        let value = rest.next().cloned().ok_or(format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--connector-dir" => dir = Some(PathBuf::from(value)),
            "--name" => name = Some(value),
            "--workload-api" => url = Some(value),
            "--workload-id" => id = Some(value),
            other => return Err(format!("unexpected argument `{other}`; {ASK_USAGE}")),
        }
    }
    let (Some(dir), Some(url), Some(id)) = (dir, url, id) else { return Err(ASK_USAGE.into()) };
    let api = WorkloadApi::new(&url, &id, credential()?, Signer::from_env()?);
    let answered = crate::ask::ask(question, name.as_deref().unwrap_or("connector"), &dir, api, heartbeat_every())?;
    Ok(if answered { 0 } else { 1 })
}

/// `orchestrator fetch-files --dir DIR`: the init step of a task on ECS.
/// Fetches the task's files (sync config, credential) from the workload API
/// with the launch key, once, and writes them 0600 into the shared volume.
/// Reads `SLUICE_WORKLOAD_API`, `SLUICE_WORKLOAD_ID` and `SLUICE_LAUNCH_KEY`.
fn fetch_files(args: &[String]) -> Result<i32, String> {
    let dir = match args {
        [flag, dir] if flag == "--dir" => PathBuf::from(dir),
        _ => return Err("usage: orchestrator fetch-files --dir DIR".into()),
    };
    let var = |name: &str| std::env::var(name).map_err(|_| format!("fetch-files needs {name}"));
    let (api, id, key) = (var("SLUICE_WORKLOAD_API")?, var("SLUICE_WORKLOAD_ID")?, var("SLUICE_LAUNCH_KEY")?);
    let url = format!("{}/workloads/{id}/files", api.trim_end_matches('/'));
    let agent: ureq::Agent = ureq::Agent::config_builder().timeout_global(Some(Duration::from_secs(60))).http_status_as_error(false).build().into();
    let (status, text) = crate::workload_api::call(&agent, Signer::from_env()?.as_ref(), "GET", &url, &format!("Launch {key}"), "")?;
    if status != 200 {
        return Err(format!("{url} answered {status}: {text}"));
    }
    let body: serde_json::Value = serde_json::from_str(&text).map_err(|e| format!("{url} gave no JSON: {e}"))?;
    let files = body["files"].as_object().ok_or_else(|| format!("{url} gave no files"))?;
    for (name, contents) in files {
        // Plain names only: nothing written outside the shared directory.
        if name.is_empty() || name.contains('/') || name.starts_with('.') {
            return Err(format!("refusing the file name `{name}`"));
        }
        let contents = contents.as_str().ok_or_else(|| format!("file {name} is not text"))?;
        crate::report::write_atomically(&dir.join(name), contents.as_bytes()).map_err(|e| format!("cannot write {name}: {e}"))?;
    }
    Ok(0)
}
