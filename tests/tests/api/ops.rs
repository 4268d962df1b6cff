use tests::TestApp;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_readiness_and_metrics_answer_on_the_ops_port() {
    let app = TestApp::spawn().await;
    let client = reqwest::Client::new();
    let health = client.get(format!("{}/healthz", app.ops)).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let ready = client.get(format!("{}/readyz", app.ops)).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    app.get(&app.gp, "Patient/unknown").await.assert_status(404);
    let metrics = client.get(format!("{}/metrics", app.ops)).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("hie_http_requests_total"), "{metrics}");
    assert!(metrics.contains("route=\"/fhir/r4/{type}/{id}\""), "routes are labelled by pattern: {metrics}");
    assert!(metrics.contains("status=\"404\""));
    assert!(!metrics.contains("Patient/unknown"), "concrete paths never become labels");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_response_carries_a_request_id() {
    let app = TestApp::spawn().await;
    let answer = app.get(&app.gp, "metadata").await;
    assert!(answer.header("x-request-id").is_some_and(|id| id.len() >= 8));
    let echoed = app.send(&app.gp, reqwest::Method::GET, "metadata", None, &[("X-Request-ID", "trace-42")]).await;
    assert_eq!(echoed.header("x-request-id"), Some("trace-42"));
}
