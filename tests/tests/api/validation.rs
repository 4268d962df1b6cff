//! Bad input gets a clear OperationOutcome that names what is wrong and where.

use serde_json::json;
use tests::TestApp;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_json_is_a_400_naming_line_and_column() {
    let app = TestApp::spawn().await;
    let response = app
        .trust
        .post(app.url("Patient"))
        .header("Content-Type", "application/fhir+json")
        .body("{\"resourceType\": \"Patient\",\n \"gender\": }")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let outcome: serde_json::Value = response.json().await.unwrap();
    assert_eq!(outcome["resourceType"], "OperationOutcome");
    let diagnostics = outcome["issue"][0]["diagnostics"].as_str().unwrap();
    assert!(diagnostics.contains("line 2"), "{diagnostics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_violations_are_a_422_naming_each_path() {
    let app = TestApp::spawn().await;
    let patient = json!({"resourceType": "Patient", "gender": "woman", "name": [{"family": 7}], "birthDate": "1980-13-01", "favouriteColour": "blue"});
    let answer = app.post(&app.trust, "Patient", &patient).await;
    answer.assert_status(422).assert_outcome();
    let expressions = answer.expressions();
    for expected in ["Patient.gender", "Patient.name[0].family", "Patient.birthDate"] {
        assert!(expressions.iter().any(|e| e == expected), "{expected} in {expressions:?}");
    }
    assert!(answer.text.contains("favouriteColour"), "the unknown element is named: {}", answer.text);
    assert!(app.search_all(&app.gp, "Patient").await.is_empty(), "nothing was stored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_nhs_number_is_refused_with_its_location() {
    let app = TestApp::spawn().await;
    let mut patient = tests::fixture("resources/Patient.json");
    patient["identifier"][0]["value"] = json!("4447685222");
    let answer = app.post(&app.trust, "Patient", &patient).await;
    answer.assert_status(422).assert_outcome();
    assert_eq!(answer.expressions(), vec!["Patient.identifier[0].value"]);
    assert_eq!(answer.body["issue"][0]["details"]["coding"][0]["code"], "INVALID_NHS_NUMBER");
    // in a reference's identifier too
    let mut observation = tests::fixture("resources/Observation.json");
    observation["subject"] = json!({"identifier": {"system": "https://fhir.nhs.uk/Id/nhs-number", "value": "123"}});
    let answer = app.post(&app.trust, "Observation", &observation).await;
    answer.assert_status(422);
    assert_eq!(answer.expressions(), vec!["Observation.subject.identifier.value"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ods_codes_and_reference_targets_are_checked() {
    let app = TestApp::spawn().await;
    let mut organization = tests::fixture("resources/Organization.json");
    organization["identifier"][0]["value"] = json!("not an ods code");
    app.post(&app.trust, "Organization", &organization).await.assert_status(422);
    let mut observation = tests::fixture("resources/Observation.json");
    observation["subject"] = json!({"reference": "Medication/m1"});
    let answer = app.post(&app.trust, "Observation", &observation).await;
    answer.assert_status(422);
    assert_eq!(answer.expressions(), vec!["Observation.subject.reference"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_body_must_be_the_type_of_the_url() {
    let app = TestApp::spawn().await;
    let answer = app.post(&app.trust, "Observation", &tests::fixture("resources/Patient.json")).await;
    answer.assert_status(400).assert_outcome();
    let answer = app.post(&app.trust, "Patient", &json!({"gender": "female"})).await;
    answer.assert_status(400);
    assert_eq!(answer.expressions(), vec!["resourceType"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validate_reports_without_storing() {
    let app = TestApp::spawn().await;
    let good = app.post(&app.gp, "Patient/$validate", &tests::fixture("resources/Patient.json")).await;
    good.assert_status(200).assert_outcome();
    assert_eq!(good.body["issue"][0]["severity"], "information");
    let bad = app.post(&app.gp, "Patient/$validate", &json!({"resourceType": "Patient", "gender": "woman"})).await;
    bad.assert_status(200).assert_outcome();
    assert_eq!(bad.body["issue"][0]["severity"], "error");
    assert_eq!(bad.expressions(), vec!["Patient.gender"]);
    let wrapped = json!({"resourceType": "Parameters", "parameter": [{"name": "resource", "resource": {"resourceType": "Patient", "gender": "woman"}}]});
    let answer = app.post(&app.gp, "Patient/$validate", &wrapped).await;
    assert_eq!(answer.expressions(), vec!["Patient.gender"]);
    assert!(app.search_all(&app.gp, "Patient").await.is_empty());
}
