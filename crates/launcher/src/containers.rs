//! What every container runtime (Docker, ECS) runs in a task's containers,
//! sharing one volume at [`SHARED`]: the init step's pipes, the connectors
//! on those pipes, the orchestrator. Only how the files get onto the volume
//! differs between runtimes.

use std::path::PathBuf;

/// Where the shared volume is mounted in every container.
pub const SHARED: &str = "/sluice";

pub fn shared(path: &str) -> String {
    format!("{SHARED}/{path}")
}

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Airbyte's images name their program in `AIRBYTE_ENTRYPOINT`; ours are
/// the program itself at `/connector`. Either way the protocol command follows.
pub const CONNECTOR: [&str; 4] = ["/bin/sh", "-c", "exec ${AIRBYTE_ENTRYPOINT:-/connector} \"$@\"", "connector"];

/// The directory of a connector's pipes (`source`, `destination`).
pub fn pipes(role: &str) -> PathBuf {
    PathBuf::from(shared(&format!("pipes/{role}")))
}

/// The init step's shell line: the named pipes the orchestrator attaches through.
pub fn pipes_script() -> String {
    format!(
        "mkdir -p {p}/source {p}/destination {w} && mkfifo {p}/source/stdout {p}/source/stderr {p}/destination/stdin {p}/destination/stdout {p}/destination/stderr && chmod 0700 {s}",
        p = shared("pipes"),
        w = shared("work"),
        s = SHARED
    )
}

/// A connector container's command: wait for its catalog (the orchestrator
/// writes it last), pass `--state` if the orchestrator wrote one, then run
/// the connector on its pipes with the orchestrator's attach wrapper.
pub fn connector_command(role: &str) -> Vec<String> {
    let (verb, wants_stdin) = if role == "source" { ("read", false) } else { ("write", true) };
    let work = shared(&format!("work/{role}"));
    let wrapper = sluice_orchestrator::connector::attach_wrapper(&pipes(role), &CONNECTOR.map(String::from), wants_stdin);
    let (catalog, state) = (quote(&format!("{work}/catalog.json")), quote(&format!("{work}/state.json")));
    let script = format!("while [ ! -e {catalog} ]; do sleep 0.2; done; if [ -e {state} ]; then set -- \"$@\" --state {state}; fi; {wrapper}");
    let mut cmd = vec!["/bin/sh".to_owned(), "-c".to_owned(), script, role.to_owned(), verb.to_owned()];
    cmd.extend(["--config".to_owned(), format!("{work}/config.json"), "--catalog".to_owned(), format!("{work}/catalog.json")]);
    cmd
}

/// The orchestrator container's command for one workload.
pub fn orchestrator_command(workload_api_url: &str, workload_id: &str) -> Vec<String> {
    ["orchestrator", "--config", &shared("sync.json"), "--workload-api", workload_api_url, "--workload-id", workload_id].map(String::from).to_vec()
}

/// The files a sync task's containers need on the shared volume: the
/// orchestrator's config (connectors attached through the pipes) and the
/// workload credential. Both are secret.
pub fn task_files(plan: &crate::TaskPlan) -> Result<std::collections::BTreeMap<String, String>, crate::LaunchError> {
    use sluice_orchestrator::Launch;
    let config = plan.sync_config(Launch::Attach { dir: pipes("source") }, Launch::Attach { dir: pipes("destination") }, PathBuf::from(shared("work")))?;
    Ok([("sync.json".to_owned(), serde_json::to_string(&config).expect("plain data")), ("credential".to_owned(), plan.credential.clone())].into())
}
