//! The storage contract on the AWS adapters, against moto (`moto[server]`
//! from PyPI) on 127.0.0.1: one server for this test binary, one set of
//! tables, queues and secrets per test.

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

async fn aws(test: &str) -> (aws_config::SdkConfig, Names) {
    let config = aws_config::defaults(BehaviorVersion::latest())
        .endpoint_url(moto())
        .region(Region::new("us-east-1"))
        .credentials_provider(aws_sdk_dynamodb::config::Credentials::new("test", "test", None, None, "moto"))
        .load()
        .await;
    let names = Names::with_prefix(&format!("t-{test}-{}", std::process::id()));
    provision(&config, &names).await.expect("provisioning");
    (config, names)
}

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

#[tokio::test]
async fn secrets_round_trip() {
    let (config, names) = aws("secrets").await;
    contract::secrets_round_trip(&SecretsManagerStore::new(&config, &names.secrets_prefix)).await;
}

#[tokio::test]
async fn queue_delivery() {
    let (config, names) = aws("queue").await;
    let url = SqsQueue::url_of(&config, &names.queue).await.unwrap();
    contract::queue_delivery_realtime(&SqsQueue::new(&config, url)).await;
}

#[tokio::test]
async fn provisioning_twice_changes_nothing() {
    let (config, names) = aws("twice").await;
    let again = provision(&config, &names).await.unwrap();
    assert!(again.created.is_empty(), "{again:?}");
}

#[tokio::test]
async fn schedules_are_eventbridge_crons_targeting_the_scheduler() {
    use sluice_store::Schedules;
    let (config, names) = aws("schedules").await;
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

#[tokio::test]
async fn job_events_reach_a_rule_on_our_bus() {
    use sluice_store::Events;
    let (config, names) = aws("events").await;
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
        .event_pattern(r#"{"source": ["sluice"], "detail-type": ["job.succeeded"]}"#)
        .send()
        .await
        .unwrap();
    let target = aws_sdk_eventbridge::types::Target::builder().id("inbox").arn(arn).build().unwrap();
    bridge.put_targets().rule("succeeded").event_bus_name(&names.event_bus).targets(target).send().await.unwrap();

    let events = sluice_store_aws::EventBridgeEvents::new(&config, &names.event_bus);
    let mut job = sluice_domain::Job::new(42, "conn-9", sluice_domain::JobType::Sync, vec![], jiff::Timestamp::now());
    events.publish(sluice_store::JobEvent { kind: sluice_store::JobEventKind::Started, job: job.clone() }).await;
    job.status = sluice_domain::JobStatus::Succeeded;
    events.publish(sluice_store::JobEvent { kind: sluice_store::JobEventKind::Succeeded, job }).await;

    let received = sqs.receive_message().queue_url(&inbox).max_number_of_messages(10).wait_time_seconds(2).send().await.unwrap();
    let bodies: Vec<serde_json::Value> = received.messages().iter().map(|m| serde_json::from_str(m.body().unwrap()).unwrap()).collect();
    assert_eq!(bodies.len(), 1, "only the rule's events: {bodies:?}");
    assert_eq!(bodies[0]["detail-type"], "job.succeeded");
    assert_eq!(bodies[0]["detail"]["jobId"], 42);
    assert_eq!(bodies[0]["detail"]["connectionId"], "conn-9");
}

#[tokio::test]
async fn attempt_logs_on_cloudwatch_read_back_from_an_offset() {
    use sluice_store::AttemptLogs;
    let (config, names) = aws("logs").await;
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
    let (subnet, group) = default_network();
    let placement = sluice_store_aws::EcsPlacement {
        cluster: names.cluster.clone(),
        subnets: vec![subnet],
        security_groups: vec![group],
        execution_role_arn: "arn:aws:iam::123456789012:role/sluice-task-execution".into(),
        task_role_arn: "arn:aws:iam::123456789012:role/sluice-task".into(),
        assign_public_ip: false,
    };
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
