//! Tasks as real containers on a real Docker engine, under `sluice up`:
//! Airbyte images (Airbyte's source-faker and source-file from PyPI, in
//! Airbyte's image layout) for spec, check, discover and legacy-mode syncs,
//! source-file reading a file of the local root; our reference
//! images in socket mode; and faults: containers killed from outside, a
//! destination over its memory limit, an image that does not exist, an
//! entrypoint that fails at once, an engine that does not answer.
//!
//! The engine is the one `DOCKER_HOST` names and the images are those
//! `task-images/build-images.sh` built; `tests/run` starts both.

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sluice_launcher::docker::{demux, encode, EngineBody};
use support::docker::{engine, image};
use support::platform::Platform;
use support::Scratch;

/// The task containers the engine holds for workloads whose id contains `part`.
fn containers_of(part: &str) -> Vec<Value> {
    let all = engine().containers_labelled("sluice.workload").unwrap();
    all.into_iter().filter(|c| c["Labels"]["sluice.workload"].as_str().is_some_and(|w| w.contains(part))).collect()
}

fn volumes_of(part: &str) -> Vec<String> {
    let all = engine().volumes_labelled("sluice.volume=task").unwrap();
    let part = part.to_lowercase();
    all.iter().filter_map(|v| v["Name"].as_str()).filter(|n| n.contains(&part)).map(String::from).collect()
}

/// `docker exec` through the engine: the command's exit status and output.
fn exec(container: &str, cmd: &[&str]) -> (i64, String) {
    let e = engine();
    let created = e.call("POST", &format!("/containers/{container}/exec"), &EngineBody::Json(json!({"Cmd": cmd, "AttachStdout": true, "AttachStderr": true}))).unwrap();
    let id = serde_json::from_slice::<Value>(&created).unwrap()["Id"].as_str().unwrap().to_owned();
    let (_, raw) = e.request("POST", &format!("/exec/{id}/start"), &EngineBody::Json(json!({"Detach": false, "Tty": false}))).unwrap();
    let mut text = String::new();
    demux(&mut &raw[..], |_, frame| text.push_str(&String::from_utf8_lossy(frame)));
    let inspected: Value = serde_json::from_slice(&e.call("GET", &format!("/exec/{id}/json"), &EngineBody::None).unwrap()).unwrap();
    (inspected["ExitCode"].as_i64().unwrap_or(-1), text)
}

/// A directory every container user may write to, for `--docker-local-root`.
fn local_root(scratch: &Scratch) -> PathBuf {
    let root = scratch.path("local");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::set_permissions(&root, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    root
}

fn platform(scratch: &Scratch, extra: &[&str]) -> Platform {
    let root = local_root(scratch);
    let orchestrator = image("SLUICE_ORCHESTRATOR_IMAGE");
    let mut args = vec!["--docker-local-root", root.to_str().unwrap(), "--orchestrator-image", &orchestrator];
    args.extend_from_slice(extra);
    Platform::start(&scratch.path("data"), &args)
}

/// Ids of a JSON-lines output file's records.
fn ids(path: &Path) -> Vec<i64> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines().map(|l| serde_json::from_str::<Value>(l).unwrap()["_airbyte_data"]["id"].as_i64().unwrap()).collect()
}

fn attempts(p: &Platform, job: i64) -> Vec<Value> {
    p.get(&format!("/jobs/{job}/attempts"))["attempts"].as_array().unwrap().clone()
}

fn attempt_log(p: &Platform, job: i64, attempt: u64) -> String {
    let body = p.get(&format!("/jobs/{job}/attempts/{attempt}/logs"));
    body["text"].as_str().map(String::from).unwrap_or_else(|| body.to_string())
}

fn assert_cleaned_up(connection: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (left, volumes) = (containers_of(connection), volumes_of(connection));
        if left.is_empty() && volumes.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "the task left containers {left:?} and volumes {volumes:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn an_airbyte_image_answers_spec_check_discover_and_syncs_through_containers() {
    let scratch = Scratch::new();
    let p = platform(&scratch, &["--container-memory-mib", "768", "--container-cpus", "0.5"]);
    let workspace = p.workspace("docker");
    let faker = image("SLUICE_AIRBYTE_SOURCE_FAKER_IMAGE");
    let (repository, tag) = faker.rsplit_once(':').unwrap();
    p.post(&format!("/workspaces/{workspace}/definitions/sources"), json!({"name": "Faker image", "dockerRepository": repository, "dockerImageTag": tag, "typeKey": "faker-image"}));
    // Its spec came from a container: the config is checked against it, and a check runs as a container too.
    let (status, refused) = p.call("POST", "/sources", Some(&json!({"name": "bad", "workspaceId": workspace, "configuration": {"sourceType": "faker-image", "count": "many"}})), Some(&p.token));
    assert_eq!(status, 400, "{refused}");
    assert!(refused.to_string().contains("configuration/count"), "{refused}");
    let source = p.actor("source", &workspace, "faker-image", json!({"count": 3000, "seed": 5, "records_per_slice": 500, "always_updated": false}));
    let destination = p.actor("destination", &workspace, "sluice-jsonl", json!({"destination_path": "/local/out"}));
    let streams = p.get(&format!("/streams?sourceId={source}&destinationId={destination}"));
    assert!(streams.as_array().unwrap().iter().any(|s| s["streamName"] == "users"), "discover ran in a container: {streams}");
    let body = json!({"sourceId": source, "destinationId": destination, "configurations": {"streams": [{"name": "users", "syncMode": "incremental_append"}]}});
    let connection = p.post("/connections", body)["connectionId"].as_str().unwrap().to_owned();

    let job = p.sync(&connection);
    // While it runs: the containers carry the plan's limits, the connector
    // runs as its image's user, and sees nothing but its own volume.
    let mut seen = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut looked_inside = false;
    while Instant::now() < deadline && !looked_inside {
        for c in containers_of(&connection) {
            let name = c["Names"][0].as_str().unwrap().trim_start_matches('/').to_owned();
            let role = c["Labels"]["sluice.role"].as_str().unwrap().to_owned();
            // A container may be gone between the listing and the look.
            let Ok(inspected) = engine().inspect(&name) else { continue };
            if seen.insert(role.clone()) {
                assert_eq!(inspected["HostConfig"]["Memory"], 768u64 * 1024 * 1024, "{role}");
                assert_eq!(inspected["HostConfig"]["NanoCpus"], 500_000_000u64, "{role}");
                assert_eq!(inspected["HostConfig"]["NetworkMode"], "host", "{role}");
            }
            if role == "source" && c["State"] == "running" {
                let (_, whoami) = exec(&name, &["id", "-u"]);
                assert_eq!(whoami.trim(), "1000", "Airbyte's image runs as its own user");
                let (_, listing) = exec(&name, &["ls", "/sluice"]);
                assert_eq!(listing.split_whitespace().collect::<Vec<_>>(), ["source"], "the source sees only its own volume");
                let (code, _) = exec(&name, &["cat", "/sluice/credential"]);
                assert_ne!(code, 0, "the workload credential is not on the source's volumes");
                looked_inside = true;
            }
        }
        if p.get(&format!("/jobs/{job}"))["status"] != "running" && p.get(&format!("/jobs/{job}"))["status"] != "pending" {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let ended = p.wait_job(job, Duration::from_secs(180));
    assert_eq!(ended["status"], "succeeded", "{ended}\n{:#}\n{}", Value::Array(attempts(&p, job)), p.log());
    assert!(looked_inside, "the source container was seen running");
    assert!(["init", "source", "destination", "orchestrator"].iter().all(|r| seen.contains(*r)), "{seen:?}");
    let users = ids(&scratch.path("local/out/users.jsonl"));
    assert_eq!(users.len(), 3000);
    assert_eq!(users.iter().collect::<BTreeSet<_>>().len(), 3000, "each user once");
    let tried = attempts(&p, job);
    let last = tried.last().expect("an attempt");
    let log = attempt_log(&p, job, last["attempt"].as_u64().unwrap());
    assert!(log.contains("source") && log.to_lowercase().contains("users"), "the orchestrator container's output is the attempt log: {log}");
    assert_cleaned_up(&connection);

    // Incremental: the committed state goes into the next task; nothing new to read.
    let again = p.wait_job(p.sync(&connection), Duration::from_secs(180));
    assert_eq!(again["status"], "succeeded", "{again}");
    assert_eq!(ids(&scratch.path("local/out/users.jsonl")).len(), 3000, "the second sync resumed: {again}");
    assert_cleaned_up(&connection);
}

#[test]
fn airbyte_source_file_image_reads_a_file_of_the_local_root() {
    let scratch = Scratch::new();
    let p = platform(&scratch, &[]);
    let rows: String = (1..=250).map(|i| format!("{i},person {i},{}\n", 20 + i % 50)).collect();
    std::fs::write(scratch.path("local/people.csv"), format!("id,name,age\n{rows}")).unwrap();
    let workspace = p.workspace("file");
    let file = image("SLUICE_AIRBYTE_SOURCE_FILE_IMAGE");
    let (repository, tag) = file.rsplit_once(':').unwrap();
    p.post(&format!("/workspaces/{workspace}/definitions/sources"), json!({"name": "File image", "dockerRepository": repository, "dockerImageTag": tag, "typeKey": "file-image"}));
    // The check and discover containers read the file too.
    let config = json!({"dataset_name": "people", "format": "csv", "url": "/local/people.csv", "provider": {"storage": "local"}});
    let source = p.actor("source", &workspace, "file-image", config);
    let destination = p.actor("destination", &workspace, "sluice-jsonl", json!({"destination_path": "/local/out"}));
    let body = json!({"sourceId": source, "destinationId": destination, "configurations": {"streams": [{"name": "people", "syncMode": "full_refresh_overwrite"}]}});
    let connection = p.post("/connections", body)["connectionId"].as_str().unwrap().to_owned();
    let job = p.wait_job(p.sync(&connection), Duration::from_secs(240));
    assert_eq!(job["status"], "succeeded", "{job}\n{:#}\n{}", Value::Array(attempts(&p, job["jobId"].as_i64().unwrap())), p.log());
    assert_eq!(ids(&scratch.path("local/out/people.jsonl")), (1..=250).collect::<Vec<i64>>(), "every row, in file order");
    assert_cleaned_up(&connection);
}

#[test]
fn socket_mode_between_reference_images_crosses_containers_and_resumes() {
    let scratch = Scratch::new();
    let p = platform(&scratch, &["--executor", "docker"]);
    let workspace = p.workspace("sockets");
    let source = p.actor("source", &workspace, "sluice-faker", json!({"count": 20000, "records_per_slice": 1000}));
    let destination = p.actor("destination", &workspace, "sluice-jsonl", json!({"destination_path": "/local/out"}));
    let body = json!({"sourceId": source, "destinationId": destination, "configurations": {"streams": [{"name": "users", "syncMode": "incremental_append"}]}});
    let connection = p.post("/connections", body)["connectionId"].as_str().unwrap().to_owned();
    let job = p.sync(&connection);
    let mut platform_program = None;
    while platform_program.is_none() && p.get(&format!("/jobs/{job}"))["status"] != "succeeded" {
        for c in containers_of(&connection) {
            // The task may end and its containers go between the listing and this.
            if c["Labels"]["sluice.role"] == "orchestrator" {
                if let Ok(inspected) = engine().inspect(c["Names"][0].as_str().unwrap().trim_start_matches('/')) {
                    platform_program = inspected["Config"]["Cmd"][0].as_str().map(String::from);
                }
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let ended = p.wait_job(job, Duration::from_secs(120));
    assert_eq!(ended["status"], "succeeded", "{ended}\n{}", p.log());
    let attempt = &attempts(&p, job)[0];
    assert_eq!(attempt["dataChannel"]["medium"], "SOCKET", "{attempt}");
    if let Some(program) = platform_program {
        assert_eq!(program, "bookkeeper");
    }
    let users = ids(&scratch.path("local/out/users.jsonl"));
    assert_eq!(users.len(), 20000);
    assert_eq!(users.iter().collect::<BTreeSet<_>>().len(), 20000);
    assert_cleaned_up(&connection);
    let again = p.wait_job(p.sync(&connection), Duration::from_secs(120));
    assert_eq!(again["status"], "succeeded", "{again}");
    assert_eq!(ids(&scratch.path("local/out/users.jsonl")).len(), 20000, "resumed from the committed state: nothing read twice");
    assert_cleaned_up(&connection);
}

/// destination-s3's image in a task of containers, writing to moto on
/// the host's 127.0.0.1 (the task's network is the host's): the static
/// binary, its CA bundle and the SDK run as they would on ECS.
#[test]
fn destination_s3_image_writes_parquet_objects_from_a_container() {
    let scratch = Scratch::new();
    let p = platform(&scratch, &["--executor", "docker"]);
    let bucket = support::aws::bucket("docker");
    let workspace = p.workspace("s3");
    let source = p.actor("source", &workspace, "sluice-faker", json!({"count": 3000, "records_per_slice": 500}));
    let destination = p.actor("destination", &workspace, "s3", json!({
        "s3_bucket_name": bucket, "s3_bucket_path": "lake", "s3_bucket_region": "us-east-1", "s3_endpoint": support::aws::moto(),
        "access_key_id": "test", "secret_access_key": "test", "format": {"format_type": "Parquet", "compression_codec": "ZSTD"}}));
    let body = json!({"sourceId": source, "destinationId": destination, "configurations": {"streams": [{"name": "users", "syncMode": "incremental_append"}]}});
    let connection = p.post("/connections", body)["connectionId"].as_str().unwrap().to_owned();
    let job = p.wait_job(p.sync(&connection), Duration::from_secs(180));
    assert_eq!(job["status"], "succeeded", "{job}\n{}", p.log());
    assert_eq!(job["rowsSynced"], 3000, "{job}");
    let objects = support::aws::objects(&bucket, "lake/users/");
    assert!(!objects.is_empty() && objects.iter().all(|o| o.key.ends_with(".parquet") && o.body.starts_with(b"PAR1")), "whole Parquet objects");
    assert_cleaned_up(&connection);
}

/// A sync slow enough to kill in its middle: 40 slices of 50 users, 100 ms apart.
fn slow_connection(p: &Platform, workspace: &str, out: &str) -> String {
    let source = p.actor("source", workspace, "sluice-faker", json!({"count": 2000, "records_per_slice": 50, "slice_pause_ms": 100}));
    let destination = p.actor("destination", workspace, "sluice-jsonl", json!({"destination_path": out}));
    let body = json!({"sourceId": source, "destinationId": destination, "dataChannel": {"mode": "stdio"}, "configurations": {"streams": [
        {"name": "users", "syncMode": "incremental_deduped_history", "primaryKey": [["id"]], "cursorField": ["updated_at"]}]}});
    p.post("/connections", body)["connectionId"].as_str().unwrap().to_owned()
}

#[test]
fn containers_killed_from_outside_fail_the_attempt_by_name_and_the_retry_resumes_exactly_once() {
    let scratch = Scratch::new();
    let p = platform(&scratch, &["--executor", "docker"]);
    let workspace = p.workspace("faults");
    for role in ["source", "destination", "orchestrator"] {
        let out = format!("/local/{role}");
        let connection = slow_connection(&p, &workspace, &out);
        let job = p.sync(&connection);
        // Kill the role's container once some state is committed.
        p.wait_for("a committed state", Duration::from_secs(60), |p| !p.get(&format!("/connections/{connection}/state"))["states"].as_array().is_none_or(|s| s.is_empty()));
        let victim = containers_of(&connection).into_iter().find(|c| c["Labels"]["sluice.role"] == role).expect("the container runs");
        let name = victim["Names"][0].as_str().unwrap().trim_start_matches('/').to_owned();
        engine().call("POST", &format!("/containers/{name}/kill?signal=SIGKILL"), &EngineBody::None).unwrap();
        let ended = p.wait_job(job, Duration::from_secs(180));
        assert_eq!(ended["status"], "succeeded", "{role}: the retry finished the job: {ended}\n{}", p.log());
        let tried = attempts(&p, job);
        assert!(tried.len() >= 2, "{role}: {tried:?}");
        let failure = tried[0]["failure"]["message"].as_str().unwrap_or_default().to_owned();
        assert!(failure.contains(&name) && failure.contains("SIGKILL"), "{role}: the failure names the container and the cause: {failure}");
        assert!(tried[1]["recordsEmitted"].as_u64().unwrap() < 2000, "{role}: the retry resumed from the committed state: {tried:?}");
        let users = ids(&scratch.path(&format!("local/{role}/users.jsonl")));
        assert_eq!(users.iter().collect::<BTreeSet<_>>().len(), 2000, "{role}: every user");
        assert_eq!(users.len(), 2000, "{role}: none twice after dedup");
        assert_cleaned_up(&connection);
    }
}

/// `sluice up` killed mid-sync: the engine keeps the task's containers
/// running, so the retry's task first removes them (the connection's fence
/// on Docker: nothing of an earlier attempt runs beside the next), says so
/// in its log, and resumes from the committed state, each user once.
#[test]
fn after_sluice_up_is_killed_the_retry_first_removes_the_containers_its_task_left() {
    let scratch = Scratch::new();
    let mut p = platform(&scratch, &["--executor", "docker"]);
    let workspace = p.workspace("fence");
    let connection = slow_connection(&p, &workspace, "/local/fence");
    let job = p.sync(&connection);
    p.wait_for("a committed state", Duration::from_secs(60), |p| !p.get(&format!("/connections/{connection}/state"))["states"].as_array().is_none_or(|s| s.is_empty()));
    p.kill();
    let left: Vec<String> = containers_of(&connection)
        .iter()
        .filter(|c| c["State"] == "running")
        .map(|c| c["Names"][0].as_str().unwrap().trim_start_matches('/').to_owned())
        .collect();
    assert!(left.len() >= 3, "source, destination and orchestrator outlive sluice up: {left:?}");
    p.restart();
    let ended = p.wait_job(job, Duration::from_secs(180));
    assert_eq!(ended["status"], "succeeded", "{ended}\n{}", p.log());
    let tried = attempts(&p, job);
    assert!(tried.len() >= 2, "{tried:?}");
    let log = attempt_log(&p, job, 1);
    assert!(log.contains("removed the containers an earlier attempt of this connection left"), "{log}");
    for name in &left {
        assert!(log.contains(name.as_str()), "the log names {name}: {log}");
    }
    let users = ids(&scratch.path("local/fence/users.jsonl"));
    assert_eq!(users.iter().collect::<BTreeSet<_>>().len(), 2000, "every user");
    assert_eq!(users.len(), 2000, "none twice after dedup");
    assert_cleaned_up(&connection);
}

/// An image made from the busybox base by the engine alone (no builder):
/// `files` at the root, `AIRBYTE_ENTRYPOINT` naming the program.
fn busybox_image(name: &str, files: &[(&str, &str)], entrypoint: &str) -> String {
    let e = engine();
    let base = image("SLUICE_BUSYBOX_IMAGE");
    let scratch_name = format!("build-{}", name.replace([':', '/'], "-"));
    let _ = e.call("DELETE", &format!("/containers/{scratch_name}?force=true"), &EngineBody::None);
    e.call("POST", &format!("/containers/create?name={scratch_name}"), &EngineBody::Json(json!({"Image": base, "Cmd": ["true"]}))).unwrap();
    let archive: Vec<sluice_launcher::docker::TarFile> =
        files.iter().map(|(n, d)| sluice_launcher::docker::TarFile { name: n.to_string(), data: d.as_bytes().to_vec(), mode: 0o755, uid: 0 }).collect();
    e.put_files(&scratch_name, "/", &archive).unwrap();
    let (repo, tag) = name.rsplit_once(':').unwrap();
    let change = encode(&format!("ENV AIRBYTE_ENTRYPOINT={entrypoint}"));
    e.call("POST", &format!("/commit?container={scratch_name}&repo={repo}&tag={tag}&changes={change}"), &EngineBody::None).unwrap();
    e.call("DELETE", &format!("/containers/{scratch_name}?force=true"), &EngineBody::None).unwrap();
    name.to_owned()
}

const GREEDY_SPEC: &str = r#"{"type":"SPEC","spec":{"connectionSpecification":{"type":"object","properties":{}},"supported_destination_sync_modes":["append","overwrite","append_dedup"]}}"#;

#[test]
fn an_oom_kill_a_missing_image_a_failing_entrypoint_and_a_silent_engine_each_say_what_failed() {
    let scratch = Scratch::new();
    // A destination that keeps everything it reads in memory, over a 32 MiB limit.
    let greedy = busybox_image(
        "sluice-test/greedy-destination:1",
        &[("greedy", &format!("#!/bin/sh\ncase \"$1\" in spec) echo '{GREEDY_SPEC}';; check) echo '{{\"type\":\"CONNECTION_STATUS\",\"connectionStatus\":{{\"status\":\"SUCCEEDED\"}}}}';; write) all=$(cat); echo done;; esac\n"))],
        "/greedy",
    );
    let p = platform(&scratch, &["--container-memory-mib", "32"]);
    let workspace = p.workspace("oom");
    let (repository, tag) = greedy.rsplit_once(':').unwrap();
    p.post(&format!("/workspaces/{workspace}/definitions/destinations"), json!({"name": "Greedy", "dockerRepository": repository, "dockerImageTag": tag, "typeKey": "greedy"}));
    let source = p.actor("source", &workspace, "sluice-faker", json!({"count": 400000, "record_size_bytes": 400}));
    let destination = p.actor("destination", &workspace, "greedy", json!({}));
    let body = json!({"sourceId": source, "destinationId": destination, "configurations": {"streams": [{"name": "users", "syncMode": "full_refresh_append"}]}});
    let connection = p.post("/connections", body)["connectionId"].as_str().unwrap().to_owned();
    let job = p.sync(&connection);
    p.wait_for("a failed first attempt", Duration::from_secs(120), |p| attempts(p, job).first().is_some_and(|a| a["status"] == "failed"));
    let failure = attempts(&p, job)[0]["failure"]["message"].as_str().unwrap_or_default().to_owned();
    assert!(failure.contains("destination container") && failure.contains("OOM kill") && failure.contains("32 MiB"), "{failure}\n{}", p.log());
    p.ok("DELETE", &format!("/jobs/{job}"), None);
    p.wait_job(job, Duration::from_secs(60));
    assert_cleaned_up(&connection);

    // An image the engine does not have and cannot pull.
    p.post(&format!("/workspaces/{workspace}/definitions/sources"), json!({"name": "Absent", "dockerRepository": "sluice-test/absent", "dockerImageTag": "9.9.9", "typeKey": "absent"}));
    let (status, answer) = p.call("POST", "/sources", Some(&json!({"name": "absent", "workspaceId": workspace, "configuration": {"sourceType": "absent"}})), Some(&p.token));
    assert!(status >= 400 && answer.to_string().contains("sluice-test/absent:9.9.9") && answer.to_string().contains("pulling it failed"), "{status} {answer}");

    // An image whose program is not there: it fails at once, and says so.
    let broken = busybox_image("sluice-test/no-program:1", &[("README", "nothing to run\n")], "/missing-program");
    let (repository, tag) = broken.rsplit_once(':').unwrap();
    p.post(&format!("/workspaces/{workspace}/definitions/sources"), json!({"name": "Broken", "dockerRepository": repository, "dockerImageTag": tag, "typeKey": "broken"}));
    let (status, answer) = p.call("POST", "/sources", Some(&json!({"name": "broken", "workspaceId": workspace, "configuration": {"sourceType": "broken"}})), Some(&p.token));
    assert!(status >= 400 && answer.to_string().contains("/missing-program"), "{status} {answer}");
    drop(p);

    // An engine that accepts connections and never answers: the task fails, naming it, in bounded time.
    let silent = scratch.path("silent.sock");
    let listener = std::os::unix::net::UnixListener::bind(&silent).unwrap();
    let held = std::thread::spawn(move || listener.incoming().take(50).flatten().collect::<Vec<_>>());
    let p = Platform::start(&scratch.path("data2"), &["--executor", "docker", "--docker-socket", silent.to_str().unwrap(), "--docker-timeout-secs", "2"]);
    let workspace = p.workspace("silent");
    let started = Instant::now();
    let (status, answer) = p.call("POST", "/sources", Some(&json!({"name": "faker", "workspaceId": workspace, "configuration": {"sourceType": "sluice-faker"}})), Some(&p.token));
    assert!(status >= 400 && answer.to_string().contains("did not answer GET /version within 2s"), "{status} {answer}");
    assert!(started.elapsed() < Duration::from_secs(60), "no task hangs on a silent engine");
    drop(p);
    drop(held);
}

/// Airbyte's catalogue in containers: a registry import whose
/// manifest-only entry runs on the declarative runner's image (the
/// manifest injected into its config) against the test API on 127.0.0.1,
/// and whose image-only entry runs its image.
#[test]
fn registry_definitions_run_as_containers_manifest_on_the_runners_image() {
    use support::test_api::{manifest, source_config, TestApi};
    let scratch = Scratch::new();
    let api = TestApi::start(&scratch);
    let root = local_root(&scratch);
    let orchestrator = image("SLUICE_ORCHESTRATOR_IMAGE");
    let runner = image("SLUICE_MANIFEST_RUNNER_IMAGE");
    let args = ["--docker-local-root", root.to_str().unwrap(), "--orchestrator-image", &orchestrator, "--executor", "docker"];
    let p = Platform::start_with_env(&scratch.path("data"), &args, &[("SLUICE_MANIFEST_RUNNER_IMAGE", &runner)]);
    let faker = image("SLUICE_AIRBYTE_SOURCE_FAKER_IMAGE");
    let (repository, tag) = faker.rsplit_once(':').unwrap();
    let registry = json!({
        "sources": [
            {"sourceDefinitionId": "7e3a9d2c-41b5-4c1e-9a0f-5b8d2e6c1f01", "name": "Test API", "dockerRepository": "airbyte/source-test-api",
             "dockerImageTag": "0.1.0", "language": "manifest-only", "remoteRegistries": {"pypi": {"enabled": false}}},
            {"sourceDefinitionId": "5d2b8e1a-9c3f-4b7d-a6e0-1f4c7b9d2e14", "name": "Faker image", "dockerRepository": repository,
             "dockerImageTag": tag, "language": "python", "remoteRegistries": {"pypi": {"enabled": false, "packageName": "airbyte-source-faker"}}}
        ],
        "manifests": {"source-test-api": manifest()}
    });
    let report = p.post("/definitions/import", registry);
    let runtimes: Vec<&str> = report["definitions"].as_array().unwrap().iter().map(|d| d["runtime"].as_str().unwrap()).collect();
    assert_eq!(runtimes, ["manifest", format!("image:{faker}").as_str()]);

    let workspace = p.workspace("catalogue");
    let destination = p.actor("destination", &workspace, "sluice-jsonl", json!({"destination_path": "/local/manifest"}));
    let source = p.actor("source", &workspace, "test-api", source_config(&api));
    let connection = p.post("/connections", json!({"sourceId": source, "destinationId": destination,
        "configurations": {"streams": [{"name": "items", "syncMode": "incremental_append"}, {"name": "users", "syncMode": "full_refresh_overwrite"}]}}))["connectionId"].as_str().unwrap().to_owned();
    let job = p.wait_job(p.sync(&connection), Duration::from_secs(300));
    assert_eq!(job["status"], "succeeded", "{job}\n{}", attempt_log(&p, job["jobId"].as_i64().unwrap(), 0));
    assert_eq!(ids(&root.join("manifest/items.jsonl")).len(), 7);
    let started: jiff::Timestamp = job["startTime"].as_str().unwrap().parse().unwrap();
    let first = std::fs::read_to_string(root.join("manifest/items.jsonl")).unwrap().lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).unwrap()["_airbyte_extracted_at"].as_i64())
        .min().unwrap();
    eprintln!("manifest connector in containers: first record {:.2}s after POST /jobs", (first as f64 / 1000.0) - started.as_millisecond() as f64 / 1000.0);
    assert_eq!(ids(&root.join("manifest/users.jsonl")).len(), 5);
    assert!(!attempt_log(&p, job["jobId"].as_i64().unwrap(), 0).contains(support::test_api::KEY), "the key stays out of the log");
    assert_cleaned_up(&connection);

    let destination = p.actor("destination", &workspace, "sluice-jsonl", json!({"destination_path": "/local/image"}));
    let source = p.post("/sources", json!({"name": "faker", "workspaceId": workspace, "definitionId": "5d2b8e1a-9c3f-4b7d-a6e0-1f4c7b9d2e14", "configuration": {"count": 25}}))["sourceId"].as_str().unwrap().to_owned();
    let connection = p.post("/connections", json!({"sourceId": source, "destinationId": destination,
        "configurations": {"streams": [{"name": "users", "syncMode": "full_refresh_overwrite"}]}}))["connectionId"].as_str().unwrap().to_owned();
    let job = p.wait_job(p.sync(&connection), Duration::from_secs(300));
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(ids(&root.join("image/users.jsonl")).len(), 25);
}

/// `sluice bench --containers`, short: both modes run as processes and as
/// containers, each moving every record, and the job-to-container latency
/// is measured, not skipped.
#[test]
fn the_containers_bench_runs_its_short_form() {
    let out = support::sluice().args(["bench", "--containers", "--records", "2000", "--record-size", "256", "--runs", "1"]).output().unwrap();
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{printed}\n{}", String::from_utf8_lossy(&out.stderr));
    let rows: Vec<Vec<&str>> = printed.lines().map(|l| l.split_whitespace().collect()).collect();
    for (mode, records) in [("legacy", "2000"), ("legacy", "8000"), ("socket", "2000"), ("socket", "8000"), ("legacy", "rate"), ("socket", "rate")] {
        assert!(rows.iter().any(|r| r.first() == Some(&mode) && r.contains(&records)), "no {mode} row of {records} in:\n{printed}");
    }
    assert!(printed.contains("POST /jobs to the source container running (images present), median of 1: "), "{printed}");
}
