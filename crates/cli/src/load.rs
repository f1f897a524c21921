//! `sluice load`: a bounded load on a running platform's Config API.
//!
//! Requests go out open loop at a fixed rate: each one's send time is set in
//! advance and its latency counts from then, so a server that falls behind
//! shows it in the percentiles instead of slowing the generator down (the
//! "coordinated omission" of closed-loop tools). Each worker keeps its own
//! share of the schedule on its own connection, as wrk2 does: no dispatcher
//! and no shared queue, whose wake-ups cost the generator more CPU than the
//! server spends answering, on a machine the two share. `--syncs N` instead makes N
//! connections and syncs them all at once, to see jobs queue under the
//! server's `--max-running-jobs` and all succeed.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::{json, Value};

use crate::remote::{Client, Output, Target};

#[derive(clap::Args)]
pub struct LoadArgs {
    #[command(flatten)]
    target: Target,
    /// Requests per second
    #[arg(long, default_value_t = 2000)]
    rate: u32,
    /// How long to send, in seconds
    #[arg(long, default_value_t = 60)]
    seconds: u32,
    /// The share of requests that are writes (POST /jobs, round robin over
    /// the connections there are), from 0 to 1; the rest read GET /connections and GET /jobs
    #[arg(long, default_value_t = 0.0)]
    writes: f64,
    /// Threads sending requests, each on its own connection with every
    /// workers-th request of the schedule (a request that finds its worker
    /// still waiting on an earlier one goes late, and its latency says so)
    #[arg(long, default_value_t = 16)]
    workers: usize,
    /// The server's pid, to report its memory (this machine only)
    #[arg(long)]
    server_pid: Option<u32>,
    /// Instead: make N connections from Sluice's faker to /dev/null, ask for all their syncs at once, and wait for them
    #[arg(long)]
    syncs: Option<u32>,
    /// With --syncs: users each sync reads
    #[arg(long, default_value_t = 2000)]
    records: u32,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Ok,
    /// 409 to POST /jobs: the connection has a running job (one per connection).
    Busy,
    Error,
}

pub fn run(args: LoadArgs) -> anyhow::Result<i32> {
    if !(args.rate > 0 && args.seconds > 0 && (0.0..=1.0).contains(&args.writes) && args.workers > 0) {
        bail!("--rate, --seconds and --workers must be above 0, and --writes between 0 and 1");
    }
    let client = Client::connect(&args.target)?;
    match args.syncs {
        Some(n) => syncs(&client, &args, n),
        None => requests(&client, &args),
    }
}

fn requests(client: &Client, args: &LoadArgs) -> anyhow::Result<i32> {
    let connections: Vec<String> = if args.writes > 0.0 {
        let listed = client.call("GET", "/connections?limit=100", None)?;
        let ids: Vec<String> = listed["data"].as_array().into_iter().flatten().filter_map(|c| c["connectionId"].as_str().map(str::to_owned)).collect();
        if ids.is_empty() {
            bail!("--writes needs connections to start jobs on, and the platform has none; create some, or use --writes 0");
        }
        ids
    } else {
        Vec::new()
    };
    let total = args.rate as u64 * args.seconds as u64;
    let interval = Duration::from_secs_f64(1.0 / args.rate as f64);
    // Every writes-th request is a write, spread evenly.
    let write_every = if args.writes > 0.0 { (1.0 / args.writes).round().max(1.0) as u64 } else { u64::MAX };
    let results = Arc::new(Mutex::new(Vec::with_capacity(total as usize)));
    let start = Instant::now();
    let stop_at = start + Duration::from_secs(args.seconds as u64 + 30);
    let workers: Vec<_> = (0..args.workers as u64)
        .map(|first| {
            let (results, connections, stride) = (results.clone(), connections.clone(), args.workers as u64);
            let (base, token) = (client.base().to_owned(), client.token().to_owned());
            std::thread::spawn(move || {
                let agent: ureq::Agent =
                    ureq::Agent::config_builder().http_status_as_error(false).timeout_global(Some(Duration::from_secs(30))).build().into();
                let mut mine = Vec::new();
                for i in (first..total).step_by(stride as usize) {
                    let due = start + interval.mul_f64(i as f64);
                    if let Some(wait) = due.checked_duration_since(Instant::now()) {
                        std::thread::sleep(wait);
                    }
                    if Instant::now() > stop_at {
                        break;
                    }
                    let write = i % write_every == write_every - 1;
                    let outcome = if write {
                        let connection = &connections[(i / write_every) as usize % connections.len()];
                        let body = json!({"connectionId": connection, "jobType": "sync"}).to_string();
                        match agent.post(&format!("{base}/jobs")).header("authorization", &format!("Bearer {token}")).header("content-type", "application/json").send(body) {
                            Ok(r) if r.status().is_success() => Outcome::Ok,
                            Ok(r) if r.status().as_u16() == 409 => Outcome::Busy,
                            _ => Outcome::Error,
                        }
                    } else {
                        let path = if i % 2 == 0 { "/connections?limit=20" } else { "/jobs?limit=20" };
                        match agent.get(&format!("{base}{path}")).header("authorization", &format!("Bearer {token}")).call() {
                            Ok(mut r) if r.status().is_success() => {
                                let _ = r.body_mut().read_to_vec();
                                Outcome::Ok
                            }
                            _ => Outcome::Error,
                        }
                    };
                    mine.push((due.elapsed(), write, outcome));
                }
                results.lock().unwrap().extend(mine);
            })
        })
        .collect();
    for w in workers {
        let _ = w.join();
    }
    let elapsed = start.elapsed();
    let results = std::mem::take(&mut *results.lock().unwrap());

    let mut latencies: Vec<Duration> = results.iter().map(|r| r.0).collect();
    latencies.sort();
    let pick = |q: f64| latencies.get(((latencies.len() as f64 * q).ceil() as usize).saturating_sub(1)).copied().unwrap_or_default();
    let count = |f: &dyn Fn(&(Duration, bool, Outcome)) -> bool| results.iter().filter(|r| f(r)).count();
    let (writes, errors, busy) = (count(&|r| r.1), count(&|r| r.2 == Outcome::Error), count(&|r| r.2 == Outcome::Busy));
    let unsent = total as usize - results.len();
    let ms = |d: Duration| (d.as_secs_f64() * 1e5).round() / 100.0;
    let memory = args.server_pid.map(server_memory);
    let report = json!({
        "asked": {"rate": args.rate, "seconds": args.seconds, "requests": total, "writeShare": args.writes},
        "sent": results.len(),
        "unsent": unsent,
        "seconds": elapsed.as_secs_f64(),
        "ratePerSecond": results.len() as f64 / elapsed.as_secs_f64(),
        "reads": results.len() - writes,
        "writes": writes,
        "latencyMs": {"p50": ms(pick(0.50)), "p90": ms(pick(0.90)), "p99": ms(pick(0.99)), "max": ms(pick(1.0))},
        "errors": errors,
        "alreadyRunning": busy,
        "serverMemory": memory,
    });
    if client.output == Output::Json {
        println!("{report:#}");
    } else {
        println!(
            "load: {} requests in {:.1} s ({} /s asked, {:.0} /s sent): {} reads, {} writes ({} refused with 409: a job already running)",
            results.len(),
            elapsed.as_secs_f64(),
            args.rate,
            report["ratePerSecond"].as_f64().unwrap_or(0.0),
            results.len() - writes,
            writes,
            busy
        );
        let l = &report["latencyMs"];
        println!("latency from each request's scheduled time: p50 {} ms, p90 {} ms, p99 {} ms, max {} ms", l["p50"], l["p90"], l["p99"], l["max"]);
        println!("errors: {errors}{}", if unsent > 0 { format!(" (and {unsent} not sent before the deadline)") } else { String::new() });
        if let Some(m) = &memory {
            println!("server memory: {m}");
        }
    }
    Ok(if errors > 0 || unsent > 0 { 1 } else { 0 })
}

fn syncs(client: &Client, args: &LoadArgs, n: u32) -> anyhow::Result<i32> {
    let started = Instant::now();
    let workspace = client.call("POST", "/workspaces", Some(&json!({"name": format!("load {n} syncs")})))?;
    let workspace = workspace["workspaceId"].as_str().context("no workspaceId")?.to_owned();
    let actor = |kind: &str, type_key: &str, configuration: Value| -> anyhow::Result<String> {
        let mut configuration = configuration;
        configuration[format!("{kind}Type")] = json!(type_key);
        let made = client.call("POST", &format!("/{kind}s"), Some(&json!({"name": type_key, "workspaceId": workspace, "configuration": configuration})))?;
        Ok(made[format!("{kind}Id")].as_str().context("no id")?.to_owned())
    };
    let source = actor("source", "sluice-faker", json!({"count": args.records, "records_per_slice": 500}))?;
    let destination = actor("destination", "dev-null", json!({}))?;
    let mut jobs = Vec::new();
    for i in 0..n {
        let streams = json!({"streams": [{"name": "users", "syncMode": "full_refresh_overwrite"}]});
        let c = client.call("POST", "/connections", Some(&json!({"name": format!("load {i}"), "sourceId": source, "destinationId": destination, "configurations": streams})))?;
        jobs.push(c["connectionId"].as_str().context("no connectionId")?.to_owned());
    }
    let asked = Instant::now();
    let jobs: Vec<i64> =
        jobs.iter().map(|c| client.call("POST", "/jobs", Some(&json!({"connectionId": c, "jobType": "sync"}))).map(|j| j["jobId"].as_i64().unwrap_or(-1))).collect::<Result<_, _>>()?;
    let (mut most_running, mut peak_memory) = (0usize, None);
    let ended = loop {
        let statuses: Vec<Value> = jobs.iter().map(|j| client.call("GET", &format!("/jobs/{j}"), None)).collect::<Result<_, _>>()?;
        most_running = most_running.max(statuses.iter().filter(|j| j["status"] == "running").count());
        if let Some(pid) = args.server_pid {
            peak_memory = Some(server_memory(pid));
        }
        if statuses.iter().all(|j| !["pending", "running", "incomplete"].contains(&j["status"].as_str().unwrap_or(""))) {
            break statuses;
        }
        if asked.elapsed() > Duration::from_secs(900) {
            bail!("{} of {n} jobs are still unfinished after {} s", statuses.iter().filter(|j| j["status"] != "succeeded").count(), asked.elapsed().as_secs());
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    let succeeded = ended.iter().filter(|j| j["status"] == "succeeded").count();
    let rows: u64 = ended.iter().map(|j| j["rowsSynced"].as_u64().unwrap_or(0)).sum();
    let report = json!({
        "syncs": n, "succeeded": succeeded, "rows": rows, "mostRunningAtOnce": most_running,
        "secondsFromAskingToLastEnd": asked.elapsed().as_secs_f64(), "secondsInAll": started.elapsed().as_secs_f64(),
        "serverMemory": peak_memory, "workspaceId": workspace,
    });
    if client.output == Output::Json {
        println!("{report:#}");
    } else {
        println!(
            "syncs: {succeeded} of {n} succeeded ({rows} rows), at most {most_running} running at once, {:.1} s from asking to the last end",
            asked.elapsed().as_secs_f64()
        );
        if let Some(m) = &peak_memory {
            println!("server memory: {m}");
        }
    }
    let lost = rows != n as u64 * args.records as u64;
    Ok(if succeeded == n as usize && !lost { 0 } else { 1 })
}

/// The process's resident memory now and at its peak, from /proc.
fn server_memory(pid: u32) -> Value {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib = |key: &str| status.lines().find(|l| l.starts_with(key)).and_then(|l| l.split_whitespace().nth(1)).and_then(|v| v.parse::<u64>().ok());
    json!({"rssMiB": kib("VmRSS:").map(|k| k / 1024), "peakRssMiB": kib("VmHWM:").map(|k| k / 1024)})
}
