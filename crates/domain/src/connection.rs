//! Connections: what moves from which source to which destination, and when.

use crate::cron::{CronError, CronSchedule};
use crate::TransitionError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionStatus {
    Active,
    Inactive,
    /// Deleted: kept for its history, never scheduled or changed again.
    Deprecated,
}

impl ConnectionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ConnectionStatus::Active => "active",
            ConnectionStatus::Inactive => "inactive",
            ConnectionStatus::Deprecated => "deprecated",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        use ConnectionStatus::*;
        [Active, Inactive, Deprecated].into_iter().find(|s| s.as_str() == text)
    }

    /// Active and inactive switch freely; deprecated is the end.
    pub fn change_to(self, next: ConnectionStatus, id: &str) -> Result<ConnectionStatus, TransitionError> {
        match (self, next) {
            (ConnectionStatus::Deprecated, ConnectionStatus::Deprecated) => Ok(next),
            (ConnectionStatus::Deprecated, _) => {
                Err(TransitionError { entity: "connection", id: id.to_owned(), state: self.as_str(), action: "change status" })
            }
            _ => Ok(next),
        }
    }

    /// Only active connections run jobs, scheduled or requested.
    pub fn can_run_jobs(self) -> bool {
        self == ConnectionStatus::Active
    }
}

/// When a connection syncs by itself.
#[derive(Debug, Clone)]
pub enum Schedule {
    Manual,
    Cron(CronSchedule),
}

impl Schedule {
    pub fn cron(expression: &str, time_zone: &str) -> Result<Schedule, CronError> {
        Ok(Schedule::Cron(CronSchedule::new(expression, time_zone)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deprecated_connections_stay_deprecated() {
        use ConnectionStatus::*;
        assert_eq!(Active.change_to(Inactive, "c").unwrap(), Inactive);
        assert_eq!(Inactive.change_to(Active, "c").unwrap(), Active);
        assert_eq!(Deprecated.change_to(Active, "c").unwrap_err().to_string(), "connection c is deprecated: cannot change status");
        assert!(!Inactive.can_run_jobs() && Active.can_run_jobs());
    }
}
