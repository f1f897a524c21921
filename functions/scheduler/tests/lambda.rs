//! The scheduler binary as Lambda runs it, on EventBridge Scheduler's
//! input, with its state on moto.

use std::time::Duration;

use serde_json::json;
use sluice_domain::resources::{Connection, ScheduleConfig};
use sluice_domain::{ConnectionStatus, Version};
use sluice_lambda::runtime_api::LocalRuntime;
use sluice_store::{Doc, DocKind};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schedule_fire_starts_one_job_and_queues_its_workload() {
    let cache = sluice_connectors::Cache::from_env();
    let venv = tokio::task::spawn_blocking(move || cache.python_env(sluice_store_aws::moto::PACKAGE, Some(sluice_store_aws::moto::VERSION), &mut |_| {})).await.unwrap().expect("moto installs");
    let moto = sluice_store_aws::moto::start(&venv.join("bin/moto_server")).expect("moto starts");
    let config = sluice_store_aws::moto::sdk_config(&moto).await;
    let names = sluice_store_aws::Names::with_prefix("sched");
    let provisioned = sluice_store_aws::provision::provision(&config, &names).await.unwrap();
    let app = sluice_lambda::app_for(&config, "sched").await.unwrap();
    let connection = |id: &str, status| Connection {
        connection_id: id.into(),
        name: id.into(),
        workspace_id: "w".into(),
        source_id: "s".into(),
        destination_id: "d".into(),
        streams: vec![],
        schedule: ScheduleConfig::manual(),
        status,
        namespace_definition: "destination".into(),
        namespace_format: None,
        prefix: String::new(),
        non_breaking_schema_updates_behavior: "ignore".into(), schema_change: "no_change".into(),
        created_at: 0,
        data_channel: Default::default(),
    };
    for (id, status) in [("active-conn", ConnectionStatus::Active), ("paused-conn", ConnectionStatus::Inactive)] {
        let doc = Doc { id: id.into(), workspace_id: Some("w".into()), body: serde_json::to_value(connection(id, status)).unwrap(), version: Version::INITIAL };
        app.config.insert_doc(DocKind::Connection, &doc).await.unwrap();
    }

    let runtime = LocalRuntime::start().await.unwrap();
    let started = std::time::Instant::now();
    let _function = runtime.function(env!("CARGO_BIN_EXE_scheduler"), "scheduler").envs(sluice_store_aws::moto::env(&moto)).env("SLUICE_PREFIX", "sched").spawn().unwrap();
    let fire = |id: &str| runtime.invoke(json!({"connectionId": id, "source": "schedule"}), Duration::from_secs(60));
    let first = fire("active-conn").await.unwrap().unwrap();
    eprintln!("scheduler: first answer {:?} after the process started (cold start)", started.elapsed());
    let job = first["started"].as_i64().expect("a job started");
    let second = fire("active-conn").await.unwrap().unwrap();
    assert!(second["skipped"].as_str().unwrap().contains(&format!("job {job}")), "{second}");
    let paused = fire("paused-conn").await.unwrap().unwrap();
    assert!(paused["skipped"].as_str().unwrap().contains("inactive"), "{paused}");
    let missing = fire("no-such-conn").await.unwrap();
    assert!(missing.is_err(), "an unknown connection is an error: {missing:?}");

    // The job's first workload is on the queue, for the launcher.
    let sqs = aws_sdk_sqs::Client::new(&config);
    let message = sqs.receive_message().queue_url(&provisioned.queue_url).send().await.unwrap();
    let bodies: Vec<&str> = message.messages().iter().filter_map(|m| m.body()).collect();
    assert_eq!(bodies, [format!("active-conn_{job}_0_sync").as_str()]);
}
