use reqwest::Method;
use serde_json::json;
use tests::{TestApp, https_client};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_without_a_client_certificate_gets_no_patient_data() {
    let app = TestApp::spawn().await;
    app.register_fixture_patients_with_the_gp().await;
    let id = app.create(&tests::fixture("resources/Patient.json")).await;
    for (method, path) in [
        (Method::GET, format!("Patient/{id}")),
        (Method::GET, format!("Patient/{id}/_history/1")),
        (Method::GET, format!("Patient/{id}/_history")),
        (Method::GET, "Patient?identifier=https://fhir.nhs.uk/Id/nhs-number|9449305552".to_owned()),
        (Method::GET, "Patient/_history".to_owned()),
        (Method::GET, "_history".to_owned()),
        (Method::DELETE, format!("Patient/{id}")),
    ] {
        let answer = app.send(&app.anonymous, method.clone(), &path, None, &[]).await;
        answer.assert_status(401).assert_outcome();
        assert!(!answer.text.contains("9449305552"), "{method} {path} leaked data: {}", answer.text);
    }
    let created = app.post(&app.anonymous, "Patient", &tests::fixture("resources/Patient.json")).await;
    created.assert_status(401).assert_outcome();
    let transaction =
        json!({"resourceType": "Bundle", "type": "batch", "entry": [{"request": {"method": "GET", "url": format!("Patient/{id}")}}]});
    app.post(&app.anonymous, "", &transaction).await.assert_status(401).assert_outcome();
    // the store still holds exactly one Patient
    assert_eq!(app.search_all(&app.trust, "Patient").await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_that_is_not_registered_is_refused() {
    let app = TestApp::spawn().await;
    app.register_fixture_patients_with_the_gp().await;
    let id = app.create(&tests::fixture("resources/Patient.json")).await;
    let answer = app.get(&app.unregistered, &format!("Patient/{id}")).await;
    answer.assert_status(403).assert_outcome();
    assert_eq!(answer.body["issue"][0]["details"]["coding"][0]["code"], "ACCESS DENIED");
    app.get(&app.unregistered, "Patient").await.assert_status(403);
    // but the CapabilityStatement stays open
    app.get(&app.unregistered, "metadata").await.assert_status(200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_from_another_ca_fails_the_handshake() {
    let app = TestApp::spawn().await;
    app.register_fixture_patients_with_the_gp().await;
    let foreign = https_client(&app.pki, Some(&app.pki.foreign));
    let result = foreign.get(app.url("metadata")).send().await;
    assert!(result.is_err(), "a certificate the gateway's client CA did not sign must not complete TLS");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_portal_client_cannot_write_with_its_certificate_alone() {
    let app = TestApp::spawn().await;
    app.register_fixture_patients_with_the_gp().await;
    let answer = app.post(&app.portal, "Patient", &tests::fixture("resources/Patient.json")).await;
    answer.assert_status(401).assert_outcome();
    assert!(app.search_all(&app.trust, "Patient").await.is_empty());
}
