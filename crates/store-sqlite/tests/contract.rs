//! The storage contract, on the SQLite adapter, plus what only a file can
//! show: a reopened store still has what was accepted.

use sluice_store::{contract, WorkloadQueue, WorkloadStore};
use sluice_store_sqlite::SqliteStore;

fn fresh() -> (tempfile::TempDir, SqliteStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("sluice.db")).unwrap();
    (dir, store)
}

#[tokio::test]
async fn workloads_round_trip() {
    let (_dir, store) = fresh();
    contract::workloads_round_trip(&store).await;
}

#[tokio::test]
async fn workloads_race() {
    let (_dir, store) = fresh();
    contract::workloads_race(&store).await;
}

#[tokio::test]
async fn workloads_queries() {
    let (_dir, store) = fresh();
    contract::workloads_queries(&store).await;
}

#[tokio::test]
async fn docs_lifecycle() {
    let (_dir, store) = fresh();
    contract::docs_lifecycle(&store).await;
}

#[tokio::test]
async fn queue_delivery() {
    let (_dir, store) = fresh();
    contract::queue_delivery(&store).await;
}

#[tokio::test]
async fn accepted_work_survives_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sluice.db");
    let now = jiff::Timestamp::from_second(1_800_000_000).unwrap();
    {
        let store = SqliteStore::open(&path).unwrap();
        let w = sluice_domain::Workload::new("w".into(), sluice_domain::WorkloadType::Sync, None, "{}".into(), now);
        store.insert_workload(&w).await.unwrap();
        store.enqueue("w", now).await.unwrap();
    }
    let store = SqliteStore::open(&path).unwrap();
    assert_eq!(store.get_workload("w").await.unwrap().id, "w");
    let delivery = store.receive(now, jiff::SignedDuration::from_secs(30)).await.unwrap().expect("still queued");
    assert_eq!(delivery.workload_id, "w");
}

#[tokio::test]
async fn jobs_lifecycle() {
    let (_dir, store) = fresh();
    contract::jobs_lifecycle(&store).await;
}

#[tokio::test]
async fn secrets_round_trip() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let secrets = sluice_store_sqlite::FileSecrets::open(dir.path().join("secrets")).unwrap();
    contract::secrets_round_trip(&secrets).await;
    let reference = sluice_store::SecretStore::put_secret(&secrets, "x", "v").await.unwrap();
    let mode = std::fs::metadata(dir.path().join("secrets").join(reference)).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "only the owner reads a secret");
}

/// Reads do not queue behind a write: while another connection holds the
/// database's write lock in the middle of a transaction (as a commit waiting
/// for the disk does) and this store's own write waits for it, gets and lists
/// answer at once with the last commit; the write goes through once the lock
/// is free, neither failed nor lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_answer_while_a_write_waits_for_the_lock() {
    use sluice_store::{ConfigStore, Doc, DocKind};
    use std::time::{Duration, Instant};
    let (dir, store) = fresh();
    let store = std::sync::Arc::new(store);
    let doc = |id: &str| Doc { id: id.into(), workspace_id: Some("w".into()), body: serde_json::json!({"name": id}), version: sluice_domain::Version::INITIAL };
    store.insert_doc(DocKind::Source, &doc("committed")).await.unwrap();

    let other = rusqlite::Connection::open(dir.path().join("sluice.db")).unwrap();
    other.execute_batch("BEGIN IMMEDIATE; INSERT INTO docs (kind, id, workspace_id, body, version) VALUES ('source', 'pending', 'w', '{}', 1);").unwrap();
    let write = tokio::spawn({
        let store = store.clone();
        async move { store.insert_doc(DocKind::Source, &doc("later")).await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!write.is_finished(), "the write waits for the lock");

    let started = Instant::now();
    assert_eq!(store.get_doc(DocKind::Source, "committed").await.unwrap().id, "committed");
    let listed = store.list_docs(DocKind::Source, &[], 10, 0).await.unwrap();
    assert_eq!(listed.iter().map(|d| d.id.as_str()).collect::<Vec<_>>(), ["committed"], "the last commit, not the open transaction");
    assert!(started.elapsed() < Duration::from_secs(1), "reads waited {:?} for the writer", started.elapsed());

    other.execute_batch("COMMIT").unwrap();
    write.await.unwrap().expect("the write goes through once the lock is free");
    let listed = store.list_docs(DocKind::Source, &[], 10, 0).await.unwrap();
    assert_eq!(listed.iter().map(|d| d.id.as_str()).collect::<Vec<_>>(), ["committed", "pending", "later"]);
}
