//! Starting a connector (or attaching to one another container started) and
//! stopping it again.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::config::{ConnectorConfig, Launch};

/// A connector's pipes, and a way to learn how it ended.
pub struct Running {
    pub stdout: Box<dyn Read + Send>,
    pub stderr: Box<dyn Read + Send>,
    pub stdin: Option<Box<dyn Write + Send>>,
    pub exit: ExitWatch,
    pub stopper: Stopper,
}

/// Waits for a connector's end.
pub enum ExitWatch {
    Child(Child),
    /// The attached connector's wrapper writes its exit status into this file.
    File(PathBuf),
}

/// How a connector ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(i32),
    Unknown,
}

impl Exit {
    pub fn success(self) -> bool {
        self == Exit::Code(0)
    }
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Exit::Code(code) => write!(f, "exited with status {code}"),
            Exit::Signal(signal) => write!(f, "was killed by signal {signal}"),
            Exit::Unknown => f.write_str("ended without reporting an exit status"),
        }
    }
}

impl ExitWatch {
    /// Blocks until the connector has ended.
    pub fn wait(self) -> Exit {
        self.wait_with_cause().0
    }

    /// Blocks until the connector has ended; with an attached connector,
    /// also what its container runtime saw of the end, if it said: a
    /// container killed from outside, or by the kernel for its memory
    /// limit, cannot say so itself, so the runtime writes `cause` beside
    /// `exit` (and `exit` too, when the wrapper died with it).
    pub fn wait_with_cause(self) -> (Exit, Option<String>) {
        match self {
            ExitWatch::Child(mut child) => {
                let exit = match child.wait() {
                    Ok(status) => match (status.code(), status.signal()) {
                        (Some(code), _) => Exit::Code(code),
                        (None, Some(signal)) => Exit::Signal(signal),
                        _ => Exit::Unknown,
                    },
                    Err(_) => Exit::Unknown,
                };
                (exit, None)
            }
            ExitWatch::File(path) => {
                let code: i32 = loop {
                    if let Ok(text) = std::fs::read_to_string(&path) {
                        if let Ok(code) = text.trim().parse() {
                            break code;
                        }
                    }
                    // A stat every 20 ms: the attempt's end waits on it.
                    std::thread::sleep(Duration::from_millis(20));
                };
                let cause_path = path.with_file_name("cause");
                // A status above 128 is a signal: the runtime may be about to say whose.
                // It says so once it has seen the container stop and reached
                // this volume through its engine, which on a loaded machine
                // took more than 3 s. When we stopped it ourselves (`cancel`
                // is there) our SIGTERM is the likely cause, and a runtime
                // that writes no causes (ECS) must not hold up a cancel long.
                let stopped_by_us = path.with_file_name("cancel").exists();
                let patience = match (code > 128, stopped_by_us) {
                    (false, _) => Duration::ZERO,
                    (true, true) => Duration::from_secs(3),
                    (true, false) => Duration::from_secs(10),
                };
                let started = std::time::Instant::now();
                let cause = loop {
                    match std::fs::read_to_string(&cause_path) {
                        Ok(text) if !text.trim().is_empty() => break Some(text.trim().to_owned()),
                        _ if started.elapsed() >= patience => break None,
                        _ => std::thread::sleep(Duration::from_millis(100)),
                    }
                };
                (Exit::Code(code), cause)
            }
        }
    }
}

/// Sends signals to a connector. Spawned connectors lead their own process
/// group, so a signal reaches whatever they started too.
#[derive(Clone)]
pub enum Stopper {
    Group(i32),
    /// An attached connector is stopped by creating this file, which its
    /// wrapper watches; the task's end stops it in any case.
    CancelFile(PathBuf),
}

impl Stopper {
    pub fn terminate(&self) {
        self.signal(libc::SIGTERM)
    }

    pub fn kill(&self) {
        self.signal(libc::SIGKILL)
    }

    fn signal(&self, signal: i32) {
        match self {
            // SAFETY: kill(2) takes plain integers; a group already gone gives ESRCH, which is fine.
            Stopper::Group(pgid) => unsafe {
                libc::kill(-pgid, signal);
            },
            Stopper::CancelFile(path) => {
                let _ = File::create(path);
            }
        }
    }
}

/// The protocol's arguments for one run of a connector, with its files
/// written under `dir`, each atomically, in the order given. A spawned
/// connector's are readable by the owner only (configs hold secrets); an
/// attached one's go into that connector's own volume, which no other
/// connector mounts, for a container that may run as any user.
pub fn prepare_files(dir: &Path, launch: &Launch, files: &[(&str, &serde_json::Value)]) -> io::Result<Vec<String>> {
    let mode = match launch {
        Launch::Spawn { .. } => 0o600,
        Launch::Attach { .. } => 0o644,
    };
    std::fs::create_dir_all(dir)?;
    let mut args = Vec::new();
    for (flag, value) in files {
        let path = dir.join(format!("{flag}.json"));
        let tmp = dir.join(format!(".{flag}.json.tmp"));
        let _ = std::fs::remove_file(&tmp);
        let mut file = OpenOptions::new().create_new(true).write(true).mode(mode).open(&tmp)?;
        // The mode asked for, whatever the umask.
        file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(mode))?;
        serde_json::to_writer(&mut file, value)?;
        file.flush()?;
        std::fs::rename(&tmp, &path)?;
        args.push(format!("--{flag}"));
        args.push(path.to_string_lossy().into_owned());
    }
    Ok(args)
}

/// Starts or attaches to a connector running `verb` with `args`.
pub fn start(connector: &ConnectorConfig, verb: &str, args: &[String], wants_stdin: bool) -> io::Result<Running> {
    match &connector.launch {
        Launch::Spawn { command, env } => {
            let (program, prefix) =
                command.split_first().ok_or_else(|| io::Error::other(format!("{}: empty command", connector.name)))?;
            let mut command = Command::new(program);
            command
                .args(prefix)
                .arg(verb)
                .args(args)
                .envs(env)
                .stdin(if wants_stdin { Stdio::piped() } else { Stdio::null() })
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .process_group(0);
            dies_with_us(&mut command);
            let mut child = command
                .spawn()
                .map_err(|e| io::Error::new(e.kind(), format!("cannot start {} ({program}): {e}", connector.name)))?;
            let pid = child.id() as i32;
            if let Some(stdout) = &child.stdout {
                widen_pipe(stdout.as_raw_fd());
            }
            if let Some(stdin) = &child.stdin {
                widen_pipe(stdin.as_raw_fd());
            }
            Ok(Running {
                stdout: Box::new(child.stdout.take().expect("piped")),
                stderr: Box::new(child.stderr.take().expect("piped")),
                stdin: child.stdin.take().map(|s| Box::new(s) as Box<dyn Write + Send>),
                exit: ExitWatch::Child(child),
                stopper: Stopper::Group(pid),
            })
        }
        Launch::Attach { dir } => {
            let open_read = |name: &str| {
                File::open(dir.join(name)).map_err(|e| io::Error::new(e.kind(), format!("{}: cannot open pipe {name} in {}: {e}", connector.name, dir.display())))
            };
            // Opening a FIFO blocks until the other end opens it too, so the order
            // here must match the wrapper's: stdin first, then stdout, then stderr.
            let stdin = if wants_stdin {
                let pipe = OpenOptions::new().write(true).open(dir.join("stdin"))?;
                widen_pipe(pipe.as_raw_fd());
                Some(Box::new(pipe) as Box<dyn Write + Send>)
            } else {
                None
            };
            let stdout = open_read("stdout")?;
            widen_pipe(stdout.as_raw_fd());
            Ok(Running {
                stdin,
                stdout: Box::new(stdout),
                stderr: Box::new(open_read("stderr")?),
                exit: ExitWatch::File(dir.join("exit")),
                stopper: Stopper::CancelFile(dir.join("cancel")),
            })
        }
    }
}

/// A connector never outlives the process that supervises it: were we
/// killed (kill -9, the OOM killer), a destination left running would go on
/// writing beside the next attempt's. The kernel sends it SIGKILL when the
/// thread that started it dies, so connectors are started by the thread
/// that runs the attempt to its end.
fn dies_with_us(command: &mut Command) {
    // SAFETY: only async-signal-safe calls between fork and exec.
    let parent = unsafe { libc::getpid() };
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0) != 0 {
                return Err(io::Error::last_os_error());
            }
            // Killed between fork and prctl: nobody would signal us.
            if libc::getppid() != parent {
                libc::_exit(137);
            }
            Ok(())
        });
    }
}

/// Pipes of 1 MiB instead of Linux's 64 KiB: four times fewer wake-ups of
/// the three processes per megabyte moved. A FIFO between containers is the
/// same kernel pipe and is widened the same way. Best effort: a smaller pipe works too.
fn widen_pipe(fd: std::os::fd::RawFd) {
    // SAFETY: F_SETPIPE_SZ takes an fd we own and an integer; failure changes nothing.
    unsafe {
        libc::fcntl(fd, libc::F_SETPIPE_SZ, 1 << 20);
    }
}

/// The shell line a connector's container runs in attach mode: it runs the
/// connector on the FIFOs the init step made, stops it when the
/// orchestrator creates `cancel`, and records its exit status in `exit`.
pub fn attach_wrapper(dir: &Path, command: &[String], wants_stdin: bool) -> String {
    let quote = |s: &str| format!("'{}'", s.replace('\'', r"'\''"));
    let cmd = command.iter().map(|c| quote(c)).collect::<Vec<_>>().join(" ");
    let d = quote(&dir.to_string_lossy());
    let stdin = if wants_stdin { format!("< {d}/stdin") } else { "< /dev/null".into() };
    format!(
        "{cmd} \"$@\" {stdin} > {d}/stdout 2> {d}/stderr & child=$!; \
         ( while [ ! -e {d}/cancel ]; do sleep 1; done; kill -TERM $child 2>/dev/null; sleep 10; kill -KILL $child 2>/dev/null ) & watcher=$!; \
         wait $child; status=$?; kill $watcher 2>/dev/null; \
         echo $status > {d}/exit.tmp && mv {d}/exit.tmp {d}/exit"
    )
}
