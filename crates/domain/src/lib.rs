//! The platform's domain: jobs and attempts, workloads, connections and
//! their schedules, connector configs and their secrets. Plain data and pure transition functions, no I/O: the
//! store persists what these functions return, conditionally on `Version`.

pub mod channel;
pub mod config;
pub mod connection;
pub mod cron;
pub mod job;
pub mod registry;
pub mod resources;
pub mod workload;

pub use connection::{ConnectionStatus, Schedule};
pub use cron::{to_eventbridge, CronError, CronSchedule};
pub use job::{Attempt, AttemptStatus, FailureReason, Job, JobStatus, JobType, Retry, RetryPolicy, StreamStats, SyncStats};
pub use workload::{sync_input, sync_workload_connection, sync_workload_id, Deadlines, Workload, WorkloadEvent, WorkloadStatus, WorkloadType};

/// The version a stateful record was read at. Every write names the version
/// it expects and bumps it; a write against a stale version is a conflict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version(u64);

impl Version {
    /// A record that is not stored yet.
    pub const INITIAL: Version = Version(0);

    pub fn new(value: u64) -> Self {
        Version(value)
    }
    pub fn get(self) -> u64 {
        self.0
    }
    pub fn next(self) -> Version {
        Version(self.0 + 1)
    }
}

/// A change the lifecycle does not allow from the current state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{entity} {id} is {state}: cannot {action}")]
pub struct TransitionError {
    pub entity: &'static str,
    pub id: String,
    pub state: &'static str,
    pub action: &'static str,
}
