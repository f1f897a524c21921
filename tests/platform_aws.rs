//! `sluice up --aws`: the same platform on the AWS adapters (DynamoDB, SQS,
//! Secrets Manager, EventBridge Scheduler and EventBridge) against moto on
//! 127.0.0.1, driven over HTTP only.

mod support;

use std::time::Duration;

use serde_json::json;
use support::aws::{aws_env, default_network, moto, provision, EcsPlayer};
use support::platform::Platform;
use support::{fixture, Scratch};

#[test]
fn the_platform_on_aws_adapters_syncs_resumes_cancels_and_schedules() {
    let prefix = format!("e2e{}", std::process::id());
    let first = provision(&prefix);
    assert!(first.contains(&format!("created table {prefix}-jobs")), "{first}");
    let second = provision(&prefix);
    assert!(!second.contains("created"), "provisioning twice changes nothing:\n{second}");

    let scratch = Scratch::new();
    let p = Platform::start_with_env(&scratch.path("data"), &["--aws", "--prefix", &prefix], &aws_env());
    let workspace = p.workspace("on aws");
    p.post(&format!("/workspaces/{workspace}/definitions/sources"), json!({"name": "Scripted", "runtime": fixture("scripted_source.py"), "typeKey": "scripted"}));
    const SECRET: &str = "sk-aws-0123456789";
    let source = p.actor("source", &workspace, "scripted", json!({"records": 300, "state_every": 10, "delay_secs": 0.01, "api_key": SECRET}));
    assert_eq!(p.get(&format!("/sources/{source}"))["configuration"]["api_key"], "**********");
    let out = scratch.path("out");
    let destination = p.actor("destination", &workspace, "sluice-jsonl", json!({"destination_path": out.display().to_string()}));
    let connection = p.items_connection(&source, &destination);

    // A first sync to the end, then one that resumes from the committed state.
    let job = p.wait_job(p.sync(&connection), Duration::from_secs(120));
    assert_eq!(job["status"], "succeeded", "{job}\n{}", p.log());
    assert_eq!(p.cursor(&connection), 300);
    let job = p.wait_job(p.sync(&connection), Duration::from_secs(120));
    assert_eq!(job["status"], "succeeded");
    assert_eq!(p.cursor(&connection), 600, "the second sync resumed after the first");
    assert_eq!(scratch.read_lines("out/items.jsonl").len(), 600);

    // One job at a time, then cancel: the committed state stays.
    let running = p.sync(&connection);
    let (status, refused) = p.call("POST", "/jobs", Some(&json!({"connectionId": connection, "jobType": "sync"})), Some(&p.token));
    assert_eq!(status, 409, "{refused}");
    p.wait_for("a committed state", Duration::from_secs(60), |p| p.cursor(&connection) >= 620);
    assert_eq!(p.ok("DELETE", &format!("/jobs/{running}"), None)["status"], "cancelled");
    assert_eq!(p.wait_job(running, Duration::from_secs(60))["status"], "cancelled");
    let kept = p.cursor(&connection);
    assert!((620..900).contains(&kept), "{kept}");

    // A cron schedule becomes an EventBridge schedule; one that needs seconds is refused.
    let (status, body) = p.call("PATCH", &format!("/connections/{connection}"), Some(&json!({"schedule": {"scheduleType": "cron", "cronExpression": "*/5 * * * * ?"}})), Some(&p.token));
    assert_eq!(status, 400, "{body}");
    assert!(body["detail"].as_str().unwrap().contains("whole minutes"), "{body}");
    p.ok("PATCH", &format!("/connections/{connection}"), Some(json!({"schedule": {"scheduleType": "cron", "cronExpression": "0 0 6 * * ?"}})));

    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .endpoint_url(moto())
            .region(aws_config::Region::new("us-east-1"))
            .credentials_provider(aws_sdk_dynamodb::config::Credentials::new("test", "test", None, None, "moto"))
            .load()
            .await;
        let schedule = aws_sdk_scheduler::Client::new(&config).get_schedule().group_name(&prefix).name(&connection).send().await.unwrap();
        assert_eq!(schedule.schedule_expression(), Some("cron(0 6 * * ? *)"));
        // The secret is in Secrets Manager, and in no DynamoDB item.
        let dynamo = aws_sdk_dynamodb::Client::new(&config);
        for table in ["config", "jobs", "workloads"] {
            let items = dynamo.scan().table_name(format!("{prefix}-{table}")).send().await.unwrap();
            assert!(!format!("{:?}", items.items()).contains(SECRET), "{table} holds the secret");
        }
        let secrets = aws_sdk_secretsmanager::Client::new(&config).list_secrets().send().await.unwrap();
        assert!(secrets.secret_list().iter().any(|s| s.name().unwrap_or_default().starts_with(&format!("{prefix}/"))));
    });
}

/// The init step of an ECS task: `orchestrator fetch-files` gets the task's
/// files from the workload API with the launch key, once, and writes them 0600.
#[test]
fn a_tasks_init_step_fetches_its_files_once_with_the_launch_key() {
    use std::os::unix::fs::PermissionsExt;
    let prefix = format!("files{}", std::process::id());
    provision(&prefix);
    let scratch = Scratch::new();
    let p = Platform::start_with_env(&scratch.path("data"), &["--aws", "--prefix", &prefix], &aws_env());
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let (workload, launch_key) = runtime.block_on(async {
        let config = sluice_store_aws::moto::sdk_config(moto()).await;
        let app = sluice_lambda::app_for(&config, &prefix).await.unwrap();
        let now = jiff::Timestamp::now();
        let w = sluice_domain::Workload::new("c_9_0_sync".into(), sluice_domain::WorkloadType::Sync, Some("c".into()), "{}".into(), now);
        let w = app.workloads.insert_workload(&w).await.unwrap();
        let claimed = w.apply(&sluice_domain::WorkloadEvent::Claim { by: "test".into() }, now).unwrap().unwrap();
        app.workloads.update_workload(&claimed).await.unwrap();
        let files = [("sync.json".to_owned(), "{\"secret\": \"s3\"}".to_owned()), ("credential".to_owned(), "cred-1".to_owned())].into();
        sluice_api::workloads::stash_task_files(&app, &w.id, &files).await.unwrap();
        (w.id, app.launch_key.clone().expect("provisioning made a launch key"))
    });
    let fetch = |key: &str, dir: &std::path::Path| {
        std::fs::create_dir_all(dir).unwrap();
        support::sluice()
            .args(["orchestrate", "fetch-files", "--dir"])
            .arg(dir)
            .env("SLUICE_WORKLOAD_API", format!("http://127.0.0.1:{}/api/internal/v1", p.port))
            .env("SLUICE_WORKLOAD_ID", &workload)
            .env("SLUICE_LAUNCH_KEY", key)
            .output()
            .unwrap()
    };
    let wrong = fetch("not-the-key", &scratch.path("wrong"));
    assert!(!wrong.status.success() && String::from_utf8_lossy(&wrong.stderr).contains("401"), "{}", String::from_utf8_lossy(&wrong.stderr));
    let fetched = fetch(&launch_key, &scratch.path("volume"));
    assert!(fetched.status.success(), "{}", String::from_utf8_lossy(&fetched.stderr));
    assert_eq!(std::fs::read_to_string(scratch.path("volume/credential")).unwrap(), "cred-1");
    let mode = std::fs::metadata(scratch.path("volume/sync.json")).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let again = fetch(&launch_key, &scratch.path("again"));
    assert!(!again.status.success() && String::from_utf8_lossy(&again.stderr).contains("404"), "only once: {}", String::from_utf8_lossy(&again.stderr));
}

#[test]
fn syncs_run_as_the_ecs_tasks_that_moto_holds() {
    let prefix = format!("ecs{}", std::process::id());
    provision(&prefix);
    let (subnet, group) = default_network();
    let scratch = Scratch::new();
    let args = ["--aws", "--prefix", &prefix, "--executor", "ecs", "--ecs-subnets", &subnet, "--ecs-security-groups", &group, "--monitor-secs", "1"];
    let p = Platform::start_with_env(&scratch.path("data"), &args, &aws_env());
    let out = scratch.path("out");
    let _ecs = EcsPlayer::start(&prefix, vec![out.clone()]);

    let workspace = p.workspace("ecs");
    let source = p.actor("source", &workspace, "sluice-faker", json!({"count": 30}));
    let destination = p.actor("destination", &workspace, "sluice-jsonl", json!({"destination_path": out.display().to_string()}));
    let connection = p.post("/connections", json!({"sourceId": source, "destinationId": destination,
        "configurations": {"streams": [{"name": "users", "syncMode": "incremental_append"}]}}))["connectionId"].as_str().unwrap().to_owned();
    let first = p.wait_job(p.sync(&connection), Duration::from_secs(120));
    assert_eq!(first["status"], "succeeded", "{first}\n{}", p.log());
    assert_eq!(first["rowsSynced"], 30);
    assert_eq!(scratch.read_lines("out/users.jsonl").len(), 30);
    // Both reference definitions speak socket mode: the task's platform
    // container is the bookkeeper, the connectors share sockets on the volume.
    let log = p.get(&format!("/jobs/{}/attempts/0/logs", first["jobId"]))["text"].as_str().unwrap().to_owned();
    assert!(log.contains("data channel: SOCKET PROTOBUF over 2 sockets"), "{log}");
    let second = p.wait_job(p.sync(&connection), Duration::from_secs(120));
    assert_eq!(second["status"], "succeeded", "{second}");
    assert_eq!(second["rowsSynced"], 0, "the second task resumed from the committed state");

    // Legacy mode, with Airbyte's own source-faker image: its spec, check
    // and discover are ECS tasks too, and its sync runs the orchestrator
    // between the containers on the task's pipes.
    let faker = support::docker::image("SLUICE_AIRBYTE_SOURCE_FAKER_IMAGE");
    let (repository, tag) = faker.rsplit_once(':').unwrap();
    p.post(&format!("/workspaces/{workspace}/definitions/sources"), json!({"name": "Faker image", "dockerRepository": repository, "dockerImageTag": tag, "typeKey": "faker-image"}));
    let airbyte = p.actor("source", &workspace, "faker-image", json!({"count": 500, "seed": 3, "records_per_slice": 100, "always_updated": false}));
    let airbyte_out = out.join("airbyte");
    let destination = p.actor("destination", &workspace, "sluice-jsonl", json!({"destination_path": airbyte_out.display().to_string()}));
    let connection = p.post("/connections", json!({"sourceId": airbyte, "destinationId": destination,
        "configurations": {"streams": [{"name": "users", "syncMode": "incremental_append"}]}}))["connectionId"].as_str().unwrap().to_owned();
    let first = p.wait_job(p.sync(&connection), Duration::from_secs(180));
    assert_eq!(first["status"], "succeeded", "{first}\n{}", p.log());
    let log = p.get(&format!("/jobs/{}/attempts/0/logs", first["jobId"]))["text"].as_str().unwrap().to_owned();
    assert!(!log.contains("data channel: SOCKET"), "Airbyte's image speaks stdio: {log}");
    let users = || std::fs::read_to_string(airbyte_out.join("users.jsonl")).map(|t| t.lines().count()).unwrap_or(0);
    assert_eq!(users(), 500);
    let second = p.wait_job(p.sync(&connection), Duration::from_secs(180));
    assert_eq!(second["status"], "succeeded", "{second}");
    assert_eq!(users(), 500, "the second task resumed from the committed state: {second}");

    // A task ECS cannot start never reports: the monitor fails its workload
    // with ECS's reason, at once rather than at the heartbeat deadline.
    p.post(&format!("/workspaces/{workspace}/definitions/sources"), json!({"name": "Missing", "dockerRepository": "example/not-built", "dockerImageTag": "9.9.9", "typeKey": "missing-image"}));
    let (status, refused) = p.call("POST", "/sources", Some(&json!({"name": "missing", "workspaceId": workspace, "configuration": {"sourceType": "missing-image"}})), Some(&p.token));
    assert!(status >= 400 && refused.to_string().contains("example/not-built:9.9.9"), "{status} {refused}");
}

/// A manifest-only connector as ECS tasks: its discover and its sync run on
/// the declarative runner's image (`SLUICE_MANIFEST_RUNNER_IMAGE`), the
/// manifest injected into the config the init step fetched.
#[test]
fn a_manifest_connector_runs_as_ecs_tasks_on_the_runners_image() {
    use support::test_api::{manifest, source_config, TestApi, KEY};
    let prefix = format!("sdm{}", std::process::id());
    provision(&prefix);
    let (subnet, group) = default_network();
    let scratch = Scratch::new();
    let api = TestApi::start(&scratch);
    let args = ["--aws", "--prefix", &prefix, "--executor", "ecs", "--ecs-subnets", &subnet, "--ecs-security-groups", &group, "--monitor-secs", "1"];
    let p = Platform::start_with_env(&scratch.path("data"), &args, &aws_env());
    let out = scratch.path("out");
    let _ecs = EcsPlayer::start(&prefix, vec![out.clone()]);
    let workspace = p.workspace("ecs manifest");
    let definition = p.post(&format!("/workspaces/{workspace}/definitions/declarative_sources"), json!({"name": "Test API", "manifest": manifest()}));
    let source = p.post("/sources", json!({"name": "api", "workspaceId": workspace, "definitionId": definition["id"], "configuration": source_config(&api)}))["sourceId"].as_str().unwrap().to_owned();
    let destination = p.actor("destination", &workspace, "sluice-jsonl", json!({"destination_path": out.display().to_string()}));
    let connection = p.post("/connections", json!({"sourceId": source, "destinationId": destination,
        "configurations": {"streams": [{"name": "items", "syncMode": "incremental_deduped_history"}, {"name": "users", "syncMode": "full_refresh_overwrite"}]}}))["connectionId"].as_str().unwrap().to_owned();
    let job = p.wait_job(p.sync(&connection), Duration::from_secs(240));
    assert_eq!(job["status"], "succeeded", "{job}\n{}", p.log());
    assert_eq!(scratch.read_lines("out/items.jsonl").len(), 7);
    assert_eq!(scratch.read_lines("out/users.jsonl").len(), 5);
    let log = p.get(&format!("/jobs/{}/attempts/0/logs", job["jobId"]))["text"].as_str().unwrap().to_owned();
    assert!(!log.contains(KEY), "the key stays out of the task's log");
}

/// `sluice up --aws` on two emulators, as the SDK's per-service endpoints
/// let a user split them: SQS, Secrets Manager, EventBridge, Scheduler and
/// CloudWatch Logs on LocalStack (`tests/localstack.sh`), DynamoDB and ECS
/// (which LocalStack's community runtime does not serve) on moto.
#[test]
fn a_sync_on_localstack_with_dynamodb_and_ecs_on_moto() {
    let localstack = std::env::var("SLUICE_LOCALSTACK_URL")
        .expect("no SLUICE_LOCALSTACK_URL: this test needs LocalStack; ./tests/run starts it (tests/localstack.sh: `. tests/localstack.sh; localstack_start`)");
    // A 12-digit access key is LocalStack's account: the same as moto's.
    let env = [
        ("AWS_ENDPOINT_URL", localstack.as_str()),
        ("AWS_ENDPOINT_URL_DYNAMODB", moto()),
        ("AWS_ENDPOINT_URL_ECS", moto()),
        ("AWS_ACCESS_KEY_ID", "123456789012"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
        ("AWS_REGION", "us-east-1"),
    ];
    let prefix = format!("ls{}", std::process::id());
    let provisioned = support::sluice().args(["provision", "--prefix", &prefix]).envs(env).output().unwrap();
    assert!(provisioned.status.success(), "{}", String::from_utf8_lossy(&provisioned.stderr));

    let scratch = Scratch::new();
    let p = Platform::start_with_env(&scratch.path("data"), &["--aws", "--prefix", &prefix], &env);
    let workspace = p.workspace("on localstack");
    let source = p.actor("source", &workspace, "sluice-faker", json!({"count": 200}));
    let out = scratch.path("out");
    let destination = p.actor("destination", &workspace, "sluice-jsonl", json!({"destination_path": out.display().to_string()}));
    let connection = p.post("/connections", json!({"sourceId": source, "destinationId": destination,
        "configurations": {"streams": [{"name": "users", "syncMode": "incremental_append"}]}}))["connectionId"].as_str().unwrap().to_owned();
    let first = p.wait_job(p.sync(&connection), Duration::from_secs(120));
    assert_eq!(first["status"], "succeeded", "{first}\n{}", p.log());
    assert_eq!(scratch.read_lines("out/users.jsonl").len(), 200);
    let second = p.wait_job(p.sync(&connection), Duration::from_secs(120));
    assert_eq!((second["status"].as_str(), second["rowsSynced"].as_i64()), (Some("succeeded"), Some(0)), "resumed from the committed state: {second}");
    let log = p.get(&format!("/jobs/{}/attempts/0/logs", first["jobId"]))["text"].as_str().unwrap_or_default().to_owned();
    assert!(!log.is_empty(), "the attempt's log, on LocalStack's CloudWatch Logs");

    // Each service was on the emulator it was sent to: the queue and the
    // platform's secrets (the launch key) on LocalStack, the tables on moto.
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let on = |url: &str| {
            let loader = aws_config::defaults(aws_config::BehaviorVersion::latest()).endpoint_url(url).region(aws_config::Region::new("us-east-1"));
            let key = aws_sdk_dynamodb::config::Credentials::new("123456789012", "test", None, None, "emulator");
            async move { loader.credentials_provider(key).load().await }
        };
        let (ls, mo) = (on(&localstack).await, on(moto()).await);
        let names = sluice_store_aws::Names::with_prefix(&prefix);
        assert!(aws_sdk_sqs::Client::new(&ls).get_queue_url().queue_name(&names.queue).send().await.is_ok(), "the queue is on LocalStack");
        assert!(aws_sdk_sqs::Client::new(&mo).get_queue_url().queue_name(&names.queue).send().await.is_err(), "and not on moto");
        let secrets = aws_sdk_secretsmanager::Client::new(&ls).list_secrets().send().await.unwrap();
        assert!(secrets.secret_list().iter().any(|s| s.name().is_some_and(|n| n.starts_with(&names.secrets_prefix))), "the secrets are on LocalStack");
        let tables = aws_sdk_dynamodb::Client::new(&mo).list_tables().send().await.unwrap();
        assert!(tables.table_names().iter().any(|t| t == &format!("{prefix}-jobs")), "the tables are on moto");
    });
}

/// The fence between a connection's attempts on ECS: before attempt 1's
/// task runs, attempt 0's task that ECS still runs (frozen, or still
/// stopping when the monitor failed it) is stopped, and the launch goes on
/// only once ECS reports it stopped. Another connection's task and the
/// workload's own are left alone.
#[test]
fn a_new_attempt_stops_the_earlier_attempts_ecs_task_before_its_own_starts() {
    use sluice_launcher::ecs::{ecs_task, EcsSettings};
    use sluice_launcher::plan::{Container, Resources, Runtime, TaskPlan};
    let prefix = format!("fence{}", std::process::id());
    provision(&prefix);
    let network = default_network();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let config = sluice_store_aws::moto::sdk_config(moto()).await;
        let cluster = sluice_store_aws::Names::with_prefix(&prefix).cluster;
        let placement = sluice_store_aws::moto::placement(&cluster, network);
        let tasks = sluice_store_aws::EcsTasks::new(&config, placement);
        let settings = EcsSettings {
            orchestrator_image: "sluice/orchestrator:0.1.0".into(),
            reference_images: [("sluice-faker".to_owned(), "sluice/source-faker:0.1.0".to_owned()), ("dev-null".to_owned(), "sluice/destination-dev-null:0.1.0".to_owned())].into(),
            family_prefix: prefix.clone(),
            log_group: format!("/{prefix}/tasks"),
            region: "us-east-1".into(),
            launch_key_secret_arn: "arn:aws:secretsmanager:us-east-1:123456789012:secret:sluice/launch-key".into(),
            workload_api_iam: true,
        };
        let run = |workload: &str| {
            let plan = TaskPlan {
                workload_id: workload.into(),
                kind: sluice_domain::WorkloadType::Sync,
                files: vec![],
                connector: None,
                source: Some(Container { name: "source-faker".into(), runtime: Runtime::Reference("sluice-faker".into()), env: Default::default() }),
                destination: Some(Container { name: "dev-null".into(), runtime: Runtime::Reference("dev-null".into()), env: Default::default() }),
                resources: Resources::default(),
                data_channel: None,
                workload_api_url: "http://127.0.0.1:9/api/internal/v1".into(),
                credential: "c".into(),
            };
            ecs_task(&plan, &settings).unwrap()
        };
        let earlier = tasks.run(&run("conna_7_0_sync")).await.unwrap();
        let other = tasks.run(&run("connb_3_0_sync")).await.unwrap();
        // What ECS is asked to keep running, by ListTasks: moto moves a task one
        // step of its lifecycle towards STOPPED at each DescribeTasks (four make
        // a running task look stopped), so the test does not describe to see.
        let ecs = aws_sdk_ecs::Client::new(&config);
        let states = || async {
            let listed = ecs.list_tasks().cluster(&cluster).desired_status(aws_sdk_ecs::types::DesiredStatus::Running).send().await.unwrap();
            listed.task_arns().to_vec()
        };
        assert!(states().await.contains(&earlier) && states().await.contains(&other));

        let stopped = sluice_lambda::fence(&tasks, "conna", "conna_7_1_sync", Duration::from_secs(30)).await.unwrap();
        assert_eq!(stopped, std::slice::from_ref(&earlier), "the earlier attempt's task, and only it");
        let running = states().await;
        assert!(!running.contains(&earlier) && running.contains(&other), "{running:?}");
        let why = tasks.stopped().await.unwrap().into_iter().find(|(arn, _, _)| *arn == earlier).expect("ECS lists it as stopped").2;
        assert!(why.contains("conna_7_1_sync starts; the workload conna_7_0_sync has ended"), "{why}");

        // Its own task (a redelivered launch) and a fence with nothing to stop.
        let own = tasks.run(&run("conna_7_1_sync")).await.unwrap();
        assert_eq!(sluice_lambda::fence(&tasks, "conna", "conna_7_1_sync", Duration::from_secs(30)).await.unwrap(), Vec::<String>::new());
        assert!(states().await.contains(&own));
        for arn in [own, other] {
            tasks.stop(&arn, "the test ends").await.unwrap();
        }
    });
}
