//! The Docker executor's specs, checked as data and then carried out as
//! local processes, with the volumes directories: a fast check of the
//! shapes that `docker_engine.rs` runs on a real engine.

mod support;

use std::collections::BTreeMap;
use std::process::Command;

use serde_json::{json, Value};
use sluice_domain::WorkloadType;
use sluice_launcher::docker::{docker_task, tar, DockerSettings, SHARED};
use sluice_launcher::plan::{files, Container, PlanFile, Resources, Runtime, TaskPlan};
use support::Scratch;

const SECRET: &str = "s3cret-api-key";
const CREDENTIAL: &str = "workload-credential-abc";

fn settings() -> DockerSettings {
    DockerSettings::new(
        "sluice/orchestrator:test".into(),
        BTreeMap::from([
            ("source-faker".to_owned(), "sluice/source-faker:test".to_owned()),
            ("destination-jsonl".to_owned(), "sluice/destination-jsonl:test".to_owned()),
        ]),
    )
}

fn sync_plan(out: &str, source_config: Value) -> TaskPlan {
    // Each call its own config file: the tests run in parallel, and one
    // truncating the file another's discover is reading fails that discover.
    let scratch = Scratch::new();
    let config = scratch.path("source-config.json");
    std::fs::write(&config, "{}").unwrap();
    let discovered = support::sluice().args(["connector", "source-faker", "discover", "--config"]).arg(&config).output().unwrap();
    let catalog: Value = discovered
        .stdout
        .split(|&b| b == b'\n')
        .filter_map(|l| serde_json::from_slice::<Value>(l).ok())
        .find(|m| m["type"] == "CATALOG")
        .unwrap_or_else(|| panic!("discover prints a CATALOG message: {}", String::from_utf8_lossy(&discovered.stdout)));
    let users = catalog["catalog"]["streams"].as_array().unwrap().iter().find(|s| s["name"] == "users").unwrap().clone();
    let configured = json!({"streams": [{"stream": users, "sync_mode": "full_refresh", "destination_sync_mode": "overwrite"}]});
    let file = |name: &str, value: Value| PlanFile { name: name.into(), contents: value.to_string() };
    let container = |name: &str| Container { name: name.into(), runtime: Runtime::Reference(name.into()), env: BTreeMap::new() };
    TaskPlan {
        workload_id: "conn_7_0_sync".into(),
        kind: WorkloadType::Sync,
        files: vec![
            file(files::SOURCE_CONFIG, source_config),
            file(files::DESTINATION_CONFIG, json!({"destination_path": out})),
            file(files::CATALOG, configured),
            file(files::STATE, json!([])),
            file(files::SELECTED_FIELDS, json!([])),
        ],
        connector: None,
        source: Some(container("source-faker")),
        destination: Some(container("destination-jsonl")),
        resources: Resources { cpu_millis: 500, memory_mib: 1024 },
        data_channel: None,
        workload_api_url: "http://127.0.0.1:8000/api/internal/v1".into(),
        credential: CREDENTIAL.into(),
    }
}

#[test]
fn a_sync_plan_becomes_four_containers_each_seeing_only_its_volumes_with_no_secret_in_sight() {
    let scratch = Scratch::new();
    let task = docker_task(&sync_plan("/sluice/out", json!({"count": 40, "api_key": SECRET})), &settings()).unwrap();
    let roles: Vec<&str> = task.containers.iter().map(|c| c.role).collect();
    assert_eq!(roles, ["init", "source", "destination", "orchestrator"]);
    let targets = |role: &str| -> Vec<String> {
        task.container(role).unwrap().create["HostConfig"]["Mounts"].as_array().unwrap().iter().map(|m| m["Target"].as_str().unwrap().to_owned()).collect()
    };
    assert_eq!(targets("init"), ["/sluice", "/sluice/source", "/sluice/destination"]);
    assert_eq!(targets("source"), ["/sluice/source"], "the source sees neither the credential nor the destination's config");
    assert_eq!(targets("destination"), ["/sluice/destination"]);
    assert_eq!(targets("orchestrator"), ["/sluice", "/sluice/source", "/sluice/destination"]);
    for c in &task.containers {
        let spec = &c.create;
        assert_eq!(spec["HostConfig"]["NanoCpus"], 500_000_000u64);
        assert_eq!(spec["HostConfig"]["Memory"], 1024u64 * 1024 * 1024);
        assert_eq!(spec["Entrypoint"], json!([""]));
        assert_eq!(spec["Labels"]["sluice.workload"], "conn_7_0_sync");
        let visible = format!("{} {}", spec["Cmd"], spec["Env"]);
        assert!(!visible.contains(SECRET) && !visible.contains(CREDENTIAL), "{} shows a secret: {visible}", c.name);
    }
    assert_eq!(task.container("init").unwrap().create["User"], "0:0", "the init step opens the volumes as root");
    assert!(task.container("source").unwrap().create.get("User").is_none(), "a connector runs as its image's user");
    assert_eq!(task.container("source").unwrap().create["Image"], "sluice/source-faker:test");
    assert_eq!(task.container("orchestrator").unwrap().create["Env"], json!(["PLATFORM_MODE=ORCHESTRATOR", "SLUICE_WORKLOAD_TOKEN_FILE=/sluice/credential"]));
    assert_eq!(task.container("orchestrator").unwrap().create["Cmd"][0], "orchestrator");

    // Socket mode: the bookkeeper, and both connectors told the channel on their shared volume.
    let mut socket_plan = sync_plan("/sluice/out", json!({"count": 40}));
    socket_plan.data_channel = Some(sluice_launcher::plan::PlanChannel { format: sluice_protocol::socket::Format::Jsonl, socket_count: 2 });
    let socket_task = docker_task(&socket_plan, &settings()).unwrap();
    let platform = &socket_task.container("orchestrator").unwrap().create;
    assert_eq!((&platform["Cmd"][0], &platform["Env"][0]), (&json!("bookkeeper"), &json!("PLATFORM_MODE=BOOKKEEPER")));
    for role in ["source", "destination"] {
        let spec = &socket_task.container(role).unwrap().create;
        let env = spec["Env"].to_string();
        assert!(env.contains("DATA_CHANNEL_MEDIUM=SOCKET") && env.contains("DATA_CHANNEL_FORMAT=JSONL"), "{role}: {env}");
        assert!(env.contains("DATA_CHANNEL_SOCKET_PATHS=/sluice/sockets/airbyte_socket_1.sock,/sluice/sockets/airbyte_socket_2.sock"), "{role}: {env}");
        assert!(spec["HostConfig"]["Mounts"].to_string().contains("\"/sluice/sockets\""), "{role}");
    }
    let sync_json = socket_task.files.iter().find(|f| f.name == "sync.json").map(|f| String::from_utf8_lossy(&f.data).into_owned()).unwrap();
    assert!(sync_json.contains(r#""data_channel":{"format":"JSONL","socket_paths":["/sluice/sockets/airbyte_socket_1.sock""#), "{sync_json}");
    // The files carry the secrets, and go in as an archive for the platform's user only, never as environment.
    let names: Vec<&str> = task.files.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, ["credential", "sync.json"]);
    assert!(task.files.iter().all(|f| f.mode == 0o600 && f.uid == 65532));
    assert_eq!(task.files_path, SHARED);

    // The archive is a real tar.
    std::fs::write(scratch.path("files.tar"), tar(&task.files)).unwrap();
    let listing = Command::new("tar").arg("-tvf").arg(scratch.path("files.tar")).arg("--numeric-owner").output().unwrap();
    let listing = String::from_utf8_lossy(&listing.stdout);
    assert!(listing.contains("-rw------- 65532/65532") && listing.contains("credential"), "{listing}");
    assert_eq!(tar(&[]).len(), 1024, "an empty archive is its two zero blocks");
}

/// Runs the containers' commands as local processes: the volume is a
/// directory, each image's program is `sluice connector <name>` (or
/// `sluice orchestrate`), and the orchestrator reports to files instead of
/// a workload API.
#[test]
fn the_containers_commands_move_records_through_the_shared_volume() {
    let scratch = Scratch::new();
    let volume = scratch.path("volume");
    std::fs::create_dir(&volume).unwrap();
    let v = volume.display().to_string();
    let task = docker_task(&sync_plan(&format!("{SHARED}/out"), json!({"count": 40})), &settings()).unwrap();
    let local = |text: &str| text.replace(SHARED, &v);
    for file in &task.files {
        std::fs::write(volume.join(&file.name), local(&String::from_utf8_lossy(&file.data))).unwrap();
    }
    for role in ["source", "destination"] {
        std::fs::create_dir_all(volume.join(role)).unwrap();
    }
    let sluice = env!("CARGO_BIN_EXE_sluice");
    let command = |role: &str| -> Command {
        let spec = &task.container(role).unwrap().create;
        let mut cmd: Vec<String> = spec["Cmd"].as_array().unwrap().iter().map(|a| local(a.as_str().unwrap())).collect();
        if role == "orchestrator" {
            // No workload API here: drop its flags, so it reports to files.
            let at = cmd.iter().position(|a| a == "--workload-api").unwrap();
            cmd.drain(at..at + 4);
            cmd.splice(0..1, [sluice.to_owned(), "orchestrate".to_owned()]);
            cmd.extend(["--outcome-file".to_owned(), format!("{v}/outcome.json")]);
        }
        let mut c = Command::new(&cmd[0]);
        c.args(&cmd[1..]).current_dir(&volume);
        let image = spec["Image"].as_str().unwrap();
        let program = if image.contains("source-faker") { "source-faker" } else { "destination-jsonl" };
        c.env("AIRBYTE_ENTRYPOINT", format!("{sluice} connector {program}"));
        c
    };
    assert!(command("init").status().unwrap().success(), "init made the pipes");
    let mut source = command("source").spawn().unwrap();
    let mut destination = command("destination").spawn().unwrap();
    let orchestrator = command("orchestrator").output().unwrap();
    assert!(orchestrator.status.success(), "{}", String::from_utf8_lossy(&orchestrator.stderr));
    assert!(source.wait().unwrap().success() && destination.wait().unwrap().success());
    let outcome: Value = serde_json::from_str(&std::fs::read_to_string(volume.join("outcome.json")).unwrap()).unwrap();
    assert_eq!(outcome["status"], "succeeded", "{outcome}");
    let rows = std::fs::read_to_string(volume.join("out/users.jsonl")).unwrap();
    assert_eq!(rows.lines().count(), 40);
}

#[test]
fn a_discover_plan_is_one_connector_container_and_pypi_connectors_are_refused() {
    let plan = TaskPlan {
        workload_id: "discover_1".into(),
        kind: WorkloadType::Discover,
        files: vec![PlanFile { name: files::CONNECTOR_CONFIG.into(), contents: json!({"token": SECRET}).to_string() }],
        connector: Some(Container { name: "source-pokeapi".into(), runtime: Runtime::Image("airbyte/source-pokeapi:0.3.0".into()), env: BTreeMap::new() }),
        source: None,
        destination: None,
        resources: Resources::default(),
        data_channel: None,
        workload_api_url: "http://127.0.0.1:8000/api/internal/v1".into(),
        credential: CREDENTIAL.into(),
    };
    let task = docker_task(&plan, &settings()).unwrap();
    assert_eq!(task.containers.len(), 1);
    let spec = &task.containers[0].create;
    assert_eq!(spec["Image"], "airbyte/source-pokeapi:0.3.0");
    let cmd: Vec<&str> = spec["Cmd"].as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
    assert_eq!(&cmd[4..], ["discover", "--config", "/sluice/connector/config.json"]);
    assert_eq!(task.files_path, "/sluice/connector");
    assert!(task.files.iter().all(|f| f.name == "config.json" && f.mode == 0o644), "the connector, of any user, reads its own config");
    assert!(!spec.to_string().contains(SECRET));

    let mut pypi = plan.clone();
    pypi.connector = Some(Container { name: "faker".into(), runtime: Runtime::Pypi("pypi:airbyte-source-faker".into()), env: BTreeMap::new() });
    let refused = docker_task(&pypi, &settings()).unwrap_err();
    assert!(refused.to_string().contains("local executor"), "{refused}");
}
