//! The platform as its Lambda functions: the real `config-api`,
//! `workload-api`, `scheduler`, `launcher` and `monitor` binaries, each run
//! by a local Lambda Runtime API, with API Gateway's REST proxy in front of
//! the two APIs; SQS batches fed to the launcher as the event source
//! mapping would (every message delivered twice, as the captured batch
//! has it); schedules fired with the input EventBridge Scheduler holds; the
//! monitor invoked with the captured scheduled event; ECS tasks played
//! from what moto holds. All state is on moto, and every control-plane
//! call goes through the binaries.

mod support;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sluice_lambda::gateway::{Gateway, IamAuth};
use sluice_lambda::runtime_api::LocalRuntime;
use support::aws::{default_network, moto, provision, task_role, EcsPlayer, TASK_ROLE_ARN};
use support::platform::Platform;
use support::{fixture, Scratch};

/// A function's binary: the `bootstrap` of its package when
/// `SLUICE_FUNCTIONS_DIR` names the build script's output
/// (`task-images/build-lambdas.sh --out DIR`), else the binary `cargo test`
/// built beside this test.
fn function_binary(name: &str) -> PathBuf {
    let path = match std::env::var_os("SLUICE_FUNCTIONS_DIR") {
        Some(dir) => PathBuf::from(dir).join(name).join("bootstrap"),
        None => std::env::current_exe().unwrap().parent().unwrap().parent().unwrap().join(name),
    };
    assert!(path.exists(), "{} is missing: build the functions (cargo build --workspace, or task-images/build-lambdas.sh)", path.display());
    path
}

struct Functions {
    config: Arc<LocalRuntime>,
    workload: Arc<LocalRuntime>,
    scheduler: LocalRuntime,
    launcher: Arc<LocalRuntime>,
    monitor: LocalRuntime,
    gateway: Gateway,
    /// The function processes, killed with this.
    _children: Vec<tokio::process::Child>,
}

impl Functions {
    async fn start(prefix: &str, log: &std::path::Path, subnet: &str, group: &str) -> Functions {
        let runtime = || async { Arc::new(LocalRuntime::start().await.unwrap()) };
        let (config, workload, launcher) = (runtime().await, runtime().await, runtime().await);
        let (scheduler, monitor) = (LocalRuntime::start().await.unwrap(), LocalRuntime::start().await.unwrap());
        let routes = vec![
            ("/api/public/v1".to_owned(), config.clone()),
            ("/v1".to_owned(), config.clone()),
            ("/api/internal/v1".to_owned(), workload.clone()),
            // The web app, as template.yaml routes it: `/` and `/assets/{proxy+}`.
            ("/".to_owned(), config.clone()),
            ("/assets/".to_owned(), config.clone()),
        ];
        // The workload routes are behind IAM auth, as template.yaml declares: only the task role gets in.
        let iam = IamAuth { prefixes: vec!["/api/internal/v1".into()], region: "us-east-1".into(), principals: vec![task_role()] };
        let gateway = Gateway::start_with_iam(routes, iam).await.unwrap();
        let api = format!("{}/api/internal/v1", gateway.url());
        let mut env: Vec<(String, String)> = sluice_store_aws::moto::env(moto()).into_iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        env.extend(
            [
                ("SLUICE_PREFIX", prefix),
                ("SLUICE_RETRY_BACKOFF_SECS", "1"),
                ("SLUICE_HEARTBEAT_TIMEOUT_SECS", "4"),
                ("SLUICE_TASK_SUBNETS", subnet),
                ("SLUICE_TASK_SECURITY_GROUPS", group),
                ("SLUICE_TASK_EXECUTION_ROLE_ARN", "arn:aws:iam::123456789012:role/task-execution"),
                ("SLUICE_TASK_ROLE_ARN", TASK_ROLE_ARN),
                ("SLUICE_WORKLOAD_API_URL", &api),
                ("SLUICE_WORKLOAD_API_AUTH", "aws-iam"),
            ]
            .map(|(k, v)| (k.to_owned(), v.to_owned())),
        );
        let mut functions = Functions { config, workload, scheduler, launcher, monitor, gateway, _children: vec![] };
        // Two instances of each API, as Lambda scales out under concurrent requests.
        let plan: [(&str, &LocalRuntime, usize); 5] = [
            ("config-api", &functions.config, 2),
            ("workload-api", &functions.workload, 2),
            ("scheduler", &functions.scheduler, 1),
            ("launcher", &functions.launcher, 1),
            ("monitor", &functions.monitor, 1),
        ];
        // Cold starts, one function at a time: from its process's start to
        // its init done (its first poll for an event) and to its first answer.
        let health: Value = serde_json::from_str(sluice_lambda::events::REST_PROXY).unwrap();
        let mut unknown_workload = health.clone();
        unknown_workload["path"] = json!("/api/internal/v1/workloads/none");
        let firsts = [
            ("config-api", health, Some(200)),
            ("workload-api", unknown_workload, Some(401)),
            ("scheduler", json!({"jobId": 0, "source": "retry"}), None),
            ("launcher", json!({"Records": []}), None),
            ("monitor", serde_json::from_str(sluice_lambda::events::SCHEDULED_EVENT).unwrap(), None),
        ];
        for (name, event, status) in firsts {
            let probe = LocalRuntime::start().await.unwrap();
            let file = std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap();
            let started = Instant::now();
            let mut child = probe.function(function_binary(name).to_str().unwrap(), name).envs(env.iter().map(|(k, v)| (k, v))).stderr(file).spawn().unwrap();
            let answer = probe.invoke(event, Duration::from_secs(60)).await;
            let answered = started.elapsed();
            let init = probe.first_poll().map(|t| t - started).unwrap_or_default();
            let answer = answer.unwrap_or_else(|e| panic!("{name}: {e}")).unwrap_or_else(|e| panic!("{name} failed its first event: {e}"));
            if let Some(status) = status {
                assert_eq!(answer["statusCode"], status, "{name}: {answer}");
            }
            eprintln!("cold start: {name}: init done {} ms, first answer {} ms after its process started", init.as_millis(), answered.as_millis());
            child.kill().await.unwrap();
        }
        let mut children = Vec::new();
        for (name, runtime, instances) in plan {
            for _ in 0..instances {
                let file = std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap();
                let child = runtime.function(function_binary(name).to_str().unwrap(), name).envs(env.iter().map(|(k, v)| (k, v))).stderr(file).spawn().unwrap();
                children.push(child);
            }
        }
        functions._children = children;
        functions
    }
}

/// Lambda's SQS event source mapping: receives batches from the queue,
/// invokes the launcher with them (each message twice, as a duplicated
/// delivery), and deletes the messages not reported as failures.
async fn event_source_mapping(queue_url: String, launcher: Arc<LocalRuntime>) {
    let config = sluice_store_aws::moto::sdk_config(moto()).await;
    let sqs = aws_sdk_sqs::Client::new(&config);
    let captured: Value = serde_json::from_str(sluice_lambda::events::SQS_BATCH_DUPLICATED).unwrap();
    loop {
        let Ok(received) = sqs.receive_message().queue_url(&queue_url).max_number_of_messages(10).wait_time_seconds(1).send().await else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        if received.messages().is_empty() {
            continue;
        }
        let mut records = Vec::new();
        for message in received.messages() {
            for (i, delivery) in captured["Records"].as_array().unwrap().iter().enumerate() {
                let mut record = delivery.clone();
                record["messageId"] = json!(message.message_id());
                record["receiptHandle"] = json!(format!("{}#{i}", message.receipt_handle().unwrap()));
                record["body"] = json!(message.body());
                records.push(record);
            }
        }
        let answer = launcher.invoke(json!({"Records": records}), Duration::from_secs(60)).await;
        let failed: Vec<String> = match &answer {
            Ok(Ok(a)) => a["batchItemFailures"].as_array().into_iter().flatten().filter_map(|f| f["itemIdentifier"].as_str().map(str::to_owned)).collect(),
            _ => received.messages().iter().filter_map(|m| m.message_id().map(str::to_owned)).collect(),
        };
        for message in received.messages().iter().filter(|m| !failed.iter().any(|f| Some(f.as_str()) == m.message_id())) {
            let _ = sqs.delete_message().queue_url(&queue_url).receipt_handle(message.receipt_handle().unwrap()).send().await;
        }
    }
}

/// The input EventBridge Scheduler holds for a schedule, as it would invoke the scheduler with.
async fn schedule_input(group: &str, name: &str) -> Option<Value> {
    let config = sluice_store_aws::moto::sdk_config(moto()).await;
    let schedule = aws_sdk_scheduler::Client::new(&config).get_schedule().group_name(group).name(name).send().await.ok()?;
    serde_json::from_str(schedule.target()?.input()?).ok()
}

/// What carries workloads out: the SQS event source mapping feeding the
/// launcher, and ECS played from what moto holds.
fn tasks(rt: &tokio::runtime::Runtime, prefix: &str, scratch: &Scratch, f: &Functions) -> EcsPlayer {
    // The scripted source is published as an image, as a user's own connector would be.
    support::docker::scripted_source_image();
    let ecs = EcsPlayer::start(prefix, vec![scratch.path("out")]);
    let queue_url = rt.block_on(async {
        let config = sluice_store_aws::moto::sdk_config(moto()).await;
        sluice_store_aws::SqsQueue::url_of(&config, &sluice_store_aws::Names::with_prefix(prefix).queue).await.unwrap()
    });
    rt.spawn(event_source_mapping(queue_url, f.launcher.clone()));
    ecs
}

/// An access token for client credentials, from the Config API at `base`.
fn access_token(base: &str, client_id: &str, secret: &str, log: &std::path::Path) -> String {
    let form = format!("grant_type=client_credentials&client_id={client_id}&client_secret={secret}");
    let mut answer = support::platform::agent().post(&format!("{base}/applications/token")).header("content-type", "application/x-www-form-urlencoded").send(form).unwrap();
    let text = answer.body_mut().read_to_string().unwrap_or_default();
    assert_eq!(answer.status(), 200, "{text}\n{}", std::fs::read_to_string(log).unwrap_or_default());
    serde_json::from_str::<Value>(&text).unwrap()["access_token"].as_str().unwrap().to_owned()
}

/// A provisioned platform named `<tag><pid>` on moto, and its functions
/// running; their log goes to `functions.log` in the scratch directory.
fn functions_on_moto(tag: &str) -> (String, Scratch, PathBuf, tokio::runtime::Runtime, Functions) {
    let prefix = format!("{tag}{}", std::process::id());
    provision(&prefix);
    let (subnet, group) = default_network();
    let scratch = Scratch::new();
    let log = scratch.path("functions.log");
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let f = rt.block_on(Functions::start(&prefix, &log, &subnet, &group));
    (prefix, scratch, log, rt, f)
}

#[test]
fn the_platform_runs_as_its_lambda_functions() {
    let (prefix, scratch, log, rt, f) = functions_on_moto("lam");

    // A new user's first application, as `sluice provision` makes it.
    let credentials = scratch.path("credentials.json");
    let output = support::sluice()
        .args(["provision", "--prefix", &prefix, "--credentials-file"])
        .arg(&credentials)
        .args(["--api-url", &format!("{}/api/public/v1", f.gateway.url())])
        .envs(support::aws::aws_env())
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    // `sluice load`'s read load through the gateway and the config-api
    // function: short here; SLUICE_GATEWAY_LOAD=<rate>:<seconds> is the long form.
    let (rate, seconds) = std::env::var("SLUICE_GATEWAY_LOAD")
        .ok()
        .map(|v| v.split_once(':').and_then(|(r, s)| Some((r.parse::<u64>().ok()?, s.parse::<u64>().ok()?))).expect("SLUICE_GATEWAY_LOAD is <rate>:<seconds>"))
        .unwrap_or((50, 2));
    let load = support::sluice()
        .args(["load", "--rate", &rate.to_string(), "--seconds", &seconds.to_string(), "--workers", "4", "-o", "json", "--credentials"])
        .arg(&credentials)
        .output()
        .unwrap();
    let report: Value = serde_json::from_slice(&load.stdout).unwrap_or(Value::Null);
    eprintln!("load through the gateway: {report}");
    assert!(load.status.success() && report["errors"] == 0 && report["sent"] == rate * seconds, "{report:#}\n{}", String::from_utf8_lossy(&load.stderr));
    let credentials: Value = serde_json::from_str(&std::fs::read_to_string(&credentials).unwrap()).unwrap();
    let base = format!("{}/api/public/v1", f.gateway.url());
    let token = access_token(&base, credentials["client_id"].as_str().unwrap(), credentials["client_secret"].as_str().unwrap(), &log);
    let p = Platform::attach(&base, &token, &log);

    let ecs = tasks(&rt, &prefix, &scratch, &f);

    // The web app comes from the config-api function too, uncompressed: API Gateway compresses.
    let agent = support::platform::agent();
    let mut page = agent.get(&format!("{}/", f.gateway.url())).header("accept-encoding", "gzip").call().unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.headers().get("content-encoding").is_none(), "the function leaves compression to API Gateway");
    let html = page.body_mut().read_to_string().unwrap();
    let script = html.split("src=\"./").nth(1).and_then(|r| r.split('"').next()).expect("index.html loads a script");
    let asset = agent.get(&format!("{}/{script}", f.gateway.url())).call().unwrap();
    assert_eq!((asset.status().as_u16(), asset.headers()["content-type"].to_str().unwrap()), (200, "text/javascript; charset=utf-8"));
    assert_eq!(agent.get(&format!("{}/elsewhere", f.gateway.url())).call().unwrap().status(), 403, "only `/` and `/assets/` reach the app");

    // Create: a connector that exists only as an image (its spec learnt by an ECS task), a source, a destination.
    let workspace = p.workspace("on lambda");
    p.post(&format!("/workspaces/{workspace}/definitions/sources"), json!({"name": "Scripted", "dockerRepository": "example/scripted-source", "dockerImageTag": "1.0.0", "typeKey": "scripted"}));
    const SECRET: &str = "sk-lambda-0123456789";
    let source = p.actor("source", &workspace, "scripted", json!({"records": 400, "state_every": 10, "delay_secs": 0.02, "api_key": SECRET}));
    let out = scratch.path("out");
    let destination = p.actor("destination", &workspace, "sluice-jsonl", json!({"destination_path": out.display().to_string()}));

    // Discover: an ECS task asks the connector, its answer comes back through the workload API.
    let streams = p.get(&format!("/streams?sourceId={source}&destinationId={destination}"));
    assert_eq!(streams[0]["streamName"], "items", "{streams}");
    let connection = p.items_connection(&source, &destination);

    // Sync, then an incremental sync that resumes from the committed state.
    let job = p.wait_job(p.sync(&connection), Duration::from_secs(120));
    assert_eq!(job["status"], "succeeded", "{job}\n{}", p.log());
    assert_eq!(p.cursor(&connection), 400);
    let job = p.wait_job(p.sync(&connection), Duration::from_secs(120));
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(p.cursor(&connection), 800, "the second sync resumed after the first");
    assert_eq!(scratch.read_lines("out/items.jsonl").len(), 800);

    // The tasks signed every workload API call with the task role; nothing else passes the gateway.
    let heartbeat = format!("{}/api/internal/v1/workloads/none/heartbeat", f.gateway.url());
    let post = |headers: &[(&str, String)]| {
        let mut request = support::platform::agent().post(&heartbeat);
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        let mut answer = request.send("{}").unwrap();
        (answer.status().as_u16(), answer.body_mut().read_to_string().unwrap_or_default())
    };
    let (status, text) = post(&[("authorization", "Bearer a-workload-credential".into())]);
    assert_eq!((status, text.contains("Missing Authentication Token")), (403, true), "{text}");
    let role = task_role();
    let signed_by = |secret: &str| {
        let credentials = sluice_orchestrator::aws_iam::Credentials {
            access_key_id: role.access_key_id.clone(),
            secret_access_key: secret.into(),
            session_token: role.session_token.clone(),
            expires_at: None,
        };
        let request = sluice_orchestrator::aws_iam::Request { method: "POST", url: &heartbeat, body: b"{}" };
        let mut headers = sluice_orchestrator::aws_iam::sign(&request, &credentials, "us-east-1", "execute-api", jiff::Timestamp::now().as_second()).unwrap();
        headers.push(("x-sluice-authorization", "Bearer not-this-workloads".into()));
        headers
    };
    let (status, text) = post(&signed_by("a guessed secret"));
    assert_eq!((status, text.contains("signature we calculated does not match")), (403, true), "{text}");
    let (status, text) = post(&signed_by(&role.secret_access_key));
    assert_eq!(status, 401, "signed by the task role, the call reaches the function, which still wants the workload's credential: {text}");

    // Concurrent job requests, served by two config-api instances: one job starts.
    let answers: Vec<(u16, Value)> = std::thread::scope(|s| {
        let calls: Vec<_> = (0..4).map(|_| s.spawn(|| p.call("POST", "/jobs", Some(&json!({"connectionId": connection, "jobType": "sync"})), Some(&p.token)))).collect();
        calls.into_iter().map(|c| c.join().unwrap()).collect()
    });
    let started: Vec<&Value> = answers.iter().filter(|(status, _)| *status == 200).map(|(_, body)| body).collect();
    assert_eq!(started.len(), 1, "{answers:?}");
    assert!(answers.iter().all(|(status, _)| [200, 409].contains(status)), "{answers:?}");
    let running = started[0]["jobId"].as_i64().unwrap();

    // Cancel: the committed state stays, and the task is stopped.
    p.wait_for("a committed state", Duration::from_secs(60), |p| p.cursor(&connection) >= 820);
    assert_eq!(p.ok("DELETE", &format!("/jobs/{running}"), None)["status"], "cancelled");
    assert_eq!(p.wait_job(running, Duration::from_secs(60))["status"], "cancelled");
    let kept = p.cursor(&connection);
    assert!((820..1200).contains(&kept), "{kept}");

    // Conflicting updates of one connection: each is applied or refused with 409, never a 5xx.
    let names: Vec<(u16, Value)> = std::thread::scope(|s| {
        let calls: Vec<_> = (0..6)
            .map(|i| {
                let (p, connection) = (&p, &connection);
                s.spawn(move || p.call("PATCH", &format!("/connections/{connection}"), Some(&json!({"name": format!("name {i}")})), Some(&p.token)))
            })
            .collect();
        calls.into_iter().map(|c| c.join().unwrap()).collect()
    });
    assert!(names.iter().all(|(status, _)| [200, 409].contains(status)), "{names:?}");
    let refused = names.iter().filter(|(status, _)| *status == 409).count();
    eprintln!("concurrent PATCHes: {} applied, {refused} refused with 409", names.len() - refused);
    let final_name = p.get(&format!("/connections/{connection}"))["name"].clone();
    assert!(names.iter().any(|(status, body)| *status == 200 && body["name"] == final_name), "{final_name} {names:?}");

    // The connection's schedule fires: EventBridge Scheduler's input, to the scheduler function.
    p.ok("PATCH", &format!("/connections/{connection}"), Some(json!({"schedule": {"scheduleType": "cron", "cronExpression": "0 0 6 * * ?"}})));
    let input = rt.block_on(schedule_input(&prefix, &connection)).expect("the connection's schedule");
    let fired = rt.block_on(f.scheduler.invoke(input, Duration::from_secs(60))).unwrap().unwrap();
    let scheduled = fired["started"].as_i64().unwrap_or_else(|| panic!("{fired}"));

    // Its task freezes: no heartbeat. The monitor fails the workload, stops
    // the task and, since the attempt made progress, starts attempt 2 at once.
    p.wait_for("a committed state", Duration::from_secs(60), |p| p.cursor(&connection) >= kept + 20);
    let workload = format!("{connection}_{scheduled}_0_sync");
    p.wait_for("the task's processes", Duration::from_secs(30), |_| ecs.freeze(&workload) >= 3);
    std::thread::sleep(Duration::from_secs(6));
    let tick: Value = serde_json::from_str(sluice_lambda::events::SCHEDULED_EVENT).unwrap();
    let swept = rt.block_on(f.monitor.invoke(tick.clone(), Duration::from_secs(60))).unwrap().unwrap();
    assert_eq!(swept["failed"], json!([workload]), "{swept}");
    // The cancelled job's task may still be stopping its containers: the monitor stops it too.
    let cancelled = format!("{connection}_{running}_0_sync");
    let stopped: Vec<&str> = swept["stopped"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    assert!(stopped.contains(&workload.as_str()) && stopped.iter().all(|w| *w == workload || *w == cancelled), "{swept}");
    assert_eq!(swept["retried"], json!([scheduled]), "{swept}");
    let job = p.wait_job(scheduled, Duration::from_secs(120));
    assert_eq!(job["status"], "succeeded", "{job}");
    let attempts = p.get(&format!("/jobs/{scheduled}/attempts"));
    assert_eq!(attempts["attempts"].as_array().map(Vec::len), Some(2), "{attempts}");
    let lines = scratch.read_lines("out/items.jsonl");
    let mut ids: Vec<i64> = lines.iter().map(|l| l["_airbyte_data"]["id"].as_i64().unwrap()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids, (1..=p.cursor(&connection)).collect::<Vec<_>>(), "every record up to the committed state arrived, none past it");

    // Each workload became one ECS task, though every message was delivered twice.
    rt.block_on(async {
        let config = sluice_store_aws::moto::sdk_config(moto()).await;
        let ecs_client = aws_sdk_ecs::Client::new(&config);
        // A task may stop between the two lists: tasks are counted by ARN.
        let mut arns = std::collections::BTreeSet::new();
        for status in [aws_sdk_ecs::types::DesiredStatus::Running, aws_sdk_ecs::types::DesiredStatus::Stopped] {
            arns.extend(ecs_client.list_tasks().cluster(&prefix).desired_status(status).send().await.unwrap().task_arns().iter().cloned());
        }
        let arns: Vec<String> = arns.into_iter().collect();
        let mut workloads = Vec::new();
        for chunk in arns.chunks(100) {
            let tasks = ecs_client.describe_tasks().cluster(&prefix).set_tasks(Some(chunk.to_vec())).send().await.unwrap();
            workloads.extend(tasks.tasks().iter().map(|t| t.started_by().unwrap_or_default().to_owned()));
        }
        let unique: std::collections::HashSet<&String> = workloads.iter().collect();
        assert_eq!(unique.len(), workloads.len(), "a workload launched twice: {workloads:?}");
        assert!(workloads.iter().any(|w| w.starts_with("spec_")) && workloads.iter().any(|w| w.starts_with("discover_")), "{workloads:?}");
        // The secret is in Secrets Manager only.
        let dynamo = aws_sdk_dynamodb::Client::new(&config);
        for table in ["config", "jobs", "workloads"] {
            let items = dynamo.scan().table_name(format!("{prefix}-{table}")).send().await.unwrap();
            assert!(!format!("{:?}", items.items()).contains(SECRET), "{table} holds the secret");
        }
    });
    assert!(!p.log().contains(SECRET), "a function logged the secret");
    drop(ecs);
    drop(f);
}

/// schemathesis against the Config API served by the config-api binary
/// behind the gateway, on DynamoDB: no 5xx, nothing off the document.
#[test]
fn schemathesis_finds_no_server_error_in_the_config_api_function() {
    let cache = sluice_connectors::Cache { root: support::cache_dir() };
    let venv = cache.python_env("schemathesis", Some("4.32.5"), &mut |_| {}).expect("schemathesis installs from PyPI");
    let (prefix, scratch, log, rt, f) = functions_on_moto("fuzz");
    let (client_id, secret) = rt.block_on(async {
        let config = sluice_store_aws::moto::sdk_config(moto()).await;
        let app = sluice_lambda::app_for(&config, &prefix).await.unwrap();
        let (application, secret) = sluice_api::config::new_application(&app, "fuzz").await.unwrap();
        (application.client_id, secret)
    });
    let base = format!("{}/api/public/v1", f.gateway.url());
    let token = access_token(&base, &client_id, &secret, &log);
    let p = Platform::attach(&base, &token, &log);
    let _ecs = tasks(&rt, &prefix, &scratch, &f);
    let workspace = p.workspace("fuzzed");
    p.actor("destination", &workspace, "dev-null", json!({}));

    let output = std::process::Command::new(venv.join("bin/st"))
        .current_dir(scratch.path("."))
        .args(["--config-file", &fixture("schemathesis.toml"), "run"])
        .arg(format!("{base}/openapi.json"))
        .args(["--url", &base, "-H", &format!("Authorization: Bearer {token}")])
        .args(["--max-examples", "10", "--request-timeout", "60", "--seed", "1"])
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "schemathesis found problems:\n{report}\n{}\n{}", String::from_utf8_lossy(&output.stderr), p.log());
    assert!(report.contains("passed"), "{report}");
    drop(f);
}
