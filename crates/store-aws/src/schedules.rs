//! The schedules port on EventBridge Scheduler: one schedule per
//! connection in our group, named by the connection id, firing the
//! scheduler function with `{"connectionId": ...}`.

use async_trait::async_trait;
use aws_sdk_scheduler::types::{ActionAfterCompletion, FlexibleTimeWindow, FlexibleTimeWindowMode, ScheduleState, Target};
use aws_sdk_scheduler::Client;
use sluice_domain::CronSchedule;
use sluice_store::{Schedules, StoreError};

/// What a schedule invokes, and the role it assumes to do so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleTarget {
    pub function_arn: String,
    pub role_arn: String,
}

pub struct EventBridgeSchedules {
    client: Client,
    group: String,
    target: ScheduleTarget,
}

fn failed(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(Box::new(std::io::Error::other(e.to_string())))
}

impl EventBridgeSchedules {
    pub fn new(config: &aws_config::SdkConfig, group: &str, target: ScheduleTarget) -> Self {
        EventBridgeSchedules { client: Client::new(config), group: group.to_owned(), target }
    }

    /// The schedule as stored: its expression, time zone and target input.
    pub async fn describe(&self, connection_id: &str) -> Result<Option<(String, String, String)>, StoreError> {
        match self.client.get_schedule().group_name(&self.group).name(connection_id).send().await {
            Ok(got) => Ok(Some((
                got.schedule_expression.unwrap_or_default(),
                got.schedule_expression_timezone.unwrap_or_default(),
                got.target.and_then(|t| t.input).unwrap_or_default(),
            ))),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_resource_not_found_exception()) => Ok(None),
            Err(e) => Err(failed(aws_sdk_scheduler::error::DisplayErrorContext(e))),
        }
    }
}

#[async_trait]
impl Schedules for EventBridgeSchedules {
    async fn put_schedule(&self, connection_id: &str, schedule: &CronSchedule) -> Result<(), StoreError> {
        let expression = sluice_domain::to_eventbridge(&schedule.expression).map_err(|e| failed(format!("connection {connection_id}: {e}")))?;
        let input = serde_json::json!({"connectionId": connection_id, "source": "schedule"}).to_string();
        let target = Target::builder().arn(&self.target.function_arn).role_arn(&self.target.role_arn).input(input).build().map_err(failed)?;
        let window = FlexibleTimeWindow::builder().mode(FlexibleTimeWindowMode::Off).build().map_err(failed)?;
        let created = self
            .client
            .create_schedule()
            .group_name(&self.group)
            .name(connection_id)
            .schedule_expression(&expression)
            .schedule_expression_timezone(&schedule.time_zone)
            .flexible_time_window(window.clone())
            .target(target.clone())
            .state(ScheduleState::Enabled)
            .send()
            .await;
        match created {
            Ok(_) => Ok(()),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_conflict_exception()) => {
                self.client
                    .update_schedule()
                    .group_name(&self.group)
                    .name(connection_id)
                    .schedule_expression(&expression)
                    .schedule_expression_timezone(&schedule.time_zone)
                    .flexible_time_window(window)
                    .target(target)
                    .state(ScheduleState::Enabled)
                    .send()
                    .await
                    .map_err(|e| failed(aws_sdk_scheduler::error::DisplayErrorContext(e)))?;
                Ok(())
            }
            Err(e) => Err(failed(aws_sdk_scheduler::error::DisplayErrorContext(e))),
        }
    }

    async fn delete_schedule(&self, connection_id: &str) -> Result<(), StoreError> {
        match self.client.delete_schedule().group_name(&self.group).name(connection_id).send().await {
            Ok(_) => Ok(()),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_resource_not_found_exception()) => Ok(()),
            Err(e) => Err(failed(aws_sdk_scheduler::error::DisplayErrorContext(e))),
        }
    }

    /// A one-time `at()` schedule that deletes itself once it has fired.
    async fn retry_at(&self, job_id: i64, attempt: usize, at: jiff::Timestamp) -> Result<(), StoreError> {
        let when = at.strftime("%Y-%m-%dT%H:%M:%S").to_string();
        let input = serde_json::json!({"jobId": job_id, "source": "retry"}).to_string();
        let target = Target::builder().arn(&self.target.function_arn).role_arn(&self.target.role_arn).input(input).build().map_err(failed)?;
        let window = FlexibleTimeWindow::builder().mode(FlexibleTimeWindowMode::Off).build().map_err(failed)?;
        let created = self
            .client
            .create_schedule()
            .group_name(&self.group)
            .name(format!("retry-{job_id}-{attempt}"))
            .schedule_expression(format!("at({when})"))
            .schedule_expression_timezone("UTC")
            .action_after_completion(ActionAfterCompletion::Delete)
            .flexible_time_window(window)
            .target(target)
            .send()
            .await;
        match created {
            // Asked twice for the same retry: once is enough.
            Ok(_) => Ok(()),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_conflict_exception()) => Ok(()),
            Err(e) => Err(failed(aws_sdk_scheduler::error::DisplayErrorContext(e))),
        }
    }

    fn refuse(&self, schedule: &CronSchedule) -> Option<String> {
        sluice_domain::to_eventbridge(&schedule.expression).err().map(|e| e.to_string())
    }
}
