//! What every container runtime (Docker, ECS) runs in a task's containers:
//! the init step, the connectors on their pipes, the orchestrator; and the
//! task's volumes, each mounted only in the containers that need it. Only
//! how the files get onto the volumes differs between runtimes.
//!
//! The layout (a sync; a question has `connector` in place of both roles):
//!
//! | volume        | mounted at            | in                              | holds |
//! |---------------|-----------------------|---------------------------------|-------|
//! | `platform`    | `/sluice`             | init, orchestrator              | the workload credential, `sync.json` (both connectors' configs) |
//! | `source`      | `/sluice/source`      | init, source, orchestrator      | the source's pipes, its config, catalog and state |
//! | `destination` | `/sluice/destination` | init, destination, orchestrator | the same for the destination |
//! | `sockets`     | `/sluice/sockets`     | init, source, destination       | socket mode's sockets |
//!
//! So a connector sees its own files and nothing else: not the credential
//! that opens the workload, not the other connector's config. Within its
//! own volume files are readable by any user, since connector images run as
//! whatever user they were built with (Airbyte's as uid 1000, ours as
//! 65532): the mount is the boundary, not the mode. The init step runs as
//! root to make the volumes' roots writable for that reason, and gives the
//! platform volume to the platform's user, alone.

use std::path::PathBuf;

use sluice_domain::WorkloadType;

use crate::plan::files;

/// Where the platform volume is mounted, and every other one under it.
pub const SHARED: &str = "/sluice";

/// The user of the orchestrator image (and of our reference connectors),
/// as a number and as a container's `user`.
pub const PLATFORM_UID: u32 = 65532;
pub const PLATFORM_USER: &str = "65532:65532";

/// The init step's user: it opens the volumes, which the runtime makes root's.
pub const INIT_USER: &str = "0:0";

pub fn shared(path: &str) -> String {
    format!("{SHARED}/{path}")
}

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Airbyte's images name their program in `AIRBYTE_ENTRYPOINT`; ours are
/// the program itself at `/connector`. Either way the protocol command follows.
pub const CONNECTOR: [&str; 4] = ["/bin/sh", "-c", "exec ${AIRBYTE_ENTRYPOINT:-/connector} \"$@\"", "connector"];

/// One of a task's volumes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Volume {
    /// `platform`, `source`, `destination`, `connector` or `sockets`.
    pub name: &'static str,
    pub path: String,
    /// The containers (by role) that mount it.
    pub roles: Vec<&'static str>,
}

/// The task's volumes, for a task whose containers are init, the connector
/// roles and orchestrator.
pub fn volumes(plan: &crate::TaskPlan) -> Vec<Volume> {
    let volume = |name: &'static str, roles: &[&'static str]| Volume { name, path: role_dir(name).display().to_string(), roles: roles.to_vec() };
    let mut volumes = vec![Volume { name: "platform", path: SHARED.to_owned(), roles: vec!["init", "orchestrator"] }];
    if plan.kind == WorkloadType::Sync {
        volumes.push(volume("source", &["init", "source", "orchestrator"]));
        volumes.push(volume("destination", &["init", "destination", "orchestrator"]));
        if plan.data_channel.is_some() {
            volumes.push(volume("sockets", &["init", "source", "destination"]));
        }
    } else {
        volumes.push(volume("connector", &["init", "connector", "orchestrator"]));
    }
    volumes
}

/// The volumes of `layout` that the container of `role` mounts.
pub fn mounted_in<'a>(layout: &'a [Volume], role: &'a str) -> impl Iterator<Item = &'a Volume> + 'a {
    layout.iter().filter(move |v| v.roles.contains(&role))
}

/// Socket mode's sockets, on their own volume.
pub fn sockets() -> PathBuf {
    role_dir("sockets")
}

/// A role's own volume (`source`, `destination`, `connector`): its pipes,
/// its exit status, and the files the orchestrator writes for it.
pub fn role_dir(role: &str) -> PathBuf {
    PathBuf::from(shared(role))
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

/// The init step's shell line, run as root once the platform's files are
/// on its volume: the named pipes the orchestrator attaches through, each
/// connector's volume open to whatever user its image runs as, and the
/// platform's volume closed to everyone but the platform's user.
pub fn init_script(plan: &crate::TaskPlan) -> String {
    let (fifos, open): (Vec<String>, Vec<String>) = match plan.kind {
        WorkloadType::Sync => {
            let (s, d) = (role_dir("source").display().to_string(), role_dir("destination").display().to_string());
            let fifos = [format!("{s}/stdout"), format!("{s}/stderr"), format!("{d}/stdin"), format!("{d}/stdout"), format!("{d}/stderr")];
            let mut open = vec![s, d];
            if plan.data_channel.is_some() {
                open.push(sockets().display().to_string());
            }
            (fifos.to_vec(), open)
        }
        _ => {
            let c = role_dir("connector").display().to_string();
            (vec![format!("{c}/stdout"), format!("{c}/stderr")], vec![c])
        }
    };
    // A question's connector reads its config from its own volume.
    let config = match plan.kind {
        WorkloadType::Sync | WorkloadType::Spec => String::new(),
        _ => format!(
            "mv {from} {to} && chmod 0644 {to} && ",
            from = shared(files::CONNECTOR_CONFIG),
            to = question_config()
        ),
    };
    format!(
        "{config}mkfifo -m 0666 {fifos} && chmod 1777 {open} && chown {PLATFORM_USER} {SHARED} {SHARED}/* && chmod 0700 {SHARED}",
        fifos = fifos.join(" "),
        open = open.join(" ")
    )
}

/// Where a question's connector finds its config: on its own volume.
pub fn question_config() -> String {
    format!("{}/config.json", role_dir("connector").display())
}

/// A question's connector container: `spec`, `check --config ...` or
/// `discover --config ...` on its pipes.
pub fn question_command(kind: WorkloadType) -> Vec<String> {
    let wrapper = sluice_orchestrator::connector::attach_wrapper(&role_dir("connector"), &CONNECTOR.map(String::from), false);
    let mut cmd = vec!["/bin/sh".to_owned(), "-c".to_owned(), wrapper, "connector".to_owned(), kind.as_str().to_owned()];
    if kind != WorkloadType::Spec {
        cmd.extend(["--config".to_owned(), question_config()]);
    }
    cmd
}

/// A question's orchestrator container: reads the answer off the pipes
/// and reports it to the workload API.
pub fn ask_command(kind: WorkloadType, connector_name: &str) -> String {
    format!(
        "exec orchestrator ask {} --connector-dir {} --name {} --workload-api \"$SLUICE_WORKLOAD_API\" --workload-id \"$SLUICE_WORKLOAD_ID\"",
        kind.as_str(),
        role_dir("connector").display(),
        quote(connector_name)
    )
}

/// A connector container's command: wait for its catalog (the orchestrator
/// writes it last), pass `--state` if the orchestrator wrote one, then run
/// the connector on its pipes with the orchestrator's attach wrapper.
pub fn connector_command(role: &str) -> Vec<String> {
    let (verb, wants_stdin) = if role == "source" { ("read", false) } else { ("write", true) };
    let dir = role_dir(role).display().to_string();
    let wrapper = sluice_orchestrator::connector::attach_wrapper(&role_dir(role), &CONNECTOR.map(String::from), wants_stdin);
    let (catalog, state) = (quote(&format!("{dir}/catalog.json")), quote(&format!("{dir}/state.json")));
    let script = format!("while [ ! -e {catalog} ]; do sleep 0.05; done; if [ -e {state} ]; then set -- \"$@\" --state {state}; fi; {wrapper}");
    let mut cmd = vec!["/bin/sh".to_owned(), "-c".to_owned(), script, role.to_owned(), verb.to_owned()];
    cmd.extend(["--config".to_owned(), format!("{dir}/config.json"), "--catalog".to_owned(), format!("{dir}/catalog.json")]);
    cmd
}

/// The platform container's command for one sync workload.
pub fn orchestrator_command(plan: &crate::TaskPlan) -> Vec<String> {
    [platform_program(plan), "--config", &shared("sync.json"), "--workload-api", &plan.workload_api_url, "--workload-id", &plan.workload_id]
        .map(String::from)
        .to_vec()
}

/// The files of the platform's volume, all secret: the workload credential,
/// and for a sync the orchestrator's config (connectors attached through
/// their pipes, their files written into their own volumes), for a question
/// the connector's config (which the init step moves into the connector's
/// volume).
pub fn task_files(plan: &crate::TaskPlan) -> Result<std::collections::BTreeMap<String, String>, crate::LaunchError> {
    use sluice_orchestrator::Launch;
    let mut files = std::collections::BTreeMap::from([("credential".to_owned(), plan.credential.clone())]);
    if plan.kind == WorkloadType::Sync {
        let attach = |role: &str| Launch::Attach { dir: role_dir(role) };
        let config = plan.sync_config(attach("source"), attach("destination"), PathBuf::from(SHARED), &sockets())?;
        files.insert("sync.json".to_owned(), serde_json::to_string(&config).expect("plain data"));
    } else if let Some(config) = plan.file(files::CONNECTOR_CONFIG) {
        files.insert(files::CONNECTOR_CONFIG.to_owned(), config.to_owned());
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_platform_user_is_its_uid() {
        assert_eq!(super::PLATFORM_USER, format!("{0}:{0}", super::PLATFORM_UID));
    }
}
