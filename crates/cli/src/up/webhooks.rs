//! The events port on one machine: each job event is POSTed as JSON to the
//! notification URLs of the connection's workspace, in the background, with
//! retries (1 s, 5 s, 25 s) for a receiver that is down or answers 5xx.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sluice_domain::resources::{Connection, Workspace};
use sluice_store::{ConfigStore, DocKind, Events, JobEvent};

pub struct Webhooks {
    pub config: Arc<dyn ConfigStore>,
    pub agent: ureq::Agent,
}

impl Webhooks {
    pub fn new(config: Arc<dyn ConfigStore>) -> Self {
        let agent = ureq::Agent::config_builder().http_status_as_error(false).timeout_global(Some(Duration::from_secs(10))).build().into();
        Webhooks { config, agent }
    }

    async fn urls(&self, connection_id: &str) -> Vec<String> {
        let Ok(doc) = self.config.get_doc(DocKind::Connection, connection_id).await else { return Vec::new() };
        let Ok(connection) = serde_json::from_value::<Connection>(doc.body) else { return Vec::new() };
        let Ok(doc) = self.config.get_doc(DocKind::Workspace, &connection.workspace_id).await else { return Vec::new() };
        serde_json::from_value::<Workspace>(doc.body).map(|w| w.notification_urls).unwrap_or_default()
    }
}

const BACKOFF: [Duration; 3] = [Duration::from_secs(1), Duration::from_secs(5), Duration::from_secs(25)];

#[async_trait]
impl Events for Webhooks {
    async fn publish(&self, event: JobEvent) {
        let urls = self.urls(&event.connection_id).await;
        if urls.is_empty() {
            return;
        }
        let body = event.to_json().to_string();
        for url in urls {
            let (agent, body, name) = (self.agent.clone(), body.clone(), event.kind.name());
            // Delivery is the receiver's pace, never the job's.
            tokio::spawn(async move {
                for (attempt, pause) in std::iter::once(Duration::ZERO).chain(BACKOFF).enumerate() {
                    tokio::time::sleep(pause).await;
                    let (agent, url2, body) = (agent.clone(), url.clone(), body.clone());
                    let sent = tokio::task::spawn_blocking(move || {
                        agent.post(&url2).header("content-type", "application/json").header("x-sluice-event", name).send(body).map(|r| r.status().as_u16())
                    })
                    .await;
                    match sent {
                        Ok(Ok(status)) if status < 500 => return,
                        Ok(Ok(status)) => sluice_protocol::say!("sluice: webhook {url} answered {status} to {name} (try {})", attempt + 1),
                        Ok(Err(e)) => sluice_protocol::say!("sluice: webhook {url} unreachable for {name} (try {}): {e}", attempt + 1),
                        Err(e) => sluice_protocol::say!("sluice: webhook {url}: {e}"),
                    }
                }
                sluice_protocol::say!("sluice: gave up delivering {name} to {url}");
            });
        }
    }
}
