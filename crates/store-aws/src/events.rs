//! The events port on EventBridge: job events on our own bus (source
//! `sluice`, detail type `job.succeeded` ...), for users to route with
//! ordinary rules.

use async_trait::async_trait;
use aws_sdk_eventbridge::types::PutEventsRequestEntry;
use aws_sdk_eventbridge::Client;
use sluice_store::{Events, JobEvent};

pub struct EventBridgeEvents {
    client: Client,
    bus: String,
}

/// The `source` of every event we publish.
pub const EVENT_SOURCE: &str = "sluice";

impl EventBridgeEvents {
    pub fn new(config: &aws_config::SdkConfig, bus: &str) -> Self {
        EventBridgeEvents { client: Client::new(config), bus: bus.to_owned() }
    }
}

#[async_trait]
impl Events for EventBridgeEvents {
    async fn publish(&self, event: JobEvent) {
        let entry = PutEventsRequestEntry::builder()
            .event_bus_name(&self.bus)
            .source(EVENT_SOURCE)
            .detail_type(event.kind.name())
            .detail(event.to_json().to_string())
            .resources(format!("connection/{}", event.connection_id))
            .build();
        // The SDK retries throttles itself; what still fails is reported, never the job's failure.
        match self.client.put_events().entries(entry).send().await {
            Ok(out) if out.failed_entry_count() > 0 => {
                let why: Vec<String> = out.entries().iter().filter_map(|e| e.error_message().map(str::to_owned)).collect();
                eprintln!("sluice: EventBridge refused {} of {}: {}", event.kind.name(), event.subject(), why.join("; "));
            }
            Ok(_) => {}
            Err(e) => eprintln!("sluice: could not publish {} of {}: {}", event.kind.name(), event.subject(), aws_sdk_eventbridge::error::DisplayErrorContext(e)),
        }
    }
}
