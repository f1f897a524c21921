//! Jobs and their attempts, with Airbyte's lifecycle and retry rules.
//!
//! A job runs attempts until one succeeds, the retry budget is spent, or it
//! is cancelled. Every change is a pure function from the job as read to the
//! job to write; the store writes it only if the job's version is unchanged.

use jiff::{SignedDuration, Timestamp};

use crate::{TransitionError, Version};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JobType {
    Sync,
    Reset,
    Clear,
    Refresh,
}

impl JobType {
    pub fn as_str(self) -> &'static str {
        match self {
            JobType::Sync => "sync",
            JobType::Reset => "reset",
            JobType::Clear => "clear",
            JobType::Refresh => "refresh",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [JobType::Sync, JobType::Reset, JobType::Clear, JobType::Refresh].into_iter().find(|t| t.as_str() == text)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JobStatus {
    Pending,
    Running,
    /// An attempt failed and another will follow.
    Incomplete,
    Failed,
    Succeeded,
    Cancelled,
}

impl JobStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Pending => "pending",
            JobStatus::Running => "running",
            JobStatus::Incomplete => "incomplete",
            JobStatus::Failed => "failed",
            JobStatus::Succeeded => "succeeded",
            JobStatus::Cancelled => "cancelled",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        use JobStatus::*;
        [Pending, Running, Incomplete, Failed, Succeeded, Cancelled].into_iter().find(|s| s.as_str() == text)
    }

    pub fn is_terminal(self) -> bool {
        matches!(self, JobStatus::Failed | JobStatus::Succeeded | JobStatus::Cancelled)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptStatus {
    Running,
    Failed,
    Succeeded,
}

impl AttemptStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            AttemptStatus::Running => "running",
            AttemptStatus::Failed => "failed",
            AttemptStatus::Succeeded => "succeeded",
        }
    }
}

/// Counts of one attempt, for one stream or in total.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncStats {
    pub records_emitted: u64,
    pub bytes_emitted: u64,
    pub records_committed: u64,
    pub bytes_committed: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamStats {
    pub namespace: Option<String>,
    pub name: String,
    pub stats: SyncStats,
}

/// Why an attempt failed, in a form users and retry rules can read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailureReason {
    /// source, destination, orchestrator, platform.
    pub origin: String,
    /// config_error, system_error, transient_error, or the orchestrator's kind.
    pub failure_type: String,
    pub message: String,
    pub stream: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    /// 0, 1, 2 ... as Airbyte numbers them.
    pub number: u32,
    pub status: AttemptStatus,
    pub started_at: Timestamp,
    pub ended_at: Option<Timestamp>,
    pub workload_id: String,
    pub stats: SyncStats,
    pub streams: Vec<StreamStats>,
    pub failure: Option<FailureReason>,
    /// How its records travelled, as the launcher chose.
    pub data_channel: Option<crate::channel::ChannelChoice>,
}

impl Attempt {
    /// A failed attempt that committed state made progress: a partial failure.
    pub fn made_progress(&self) -> bool {
        self.stats.records_committed > 0
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    pub id: i64,
    pub connection_id: String,
    pub job_type: JobType,
    pub status: JobStatus,
    /// For reset, clear and refresh: the streams concerned (empty: all).
    pub streams: Vec<String>,
    pub attempts: Vec<Attempt>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    /// When the next attempt may start, after a failure with backoff.
    pub retry_at: Option<Timestamp>,
    pub version: Version,
}

/// Airbyte's retry budget and backoff. A complete failure made no progress;
/// a partial failure committed some state and resets the successive count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    pub max_successive_complete_failures: u32,
    pub max_total_complete_failures: u32,
    pub max_total_partial_failures: u32,
    pub backoff_initial: SignedDuration,
    pub backoff_factor: i32,
    pub backoff_max: SignedDuration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_successive_complete_failures: 5,
            max_total_complete_failures: 10,
            max_total_partial_failures: 20,
            backoff_initial: SignedDuration::from_secs(10),
            backoff_factor: 3,
            backoff_max: SignedDuration::from_mins(30),
        }
    }
}

/// What follows a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    After(SignedDuration),
    GiveUp,
}

impl RetryPolicy {
    /// Decides from the attempts so far, the last of which just failed.
    pub fn decide(&self, attempts: &[Attempt]) -> Retry {
        let failed: Vec<&Attempt> = attempts.iter().filter(|a| a.status == AttemptStatus::Failed).collect();
        let complete = failed.iter().filter(|a| !a.made_progress()).count() as u32;
        let partial = failed.len() as u32 - complete;
        let successive = failed.iter().rev().take_while(|a| !a.made_progress()).count() as u32;
        if complete >= self.max_total_complete_failures
            || successive >= self.max_successive_complete_failures
            || partial >= self.max_total_partial_failures
        {
            return Retry::GiveUp;
        }
        if successive == 0 {
            // After progress, retry at once: the next attempt resumes from the new state.
            return Retry::After(SignedDuration::ZERO);
        }
        let mut backoff = self.backoff_initial;
        for _ in 1..successive {
            backoff = backoff.checked_mul(self.backoff_factor).unwrap_or(self.backoff_max);
            if backoff >= self.backoff_max {
                break;
            }
        }
        Retry::After(backoff.min(self.backoff_max))
    }
}

impl Job {
    pub fn new(id: i64, connection_id: &str, job_type: JobType, streams: Vec<String>, now: Timestamp) -> Job {
        Job {
            id,
            connection_id: connection_id.to_owned(),
            job_type,
            status: JobStatus::Pending,
            streams,
            attempts: Vec::new(),
            created_at: now,
            updated_at: now,
            retry_at: None,
            version: Version::INITIAL,
        }
    }

    fn refuse(&self, action: &'static str) -> TransitionError {
        TransitionError { entity: "job", id: self.id.to_string(), state: self.status.as_str(), action }
    }

    pub fn running_attempt(&self) -> Option<&Attempt> {
        self.attempts.last().filter(|a| a.status == AttemptStatus::Running)
    }

    /// Starts the next attempt: from pending, or incomplete once its backoff has passed.
    pub fn start_attempt(&self, workload_id: String, now: Timestamp) -> Result<Job, TransitionError> {
        let ready = match self.status {
            JobStatus::Pending => true,
            JobStatus::Incomplete => self.retry_at.is_none_or(|at| at <= now),
            _ => false,
        };
        if !ready {
            return Err(self.refuse("start an attempt"));
        }
        let mut job = self.clone();
        job.attempts.push(Attempt {
            number: self.attempts.len() as u32,
            status: AttemptStatus::Running,
            started_at: now,
            ended_at: None,
            workload_id,
            stats: SyncStats::default(),
            streams: Vec::new(),
            failure: None,
            data_channel: None,
        });
        job.status = JobStatus::Running;
        job.retry_at = None;
        job.updated_at = now;
        Ok(job)
    }

    /// Notes the data channel the running attempt of `workload_id` got.
    pub fn record_data_channel(&self, workload_id: &str, choice: crate::channel::ChannelChoice, now: Timestamp) -> Result<Job, TransitionError> {
        match self.running_attempt() {
            Some(a) if a.workload_id == workload_id => {
                let mut job = self.clone();
                job.attempts.last_mut().expect("running").data_channel = Some(choice);
                job.updated_at = now;
                Ok(job)
            }
            _ => Err(self.refuse("note the data channel of an attempt that is not running")),
        }
    }

    /// Records progress of the running attempt (stats as reported so far).
    pub fn record_progress(&self, stats: SyncStats, streams: Vec<StreamStats>, now: Timestamp) -> Result<Job, TransitionError> {
        if self.status != JobStatus::Running {
            return Err(self.refuse("record progress"));
        }
        let mut job = self.clone();
        let attempt = job.attempts.last_mut().expect("a running job has an attempt");
        attempt.stats = stats;
        attempt.streams = streams;
        job.updated_at = now;
        Ok(job)
    }

    /// The running attempt succeeded: so did the job.
    pub fn attempt_succeeded(&self, stats: SyncStats, streams: Vec<StreamStats>, now: Timestamp) -> Result<Job, TransitionError> {
        if self.status == JobStatus::Succeeded {
            return Ok(self.clone());
        }
        if self.status != JobStatus::Running {
            return Err(self.refuse("succeed"));
        }
        let mut job = self.record_progress(stats, streams, now)?;
        let attempt = job.attempts.last_mut().expect("running");
        attempt.status = AttemptStatus::Succeeded;
        attempt.ended_at = Some(now);
        job.status = JobStatus::Succeeded;
        Ok(job)
    }

    /// The running attempt failed: the job retries (incomplete, with a
    /// backoff) or fails, by the policy.
    pub fn attempt_failed(
        &self,
        failure: FailureReason,
        stats: SyncStats,
        streams: Vec<StreamStats>,
        policy: &RetryPolicy,
        now: Timestamp,
    ) -> Result<Job, TransitionError> {
        if self.status != JobStatus::Running {
            return Err(self.refuse("fail an attempt"));
        }
        let mut job = self.record_progress(stats, streams, now)?;
        let attempt = job.attempts.last_mut().expect("running");
        attempt.status = AttemptStatus::Failed;
        attempt.ended_at = Some(now);
        attempt.failure = Some(failure);
        match policy.decide(&job.attempts) {
            Retry::After(wait) => {
                job.status = JobStatus::Incomplete;
                job.retry_at = Some(now.checked_add(wait).unwrap_or(now));
            }
            Retry::GiveUp => job.status = JobStatus::Failed,
        }
        Ok(job)
    }

    /// Cancels the job; a running attempt ends as failed. Cancelling a
    /// cancelled job changes nothing.
    pub fn cancel(&self, now: Timestamp) -> Result<Job, TransitionError> {
        match self.status {
            JobStatus::Cancelled => Ok(self.clone()),
            JobStatus::Failed | JobStatus::Succeeded => Err(self.refuse("cancel")),
            _ => {
                let mut job = self.clone();
                if let Some(attempt) = job.attempts.last_mut().filter(|a| a.status == AttemptStatus::Running) {
                    attempt.status = AttemptStatus::Failed;
                    attempt.ended_at = Some(now);
                    attempt.failure = Some(FailureReason {
                        origin: "platform".into(),
                        failure_type: "manual_cancellation".into(),
                        message: "the job was cancelled".into(),
                        stream: None,
                    });
                }
                job.status = JobStatus::Cancelled;
                job.retry_at = None;
                job.updated_at = now;
                Ok(job)
            }
        }
    }

    /// Totals over every attempt, as the API's job response reports them.
    pub fn total_committed(&self) -> (u64, u64) {
        self.attempts.iter().fold((0, 0), |(rows, bytes), a| (rows + a.stats.records_committed, bytes + a.stats.bytes_committed))
    }

    /// Wall time from creation to the last change, for the API's `duration`.
    pub fn duration(&self) -> SignedDuration {
        self.updated_at.duration_since(self.created_at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + secs).unwrap()
    }

    fn failure() -> FailureReason {
        FailureReason { origin: "source".into(), failure_type: "system_error".into(), message: "boom".into(), stream: None }
    }

    fn fail(job: &Job, committed: u64, at: Timestamp) -> Job {
        let stats = SyncStats { records_committed: committed, ..Default::default() };
        job.attempt_failed(failure(), stats, vec![], &RetryPolicy::default(), at).unwrap()
    }

    #[test]
    fn a_job_runs_attempts_until_one_succeeds() {
        let job = Job::new(1, "c", JobType::Sync, vec![], t(0));
        assert_eq!(job.status, JobStatus::Pending);
        let job = job.start_attempt("w0".into(), t(1)).unwrap();
        assert_eq!((job.status, job.attempts[0].number), (JobStatus::Running, 0));
        assert!(job.start_attempt("again".into(), t(2)).is_err(), "one attempt at a time");

        let job = fail(&job, 0, t(3));
        assert_eq!(job.status, JobStatus::Incomplete);
        assert_eq!(job.retry_at, Some(t(13)), "10 s backoff after a complete failure");
        assert!(job.start_attempt("w1".into(), t(5)).is_err(), "not before the backoff");
        let job = job.start_attempt("w1".into(), t(13)).unwrap();
        let stats = SyncStats { records_committed: 5, ..Default::default() };
        let job = job.attempt_succeeded(stats.clone(), vec![], t(20)).unwrap();
        assert_eq!(job.status, JobStatus::Succeeded);
        assert_eq!(job.attempts[1].status, AttemptStatus::Succeeded);
        assert_eq!(job.attempt_succeeded(stats, vec![], t(21)).unwrap(), job, "repeating success is a no-op");
        assert!(job.cancel(t(22)).is_err(), "a finished job stays finished");
    }

    #[test]
    fn backoff_triples_and_partial_failures_retry_at_once() {
        let policy = RetryPolicy::default();
        let attempt = |progress: u64| Attempt {
            number: 0,
            status: AttemptStatus::Failed,
            started_at: t(0),
            ended_at: None,
            workload_id: String::new(),
            stats: SyncStats { records_committed: progress, ..Default::default() },
            streams: vec![],
            data_channel: None,
            failure: None,
        };
        let waits: Vec<Retry> = (1..=5).map(|n| policy.decide(&vec![attempt(0); n])).collect();
        let secs = |s| Retry::After(SignedDuration::from_secs(s));
        assert_eq!(waits, vec![secs(10), secs(30), secs(90), secs(270), Retry::GiveUp], "5 successive complete failures end it");
        assert_eq!(policy.decide(&[attempt(0), attempt(0), attempt(7)]), secs(0), "progress retries at once");
        let mut history = vec![attempt(0); 4];
        history.push(attempt(1));
        history.extend(vec![attempt(0); 4]);
        assert_eq!(policy.decide(&history), secs(270), "a partial failure resets the successive count");
        history.extend([attempt(1), attempt(0)]);
        assert_eq!(policy.decide(&history), secs(10), "9 complete failures, 1 successive");
        history.push(attempt(0));
        assert_eq!(policy.decide(&history), Retry::GiveUp, "10 complete failures in total end it");
        assert_eq!(policy.decide(&vec![attempt(3); 20]), Retry::GiveUp, "20 partial failures end it");
        let long = RetryPolicy { max_successive_complete_failures: 50, max_total_complete_failures: 50, ..RetryPolicy::default() };
        assert_eq!(long.decide(&vec![attempt(0); 12]), Retry::After(SignedDuration::from_mins(30)), "capped at 30 min");
    }

    #[test]
    fn cancel_ends_the_running_attempt_and_is_idempotent() {
        let job = Job::new(2, "c", JobType::Sync, vec![], t(0)).start_attempt("w".into(), t(1)).unwrap();
        let cancelled = job.cancel(t(2)).unwrap();
        assert_eq!(cancelled.status, JobStatus::Cancelled);
        assert_eq!(cancelled.attempts[0].status, AttemptStatus::Failed);
        assert_eq!(cancelled.cancel(t(3)).unwrap(), cancelled);
        assert!(cancelled.start_attempt("w2".into(), t(4)).is_err());
        let err = cancelled.attempt_succeeded(SyncStats::default(), vec![], t(5)).unwrap_err();
        assert_eq!(err.to_string(), "job 2 is cancelled: cannot succeed");
    }
}
