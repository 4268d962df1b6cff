//! The read cache never serves what another writer has replaced: a second instance on the same
//! database (PostgreSQL notifications; on SQLite, another connection writing the file).

use std::time::{Duration, Instant};

use serde_json::json;
use tests::{TestApp, TestOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_by_another_instance_reaches_this_instances_reads() {
    let first = TestApp::spawn().await;
    let second =
        TestApp::spawn_with(TestOptions { backend: first.backend, database_url: Some(first.database_url.clone()), configure: None }).await;
    // the second instance has its own PKI: register the resource through the first, read through both
    let id = first.create(&tests::fixture("resources/Patient.json")).await;
    let path = format!("Patient/{id}");
    for _ in 0..3 {
        assert_eq!(first.get(&first.trust, &path).await.body["meta"]["versionId"], "1");
        assert_eq!(second.get(&second.trust, &path).await.body["meta"]["versionId"], "1");
    }
    let mut changed = second.get(&second.trust, &path).await.body;
    changed["gender"] = json!("other");
    second.put(&second.trust, &path, &changed).await.assert_status(200);
    // the writer sees its own write at once
    assert_eq!(second.get(&second.trust, &path).await.body["meta"]["versionId"], "2");
    // the other instance sees it within its invalidation delay
    let started = Instant::now();
    loop {
        let read = first.get(&first.trust, &path).await;
        if read.body["meta"]["versionId"] == "2" {
            assert_eq!(read.body["gender"], "other");
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(3), "the first instance still serves version 1");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // and a deletion too
    second.delete(&second.trust, &path).await.assert_status(204);
    let started = Instant::now();
    while first.get(&first.trust, &path).await.status != 410 {
        assert!(started.elapsed() < Duration::from_secs(3), "the first instance still serves a deleted resource");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
