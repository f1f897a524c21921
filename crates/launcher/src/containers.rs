//! What every container runtime (Docker, ECS) runs in a task's containers,
//! sharing one volume at [`SHARED`]: the init step's pipes, the connectors
//! on those pipes, the orchestrator. Only how the files get onto the volume
//! differs between runtimes.

use std::path::PathBuf;

use sluice_domain::WorkloadType;

use crate::plan::files;

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

/// Socket mode's sockets, on the shared volume.
pub fn sockets() -> PathBuf {
    PathBuf::from(shared("sockets"))
}

/// The platform container's program: the bookkeeper in socket mode, the
/// orchestrator otherwise (Airbyte's `PLATFORM_MODE`).
pub fn platform_program(plan: &crate::TaskPlan) -> &'static str {
    if plan.data_channel.is_some() {
        "bookkeeper"
    } else {
        "orchestrator"
    }
}

/// Airbyte's `PLATFORM_MODE` for the platform container of a sync.
pub fn platform_mode(plan: &crate::TaskPlan) -> (String, String) {
    ("PLATFORM_MODE".to_owned(), platform_program(plan).to_ascii_uppercase())
}

/// A connector container's environment: its own, plus socket mode's channel.
pub fn connector_env(plan: &crate::TaskPlan, container: &crate::plan::Container) -> std::collections::BTreeMap<String, String> {
    let mut env = container.env.clone();
    if let Some(channel) = &plan.data_channel {
        env.extend(channel.in_dir(&sockets()).env());
    }
    env
}

/// The directory of a connector's pipes (`source`, `destination`).
pub fn pipes(role: &str) -> PathBuf {
    PathBuf::from(shared(&format!("pipes/{role}")))
}

/// The init step's shell line: the named pipes the orchestrator attaches
/// through, for a sync's two connectors or a question's one.
pub fn pipes_script(kind: WorkloadType) -> String {
    let p = shared("pipes");
    let (dirs, fifos) = match kind {
        WorkloadType::Sync => (
            format!("{p}/source {p}/destination {}", sockets().display()),
            format!("{p}/source/stdout {p}/source/stderr {p}/destination/stdin {p}/destination/stdout {p}/destination/stderr"),
        ),
        _ => (format!("{p}/connector"), format!("{p}/connector/stdout {p}/connector/stderr")),
    };
    format!("mkdir -p {dirs} {w} && mkfifo {fifos} && chmod 0700 {s}", w = shared("work"), s = SHARED)
}

/// A question's connector container: `spec`, `check --config ...` or
/// `discover --config ...` on its pipes.
pub fn question_command(kind: WorkloadType) -> Vec<String> {
    let wrapper = sluice_orchestrator::connector::attach_wrapper(&pipes("connector"), &CONNECTOR.map(String::from), false);
    let mut cmd = vec!["/bin/sh".to_owned(), "-c".to_owned(), wrapper, "connector".to_owned(), kind.as_str().to_owned()];
    if kind != WorkloadType::Spec {
        cmd.extend(["--config".to_owned(), shared(files::CONNECTOR_CONFIG)]);
    }
    cmd
}

/// A question's orchestrator container: reads the answer off the pipes
/// and reports it to the workload API.
pub fn ask_command(kind: WorkloadType, connector_name: &str) -> String {
    format!(
        "exec orchestrator ask {} --connector-dir {} --name {} --workload-api \"$SLUICE_WORKLOAD_API\" --workload-id \"$SLUICE_WORKLOAD_ID\"",
        kind.as_str(),
        pipes("connector").display(),
        quote(connector_name)
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

/// The platform container's command for one sync workload.
pub fn orchestrator_command(plan: &crate::TaskPlan) -> Vec<String> {
    [platform_program(plan), "--config", &shared("sync.json"), "--workload-api", &plan.workload_api_url, "--workload-id", &plan.workload_id]
        .map(String::from)
        .to_vec()
}

/// The files a task's containers need on the shared volume, all secret:
/// the workload credential, and for a sync the orchestrator's config
/// (connectors attached through the pipes), for a question the
/// connector's config.
pub fn task_files(plan: &crate::TaskPlan) -> Result<std::collections::BTreeMap<String, String>, crate::LaunchError> {
    use sluice_orchestrator::Launch;
    let mut files = std::collections::BTreeMap::from([("credential".to_owned(), plan.credential.clone())]);
    if plan.kind == WorkloadType::Sync {
        let config = plan.sync_config(Launch::Attach { dir: pipes("source") }, Launch::Attach { dir: pipes("destination") }, PathBuf::from(shared("work")), &sockets())?;
        files.insert("sync.json".to_owned(), serde_json::to_string(&config).expect("plain data"));
    } else if let Some(config) = plan.file(files::CONNECTOR_CONFIG) {
        files.insert(files::CONNECTOR_CONFIG.to_owned(), config.to_owned());
    }
    Ok(files)
}
