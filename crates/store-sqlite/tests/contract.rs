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
