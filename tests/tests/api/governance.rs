//! Write answers and histories tell a requester no more than the information-governance rules
//! let them see (the read paths are the leak matrix's).

use reqwest::Method;
use serde_json::json;
use tests::TestApp;

const NHS: &str = "https://fhir.nhs.uk/Id/nhs-number";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conditional_create_tells_a_publisher_only_that_a_match_exists() {
    let app = TestApp::spawn().await;
    let mut patient = tests::fixture("resources/Patient.json");
    patient.as_object_mut().unwrap().remove("generalPractitioner");
    let id = app.create(&patient).await;
    // The GP has no relationship with this patient: the match exists, but nothing of it is shown.
    let condition = format!("identifier={NHS}|9449305552");
    let again = app.send(&app.gp, Method::POST, "Patient", Some(&patient), &[("If-None-Exist", &condition)]).await;
    again.assert_status(200).assert_outcome();
    assert!(again.header("location").is_none() && again.header("etag").is_none(), "{:?}", again.headers);
    assert!(!again.text.contains(&id) && !again.text.contains("Fixture"), "{}", again.text);
    // The same in a batch.
    let batch = json!({"resourceType": "Bundle", "type": "batch", "entry": [
        {"resource": patient, "request": {"method": "POST", "url": "Patient", "ifNoneExist": condition}}]});
    let answer = app.post(&app.gp, "", &batch).await;
    answer.assert_status(200);
    let entry = &answer.body["entry"][0];
    assert_eq!(entry["response"]["status"], "200 OK");
    assert!(entry["response"].get("location").is_none() && entry.get("resource").is_none(), "{entry}");
    assert!(!answer.text.contains(&id));
    // The publisher itself is shown its resource.
    let own = app.send(&app.trust, Method::POST, "Patient", Some(&patient), &[("If-None-Exist", &condition)]).await;
    own.assert_status(200);
    assert_eq!(own.body["id"], id.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn type_and_system_histories_hold_only_what_the_requesters_organisation_wrote() {
    let app = TestApp::spawn().await;
    let theirs = app.create(&tests::fixture("resources/Patient.json")).await;
    let mut own = tests::fixture("resources/Patient.json");
    own["identifier"][0]["value"] = json!("9690937286");
    let mine = app.post(&app.gp, "Patient", &own).await.body["id"].as_str().unwrap().to_owned();
    for path in ["Patient/_history", "_history"] {
        let history = app.get(&app.gp, path).await;
        history.assert_status(200);
        assert!(history.text.contains(&mine) && !history.text.contains(&theirs), "{path}: {}", history.text);
    }
    // A resource's own history only to those who may see it; as if missing otherwise.
    app.get(&app.gp, &format!("Patient/{theirs}/_history")).await.assert_status(404);
    let missing = app.get(&app.gp, "Patient/no-such-patient/_history").await;
    let withheld = app.get(&app.gp, &format!("Patient/{theirs}/_history")).await;
    assert_eq!(withheld.text.replace(&theirs, "X"), missing.text.replace("no-such-patient", "X"));
    // Patients have no type or system history.
    let me = tests::https_client_with_token(&app.pki, None, Some(&app.issuers.patient_token("9449305552", "P9")));
    app.get(&me, "Patient/_history").await.assert_status(403);
    app.get(&me, &format!("Patient/{theirs}/_history")).await.assert_status(200);
}

/// The original of a document (a Binary whose securityContext is the Composition, or the
/// attachment of the DocumentReference that relates to it) repeats every entry, so it is
/// released only to those who may see the whole document.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_document_s_original_is_released_whole_or_not_at_all() {
    use base64::Engine;
    let app = TestApp::spawn().await;
    let patient = app.create(&tests::fixture("resources/Patient.json")).await;
    let subject = json!({"reference": format!("Patient/{patient}")});
    let original = base64::engine::general_purpose::STANDARD.encode("Diagnosis: asthma. Result not for patient view: see clinic letter.");
    let transaction = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": "urn:uuid:6f1f7c1e-0000-4000-8000-000000000001",
         "resource": {"resourceType": "Condition", "subject": subject, "code": {"text": "Asthma"}},
         "request": {"method": "POST", "url": "Condition"}},
        {"fullUrl": "urn:uuid:6f1f7c1e-0000-4000-8000-000000000002",
         "resource": {"resourceType": "Observation", "status": "final", "subject": subject, "code": {"text": "Clinic finding"},
                      "meta": {"security": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "NOPAT"}]}},
         "request": {"method": "POST", "url": "Observation"}},
        {"fullUrl": "urn:uuid:6f1f7c1e-0000-4000-8000-000000000003",
         "resource": {"resourceType": "Composition", "status": "final", "type": {"text": "Discharge summary"}, "subject": subject,
                      "date": "2024-03-09", "author": [{"display": "Ward 4"}], "title": "Discharge summary",
                      "section": [{"title": "Diagnoses", "entry": [{"reference": "urn:uuid:6f1f7c1e-0000-4000-8000-000000000001"}]},
                                  {"title": "Findings", "entry": [{"reference": "urn:uuid:6f1f7c1e-0000-4000-8000-000000000002"}]}]},
         "request": {"method": "POST", "url": "Composition"}},
        {"fullUrl": "urn:uuid:6f1f7c1e-0000-4000-8000-000000000004",
         "resource": {"resourceType": "DocumentReference", "status": "current", "subject": subject,
                      "content": [{"attachment": {"contentType": "text/plain", "data": original, "title": "Discharge summary"}}],
                      "context": {"related": [{"reference": "urn:uuid:6f1f7c1e-0000-4000-8000-000000000003"}]}},
         "request": {"method": "POST", "url": "DocumentReference"}},
        {"fullUrl": "urn:uuid:6f1f7c1e-0000-4000-8000-000000000005",
         "resource": {"resourceType": "Binary", "contentType": "text/plain", "data": original,
                      "securityContext": {"reference": "urn:uuid:6f1f7c1e-0000-4000-8000-000000000003"}},
         "request": {"method": "POST", "url": "Binary"}}
    ]});
    let answer = app.post(&app.trust, "", &transaction).await;
    answer.assert_status(200);
    let ids: Vec<String> = answer.body["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| entry["response"]["location"].as_str().unwrap().split("/_history").next().unwrap().to_owned())
        .collect();
    let (composition, document, binary) = (&ids[2], &ids[3], &ids[4]);

    // The patient may not see the finding: the Composition loses it, the DocumentReference its
    // original, and the Binary (the original again) is answered as a missing one.
    let me = tests::https_client_with_token(&app.pki, None, Some(&app.issuers.patient_token("9449305552", "P9")));
    let read = app.get(&me, composition).await;
    read.assert_status(200);
    assert_eq!(read.body["section"][0]["entry"].as_array().map(Vec::len), Some(1));
    assert!(read.body["section"][1].get("entry").is_none(), "{}", read.text);
    let read = app.get(&me, document).await;
    read.assert_status(200);
    let attachment = &read.body["content"][0]["attachment"];
    assert!(attachment.get("data").is_none() && attachment["contentType"] == "text/plain", "{}", read.text);
    assert_eq!(read.body["extension"][0]["valueCode"], "confidential-items");
    let searched = app.search_all(&me, "DocumentReference").await;
    assert!(searched.len() == 1 && searched[0]["content"][0]["attachment"].get("data").is_none(), "{searched:?}");
    let withheld = app.get(&me, binary).await;
    withheld.assert_status(404);
    let missing = app.get(&me, "Binary/no-such-binary").await;
    assert_eq!(withheld.text.replace(binary.trim_start_matches("Binary/"), "X"), missing.text.replace("no-such-binary", "X"));

    // Nor does a search count it.
    let total = |answer: tests::Answer| answer.body["total"].as_i64();
    assert_eq!(total(app.get(&me, "Binary?_total=accurate").await), Some(0));

    // The trust that published it sees the whole document.
    let whole = app.get(&app.trust, document).await;
    assert_eq!(whole.body["content"][0]["attachment"]["data"], original.as_str());
    assert!(whole.body.get("extension").is_none());
    app.get(&app.trust, binary).await.assert_status(200);
    assert_eq!(total(app.get(&app.trust, "Binary?_total=accurate").await), Some(1));

    // A database an older version wrote has no document entries: they are derived at start.
    app.execute_sql("DELETE FROM document_entries").await;
    app.execute_sql("DELETE FROM store_markers WHERE name = 'document-entries-1'").await;
    let upgraded =
        TestApp::spawn_with(tests::TestOptions { backend: app.backend, database_url: Some(app.database_url.clone()), configure: None })
            .await;
    let me = tests::https_client_with_token(&upgraded.pki, None, Some(&upgraded.issuers.patient_token("9449305552", "P9")));
    assert_eq!(total(upgraded.get(&me, "Binary?_total=accurate").await), Some(0));
}

/// A write must not be a way round the rules: a publisher may not change or delete a record it
/// may not see (nor learn its content from an "unchanged" answer). Patients are the exception:
/// the feeds keep one Patient per person, whoever filed it first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publisher_may_not_change_or_delete_a_record_it_may_not_see() {
    let app = TestApp::spawn().await;
    let mut patient = tests::fixture("resources/Patient.json");
    patient.as_object_mut().unwrap().remove("generalPractitioner");
    let patient_id = app.create(&patient).await;
    let key = "https://trust.example/diagnoses|C1";
    let condition = json!({"resourceType": "Condition",
        "identifier": [{"system": "https://trust.example/diagnoses", "value": "C1"}],
        "subject": {"reference": format!("Patient/{patient_id}")},
        "code": {"coding": [{"system": "http://snomed.info/sct", "code": "195967001", "display": "Asthma"}]}});
    let id = app.create(&condition).await;
    let mut stored = condition.clone();
    stored["id"] = json!(id);
    let mut changed = stored.clone();
    changed["code"]["text"] = json!("changed by someone who may not see it");

    // The GP has no relationship with this patient, so it may see none of the trust's record.
    app.get(&app.gp, &format!("Condition/{id}")).await.assert_status(404);
    for body in [&changed, &stored] {
        let put = app.put(&app.gp, &format!("Condition/{id}"), body).await;
        put.assert_status(409).assert_outcome();
        assert!(!put.text.contains("Asthma"), "{}", put.text);
    }
    let mut unnamed = changed.clone();
    unnamed.as_object_mut().unwrap().remove("id");
    let conditional = app.put(&app.gp, &format!("Condition?identifier={key}"), &unnamed).await;
    conditional.assert_status(409).assert_outcome();
    assert!(!conditional.text.contains(&id), "a conditional write's match is not named: {}", conditional.text);
    let transaction = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": changed, "request": {"method": "PUT", "url": format!("Condition/{id}")}}]});
    app.post(&app.gp, "", &transaction).await.assert_status(409);
    // A conditional reference to it is answered as one that matches nothing: no id, no link.
    let listing = |key: &str| {
        json!({"resourceType": "Bundle", "type": "transaction", "entry": [{"resource": {"resourceType": "List",
            "status": "current", "mode": "working", "entry": [{"item": {"reference": format!("Condition?identifier={key}")}}]},
            "request": {"method": "POST", "url": "List"}}]})
    };
    let hidden = app.post(&app.gp, "", &listing(key)).await;
    let nothing = app.post(&app.gp, "", &listing("https://trust.example/diagnoses|NONE")).await;
    hidden.assert_status(404);
    assert_eq!((hidden.status, hidden.text.replace("C1", "X")), (nothing.status, nothing.text.replace("NONE", "X")));
    app.post(&app.trust, "", &listing(key)).await.assert_status(200);

    // A delete of it is answered as a delete of nothing, and deletes nothing.
    let deleted = app.delete(&app.gp, &format!("Condition/{id}")).await;
    let missing = app.delete(&app.gp, "Condition/no-such-condition").await;
    assert_eq!((deleted.status, deleted.text.replace(&id, "X")), (missing.status, missing.text.replace("no-such-condition", "X")));
    let by_key = app.delete(&app.gp, &format!("Condition?identifier={key}")).await;
    assert_eq!(by_key.status, missing.status);
    let kept = app.get(&app.trust, &format!("Condition/{id}")).await;
    kept.assert_status(200);
    assert_eq!((kept.body["meta"]["versionId"].as_str(), &kept.body["code"]["text"]), (Some("1"), &serde_json::Value::Null));

    // Its publisher changes it; and the GP's feed may still update the patient's demographics.
    app.put(&app.trust, &format!("Condition/{id}"), &changed).await.assert_status(200);
    patient["id"] = json!(patient_id);
    patient["gender"] = json!("unknown");
    app.put(&app.gp, &format!("Patient/{patient_id}"), &patient).await.assert_status(200);
    // Every refusal is in the audit trail with its rule.
    let events = app.audit_events().await;
    let refused = events.iter().filter(|event| event.to_string().contains("write-not-shared")).count();
    assert!(refused >= 6, "{refused}");
    assert!(events.iter().any(|event| event.to_string().contains("reference-not-shared")));
}

/// A document's original names its patient as it was sent: for a restricted patient (S-flag) it
/// is released only to those who see the patient unredacted (the registered practice), not to
/// others who may read every entry — not even the trust that published it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restricted_patient_s_document_original_stays_with_their_practice() {
    use base64::Engine;
    let app = TestApp::spawn().await;
    app.register_fixture_patients_with_the_gp().await;
    let mut patient = tests::fixture("resources/Patient.json");
    patient["meta"] = json!({"security": [{"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": "R"}]});
    patient["address"] = json!([{"line": ["1 Hidden Lane"], "city": "Leeds"}]);
    let patient_id = app.create(&patient).await;
    let subject = json!({"reference": format!("Patient/{patient_id}")});
    let condition = app
        .create(&json!({"resourceType": "Condition", "subject": subject,
            "code": {"coding": [{"system": "http://snomed.info/sct", "code": "195967001", "display": "Asthma"}]}}))
        .await;
    let composition = app
        .create(&json!({"resourceType": "Composition", "status": "final", "type": {"text": "Discharge summary"},
            "subject": subject, "date": "2026-11-30", "author": [{"display": "Dr Who"}], "title": "Discharge summary",
            "section": [{"title": "Diagnoses", "entry": [{"reference": format!("Condition/{condition}")}]}]}))
        .await;
    let original = base64::engine::general_purpose::STANDARD.encode("<ClinicalDocument>1 Hidden Lane</ClinicalDocument>");
    let reference = app
        .create(&json!({"resourceType": "DocumentReference", "status": "current", "subject": subject,
            "content": [{"attachment": {"contentType": "application/hl7-v3+xml", "data": original}}],
            "context": {"related": [{"reference": format!("Composition/{composition}")}]}}))
        .await;
    let binary = app
        .create(&json!({"resourceType": "Binary", "contentType": "application/hl7-v3+xml", "data": original,
            "securityContext": {"reference": format!("Composition/{composition}")}}))
        .await;

    // The practice sees the patient whole, and the original with them.
    let at_practice = app.get(&app.gp, &format!("DocumentReference/{reference}")).await;
    at_practice.assert_status(200);
    assert!(at_practice.body["content"][0]["attachment"]["data"].is_string(), "{}", at_practice.text);
    app.get(&app.gp, &format!("Binary/{binary}")).await.assert_status(200);
    // The trust sees the patient redacted: the record, but not the original.
    app.get(&app.trust, &format!("Composition/{composition}")).await.assert_status(200);
    let redacted = app.get(&app.trust, &format!("Patient/{patient_id}")).await;
    assert!(redacted.body.get("address").is_none(), "{}", redacted.text);
    let at_trust = app.get(&app.trust, &format!("DocumentReference/{reference}")).await;
    at_trust.assert_status(200);
    assert!(at_trust.body["content"][0]["attachment"].get("data").is_none(), "{}", at_trust.text);
    assert!(!at_trust.text.contains("Hidden Lane") && !at_trust.text.contains(&original));
    app.get(&app.trust, &format!("Binary/{binary}")).await.assert_status(404);
}
