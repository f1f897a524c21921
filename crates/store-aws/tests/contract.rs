//! The storage contract on the AWS adapters, against moto (`moto[server]`
//! from PyPI) on 127.0.0.1: one server for this test binary, one set of
//! tables, queues and secrets per test.

use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use aws_config::{BehaviorVersion, Region};
use sluice_store::contract;
use sluice_store_aws::{provision::provision, DynamoStore, Names, SecretsManagerStore, SqsQueue};

/// The moto server's URL, started on first use by a thread that lives as
/// long as the tests, so that the server stops with them.
fn moto() -> &'static str {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| {
        let cache = sluice_connectors::Cache::from_env();
        let venv = cache.python_env("moto[server]", Some("5.2.5"), &mut |_| {}).expect("moto installs from PyPI");
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let (started, ready) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut child: Child = Command::new(venv.join("bin/moto_server"))
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("moto_server starts");
            started.send(child.id()).unwrap();
            // Stops moto when the test process ends: the reaper outlives no one.
            let pid = child.id();
            let _ = Command::new("sh").arg("-c").arg(format!("while kill -0 {} 2>/dev/null; do sleep 1; done; kill {pid}", std::process::id())).spawn();
            let _ = child.wait();
        });
        ready.recv().unwrap();
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "moto_server did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        url
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
