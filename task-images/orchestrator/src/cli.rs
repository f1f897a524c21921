//! `orchestrator --config sync.json [--state-file s.json] [--outcome-file o.json]`
//!
//! Runs one attempt as the task's orchestrator container does: the attempt
//! log goes to stderr, the committed state to `--state-file` as it advances,
//! and the outcome as JSON to stdout (and `--outcome-file`). Exit status: 0
//! succeeded, 1 failed, 3 cancelled, 2 bad usage.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use crate::{AttemptStatus, FileReporter, SyncConfig};

/// The orchestrator's command line; returns the exit status.
pub fn main(args: &[String]) -> i32 {
    match run(args) {
        Ok(code) => code,
        Err(message) => {
            eprintln!("orchestrator: {message}");
            2
        }
    }
}

fn run(args: &[String]) -> Result<i32, String> {
    let mut args = args.iter();
    let (mut config, mut state_file, mut outcome_file) = (None, None, None);
    while let Some(flag) = args.next() {
        let mut value = || args.next().map(PathBuf::from).ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--config" => config = Some(value()?),
            "--state-file" => state_file = Some(value()?),
            "--outcome-file" => outcome_file = Some(value()?),
            other => return Err(format!("unexpected argument `{other}`; usage: orchestrator --config FILE [--state-file FILE] [--outcome-file FILE]")),
        }
    }
    let config_path = config.ok_or("missing --config FILE")?;
    let text = std::fs::read_to_string(&config_path).map_err(|e| format!("cannot read {}: {e}", config_path.display()))?;
    let config: SyncConfig = serde_json::from_str(&text).map_err(|e| format!("{} is not a valid sync config: {e}", config_path.display()))?;

    let cancel = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(signal, cancel.clone()).map_err(|e| format!("cannot handle signals: {e}"))?;
    }
    let mut reporter = FileReporter { log: Box::new(std::io::stderr()), state_file, source_config_file: None, destination_config_file: None };
    let outcome = crate::run(&config, &mut reporter, &cancel);
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
