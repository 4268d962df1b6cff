//! The acceptance walk-through: create, read, vread, update with a stale If-Match, conditional
//! create, history, search by NHS number, a transaction with internal references, delete.

use reqwest::Method;
use serde_json::json;
use tests::TestApp;

const NHS: &str = "https://fhir.nhs.uk/Id/nhs-number";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_resource_lifecycle_works() {
    let app = TestApp::spawn().await;
    let patient = tests::fixture("resources/Patient.json");

    // create
    let created = app.post(&app.trust, "Patient", &patient).await;
    created.assert_status(201);
    let id = created.body["id"].as_str().unwrap().to_owned();
    assert_eq!(created.body["meta"]["versionId"], "1");
    assert_eq!(created.header("etag"), Some("W/\"1\""));
    let location = created.header("location").unwrap();
    assert!(location.ends_with(&format!("/Patient/{id}/_history/1")), "{location}");
    assert!(created.header("last-modified").is_some());

    // read: the same content, server-owned meta and id aside
    let read = app.get(&app.trust, &format!("Patient/{id}")).await;
    read.assert_status(200);
    let mut stored = read.body.clone();
    stored.as_object_mut().unwrap().remove("meta");
    stored.as_object_mut().unwrap().remove("id");
    assert_eq!(stored, patient);
    assert_eq!(read.header("etag"), Some("W/\"1\""));

    // conditional read with If-None-Match
    let not_modified = app.send(&app.trust, Method::GET, &format!("Patient/{id}"), None, &[("If-None-Match", "W/\"1\"")]).await;
    not_modified.assert_status(304);

    // update with the right If-Match
    let mut changed = read.body.clone();
    changed["gender"] = json!("other");
    let updated = app.send(&app.trust, Method::PUT, &format!("Patient/{id}"), Some(&changed), &[("If-Match", "W/\"1\"")]).await;
    updated.assert_status(200);
    assert_eq!(updated.body["meta"]["versionId"], "2");

    // update with a stale If-Match: 412, nothing written
    changed["gender"] = json!("male");
    let stale = app.send(&app.trust, Method::PUT, &format!("Patient/{id}"), Some(&changed), &[("If-Match", "W/\"1\"")]).await;
    stale.assert_status(412).assert_outcome();
    assert_eq!(app.get(&app.trust, &format!("Patient/{id}")).await.body["gender"], "other");

    // the same content again makes no new version
    changed["gender"] = json!("other");
    let unchanged = app.put(&app.trust, &format!("Patient/{id}"), &changed).await;
    unchanged.assert_status(200);
    assert_eq!(unchanged.body["meta"]["versionId"], "2");

    // vread both versions
    let v1 = app.get(&app.trust, &format!("Patient/{id}/_history/1")).await;
    v1.assert_status(200);
    assert_eq!(v1.body["gender"], "female");
    assert_eq!(app.get(&app.trust, &format!("Patient/{id}/_history/2")).await.body["gender"], "other");
    app.get(&app.trust, &format!("Patient/{id}/_history/3")).await.assert_status(404).assert_outcome();

    // conditional create: no duplicate
    let condition = format!("identifier={NHS}|9449305552");
    let again = app.send(&app.trust, Method::POST, "Patient", Some(&patient), &[("If-None-Exist", &condition)]).await;
    again.assert_status(200);
    assert_eq!(again.body["id"], id.as_str());

    // history, newest first
    let history = app.get(&app.trust, &format!("Patient/{id}/_history")).await;
    history.assert_status(200);
    assert_eq!(history.body["type"], "history");
    let versions: Vec<&str> =
        history.body["entry"].as_array().unwrap().iter().map(|e| e["resource"]["meta"]["versionId"].as_str().unwrap()).collect();
    assert_eq!(versions, vec!["2", "1"]);

    // search by NHS number
    let found = app.get(&app.trust, &format!("Patient?identifier={NHS}|9449305552")).await;
    found.assert_status(200);
    assert_eq!(found.body["total"], 1);
    assert_eq!(found.body["entry"][0]["resource"]["id"], id.as_str());
    assert_eq!(found.body["entry"][0]["fullUrl"], format!("{}/Patient/{id}", app.base));
    let none = app.get(&app.trust, &format!("Patient?identifier={NHS}|9690937286")).await;
    assert_eq!(none.body["total"], 0);

    // transaction with internal references
    let transaction = json!({
        "resourceType": "Bundle", "type": "transaction",
        "entry": [
            {"fullUrl": "urn:uuid:61ebe359-bfdc-4613-8bf2-c5e300945f0a",
             "resource": {"resourceType": "Patient", "identifier": [{"system": NHS, "value": "9690937286"}], "name": [{"family": "Second"}]},
             "request": {"method": "POST", "url": "Patient"}},
            {"fullUrl": "urn:uuid:88f151c0-a954-468a-88bd-5ae15c08e059",
             "resource": {"resourceType": "Encounter", "status": "finished",
                          "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
                          "subject": {"reference": "urn:uuid:61ebe359-bfdc-4613-8bf2-c5e300945f0a"}},
             "request": {"method": "POST", "url": "Encounter"}},
            {"resource": {"resourceType": "Observation", "status": "final", "code": {"text": "Pulse"},
                          "subject": {"reference": "urn:uuid:61ebe359-bfdc-4613-8bf2-c5e300945f0a"},
                          "encounter": {"reference": "urn:uuid:88f151c0-a954-468a-88bd-5ae15c08e059"},
                          "valueQuantity": {"value": 72.0, "unit": "/min"}},
             "request": {"method": "POST", "url": "Observation"}}
        ]
    });
    let response = app.post(&app.trust, "", &transaction).await;
    response.assert_status(200);
    assert_eq!(response.body["type"], "transaction-response");
    let entries = response.body["entry"].as_array().unwrap();
    assert!(entries.iter().all(|e| e["response"]["status"] == "201 Created"), "{}", response.text);
    let new_patient = entries[0]["response"]["location"].as_str().unwrap().split("/_history").next().unwrap().to_owned();
    let observation_location = entries[2]["response"]["location"].as_str().unwrap().split("/_history").next().unwrap().to_owned();
    let observation = app.get(&app.trust, &observation_location).await;
    assert_eq!(observation.body["subject"]["reference"], new_patient.as_str());
    assert!(observation.body["encounter"]["reference"].as_str().unwrap().starts_with("Encounter/"));
    assert!(observation.text.contains("\"value\":72.0"), "decimals keep their precision: {}", observation.text);

    // delete: 204, then 410 on read, and gone from search
    app.delete(&app.trust, &format!("Patient/{id}")).await.assert_status(204);
    app.get(&app.trust, &format!("Patient/{id}")).await.assert_status(410).assert_outcome();
    assert_eq!(app.get(&app.trust, &format!("Patient?identifier={NHS}|9449305552")).await.body["total"], 0);
    // deleting again is fine; the deletion is in the history
    app.delete(&app.trust, &format!("Patient/{id}")).await.assert_status(204);
    let history = app.get(&app.trust, &format!("Patient/{id}/_history")).await;
    assert_eq!(history.body["entry"][0]["request"]["method"], "DELETE");
    assert_eq!(history.body["entry"].as_array().unwrap().len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefer_return_controls_the_body_of_writes() {
    let app = TestApp::spawn().await;
    let patient = tests::fixture("resources/Patient.json");
    let minimal = app.send(&app.trust, Method::POST, "Patient", Some(&patient), &[("Prefer", "return=minimal")]).await;
    minimal.assert_status(201);
    assert!(minimal.text.is_empty());
    assert!(minimal.header("location").is_some());
    let outcome = app.send(&app.trust, Method::POST, "Patient", Some(&patient), &[("Prefer", "return=OperationOutcome")]).await;
    outcome.assert_status(201).assert_outcome();
    let representation = app.send(&app.trust, Method::POST, "Patient", Some(&patient), &[("Prefer", "return=representation")]).await;
    assert_eq!(representation.body["resourceType"], "Patient");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_creates_with_the_clients_id_and_checks_ids() {
    let app = TestApp::spawn().await;
    let mut patient = tests::fixture("resources/Patient.json");
    patient["id"] = json!("chosen-id-1");
    let created = app.put(&app.trust, "Patient/chosen-id-1", &patient).await;
    created.assert_status(201);
    assert_eq!(created.body["meta"]["versionId"], "1");
    let mismatch = app.put(&app.trust, "Patient/another-id", &patient).await;
    mismatch.assert_status(400).assert_outcome();
    patient.as_object_mut().unwrap().remove("id");
    app.put(&app.trust, "Patient/chosen-id-1", &patient).await.assert_status(400).assert_outcome();
    app.get(&app.trust, "Patient/bad$id").await.assert_status(400).assert_outcome();
    app.get(&app.trust, "Pattient/1").await.assert_status(404).assert_outcome();
    let missing_if_match = app
        .send(
            &app.trust,
            Method::PUT,
            "Patient/never-made",
            Some(&json!({"resourceType": "Patient", "id": "never-made"})),
            &[("If-Match", "W/\"1\"")],
        )
        .await;
    missing_if_match.assert_status(412);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conditional_update_and_delete_act_on_the_one_match() {
    let app = TestApp::spawn().await;
    let patient = tests::fixture("resources/Patient.json");
    let condition = format!("Patient?identifier={NHS}|9449305552");
    // no match: creates
    let created = app.put(&app.trust, &condition, &patient).await;
    created.assert_status(201);
    let id = created.body["id"].as_str().unwrap().to_owned();
    // one match: updates it
    let mut changed = patient.clone();
    changed["gender"] = json!("unknown");
    let updated = app.put(&app.trust, &condition, &changed).await;
    updated.assert_status(200);
    assert_eq!(updated.body["id"], id.as_str());
    assert_eq!(updated.body["meta"]["versionId"], "2");
    // two matches: 412
    app.create(&patient).await;
    app.put(&app.trust, &condition, &changed).await.assert_status(412).assert_outcome();
    app.delete(&app.trust, &condition).await.assert_status(412);
    app.delete(&app.trust, &format!("Patient/{id}")).await.assert_status(204);
    // one match again: conditional delete removes it
    app.delete(&app.trust, &condition).await.assert_status(204);
    assert_eq!(app.get(&app.trust, &condition).await.body["total"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_pages_with_signed_links() {
    let app = TestApp::spawn().await;
    let mut patient = tests::fixture("resources/Patient.json");
    patient["id"] = json!("history-1");
    for gender in ["female", "male", "other", "unknown", "female"] {
        patient["gender"] = json!(gender);
        app.put(&app.trust, "Patient/history-1", &patient).await;
    }
    let first = app.get(&app.trust, "Patient/history-1/_history?_count=2").await;
    first.assert_status(200);
    assert_eq!(first.body["entry"].as_array().unwrap().len(), 2);
    let mut versions = Vec::new();
    let mut next = Some(app.url("Patient/history-1/_history?_count=2"));
    while let Some(url) = next {
        let page = app.get(&app.trust, &url).await;
        for entry in page.body["entry"].as_array().into_iter().flatten() {
            versions.push(entry["resource"]["meta"]["versionId"].as_str().unwrap().to_owned());
        }
        next =
            page.body["link"].as_array().unwrap().iter().find(|l| l["relation"] == "next").map(|l| l["url"].as_str().unwrap().to_owned());
    }
    assert_eq!(versions, vec!["5", "4", "3", "2", "1"]);
    let type_history = app.get(&app.trust, "Patient/_history").await;
    assert_eq!(type_history.body["entry"].as_array().unwrap().len(), 5);
    let system_history = app.get(&app.trust, "_history?_count=1").await;
    assert_eq!(system_history.body["entry"].as_array().unwrap().len(), 1);
    app.get(&app.trust, "Patient/nobody/_history").await.assert_status(404);
    app.get(&app.trust, "Patient/history-1/_history?_cursor=1.deadbeef").await.assert_status(400);
}
