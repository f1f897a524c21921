//! Running moto, the AWS emulator (`moto[server]` from PyPI), for tests
//! and for trying the AWS adapters on one machine.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const SERIALIZED_DYNAMODB: &str = r#"
import sys, threading
from moto.dynamodb.responses import DynamoHandler
lock, call = threading.Lock(), DynamoHandler.call_action
def serialized(self):
    with lock:
        return call(self)
DynamoHandler.call_action = serialized
from moto.server import main
sys.argv[0] = "moto_server"
main(sys.argv[1:])
"#;

/// Starts `moto_server` on a free port of 127.0.0.1 and returns its URL
/// once it answers. It stops when this process ends: a watcher thread owns
/// it, and a shell reaper kills it if this process dies first.
pub fn start(moto_server: &Path) -> std::io::Result<String> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    // moto_server's own Python, running moto's server with DynamoDB's requests
    // serialized: moto undoes a failed TransactWriteItems by restoring whole
    // tables from a copy taken before it, which loses the writes other
    // requests made meanwhile (a job created concurrently vanished). DynamoDB
    // itself has no such window; our code still races, between calls.
    let python = moto_server.with_file_name("python");
    let mut child = Command::new(&python)
        .args(["-c", SERIALIZED_DYNAMODB, "-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| std::io::Error::new(e.kind(), format!("cannot start moto with {}: {e}", python.display())))?;
    let reaper = format!("while kill -0 {} 2>/dev/null; do sleep 1; done; kill {} 2>/dev/null", std::process::id(), child.id());
    Command::new("sh").arg("-c").arg(reaper).stdin(Stdio::null()).spawn()?;
    std::thread::spawn(move || child.wait());
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            return Err(std::io::Error::other("moto_server did not answer within 60 s"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(format!("http://127.0.0.1:{port}"))
}

/// An SDK configuration for the moto at `url`: its endpoint, a region and
/// the dummy credentials moto accepts.
pub async fn sdk_config(url: &str) -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(url)
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_dynamodb::config::Credentials::new("test", "test", None, None, "moto"))
        .load()
        .await
}

/// The environment that points a process's AWS SDK at the moto at `url`.
pub fn env(url: &str) -> Vec<(&'static str, String)> {
    vec![
        ("AWS_ENDPOINT_URL", url.to_owned()),
        ("AWS_ACCESS_KEY_ID", "test".to_owned()),
        ("AWS_SECRET_ACCESS_KEY", "test".to_owned()),
        ("AWS_REGION", "us-east-1".to_owned()),
    ]
}

/// The moto the tests run (`tests/run` installs exactly this).
pub const PACKAGE: &str = "moto[server]";
pub const VERSION: &str = "5.2.5";

/// The default VPC's first subnet and security group as moto makes them
/// (ECS's RunTask needs both), asked with the boto3 that comes with moto.
pub fn default_network(venv: &Path, url: &str) -> std::io::Result<(String, String)> {
    let script = "import boto3, sys\nec2 = boto3.client('ec2', endpoint_url=sys.argv[1], region_name='us-east-1', aws_access_key_id='test', aws_secret_access_key='test')\nprint(ec2.describe_subnets()['Subnets'][0]['SubnetId'], ec2.describe_security_groups()['SecurityGroups'][0]['GroupId'])";
    let output = Command::new(venv.join("bin/python")).args(["-c", script, url]).output()?;
    let text = String::from_utf8_lossy(&output.stdout);
    match text.split_whitespace().collect::<Vec<_>>()[..] {
        [subnet, group] => Ok((subnet.to_owned(), group.to_owned())),
        _ => Err(std::io::Error::other(format!("moto gave no default network: {}", String::from_utf8_lossy(&output.stderr)))),
    }
}

/// Where tests run ECS tasks on moto: `cluster` in the default network,
/// with the roles a provisioned platform names.
pub fn placement(cluster: &str, (subnet, group): (String, String)) -> crate::EcsPlacement {
    crate::EcsPlacement {
        cluster: cluster.to_owned(),
        subnets: vec![subnet],
        security_groups: vec![group],
        execution_role_arn: "arn:aws:iam::123456789012:role/sluice-task-execution".into(),
        task_role_arn: "arn:aws:iam::123456789012:role/sluice-task".into(),
        assign_public_ip: false,
    }
}
