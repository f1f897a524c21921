//! The workload queue on SQS: at-least-once delivery with a visibility
//! timeout, receipts that go stale on redelivery, a dead-letter queue
//! behind it (set up by `provision`).

use async_trait::async_trait;
use aws_sdk_sqs::types::MessageSystemAttributeName;
use aws_sdk_sqs::Client;
use jiff::{SignedDuration, Timestamp};
use sluice_store::{Delivery, StoreError, WorkloadQueue};

pub struct SqsQueue {
    client: Client,
    url: String,
}

fn failed(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(Box::new(std::io::Error::other(e.to_string())))
}

impl SqsQueue {
    pub fn new(config: &aws_config::SdkConfig, url: String) -> Self {
        SqsQueue { client: Client::new(config), url }
    }

    /// The queue's URL from its name.
    pub async fn url_of(config: &aws_config::SdkConfig, name: &str) -> Result<String, StoreError> {
        let got = Client::new(config).get_queue_url().queue_name(name).send().await.map_err(|e| failed(aws_sdk_sqs::error::DisplayErrorContext(e)))?;
        got.queue_url.ok_or_else(|| failed(format!("SQS gave no URL for queue {name}")))
    }
}

#[async_trait]
impl WorkloadQueue for SqsQueue {
    async fn enqueue(&self, workload_id: &str, _now: Timestamp) -> Result<(), StoreError> {
        self.client.send_message().queue_url(&self.url).message_body(workload_id).send().await.map_err(|e| failed(aws_sdk_sqs::error::DisplayErrorContext(e)))?;
        Ok(())
    }

    /// SQS keeps its own clock: `now` is not used, `visibility` is rounded
    /// up to whole seconds.
    async fn receive(&self, _now: Timestamp, visibility: SignedDuration) -> Result<Option<Delivery>, StoreError> {
        let seconds = visibility.as_secs().max(if visibility.subsec_nanos() > 0 { 1 } else { 0 }) as i32;
        let received = self
            .client
            .receive_message()
            .queue_url(&self.url)
            .max_number_of_messages(1)
            .visibility_timeout(seconds)
            .wait_time_seconds(0)
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .send()
            .await
            .map_err(|e| failed(aws_sdk_sqs::error::DisplayErrorContext(e)))?;
        let Some(message) = received.messages.unwrap_or_default().into_iter().next() else { return Ok(None) };
        let receive_count = message
            .attributes()
            .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
            .and_then(|c| c.parse().ok())
            .unwrap_or(1);
        Ok(Some(Delivery {
            workload_id: message.body.unwrap_or_default(),
            receipt: message.receipt_handle.ok_or_else(|| failed("SQS delivered a message without a receipt handle"))?,
            receive_count,
        }))
    }

    async fn acknowledge(&self, receipt: &str) -> Result<(), StoreError> {
        self.client.delete_message().queue_url(&self.url).receipt_handle(receipt).send().await.map_err(|e| failed(aws_sdk_sqs::error::DisplayErrorContext(e)))?;
        Ok(())
    }
}
