//! Attempt logs on CloudWatch Logs: one stream per attempt,
//! `<job>/<attempt>`, in our log group. An offset counts the events
//! already read, so following a log is asking again from there.

use async_trait::async_trait;
use aws_sdk_cloudwatchlogs::types::InputLogEvent;
use aws_sdk_cloudwatchlogs::Client;
use jiff::Timestamp;
use sluice_store::{AttemptLogs, StoreError};

pub struct CloudWatchLogs {
    client: Client,
    group: String,
}

fn failed(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(Box::new(std::io::Error::other(e.to_string())))
}

fn stream(job_id: i64, attempt: u32) -> String {
    format!("{job_id}/{attempt}")
}

impl CloudWatchLogs {
    pub fn new(config: &aws_config::SdkConfig, group: &str) -> Self {
        CloudWatchLogs { client: Client::new(config), group: group.to_owned() }
    }
}

#[async_trait]
impl AttemptLogs for CloudWatchLogs {
    async fn append(&self, job_id: i64, attempt: u32, text: &str) -> Result<(), StoreError> {
        let name = stream(job_id, attempt);
        match self.client.create_log_stream().log_group_name(&self.group).log_stream_name(&name).send().await {
            Ok(_) => {}
            Err(e) if e.as_service_error().is_some_and(|s| s.is_resource_already_exists_exception()) => {}
            Err(e) => return Err(failed(aws_sdk_cloudwatchlogs::error::DisplayErrorContext(e))),
        }
        let now = Timestamp::now().as_millisecond();
        let events: Vec<InputLogEvent> = text
            .lines()
            .filter(|l| !l.is_empty())
            .map(|line| InputLogEvent::builder().timestamp(now).message(line).build())
            .collect::<Result<_, _>>()
            .map_err(failed)?;
        if events.is_empty() {
            return Ok(());
        }
        self.client
            .put_log_events()
            .log_group_name(&self.group)
            .log_stream_name(&name)
            .set_log_events(Some(events))
            .send()
            .await
            .map_err(|e| failed(aws_sdk_cloudwatchlogs::error::DisplayErrorContext(e)))?;
        Ok(())
    }

    async fn read(&self, job_id: i64, attempt: u32, offset: u64, max: usize) -> Result<(String, u64), StoreError> {
        let mut lines = Vec::new();
        let mut seen = 0u64;
        let mut size = 0usize;
        let mut token: Option<String> = None;
        loop {
            let page = self
                .client
                .get_log_events()
                .log_group_name(&self.group)
                .log_stream_name(stream(job_id, attempt))
                .start_from_head(true)
                .set_next_token(token.clone())
                .send()
                .await;
            let page = match page {
                Ok(p) => p,
                Err(e) if e.as_service_error().is_some_and(|s| s.is_resource_not_found_exception()) => return Ok((String::new(), offset)),
                Err(e) => return Err(failed(aws_sdk_cloudwatchlogs::error::DisplayErrorContext(e))),
            };
            let events = page.events.unwrap_or_default();
            for event in &events {
                if seen >= offset {
                    let line = event.message().unwrap_or_default();
                    if size + line.len() + 1 > max && !lines.is_empty() {
                        return Ok((lines.join(""), seen));
                    }
                    size += line.len() + 1;
                    lines.push(format!("{line}\n"));
                }
                seen += 1;
            }
            // The same forward token twice means the end of the stream.
            let next = page.next_forward_token;
            if events.is_empty() || next == token {
                return Ok((lines.join(""), seen.max(offset)));
            }
            token = next;
        }
    }

    async fn delete_older_than(&self, _cutoff: Timestamp) -> Result<usize, StoreError> {
        // The log group's retention policy (set by provisioning) expires them.
        Ok(0)
    }
}
