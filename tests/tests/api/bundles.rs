//! Transactions (atomic, with reference rewriting) and batches (entry by entry).

use serde_json::{Value, json};
use tests::TestApp;

const NHS: &str = "https://fhir.nhs.uk/Id/nhs-number";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_entry_rolls_the_whole_transaction_back() {
    let app = TestApp::spawn().await;
    let transaction = json!({
        "resourceType": "Bundle", "type": "transaction",
        "entry": [
            {"resource": tests::fixture("resources/Patient.json"), "request": {"method": "POST", "url": "Patient"}},
            {"resource": {"resourceType": "Observation", "status": "not-a-status", "code": {"text": "x"}},
             "request": {"method": "POST", "url": "Observation"}}
        ]
    });
    let answer = app.post(&app.trust, "", &transaction).await;
    answer.assert_status(422).assert_outcome();
    assert!(answer.expressions().iter().any(|e| e.starts_with("Bundle.entry[1]")), "{:?}", answer.expressions());
    assert!(app.search_all(&app.trust, "Patient").await.is_empty(), "the Patient of entry 0 was not kept");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conditional_references_and_creates_resolve_inside_a_transaction() {
    let app = TestApp::spawn().await;
    let patient_id = app.create(&tests::fixture("resources/Patient.json")).await;
    let transaction = json!({
        "resourceType": "Bundle", "type": "transaction",
        "entry": [
            {"resource": tests::fixture("resources/Patient.json"),
             "request": {"method": "POST", "url": "Patient", "ifNoneExist": format!("identifier={NHS}|9449305552")}},
            {"resource": {"resourceType": "Condition", "code": {"text": "Asthma"},
                          "subject": {"reference": format!("Patient?identifier={NHS}|9449305552")}},
             "request": {"method": "POST", "url": "Condition"}}
        ]
    });
    let answer = app.post(&app.trust, "", &transaction).await;
    answer.assert_status(200);
    assert_eq!(answer.body["entry"][0]["response"]["status"], "200 OK", "the existing Patient was found, not duplicated");
    let condition_url = answer.body["entry"][1]["response"]["location"].as_str().unwrap().split("/_history").next().unwrap().to_owned();
    let condition = app.get(&app.trust, &condition_url).await;
    assert_eq!(condition.body["subject"]["reference"], format!("Patient/{patient_id}"));
    assert_eq!(app.search_all(&app.trust, "Patient").await.len(), 1);

    let unresolvable = json!({
        "resourceType": "Bundle", "type": "transaction",
        "entry": [{"resource": {"resourceType": "Condition", "code": {"text": "x"}, "subject": {"reference": format!("Patient?identifier={NHS}|9690937286")}},
                   "request": {"method": "POST", "url": "Condition"}}]
    });
    app.post(&app.trust, "", &unresolvable).await.assert_status(404).assert_outcome();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_answers_every_entry_on_its_own() {
    let app = TestApp::spawn().await;
    let patient_id = app.create(&tests::fixture("resources/Patient.json")).await;
    let batch = json!({
        "resourceType": "Bundle", "type": "batch",
        "entry": [
            {"request": {"method": "GET", "url": format!("Patient/{patient_id}")}},
            {"request": {"method": "GET", "url": "Patient/does-not-exist"}},
            {"resource": {"resourceType": "Patient", "gender": "banana"}, "request": {"method": "POST", "url": "Patient"}},
            {"resource": tests::fixture("resources/Organization.json"), "request": {"method": "POST", "url": "Organization"}},
            {"request": {"method": "GET", "url": format!("Patient?identifier={NHS}|9449305552")}}
        ]
    });
    let answer = app.post(&app.trust, "", &batch).await;
    answer.assert_status(200);
    assert_eq!(answer.body["type"], "batch-response");
    let statuses: Vec<&str> = answer.body["entry"].as_array().unwrap().iter().map(|e| e["response"]["status"].as_str().unwrap()).collect();
    assert_eq!(statuses, vec!["200 OK", "404 Not Found", "422 Unprocessable Entity", "201 Created", "200 OK"]);
    assert_eq!(answer.body["entry"][0]["resource"]["id"], patient_id.as_str());
    assert_eq!(answer.body["entry"][2]["response"]["outcome"]["resourceType"], "OperationOutcome");
    assert_eq!(answer.body["entry"][4]["resource"]["total"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn synthea_bundles_load_and_read_back() {
    let app = TestApp::spawn().await;
    for name in ["hospitalInformation1633536936158.json", "practitionerInformation1633536936158.json"] {
        let bundle = tests::fixture(&format!("synthea/{name}"));
        let answer = app.post(&app.trust, "", &bundle).await;
        answer.assert_status(200);
        let failures: Vec<&Value> = answer.body["entry"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| !e["response"]["status"].as_str().unwrap().starts_with("20"))
            .collect();
        assert!(failures.is_empty(), "{name}: {failures:?}");
    }
    let bundle = tests::fixture("synthea/Bob965_Keeling57_3f6fd0bb-6cd3-eb3f-4401-cd38ace25f2b.json");
    let entries = bundle["entry"].as_array().unwrap().len();
    let answer = app.post(&app.trust, "", &bundle).await;
    answer.assert_status(200);
    assert_eq!(answer.body["entry"].as_array().unwrap().len(), entries);
    // every resource reads back with its content, and references point at stored resources
    for entry in answer.body["entry"].as_array().unwrap().iter().take(40) {
        let location = entry["response"]["location"].as_str().unwrap();
        let read = app.get(&app.trust, location.split("/_history").next().unwrap()).await;
        read.assert_status(200);
        assert!(!read.text.contains("\"reference\":\"urn:uuid:"), "placeholders were rewritten: {location}");
    }
    // Links are rewritten, data is not: Synthea gives each DocumentReference an identifier whose
    // value is the fullUrl of a DiagnosticReport in the same bundle (R4 http.html#trules).
    let (index, document) = bundle["entry"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
        .find(|(_, e)| e["resource"]["resourceType"] == "DocumentReference")
        .expect("a DocumentReference");
    let identifier = document["resource"]["identifier"][0]["value"].as_str().unwrap();
    assert!(identifier.starts_with("urn:uuid:"));
    let location = answer.body["entry"][index]["response"]["location"].as_str().unwrap();
    let stored = app.get(&app.trust, location.split("/_history").next().unwrap()).await;
    assert_eq!(stored.body["identifier"][0]["value"], identifier, "an identifier's value is kept as written");
    let system = document["resource"]["identifier"][0]["system"].as_str().unwrap();
    let found = app.get(&app.trust, &format!("DocumentReference?identifier={system}|{identifier}")).await;
    assert_eq!(found.body["total"], 1);
    // loading the same bundle again creates new resources (POST), but loading the reference
    // data again changes nothing (conditional creates)
    let again = app.post(&app.trust, "", &tests::fixture("synthea/hospitalInformation1633536936158.json")).await;
    assert!(
        again.body["entry"].as_array().unwrap().iter().all(|e| e["response"]["status"] == "200 OK"),
        "{}",
        &again.text[..500.min(again.text.len())]
    );
}

#[tokio::test]
async fn a_transaction_that_changes_one_resource_twice_is_refused_whole() {
    let app = TestApp::spawn().await;
    let patient = |given: &str| {
        let mut patient = tests::fixture("resources/Patient.json");
        patient["name"][0]["given"] = json!([given]);
        patient
    };
    let condition = "identifier=https://fhir.nhs.uk/Id/nhs-number|9449305552";
    // Two conditional updates of one record: both would create it.
    let twice = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": patient("First"), "request": {"method": "PUT", "url": format!("Patient?{condition}")}},
        {"resource": patient("Second"), "request": {"method": "PUT", "url": format!("Patient?{condition}")}},
    ]});
    let answer = app.post(&app.trust, "", &twice).await;
    answer.assert_status(400).assert_outcome();
    assert!(answer.body.to_string().contains("a transaction changes each resource once"), "{}", answer.body);
    // Two conditional creates of one record, and two updates of one id, likewise.
    let created_twice = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": patient("First"), "request": {"method": "POST", "url": "Patient", "ifNoneExist": condition}},
        {"resource": patient("Second"), "request": {"method": "POST", "url": "Patient", "ifNoneExist": condition}},
    ]});
    app.post(&app.trust, "", &created_twice).await.assert_status(400).assert_outcome();
    let updated_twice = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": {"resourceType": "Patient", "id": "same", "active": true}, "request": {"method": "PUT", "url": "Patient/same"}},
        {"resource": {"resourceType": "Patient", "id": "same", "active": false}, "request": {"method": "PUT", "url": "Patient/same"}},
    ]});
    app.post(&app.trust, "", &updated_twice).await.assert_status(400).assert_outcome();
    assert_eq!(app.get(&app.trust, "Patient?_summary=count").await.body["total"], 0, "nothing was written");
}
