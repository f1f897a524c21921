//! Workloads: one unit of work a task runs (spec, check, discover, sync),
//! with Airbyte's state machine and deadlines.
//!
//! pending -> claimed -> launched -> running -> success | failure | cancelled.
//! Terminal states are final; repeating the call that reached one is a
//! no-op. Heartbeats are accepted only while running. Deadlines: claim and
//! launch within 30 minutes of creation; launched, running and each
//! heartbeat push the deadline 10 minutes on. The monitor fails a workload
//! past its deadline.

use jiff::{SignedDuration, Timestamp};

use crate::{TransitionError, Version};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkloadType {
    Spec,
    Check,
    Discover,
    Sync,
}

impl WorkloadType {
    pub fn as_str(self) -> &'static str {
        match self {
            WorkloadType::Spec => "spec",
            WorkloadType::Check => "check",
            WorkloadType::Discover => "discover",
            WorkloadType::Sync => "sync",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        use WorkloadType::*;
        [Spec, Check, Discover, Sync].into_iter().find(|t| t.as_str() == text)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WorkloadStatus {
    Pending,
    Claimed,
    Launched,
    Running,
    Success,
    Failure,
    Cancelled,
}

impl WorkloadStatus {
    pub fn as_str(self) -> &'static str {
        use WorkloadStatus::*;
        match self {
            Pending => "pending",
            Claimed => "claimed",
            Launched => "launched",
            Running => "running",
            Success => "success",
            Failure => "failure",
            Cancelled => "cancelled",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        use WorkloadStatus::*;
        [Pending, Claimed, Launched, Running, Success, Failure, Cancelled].into_iter().find(|s| s.as_str() == text)
    }

    pub fn is_terminal(self) -> bool {
        matches!(self, WorkloadStatus::Success | WorkloadStatus::Failure | WorkloadStatus::Cancelled)
    }

    pub fn is_active(self) -> bool {
        !self.is_terminal()
    }
}

pub const CLAIM_AND_LAUNCH_WINDOW: SignedDuration = SignedDuration::from_mins(30);
pub const HEARTBEAT_WINDOW: SignedDuration = SignedDuration::from_mins(10);

/// How far each step pushes a workload's deadline: Airbyte's by default,
/// shorter in tests that watch the monitor at work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadlines {
    pub heartbeat: SignedDuration,
}

impl Default for Deadlines {
    fn default() -> Self {
        Deadlines { heartbeat: HEARTBEAT_WINDOW }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workload {
    /// `<connection>_<job>_<attempt>_sync` for syncs, as Airbyte names them.
    pub id: String,
    pub kind: WorkloadType,
    pub status: WorkloadStatus,
    /// At most one active workload per key (a connection's syncs share one).
    pub mutex_key: Option<String>,
    /// Who claimed it: a launcher's id.
    pub claimed_by: Option<String>,
    /// The workload's input, opaque here: the task plan's parameters.
    pub input: String,
    pub deadline: Timestamp,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    /// Why it failed or was cancelled.
    pub reason: Option<String>,
    /// The task running it (an ECS task ARN, a local process group).
    pub task_ref: Option<String>,
    pub version: Version,
}

/// The moves a workload can make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WorkloadEvent {
    Claim { by: String },
    Launched { task_ref: Option<String> },
    Running,
    Heartbeat,
    Succeed,
    Fail { reason: String },
    Cancel { reason: String },
}

impl WorkloadEvent {
    fn name(&self) -> &'static str {
        match self {
            WorkloadEvent::Claim { .. } => "claim",
            WorkloadEvent::Launched { .. } => "mark launched",
            WorkloadEvent::Running => "mark running",
            WorkloadEvent::Heartbeat => "heartbeat",
            WorkloadEvent::Succeed => "succeed",
            WorkloadEvent::Fail { .. } => "fail",
            WorkloadEvent::Cancel { .. } => "cancel",
        }
    }
}

impl Workload {
    pub fn new(id: String, kind: WorkloadType, mutex_key: Option<String>, input: String, now: Timestamp) -> Workload {
        Workload {
            id,
            kind,
            status: WorkloadStatus::Pending,
            mutex_key,
            claimed_by: None,
            input,
            deadline: now.checked_add(CLAIM_AND_LAUNCH_WINDOW).expect("far from the end of time"),
            created_at: now,
            updated_at: now,
            reason: None,
            task_ref: None,
            version: Version::INITIAL,
        }
    }

    /// Applies one event. `Ok(None)` means nothing changes (a repeated
    /// terminal call, or a claim by the launcher that already holds it).
    pub fn apply(&self, event: &WorkloadEvent, now: Timestamp) -> Result<Option<Workload>, TransitionError> {
        self.apply_within(event, now, Deadlines::default())
    }

    /// [`Workload::apply`] with deadlines of one's own.
    pub fn apply_within(&self, event: &WorkloadEvent, now: Timestamp, deadlines: Deadlines) -> Result<Option<Workload>, TransitionError> {
        use WorkloadStatus::*;
        let refuse = || TransitionError { entity: "workload", id: self.id.clone(), state: self.status.as_str(), action: event.name() };
        let mut next = self.clone();
        next.updated_at = now;
        let extend = |w: &mut Workload| w.deadline = now.checked_add(deadlines.heartbeat).expect("far from the end of time");
        match (self.status, event) {
            (Pending, WorkloadEvent::Claim { by }) => {
                next.status = Claimed;
                next.claimed_by = Some(by.clone());
            }
            (Claimed | Launched | Running, WorkloadEvent::Claim { by }) if self.claimed_by.as_ref() == Some(by) => return Ok(None),
            (Claimed, WorkloadEvent::Launched { task_ref }) => {
                next.status = Launched;
                next.task_ref = task_ref.clone();
                extend(&mut next);
            }
            (Claimed | Launched, WorkloadEvent::Running) => {
                next.status = Running;
                extend(&mut next);
            }
            (Running, WorkloadEvent::Running) => return Ok(None),
            (Running, WorkloadEvent::Heartbeat) => extend(&mut next),
            (Claimed | Launched | Running, WorkloadEvent::Succeed) => next.status = Success,
            (Pending | Claimed | Launched | Running, WorkloadEvent::Fail { reason }) => {
                next.status = Failure;
                next.reason = Some(reason.clone());
            }
            (Pending | Claimed | Launched | Running, WorkloadEvent::Cancel { reason }) => {
                next.status = Cancelled;
                next.reason = Some(reason.clone());
            }
            (Success, WorkloadEvent::Succeed) | (Failure, WorkloadEvent::Fail { .. }) | (Cancelled, WorkloadEvent::Cancel { .. }) => {
                return Ok(None)
            }
            _ => return Err(refuse()),
        }
        Ok(Some(next))
    }

    /// Past its deadline while still active: the monitor fails it.
    pub fn is_overdue(&self, now: Timestamp) -> bool {
        self.status.is_active() && self.deadline < now
    }

    /// What the monitor says when it fails an overdue workload.
    pub fn overdue_reason(&self) -> String {
        match self.status {
            WorkloadStatus::Pending => "not claimed before its deadline".into(),
            WorkloadStatus::Claimed => "not launched before its deadline".into(),
            _ => "no heartbeat before its deadline".into(),
        }
    }
}

/// The input of a sync attempt's workload: which job, which attempt.
pub fn sync_input(job_id: i64, attempt: usize, connection_id: &str) -> String {
    serde_json::json!({"jobId": job_id, "attempt": attempt, "connectionId": connection_id}).to_string()
}

impl Workload {
    /// For a sync workload, the job and the attempt it runs (from [`sync_input`]).
    pub fn job_attempt(&self) -> Option<(i64, u32)> {
        if self.kind != WorkloadType::Sync {
            return None;
        }
        let input: serde_json::Value = serde_json::from_str(&self.input).ok()?;
        Some((input["jobId"].as_i64()?, u32::try_from(input["attempt"].as_u64()?).ok()?))
    }
}

/// The id of a sync attempt's workload.
pub fn sync_workload_id(connection_id: &str, job_id: i64, attempt: u32) -> String {
    format!("{connection_id}_{job_id}_{attempt}_sync")
}

/// The connection a sync attempt's workload id names (the inverse of
/// [`sync_workload_id`]; connection ids have no underscore).
pub fn sync_workload_connection(workload_id: &str) -> Option<&str> {
    let rest = workload_id.strip_suffix("_sync")?;
    let mut parts = rest.rsplitn(3, '_');
    let (_attempt, _job, connection) = (parts.next()?, parts.next()?, parts.next()?);
    Some(connection)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + secs).unwrap()
    }

    fn step(w: &Workload, e: WorkloadEvent, at: i64) -> Workload {
        w.apply(&e, t(at)).unwrap().unwrap_or_else(|| panic!("{e:?} changed nothing"))
    }

    #[test]
    fn the_happy_path_and_its_deadlines() {
        let w = Workload::new("c_1_0_sync".into(), WorkloadType::Sync, Some("c".into()), "{}".into(), t(0));
        assert_eq!(w.deadline, t(1800));
        let w = step(&w, WorkloadEvent::Claim { by: "launcher-a".into() }, 5);
        assert_eq!(w.deadline, t(1800), "claiming does not extend the deadline");
        assert_eq!(w.apply(&WorkloadEvent::Claim { by: "launcher-a".into() }, t(6)).unwrap(), None, "a repeated claim is idempotent");
        assert!(w.apply(&WorkloadEvent::Claim { by: "launcher-b".into() }, t(6)).is_err(), "another launcher cannot take it");
        let w = step(&w, WorkloadEvent::Launched { task_ref: Some("task/1".into()) }, 10);
        assert_eq!(w.deadline, t(610));
        let w = step(&w, WorkloadEvent::Running, 20);
        let w = step(&w, WorkloadEvent::Heartbeat, 300);
        assert_eq!(w.deadline, t(900));
        assert!(!w.is_overdue(t(900)) && w.is_overdue(t(901)));
        let w = step(&w, WorkloadEvent::Succeed, 400);
        assert_eq!(w.status, WorkloadStatus::Success);
        assert!(!w.is_overdue(t(100_000)), "finished workloads are never overdue");
    }

    #[test]
    fn terminal_states_are_final_and_repeats_are_no_ops() {
        let w = Workload::new("w".into(), WorkloadType::Check, None, String::new(), t(0));
        let failed = step(&w, WorkloadEvent::Fail { reason: "superseded".into() }, 1);
        assert_eq!(failed.apply(&WorkloadEvent::Fail { reason: "again".into() }, t(2)).unwrap(), None);
        let err = failed.apply(&WorkloadEvent::Succeed, t(2)).unwrap_err();
        assert_eq!(err.to_string(), "workload w is failure: cannot succeed");
        assert!(failed.apply(&WorkloadEvent::Heartbeat, t(2)).is_err());
        assert!(w.apply(&WorkloadEvent::Heartbeat, t(2)).is_err(), "no heartbeat before running");
        assert!(w.apply(&WorkloadEvent::Succeed, t(2)).is_err(), "an unclaimed workload cannot succeed");
    }

    #[test]
    fn overdue_reasons_name_the_missed_step() {
        let w = Workload::new("w".into(), WorkloadType::Sync, None, String::new(), t(0));
        assert_eq!(w.overdue_reason(), "not claimed before its deadline");
        assert_eq!(sync_workload_id("conn", 7, 2), "conn_7_2_sync");
        assert_eq!(sync_workload_connection("conn-1_7_2_sync"), Some("conn-1"));
        assert_eq!(sync_workload_connection("spec_abc"), None);
    }
}
