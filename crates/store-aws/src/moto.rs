//! Running moto, the AWS emulator (`moto[server]` from PyPI), for tests
//! and for trying the AWS adapters on one machine.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Starts `moto_server` on a free port of 127.0.0.1 and returns its URL
/// once it answers. It stops when this process ends: a watcher thread owns
/// it, and a shell reaper kills it if this process dies first.
pub fn start(moto_server: &Path) -> std::io::Result<String> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let mut child = Command::new(moto_server).args(["-H", "127.0.0.1", "-p", &port.to_string()]).stdout(Stdio::null()).stderr(Stdio::null()).spawn()?;
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
