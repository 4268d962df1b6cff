//! Per-client rate limits: 429 with an OperationOutcome and Retry-After; counted in Redis when it
//! is configured, so instances share one budget per client.

use std::time::{SystemTime, UNIX_EPOCH};

use tests::{Backend, TestApp, TestOptions};

/// Stay clear of a minute boundary, where the counting window turns over.
async fn away_from_the_minute_boundary() {
    let second = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() % 60;
    if second >= 50 {
        tokio::time::sleep(std::time::Duration::from_secs(61 - second)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_over_its_limit_gets_429() {
    let app = TestApp::spawn_with(TestOptions {
        backend: Backend::from_env(),
        database_url: None,
        configure: Some(Box::new(|settings| settings.limits.requests_per_minute_per_client = 5)),
    })
    .await;
    away_from_the_minute_boundary().await;
    for _ in 0..5 {
        app.get(&app.gp, "metadata").await.assert_status(200);
    }
    let refused = app.get(&app.gp, "metadata").await;
    refused.assert_status(429).assert_outcome();
    assert_eq!(refused.header("retry-after"), Some("1"));
    assert_eq!(refused.body["issue"][0]["code"], "throttled");
    app.get(&app.trust, "metadata").await.assert_status(200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_sharing_redis_share_each_clients_budget() {
    let Some(redis_url) = tests::require_tool("HIE_TEST_REDIS_URL") else { return };
    let redis_url = redis_url.to_string_lossy().into_owned();
    let first = TestApp::spawn_with(TestOptions {
        backend: Backend::Sqlite,
        database_url: None,
        configure: Some(Box::new({
            let redis_url = redis_url.clone();
            move |settings| {
                settings.limits.requests_per_minute_per_client = 6;
                settings.redis.url = Some(redis_url);
            }
        })),
    })
    .await;
    // A second instance with the same registered clients and the same Redis.
    let mut settings =
        tests::test_settings(&first.pki, &first.issuers, format!("sqlite://{}", first.pki.dir.path().join("second.db").display()));
    settings.limits.requests_per_minute_per_client = 6;
    settings.redis.url = Some(redis_url);
    let second = gateway::startup::Application::build(settings).await.unwrap();
    let second_base = format!("https://127.0.0.1:{}/fhir/r4", second.port());
    tokio::spawn(second.run_until_stopped());

    away_from_the_minute_boundary().await;
    for _ in 0..3 {
        first.get(&first.gp, "metadata").await.assert_status(200);
        first.get(&first.gp, &format!("{second_base}/metadata")).await.assert_status(200);
    }
    first.get(&first.gp, "metadata").await.assert_status(429);
    first.get(&first.gp, &format!("{second_base}/metadata")).await.assert_status(429);
}
