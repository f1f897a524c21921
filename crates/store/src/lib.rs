//! The platform's storage ports, small and by capability: a handler takes
//! the narrowest one it needs. Each has an embedded adapter
//! (`sluice-store-sqlite`) and, later, an AWS one (DynamoDB, SQS); both must
//! pass the same [`contract`] tests.
//!
//! Architecture invariant: every write of a stateful record is conditional
//! on the `Version` it was read at. There is no unconditional put, so two
//! writers racing on one record cannot both win.

pub mod contract;
pub mod job_json;

use async_trait::async_trait;
use jiff::{SignedDuration, Timestamp};
use sluice_domain::{Job, JobStatus, JobType, Version, Workload};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{entity} {id} not found")]
    NotFound { entity: &'static str, id: String },
    /// The record changed since it was read; `current` is its version now.
    #[error("{entity} {id} was changed by someone else (now at version {})", current.get())]
    Conflict { entity: &'static str, id: String, current: Version },
    #[error("{entity} {id} already exists")]
    Duplicate { entity: &'static str, id: String },
    /// Connection `connection_id` already has job `job_id` running: one at a time.
    #[error("a sync is already running for connection {connection_id}: job {job_id}")]
    JobRunning { connection_id: String, job_id: i64 },
    /// The storage itself failed; the source says how.
    #[error("storage unavailable: {0}")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
}

#[async_trait]
pub trait WorkloadStore: Send + Sync {
    /// Stores a new workload (its version must be `INITIAL`); returns it at version 1.
    async fn insert_workload(&self, workload: &Workload) -> Result<Workload, StoreError>;
    async fn get_workload(&self, id: &str) -> Result<Workload, StoreError>;
    /// Writes `next` if the stored version is still `next.version`; returns it
    /// with the version bumped.
    async fn update_workload(&self, next: &Workload) -> Result<Workload, StoreError>;
    /// Active (not terminal) workloads holding `mutex_key`.
    async fn active_workloads(&self, mutex_key: &str) -> Result<Vec<Workload>, StoreError>;
    /// Active workloads whose deadline is before `now`: the monitor's work.
    async fn overdue_workloads(&self, now: Timestamp) -> Result<Vec<Workload>, StoreError>;
    /// Deletes finished workloads last changed before `before`, with what
    /// they output; returns how many. (DynamoDB does this with TTL.)
    async fn purge_finished_workloads(&self, before: Timestamp) -> Result<usize, StoreError>;
}

/// Which jobs to list, newest first.
#[derive(Debug, Clone, Default)]
pub struct JobFilter {
    pub connection_id: Option<String>,
    pub status: Option<JobStatus>,
    pub job_type: Option<JobType>,
    pub created_at_start: Option<Timestamp>,
    pub created_at_end: Option<Timestamp>,
    pub limit: usize,
    pub offset: usize,
    /// Oldest first instead of newest first: for work queues, so none starves.
    pub oldest_first: bool,
}

#[async_trait]
pub trait JobStore: Send + Sync {
    /// Creates a pending job with the next integer id, unless the connection
    /// already has a job that is not finished ([`StoreError::JobRunning`]).
    async fn create_job(&self, connection_id: &str, job_type: JobType, streams: Vec<String>, now: Timestamp) -> Result<Job, StoreError>;
    async fn get_job(&self, id: i64) -> Result<Job, StoreError>;
    /// Writes `next` if the stored version is still `next.version`.
    async fn update_job(&self, next: &Job) -> Result<Job, StoreError>;
    async fn list_jobs(&self, filter: &JobFilter) -> Result<Vec<Job>, StoreError>;
}

/// Where `airbyte_secret` values live, apart from every config table.
/// References are opaque strings the store hands out.
#[async_trait]
pub trait SecretStore: Send + Sync {
    /// Stores `value` under a new reference derived from `hint` (e.g. the
    /// source id and field path) and returns the reference.
    async fn put_secret(&self, hint: &str, value: &str) -> Result<String, StoreError>;
    async fn get_secret(&self, reference: &str) -> Result<String, StoreError>;
    async fn delete_secret(&self, reference: &str) -> Result<(), StoreError>;
}

/// A message taken from the queue, invisible to others until acknowledged
/// or until its visibility timeout passes (then it is delivered again).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub workload_id: String,
    /// Names this delivery for `acknowledge`.
    pub receipt: String,
    /// 1 on the first delivery.
    pub receive_count: u32,
}

/// The durable workload queue: once `enqueue` returns, the message survives
/// a crash, and it is delivered at least once.
#[async_trait]
pub trait WorkloadQueue: Send + Sync {
    async fn enqueue(&self, workload_id: &str, now: Timestamp) -> Result<(), StoreError>;
    async fn receive(&self, now: Timestamp, visibility: SignedDuration) -> Result<Option<Delivery>, StoreError>;
    /// Removes a delivered message. An unknown or outdated receipt (the
    /// message was delivered again since) changes nothing and is an error.
    async fn acknowledge(&self, receipt: &str) -> Result<(), StoreError>;
}

/// Kinds of configuration document: each its own table (SQLite) or key
/// prefix (DynamoDB).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DocKind {
    Workspace,
    Definition,
    Source,
    Destination,
    Connection,
    Application,
    /// A connection's committed state, keyed by connection id.
    State,
    /// A source's discovered catalog, keyed by source id.
    Catalog,
    /// What a spec, check or discover workload found, keyed by workload id.
    Output,
    /// The platform's own settings, e.g. the reference of its signing key.
    Setting,
}

impl DocKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DocKind::Workspace => "workspace",
            DocKind::Definition => "definition",
            DocKind::Source => "source",
            DocKind::Destination => "destination",
            DocKind::Connection => "connection",
            DocKind::Application => "application",
            DocKind::State => "state",
            DocKind::Catalog => "catalog",
            DocKind::Output => "output",
            DocKind::Setting => "setting",
        }
    }
}

/// A configuration document: a JSON body with the id, the workspace it
/// belongs to (for listing) and the version it was read at.
#[derive(Debug, Clone, PartialEq)]
pub struct Doc {
    pub id: String,
    pub workspace_id: Option<String>,
    pub body: serde_json::Value,
    pub version: Version,
}

/// Configuration documents, listed in creation order.
#[async_trait]
pub trait ConfigStore: Send + Sync {
    /// Stores a new document (version `INITIAL`); returns it at version 1.
    async fn insert_doc(&self, kind: DocKind, doc: &Doc) -> Result<Doc, StoreError>;
    async fn get_doc(&self, kind: DocKind, id: &str) -> Result<Doc, StoreError>;
    /// Writes `doc` if the stored version is still `doc.version`.
    async fn update_doc(&self, kind: DocKind, doc: &Doc) -> Result<Doc, StoreError>;
    /// Deletes the document if it is still at `version`.
    async fn delete_doc(&self, kind: DocKind, id: &str, version: Version) -> Result<(), StoreError>;
    /// One page, oldest first; `workspaces` empty lists every workspace's.
    async fn list_docs(&self, kind: DocKind, workspaces: &[String], limit: usize, offset: usize) -> Result<Vec<Doc>, StoreError>;
}

/// Attempt logs: appended while the attempt runs, readable meanwhile.
#[async_trait]
pub trait AttemptLogs: Send + Sync {
    async fn append(&self, job_id: i64, attempt: u32, text: &str) -> Result<(), StoreError>;
    /// The log from byte `offset`, at most `max` bytes (cut at a line end
    /// when there is one), and the offset to read from next.
    async fn read(&self, job_id: i64, attempt: u32, offset: u64, max: usize) -> Result<(String, u64), StoreError>;
    /// Deletes the logs of jobs last written before `cutoff`; returns how many.
    async fn delete_older_than(&self, cutoff: Timestamp) -> Result<usize, StoreError>;
}

/// Where connections' cron schedules live: an in-process ticker, or
/// EventBridge Scheduler. Each fire starts a sync job for the connection.
#[async_trait]
pub trait Schedules: Send + Sync {
    /// Creates or replaces the connection's schedule.
    async fn put_schedule(&self, connection_id: &str, schedule: &sluice_domain::CronSchedule) -> Result<(), StoreError>;
    /// Removes it; removing a schedule that does not exist is fine.
    async fn delete_schedule(&self, connection_id: &str) -> Result<(), StoreError>;
    /// Why this adapter cannot run `schedule`, if it cannot (EventBridge
    /// fires on whole minutes only): the API refuses such a connection.
    fn refuse(&self, _schedule: &sluice_domain::CronSchedule) -> Option<String> {
        None
    }
    /// Asks for the scheduler to run at `at`, when job `job_id`'s next
    /// attempt is due (a retry after backoff). On one machine the scheduler
    /// loop looks every second, so there is nothing to arrange.
    async fn retry_at(&self, _job_id: i64, _attempt: usize, _at: Timestamp) -> Result<(), StoreError> {
        Ok(())
    }
}

/// What happened to a job or its connection, for notifications: webhooks
/// on one machine, EventBridge on AWS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobEventKind {
    Started,
    Succeeded,
    Failed,
    Cancelled,
    /// The platform disabled the connection (a schema change), with the reason.
    ConnectionDisabled,
}

impl JobEventKind {
    /// The event's name, e.g. `job.succeeded`.
    pub fn name(self) -> &'static str {
        match self {
            JobEventKind::Started => "job.started",
            JobEventKind::Succeeded => "job.succeeded",
            JobEventKind::Failed => "job.failed",
            JobEventKind::Cancelled => "job.cancelled",
            JobEventKind::ConnectionDisabled => "connection.disabled",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct JobEvent {
    pub kind: JobEventKind,
    pub connection_id: String,
    /// The job it happened to, or during (none for a connection disabled
    /// by a schema check someone asked for).
    pub job: Option<Job>,
    pub reason: Option<String>,
}

impl JobEvent {
    pub fn of_job(kind: JobEventKind, job: Job) -> Self {
        JobEvent { kind, connection_id: job.connection_id.clone(), job: Some(job), reason: None }
    }

    /// The event as delivered: its name, the connection, and the job with its totals.
    pub fn to_json(&self) -> serde_json::Value {
        let mut out = serde_json::json!({"event": self.kind.name(), "connectionId": self.connection_id});
        if let Some(job) = &self.job {
            let (rows, bytes) = job.total_committed();
            let failure = job.attempts.iter().rev().find_map(|a| a.failure.as_ref()).map(|f| f.message.clone());
            let fields = serde_json::json!({
                "jobId": job.id,
                "jobType": job.job_type.as_str(),
                "status": job.status.as_str(),
                "attempts": job.attempts.len(),
                "rowsSynced": rows,
                "bytesSynced": bytes,
                "failure": failure,
                "at": job.updated_at.to_string(),
            });
            out.as_object_mut().expect("object").extend(fields.as_object().expect("object").clone());
        }
        if let Some(reason) = &self.reason {
            out["reason"] = serde_json::Value::String(reason.clone());
        }
        out
    }

    /// What it is about, for logs: `job 12` or `connection <id>`.
    pub fn subject(&self) -> String {
        match &self.job {
            Some(job) => format!("job {}", job.id),
            None => format!("connection {}", self.connection_id),
        }
    }
}

/// Where job events go. Publishing never fails the caller: an adapter
/// retries delivery on its own time and reports what it could not deliver.
#[async_trait]
pub trait Events: Send + Sync {
    async fn publish(&self, event: JobEvent);
}

/// Events kept in memory, in order: for tests, and for reading back what a
/// service did.
#[derive(Default)]
pub struct EventLog(pub std::sync::Mutex<Vec<JobEvent>>);

#[async_trait]
impl Events for EventLog {
    async fn publish(&self, event: JobEvent) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).push(event);
    }
}
