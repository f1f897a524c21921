//! A `sluice up` of a test's own: a scratch data directory, a free port,
//! its credentials read from the file it writes, and a small HTTP client.

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

pub struct Platform {
    pub data: PathBuf,
    pub base: String,
    pub port: u16,
    pub token: String,
    child: Option<Child>,
    extra_args: Vec<String>,
    env: Vec<(String, String)>,
    agent: ureq::Agent,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder().http_status_as_error(false).timeout_global(Some(Duration::from_secs(300))).build().into()
}

impl Platform {
    /// Starts `sluice up` with `args` on top of fast test settings.
    pub fn start(data: &Path, args: &[&str]) -> Platform {
        Platform::start_with_env(data, args, &[])
    }

    /// With extra environment, e.g. `AWS_ENDPOINT_URL` for `--aws`.
    pub fn start_with_env(data: &Path, args: &[&str], env: &[(&str, &str)]) -> Platform {
        let mut platform = Platform {
            data: data.to_path_buf(),
            base: String::new(),
            port: free_port(),
            token: String::new(),
            child: None,
            extra_args: args.iter().map(|s| s.to_string()).collect(),
            env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            agent: agent(),
        };
        platform.base = format!("http://127.0.0.1:{}/api/public/v1", platform.port);
        platform.launch();
        platform
    }

    /// A platform someone else runs (e.g. functions behind a gateway), at
    /// `base` (`.../api/public/v1`), with an access token already had; its
    /// log is read from `log`.
    pub fn attach(base: &str, token: &str, log: &Path) -> Platform {
        let port = base.split(':').nth(2).and_then(|p| p.split('/').next()).and_then(|p| p.parse().ok()).unwrap_or(0);
        Platform {
            data: log.with_extension(""),
            base: base.to_owned(),
            port,
            token: token.to_owned(),
            child: None,
            extra_args: vec![],
            env: vec![],
            agent: agent(),
        }
    }

    fn launch(&mut self) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.data.with_extension("log")).unwrap();
        let child = super::sluice()
            .arg("up")
            .arg("--data-dir")
            .arg(&self.data)
            .arg("--listen")
            .arg(format!("127.0.0.1:{}", self.port))
            .args(["--heartbeat-secs", "1", "--retry-backoff-secs", "1"])
            .args(&self.extra_args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("sluice up starts");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = self.agent.get(&format!("{}/health", self.base)).call() {
                if r.status() == 200 {
                    break;
                }
            }
            assert!(Instant::now() < deadline, "sluice up did not answer /health: {}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
        let credentials: Value = serde_json::from_str(&std::fs::read_to_string(self.data.join("credentials.json")).unwrap()).unwrap();
        let form = format!("grant_type=client_credentials&client_id={}&client_secret={}", credentials["client_id"].as_str().unwrap(), credentials["client_secret"].as_str().unwrap());
        let mut r = self.agent.post(&format!("{}/applications/token", self.base)).header("content-type", "application/x-www-form-urlencoded").send(form).unwrap();
        let body: Value = serde_json::from_str(&r.body_mut().read_to_string().unwrap()).unwrap();
        self.token = body["access_token"].as_str().expect("a token").to_owned();
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.data.with_extension("log")).unwrap_or_default()
    }

    /// Kills `sluice up` without warning (SIGKILL).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    pub fn restart(&mut self) {
        self.kill();
        self.launch();
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// Any request; returns the status and the JSON body (`Null` if none).
    pub fn call(&self, method: &str, path: &str, body: Option<&Value>, token: Option<&str>) -> (u16, Value) {
        let url = if path.starts_with("http") { path.to_owned() } else { format!("{}{path}", self.base) };
        let request = ureq::http::Request::builder().method(method).uri(&url);
        let request = match token {
            Some(t) => request.header("authorization", format!("Bearer {t}")),
            None => request,
        };
        let request = request.header("content-type", "application/json");
        let result = match body {
            Some(b) => self.agent.run(request.body(b.to_string()).unwrap()),
            None => self.agent.run(request.body(()).unwrap()),
        };
        let mut response = result.unwrap_or_else(|e| panic!("{method} {url}: {e}"));
        let status = response.status().as_u16();
        let text = response.body_mut().read_to_string().unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(if text.is_empty() { Value::Null } else { Value::String(text) }))
    }

    /// A request that must succeed; returns its body.
    pub fn ok(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let (status, value) = self.call(method, path, body.as_ref(), Some(&self.token));
        assert!((200..300).contains(&status), "{method} {path} answered {status}: {value}\n--- sluice up log:\n{}", self.log());
        value
    }

    pub fn get(&self, path: &str) -> Value {
        self.ok("GET", path, None)
    }

    pub fn post(&self, path: &str, body: Value) -> Value {
        self.ok("POST", path, Some(body))
    }

    /// Polls a job until it ends; returns it.
    pub fn wait_job(&self, job_id: i64, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let job = self.get(&format!("/jobs/{job_id}"));
            if ["succeeded", "failed", "cancelled"].contains(&job["status"].as_str().unwrap()) {
                return job;
            }
            assert!(Instant::now() < deadline, "job {job_id} did not end in {timeout:?}: {job}\n{}", self.log());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Polls until `check` holds of the job.
    pub fn wait_for(&self, what: &str, timeout: Duration, mut check: impl FnMut(&Platform) -> bool) {
        let deadline = Instant::now() + timeout;
        while !check(self) {
            assert!(Instant::now() < deadline, "{what} did not happen in {timeout:?}\n{}", self.log());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A connection syncing the scripted source's `items` incrementally.
    pub fn items_connection(&self, source: &str, destination: &str) -> String {
        let body = json!({"sourceId": source, "destinationId": destination,
            "configurations": {"streams": [{"name": "items", "syncMode": "incremental_append"}]}});
        self.post("/connections", body)["connectionId"].as_str().unwrap().to_owned()
    }

    /// Starts a sync job of the connection; its id.
    pub fn sync(&self, connection: &str) -> i64 {
        self.post("/jobs", json!({"connectionId": connection, "jobType": "sync"}))["jobId"].as_i64().unwrap()
    }

    /// The cursor of the connection's first committed stream state (the
    /// scripted source's `items`), 0 before any.
    pub fn cursor(&self, connection: &str) -> i64 {
        let states = self.get(&format!("/connections/{connection}/state"))["states"].clone();
        states.as_array().and_then(|s| s.first()).map(|s| s["stream"]["stream_state"]["cursor"].as_i64().unwrap()).unwrap_or(0)
    }

    pub fn workspace(&self, name: &str) -> String {
        self.post("/workspaces", json!({"name": name}))["workspaceId"].as_str().unwrap().to_owned()
    }

    /// A source or destination from its type key and config.
    pub fn actor(&self, kind: &str, workspace: &str, type_key: &str, mut configuration: Value) -> String {
        configuration[format!("{kind}Type")] = json!(type_key);
        let body = self.post(&format!("/{kind}s"), json!({"name": format!("{type_key} {kind}"), "workspaceId": workspace, "configuration": configuration}));
        body[format!("{kind}Id")].as_str().unwrap().to_owned()
    }
}

impl Drop for Platform {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
