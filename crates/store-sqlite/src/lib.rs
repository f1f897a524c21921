//! The embedded storage: one SQLite file in WAL mode under the data
//! directory holds the records and the durable queue. Every transition is an
//! `UPDATE ... WHERE version = ?`, the same condition the DynamoDB adapter
//! puts in its `ConditionExpression`; zero rows changed is a conflict.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, TryLockError};

use async_trait::async_trait;
use jiff::{SignedDuration, Timestamp};
use rusqlite::{params, Connection, ErrorCode, OptionalExtension, Row};
use sluice_domain::{Job, JobStatus, JobType, Version, Workload, WorkloadStatus, WorkloadType};
use sluice_store::{JobFilter, JobStore};
use sluice_store::{Delivery, StoreError, WorkloadQueue, WorkloadStore};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS workloads (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    status TEXT NOT NULL,
    mutex_key TEXT,
    claimed_by TEXT,
    input TEXT NOT NULL,
    deadline_ns INTEGER NOT NULL,
    created_ns INTEGER NOT NULL,
    updated_ns INTEGER NOT NULL,
    reason TEXT,
    task_ref TEXT,
    version INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS workloads_by_mutex ON workloads (mutex_key, status);
CREATE INDEX IF NOT EXISTS workloads_by_deadline ON workloads (status, deadline_ns);
CREATE TABLE IF NOT EXISTS queue (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    workload_id TEXT NOT NULL,
    visible_ns INTEGER NOT NULL,
    receive_count INTEGER NOT NULL DEFAULT 0,
    enqueued_ns INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS queue_by_visibility ON queue (visible_ns, seq);
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    connection_id TEXT NOT NULL,
    job_type TEXT NOT NULL,
    status TEXT NOT NULL,
    streams TEXT NOT NULL,
    attempts TEXT NOT NULL,
    created_ns INTEGER NOT NULL,
    updated_ns INTEGER NOT NULL,
    retry_at_ns INTEGER,
    version INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_by_connection ON jobs (connection_id, id);
";

pub struct SqliteStore {
    /// Every write, and every read that decides a write, goes through this one connection.
    writer: Mutex<Connection>,
    /// Plain reads go on connections of their own: in WAL mode a reader
    /// sees the last commit and never waits for the writer, whose commits
    /// wait for the disk (synchronous = FULL). An API read under load must
    /// not queue behind a job's fsync.
    readers: Vec<Mutex<Connection>>,
    next_reader: AtomicUsize,
}

/// Reader connections: enough that the runtime's threads rarely share one.
const READERS: usize = 4;

/// A database error, told as its cause and what to do when it is the
/// machine's: a full disk, a read-only file system, another process's lock.
pub(crate) fn unavailable(e: rusqlite::Error) -> StoreError {
    use rusqlite::ffi::ErrorCode;
    let said = match e.sqlite_error_code() {
        Some(ErrorCode::DiskFull) => "the disk of the data directory is full: free space there (nothing was written; the database is intact)",
        Some(ErrorCode::ReadOnly) => "the data directory is read-only: make it writable again (nothing was written)",
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => {
            "another process holds a lock on the database (another `sluice up` on this data directory, or a tool that opened sluice.db): let it finish"
        }
        Some(ErrorCode::CannotOpen | ErrorCode::PermissionDenied) => "the database cannot be opened: is the data directory writable and on a local disk?",
        _ => return StoreError::Unavailable(Box::new(e)),
    };
    StoreError::Unavailable(format!("{said} ({e})").into())
}

/// Nanoseconds since the epoch; times past 2262 (SQLite's i64 limit) are
/// clamped, which only ever matters for "any time" query bounds.
fn ns(t: Timestamp) -> i64 {
    t.as_nanosecond().clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64
}

fn from_ns(value: i64) -> Timestamp {
    Timestamp::from_nanosecond(i128::from(value)).expect("stored timestamps are in range")
}

impl SqliteStore {
    /// Opens (creating if needed) the store at `path`. Writes are synced to
    /// disk before they return, so an accepted write survives a crash.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let conn = Connection::open(path).map_err(unavailable)?;
        conn.pragma_update(None, "journal_mode", "WAL").map_err(unavailable)?;
        conn.pragma_update(None, "synchronous", "FULL").map_err(unavailable)?;
        conn.busy_timeout(std::time::Duration::from_secs(5)).map_err(unavailable)?;
        conn.execute_batch(SCHEMA).map_err(unavailable)?;
        conn.execute_batch(docs::SCHEMA).map_err(unavailable)?;
        let readers = (0..READERS)
            .map(|_| {
                let reader = Connection::open(path).map_err(unavailable)?;
                reader.busy_timeout(std::time::Duration::from_secs(5)).map_err(unavailable)?;
                reader.pragma_update(None, "query_only", true).map_err(unavailable)?;
                Ok(Mutex::new(reader))
            })
            .collect::<Result<_, StoreError>>()?;
        Ok(SqliteStore { writer: Mutex::new(conn), readers, next_reader: AtomicUsize::new(0) })
    }

    /// Runs `f` on the writer. Its commit waits for the disk, so on a
    /// multi-threaded runtime the wait is announced (`block_in_place`): the
    /// thread's other tasks move to another thread instead of waiting too.
    pub(crate) fn with<T>(&self, f: impl FnOnce(&mut Connection) -> Result<T, StoreError>) -> Result<T, StoreError> {
        let run = || f(&mut self.writer.lock().unwrap_or_else(|poisoned| poisoned.into_inner()));
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) if runtime.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => tokio::task::block_in_place(run),
            _ => run(),
        }
    }

    /// Runs a read on a free reader connection (or waits its turn for one).
    pub(crate) fn read<T>(&self, f: impl FnOnce(&Connection) -> Result<T, StoreError>) -> Result<T, StoreError> {
        let free = self.readers.iter().find_map(|r| match r.try_lock() {
            Ok(conn) => Some(conn),
            Err(TryLockError::Poisoned(poisoned)) => Some(poisoned.into_inner()),
            Err(TryLockError::WouldBlock) => None,
        });
        let conn: MutexGuard<'_, Connection> = free.unwrap_or_else(|| {
            let turn = self.next_reader.fetch_add(1, Ordering::Relaxed) % self.readers.len();
            self.readers[turn].lock().unwrap_or_else(|poisoned| poisoned.into_inner())
        });
        f(&conn)
    }
}

const WORKLOAD_COLUMNS: &str = "id, kind, status, mutex_key, claimed_by, input, deadline_ns, created_ns, updated_ns, reason, task_ref, version";

fn workload_from_row(row: &Row<'_>) -> rusqlite::Result<Workload> {
    let text = |i: usize| row.get::<_, String>(i);
    let kind = text(1)?;
    let status = text(2)?;
    let bad = |what: &str, value: &str| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, format!("unknown workload {what} `{value}`").into())
    };
    Ok(Workload {
        id: text(0)?,
        kind: WorkloadType::parse(&kind).ok_or_else(|| bad("type", &kind))?,
        status: WorkloadStatus::parse(&status).ok_or_else(|| bad("status", &status))?,
        mutex_key: row.get(3)?,
        claimed_by: row.get(4)?,
        input: text(5)?,
        deadline: from_ns(row.get(6)?),
        created_at: from_ns(row.get(7)?),
        updated_at: from_ns(row.get(8)?),
        reason: row.get(9)?,
        task_ref: row.get(10)?,
        version: Version::new(row.get::<_, i64>(11)? as u64),
    })
}

/// The one row `sql` selects by `id`, or `NotFound`.
fn by_id<T, I: rusqlite::ToSql + ToString>(
    conn: &Connection,
    sql: &str,
    id: &I,
    entity: &'static str,
    map: impl FnOnce(&Row<'_>) -> rusqlite::Result<T>,
) -> Result<T, StoreError> {
    conn.query_row(sql, [id], map).optional().map_err(unavailable)?.ok_or_else(|| StoreError::NotFound { entity, id: id.to_string() })
}

/// What a conditional `UPDATE ... WHERE id = ? AND version = ?` that changed
/// `changed` rows means: written, or a conflict naming the current version,
/// or no such record.
fn conditional<T>(
    conn: &Connection,
    changed: usize,
    table: &str,
    entity: &'static str,
    id: &dyn rusqlite::ToSql,
    shown: String,
    written: T,
) -> Result<T, StoreError> {
    if changed == 1 {
        return Ok(written);
    }
    let current: Option<i64> =
        conn.query_row(&format!("SELECT version FROM {table} WHERE id = ?1"), [id], |r| r.get(0)).optional().map_err(unavailable)?;
    match current {
        Some(v) => Err(StoreError::Conflict { entity, id: shown, current: Version::new(v as u64) }),
        None => Err(StoreError::NotFound { entity, id: shown }),
    }
}

#[async_trait]
impl WorkloadStore for SqliteStore {
    async fn insert_workload(&self, w: &Workload) -> Result<Workload, StoreError> {
        let stored = Workload { version: Version::INITIAL.next(), ..w.clone() };
        self.with(|conn| {
            let inserted = conn.execute(
                &format!("INSERT INTO workloads ({WORKLOAD_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)"),
                params![
                    stored.id,
                    stored.kind.as_str(),
                    stored.status.as_str(),
                    stored.mutex_key,
                    stored.claimed_by,
                    stored.input,
                    ns(stored.deadline),
                    ns(stored.created_at),
                    ns(stored.updated_at),
                    stored.reason,
                    stored.task_ref,
                    stored.version.get() as i64
                ],
            );
            match inserted {
                Ok(_) => Ok(stored.clone()),
                Err(rusqlite::Error::SqliteFailure(e, _)) if e.code == ErrorCode::ConstraintViolation => {
                    Err(StoreError::Duplicate { entity: "workload", id: stored.id.clone() })
                }
                Err(e) => Err(unavailable(e)),
            }
        })
    }

    async fn get_workload(&self, id: &str) -> Result<Workload, StoreError> {
        self.read(|conn| by_id(conn, &format!("SELECT {WORKLOAD_COLUMNS} FROM workloads WHERE id = ?1"), &id, "workload", workload_from_row))
    }

    async fn update_workload(&self, next: &Workload) -> Result<Workload, StoreError> {
        let written = Workload { version: next.version.next(), ..next.clone() };
        self.with(|conn| {
            let changed = conn
                .execute(
                    "UPDATE workloads SET status = ?1, mutex_key = ?2, claimed_by = ?3, input = ?4, deadline_ns = ?5, updated_ns = ?6,
                     reason = ?7, task_ref = ?8, version = ?9 WHERE id = ?10 AND version = ?11",
                    params![
                        written.status.as_str(),
                        written.mutex_key,
                        written.claimed_by,
                        written.input,
                        ns(written.deadline),
                        ns(written.updated_at),
                        written.reason,
                        written.task_ref,
                        written.version.get() as i64,
                        written.id,
                        next.version.get() as i64
                    ],
                )
                .map_err(unavailable)?;
            conditional(conn, changed, "workloads", "workload", &next.id, next.id.clone(), written.clone())
        })
    }

    async fn active_workloads(&self, mutex_key: &str) -> Result<Vec<Workload>, StoreError> {
        self.with(|conn| {
            let mut stmt = conn
                .prepare_cached(&format!(
                    "SELECT {WORKLOAD_COLUMNS} FROM workloads WHERE mutex_key = ?1
                     AND status NOT IN ('success', 'failure', 'cancelled') ORDER BY created_ns"
                ))
                .map_err(unavailable)?;
            let rows = stmt.query_map([mutex_key], workload_from_row).map_err(unavailable)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(unavailable)
        })
    }

    async fn overdue_workloads(&self, now: Timestamp) -> Result<Vec<Workload>, StoreError> {
        self.with(|conn| {
            let mut stmt = conn
                .prepare_cached(&format!(
                    "SELECT {WORKLOAD_COLUMNS} FROM workloads WHERE status NOT IN ('success', 'failure', 'cancelled')
                     AND deadline_ns < ?1 ORDER BY deadline_ns"
                ))
                .map_err(unavailable)?;
            let rows = stmt.query_map([ns(now)], workload_from_row).map_err(unavailable)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(unavailable)
        })
    }

    async fn purge_finished_workloads(&self, before: Timestamp) -> Result<usize, StoreError> {
        self.with(|conn| {
            let tx = conn.transaction().map_err(unavailable)?;
            let finished = "SELECT id FROM workloads WHERE status IN ('success', 'failure', 'cancelled') AND updated_ns < ?1";
            tx.execute(&format!("DELETE FROM docs WHERE kind = 'output' AND id IN ({finished})"), [ns(before)]).map_err(unavailable)?;
            let deleted = tx.execute(&format!("DELETE FROM workloads WHERE id IN ({finished})"), [ns(before)]).map_err(unavailable)?;
            tx.commit().map_err(unavailable)?;
            Ok(deleted)
        })
    }
}

#[async_trait]
impl WorkloadQueue for SqliteStore {
    async fn enqueue(&self, workload_id: &str, now: Timestamp) -> Result<(), StoreError> {
        self.with(|conn| {
            conn.execute("INSERT INTO queue (workload_id, visible_ns, enqueued_ns) VALUES (?1, ?2, ?2)", params![workload_id, ns(now)])
                .map(|_| ())
                .map_err(unavailable)
        })
    }

    async fn receive(&self, now: Timestamp, visibility: SignedDuration) -> Result<Option<Delivery>, StoreError> {
        let hidden_until = ns(now.checked_add(visibility).unwrap_or(now));
        self.with(|conn| {
            // One statement: picking and hiding a message cannot interleave with another receiver.
            conn.query_row(
                "UPDATE queue SET visible_ns = ?1, receive_count = receive_count + 1
                 WHERE seq = (SELECT seq FROM queue WHERE visible_ns <= ?2 ORDER BY seq LIMIT 1)
                 RETURNING seq, workload_id, receive_count",
                params![hidden_until, ns(now)],
                |r| {
                    let (seq, workload_id, count): (i64, String, i64) = (r.get(0)?, r.get(1)?, r.get(2)?);
                    Ok(Delivery { workload_id, receipt: format!("{seq}.{count}"), receive_count: count as u32 })
                },
            )
            .optional()
            .map_err(unavailable)
        })
    }

    async fn acknowledge(&self, receipt: &str) -> Result<(), StoreError> {
        let not_found = || StoreError::NotFound { entity: "queue receipt", id: receipt.to_owned() };
        let (seq, count) = receipt.split_once('.').ok_or_else(not_found)?;
        let (seq, count): (i64, i64) = (seq.parse().map_err(|_| not_found())?, count.parse().map_err(|_| not_found())?);
        self.with(|conn| {
            let deleted = conn.execute("DELETE FROM queue WHERE seq = ?1 AND receive_count = ?2", params![seq, count]).map_err(unavailable)?;
            if deleted == 1 { Ok(()) } else { Err(not_found()) }
        })
    }
}

mod docs;

mod logs;
mod secrets;

pub use logs::FileLogs;
pub use secrets::FileSecrets;

const JOB_COLUMNS: &str = "id, connection_id, job_type, status, streams, attempts, created_ns, updated_ns, retry_at_ns, version";
const UNFINISHED: &str = "status IN ('pending', 'running', 'incomplete')";

fn job_from_row(row: &Row<'_>) -> rusqlite::Result<Job> {
    let bad = |i: usize, what: String| rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, what.into());
    let job_type: String = row.get(2)?;
    let status: String = row.get(3)?;
    let streams: String = row.get(4)?;
    let attempts: String = row.get(5)?;
    Ok(Job {
        id: row.get(0)?,
        connection_id: row.get(1)?,
        job_type: JobType::parse(&job_type).ok_or_else(|| bad(2, format!("unknown job type `{job_type}`")))?,
        status: JobStatus::parse(&status).ok_or_else(|| bad(3, format!("unknown job status `{status}`")))?,
        streams: serde_json::from_str(&streams).map_err(|e| bad(4, e.to_string()))?,
        attempts: sluice_store::job_json::attempts_from_json(&attempts).map_err(|e| bad(5, e))?,
        created_at: from_ns(row.get(6)?),
        updated_at: from_ns(row.get(7)?),
        retry_at: row.get::<_, Option<i64>>(8)?.map(from_ns),
        version: Version::new(row.get::<_, i64>(9)? as u64),
    })
}

#[async_trait]
impl JobStore for SqliteStore {
    async fn create_job(&self, connection_id: &str, job_type: JobType, streams: Vec<String>, now: Timestamp) -> Result<Job, StoreError> {
        self.with(|conn| {
            // One transaction: the check for an unfinished job and the insert.
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).map_err(unavailable)?;
            let running: Option<i64> = tx
                .query_row(&format!("SELECT id FROM jobs WHERE connection_id = ?1 AND {UNFINISHED} LIMIT 1"), [connection_id], |r| r.get(0))
                .optional()
                .map_err(unavailable)?;
            if let Some(job_id) = running {
                return Err(StoreError::JobRunning { connection_id: connection_id.to_owned(), job_id });
            }
            let job = Job::new(0, connection_id, job_type, streams, now);
            tx.execute(
                "INSERT INTO jobs (connection_id, job_type, status, streams, attempts, created_ns, updated_ns, retry_at_ns, version)
                 VALUES (?1, ?2, ?3, ?4, '[]', ?5, ?5, NULL, 1)",
                params![connection_id, job_type.as_str(), job.status.as_str(), serde_json::to_string(&job.streams).expect("strings"), ns(now)],
            )
            .map_err(unavailable)?;
            let id = tx.last_insert_rowid();
            tx.commit().map_err(unavailable)?;
            Ok(Job { id, version: Version::new(1), ..job })
        })
    }

    async fn get_job(&self, id: i64) -> Result<Job, StoreError> {
        self.read(|conn| by_id(conn, &format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?1"), &id, "job", job_from_row))
    }

    async fn update_job(&self, next: &Job) -> Result<Job, StoreError> {
        let written = Job { version: next.version.next(), ..next.clone() };
        self.with(|conn| {
            let changed = conn
                .execute(
                    "UPDATE jobs SET status = ?1, streams = ?2, attempts = ?3, updated_ns = ?4, retry_at_ns = ?5, version = ?6
                     WHERE id = ?7 AND version = ?8",
                    params![
                        written.status.as_str(),
                        serde_json::to_string(&written.streams).expect("strings"),
                        sluice_store::job_json::attempts_to_json(&written.attempts),
                        ns(written.updated_at),
                        written.retry_at.map(ns),
                        written.version.get() as i64,
                        written.id,
                        next.version.get() as i64
                    ],
                )
                .map_err(unavailable)?;
            conditional(conn, changed, "jobs", "job", &next.id, next.id.to_string(), written.clone())
        })
    }

    async fn list_jobs(&self, filter: &JobFilter) -> Result<Vec<Job>, StoreError> {
        self.read(|conn| {
            let mut stmt = conn
                .prepare_cached(&format!(
                    "SELECT {JOB_COLUMNS} FROM jobs
                     WHERE (?1 IS NULL OR connection_id = ?1) AND (?2 IS NULL OR status = ?2) AND (?3 IS NULL OR job_type = ?3)
                       AND (?4 IS NULL OR created_ns >= ?4) AND (?5 IS NULL OR created_ns <= ?5)
                     ORDER BY id {} LIMIT ?6 OFFSET ?7",
                    if filter.oldest_first { "ASC" } else { "DESC" }
                ))
                .map_err(unavailable)?;
            let rows = stmt
                .query_map(
                    params![
                        filter.connection_id,
                        filter.status.map(JobStatus::as_str),
                        filter.job_type.map(JobType::as_str),
                        filter.created_at_start.map(ns),
                        filter.created_at_end.map(ns),
                        filter.limit as i64,
                        filter.offset as i64
                    ],
                    job_from_row,
                )
                .map_err(unavailable)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(unavailable)
        })
    }
}
