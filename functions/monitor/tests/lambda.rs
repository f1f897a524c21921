//! The monitor binary as Lambda runs it, every minute, with its state on moto.

use std::time::Duration;

use serde_json::json;
use sluice_domain::{Workload, WorkloadStatus, WorkloadType};
use sluice_lambda::runtime_api::LocalRuntime;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_monitor_fails_a_workload_past_its_deadline() {
    let cache = sluice_connectors::Cache::from_env();
    let venv = tokio::task::spawn_blocking(move || cache.python_env(sluice_store_aws::moto::PACKAGE, Some(sluice_store_aws::moto::VERSION), &mut |_| {})).await.unwrap().expect("moto installs");
    let moto = sluice_store_aws::moto::start(&venv.join("bin/moto_server")).expect("moto starts");
    let config = sluice_store_aws::moto::sdk_config(&moto).await;
    sluice_store_aws::provision::provision(&config, &sluice_store_aws::Names::with_prefix("mon")).await.unwrap();
    let app = sluice_lambda::app_for(&config, "mon").await.unwrap();
    // Created an hour ago and never claimed: its 30-minute claim deadline has passed.
    let an_hour_ago = jiff::Timestamp::now() - jiff::SignedDuration::from_hours(1);
    let stale = Workload::new("check_stale".into(), WorkloadType::Check, None, "{}".into(), an_hour_ago);
    app.workloads.insert_workload(&stale).await.unwrap();
    let fresh = Workload::new("check_fresh".into(), WorkloadType::Check, None, "{}".into(), jiff::Timestamp::now());
    app.workloads.insert_workload(&fresh).await.unwrap();

    let runtime = LocalRuntime::start().await.unwrap();
    let started = std::time::Instant::now();
    let _function = runtime.function(env!("CARGO_BIN_EXE_monitor"), "monitor").envs(sluice_store_aws::moto::env(&moto)).env("SLUICE_PREFIX", "mon").spawn().unwrap();
    // The event an every-minute EventBridge rule delivers, as captured.
    let tick: serde_json::Value = serde_json::from_str(sluice_lambda::events::SCHEDULED_EVENT).unwrap();
    let answer = runtime.invoke(tick.clone(), Duration::from_secs(60)).await.unwrap().unwrap();
    eprintln!("monitor: first answer {:?} after the process started (cold start)", started.elapsed());
    assert_eq!(answer["failed"], json!(["check_stale"]), "{answer}");
    let failed = app.workloads.get_workload("check_stale").await.unwrap();
    assert_eq!(failed.status, WorkloadStatus::Failure);
    assert!(failed.reason.unwrap().contains("not claimed"));
    assert_eq!(app.workloads.get_workload("check_fresh").await.unwrap().status, WorkloadStatus::Pending);
    let again = runtime.invoke(tick, Duration::from_secs(60)).await.unwrap().unwrap();
    assert_eq!(again["failed"], json!([]), "a second sweep finds nothing: {again}");
}
