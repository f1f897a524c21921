//! The contract every adapter meets, as plain async functions: an adapter's
//! tests call each with a fresh store. The same checks will run against the
//! SQLite store and the DynamoDB/SQS store on moto, so the two cannot drift.

use jiff::{SignedDuration, Timestamp};
use sluice_domain::{FailureReason, JobStatus, JobType, RetryPolicy, StreamStats, SyncStats, Version, Workload, WorkloadEvent, WorkloadStatus, WorkloadType};

use crate::{ConfigStore, Doc, DocKind, JobFilter, JobStore, SecretStore, StoreError, WorkloadQueue, WorkloadStore};

fn t(secs: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + secs).expect("valid")
}

fn workload(id: &str, key: Option<&str>) -> Workload {
    Workload::new(id.into(), WorkloadType::Sync, key.map(String::from), r#"{"job":1}"#.into(), t(0))
}

/// Insert, read back, conditional update, and the errors for each misuse.
pub async fn workloads_round_trip(store: &dyn WorkloadStore) {
    let stored = store.insert_workload(&workload("w1", Some("conn"))).await.expect("insert");
    assert_eq!(stored.version, Version::new(1));
    assert_eq!(store.get_workload("w1").await.expect("get"), stored);
    assert!(matches!(store.insert_workload(&workload("w1", None)).await, Err(StoreError::Duplicate { .. })));
    assert!(matches!(store.get_workload("nope").await, Err(StoreError::NotFound { .. })));

    let claimed = stored.apply(&WorkloadEvent::Claim { by: "l1".into() }, t(1)).unwrap().unwrap();
    let written = store.update_workload(&claimed).await.expect("update");
    assert_eq!(written.version, Version::new(2));
    assert_eq!(written.status, WorkloadStatus::Claimed);
    assert_eq!(store.get_workload("w1").await.unwrap(), written);
    assert!(matches!(store.update_workload(&workload("ghost", None)).await, Err(StoreError::NotFound { .. })));
}

/// Two writers read the same version; exactly one write wins.
pub async fn workloads_race(store: &dyn WorkloadStore) {
    let stored = store.insert_workload(&workload("race", None)).await.unwrap();
    let a = stored.apply(&WorkloadEvent::Claim { by: "a".into() }, t(1)).unwrap().unwrap();
    let b = stored.apply(&WorkloadEvent::Claim { by: "b".into() }, t(1)).unwrap().unwrap();
    let (ra, rb) = tokio::join!(store.update_workload(&a), store.update_workload(&b));
    let wins = [ra.is_ok(), rb.is_ok()].iter().filter(|ok| **ok).count();
    assert_eq!(wins, 1, "exactly one writer wins: {ra:?} {rb:?}");
    let loser = if ra.is_ok() { rb } else { ra };
    match loser {
        Err(StoreError::Conflict { current, .. }) => assert_eq!(current, Version::new(2)),
        other => panic!("the loser gets a conflict naming the current version, got {other:?}"),
    }
}

/// The mutex-key and deadline queries the scheduler and monitor use.
pub async fn workloads_queries(store: &dyn WorkloadStore) {
    let first = store.insert_workload(&workload("k1", Some("conn"))).await.unwrap();
    store.insert_workload(&workload("k2", Some("other"))).await.unwrap();
    let done = first.apply(&WorkloadEvent::Fail { reason: "superseded".into() }, t(1)).unwrap().unwrap();
    store.insert_workload(&workload("k3", Some("conn"))).await.unwrap();
    store.update_workload(&done).await.unwrap();
    let active: Vec<String> = store.active_workloads("conn").await.unwrap().into_iter().map(|w| w.id).collect();
    assert_eq!(active, ["k3"]);
    // New workloads must be claimed within 30 minutes.
    assert!(store.overdue_workloads(t(1800)).await.unwrap().is_empty());
    let mut overdue: Vec<String> = store.overdue_workloads(t(1801)).await.unwrap().into_iter().map(|w| w.id).collect();
    overdue.sort();
    assert_eq!(overdue, ["k2", "k3"], "terminal workloads are never overdue");
    // The end of time is a valid bound: every active workload, as restart recovery lists them.
    assert_eq!(store.overdue_workloads(Timestamp::MAX).await.unwrap().len(), 2);
    // Retention removes finished workloads only, and only old ones.
    assert_eq!(store.purge_finished_workloads(t(1)).await.unwrap(), 0, "k1 finished at t(1), not before");
    assert_eq!(store.purge_finished_workloads(t(2)).await.unwrap(), 1);
    assert!(matches!(store.get_workload("k1").await, Err(StoreError::NotFound { .. })));
    assert!(store.get_workload("k2").await.is_ok());
}

/// The queue's promises on its own clock, for queues that ignore `now`
/// (SQS): at-least-once delivery, invisible while received, delivered
/// again after the visibility timeout (1 s here) with a higher count.
/// Standard SQS queues do not keep order, so neither does this check.
pub async fn queue_delivery_realtime(queue: &dyn WorkloadQueue) {
    let visibility = SignedDuration::from_secs(1);
    let now = Timestamp::now;
    assert_eq!(queue.receive(now(), visibility).await.unwrap(), None);
    queue.enqueue("w1", now()).await.unwrap();
    queue.enqueue("w2", now()).await.unwrap();
    let first = queue.receive(now(), visibility).await.unwrap().expect("a message");
    let second = queue.receive(now(), visibility).await.unwrap().expect("the other message");
    let mut ids = [first.workload_id.clone(), second.workload_id.clone()];
    ids.sort();
    assert_eq!(ids, ["w1", "w2"], "a received message is invisible to others");
    assert_eq!((first.receive_count, second.receive_count), (1, 1));
    assert_eq!(queue.receive(now(), visibility).await.unwrap(), None);
    queue.acknowledge(&second.receipt).await.unwrap();
    // SQS shows the message again once the timeout has passed; LocalStack's
    // requeue runs once a second, so it may show it up to a second late.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
    let again = loop {
        match queue.receive(now(), visibility).await.unwrap() {
            Some(message) => break message,
            None if std::time::Instant::now() < deadline => tokio::time::sleep(std::time::Duration::from_millis(100)).await,
            None => panic!("not redelivered within 4 s of a 1 s visibility timeout"),
        }
    };
    assert_eq!((again.workload_id.as_str(), again.receive_count), (first.workload_id.as_str(), 2));
    queue.acknowledge(&again.receipt).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(1600)).await;
    assert_eq!(queue.receive(now(), visibility).await.unwrap(), None, "acknowledged messages are gone");
}

/// At-least-once delivery with a visibility timeout, as SQS does it.
pub async fn queue_delivery(queue: &dyn WorkloadQueue) {
    let visibility = SignedDuration::from_secs(30);
    assert_eq!(queue.receive(t(0), visibility).await.unwrap(), None);
    queue.enqueue("w1", t(0)).await.unwrap();
    queue.enqueue("w2", t(1)).await.unwrap();
    let first = queue.receive(t(2), visibility).await.unwrap().expect("a message");
    assert_eq!((first.workload_id.as_str(), first.receive_count), ("w1", 1));
    let second = queue.receive(t(2), visibility).await.unwrap().expect("the next message");
    assert_eq!(second.workload_id, "w2", "a received message is invisible to others");
    assert_eq!(queue.receive(t(3), visibility).await.unwrap(), None);
    queue.acknowledge(&second.receipt).await.unwrap();

    // Not acknowledged in time: delivered again, and the old receipt is void.
    let again = queue.receive(t(40), visibility).await.unwrap().expect("redelivery");
    assert_eq!((again.workload_id.as_str(), again.receive_count), ("w1", 2));
    assert!(queue.acknowledge(&first.receipt).await.is_err(), "an outdated receipt acknowledges nothing");
    queue.acknowledge(&again.receipt).await.unwrap();
    assert_eq!(queue.receive(t(100), visibility).await.unwrap(), None);
}

/// Jobs: integer ids, one unfinished job per connection, attempts kept whole.
pub async fn jobs_lifecycle(store: &dyn JobStore) {
    let job = store.create_job("conn", JobType::Sync, vec![], t(0)).await.expect("create");
    assert_eq!((job.status, job.version), (JobStatus::Pending, Version::new(1)));
    match store.create_job("conn", JobType::Sync, vec![], t(1)).await {
        Err(StoreError::JobRunning { job_id, .. }) => assert_eq!(job_id, job.id),
        other => panic!("a second job while one is unfinished must be refused, got {other:?}"),
    }
    let other = store.create_job("elsewhere", JobType::Reset, vec!["users".into()], t(1)).await.unwrap();
    assert!(other.id > job.id, "ids increase");

    let running = store.update_job(&job.start_attempt("conn_1_0_sync".into(), t(2)).unwrap()).await.unwrap();
    let stats = SyncStats { records_emitted: 10, bytes_emitted: 100, records_committed: 7, bytes_committed: 70 };
    let streams = vec![StreamStats { namespace: Some("public".into()), name: "users".into(), stats: stats.clone() }];
    let failure = FailureReason { origin: "source".into(), failure_type: "system_error".into(), message: "boom".into(), stream: Some("users".into()) };
    let failed = running.attempt_failed(failure, stats, streams, &RetryPolicy::default(), t(3)).unwrap();
    let stored = store.update_job(&failed).await.unwrap();
    assert_eq!(store.get_job(job.id).await.unwrap(), stored, "attempts, stats and failures read back whole");
    assert!(matches!(store.update_job(&failed).await, Err(StoreError::Conflict { .. })), "a stale write is refused");

    let done = store.update_job(&stored.cancel(t(4)).unwrap()).await.unwrap();
    assert_eq!(done.status, JobStatus::Cancelled);
    let next = store.create_job("conn", JobType::Sync, vec![], t(5)).await.expect("a finished job frees the connection");

    let mine = store.list_jobs(&JobFilter { connection_id: Some("conn".into()), limit: 10, ..Default::default() }).await.unwrap();
    assert_eq!(mine.iter().map(|j| j.id).collect::<Vec<_>>(), [next.id, job.id], "newest first");
    let page = store.list_jobs(&JobFilter { limit: 1, offset: 1, ..Default::default() }).await.unwrap();
    assert_eq!(page.len(), 1);
    let resets = store.list_jobs(&JobFilter { job_type: Some(JobType::Reset), limit: 10, ..Default::default() }).await.unwrap();
    assert_eq!(resets.iter().map(|j| j.id).collect::<Vec<_>>(), [other.id]);
    assert!(matches!(store.get_job(999_999).await, Err(StoreError::NotFound { .. })));
}

/// Secrets: stored, read back, replaced under new references, deleted.
pub async fn secrets_round_trip(store: &dyn SecretStore) {
    let a = store.put_secret("source/abc/api_key", "k-1").await.unwrap();
    let b = store.put_secret("source/abc/api_key", "k-2").await.unwrap();
    assert_ne!(a, b, "every put gets its own reference");
    assert_eq!(store.get_secret(&a).await.unwrap(), "k-1");
    assert_eq!(store.get_secret(&b).await.unwrap(), "k-2");
    store.delete_secret(&a).await.unwrap();
    assert!(matches!(store.get_secret(&a).await, Err(StoreError::NotFound { .. })));
    assert!(matches!(store.get_secret("../../etc/passwd").await, Err(StoreError::NotFound { .. })), "references never escape the store");
}

/// Config documents: insert, duplicate, conditional update and delete,
/// listing by workspace in creation order with paging.
pub async fn docs_lifecycle(store: &dyn ConfigStore) {
    let doc = |id: &str, ws: &str| Doc { id: id.into(), workspace_id: Some(ws.into()), body: serde_json::json!({"name": id}), version: Version::INITIAL };
    let a = store.insert_doc(DocKind::Source, &doc("a", "w1")).await.expect("insert");
    assert_eq!(a.version, Version::INITIAL.next());
    assert!(matches!(store.insert_doc(DocKind::Source, &doc("a", "w1")).await, Err(StoreError::Duplicate { .. })));
    // The same id under another kind is another document.
    store.insert_doc(DocKind::Destination, &doc("a", "w1")).await.expect("other kind");
    store.insert_doc(DocKind::Source, &doc("b", "w2")).await.expect("insert b");
    store.insert_doc(DocKind::Source, &doc("c", "w1")).await.expect("insert c");

    let changed = store.update_doc(DocKind::Source, &Doc { body: serde_json::json!({"name": "a2"}), ..a.clone() }).await.expect("update");
    assert_eq!(store.get_doc(DocKind::Source, "a").await.unwrap(), changed);
    assert!(matches!(store.update_doc(DocKind::Source, &a).await, Err(StoreError::Conflict { current, .. }) if current == changed.version));
    assert!(matches!(store.delete_doc(DocKind::Source, "a", a.version).await, Err(StoreError::Conflict { .. })));

    let ids = |docs: Vec<Doc>| docs.into_iter().map(|d| d.id).collect::<Vec<_>>();
    assert_eq!(ids(store.list_docs(DocKind::Source, &[], 10, 0).await.unwrap()), ["a", "b", "c"]);
    assert_eq!(ids(store.list_docs(DocKind::Source, &["w1".into()], 10, 0).await.unwrap()), ["a", "c"]);
    assert_eq!(ids(store.list_docs(DocKind::Source, &[], 1, 1).await.unwrap()), ["b"]);

    store.delete_doc(DocKind::Source, "a", changed.version).await.expect("delete");
    assert!(matches!(store.get_doc(DocKind::Source, "a").await, Err(StoreError::NotFound { .. })));
    assert!(matches!(store.delete_doc(DocKind::Source, "a", changed.version).await, Err(StoreError::NotFound { .. })));
    assert!(store.get_doc(DocKind::Destination, "a").await.is_ok());
}
