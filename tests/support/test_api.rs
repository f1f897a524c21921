//! The test API of `tests/fixtures/manifest/` (a paginated REST API with an
//! API key, whose schema and streams change on request) and the low-code
//! manifest that reads it with Airbyte's declarative runner.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use serde_json::{json, Value};

use super::{fixture, Scratch};

pub const KEY: &str = "k3y-Sw0rdf1sh-7731";
/// `tests/fixtures/manifest/server.py`: the test API, on a free port.
pub struct TestApi {
    child: Child,
    pub url: String,
    log: std::path::PathBuf,
}

impl TestApi {
    pub fn start(scratch: &Scratch) -> TestApi {
        let log = scratch.path("api.log");
        let mut child = Command::new("python3")
            .args([&fixture("manifest/server.py"), "0", KEY])
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("python3 runs the test API");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let port: u16 = line.trim().parse().unwrap_or_else(|_| panic!("the test API printed no port: {line:?}"));
        TestApi { child, url: format!("http://127.0.0.1:{port}"), log }
    }

    pub fn admin(&self, what: &str) {
        let answer = super::platform::agent().post(&format!("{}/admin/{what}", self.url)).send("").unwrap();
        assert_eq!(answer.status().as_u16(), 200, "admin {what}");
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for TestApi {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn manifest() -> Value {
    serde_yaml_ng::from_str(&std::fs::read_to_string(fixture("manifest/manifest.yaml")).unwrap()).unwrap()
}


/// The manifest connector's config for `api`.
pub fn source_config(api: &TestApi) -> Value {
    json!({"api_key": KEY, "base_url": api.url, "start_date": "2024-01-01T00:00:00Z"})
}
