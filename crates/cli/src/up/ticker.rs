//! The schedules port on one machine: connections' cron schedules in
//! memory, loaded from the store at start (so a restart loses nothing),
//! fired by a loop with second precision.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use jiff::Timestamp;
use sluice_api::App;
use sluice_domain::resources::Connection;
use sluice_domain::{ConnectionStatus, CronSchedule, JobType, Schedule};
use sluice_store::{DocKind, Schedules, StoreError};

struct Entry {
    schedule: CronSchedule,
    next: Option<Timestamp>,
}

#[derive(Default, Clone)]
pub struct Ticker {
    entries: Arc<Mutex<HashMap<String, Entry>>>,
}

#[async_trait]
impl Schedules for Ticker {
    async fn put_schedule(&self, connection_id: &str, schedule: &CronSchedule) -> Result<(), StoreError> {
        let next = schedule.next_after(Timestamp::now());
        self.entries.lock().expect("not poisoned").insert(connection_id.to_owned(), Entry { schedule: schedule.clone(), next });
        Ok(())
    }

    async fn delete_schedule(&self, connection_id: &str) -> Result<(), StoreError> {
        self.entries.lock().expect("not poisoned").remove(connection_id);
        Ok(())
    }
}

impl Ticker {
    /// Loads the schedules of every active connection.
    pub async fn load(&self, app: &App) -> Result<usize, StoreError> {
        let mut offset = 0;
        let mut loaded = 0;
        loop {
            let docs = app.config.list_docs(DocKind::Connection, &[], 500, offset).await?;
            offset += docs.len();
            for doc in &docs {
                let Ok(c) = serde_json::from_value::<Connection>(doc.body.clone()) else { continue };
                if let (ConnectionStatus::Active, Ok(Schedule::Cron(cron))) = (c.status, c.schedule.schedule()) {
                    self.put_schedule(&c.connection_id, &cron).await?;
                    loaded += 1;
                }
            }
            if docs.len() < 500 {
                return Ok(loaded);
            }
        }
    }

    /// The connections whose schedule fell due by `now`; each moves on to
    /// its next time. Times missed while stopped are not made up.
    fn take_due(&self, now: Timestamp) -> Vec<String> {
        let mut entries = self.entries.lock().expect("not poisoned");
        let mut due = Vec::new();
        for (id, entry) in entries.iter_mut() {
            if entry.next.is_some_and(|next| next <= now) {
                due.push(id.clone());
                entry.next = entry.schedule.next_after(now);
            }
        }
        due
    }

    /// Fires due schedules until the process stops. A connection that is
    /// still syncing skips the fire, as Airbyte's scheduler does.
    pub async fn run(self, app: Arc<App>) {
        let mut interval = tokio::time::interval(Duration::from_millis(200));
        loop {
            interval.tick().await;
            for connection_id in self.take_due(Timestamp::now()) {
                match sluice_api::config::jobs::start(&app, &connection_id, JobType::Sync, Vec::new()).await {
                    Ok(job) => sluice_protocol::say!("sluice: schedule started job {} for connection {connection_id}", job.id),
                    Err(p) if p.status.as_u16() == 409 => sluice_protocol::say!("sluice: schedule skipped connection {connection_id}: {}", p.detail),
                    Err(p) => sluice_protocol::say!("sluice: schedule could not start a job for connection {connection_id}: {}", p.detail),
                }
            }
        }
    }
}
