//! Formats, media types, limits and methods.

use reqwest::Method;
use tests::{TestApp, TestOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_json_is_served() {
    let app = TestApp::spawn().await;
    app.get(&app.gp, "metadata?_format=xml").await.assert_status(406).assert_outcome();
    app.get(&app.gp, "metadata?_format=json").await.assert_status(200);
    app.get(&app.gp, "metadata?_format=application/fhir%2Bjson").await.assert_status(200);
    let xml = app.send(&app.gp, Method::GET, "metadata", None, &[("Accept", "application/fhir+xml")]).await;
    xml.assert_status(406).assert_outcome();
    let json = app.send(&app.gp, Method::GET, "metadata", None, &[("Accept", "application/fhir+json")]).await;
    assert!(json.header("content-type").unwrap().starts_with("application/fhir+json"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_must_be_fhir_json() {
    let app = TestApp::spawn().await;
    let response =
        app.trust.post(app.url("Patient")).header("Content-Type", "application/fhir+xml").body("<Patient/>").send().await.unwrap();
    assert_eq!(response.status(), 415);
    let response = app.trust.post(app.url("Patient")).body("{}").send().await.unwrap();
    assert_eq!(response.status(), 415);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_over_the_limit_are_refused() {
    let app = TestApp::spawn_with(TestOptions {
        backend: tests::Backend::from_env(),
        database_url: None,
        configure: Some(Box::new(|settings| settings.limits.max_body_bytes = 1024)),
    })
    .await;
    let mut patient = tests::fixture("resources/Patient.json");
    patient["name"][0]["text"] = serde_json::json!("x".repeat(2000));
    let answer = app.post(&app.trust, "Patient", &patient).await;
    answer.assert_status(413).assert_outcome();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_paths_and_methods_answer_with_an_outcome() {
    let app = TestApp::spawn().await;
    let nowhere = app.gp.get(app.base.replace("/fhir/r4", "/nowhere")).send().await.unwrap();
    assert_eq!(nowhere.status(), 404);
    app.send(&app.gp, Method::PATCH, "Patient/1", None, &[]).await.assert_status(405).assert_outcome();
    app.send(&app.gp, Method::DELETE, "metadata", None, &[]).await.assert_status(405);
}
