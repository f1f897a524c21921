//! The workload-api binary as Lambda runs it, on API Gateway REST events:
//! a task's credential opens its own workload and no other.

use std::time::Duration;

use serde_json::{json, Value};
use sluice_domain::{Workload, WorkloadEvent, WorkloadType};
use sluice_lambda::runtime_api::LocalRuntime;

fn rest_event(method: &str, path: &str, token: &str, body: Option<&str>) -> Value {
    let auth = format!("Bearer {token}");
    json!({
        "resource": "/{proxy+}", "path": path, "httpMethod": method,
        "headers": {"authorization": auth, "content-type": "application/json"},
        "multiValueHeaders": {"authorization": [auth], "content-type": ["application/json"]},
        "queryStringParameters": null, "multiValueQueryStringParameters": null,
        "pathParameters": {"proxy": path.trim_start_matches('/')}, "stageVariables": null,
        "requestContext": {"resourcePath": "/{proxy+}", "httpMethod": method, "path": format!("/prod{path}"), "stage": "prod",
            "requestId": "test", "accountId": "000000000000", "apiId": "local", "resourceId": "proxy",
            "identity": {"sourceIp": "127.0.0.1"}, "protocol": "HTTP/1.1", "requestTimeEpoch": 0},
        "body": body, "isBase64Encoded": false
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tasks_credential_opens_its_own_workload_only() {
    let cache = sluice_connectors::Cache::from_env();
    let venv = tokio::task::spawn_blocking(move || cache.python_env(sluice_store_aws::moto::PACKAGE, Some(sluice_store_aws::moto::VERSION), &mut |_| {})).await.unwrap().expect("moto installs");
    let moto = sluice_store_aws::moto::start(&venv.join("bin/moto_server")).expect("moto starts");
    let config = sluice_store_aws::moto::sdk_config(&moto).await;
    sluice_store_aws::provision::provision(&config, &sluice_store_aws::Names::with_prefix("wl")).await.unwrap();
    let app = sluice_lambda::app_for(&config, "wl").await.unwrap();
    let now = jiff::Timestamp::now();
    for id in ["conn_1_0_sync", "conn_2_0_sync"] {
        let w = app.workloads.insert_workload(&Workload::new(id.into(), WorkloadType::Sync, Some("conn".into()), "{}".into(), now)).await.unwrap();
        let claimed = w.apply(&WorkloadEvent::Claim { by: "test".into() }, now).unwrap().unwrap();
        app.workloads.update_workload(&claimed).await.unwrap();
    }
    let credential = app.keys.workload_token("conn_1_0_sync");

    let runtime = LocalRuntime::start().await.unwrap();
    let started = std::time::Instant::now();
    let _function = runtime.function(env!("CARGO_BIN_EXE_workload-api"), "workload-api").envs(sluice_store_aws::moto::env(&moto)).env("SLUICE_PREFIX", "wl").spawn().unwrap();
    let call = |event: Value| runtime.invoke(event, Duration::from_secs(60));
    let running = call(rest_event("POST", "/api/internal/v1/workloads/conn_1_0_sync/running", &credential, Some("{}"))).await.unwrap().unwrap();
    eprintln!("workload-api: first answer {:?} after the process started (cold start)", started.elapsed());
    assert_eq!(running["statusCode"], 200, "{running}");
    let body: Value = serde_json::from_str(running["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["status"], "running");
    let other = call(rest_event("GET", "/api/internal/v1/workloads/conn_2_0_sync", &credential, None)).await.unwrap().unwrap();
    assert_eq!(other["statusCode"], 401, "{other}");
    // The Config API is not served by this function.
    let config_api = call(rest_event("GET", "/api/public/v1/workspaces", &credential, None)).await.unwrap().unwrap();
    assert_eq!(config_api["statusCode"], 404, "{config_api}");
}
