//! The platform's services: what the scheduler and the workload API do,
//! written once over the ports so that `sluice up` and the Lambda functions
//! share it. Time comes in as an argument; every write is conditional, and a
//! lost race is re-read and re-decided, never overwritten.

pub mod catalog;
pub mod schema;

use jiff::Timestamp;
use sluice_domain::{
    sync_workload_id, FailureReason, Job, JobType, RetryPolicy, StreamStats, SyncStats, TransitionError, Workload, WorkloadEvent, WorkloadType,
};
use sluice_domain::{AttemptStatus, JobStatus};
use sluice_store::{Events, JobEvent, JobEventKind, JobFilter, JobStore, StoreError, WorkloadQueue, WorkloadStore};

/// How often a write that lost a race is re-read and tried again.
const MAX_RACES: usize = 5;

#[derive(Debug, thiserror::Error)]
pub enum PlatformError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Transition(#[from] TransitionError),
    #[error("{0} kept changing under us; try again")]
    Contended(String),
}

/// The ports the services use.
pub struct Ports<'a> {
    pub jobs: &'a dyn JobStore,
    pub workloads: &'a dyn WorkloadStore,
    pub queue: &'a dyn WorkloadQueue,
    pub deadlines: sluice_domain::Deadlines,
    pub events: &'a dyn Events,
    /// At most this many jobs run at once; the rest wait, pending, in the
    /// order they were asked for (Airbyte's MAX_SYNC_WORKERS). None: no limit.
    pub max_running_jobs: Option<usize>,
}

/// Applies one event to a workload: read, decide, write if unchanged. A
/// repeated terminal call changes nothing and returns the workload as it is.
pub async fn workload_event(ports: &Ports<'_>, id: &str, event: &WorkloadEvent, now: Timestamp) -> Result<Workload, PlatformError> {
    for _ in 0..MAX_RACES {
        let current = ports.workloads.get_workload(id).await?;
        let Some(next) = current.apply_within(event, now, ports.deadlines)? else { return Ok(current) };
        match ports.workloads.update_workload(&next).await {
            Err(StoreError::Conflict { .. }) => continue,
            other => return Ok(other?),
        }
    }
    Err(PlatformError::Contended(format!("workload {id}")))
}

/// Starts a job for a connection and its first attempt: the job, its sync
/// workload (superseding any other active workload of the connection), and
/// the queue message that gets it launched.
pub async fn start_job(ports: &Ports<'_>, connection_id: &str, job_type: JobType, streams: Vec<String>, now: Timestamp) -> Result<Job, PlatformError> {
    let job = ports.jobs.create_job(connection_id, job_type, streams, now).await?;
    // Under a limit, the scheduler's sweep alone starts jobs, oldest first:
    // one starter keeps the count, and no job jumps the queue.
    if ports.max_running_jobs.is_some() {
        return Ok(job);
    }
    let id = job.id;
    match start_attempt(ports, job, now).await {
        // The scheduler's sweep started this pending job first: same outcome.
        Err(PlatformError::Store(StoreError::Conflict { .. })) => Ok(ports.jobs.get_job(id).await?),
        other => other,
    }
}

/// Starts the next attempt of a pending or retrying job. The order makes
/// every crash point recoverable: the workload exists before the job names
/// it, and one never enqueued is failed by the monitor at its claim
/// deadline, which retries the attempt.
pub async fn start_attempt(ports: &Ports<'_>, job: Job, now: Timestamp) -> Result<Job, PlatformError> {
    let workload_id = sync_workload_id(&job.connection_id, job.id, job.attempts.len() as u32);
    let input = sluice_domain::sync_input(job.id, job.attempts.len(), &job.connection_id);
    let workload = Workload::new(workload_id.clone(), WorkloadType::Sync, Some(job.connection_id.clone()), input, now);
    match ports.workloads.insert_workload(&workload).await {
        // A retried request already made it: carry on with the same workload.
        Ok(_) | Err(StoreError::Duplicate { .. }) => {}
        Err(e) => return Err(e.into()),
    }
    // Conditional: of two schedulers starting the same attempt, one gets here.
    let job = ports.jobs.update_job(&job.start_attempt(workload_id.clone(), now)?).await?;
    for stale in ports.workloads.active_workloads(&job.connection_id).await? {
        if stale.id != workload_id {
            workload_event(ports, &stale.id, &WorkloadEvent::Fail { reason: format!("superseded by {workload_id}") }, now).await?;
        }
    }
    ports.queue.enqueue(&workload_id, now).await?;
    if job.attempts.len() == 1 {
        ports.events.publish(JobEvent::of_job(JobEventKind::Started, job.clone())).await;
    }
    Ok(job)
}

/// How an attempt ended, as the task reports it.
pub enum AttemptEnd {
    Succeeded { stats: SyncStats, streams: Vec<StreamStats> },
    Failed { failure: FailureReason, stats: SyncStats, streams: Vec<StreamStats> },
}

/// Records the end of the attempt that ran `workload_id`: the job succeeds,
/// or retries (incomplete, with the policy's backoff), or fails. A report
/// from an attempt that is no longer the job's last changes nothing.
pub async fn finish_attempt(
    ports: &Ports<'_>,
    job_id: i64,
    workload_id: &str,
    end: &AttemptEnd,
    policy: &RetryPolicy,
    now: Timestamp,
) -> Result<Job, PlatformError> {
    for _ in 0..MAX_RACES {
        let job = ports.jobs.get_job(job_id).await?;
        if job.attempts.last().is_none_or(|a| a.workload_id != workload_id) {
            return Ok(job);
        }
        let next = match end {
            AttemptEnd::Succeeded { stats, streams } => job.attempt_succeeded(stats.clone(), streams.clone(), now)?,
            AttemptEnd::Failed { failure, stats, streams } => job.attempt_failed(failure.clone(), stats.clone(), streams.clone(), policy, now)?,
        };
        if next == job {
            return Ok(job);
        }
        let job = match ports.jobs.update_job(&next).await {
            Err(StoreError::Conflict { .. }) => continue,
            other => other?,
        };
        let kind = match job.status {
            JobStatus::Succeeded => Some(JobEventKind::Succeeded),
            JobStatus::Failed => Some(JobEventKind::Failed),
            _ => None,
        };
        if let Some(kind) = kind {
            ports.events.publish(JobEvent::of_job(kind, job.clone())).await;
        }
        return Ok(job);
    }
    Err(PlatformError::Contended(format!("job {job_id}")))
}

/// Records the running attempt's counts so far (a heartbeat's stats). A
/// report from an attempt that is no longer running changes nothing.
pub async fn record_progress(
    ports: &Ports<'_>,
    job_id: i64,
    workload_id: &str,
    stats: SyncStats,
    streams: Vec<StreamStats>,
    now: Timestamp,
) -> Result<Job, PlatformError> {
    for _ in 0..MAX_RACES {
        let job = ports.jobs.get_job(job_id).await?;
        if job.running_attempt().is_none_or(|a| a.workload_id != workload_id) {
            return Ok(job);
        }
        match ports.jobs.update_job(&job.record_progress(stats.clone(), streams.clone(), now)?).await {
            Err(StoreError::Conflict { .. }) => continue,
            other => return Ok(other?),
        }
    }
    Err(PlatformError::Contended(format!("job {job_id}")))
}

/// Notes on the running attempt of `workload_id` how its records travel,
/// as the launcher chose. An attempt that is no longer running changes nothing.
pub async fn record_data_channel(ports: &Ports<'_>, job_id: i64, workload_id: &str, choice: &sluice_domain::channel::ChannelChoice, now: Timestamp) -> Result<Job, PlatformError> {
    for _ in 0..MAX_RACES {
        let job = ports.jobs.get_job(job_id).await?;
        if job.running_attempt().is_none_or(|a| a.workload_id != workload_id) {
            return Ok(job);
        }
        match ports.jobs.update_job(&job.record_data_channel(workload_id, choice.clone(), now)?).await {
            Err(StoreError::Conflict { .. }) => continue,
            other => return Ok(other?),
        }
    }
    Err(PlatformError::Contended(format!("job {job_id}")))
}

/// Cancels a job: the job first (so no retry starts), then the workload of
/// its running attempt, which tells the task to stop. Committed state stays.
pub async fn cancel_job(ports: &Ports<'_>, job_id: i64, now: Timestamp) -> Result<Job, PlatformError> {
    for _ in 0..MAX_RACES {
        let job = ports.jobs.get_job(job_id).await?;
        let running = job.running_attempt().map(|a| a.workload_id.clone());
        let next = job.cancel(now)?;
        if next == job {
            return Ok(job);
        }
        let job = match ports.jobs.update_job(&next).await {
            Err(StoreError::Conflict { .. }) => continue,
            other => other?,
        };
        ports.events.publish(JobEvent::of_job(JobEventKind::Cancelled, job.clone())).await;
        if let Some(workload_id) = running {
            match workload_event(ports, &workload_id, &WorkloadEvent::Cancel { reason: "the job was cancelled".into() }, now).await {
                // It ended by itself meanwhile: nothing to stop.
                Ok(_) | Err(PlatformError::Transition(_)) => {}
                Err(e) => return Err(e),
            }
        }
        return Ok(job);
    }
    Err(PlatformError::Contended(format!("job {job_id}")))
}

/// The monitor's minute: fails every workload past its deadline, and the
/// job attempt it ran, which the policy then retries or ends. Returns the
/// ids of the workloads it failed.
pub async fn monitor_sweep(ports: &Ports<'_>, policy: &RetryPolicy, now: Timestamp) -> Result<Vec<String>, PlatformError> {
    let mut failed = Vec::new();
    for overdue in ports.workloads.overdue_workloads(now).await? {
        let reason = overdue.overdue_reason();
        let workload = match workload_event(ports, &overdue.id, &WorkloadEvent::Fail { reason: reason.clone() }, now).await {
            Ok(w) => w,
            // It moved on (finished, or heartbeat) since we listed it: not overdue any more.
            Err(PlatformError::Transition(_)) => continue,
            Err(e) => return Err(e),
        };
        if workload.status != sluice_domain::WorkloadStatus::Failure {
            continue;
        }
        failed.push(workload.id.clone());
        let Some((job_id, _)) = workload.job_attempt() else { continue };
        let job = ports.jobs.get_job(job_id).await?;
        let running_this = job.running_attempt().is_some_and(|a| a.workload_id == workload.id);
        if running_this {
            let last = job.attempts.last().expect("running");
            let failure = FailureReason { origin: "platform".into(), failure_type: "heartbeat_timeout".into(), message: format!("workload {}: {reason}", workload.id), stream: None };
            let end = AttemptEnd::Failed { failure, stats: last.stats.clone(), streams: last.streams.clone() };
            match finish_attempt(ports, job_id, &workload.id, &end, policy, now).await {
                // The task reported its end meanwhile: nothing left to fail.
                Ok(_) | Err(PlatformError::Transition(_)) => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(failed)
}

/// Starts the attempts that are due: jobs still pending (their first
/// attempt never started, e.g. after a crash) and retries whose backoff has
/// passed. Returns the jobs it started.
pub async fn start_due_attempts(ports: &Ports<'_>, now: Timestamp) -> Result<Vec<Job>, PlatformError> {
    let mut started = Vec::new();
    let mut free = match ports.max_running_jobs {
        Some(limit) => {
            let running = JobFilter { status: Some(JobStatus::Running), limit, ..Default::default() };
            limit.saturating_sub(ports.jobs.list_jobs(&running).await?.len())
        }
        None => usize::MAX,
    };
    for status in [JobStatus::Pending, JobStatus::Incomplete] {
        let filter = JobFilter { status: Some(status), limit: 1000, oldest_first: true, ..Default::default() };
        for job in ports.jobs.list_jobs(&filter).await? {
            let due = job.retry_at.is_none_or(|at| at <= now) && job.attempts.last().is_none_or(|a| a.status != AttemptStatus::Running);
            if !due {
                continue;
            }
            if free == 0 {
                return Ok(started);
            }
            match start_attempt(ports, job, now).await {
                Ok(job) => {
                    free -= 1;
                    started.push(job)
                }
                // Someone else started it first.
                Err(PlatformError::Store(StoreError::Conflict { .. })) => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(started)
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::SignedDuration;
    use sluice_domain::{JobStatus, WorkloadStatus};
    use sluice_store::EventLog;
    use sluice_store_sqlite::SqliteStore;

    fn t(secs: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + secs).unwrap()
    }

    fn store() -> (tempfile::TempDir, SqliteStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("sluice.db")).unwrap();
        (dir, store)
    }

    #[tokio::test]
    async fn a_job_starts_its_attempt_and_queues_its_workload() {
        let (_d, s) = store();
        let ports = Ports { jobs: &s, workloads: &s, queue: &s, deadlines: Default::default(), events: &EventLog::default(), max_running_jobs: None };
        let job = start_job(&ports, "conn", JobType::Sync, vec![], t(0)).await.unwrap();
        assert_eq!(job.status, JobStatus::Running);
        let workload_id = &job.attempts[0].workload_id;
        assert_eq!(workload_id, &format!("conn_{}_0_sync", job.id));
        let delivery = s.receive(t(1), SignedDuration::from_secs(30)).await.unwrap().unwrap();
        assert_eq!(&delivery.workload_id, workload_id);
        let refused = start_job(&ports, "conn", JobType::Sync, vec![], t(2)).await.unwrap_err();
        assert!(refused.to_string().contains(&format!("job {}", job.id)), "{refused}");
    }

    #[tokio::test]
    async fn under_a_limit_jobs_wait_pending_and_start_oldest_first_as_slots_free() {
        let (_d, s) = store();
        let ports = Ports { jobs: &s, workloads: &s, queue: &s, deadlines: Default::default(), events: &EventLog::default(), max_running_jobs: Some(2) };
        let mut jobs = Vec::new();
        for c in ["a", "b", "c"] {
            jobs.push(start_job(&ports, c, JobType::Sync, vec![], t(0)).await.unwrap());
        }
        assert!(jobs.iter().all(|j| j.status == JobStatus::Pending && j.attempts.is_empty()), "the sweep starts them, not the request");
        let started: Vec<i64> = start_due_attempts(&ports, t(1)).await.unwrap().iter().map(|j| j.id).collect();
        assert_eq!(started, [jobs[0].id, jobs[1].id], "two slots, oldest first");
        assert!(start_due_attempts(&ports, t(2)).await.unwrap().is_empty(), "none free");
        let first = s.get_job(jobs[0].id).await.unwrap();
        s.update_job(&first.cancel(t(3)).unwrap()).await.unwrap();
        let started: Vec<i64> = start_due_attempts(&ports, t(4)).await.unwrap().iter().map(|j| j.id).collect();
        assert_eq!(started, [jobs[2].id], "a slot freed");
    }

    #[tokio::test]
    async fn workload_events_are_idempotent_and_checked() {
        let (_d, s) = store();
        let ports = Ports { jobs: &s, workloads: &s, queue: &s, deadlines: Default::default(), events: &EventLog::default(), max_running_jobs: None };
        let job = start_job(&ports, "conn", JobType::Sync, vec![], t(0)).await.unwrap();
        let id = job.attempts[0].workload_id.clone();
        workload_event(&ports, &id, &WorkloadEvent::Claim { by: "launcher".into() }, t(1)).await.unwrap();
        workload_event(&ports, &id, &WorkloadEvent::Running, t(2)).await.unwrap();
        let done = workload_event(&ports, &id, &WorkloadEvent::Succeed, t(3)).await.unwrap();
        let again = workload_event(&ports, &id, &WorkloadEvent::Succeed, t(4)).await.unwrap();
        assert_eq!((done.status, again.version), (WorkloadStatus::Success, done.version), "a repeat writes nothing");
        let late = workload_event(&ports, &id, &WorkloadEvent::Heartbeat, t(5)).await.unwrap_err();
        assert!(late.to_string().contains("is success: cannot heartbeat"), "{late}");
    }

    #[tokio::test]
    async fn a_failed_attempt_retries_with_a_new_workload_that_supersedes_the_old() {
        let (_d, s) = store();
        let ports = Ports { jobs: &s, workloads: &s, queue: &s, deadlines: Default::default(), events: &EventLog::default(), max_running_jobs: None };
        let job = start_job(&ports, "conn", JobType::Sync, vec![], t(0)).await.unwrap();
        let first = job.attempts[0].workload_id.clone();
        let failure = FailureReason { origin: "source".into(), failure_type: "system_error".into(), message: "boom".into(), stream: None };
        let end = AttemptEnd::Failed { failure, stats: SyncStats::default(), streams: vec![] };
        let stale = finish_attempt(&ports, job.id, "someone_else", &end, &RetryPolicy::default(), t(5)).await.unwrap();
        assert_eq!(stale.status, JobStatus::Running, "a report from another attempt changes nothing");
        let job = finish_attempt(&ports, job.id, &first, &end, &RetryPolicy::default(), t(5)).await.unwrap();
        assert_eq!((job.status, job.retry_at), (JobStatus::Incomplete, Some(t(15))));
        let job = start_attempt(&ports, job, t(15)).await.unwrap();
        assert_eq!(job.attempts.len(), 2);
        let old = s.get_workload(&first).await.unwrap();
        assert_eq!(old.status, WorkloadStatus::Failure);
        let events = EventLog::default();
        let ports = Ports { events: &events, ..ports };
        let last = job.attempts[1].workload_id.clone();
        let end = AttemptEnd::Succeeded { stats: SyncStats::default(), streams: vec![] };
        finish_attempt(&ports, job.id, &last, &end, &RetryPolicy::default(), t(20)).await.unwrap();
        let kinds: Vec<JobEventKind> = events.0.lock().unwrap().iter().map(|e| e.kind).collect();
        assert_eq!(kinds, [JobEventKind::Succeeded], "a retry is not a new start; the end is published once");
        assert!(old.reason.unwrap().starts_with("superseded by"));
    }

    #[tokio::test]
    async fn the_monitor_fails_silent_workloads_and_the_retry_starts_when_due() {
        let (_d, s) = store();
        let ports = Ports { jobs: &s, workloads: &s, queue: &s, deadlines: Default::default(), events: &EventLog::default(), max_running_jobs: None };
        let job = start_job(&ports, "conn", JobType::Sync, vec![], t(0)).await.unwrap();
        let id = job.attempts[0].workload_id.clone();
        workload_event(&ports, &id, &WorkloadEvent::Claim { by: "l".into() }, t(1)).await.unwrap();
        workload_event(&ports, &id, &WorkloadEvent::Running, t(2)).await.unwrap();
        workload_event(&ports, &id, &WorkloadEvent::Heartbeat, t(60)).await.unwrap();
        // The deadline is 10 minutes after the last heartbeat.
        assert!(monitor_sweep(&ports, &RetryPolicy::default(), t(660)).await.unwrap().is_empty());
        let failed = monitor_sweep(&ports, &RetryPolicy::default(), t(661)).await.unwrap();
        assert_eq!(failed, std::slice::from_ref(&id));
        let job = s.get_job(job.id).await.unwrap();
        assert_eq!(job.status, JobStatus::Incomplete);
        assert_eq!(job.attempts[0].failure.as_ref().unwrap().failure_type, "heartbeat_timeout");
        assert!(start_due_attempts(&ports, t(670)).await.unwrap().is_empty(), "not before the backoff");
        let started = start_due_attempts(&ports, t(671)).await.unwrap();
        assert_eq!(started.len(), 1);
        assert_eq!(started[0].attempts.len(), 2);
        assert!(monitor_sweep(&ports, &RetryPolicy::default(), t(672)).await.unwrap().is_empty(), "a sweep again finds nothing");
    }

    #[tokio::test]
    async fn two_schedulers_starting_one_attempt_leave_one_live_workload() {
        let (_d, s) = store();
        let ports = Ports { jobs: &s, workloads: &s, queue: &s, deadlines: Default::default(), events: &EventLog::default(), max_running_jobs: None };
        let pending = s.create_job("conn", JobType::Sync, vec![], t(0)).await.unwrap();
        let first = start_attempt(&ports, pending.clone(), t(1)).await.unwrap();
        let second = start_attempt(&ports, pending, t(1)).await;
        assert!(matches!(second, Err(PlatformError::Store(StoreError::Conflict { .. }))), "{second:?}");
        let workload = s.get_workload(&first.attempts[0].workload_id).await.unwrap();
        assert_eq!(workload.status, WorkloadStatus::Pending, "the loser did not supersede the winner's workload");
    }

    #[tokio::test]
    async fn a_pending_job_left_by_a_crash_is_started() {
        let (_d, s) = store();
        let ports = Ports { jobs: &s, workloads: &s, queue: &s, deadlines: Default::default(), events: &EventLog::default(), max_running_jobs: None };
        // As if the process died between creating the job and starting its attempt.
        let job = s.create_job("conn", JobType::Sync, vec![], t(0)).await.unwrap();
        let started = start_due_attempts(&ports, t(1)).await.unwrap();
        assert_eq!(started.iter().map(|j| j.id).collect::<Vec<_>>(), [job.id]);
        assert_eq!(started[0].status, JobStatus::Running);
    }
}
