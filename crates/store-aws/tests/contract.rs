//! The storage contract on the AWS adapters, against moto (`moto[server]`
//! from PyPI) on 127.0.0.1: one server for this test binary, one set of
//! tables, queues and secrets per test. The adapters of the services
//! LocalStack serves (SQS, Secrets Manager, EventBridge, Scheduler,
//! CloudWatch Logs) run a second time on LocalStack (`tests/localstack.sh`
//! starts it), with DynamoDB and ECS still on moto through the SDK's
//! per-service endpoints: two emulators written apart must agree.
//! `where_the_emulators_disagree` says which one deviates from AWS, where
//! they differ on what our adapters touch.

use std::sync::OnceLock;

use aws_config::{BehaviorVersion, Region};
use sluice_store::contract;
use sluice_store_aws::{provision::provision, DynamoStore, Names, SecretsManagerStore, SqsQueue};

/// One moto server for this test binary, started on first use.
fn moto() -> &'static str {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| {
        let venv = sluice_connectors::Cache::from_env().python_env(sluice_store_aws::moto::PACKAGE, Some(sluice_store_aws::moto::VERSION), &mut |_| {}).expect("moto installs from PyPI");
        sluice_store_aws::moto::start(&venv.join("bin/moto_server")).expect("moto_server starts")
    })
}

/// The LocalStack `tests/run` started.
fn localstack() -> String {
    std::env::var("SLUICE_LOCALSTACK_URL").unwrap_or_else(|_| {
        panic!("no SLUICE_LOCALSTACK_URL: these tests need LocalStack; ./tests/run starts it (tests/localstack.sh: `. tests/localstack.sh; localstack_start`)")
    })
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Emulators {
    Moto,
    /// LocalStack, with DynamoDB and ECS (which it does not serve) on moto.
    LocalStack,
}

async fn config_on(emulators: Emulators) -> aws_config::SdkConfig {
    // A 12-digit access key is LocalStack's account: the same as moto's.
    let loader = aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(aws_sdk_dynamodb::config::Credentials::new("123456789012", "test", None, None, "emulator"));
    match emulators {
        Emulators::Moto => loader.endpoint_url(moto()).load().await,
        Emulators::LocalStack => sluice_store_aws::with_service_endpoints(&loader.load().await, &[("DynamoDB", moto()), ("ECS", moto())], &localstack()),
    }
}

async fn aws_on(test: &str, emulators: Emulators) -> (aws_config::SdkConfig, Names) {
    let config = config_on(emulators).await;
    // Each its own tables on moto, where both keep DynamoDB.
    let tag = if emulators == Emulators::LocalStack { "-ls" } else { "" };
    let names = Names::with_prefix(&format!("t-{test}{tag}-{}", std::process::id()));
    provision(&config, &names).await.expect("provisioning");
    (config, names)
}

async fn aws(test: &str) -> (aws_config::SdkConfig, Names) {
    aws_on(test, Emulators::Moto).await
}

/// For each test function `name(Emulators)`: `name::on_moto` and `name::on_localstack`.
macro_rules! on_moto_and_localstack {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test]
            async fn on_moto() {
                super::$name(super::Emulators::Moto).await
            }
            #[tokio::test]
            async fn on_localstack() {
                super::$name(super::Emulators::LocalStack).await
            }
        }
    )*};
}

on_moto_and_localstack!(
    secrets_round_trip,
    queue_delivery,
    provisioning_twice_changes_nothing,
    schedules_are_eventbridge_crons_targeting_the_scheduler,
    job_events_reach_a_rule_on_our_bus,
    attempt_logs_on_cloudwatch_read_back_from_an_offset,
);

#[tokio::test]
async fn workloads_round_trip() {
    let (config, names) = aws("round").await;
    contract::workloads_round_trip(&DynamoStore::new(&config, names)).await;
}

#[tokio::test]
async fn workloads_race() {
    let (config, names) = aws("race").await;
    contract::workloads_race(&DynamoStore::new(&config, names)).await;
}

#[tokio::test]
async fn workloads_queries() {
    let (config, names) = aws("queries").await;
    contract::workloads_queries(&DynamoStore::new(&config, names)).await;
}

#[tokio::test]
async fn jobs_lifecycle() {
    let (config, names) = aws("jobs").await;
    contract::jobs_lifecycle(&DynamoStore::new(&config, names)).await;
}

#[tokio::test]
async fn docs_lifecycle() {
    let (config, names) = aws("docs").await;
    contract::docs_lifecycle(&DynamoStore::new(&config, names)).await;
}

async fn secrets_round_trip(emulators: Emulators) {
    let (config, names) = aws_on("secrets", emulators).await;
    contract::secrets_round_trip(&SecretsManagerStore::new(&config, &names.secrets_prefix)).await;
}

async fn queue_delivery(emulators: Emulators) {
    let (config, names) = aws_on("queue", emulators).await;
    let url = SqsQueue::url_of(&config, &names.queue).await.unwrap();
    contract::queue_delivery_realtime(&SqsQueue::new(&config, url)).await;
}

async fn provisioning_twice_changes_nothing(emulators: Emulators) {
    let (config, names) = aws_on("twice", emulators).await;
    let again = provision(&config, &names).await.unwrap();
    assert!(again.created.is_empty(), "{again:?}");
}

async fn schedules_are_eventbridge_crons_targeting_the_scheduler(emulators: Emulators) {
    use sluice_store::Schedules;
    let (config, names) = aws_on("schedules", emulators).await;
    let target = sluice_store_aws::ScheduleTarget {
        function_arn: "arn:aws:lambda:us-east-1:123456789012:function:sluice-scheduler".into(),
        role_arn: "arn:aws:iam::123456789012:role/sluice-scheduler-invoke".into(),
    };
    let schedules = sluice_store_aws::EventBridgeSchedules::new(&config, &names.schedule_group, target);
    let every_quarter = sluice_domain::CronSchedule::new("0 */15 * * * ?", "Europe/Paris").unwrap();
    schedules.put_schedule("conn-1", &every_quarter).await.unwrap();
    let (expression, zone, input) = schedules.describe("conn-1").await.unwrap().expect("a schedule");
    assert_eq!((expression.as_str(), zone.as_str()), ("cron(*/15 * * * ? *)", "Europe/Paris"));
    let input: serde_json::Value = serde_json::from_str(&input).unwrap();
    assert_eq!(input["connectionId"], "conn-1");

    // Putting again replaces; deleting twice is fine.
    let noon = sluice_domain::CronSchedule::new("0 0 12 ? * MON-FRI", "UTC").unwrap();
    schedules.put_schedule("conn-1", &noon).await.unwrap();
    assert_eq!(schedules.describe("conn-1").await.unwrap().unwrap().0, "cron(0 12 ? * MON-FRI *)");
    schedules.delete_schedule("conn-1").await.unwrap();
    schedules.delete_schedule("conn-1").await.unwrap();
    assert_eq!(schedules.describe("conn-1").await.unwrap(), None);

    // A retry is a one-time schedule that deletes itself after firing.
    let at = jiff::Timestamp::from_second(1_900_000_000).unwrap();
    schedules.retry_at(42, 1, at).await.unwrap();
    schedules.retry_at(42, 1, at).await.unwrap();
    let (expression, zone, input) = schedules.describe("retry-42-1").await.unwrap().expect("a retry schedule");
    assert_eq!((expression.as_str(), zone.as_str()), ("at(2030-03-17T17:46:40)", "UTC"));
    assert_eq!(serde_json::from_str::<serde_json::Value>(&input).unwrap()["jobId"], 42);

    let every_five_seconds = sluice_domain::CronSchedule::new("*/5 * * * * ?", "UTC").unwrap();
    assert!(schedules.refuse(&every_five_seconds).unwrap().contains("whole minutes"));
    assert!(schedules.put_schedule("conn-2", &every_five_seconds).await.is_err());
}

async fn job_events_reach_a_rule_on_our_bus(emulators: Emulators) {
    use sluice_store::Events;
    let (config, names) = aws_on("events", emulators).await;
    // A user's rule: every succeeded job to a queue of theirs.
    let sqs = aws_sdk_sqs::Client::new(&config);
    let inbox = sqs.create_queue().queue_name(format!("{}-inbox", names.event_bus)).send().await.unwrap().queue_url.unwrap();
    let arn = sqs
        .get_queue_attributes()
        .queue_url(&inbox)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
        .send()
        .await
        .unwrap()
        .attributes
        .unwrap()[&aws_sdk_sqs::types::QueueAttributeName::QueueArn]
        .clone();
    let bridge = aws_sdk_eventbridge::Client::new(&config);
    bridge
        .put_rule()
        .name("succeeded")
        .event_bus_name(&names.event_bus)
        .event_pattern(r#"{"source": ["sluice"], "detail-type": ["job.succeeded", "connection.disabled"]}"#)
        .send()
        .await
        .unwrap();
    let target = aws_sdk_eventbridge::types::Target::builder().id("inbox").arn(arn).build().unwrap();
    bridge.put_targets().rule("succeeded").event_bus_name(&names.event_bus).targets(target).send().await.unwrap();

    let events = sluice_store_aws::EventBridgeEvents::new(&config, &names.event_bus);
    let mut job = sluice_domain::Job::new(42, "conn-9", sluice_domain::JobType::Sync, vec![], jiff::Timestamp::now());
    events.publish(sluice_store::JobEvent::of_job(sluice_store::JobEventKind::Started, job.clone())).await;
    job.status = sluice_domain::JobStatus::Succeeded;
    events.publish(sluice_store::JobEvent::of_job(sluice_store::JobEventKind::Succeeded, job)).await;
    // A connection disabled by a schema check someone asked for: no job.
    let disabled = sluice_store::JobEvent {
        kind: sluice_store::JobEventKind::ConnectionDisabled,
        connection_id: "conn-9".into(),
        job: None,
        reason: Some("breaking schema change: stream `items` lost field `updated_at`".into()),
    };
    events.publish(disabled).await;

    let mut bodies: Vec<serde_json::Value> = Vec::new();
    for _ in 0..5 {
        let received = sqs.receive_message().queue_url(&inbox).max_number_of_messages(10).wait_time_seconds(2).send().await.unwrap();
        bodies.extend(received.messages().iter().map(|m| serde_json::from_str::<serde_json::Value>(m.body().unwrap()).unwrap()));
        if bodies.len() >= 2 {
            break;
        }
    }
    bodies.sort_by_key(|b| b["detail-type"].as_str().unwrap_or_default().to_owned());
    assert_eq!(bodies.len(), 2, "only the rule's events: {bodies:?}");
    assert_eq!(bodies[1]["detail-type"], "job.succeeded");
    assert_eq!(bodies[1]["detail"]["jobId"], 42);
    assert_eq!(bodies[1]["detail"]["connectionId"], "conn-9");
    assert_eq!(bodies[0]["detail-type"], "connection.disabled");
    assert_eq!(bodies[0]["detail"]["connectionId"], "conn-9");
    assert!(bodies[0]["detail"]["reason"].as_str().unwrap().contains("updated_at"), "{}", bodies[0]);
    assert!(bodies[0]["detail"].get("jobId").is_none());
}

async fn attempt_logs_on_cloudwatch_read_back_from_an_offset(emulators: Emulators) {
    use sluice_store::AttemptLogs;
    let (config, names) = aws_on("logs", emulators).await;
    let logs = sluice_store_aws::CloudWatchLogs::new(&config, &names.log_group);
    assert_eq!(logs.read(7, 0, 0, 1 << 20).await.unwrap(), (String::new(), 0), "no log yet reads as empty");
    logs.append(7, 0, "first line\nsecond line\n").await.unwrap();
    let (text, next) = logs.read(7, 0, 0, 1 << 20).await.unwrap();
    assert_eq!(text, "first line\nsecond line\n");
    logs.append(7, 0, "third line\n").await.unwrap();
    let (more, after) = logs.read(7, 0, next, 1 << 20).await.unwrap();
    assert_eq!((more.as_str(), after), ("third line\n", 3), "following the log returns only what is new");
    assert_eq!(logs.read(7, 1, 0, 1 << 20).await.unwrap().0, "", "attempts have their own logs");
}

/// Where moto and LocalStack answer differently on what our adapters
/// touch, which one deviates from AWS's documentation. Our adapters rely on
/// neither side of these: they match error codes, not HTTP statuses; read
/// an event's `detail-type` and `detail`, not its envelope's other fields;
/// and refuse crons with seconds before asking Scheduler. If an emulator
/// changes, this test says so.
#[tokio::test]
async fn where_the_emulators_disagree() {
    let mut seen = Vec::new();
    for emulators in [Emulators::Moto, Emulators::LocalStack] {
        let (config, names) = aws_on("disagree", emulators).await;
        // Secrets Manager's ResourceNotFoundException: AWS's JSON protocol answers client errors with 400.
        let missing = aws_sdk_secretsmanager::Client::new(&config).get_secret_value().secret_id(format!("{}-none", names.secrets_prefix)).send().await.unwrap_err();
        let code = missing.as_service_error().and_then(|e| aws_sdk_secretsmanager::error::ProvideErrorMetadata::code(e)).map(str::to_owned);
        let status = missing.raw_response().map(|r| r.status().as_u16());
        // EventBridge Scheduler: AWS's cron has six fields, minutes first; seven (seconds first) is a ValidationException.
        let target = aws_sdk_scheduler::types::Target::builder().arn("arn:aws:lambda:us-east-1:123456789012:function:f").role_arn("arn:aws:iam::123456789012:role/r").build().unwrap();
        let window = aws_sdk_scheduler::types::FlexibleTimeWindow::builder().mode(aws_sdk_scheduler::types::FlexibleTimeWindowMode::Off).build().unwrap();
        let seconds = aws_sdk_scheduler::Client::new(&config)
            .create_schedule()
            .group_name(&names.schedule_group)
            .name("with-seconds")
            .schedule_expression("cron(*/5 * * * * ? *)")
            .flexible_time_window(window)
            .target(target)
            .send()
            .await;
        // An event on a rule's queue: AWS's envelope carries the account.
        let sqs = aws_sdk_sqs::Client::new(&config);
        let inbox = sqs.create_queue().queue_name(format!("{}-inbox", names.event_bus)).send().await.unwrap().queue_url.unwrap();
        let arn = format!("arn:aws:sqs:us-east-1:123456789012:{}-inbox", names.event_bus);
        let bridge = aws_sdk_eventbridge::Client::new(&config);
        bridge.put_rule().name("all").event_bus_name(&names.event_bus).event_pattern(r#"{"source": ["sluice"]}"#).send().await.unwrap();
        bridge.put_targets().rule("all").event_bus_name(&names.event_bus).targets(aws_sdk_eventbridge::types::Target::builder().id("inbox").arn(arn).build().unwrap()).send().await.unwrap();
        let events = sluice_store_aws::EventBridgeEvents::new(&config, &names.event_bus);
        let job = sluice_domain::Job::new(7, "conn-7", sluice_domain::JobType::Sync, vec![], jiff::Timestamp::now());
        sluice_store::Events::publish(&events, sluice_store::JobEvent::of_job(sluice_store::JobEventKind::Started, job)).await;
        let received = sqs.receive_message().queue_url(&inbox).wait_time_seconds(5).send().await.unwrap();
        let event: serde_json::Value = serde_json::from_str(received.messages()[0].body().unwrap()).unwrap();
        assert_eq!(event["detail"]["jobId"], 7, "{emulators:?}: {event}");
        seen.push((emulators, code, status, seconds.is_ok(), event.get("account").is_some()));
    }
    let code = Some("ResourceNotFoundException".to_owned());
    assert_eq!(
        seen,
        [
            // moto deviates three times: a 404 for a missing secret, a cron with seconds taken, no account in the event.
            (Emulators::Moto, code.clone(), Some(404), true, false),
            // LocalStack answers as AWS documents.
            (Emulators::LocalStack, code, Some(400), false, true),
        ]
    );
}

/// The default VPC's first subnet and security group, as moto makes them.
fn default_network() -> (String, String) {
    let venv = sluice_connectors::Cache::from_env().python_env(sluice_store_aws::moto::PACKAGE, Some(sluice_store_aws::moto::VERSION), &mut |_| {}).unwrap();
    sluice_store_aws::moto::default_network(&venv, moto()).unwrap()
}

#[tokio::test]
async fn a_sync_plan_becomes_one_reused_fargate_task_definition_with_no_secret_in_it() {
    use sluice_launcher::ecs::{ecs_task, EcsSettings};
    use sluice_launcher::plan::{files, Container, PlanFile, Resources, Runtime, TaskPlan};
    let (config, names) = aws("ecs").await;
    const SECRET: &str = "s3cret-in-config";
    const CREDENTIAL: &str = "workload-credential-xyz";
    let plan = |workload: &str| TaskPlan {
        workload_id: workload.into(),
        kind: sluice_domain::WorkloadType::Sync,
        files: vec![PlanFile { name: files::SOURCE_CONFIG.into(), contents: serde_json::json!({"api_key": SECRET}).to_string() }],
        connector: None,
        source: Some(Container { name: "source-pokeapi".into(), runtime: Runtime::Image("airbyte/source-pokeapi:0.3.0".into()), env: Default::default() }),
        destination: Some(Container { name: "destination-jsonl".into(), runtime: Runtime::Reference("destination-jsonl".into()), env: Default::default() }),
        resources: Resources::default(),
        data_channel: None,
        workload_api_url: "https://api.example/api/internal/v1".into(),
        credential: CREDENTIAL.into(),
    };
    let settings = EcsSettings {
        orchestrator_image: "sluice/orchestrator:0.1.0".into(),
        reference_images: [("destination-jsonl".to_owned(), "sluice/destination-jsonl:0.1.0".to_owned())].into(),
        family_prefix: "sluice".into(),
        log_group: names.task_log_group.clone(),
        region: "us-east-1".into(),
        launch_key_secret_arn: "arn:aws:secretsmanager:us-east-1:123456789012:secret:sluice/launch-key".into(),
        workload_api_iam: true,
    };
    let placement = sluice_store_aws::moto::placement(&names.cluster, default_network());
    let tasks = sluice_store_aws::EcsTasks::new(&config, placement);
    let first = ecs_task(&plan("conn_1_0_sync"), &settings).unwrap();
    let second = ecs_task(&plan("conn_2_0_sync"), &settings).unwrap();
    assert_eq!(first.definition, second.definition, "the same images and resources make the same definition");
    let task_a = tasks.run(&first).await.unwrap();
    let task_b = tasks.run(&second).await.unwrap();
    assert_ne!(task_a, task_b);

    // Read back what ECS holds: one revision, reused.
    let ecs = aws_sdk_ecs::Client::new(&config);
    let listed = ecs.list_task_definitions().family_prefix(&first.definition.family).send().await.unwrap();
    assert_eq!(listed.task_definition_arns().len(), 1, "registered once: {:?}", listed.task_definition_arns());
    let definition = ecs.describe_task_definition().task_definition(&first.definition.family).send().await.unwrap().task_definition.unwrap();
    let names_in: Vec<&str> = definition.container_definitions().iter().filter_map(|c| c.name()).collect();
    assert_eq!(names_in, ["init", "source", "destination", "orchestrator"]);
    assert_eq!(definition.volumes().iter().filter_map(|v| v.name()).collect::<Vec<_>>(), ["platform", "source", "destination"]);
    assert_eq!(definition.requires_compatibilities(), [aws_sdk_ecs::types::Compatibility::Fargate]);
    for c in definition.container_definitions() {
        // Each container mounts what its role needs: a connector its own volume only.
        let mounts: Vec<(&str, &str)> = c.mount_points().iter().map(|m| (m.source_volume().unwrap(), m.container_path().unwrap())).collect();
        let expected: &[(&str, &str)] = match c.name().unwrap() {
            "source" => &[("source", "/sluice/source")],
            "destination" => &[("destination", "/sluice/destination")],
            _ => &[("platform", "/sluice"), ("source", "/sluice/source"), ("destination", "/sluice/destination")],
        };
        assert_eq!(mounts, expected, "{:?}", c.name());
        assert_eq!(c.entry_point(), ["/bin/sh", "-c"], "{:?}: the image's own entrypoint would take the command as its arguments", c.name());
        assert_eq!(c.user(), match c.name().unwrap() { "init" => Some("0:0"), "orchestrator" => Some("65532:65532"), _ => None }, "{:?}", c.name());
        let log = c.log_configuration().expect("awslogs");
        assert_eq!(log.log_driver(), &aws_sdk_ecs::types::LogDriver::Awslogs);
        assert_eq!(log.options().unwrap()["awslogs-group"], names.task_log_group);
        if c.name() != Some("init") {
            let depends: Vec<_> = c.depends_on().iter().map(|d| (d.container_name(), d.condition().as_str())).collect();
            assert_eq!(depends, [("init", "SUCCESS")], "{:?}", c.name());
        }
    }
    let init = &definition.container_definitions()[0];
    assert_eq!(init.secrets()[0].value_from(), settings.launch_key_secret_arn.as_str());
    assert_eq!(definition.container_definitions()[3].essential(), Some(true));

    // Nothing secret anywhere ECS keeps: the definition, the task and its overrides.
    let described = ecs.describe_tasks().cluster(&names.cluster).tasks(&task_a).send().await.unwrap();
    let everything = format!("{definition:?} {described:?}");
    assert!(!everything.contains(SECRET) && !everything.contains(CREDENTIAL), "a secret reached ECS");
    assert!(everything.contains("conn_1_0_sync"), "the task says which workload it runs");
    tasks.stop(&task_a, "the job was cancelled").await.unwrap();
}
