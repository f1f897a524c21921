//! The CLI's verbs over the Config API, so nobody needs curl:
//! `sluice sources list`, `sluice connections sync ID --wait`,
//! `sluice jobs logs ID --follow`, each with `--output json`.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use serde_json::{json, Value};

/// Where the API is and who we are; by default the credentials `sluice up`
/// wrote into its data directory.
#[derive(clap::Args, Clone)]
pub struct Target {
    /// The Config API's base URL (default: the one in the credentials file)
    #[arg(long, global = true, env = "SLUICE_API_URL")]
    api_url: Option<String>,
    /// A credentials file with client_id and client_secret
    #[arg(long, global = true, env = "SLUICE_CREDENTIALS", default_value = ".sluice/credentials.json")]
    credentials: PathBuf,
    /// table (default) or json
    #[arg(long, short = 'o', global = true, default_value = "table")]
    output: Output,
}

#[derive(clap::ValueEnum, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    Table,
    Json,
}

#[derive(clap::Subcommand)]
pub enum Verb {
    /// List them (newest last)
    List {
        /// Only those of this workspace
        #[arg(long)]
        workspace: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: u32,
        #[arg(long, default_value_t = 0)]
        offset: u32,
    },
    /// Show one
    Get { id: String },
    /// Create one from a JSON body (the public API's request), inline or @file
    Create {
        #[arg(long)]
        body: String,
    },
    /// Change one with a JSON body of the fields to change, inline or @file
    Update {
        id: String,
        #[arg(long)]
        body: String,
    },
    /// Delete one
    Delete { id: String },
}

#[derive(clap::Subcommand)]
pub enum SourceVerb {
    #[command(flatten)]
    Common(Verb),
    /// List the source's streams (runs discover unless cached)
    Discover {
        id: String,
        /// Discover again even if a catalog is cached
        #[arg(long)]
        refresh: bool,
    },
    /// Run the connector's check with the stored config
    Check { id: String },
}

#[derive(clap::Subcommand)]
pub enum ConnectionVerb {
    #[command(flatten)]
    Common(Verb),
    /// Start a sync job; with --wait, follow it to the end
    Sync {
        id: String,
        #[arg(long)]
        wait: bool,
    },
    /// Start a reset (or clear) job: the next sync starts from scratch
    Reset {
        id: String,
        #[arg(long)]
        wait: bool,
    },
    /// Show the state the connection resumes from
    State { id: String },
    /// Show the connection's schemaChange and the change its last check
    /// found; with --refresh, discover the source now and apply the
    /// connection's nonBreakingSchemaUpdatesBehavior, as a sync would
    Schema {
        id: String,
        #[arg(long)]
        refresh: bool,
    },
}

#[derive(clap::Subcommand)]
pub enum JobVerb {
    /// List jobs, newest first
    List {
        #[arg(long)]
        connection: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: u32,
        #[arg(long, default_value_t = 0)]
        offset: u32,
    },
    Get { id: i64 },
    /// Cancel a running job (committed state is kept)
    Cancel { id: i64 },
    /// Print an attempt's log; --follow keeps printing until the attempt ends
    Logs {
        id: i64,
        /// The attempt (default: the last)
        #[arg(long)]
        attempt: Option<u32>,
        #[arg(long)]
        follow: bool,
    },
    /// Wait for a job to end, with progress
    Wait { id: i64 },
}

#[derive(clap::Subcommand)]
pub enum DefinitionVerb {
    /// List the definitions a workspace may use
    List {
        #[arg(long)]
        workspace: String,
        /// Destinations instead of sources
        #[arg(long)]
        destinations: bool,
    },
    Get {
        id: String,
        #[arg(long)]
        workspace: String,
        #[arg(long)]
        destinations: bool,
    },
    /// Add a custom definition: `{"name", "dockerRepository", "dockerImageTag"}` for an
    /// image, or `{"name", "runtime": "pypi:<package>==<version>" | "/path"}`
    Create {
        #[arg(long)]
        workspace: String,
        #[arg(long)]
        destinations: bool,
        /// The definition as JSON, inline or @file
        #[arg(long)]
        body: String,
    },
    /// Create or update definitions from Airbyte's registry format
    /// (`oss_registry.json`: `{"sources": [...], "destinations": [...]}`), each
    /// pinned to its entry's version and run as PyAirbyte would run it:
    /// its manifest if manifest-only, else its PyPI package, else its image
    Import {
        /// The registry file (JSON)
        file: PathBuf,
        /// A manifest-only connector's manifest: NAME=PATH (`source-pokeapi=manifest.yaml`),
        /// YAML or JSON, as Airbyte publishes it; without one it runs from its image
        #[arg(long = "manifest", value_name = "NAME=PATH")]
        manifests: Vec<String>,
        /// Only these connectors (names such as `source-faker`); all by default
        #[arg(long, value_delimiter = ',')]
        only: Vec<String>,
    },
    /// Pin an imported definition to another version; breaking changes the
    /// registry marks between the two are listed
    Version {
        id: String,
        version: String,
        /// That version's manifest, for a manifest-only connector (YAML or JSON)
        #[arg(long)]
        manifest: Option<PathBuf>,
    },
    /// Create a workspace's own low-code source from a manifest (YAML or
    /// JSON), run by Airbyte's declarative runner; with --id, give an
    /// existing one a new version of its manifest
    Manifest {
        #[arg(long)]
        workspace: String,
        #[arg(long)]
        name: Option<String>,
        /// The manifest file
        file: PathBuf,
        #[arg(long)]
        id: Option<String>,
    },
}

/// A manifest file, YAML (as Airbyte publishes them) or JSON.
pub fn read_manifest(path: &std::path::Path) -> anyhow::Result<Value> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read the manifest {}", path.display()))?;
    let value: Value = serde_yaml_ng::from_str(&text).with_context(|| format!("{} is not YAML (or JSON)", path.display()))?;
    if !value.is_object() {
        bail!("{} holds no manifest: a manifest is a YAML mapping with `version`, `streams` and `spec`", path.display());
    }
    Ok(value)
}

impl Target {
    /// The platform whose credentials file (with its `api_url`) is at `credentials`.
    pub fn from_credentials(credentials: PathBuf) -> Target {
        Target { api_url: None, credentials, output: Output::Json }
    }
}

pub struct Client {
    base: String,
    token: String,
    agent: ureq::Agent,
    pub output: Output,
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder().http_status_as_error(false).timeout_global(Some(Duration::from_secs(900))).build().into()
}

impl Client {
    pub fn connect(target: &Target) -> anyhow::Result<Client> {
        let text = std::fs::read_to_string(&target.credentials).with_context(|| {
            format!(
                "cannot read the credentials file {}\n\nStart the platform with `sluice up` in this directory (it writes .sluice/credentials.json), or pass --credentials FILE",
                target.credentials.display()
            )
        })?;
        let credentials: Value = serde_json::from_str(&text).with_context(|| format!("{} is not JSON", target.credentials.display()))?;
        let field = |name: &str| credentials[name].as_str().map(str::to_owned).ok_or_else(|| anyhow!("{} has no `{name}`", target.credentials.display()));
        let base = match &target.api_url {
            Some(url) => url.trim_end_matches('/').to_owned(),
            None => field("api_url")?,
        };
        let agent = agent();
        let form = format!("grant_type=client_credentials&client_id={}&client_secret={}", field("client_id")?, field("client_secret")?);
        let unreachable = |e: ureq::Error| anyhow!("cannot reach the Sluice API at {base}: {e}\n\nIs `sluice up` running? Start it, or point --api-url at it");
        let mut response = agent.post(&format!("{base}/applications/token")).header("content-type", "application/x-www-form-urlencoded").send(form).map_err(unreachable)?;
        let body: Value = serde_json::from_str(&response.body_mut().read_to_string().unwrap_or_default()).unwrap_or(Value::Null);
        if response.status() != 200 {
            bail!("the API refused the credentials in {}: {}", target.credentials.display(), body["detail"].as_str().unwrap_or("no reason given"));
        }
        let token = body["access_token"].as_str().context("the token endpoint gave no access_token")?.to_owned();
        Ok(Client { base, token, agent, output: target.output })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    pub fn token(&self) -> &str {
        &self.token
    }

    pub fn call(&self, method: &str, path: &str, body: Option<&Value>) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.base);
        let request = ureq::http::Request::builder()
            .method(method)
            .uri(&url)
            .header("authorization", format!("Bearer {}", self.token))
            .header("content-type", "application/json");
        let sent = match body {
            Some(b) => self.agent.run(request.body(b.to_string())?),
            None => self.agent.run(request.body(())?),
        };
        let mut response = sent.map_err(|e| anyhow!("{method} {url}: {e}"))?;
        let status = response.status().as_u16();
        let text = response.body_mut().read_to_string().unwrap_or_default();
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if !(200..300).contains(&status) {
            let detail = value["detail"].as_str().map(str::to_owned).unwrap_or(text);
            bail!("{method} {path} failed ({status}): {detail}");
        }
        Ok(value)
    }

    fn print(&self, value: &Value, columns: &[&str]) {
        if self.output == Output::Json {
            println!("{}", serde_json::to_string_pretty(value).expect("JSON"));
            return;
        }
        let rows: Vec<&Value> = match value.get("data").and_then(Value::as_array) {
            Some(items) => items.iter().collect(),
            None => match value.as_array() {
                Some(items) => items.iter().collect(),
                None => vec![value],
            },
        };
        let cell = |row: &Value, c: &str| match &row[c] {
            Value::String(s) => s.clone(),
            Value::Null => "-".into(),
            other => other.to_string(),
        };
        let widths: Vec<usize> = columns.iter().map(|c| rows.iter().map(|r| cell(r, c).len()).max().unwrap_or(0).max(c.len())).collect();
        let line = |cells: Vec<String>| cells.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect::<Vec<_>>().join("  ").trim_end().to_owned();
        println!("{}", line(columns.iter().map(|c| c.to_string()).collect()));
        for row in rows {
            println!("{}", line(columns.iter().map(|c| cell(row, c)).collect()));
        }
    }
}

fn body(text: &str) -> anyhow::Result<Value> {
    let text = match text.strip_prefix('@') {
        Some(path) => std::fs::read_to_string(path).with_context(|| format!("cannot read {path}"))?,
        None => text.to_owned(),
    };
    serde_json::from_str(&text).context("--body is not valid JSON")
}

/// `list|get|create|update|delete` of one kind of resource.
pub fn common(target: &Target, path: &str, columns: &[&str], verb: Verb) -> anyhow::Result<i32> {
    let client = Client::connect(target)?;
    let value = match verb {
        Verb::List { workspace, limit, offset } => {
            let filter = workspace.map(|w| format!("&workspaceIds={w}")).unwrap_or_default();
            client.call("GET", &format!("{path}?limit={limit}&offset={offset}{filter}"), None)?
        }
        Verb::Get { id } => client.call("GET", &format!("{path}/{id}"), None)?,
        Verb::Create { body: text } => client.call("POST", path, Some(&body(&text)?))?,
        Verb::Update { id, body: text } => client.call("PATCH", &format!("{path}/{id}"), Some(&body(&text)?))?,
        Verb::Delete { id } => {
            client.call("DELETE", &format!("{path}/{id}"), None)?;
            json!({"deleted": id})
        }
    };
    client.print(&value, columns);
    Ok(0)
}

pub fn sources(target: &Target, verb: SourceVerb) -> anyhow::Result<i32> {
    match verb {
        SourceVerb::Common(verb) => common(target, "/sources", &["sourceId", "name", "sourceType", "workspaceId"], verb),
        SourceVerb::Discover { id, refresh } => {
            let client = Client::connect(target)?;
            let streams = client.call("GET", &format!("/streams?sourceId={id}&ignoreCache={refresh}"), None)?;
            if client.output == Output::Json {
                client.print(&streams, &[]);
            } else {
                let rows: Vec<Value> = streams
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|s| {
                        json!({"stream": s["streamName"], "syncModes": s["syncModes"].as_array().map(|m| m.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(",")),
                            "cursor": s["defaultCursorField"], "primaryKey": s["sourceDefinedPrimaryKey"]})
                    })
                    .collect();
                client.print(&Value::Array(rows), &["stream", "syncModes", "cursor", "primaryKey"]);
            }
            Ok(0)
        }
        SourceVerb::Check { id } => check(target, &format!("/sources/{id}/check")),
    }
}

pub fn destinations(target: &Target, verb: SourceVerb) -> anyhow::Result<i32> {
    match verb {
        SourceVerb::Common(verb) => common(target, "/destinations", &["destinationId", "name", "destinationType", "workspaceId"], verb),
        SourceVerb::Discover { .. } => bail!("destinations have no streams to discover; discover the source instead"),
        SourceVerb::Check { id } => check(target, &format!("/destinations/{id}/check")),
    }
}

fn check(target: &Target, path: &str) -> anyhow::Result<i32> {
    let client = Client::connect(target)?;
    let status = client.call("POST", path, None)?;
    client.print(&status, &["status", "message"]);
    Ok(if status["status"] == "SUCCEEDED" { 0 } else { 1 })
}

pub fn connections(target: &Target, verb: ConnectionVerb) -> anyhow::Result<i32> {
    let (id, job_type, wait) = match verb {
        ConnectionVerb::Common(verb) => return common(target, "/connections", &["connectionId", "name", "status", "sourceId", "destinationId"], verb),
        ConnectionVerb::State { id } => {
            let client = Client::connect(target)?;
            let state = client.call("GET", &format!("/connections/{id}/state"), None)?;
            println!("{}", serde_json::to_string_pretty(&state)?);
            return Ok(0);
        }
        ConnectionVerb::Schema { id, refresh } => {
            let client = Client::connect(target)?;
            let schema = if refresh {
                client.call("POST", &format!("/connections/{id}/schema/refresh"), Some(&json!({})))?
            } else {
                client.call("GET", &format!("/connections/{id}/schema"), None)?
            };
            if client.output == Output::Json {
                println!("{}", serde_json::to_string_pretty(&schema)?);
                return Ok(0);
            }
            println!("schemaChange: {} (connection {}, {})", schema["schemaChange"].as_str().unwrap_or(""), schema["status"].as_str().unwrap_or(""), schema["nonBreakingSchemaUpdatesBehavior"].as_str().unwrap_or(""));
            if let Some(reason) = schema["disabledReason"].as_str() {
                println!("disabled: {reason}");
            }
            for t in schema["catalogDiff"]["transforms"].as_array().into_iter().flatten() {
                println!("{} {}", t["transformType"].as_str().unwrap_or(""), t["streamDescriptor"]["name"].as_str().unwrap_or(""));
                for f in t["updateStream"]["fieldTransforms"].as_array().into_iter().flatten() {
                    let breaking = if f["breaking"] == true { " (breaking)" } else { "" };
                    let path: Vec<&str> = f["fieldName"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
                    println!("  {} {}{breaking}", f["transformType"].as_str().unwrap_or(""), path.join("."));
                }
                for a in t["updateStream"]["streamAttributeTransforms"].as_array().into_iter().flatten() {
                    println!("  {} {} -> {}", a["transformType"].as_str().unwrap_or(""), a["updatePrimaryKey"]["oldPrimaryKey"], a["updatePrimaryKey"]["newPrimaryKey"]);
                }
            }
            return Ok(0);
        }
        ConnectionVerb::Sync { id, wait } => (id, "sync", wait),
        ConnectionVerb::Reset { id, wait } => (id, "reset", wait),
    };
    let client = Client::connect(target)?;
    let job = client.call("POST", "/jobs", Some(&json!({"connectionId": id, "jobType": job_type})))?;
    let job_id = job["jobId"].as_i64().context("the API gave no jobId")?;
    if !wait {
        client.print(&job, &["jobId", "status", "jobType", "connectionId"]);
        return Ok(0);
    }
    follow_job(&client, job_id)
}

pub fn jobs(target: &Target, verb: JobVerb) -> anyhow::Result<i32> {
    let client = Client::connect(target)?;
    let columns = ["jobId", "status", "jobType", "connectionId", "startTime", "duration", "rowsSynced", "bytesSynced"];
    match verb {
        JobVerb::List { connection, limit, offset } => {
            let filter = connection.map(|c| format!("&connectionId={c}")).unwrap_or_default();
            client.print(&client.call("GET", &format!("/jobs?limit={limit}&offset={offset}{filter}"), None)?, &columns);
        }
        JobVerb::Get { id } => client.print(&client.call("GET", &format!("/jobs/{id}"), None)?, &columns),
        JobVerb::Cancel { id } => client.print(&client.call("DELETE", &format!("/jobs/{id}"), None)?, &columns),
        JobVerb::Wait { id } => return follow_job(&client, id),
        JobVerb::Logs { id, attempt, follow } => {
            let attempts = client.call("GET", &format!("/jobs/{id}/attempts"), None)?;
            let last = attempts["attempts"].as_array().map_or(0, |a| a.len().saturating_sub(1)) as u32;
            let attempt = attempt.unwrap_or(last);
            let mut offset = 0u64;
            loop {
                let page = client.call("GET", &format!("/jobs/{id}/attempts/{attempt}/logs?offset={offset}"), None)?;
                let text = page["text"].as_str().unwrap_or_default();
                print!("{text}");
                offset = page["nextOffset"].as_u64().unwrap_or(offset);
                if !follow || (text.is_empty() && page["attemptStatus"] != "running") {
                    break;
                }
                if text.is_empty() {
                    std::thread::sleep(Duration::from_millis(500));
                }
            }
        }
    }
    Ok(0)
}

pub fn definitions(target: &Target, verb: DefinitionVerb) -> anyhow::Result<i32> {
    let client = Client::connect(target)?;
    let kind = |destinations: bool| if destinations { "destinations" } else { "sources" };
    let value = match verb {
        DefinitionVerb::List { workspace, destinations } => client.call("GET", &format!("/workspaces/{workspace}/definitions/{}", kind(destinations)), None)?,
        DefinitionVerb::Get { id, workspace, destinations } => client.call("GET", &format!("/workspaces/{workspace}/definitions/{}/{id}", kind(destinations)), None)?,
        DefinitionVerb::Create { workspace, destinations, body: text } => {
            client.call("POST", &format!("/workspaces/{workspace}/definitions/{}", kind(destinations)), Some(&body(&text)?))?
        }
        DefinitionVerb::Import { file, manifests, only } => {
            let text = std::fs::read_to_string(&file).with_context(|| format!("cannot read the registry {}", file.display()))?;
            let mut registry: Value = serde_json::from_str(&text).with_context(|| format!("{} is not JSON", file.display()))?;
            if !only.is_empty() {
                for list in ["sources", "destinations"] {
                    if let Some(items) = registry.get_mut(list).and_then(Value::as_array_mut) {
                        items.retain(|e| e["dockerRepository"].as_str().is_some_and(|r| only.iter().any(|o| r.strip_prefix("airbyte/").unwrap_or(r) == o)));
                    }
                }
            }
            let mut given = serde_json::Map::new();
            for item in manifests {
                let (name, path) = item.split_once('=').ok_or_else(|| anyhow!("--manifest {item}: write NAME=PATH, e.g. source-pokeapi=manifest.yaml"))?;
                given.insert(name.to_owned(), read_manifest(std::path::Path::new(path))?);
            }
            registry["manifests"] = Value::Object(given);
            let report = client.call("POST", "/definitions/import", Some(&registry))?;
            if client.output == Output::Table {
                for line in report["definitions"].as_array().into_iter().flatten() {
                    println!("{} {} {} {} ({})", line["action"].as_str().unwrap_or(""), line["name"].as_str().unwrap_or(""), line["version"].as_str().unwrap_or(""), line["runtime"].as_str().unwrap_or(""), line["runtimeReason"].as_str().unwrap_or(""));
                    for change in line["breakingChanges"].as_array().into_iter().flatten() {
                        println!("  breaking change in {}: {}", change["version"].as_str().unwrap_or(""), change["message"].as_str().unwrap_or(""));
                    }
                    if let Some(note) = line["note"].as_str() {
                        println!("  {note}");
                    }
                }
                return Ok(0);
            }
            report
        }
        DefinitionVerb::Version { id, version, manifest } => {
            let mut request = json!({"version": version});
            if let Some(path) = manifest {
                request["manifest"] = read_manifest(&path)?;
            }
            let answer = client.call("POST", &format!("/definitions/{id}/version"), Some(&request))?;
            for change in answer["breakingChanges"].as_array().into_iter().flatten() {
                eprintln!("sluice: breaking change in {}: {}", change["version"].as_str().unwrap_or(""), change["message"].as_str().unwrap_or(""));
            }
            answer
        }
        DefinitionVerb::Manifest { workspace, name, file, id } => {
            let manifest = read_manifest(&file)?;
            match id {
                Some(id) => client.call("PUT", &format!("/workspaces/{workspace}/definitions/declarative_sources/{id}"), Some(&json!({"manifest": manifest})))?,
                None => {
                    let name = name.ok_or_else(|| anyhow!("a new manifest definition needs --name"))?;
                    client.call("POST", &format!("/workspaces/{workspace}/definitions/declarative_sources"), Some(&json!({"name": name, "manifest": manifest})))?
                }
            }
        }
    };
    client.print(&value, &["id", "name", "sourceType", "destinationType", "runtime"]);
    Ok(0)
}

/// Follows a job to its end: a progress line on a terminal (records,
/// bytes, rate), then a summary. Exit status 0 only if it succeeded.
fn follow_job(client: &Client, job_id: i64) -> anyhow::Result<i32> {
    let draw = std::io::stderr().is_terminal() && client.output == Output::Table;
    let started = Instant::now();
    let (mut last_records, mut last_at) = (0u64, Instant::now());
    let mut rate = 0.0;
    let job = loop {
        let job = client.call("GET", &format!("/jobs/{job_id}"), None)?;
        let status = job["status"].as_str().unwrap_or_default().to_owned();
        if ["succeeded", "failed", "cancelled"].contains(&status.as_str()) {
            break job;
        }
        if draw {
            let attempts = client.call("GET", &format!("/jobs/{job_id}/attempts"), None)?;
            let current = attempts["attempts"].as_array().and_then(|a| a.last()).cloned().unwrap_or(Value::Null);
            let records = current["recordsEmitted"].as_u64().unwrap_or(0);
            let bytes = current["bytesEmitted"].as_u64().unwrap_or(0);
            if records != last_records {
                rate = (records - last_records.min(records)) as f64 / last_at.elapsed().as_secs_f64().max(1e-3);
                (last_records, last_at) = (records, Instant::now());
            }
            eprint!(
                "\r\x1b[Kjob {job_id} {status} (attempt {}): {records} records, {:.1} MB, {:.0} records/s, {:.0}s",
                current["attempt"].as_u64().unwrap_or(0) + 1,
                bytes as f64 / 1e6,
                rate,
                started.elapsed().as_secs_f64()
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    if draw {
        eprint!("\r\x1b[K");
    }
    let attempts = client.call("GET", &format!("/jobs/{job_id}/attempts"), None)?;
    if client.output == Output::Json {
        println!("{}", serde_json::to_string_pretty(&json!({"job": job, "attempts": attempts["attempts"]}))?);
    } else {
        println!(
            "job {job_id} {}: {} records, {} bytes in {} ({} attempt(s))",
            job["status"].as_str().unwrap_or_default(),
            job["rowsSynced"],
            job["bytesSynced"],
            job["duration"].as_str().unwrap_or_default(),
            attempts["attempts"].as_array().map_or(0, Vec::len)
        );
        for attempt in attempts["attempts"].as_array().into_iter().flatten() {
            if let Some(failure) = attempt["failure"].as_object() {
                println!("  attempt {} failed: {}", attempt["attempt"], failure.get("message").and_then(Value::as_str).unwrap_or_default());
            }
        }
        if job["status"] != "succeeded" {
            println!("  see the log: sluice jobs logs {job_id}");
        }
    }
    Ok(if job["status"] == "succeeded" { 0 } else { 1 })
}
