//! `sluice chaos`: syncs killed at random moments, and the proof that no
//! record is lost or duplicated.
//!
//! Each iteration syncs Sluice's faker's `users` into destination-jsonl in
//! `append_dedup`, and at a random moment SIGKILLs one process: the source,
//! the destination, the orchestrator or bookkeeper, or the supervisor itself
//! (`sluice sync`, or `sluice up`, which is then started again on the same
//! data directory). The sync is then run again (`sluice sync`) or left to the
//! job's retries (`sluice up`) until it succeeds. After the kill, every user
//! up to the committed state must be in the file; at the end, every user
//! exactly once.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::{json, Value};

use crate::remote::{Client, Target};

#[derive(clap::Args)]
pub struct ChaosArgs {
    /// Iterations per data mode and target
    #[arg(long, default_value_t = 20)]
    iterations: u32,
    /// What is killed: `sync` (a `sluice sync` and its connectors, then the
    /// same command again), `platform` (a job on `sluice up`), or `both`
    #[arg(long, default_value = "both")]
    target: ChaosTarget,
    /// `legacy` (stdio through the orchestrator), `socket` (the bookkeeper), or `both`
    #[arg(long, default_value = "both")]
    mode: ChaosMode,
    /// Users each sync moves
    #[arg(long, default_value_t = 40_000)]
    records: u64,
    /// The random seed (printed, to replay a run)
    #[arg(long)]
    seed: Option<u64>,
    /// Where the iterations' files go [default: a new directory under the temporary directory]
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// Print the report as JSON
    #[arg(long)]
    json: bool,
}

#[derive(clap::ValueEnum, Clone, Copy, PartialEq, Eq)]
enum ChaosTarget {
    Sync,
    Platform,
    Both,
}

#[derive(clap::ValueEnum, Clone, Copy, PartialEq, Eq)]
enum ChaosMode {
    Legacy,
    Socket,
    Both,
}

/// splitmix64: enough randomness for picking moments and victims, and replayable.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }
}

/// What one run found, per (target, mode).
#[derive(Default)]
struct Tally {
    iterations: u32,
    /// Kills that landed, by victim.
    faults: BTreeMap<String, u32>,
    /// Kills that found their victim already gone (the sync was over, say).
    missed: u32,
    reruns: u32,
    /// Every loss, duplicate or failed job, described.
    problems: Vec<String>,
    seconds: f64,
}

pub fn run(args: ChaosArgs) -> anyhow::Result<i32> {
    if args.iterations == 0 || args.records == 0 {
        bail!("--iterations and --records must be at least 1");
    }
    let seed = args.seed.unwrap_or_else(|| jiff::Timestamp::now().as_nanosecond() as u64);
    let mut random = Random(seed);
    let work = match &args.work_dir {
        Some(dir) => dir.clone(),
        None => std::env::temp_dir().join(format!("sluice-chaos-{}", std::process::id())),
    };
    std::fs::create_dir_all(&work).with_context(|| format!("cannot create {}", work.display()))?;
    let sluice = std::env::current_exe().context("cannot find the sluice executable")?;
    eprintln!("sluice chaos: seed {seed}, {} iterations per target and mode, {} users per sync, files in {}", args.iterations, args.records, work.display());

    let modes: &[&str] = match args.mode {
        ChaosMode::Legacy => &["legacy"],
        ChaosMode::Socket => &["socket"],
        ChaosMode::Both => &["legacy", "socket"],
    };
    let mut report = Vec::new();
    for target in ["sync", "platform"] {
        if !matches!((args.target, target), (ChaosTarget::Both, _) | (ChaosTarget::Sync, "sync") | (ChaosTarget::Platform, "platform")) {
            continue;
        }
        for mode in modes {
            let dir = work.join(format!("{target}-{mode}"));
            let started = Instant::now();
            let mut tally = match target {
                "sync" => sync_loop(&sluice, &dir, mode, &args, &mut random)?,
                _ => platform_loop(&sluice, &dir, mode, &args, &mut random)?,
            };
            tally.seconds = started.elapsed().as_secs_f64();
            eprintln!(
                "sluice chaos: {target} {mode}: {} iterations, faults {:?} ({} kills missed), {} problems, {:.0} s",
                tally.iterations,
                tally.faults,
                tally.missed,
                tally.problems.len(),
                tally.seconds
            );
            report.push((target, *mode, tally));
        }
    }

    let problems: usize = report.iter().map(|r| r.2.problems.len()).sum();
    if args.json {
        let runs: Vec<Value> = report
            .iter()
            .map(|(target, mode, t)| {
                json!({"target": target, "mode": mode, "iterations": t.iterations, "faults": t.faults, "missed": t.missed,
                       "reruns": t.reruns, "problems": t.problems, "seconds": t.seconds})
            })
            .collect();
        println!("{:#}", json!({"seed": seed, "records": args.records, "runs": runs, "problems": problems}));
    } else {
        for (target, mode, t) in &report {
            let faults: Vec<String> = t.faults.iter().map(|(k, n)| format!("{k} {n}")).collect();
            println!("{target:8} {mode:6} iterations {:4}  faults: {}  missed {}  lost or duplicated: {}", t.iterations, faults.join(", "), t.missed, t.problems.len());
            for p in &t.problems {
                println!("  {p}");
            }
        }
        println!("seed {seed}: {}", if problems == 0 { "no loss, no duplicate".to_owned() } else { format!("{problems} problems") });
    }
    if problems == 0 && args.work_dir.is_none() {
        let _ = std::fs::remove_dir_all(&work);
    }
    Ok(if problems == 0 { 0 } else { 1 })
}

/// `users` in append_dedup: the destination keeps one line per id once a sync succeeds.
fn dedup_catalog() -> Value {
    let users = sluice_source_faker::catalog().streams.into_iter().find(|s| s.name == "users").expect("the faker has users");
    json!({"streams": [{
        "stream": users,
        "sync_mode": "incremental", "cursor_field": ["updated_at"], "destination_sync_mode": "append_dedup", "primary_key": [["id"]]
    }]})
}

fn write_json(path: &Path, value: &Value) -> anyhow::Result<()> {
    std::fs::write(path, serde_json::to_vec_pretty(value)?).with_context(|| format!("cannot write {}", path.display()))
}

fn sync_loop(sluice: &Path, dir: &Path, mode: &str, args: &ChaosArgs, random: &mut Random) -> anyhow::Result<Tally> {
    let mut tally = Tally::default();
    // One clean sync first, to learn when each process runs: the kills land then.
    let mut windows: Option<Windows> = None;
    for i in 0..=args.iterations {
        let here = dir.join(format!("{i}"));
        let _ = std::fs::remove_dir_all(&here);
        std::fs::create_dir_all(&here)?;
        write_json(&here.join("source.json"), &json!({"count": args.records, "seed": i, "records_per_slice": 1000}))?;
        write_json(&here.join("destination.json"), &json!({"destination_path": here.join("out")}))?;
        write_json(&here.join("catalog.json"), &dedup_catalog())?;
        let start = |n: u32| -> anyhow::Result<Child> {
            let log = File::create(here.join(format!("run-{n}.log")))?;
            Ok(Command::new(sluice)
                .args(["sync", "--source", "source-faker", "--destination", "destination-jsonl", "--data-channel"])
                .arg(if mode == "socket" { "socket" } else { "stdio" })
                .arg("--source-config").arg(here.join("source.json"))
                .arg("--destination-config").arg(here.join("destination.json"))
                .arg("--catalog").arg(here.join("catalog.json"))
                .arg("--state-file").arg(here.join("state.json"))
                .arg("--log-file").arg(here.join(format!("attempt-{n}.log")))
                .stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log)
                .spawn()?)
        };
        let Some(windows) = &windows else {
            let (began, mut seen) = (Instant::now(), Windows::new());
            let mut child = start(0)?;
            let status = loop {
                if let Some(status) = child.try_wait()? {
                    break status;
                }
                watch(&mut seen, began, &victims(child.id(), "sync", "orchestrator"));
                std::thread::sleep(Duration::from_millis(5));
            };
            if !status.success() {
                bail!("the calibration sync failed ({status}); see {}", here.display());
            }
            windows = Some(seen);
            check_exactly_once(&here.join("out/users.jsonl"), args.records, &format!("sync {mode} calibration"), &mut tally.problems);
            continue;
        };
        tally.iterations += 1;
        let began = Instant::now();
        let mut child = start(0)?;
        let victim = random.pick(&["sync", "source", "destination"]);
        let landed = kill_within(windows, victim, began, random, || {
            if child.try_wait().ok().flatten().is_some() {
                return Err(());
            }
            Ok(victims(child.id(), "sync", "orchestrator"))
        });
        let first = child.wait()?;
        if landed {
            *tally.faults.entry(victim.to_owned()).or_default() += 1;
        } else {
            tally.missed += 1;
        }
        let what = format!("sync {mode} iteration {i} ({victim} killed)");
        check_committed_present(&here, &what, &mut tally.problems);
        let mut succeeded = first.success();
        for n in 1..=5 {
            if succeeded {
                break;
            }
            // As a user would: the same command again, soon after.
            std::thread::sleep(Duration::from_millis(random.below(300)));
            tally.reruns += 1;
            succeeded = start(n)?.wait()?.success();
        }
        if !succeeded {
            tally.problems.push(format!("{what}: five reruns did not succeed; see {}", here.display()));
            continue;
        }
        check_exactly_once(&here.join("out/users.jsonl"), args.records, &what, &mut tally.problems);
        if tally.problems.is_empty() {
            let _ = std::fs::remove_dir_all(&here);
        }
    }
    Ok(tally)
}

fn platform_loop(sluice: &Path, dir: &Path, mode: &str, args: &ChaosArgs, random: &mut Random) -> anyhow::Result<Tally> {
    let mut tally = Tally::default();
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir)?;
    let mut up = Up::start(sluice, dir)?;
    let result = (|| -> anyhow::Result<()> {
        let client = up.client()?;
        let workspace = client.call("POST", "/workspaces", Some(&json!({"name": format!("chaos {mode}")})))?["workspaceId"].as_str().context("no workspaceId")?.to_owned();
        let channel = if mode == "socket" { json!({"mode": "auto"}) } else { json!({"mode": "stdio"}) };
        let mut windows: Option<Windows> = None;
        for i in 0..=args.iterations {
            let client = up.client()?;
            let out = dir.join(format!("out-{i}"));
            let made = |kind: &str, type_key: &str, mut configuration: Value| -> anyhow::Result<String> {
                configuration[format!("{kind}Type")] = json!(type_key);
                let body = json!({"name": format!("chaos {i}"), "workspaceId": workspace, "configuration": configuration});
                Ok(client.call("POST", &format!("/{kind}s"), Some(&body))?[format!("{kind}Id")].as_str().context("no id")?.to_owned())
            };
            let source = made("source", "sluice-faker", json!({"count": args.records, "seed": i, "records_per_slice": 1000}))?;
            let destination = made("destination", "sluice-jsonl", json!({"destination_path": out}))?;
            let streams = json!({"streams": [{"name": "users", "syncMode": "incremental_deduped_history"}]});
            let connection = client.call("POST", "/connections", Some(&json!({"name": format!("chaos {i}"), "sourceId": source, "destinationId": destination,
                "configurations": streams, "dataChannel": channel})))?["connectionId"].as_str().context("no connectionId")?.to_owned();
            let began = Instant::now();
            let job = client.call("POST", "/jobs", Some(&json!({"connectionId": connection, "jobType": "sync"})))?["jobId"].as_i64().context("no jobId")?;
            let what = format!("platform {mode} iteration {i}");
            let platform = if mode == "socket" { "bookkeeper" } else { "orchestrator" };
            let Some(windows) = &windows else {
                let mut seen = Windows::new();
                let ended = up.wait_job(job, &mut || watch(&mut seen, began, &victims(up.pid(), "sluice up", platform)))?;
                if ended["status"] != "succeeded" {
                    bail!("the calibration job {job} ended {}; see {}", ended["status"], dir.display());
                }
                windows = Some(seen);
                check_exactly_once(&out.join("users.jsonl"), args.records, &format!("{what} (calibration)"), &mut tally.problems);
                continue;
            };
            tally.iterations += 1;
            let victim = random.pick(&["source", "destination", platform, "sluice up"]);
            let landed = kill_within(windows, victim, began, random, || Ok(victims(up.pid(), "sluice up", platform)));
            if landed {
                *tally.faults.entry(victim.to_owned()).or_default() += 1;
            } else {
                tally.missed += 1;
            }
            if victim == "sluice up" && landed {
                up.restart()?;
            }
            let ended = up.wait_job(job, &mut || {})?;
            if ended["status"] != "succeeded" {
                tally.problems.push(format!("{what} ({victim} killed): job {job} ended {}: {}", ended["status"], ended["failureReason"]));
                continue;
            }
            tally.reruns += ended["attempts"].as_u64().unwrap_or(1).saturating_sub(1) as u32;
            let problems = tally.problems.len();
            check_exactly_once(&out.join("users.jsonl"), args.records, &format!("{what} ({victim} killed)"), &mut tally.problems);
            if tally.problems.len() == problems {
                let _ = std::fs::remove_dir_all(&out);
            }
        }
        Ok(())
    })();
    up.stop();
    result.map(|()| tally)
}

/// A `sluice up` of the loop's own, on a free port, restartable on its data directory.
struct Up {
    sluice: PathBuf,
    dir: PathBuf,
    listen: String,
    child: Child,
    client: Option<Client>,
}

impl Up {
    fn start(sluice: &Path, dir: &Path) -> anyhow::Result<Up> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let child = Up::spawn(sluice, dir, &format!("127.0.0.1:{port}"))?;
        let mut up = Up { sluice: sluice.to_owned(), dir: dir.to_owned(), listen: format!("127.0.0.1:{port}"), child, client: None };
        up.wait_ready()?;
        Ok(up)
    }

    fn spawn(sluice: &Path, dir: &Path, listen: &str) -> anyhow::Result<Child> {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(dir.join("up.log"))?;
        Ok(Command::new(sluice)
            .arg("up")
            .arg("--data-dir").arg(dir.join("data"))
            .args(["--listen", listen, "--retry-backoff-secs", "1", "--heartbeat-secs", "2", "--monitor-secs", "5"])
            .stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log)
            .spawn()?)
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn wait_ready(&mut self) -> anyhow::Result<()> {
        let credentials = self.dir.join("data/credentials.json");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!("sluice up exited ({status}); see {}", self.dir.join("up.log").display());
            }
            if credentials.exists() {
                if let Ok(client) = Client::connect(&Target::from_credentials(credentials.clone())) {
                    self.client = Some(client);
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                bail!("sluice up did not answer within 60 s; see {}", self.dir.join("up.log").display());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn client(&self) -> anyhow::Result<&Client> {
        self.client.as_ref().context("sluice up is not running")
    }

    /// After kill -9: the same data directory, the same address.
    fn restart(&mut self) -> anyhow::Result<()> {
        let _ = self.child.wait();
        self.client = None;
        self.child = Up::spawn(&self.sluice, &self.dir, &self.listen)?;
        self.wait_ready()
    }

    /// Waits for the job to end, calling `each` every few milliseconds meanwhile.
    fn wait_job(&self, job: i64, each: &mut dyn FnMut()) -> anyhow::Result<Value> {
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            for _ in 0..20 {
                each();
                std::thread::sleep(Duration::from_millis(5));
            }
            let got = self.client()?.call("GET", &format!("/jobs/{job}"), None)?;
            if !["pending", "running", "incomplete"].contains(&got["status"].as_str().unwrap_or("")) {
                let attempts = self.client()?.call("GET", &format!("/jobs/{job}/attempts"), None).ok();
                let mut got = got;
                got["attempts"] = json!(attempts.as_ref().and_then(|a| a["attempts"].as_array()).map_or(1, Vec::len));
                return Ok(got);
            }
            if Instant::now() > deadline {
                bail!("job {job} is still {} after 300 s; see {}", got["status"], self.dir.display());
            }
        }
    }

    fn stop(mut self) {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.child.try_wait().ok().flatten().is_none() {
            if Instant::now() > deadline {
                let _ = self.child.kill();
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.wait();
    }
}

/// When each victim was seen running during a clean sync, from its start.
type Windows = BTreeMap<&'static str, (Duration, Duration)>;

fn watch(windows: &mut Windows, began: Instant, running: &[(&'static str, u32)]) {
    let now = began.elapsed();
    for (name, _) in running {
        windows.entry(name).or_insert((now, now)).1 = now;
    }
}

/// The processes of a running sync under `root`, by the victim each is:
/// the connectors, the platform's process (`orchestrate`), and `root`
/// itself (the supervisor) while any of them runs.
fn victims(root: u32, supervisor: &'static str, platform: &'static str) -> Vec<(&'static str, u32)> {
    let mut found: Vec<(&'static str, u32)> = descendants(root)
        .into_iter()
        .filter_map(|(pid, cmd)| {
            let name = if cmd.contains("source-faker") {
                "source"
            } else if cmd.contains("destination-jsonl") {
                "destination"
            } else if cmd.contains(" orchestrate ") {
                platform
            } else {
                return None;
            };
            Some((name, pid))
        })
        .collect();
    if !found.is_empty() {
        found.push((supervisor, root));
    }
    found
}

/// SIGKILLs `victim` at a random moment of the window it ran in during the
/// clean sync (`began` is this sync's start), looking again while it is
/// not running yet; `Err` from `running` means the sync is over. Whether a
/// kill landed.
fn kill_within(windows: &Windows, victim: &str, began: Instant, random: &mut Random, mut running: impl FnMut() -> Result<Vec<(&'static str, u32)>, ()>) -> bool {
    let (from, to) = windows.get(victim).copied().unwrap_or_default();
    let at = from + (to - from).mul_f64(random.below(1000) as f64 / 1000.0);
    if let Some(wait) = (began + at).checked_duration_since(Instant::now()) {
        std::thread::sleep(wait);
    }
    let deadline = began + to + Duration::from_secs(2);
    loop {
        match running() {
            Err(()) => return false,
            Ok(now) => match now.iter().find(|(name, _)| *name == victim) {
                Some((_, pid)) => return unsafe { libc::kill(*pid as i32, libc::SIGKILL) } == 0,
                None if Instant::now() > deadline => return false,
                None => std::thread::sleep(Duration::from_millis(5)),
            },
        }
    }
}

/// The processes under `pid` (children, grandchildren ...), with their command lines.
fn descendants(pid: u32) -> Vec<(u32, String)> {
    let mut all = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(p) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default();
        let ppid = stat.rsplit(')').next().and_then(|rest| rest.split_whitespace().nth(1)).and_then(|v| v.parse::<u32>().ok());
        let cmdline = std::fs::read(format!("/proc/{p}/cmdline")).unwrap_or_default();
        all.push((p, ppid.unwrap_or(0), String::from_utf8_lossy(&cmdline).replace('\0', " ")));
    }
    let mut found: Vec<(u32, String)> = Vec::new();
    let mut parents = vec![pid];
    while let Some(parent) = parents.pop() {
        for (p, ppid, cmd) in &all {
            if *ppid == parent {
                found.push((*p, cmd.clone()));
                parents.push(*p);
            }
        }
    }
    found
}

/// The user ids in a destination-jsonl file, and its lines that are no JSON.
fn ids_in(file: &Path) -> (Vec<u64>, usize) {
    let Ok(f) = File::open(file) else { return (Vec::new(), 0) };
    let (mut ids, mut torn) = (Vec::new(), 0);
    for line in BufReader::new(f).lines().map_while(Result::ok) {
        match serde_json::from_str::<Value>(&line).ok().and_then(|v| v["_airbyte_data"]["id"].as_u64()) {
            Some(id) => ids.push(id),
            None => torn += 1,
        }
    }
    (ids, torn)
}

/// After a successful sync: ids 1..=count, each exactly once.
fn check_exactly_once(file: &Path, count: u64, what: &str, problems: &mut Vec<String>) {
    let (mut ids, torn) = ids_in(file);
    ids.sort_unstable();
    let mut seen = vec![0u32; count as usize + 1];
    let mut strangers = 0;
    for id in &ids {
        match seen.get_mut(*id as usize) {
            Some(n) if *id > 0 => *n += 1,
            _ => strangers += 1,
        }
    }
    let missing: Vec<u64> = (1..=count).filter(|id| seen[*id as usize] == 0).collect();
    let duplicated: Vec<u64> = (1..=count).filter(|id| seen[*id as usize] > 1).collect();
    if !missing.is_empty() || !duplicated.is_empty() || torn > 0 || strangers > 0 {
        problems.push(format!(
            "{what}: {} ids missing (first {:?}), {} duplicated (first {:?}), {torn} lines not JSON, {strangers} ids outside 1..={count} in {}",
            missing.len(),
            missing.first(),
            duplicated.len(),
            duplicated.first(),
            file.display()
        ));
    }
}

/// After a kill: every user up to the committed state is in the file
/// (the faker's cursor is 2020-01-01 plus a minute per user id).
fn check_committed_present(here: &Path, what: &str, problems: &mut Vec<String>) {
    let Ok(text) = std::fs::read_to_string(here.join("state.json")) else { return };
    let state: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    let cursor = state.as_array().into_iter().flatten().find_map(|s| s.pointer("/stream/stream_state/updated_at").cloned());
    let Some(committed) = cursor.as_ref().and_then(committed_user) else { return };
    let (ids, _) = ids_in(&here.join("out/users.jsonl"));
    let mut present = vec![false; committed as usize + 1];
    for id in ids {
        if let Some(p) = present.get_mut(id as usize) {
            *p = true;
        }
    }
    let lost = (1..=committed).filter(|id| !present[*id as usize]).count();
    if lost > 0 {
        problems.push(format!("{what}: {lost} of the {committed} committed users are not in the destination"));
    }
}

fn committed_user(cursor: &Value) -> Option<u64> {
    let seconds = match cursor {
        Value::Number(n) => n.as_i64()?,
        Value::String(s) => s.parse::<jiff::Timestamp>().ok()?.as_second(),
        _ => return None,
    };
    const JANUARY_2020: i64 = 1_577_836_800;
    let since_2020 = seconds - JANUARY_2020;
    u64::try_from(since_2020 / 60).ok()
}
