//! Every kind of resource the server writes itself — CapabilityStatement, searchset, history,
//! batch-response and transaction-response Bundles, OperationOutcomes for every error — passes
//! the R4 schema and the two independent validators.

use reqwest::Method;
use serde_json::{Value, json};
use tests::TestApp;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn everything_the_server_writes_is_valid_r4() {
    let app = TestApp::spawn().await;
    let patient_id = app.create(&tests::fixture("resources/Patient.json")).await;
    let mut updated = app.get(&app.trust, &format!("Patient/{patient_id}")).await.body;
    updated["gender"] = json!("other");
    app.put(&app.trust, &format!("Patient/{patient_id}"), &updated).await.assert_status(200);

    let mut answers = vec![
        app.get(&app.anonymous, "metadata").await,
        app.get(&app.trust, &format!("Patient/{patient_id}")).await,
        app.get(&app.trust, "Patient?identifier=https://fhir.nhs.uk/Id/nhs-number|9449305552&_count=1").await,
        app.get(&app.trust, "Patient?gender=other&unknown-parameter=1").await,
        app.get(&app.trust, &format!("Patient/{patient_id}/_history")).await,
        app.get(&app.trust, "_history").await,
        app.post(&app.trust, "Patient/$validate", &tests::fixture("resources/Patient.json")).await,
        app.post(&app.trust, "Patient/$validate", &json!({"resourceType": "Patient", "gender": "woman"})).await,
        app.send(
            &app.trust,
            Method::POST,
            "Patient",
            Some(&tests::fixture("resources/Patient.json")),
            &[("Prefer", "return=OperationOutcome")],
        )
        .await,
        // errors
        app.get(&app.anonymous, &format!("Patient/{patient_id}")).await,
        app.get(&app.unregistered, &format!("Patient/{patient_id}")).await,
        app.get(&app.trust, "Patient/unknown").await,
        app.get(&app.trust, "Patient?_count=many").await,
        app.get(&app.trust, "metadata?_format=xml").await,
        app.post(
            &app.trust,
            "Patient",
            &json!({"resourceType": "Patient", "gender": 1, "identifier": [{"system": "https://fhir.nhs.uk/Id/nhs-number", "value": "1"}]}),
        )
        .await,
        app.send(&app.trust, Method::PUT, &format!("Patient/{patient_id}"), Some(&updated), &[("If-Match", "W/\"1\"")]).await,
        app.send(&app.trust, Method::PATCH, "Patient/x", None, &[]).await,
    ];
    app.delete(&app.trust, &format!("Patient/{patient_id}")).await;
    answers.push(app.get(&app.trust, &format!("Patient/{patient_id}")).await);
    let batch = json!({"resourceType": "Bundle", "type": "batch", "entry": [
        {"request": {"method": "GET", "url": "Patient?gender=other"}},
        {"request": {"method": "GET", "url": "Patient/missing"}},
        {"resource": tests::fixture("resources/Organization.json"), "request": {"method": "POST", "url": "Organization"}}
    ]});
    answers.push(app.post(&app.trust, "", &batch).await);
    let transaction = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": "urn:uuid:4c7b9d1e-8a2f-4e3b-9c6d-1f0a2b3c4d5e", "resource": tests::fixture("resources/Patient.json"), "request": {"method": "POST", "url": "Patient"}},
        {"resource": {"resourceType": "Flag", "status": "active", "code": {"text": "x"}, "subject": {"reference": "urn:uuid:4c7b9d1e-8a2f-4e3b-9c6d-1f0a2b3c4d5e"}},
         "request": {"method": "POST", "url": "Flag"}}
    ]});
    answers.push(app.post(&app.trust, "", &transaction).await);

    let bodies: Vec<Value> = answers.iter().filter(|a| !a.body.is_null()).map(|a| a.body.clone()).collect();
    assert!(bodies.len() >= 19, "every answer here has a body");
    let validator = conformance::Validator::embedded().unwrap();
    for body in &bodies {
        let resource_type = fhir_models::ResourceType::parse(body["resourceType"].as_str().unwrap()).unwrap();
        let report = validator.validate(resource_type, body);
        assert!(report.issues.is_empty(), "{resource_type} fails the R4 schema: {:?}\n{body}", report.issues);
    }
    if let Some(tools) = tests::require_tool("HIE_TEST_TOOLS_DIR") {
        for (name, program, script) in tests::independent_validators(&tools) {
            for verdict in tests::run_validator(&program, &script, &bodies) {
                assert!(verdict.ok, "{name} rejects {}: {:?}", bodies[verdict.index], verdict.issues);
            }
        }
    }
}
