//! PostgreSQL stopped and restarted under load: requests fail fast with 503 and an
//! OperationOutcome while it is down, the gateway recovers by itself, and no write that was
//! answered 2xx is missing afterwards. Needs a PostgreSQL the test may stop: `scripts/test.sh`
//! starts a private one and sets `HIE_TEST_PG_RESTART_URL`, `HIE_TEST_PG_STOP`, `HIE_TEST_PG_START`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use sqlx::Connection;
use tests::{Backend, TestApp, TestOptions};

fn shell(command: &str) {
    let status = std::process::Command::new("sh").arg("-c").arg(command).status().expect("run a shell command");
    assert!(status.success(), "{command} failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_postgres_restart_under_load_fails_fast_and_loses_no_acknowledged_write() {
    let Some(server) = tests::require_tool("HIE_TEST_PG_RESTART_URL") else { return };
    let server = server.to_string_lossy().into_owned();
    let stop = std::env::var("HIE_TEST_PG_STOP").expect("HIE_TEST_PG_STOP");
    let start = std::env::var("HIE_TEST_PG_START").expect("HIE_TEST_PG_START");

    let name = format!("hie_restart_{}", uuid::Uuid::new_v4().simple());
    let mut admin = sqlx::PgConnection::connect(&server).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\""))).execute(&mut admin).await.unwrap();
    admin.close().await.ok();
    let database_url = format!("{}/{name}", server.rsplit_once('/').unwrap().0);
    let app = Arc::new(
        TestApp::spawn_with(TestOptions {
            backend: Backend::Postgres,
            database_url: Some(database_url),
            configure: Some(Box::new(|settings| settings.database.acquire_timeout_ms = 500)),
        })
        .await,
    );

    // Four writers, each creating Observations with its own identifiers, for twelve seconds.
    let started = Instant::now();
    let writers: Vec<_> = (0..4)
        .map(|writer| {
            let app = app.clone();
            tokio::spawn(async move {
                let mut outcomes = Vec::new();
                let mut sequence = 0;
                while started.elapsed() < Duration::from_secs(12) {
                    sequence += 1;
                    let value = format!("w{writer}-{sequence}");
                    let observation = json!({
                        "resourceType": "Observation", "status": "final", "code": {"text": "pulse"},
                        "identifier": [{"system": "https://fault.example/obs", "value": value}]
                    });
                    let sent = Instant::now();
                    let answer = app.post(&app.trust, "Observation", &observation).await;
                    outcomes.push((value, answer.status.as_u16(), sent.elapsed(), answer.body["resourceType"].clone(), sent - started));
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                outcomes
            })
        })
        .collect();

    tokio::time::sleep(Duration::from_secs(3)).await;
    shell(&stop);
    let readiness = reqwest::get(format!("{}/readyz", app.ops)).await.unwrap().status();
    tokio::time::sleep(Duration::from_secs(3)).await;
    shell(&start);

    let mut outcomes = Vec::new();
    for writer in writers {
        outcomes.extend(writer.await.unwrap());
    }
    assert_eq!(readiness, 503, "/readyz reports the database down");

    let unavailable: Vec<_> = outcomes.iter().filter(|(_, status, ..)| *status == 503).collect();
    assert!(!unavailable.is_empty(), "requests during the outage are refused");
    for (_, _, latency, kind, _) in &unavailable {
        assert_eq!(kind, "OperationOutcome");
        assert!(*latency < Duration::from_secs(3), "a refusal comes fast, not after a hang: {latency:?}");
    }
    let unexpected: Vec<_> = outcomes.iter().filter(|(_, status, ..)| !matches!(status, 201 | 503)).collect();
    assert!(unexpected.is_empty(), "only 201 or 503: {unexpected:?}");
    let recovered = outcomes.iter().filter(|(_, status, _, _, at)| *status == 201 && *at > Duration::from_secs(9)).count();
    assert!(recovered > 0, "writes succeed again after the restart, without restarting the gateway");

    // Every acknowledged write is there.
    let acknowledged: Vec<&String> = outcomes.iter().filter(|(_, status, ..)| *status == 201).map(|(value, ..)| value).collect();
    assert!(acknowledged.len() > 20);
    for value in acknowledged {
        let found = app.get(&app.trust, &format!("Observation?identifier=https://fault.example/obs|{value}")).await;
        assert_eq!(found.body["total"], 1, "acknowledged write {value} is missing");
    }
    assert_eq!(reqwest::get(format!("{}/readyz", app.ops)).await.unwrap().status(), 200);
}
