//! The config-api binary as Lambda runs it: a local Runtime API hands it
//! API Gateway REST proxy events; its state is on moto.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sluice_lambda::runtime_api::LocalRuntime;

/// An API Gateway REST proxy event, as API Gateway sends it to the function.
fn rest_event(method: &str, path: &str, headers: &[(&str, &str)], body: Option<&str>) -> Value {
    let single: serde_json::Map<String, Value> = headers.iter().map(|(k, v)| (k.to_string(), json!(v))).collect();
    let multi: serde_json::Map<String, Value> = headers.iter().map(|(k, v)| (k.to_string(), json!([v]))).collect();
    json!({
        "resource": "/{proxy+}",
        "path": path,
        "httpMethod": method,
        "headers": single,
        "multiValueHeaders": multi,
        "queryStringParameters": null,
        "multiValueQueryStringParameters": null,
        "pathParameters": {"proxy": path.trim_start_matches('/')},
        "stageVariables": null,
        "requestContext": {
            "resourcePath": "/{proxy+}", "httpMethod": method, "path": format!("/prod{path}"), "stage": "prod",
            "requestId": "test", "accountId": "000000000000", "apiId": "local", "resourceId": "proxy",
            "identity": {"sourceIp": "127.0.0.1"}, "protocol": "HTTP/1.1", "requestTimeEpoch": 0
        },
        "body": body,
        "isBase64Encoded": false
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_config_api_function_answers_api_gateway_events() {
    let cache = sluice_connectors::Cache::from_env();
    let venv = tokio::task::spawn_blocking(move || cache.python_env(sluice_store_aws::moto::PACKAGE, Some(sluice_store_aws::moto::VERSION), &mut |_| {})).await.unwrap().expect("moto installs");
    let moto = sluice_store_aws::moto::start(&venv.join("bin/moto_server")).expect("moto starts");
    let config = sluice_store_aws::moto::sdk_config(&moto).await;
    let prefix = "fn";
    sluice_store_aws::provision::provision(&config, &sluice_store_aws::Names::with_prefix(prefix)).await.unwrap();
    let app = sluice_lambda::app_for(&config, prefix).await.unwrap();
    sluice_api::config::builtin::seed(&app).await.unwrap();
    let (application, secret) = sluice_api::config::new_application(&app, "test").await.unwrap();

    let runtime = LocalRuntime::start().await.unwrap();
    let started = Instant::now();
    let mut function = runtime.function(env!("CARGO_BIN_EXE_config-api"), "config-api").envs(sluice_store_aws::moto::env(&moto)).env("SLUICE_PREFIX", prefix).spawn().unwrap();
    let call = |event: Value| runtime.invoke(event, Duration::from_secs(60));

    let health = call(rest_event("GET", "/api/public/v1/health", &[], None)).await.unwrap().unwrap();
    let cold_start = started.elapsed();
    assert_eq!(health["statusCode"], 200, "{health}");
    eprintln!("config-api: first answer {cold_start:?} after the process started (cold start)");

    let form = format!("grant_type=client_credentials&client_id={}&client_secret={secret}", application.client_id);
    let token = call(rest_event("POST", "/api/public/v1/applications/token", &[("content-type", "application/x-www-form-urlencoded")], Some(&form))).await.unwrap().unwrap();
    assert_eq!(token["statusCode"], 200, "{token}");
    let token: Value = serde_json::from_str(token["body"].as_str().unwrap()).unwrap();
    let bearer = format!("Bearer {}", token["access_token"].as_str().unwrap());
    let auth = [("authorization", bearer.as_str()), ("content-type", "application/json")];

    let created = call(rest_event("POST", "/api/public/v1/workspaces", &auth, Some(r#"{"name": "on lambda"}"#))).await.unwrap().unwrap();
    assert_eq!(created["statusCode"], 200, "{created}");
    let workspace: Value = serde_json::from_str(created["body"].as_str().unwrap()).unwrap();
    let id = workspace["workspaceId"].as_str().unwrap();
    let read = call(rest_event("GET", &format!("/api/public/v1/workspaces/{id}"), &auth, None)).await.unwrap().unwrap();
    assert_eq!(serde_json::from_str::<Value>(read["body"].as_str().unwrap()).unwrap()["name"], "on lambda");

    let refused = call(rest_event("GET", "/api/public/v1/workspaces", &[], None)).await.unwrap().unwrap();
    assert_eq!(refused["statusCode"], 401);
    let content_type = refused["headers"]["content-type"].as_str().or_else(|| refused["multiValueHeaders"]["content-type"][0].as_str());
    assert_eq!(content_type, Some("application/problem+json"), "{refused}");
    // The definitions provisioning seeded.
    let definitions = call(rest_event("GET", &format!("/api/public/v1/workspaces/{id}/definitions/sources"), &auth, None)).await.unwrap().unwrap();
    assert!(definitions["body"].as_str().unwrap().contains("\"faker\""), "{definitions}");
    function.kill().await.unwrap();
}
