//! Shared by Sluice's end-to-end tests: run the real `sluice` binary in a
//! scratch directory and read back what it did.
#![allow(dead_code)]

pub mod aws;
pub mod docker;
pub mod platform;
pub mod postgres;
pub mod test_api;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

pub struct Scratch {
    pub dir: tempfile::TempDir,
}

impl Scratch {
    pub fn new() -> Self {
        Scratch { dir: tempfile::tempdir().expect("temp dir") }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes `value` as JSON to `name` and returns its path.
    pub fn json(&self, name: &str, value: &Value) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, serde_json::to_vec_pretty(value).unwrap()).unwrap();
        path
    }

    pub fn read_json(&self, name: &str) -> Value {
        let text = std::fs::read_to_string(self.path(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        serde_json::from_str(&text).unwrap()
    }

    /// Every line of a JSON-lines file, parsed.
    pub fn read_lines(&self, name: &str) -> Vec<Value> {
        let text = std::fs::read_to_string(self.path(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    }
}

/// The cache shared by every test of a run, so PyPI connectors install once.
pub fn cache_dir() -> PathBuf {
    std::env::var_os("SLUICE_CACHE_DIR").map(PathBuf::from).unwrap_or_else(|| Path::new(env!("CARGO_TARGET_TMPDIR")).join("sluice-cache"))
}

pub fn sluice() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_sluice"));
    command.env("SLUICE_CACHE_DIR", cache_dir());
    command
}

pub fn fixture(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures").join(name).canonicalize().unwrap().display().to_string()
}

/// The result of one `sluice sync --json`.
pub struct Synced {
    pub code: i32,
    pub outcome: Value,
    pub stderr: String,
}

impl Synced {
    pub fn committed(&self, stream: &str) -> u64 {
        self.stream(stream)["committed"]["records"].as_u64().unwrap()
    }
    pub fn emitted(&self, stream: &str) -> u64 {
        self.stream(stream)["emitted"]["records"].as_u64().unwrap()
    }
    fn stream(&self, stream: &str) -> &Value {
        self.outcome["streams"].as_array().unwrap().iter().find(|s| s["stream"]["name"] == stream).unwrap_or_else(|| panic!("no stream {stream} in {:#}", self.outcome))
    }
    pub fn failure(&self) -> &Value {
        &self.outcome["failure"]
    }
}

pub fn run_sync(args: &[&str]) -> Synced {
    let output = sluice().arg("sync").arg("--json").args(args).output().expect("sluice runs");
    parse_sync(output)
}

pub fn parse_sync(output: Output) -> Synced {
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let outcome = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("no outcome on stdout ({e}); stderr:\n{stderr}\nstdout:\n{stdout}"));
    Synced { code: output.status.code().unwrap_or(-1), outcome, stderr }
}

/// Polls `ready` every 50 ms; fails, saying `what` did not happen, after a minute.
pub fn wait_until(what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !ready() {
        assert!(std::time::Instant::now() < deadline, "{what}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// The processes whose parent is `parent` and whose command line has `part`.
pub fn children_with(parent: u32, part: &str) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let ppid = stat.rsplit(')').next().and_then(|rest| rest.split_whitespace().nth(1)).and_then(|p| p.parse::<u32>().ok());
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if ppid == Some(parent) && String::from_utf8_lossy(&cmdline).contains(part) {
            found.push(pid);
        }
    }
    found
}

/// What a destination said when fed messages on stdin.
pub struct Written {
    pub code: i32,
    pub stdout: Vec<Value>,
    pub stderr: String,
}

impl Written {
    pub fn states(&self) -> Vec<&Value> {
        self.stdout.iter().filter(|m| m["type"] == "STATE").collect()
    }
    pub fn error(&self) -> String {
        self.stdout.iter().filter(|m| m["type"] == "TRACE").map(|m| m["trace"]["error"]["message"].as_str().unwrap_or_default().to_owned()).collect::<Vec<_>>().join("; ")
    }
}

/// `sluice connector <destination> write` fed these messages on stdin.
pub fn destination_write(destination: &str, s: &Scratch, config: &Value, catalog: &Value, messages: &[Value]) -> Written {
    use std::io::Write;
    use std::process::Stdio;
    let (config, catalog) = (s.json("config.json", config), s.json("catalog.json", catalog));
    let mut child = sluice()
        .args(["connector", destination, "write", "--config"])
        .arg(&config)
        .arg("--catalog")
        .arg(&catalog)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    for m in messages {
        writeln!(stdin, "{m}").unwrap();
    }
    drop(stdin);
    let output = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    Written { code: output.status.code().unwrap_or(-1), stdout, stderr: String::from_utf8_lossy(&output.stderr).into_owned() }
}

/// A webhook receiver on a free port: answers 500 to its first request (so
/// delivery must retry), 200 after; returns its URL and what it received.
pub fn webhook_receiver() -> (String, std::sync::Arc<std::sync::Mutex<Vec<serde_json::Value>>>) {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hooks", listener.local_addr().unwrap());
    let received = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = received.clone();
    std::thread::spawn(move || {
        for (n, stream) in listener.incoming().enumerate() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut length = 0;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; length];
            let _ = reader.read_exact(&mut body);
            let status = if n == 0 { "500 Internal Server Error" } else { "200 OK" };
            if n > 0 {
                seen.lock().unwrap().push(serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null));
            }
            let _ = write!(stream, "HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
        }
    });
    (url, received)
}
