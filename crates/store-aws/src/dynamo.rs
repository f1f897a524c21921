//! The store on DynamoDB. Three tables, designed from the access paths:
//!
//! - config: `pk = <kind>#<id>`; GSI `by-kind` (`kind`, `seq`) lists a kind
//!   in creation order, GSI `by-workspace` (`kindWs`, `seq`) a workspace's.
//! - jobs: `pk = job#<id>` for jobs, `counter#job` hands out integer ids,
//!   `lock#<connection>` names a connection's unfinished job (created and
//!   released in the same transaction as the job). GSIs `by-connection`
//!   (`connectionId`, `id`), `by-status` (`status`, `id`), `by-all` (`entity`, `id`).
//! - workloads: `pk = <id>`; sparse GSIs over active workloads only:
//!   `by-mutex` (`activeMutex`) and `by-deadline` (`active`, `deadline`);
//!   finished ones carry `expiresAt` for TTL.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::types::{AttributeValue, Delete, Put, ReturnValue, TransactWriteItem};
use aws_sdk_dynamodb::Client;
use jiff::Timestamp;
use sluice_domain::{Job, JobStatus, JobType, Version, Workload, WorkloadStatus, WorkloadType};
use sluice_store::{ConfigStore, Doc, DocKind, JobFilter, JobStore, StoreError, WorkloadStore};

use crate::{describe, Names};

type Item = HashMap<String, AttributeValue>;

pub struct DynamoStore {
    client: Client,
    names: Names,
}

impl DynamoStore {
    pub fn new(config: &aws_config::SdkConfig, names: Names) -> Self {
        DynamoStore { client: Client::new(config), names }
    }
}

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

fn ns(t: Timestamp) -> i128 {
    t.as_nanosecond()
}

fn get_s(item: &Item, key: &str) -> Option<String> {
    item.get(key).and_then(|v| v.as_s().ok()).cloned()
}

fn get_n(item: &Item, key: &str) -> Option<i128> {
    item.get(key).and_then(|v| v.as_n().ok()).and_then(|t| t.parse().ok())
}

fn corrupt(what: &str, detail: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(Box::new(std::io::Error::other(format!("a stored {what} is unreadable: {detail}"))))
}

fn time(item: &Item, key: &str, what: &str) -> Result<Timestamp, StoreError> {
    let value = get_n(item, key).ok_or_else(|| corrupt(what, format!("no `{key}`")))?;
    Timestamp::from_nanosecond(value).map_err(|e| corrupt(what, e))
}

fn is_condition_failure<E: aws_sdk_dynamodb::error::ProvideErrorMetadata, R>(e: &SdkError<E, R>) -> bool {
    matches!(e, SdkError::ServiceError(service) if service.err().code() == Some("ConditionalCheckFailedException"))
}

/// Whether a cancelled transaction failed on a condition (rather than a
/// throttle or a conflict with another transaction), and on which items.
fn cancelled_on_condition(e: &SdkError<aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError, impl std::fmt::Debug>) -> Option<Vec<bool>> {
    let SdkError::ServiceError(service) = e else { return None };
    let aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError::TransactionCanceledException(cancelled) = service.err() else {
        return None;
    };
    Some(cancelled.cancellation_reasons().iter().map(|r| r.code() == Some("ConditionalCheckFailed")).collect())
}

// ---- configuration documents -------------------------------------------------

fn doc_key(kind: DocKind, id: &str) -> String {
    format!("{}#{id}", kind.as_str())
}

fn doc_from_item(item: &Item) -> Result<Doc, StoreError> {
    let body = get_s(item, "body").ok_or_else(|| corrupt("document", "no body"))?;
    Ok(Doc {
        id: get_s(item, "id").ok_or_else(|| corrupt("document", "no id"))?,
        workspace_id: get_s(item, "ws"),
        body: serde_json::from_str(&body).map_err(|e| corrupt("document", e))?,
        version: Version::new(get_n(item, "version").unwrap_or(0) as u64),
    })
}

impl DynamoStore {
    async fn get_item(&self, table: &str, key: &str) -> Result<Option<Item>, StoreError> {
        let got = self.client.get_item().table_name(table).key("pk", s(key)).consistent_read(true).send().await.map_err(describe)?;
        Ok(got.item)
    }

    /// Why a conditional write on `key` failed: a newer version, or no item.
    async fn refusal(&self, table: &str, key: &str, entity: &'static str, id: &str) -> StoreError {
        match self.get_item(table, key).await {
            Ok(Some(item)) => StoreError::Conflict { entity, id: id.to_owned(), current: Version::new(get_n(&item, "version").unwrap_or(0) as u64) },
            Ok(None) => StoreError::NotFound { entity, id: id.to_owned() },
            Err(e) => e,
        }
    }

    /// Every item of a query, page after page.
    async fn query_all(&self, request: aws_sdk_dynamodb::operation::query::builders::QueryFluentBuilder) -> Result<Vec<Item>, StoreError> {
        let mut items = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let page = request.clone().set_exclusive_start_key(start.take()).send().await.map_err(describe)?;
            items.extend(page.items.unwrap_or_default());
            match page.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => return Ok(items),
            }
        }
    }
}

#[async_trait]
impl ConfigStore for DynamoStore {
    async fn insert_doc(&self, kind: DocKind, doc: &Doc) -> Result<Doc, StoreError> {
        let stored = Doc { version: Version::INITIAL.next(), ..doc.clone() };
        let mut item: Item = HashMap::from([
            ("pk".to_owned(), s(doc_key(kind, &doc.id))),
            ("kind".to_owned(), s(kind.as_str())),
            ("id".to_owned(), s(&doc.id)),
            ("seq".to_owned(), n(ns(Timestamp::now()))),
            ("body".to_owned(), s(stored.body.to_string())),
            ("version".to_owned(), n(stored.version.get())),
        ]);
        if let Some(ws) = &doc.workspace_id {
            item.insert("ws".into(), s(ws));
            item.insert("kindWs".into(), s(format!("{}#{ws}", kind.as_str())));
        }
        let put = self.client.put_item().table_name(&self.names.config_table).set_item(Some(item)).condition_expression("attribute_not_exists(pk)").send().await;
        match put {
            Ok(_) => Ok(stored),
            Err(e) if is_condition_failure(&e) => Err(StoreError::Duplicate { entity: kind.as_str(), id: doc.id.clone() }),
            Err(e) => Err(describe(e)),
        }
    }

    async fn get_doc(&self, kind: DocKind, id: &str) -> Result<Doc, StoreError> {
        match self.get_item(&self.names.config_table, &doc_key(kind, id)).await? {
            Some(item) => doc_from_item(&item),
            None => Err(StoreError::NotFound { entity: kind.as_str(), id: id.to_owned() }),
        }
    }

    async fn update_doc(&self, kind: DocKind, doc: &Doc) -> Result<Doc, StoreError> {
        let written = Doc { version: doc.version.next(), ..doc.clone() };
        let mut update = self
            .client
            .update_item()
            .table_name(&self.names.config_table)
            .key("pk", s(doc_key(kind, &doc.id)))
            .condition_expression("attribute_exists(pk) AND #v = :expected")
            .expression_attribute_names("#v", "version")
            .expression_attribute_names("#b", "body")
            .expression_attribute_values(":expected", n(doc.version.get()))
            .expression_attribute_values(":next", n(written.version.get()))
            .expression_attribute_values(":body", s(written.body.to_string()));
        update = match &doc.workspace_id {
            Some(ws) => update
                .update_expression("SET #b = :body, #v = :next, ws = :ws, kindWs = :kindWs")
                .expression_attribute_values(":ws", s(ws))
                .expression_attribute_values(":kindWs", s(format!("{}#{ws}", kind.as_str()))),
            None => update.update_expression("SET #b = :body, #v = :next REMOVE ws, kindWs"),
        };
        match update.send().await {
            Ok(_) => Ok(written),
            Err(e) if is_condition_failure(&e) => Err(self.refusal(&self.names.config_table, &doc_key(kind, &doc.id), kind.as_str(), &doc.id).await),
            Err(e) => Err(describe(e)),
        }
    }

    async fn delete_doc(&self, kind: DocKind, id: &str, version: Version) -> Result<(), StoreError> {
        let deleted = self
            .client
            .delete_item()
            .table_name(&self.names.config_table)
            .key("pk", s(doc_key(kind, id)))
            .condition_expression("attribute_exists(pk) AND #v = :expected")
            .expression_attribute_names("#v", "version")
            .expression_attribute_values(":expected", n(version.get()))
            .send()
            .await;
        match deleted {
            Ok(_) => Ok(()),
            Err(e) if is_condition_failure(&e) => Err(self.refusal(&self.names.config_table, &doc_key(kind, id), kind.as_str(), id).await),
            Err(e) => Err(describe(e)),
        }
    }

    async fn list_docs(&self, kind: DocKind, workspaces: &[String], limit: usize, offset: usize) -> Result<Vec<Doc>, StoreError> {
        let table = &self.names.config_table;
        let mut items = Vec::new();
        if workspaces.is_empty() {
            let query = self
                .client
                .query()
                .table_name(table)
                .index_name("by-kind")
                .key_condition_expression("#k = :k")
                .expression_attribute_names("#k", "kind")
                .expression_attribute_values(":k", s(kind.as_str()));
            items = self.query_all(query).await?;
        } else {
            for ws in workspaces {
                let query = self
                    .client
                    .query()
                    .table_name(table)
                    .index_name("by-workspace")
                    .key_condition_expression("kindWs = :kw")
                    .expression_attribute_values(":kw", s(format!("{}#{ws}", kind.as_str())));
                items.extend(self.query_all(query).await?);
            }
        }
        items.sort_by_key(|item| get_n(item, "seq").unwrap_or(0));
        items.iter().skip(offset).take(limit).map(doc_from_item).collect()
    }
}

// ---- jobs ------------------------------------------------------------------

fn job_key(id: i64) -> String {
    format!("job#{id}")
}

fn lock_key(connection_id: &str) -> String {
    format!("lock#{connection_id}")
}

fn job_item(job: &Job) -> Item {
    let mut item: Item = HashMap::from([
        ("pk".to_owned(), s(job_key(job.id))),
        ("entity".to_owned(), s("job")),
        ("id".to_owned(), n(job.id)),
        ("connectionId".to_owned(), s(&job.connection_id)),
        ("jobType".to_owned(), s(job.job_type.as_str())),
        ("status".to_owned(), s(job.status.as_str())),
        ("streams".to_owned(), s(serde_json::to_string(&job.streams).expect("strings"))),
        ("attempts".to_owned(), s(sluice_store::job_json::attempts_to_json(&job.attempts))),
        ("created".to_owned(), n(ns(job.created_at))),
        ("updated".to_owned(), n(ns(job.updated_at))),
        ("version".to_owned(), n(job.version.get())),
    ]);
    if let Some(at) = job.retry_at {
        item.insert("retryAt".into(), n(ns(at)));
    }
    item
}

fn job_from_item(item: &Item) -> Result<Job, StoreError> {
    let text = |key: &str| get_s(item, key).ok_or_else(|| corrupt("job", format!("no `{key}`")));
    let job_type = text("jobType")?;
    let status = text("status")?;
    Ok(Job {
        id: get_n(item, "id").ok_or_else(|| corrupt("job", "no id"))? as i64,
        connection_id: text("connectionId")?,
        job_type: JobType::parse(&job_type).ok_or_else(|| corrupt("job", format!("type `{job_type}`")))?,
        status: JobStatus::parse(&status).ok_or_else(|| corrupt("job", format!("status `{status}`")))?,
        streams: serde_json::from_str(&text("streams")?).map_err(|e| corrupt("job", e))?,
        attempts: sluice_store::job_json::attempts_from_json(&text("attempts")?).map_err(|e| corrupt("job", e))?,
        created_at: time(item, "created", "job")?,
        updated_at: time(item, "updated", "job")?,
        retry_at: match get_n(item, "retryAt") {
            Some(v) => Some(Timestamp::from_nanosecond(v).map_err(|e| corrupt("job", e))?),
            None => None,
        },
        version: Version::new(get_n(item, "version").unwrap_or(0) as u64),
    })
}

impl DynamoStore {
    async fn next_job_id(&self) -> Result<i64, StoreError> {
        let updated = self
            .client
            .update_item()
            .table_name(&self.names.jobs_table)
            .key("pk", s("counter#job"))
            .update_expression("ADD #n :one")
            .expression_attribute_names("#n", "next")
            .expression_attribute_values(":one", n(1))
            .return_values(ReturnValue::UpdatedNew)
            .send()
            .await
            .map_err(describe)?;
        let attributes = updated.attributes.unwrap_or_default();
        get_n(&attributes, "next").map(|v| v as i64).ok_or_else(|| corrupt("job counter", "no value"))
    }

    fn put(&self, table: &str, item: Item, condition: &str, values: Vec<(&str, AttributeValue)>) -> Result<TransactWriteItem, StoreError> {
        let mut put = Put::builder().table_name(table).set_item(Some(item)).condition_expression(condition);
        if condition.contains("#v") {
            put = put.expression_attribute_names("#v", "version");
        }
        for (name, value) in values {
            put = put.expression_attribute_values(name, value);
        }
        Ok(TransactWriteItem::builder().put(put.build().map_err(crate::unavailable)?).build())
    }
}

#[async_trait]
impl JobStore for DynamoStore {
    async fn create_job(&self, connection_id: &str, job_type: JobType, streams: Vec<String>, now: Timestamp) -> Result<Job, StoreError> {
        let table = &self.names.jobs_table;
        let id = self.next_job_id().await?;
        let job = Job { version: Version::INITIAL.next(), ..Job::new(id, connection_id, job_type, streams, now) };
        let lock: Item = HashMap::from([("pk".to_owned(), s(lock_key(connection_id))), ("jobId".to_owned(), n(id))]);
        // The lock is free, or held by a job that has finished (then it is taken over).
        let mut lock_condition = ("attribute_not_exists(pk)".to_owned(), vec![]);
        for _ in 0..3 {
            let (condition, values) = &lock_condition;
            let items = vec![
                self.put(table, job_item(&job), "attribute_not_exists(pk)", vec![])?,
                self.put(table, lock.clone(), condition, values.clone())?,
            ];
            match self.client.transact_write_items().set_transact_items(Some(items)).send().await {
                Ok(_) => return Ok(job),
                Err(e) => match cancelled_on_condition(&e) {
                    Some(reasons) if reasons.get(1) == Some(&true) => {
                        let held = self.get_item(table, &lock_key(connection_id)).await?;
                        let Some(holder) = held.as_ref().and_then(|l| get_n(l, "jobId")).map(|v| v as i64) else { continue };
                        let holder_job = self.get_job(holder).await;
                        match holder_job {
                            Ok(j) if !j.status.is_terminal() => return Err(StoreError::JobRunning { connection_id: connection_id.to_owned(), job_id: holder }),
                            _ => lock_condition = ("jobId = :holder".to_owned(), vec![(":holder", n(holder))]),
                        }
                    }
                    _ => return Err(describe(e)),
                },
            }
        }
        Err(StoreError::Unavailable(Box::new(std::io::Error::other(format!("the job lock of connection {connection_id} kept changing")))))
    }

    async fn get_job(&self, id: i64) -> Result<Job, StoreError> {
        match self.get_item(&self.names.jobs_table, &job_key(id)).await? {
            Some(item) => job_from_item(&item),
            None => Err(StoreError::NotFound { entity: "job", id: id.to_string() }),
        }
    }

    async fn update_job(&self, next: &Job) -> Result<Job, StoreError> {
        let table = &self.names.jobs_table;
        let written = Job { version: next.version.next(), ..next.clone() };
        let versioned = vec![(":expected", n(next.version.get()))];
        let condition = "attribute_exists(pk) AND #v = :expected";
        let mut items = vec![self.put(table, job_item(&written), condition, versioned)?];
        if written.status.is_terminal() {
            // The connection is free again: release its lock, if this job holds it.
            let release = Delete::builder()
                .table_name(table)
                .key("pk", s(lock_key(&written.connection_id)))
                .condition_expression("attribute_not_exists(pk) OR jobId = :id")
                .expression_attribute_values(":id", n(written.id))
                .build()
                .map_err(crate::unavailable)?;
            items.push(TransactWriteItem::builder().delete(release).build());
        }
        match self.client.transact_write_items().set_transact_items(Some(items)).send().await {
            Ok(_) => Ok(written),
            Err(e) => match cancelled_on_condition(&e) {
                Some(reasons) if reasons.first() == Some(&true) => Err(self.refusal(table, &job_key(next.id), "job", &next.id.to_string()).await),
                // Another job holds the lock: this finished job's write stands alone.
                Some(_) => {
                    let only = self.put(table, job_item(&written), condition, vec![(":expected", n(next.version.get()))])?;
                    match self.client.transact_write_items().transact_items(only).send().await {
                        Ok(_) => Ok(written),
                        Err(e) if cancelled_on_condition(&e).is_some() => Err(self.refusal(table, &job_key(next.id), "job", &next.id.to_string()).await),
                        Err(e) => Err(describe(e)),
                    }
                }
                None => Err(describe(e)),
            },
        }
    }

    async fn list_jobs(&self, filter: &JobFilter) -> Result<Vec<Job>, StoreError> {
        let query = self.client.query().table_name(&self.names.jobs_table).scan_index_forward(filter.oldest_first);
        let query = match (&filter.connection_id, filter.status) {
            (Some(connection), _) => query.index_name("by-connection").key_condition_expression("connectionId = :key").expression_attribute_values(":key", s(connection)),
            (None, Some(status)) => {
                query.index_name("by-status").key_condition_expression("#s = :key").expression_attribute_names("#s", "status").expression_attribute_values(":key", s(status.as_str()))
            }
            (None, None) => query.index_name("by-all").key_condition_expression("entity = :key").expression_attribute_values(":key", s("job")),
        };
        let mut jobs = Vec::new();
        for item in self.query_all(query).await? {
            let job = job_from_item(&item)?;
            let keep = filter.status.is_none_or(|st| job.status == st)
                && filter.job_type.is_none_or(|t| job.job_type == t)
                && filter.created_at_start.is_none_or(|t| job.created_at >= t)
                && filter.created_at_end.is_none_or(|t| job.created_at <= t);
            if keep {
                jobs.push(job);
            }
        }
        // Index reads are eventually consistent; the order is by id either way.
        if filter.oldest_first {
            jobs.sort_by_key(|j| j.id);
        } else {
            jobs.sort_by_key(|j| std::cmp::Reverse(j.id));
        }
        Ok(jobs.into_iter().skip(filter.offset).take(filter.limit).collect())
    }
}

// ---- workloads -------------------------------------------------------------

/// Finished workloads are kept this long, then DynamoDB's TTL removes them.
const FINISHED_WORKLOAD_TTL_SECS: i64 = 30 * 24 * 3600;

fn workload_item(w: &Workload) -> Item {
    let mut item: Item = HashMap::from([
        ("pk".to_owned(), s(&w.id)),
        ("kind".to_owned(), s(w.kind.as_str())),
        ("status".to_owned(), s(w.status.as_str())),
        ("input".to_owned(), s(&w.input)),
        ("deadline".to_owned(), n(ns(w.deadline))),
        ("created".to_owned(), n(ns(w.created_at))),
        ("updated".to_owned(), n(ns(w.updated_at))),
        ("version".to_owned(), n(w.version.get())),
    ]);
    let optional = [("mutexKey", &w.mutex_key), ("claimedBy", &w.claimed_by), ("reason", &w.reason), ("taskRef", &w.task_ref)];
    for (key, value) in optional {
        if let Some(v) = value {
            item.insert(key.into(), s(v));
        }
    }
    if w.status.is_active() {
        item.insert("active".into(), s("1"));
        if let Some(key) = &w.mutex_key {
            item.insert("activeMutex".into(), s(key));
        }
    } else {
        item.insert("expiresAt".into(), n(w.updated_at.as_second() + FINISHED_WORKLOAD_TTL_SECS));
    }
    item
}

fn workload_from_item(item: &Item) -> Result<Workload, StoreError> {
    let text = |key: &str| get_s(item, key).ok_or_else(|| corrupt("workload", format!("no `{key}`")));
    let kind = text("kind")?;
    let status = text("status")?;
    Ok(Workload {
        id: text("pk")?,
        kind: WorkloadType::parse(&kind).ok_or_else(|| corrupt("workload", format!("type `{kind}`")))?,
        status: WorkloadStatus::parse(&status).ok_or_else(|| corrupt("workload", format!("status `{status}`")))?,
        mutex_key: get_s(item, "mutexKey"),
        claimed_by: get_s(item, "claimedBy"),
        input: text("input")?,
        deadline: time(item, "deadline", "workload")?,
        created_at: time(item, "created", "workload")?,
        updated_at: time(item, "updated", "workload")?,
        reason: get_s(item, "reason"),
        task_ref: get_s(item, "taskRef"),
        version: Version::new(get_n(item, "version").unwrap_or(0) as u64),
    })
}

#[async_trait]
impl WorkloadStore for DynamoStore {
    async fn insert_workload(&self, w: &Workload) -> Result<Workload, StoreError> {
        let stored = Workload { version: Version::INITIAL.next(), ..w.clone() };
        let put = self
            .client
            .put_item()
            .table_name(&self.names.workloads_table)
            .set_item(Some(workload_item(&stored)))
            .condition_expression("attribute_not_exists(pk)")
            .send()
            .await;
        match put {
            Ok(_) => Ok(stored),
            Err(e) if is_condition_failure(&e) => Err(StoreError::Duplicate { entity: "workload", id: w.id.clone() }),
            Err(e) => Err(describe(e)),
        }
    }

    async fn get_workload(&self, id: &str) -> Result<Workload, StoreError> {
        match self.get_item(&self.names.workloads_table, id).await? {
            Some(item) => workload_from_item(&item),
            None => Err(StoreError::NotFound { entity: "workload", id: id.to_owned() }),
        }
    }

    async fn update_workload(&self, next: &Workload) -> Result<Workload, StoreError> {
        let written = Workload { version: next.version.next(), ..next.clone() };
        let put = self
            .client
            .put_item()
            .table_name(&self.names.workloads_table)
            .set_item(Some(workload_item(&written)))
            .condition_expression("attribute_exists(pk) AND #v = :expected")
            .expression_attribute_names("#v", "version")
            .expression_attribute_values(":expected", n(next.version.get()))
            .send()
            .await;
        match put {
            Ok(_) => Ok(written),
            Err(e) if is_condition_failure(&e) => Err(self.refusal(&self.names.workloads_table, &next.id, "workload", &next.id).await),
            Err(e) => Err(describe(e)),
        }
    }

    async fn active_workloads(&self, mutex_key: &str) -> Result<Vec<Workload>, StoreError> {
        let query = self
            .client
            .query()
            .table_name(&self.names.workloads_table)
            .index_name("by-mutex")
            .key_condition_expression("activeMutex = :key")
            .expression_attribute_values(":key", s(mutex_key));
        let mut found = Vec::new();
        // The index lags the table: keep only what is still active when read consistently.
        for item in self.query_all(query).await? {
            let w = self.get_workload(&workload_from_item(&item)?.id).await;
            match w {
                Ok(w) if w.status.is_active() => found.push(w),
                Ok(_) | Err(StoreError::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(found)
    }

    async fn overdue_workloads(&self, now: Timestamp) -> Result<Vec<Workload>, StoreError> {
        let query = self
            .client
            .query()
            .table_name(&self.names.workloads_table)
            .index_name("by-deadline")
            .key_condition_expression("active = :one AND deadline < :now")
            .expression_attribute_values(":one", s("1"))
            .expression_attribute_values(":now", n(ns(now)));
        let mut found = Vec::new();
        for item in self.query_all(query).await? {
            let w = workload_from_item(&item)?;
            if w.status.is_active() {
                found.push(w);
            }
        }
        Ok(found)
    }

    async fn purge_finished_workloads(&self, before: Timestamp) -> Result<usize, StoreError> {
        // TTL does this on AWS (`expiresAt`); this sweep is for endpoints without TTL.
        let mut purged = 0;
        let mut start: Option<Item> = None;
        loop {
            let page = self
                .client
                .scan()
                .table_name(&self.names.workloads_table)
                .filter_expression("attribute_not_exists(active) AND updated < :before")
                .expression_attribute_values(":before", n(ns(before)))
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(describe)?;
            for item in page.items.unwrap_or_default() {
                let id = get_s(&item, "pk").unwrap_or_default();
                self.client.delete_item().table_name(&self.names.workloads_table).key("pk", s(&id)).send().await.map_err(describe)?;
                self.client.delete_item().table_name(&self.names.config_table).key("pk", s(doc_key(DocKind::Output, &id))).send().await.map_err(describe)?;
                purged += 1;
            }
            match page.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => return Ok(purged),
            }
        }
    }
}
