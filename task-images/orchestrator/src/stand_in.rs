//! Socket mode: once the source has exited, nothing listens on its
//! sockets, and a destination still waiting to connect to one (the source
//! failed before it listened) would wait out its connect timeout, fifteen
//! minutes. The bookkeeper listens in the source's place and closes each
//! connection at once: the destination reads an empty stream there, ends
//! as after a source that stopped (committing only what STATEs cover), and
//! the attempt ends with the source's failure.

use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use sluice_protocol::socket::{self, DataChannel};

/// Listens on the source's sockets until dropped.
pub struct StandIn {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    paths: Vec<PathBuf>,
}

impl StandIn {
    /// Takes over each socket; returns what could not be taken (and why).
    pub fn start(channel: &DataChannel) -> (StandIn, Vec<String>) {
        let stop = Arc::new(AtomicBool::new(false));
        let (mut threads, mut paths, mut problems) = (Vec::new(), Vec::new(), Vec::new());
        for path in &channel.socket_paths {
            // The source's socket file, if it made one, is stale: it has exited.
            // (Probing it first would be worse: a connection a lingering child
            // of the source accepted would be taken for the destination's.)
            match socket::listen(path).and_then(|l| l.set_nonblocking(true).map(|_| l)) {
                Ok(listener) => {
                    let stop = stop.clone();
                    threads.push(thread::spawn(move || close_each(&listener, &stop)));
                    paths.push(path.clone());
                }
                Err(e) => problems.push(e.to_string()),
            }
        }
        (StandIn { stop, threads, paths }, problems)
    }
}

fn close_each(listener: &UnixListener, stop: &AtomicBool) {
    while !stop.load(Relaxed) {
        match listener.accept() {
            Ok((connection, _)) => drop(connection),
            // Any other error (a connection reset before it was taken) ends nothing.
            Err(_) => thread::sleep(Duration::from_millis(20)),
        }
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        self.stop.store(true, Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
        for path in &self.paths {
            let _ = std::fs::remove_file(path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn a_destination_connecting_after_the_source_exited_reads_an_empty_stream() {
        let dir = std::env::temp_dir().join(format!("sluice-stand-in-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let channel = DataChannel::in_dir(&dir, 2, socket::Format::Protobuf);
        let (stand_in, problems) = StandIn::start(&channel);
        assert!(problems.is_empty(), "{problems:?}");
        for path in &channel.socket_paths {
            let mut connection = socket::connect(path, Duration::from_secs(5)).unwrap();
            let mut read = Vec::new();
            connection.read_to_end(&mut read).unwrap();
            assert!(read.is_empty(), "nothing comes from a stand-in");
        }
        drop(stand_in);
        assert!(channel.socket_paths.iter().all(|p| !p.exists()), "its sockets are removed when it stops");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
