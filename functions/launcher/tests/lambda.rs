//! The launcher binary as Lambda runs it, on an SQS batch from the workload
//! queue, launching on ECS (moto).

use std::time::Duration;

use serde_json::json;
use sluice_domain::resources::{Actor, ActorKind, Connection, ScheduleConfig, StreamConfiguration, SyncMode};
use sluice_domain::{ConnectionStatus, JobType, Version, WorkloadStatus};
use sluice_lambda::runtime_api::LocalRuntime;
use sluice_store::{Doc, DocKind};

fn doc(id: &str, body: serde_json::Value) -> Doc {
    Doc { id: id.into(), workspace_id: Some("w".into()), body, version: Version::INITIAL }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sqs_batch_becomes_one_ecs_task_per_workload_even_when_redelivered() {
    let cache = sluice_connectors::Cache::from_env();
    let venv = tokio::task::spawn_blocking(move || cache.python_env(sluice_store_aws::moto::PACKAGE, Some(sluice_store_aws::moto::VERSION), &mut |_| {})).await.unwrap().expect("moto installs");
    let moto = sluice_store_aws::moto::start(&venv.join("bin/moto_server")).expect("moto starts");
    let config = sluice_store_aws::moto::sdk_config(&moto).await;
    let names = sluice_store_aws::Names::with_prefix("launch");
    let provisioned = sluice_store_aws::provision::provision(&config, &names).await.unwrap();
    let app = sluice_lambda::app_for(&config, "launch").await.unwrap();
    sluice_api::config::builtin::seed(&app).await.unwrap();

    // A connection from our faker to dev-null, with its catalog already discovered.
    let actor = |id: &str, kind, definition: &str| Actor {
        id: id.into(), kind, name: id.into(), workspace_id: "w".into(), definition_id: definition.into(), configuration: json!({}), created_at: 0,
    };
    app.config.insert_doc(DocKind::Source, &doc("src", serde_json::to_value(actor("src", ActorKind::Source, "5c1b0e7a-2d5e-4f0b-8a57-1f2f4b0c6e11")).unwrap())).await.unwrap();
    app.config.insert_doc(DocKind::Destination, &doc("dst", serde_json::to_value(actor("dst", ActorKind::Destination, "e2a4c6d8-1b3f-4a5c-8e7d-9f0a1b2c3d33")).unwrap())).await.unwrap();
    let catalog = json!({"catalog": {"streams": [{"name": "users", "json_schema": {"properties": {"id": {}, "updated_at": {}}},
        "supported_sync_modes": ["full_refresh", "incremental"], "source_defined_cursor": true,
        "default_cursor_field": ["updated_at"], "source_defined_primary_key": [["id"]]}]}});
    app.config.insert_doc(DocKind::Catalog, &Doc { id: "src".into(), workspace_id: None, body: catalog, version: Version::INITIAL }).await.unwrap();
    let connection = Connection {
        connection_id: "conn".into(), name: "c".into(), workspace_id: "w".into(), source_id: "src".into(), destination_id: "dst".into(),
        streams: vec![StreamConfiguration { name: "users".into(), namespace: None, sync_mode: SyncMode::IncrementalAppend, cursor_field: vec![], primary_key: vec![], selected_fields: vec![] }],
        schedule: ScheduleConfig::manual(), status: ConnectionStatus::Active, namespace_definition: "destination".into(), namespace_format: None,
        prefix: String::new(), non_breaking_schema_updates_behavior: "ignore".into(), created_at: 0, data_channel: Default::default(), schema_change: "no_change".into(),
    };
    app.config.insert_doc(DocKind::Connection, &doc("conn", serde_json::to_value(connection).unwrap())).await.unwrap();
    let job = sluice_platform::start_job(&app.ports(), "conn", JobType::Sync, vec![], jiff::Timestamp::now()).await.unwrap();
    let workload = job.attempts[0].workload_id.clone();

    // The batch the event source mapping would deliver.
    let sqs = aws_sdk_sqs::Client::new(&config);
    let received = sqs.receive_message().queue_url(&provisioned.queue_url).send().await.unwrap();
    let message = received.messages()[0].clone();
    assert_eq!(message.body(), Some(workload.as_str()));
    // The captured batch: one message delivered twice (same id, two receipts), now carrying ours.
    let mut batch: serde_json::Value = serde_json::from_str(sluice_lambda::events::SQS_BATCH_DUPLICATED).unwrap();
    for (i, record) in batch["Records"].as_array_mut().unwrap().iter_mut().enumerate() {
        record["messageId"] = json!(message.message_id());
        record["receiptHandle"] = json!(format!("{}-{i}", message.receipt_handle().unwrap()));
        record["body"] = json!(message.body());
    }

    let (subnet, group) = sluice_store_aws::moto::default_network(&venv, &moto).unwrap();
    let runtime = LocalRuntime::start().await.unwrap();
    let started = std::time::Instant::now();
    let _function = runtime
        .function(env!("CARGO_BIN_EXE_launcher"), "launcher")
        .envs(sluice_store_aws::moto::env(&moto))
        .env("SLUICE_PREFIX", "launch")
        .env("SLUICE_TASK_SUBNETS", &subnet)
        .env("SLUICE_TASK_SECURITY_GROUPS", &group)
        .env("SLUICE_TASK_EXECUTION_ROLE_ARN", "arn:aws:iam::123456789012:role/launch-task-execution")
        .env("SLUICE_TASK_ROLE_ARN", "arn:aws:iam::123456789012:role/launch-task")
        .env("SLUICE_WORKLOAD_API_URL", "https://api.example/api/internal/v1")
        .spawn()
        .unwrap();
    let answer = runtime.invoke(batch.clone(), Duration::from_secs(60)).await.unwrap().unwrap();
    eprintln!("launcher: first answer {:?} after the process started (cold start, one RunTask)", started.elapsed());
    assert_eq!(answer, json!({"batchItemFailures": []}));
    let launched = app.workloads.get_workload(&workload).await.unwrap();
    assert_eq!(launched.status, WorkloadStatus::Launched);
    let task_arn = launched.task_ref.clone().expect("the task's ARN");
    assert!(task_arn.starts_with("arn:aws:ecs:"), "{task_arn}");

    // Delivered again: the claim refuses, no second task starts.
    let again = runtime.invoke(batch, Duration::from_secs(60)).await.unwrap().unwrap();
    assert_eq!(again, json!({"batchItemFailures": []}));
    let tasks = aws_sdk_ecs::Client::new(&config).list_tasks().cluster(&names.cluster).send().await.unwrap();
    assert_eq!(tasks.task_arns(), [task_arn]);
}
