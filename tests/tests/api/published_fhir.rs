//! FHIR R4 published through `POST /ingest/fhir`: a trust's Bundle is filed keyed on what
//! identifies each record, so a re-send changes nothing and a changed one updates in place; a
//! Bundle that cannot be filed safely is answered with where and why, and kept.

use serde_json::{Value, json};
use tests::TestApp;

const BOB: &str = "synthea/Bob965_Keeling57_3f6fd0bb-6cd3-eb3f-4401-cd38ace25f2b.json";
const BOB_KEY: &str = "https://github.com/synthetichealth/synthea|3f6fd0bb-6cd3-eb3f-4401-cd38ace25f2b";

async fn publish(app: &TestApp, client: &reqwest::Client, body: &Value) -> (u16, String) {
    let url = app.base.replace("/fhir/r4", "/ingest/fhir");
    let answer = client.post(&url).body(serde_json::to_vec(body).unwrap()).send().await.unwrap();
    let status = answer.status().as_u16();
    let outcome: Value = answer.json().await.unwrap();
    assert_eq!(outcome["resourceType"], "OperationOutcome");
    (status, outcome["issue"][0]["diagnostics"].as_str().unwrap().to_owned())
}

/// How many of each type the input holds, and the store holds for the patient.
async fn counts(app: &TestApp, bundle: &Value) -> Vec<(String, usize, i64)> {
    let mut kinds: Vec<String> = bundle["entry"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["resource"]["resourceType"].as_str().map(str::to_owned))
        .filter(|kind| !matches!(kind.as_str(), "Patient" | "Provenance"))
        .collect();
    kinds.sort();
    kinds.dedup();
    let mut out = Vec::new();
    for kind in kinds {
        let sent = bundle["entry"].as_array().unwrap().iter().filter(|e| e["resource"]["resourceType"] == kind.as_str()).count();
        let (stored, _) = app.stored(&format!("{kind}?patient.identifier={BOB_KEY}")).await;
        out.push((kind, sent, stored));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trust_publishes_a_synthea_bundle_once_and_a_changed_one_updates_in_place() {
    let app = TestApp::spawn().await;
    for name in ["hospitalInformation1633536936158.json", "practitionerInformation1633536936158.json"] {
        app.post(&app.trust, "", &tests::fixture(&format!("synthea/{name}"))).await.assert_status(200);
    }
    let bundle = tests::fixture(BOB);
    let (status, said) = publish(&app, &app.trust, &bundle).await;
    assert_eq!(status, 200, "{said}");
    assert!(said.ends_with("filed"), "{said}");
    let filed = counts(&app, &bundle).await;
    assert!(filed.len() >= 6, "{filed:?}");
    for (kind, sent, stored) in &filed {
        assert_eq!(*stored, *sent as i64, "{kind}: every record of the Bundle is filed once");
    }
    assert_eq!(app.stored(&format!("Patient?identifier={BOB_KEY}")).await.0, 1);

    let (status, said) = publish(&app, &app.trust, &bundle).await;
    assert_eq!(status, 200, "{said}");
    assert!(said.contains("already filed; nothing changed"), "{said}");
    assert_eq!(counts(&app, &bundle).await, filed);

    // The same Bundle with one result changed: the Observation is updated, nothing is doubled.
    let mut changed = bundle.clone();
    let entry = changed["entry"].as_array_mut().unwrap().iter_mut().find(|e| e["resource"]["valueQuantity"].is_object()).unwrap();
    entry["resource"]["valueQuantity"]["value"] = json!(123.5);
    let full_url = entry["fullUrl"].as_str().unwrap().to_owned();
    let (status, said) = publish(&app, &app.trust, &changed).await;
    assert_eq!(status, 200, "{said}");
    assert_eq!(counts(&app, &bundle).await, filed, "a changed Bundle updates what it filed before");
    let found = app.get(&app.trust, &format!("Observation?identifier=urn:ietf:rfc:3986|{full_url}")).await;
    found.assert_status(200);
    assert_eq!(found.body["total"], 1);
    let observation = &found.body["entry"][0]["resource"];
    assert_eq!(observation["valueQuantity"]["value"], 123.5);
    assert_eq!(observation["meta"]["versionId"], "2");
    let subject = observation["subject"]["reference"].as_str().unwrap();
    let patient = app.get(&app.trust, subject).await;
    patient.assert_status(200);
    assert_eq!(patient.body["identifier"][0]["value"], BOB_KEY.split('|').nth(1).unwrap(), "the subject is the filed patient");
    // Each filing has its Provenance, naming the input by its digest.
    let (provenances, _) = app.stored(&format!("Provenance?patient.identifier={BOB_KEY}")).await;
    assert!(provenances >= 2, "{provenances}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fhir_bundle_that_cannot_be_filed_safely_is_refused_with_where_and_kept() {
    let app = TestApp::spawn().await;
    let mut bundle = tests::fixture(BOB);
    // A reference to the sender's own id for a record not in the Bundle: here it could be anyone.
    bundle["entry"][1]["resource"]["subject"] = json!({"reference": "Patient/123"});
    let (status, said) = publish(&app, &app.trust, &bundle).await;
    assert_eq!(status, 422, "{said}");
    assert!(said.starts_with("refused at Bundle.entry[1].resource.subject.reference: Patient/123 is not in this Bundle"), "{said}");
    let (status, said) = publish(&app, &app.trust, &json!({"id": "x"})).await;
    assert_eq!(status, 422);
    assert!(said.contains("resourceType"), "{said}");
    let kept = app.rejected_inputs().await;
    assert_eq!(kept.len(), 2, "{kept:?}");
    assert!(kept.iter().all(|k| k.format == "fhir" && k.channel == "http"), "{kept:?}");
    assert!(kept.iter().any(|k| k.location.as_deref() == Some("Bundle.entry[1].resource.subject.reference")));
    assert_eq!(app.stored(&format!("Patient?identifier={BOB_KEY}")).await.0, 0, "nothing of a refused Bundle is filed");

    let url = app.base.replace("/fhir/r4", "/ingest/fhir");
    let portal = app.portal.post(&url).body("{}").send().await.unwrap();
    assert_eq!(portal.status(), 401, "a certificate alone publishes nothing");
}

/// A trust's FHIR document (a `document` Bundle) is filed with the DocumentReference GP systems
/// find documents by, which leads them to the Composition as they may see it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_published_fhir_document_is_found_by_patient_and_type() {
    let app = TestApp::spawn().await;
    let nhs = "https://fhir.nhs.uk/Id/nhs-number";
    let gp = app.pki.gp.entry.ods.to_string();
    let document = json!({
        "resourceType": "Bundle", "type": "document",
        "identifier": {"system": "https://trust.example/documents", "value": "D-7"},
        "timestamp": "2026-11-30T10:15:00+00:00",
        "entry": [
            {"fullUrl": "https://trust.example/fhir/Composition/c1", "resource": {
                "resourceType": "Composition", "id": "c1", "status": "final",
                "type": {"coding": [{"system": "http://snomed.info/sct", "code": "373942005", "display": "Discharge summary"}]},
                "subject": {"reference": "Patient/p1"}, "date": "2026-11-30T10:00:00+00:00", "title": "Discharge summary",
                "author": [{"reference": "Organization/o1"}], "custodian": {"reference": "Organization/o1"},
                "section": [{"title": "Diagnoses", "entry": [{"reference": "Condition/x1"}]}]}},
            {"fullUrl": "https://trust.example/fhir/Patient/p1", "resource": {
                "resourceType": "Patient", "id": "p1", "identifier": [{"system": nhs, "value": "9449305552"}],
                "generalPractitioner": [{"identifier": {"system": "https://fhir.nhs.uk/Id/ods-organization-code", "value": gp}}]}},
            {"fullUrl": "https://trust.example/fhir/Organization/o1", "resource": {
                "resourceType": "Organization", "id": "o1", "identifier": [{"system": "https://fhir.nhs.uk/Id/ods-organization-code", "value": "R9Z"}]}},
            {"fullUrl": "https://trust.example/fhir/Condition/x1", "resource": {
                "resourceType": "Condition", "id": "x1", "identifier": [{"system": "https://trust.example/dx", "value": "X1"}],
                "subject": {"reference": "Patient/p1"}, "code": {"coding": [{"system": "http://snomed.info/sct", "code": "195967001", "display": "Asthma"}]}}},
        ]
    });
    let (status, said) = publish(&app, &app.trust, &document).await;
    assert_eq!(status, 200, "{said}");
    // The registered practice finds it as GP Connect-style consumers do.
    let found = app
        .get(
            &app.gp,
            &format!("DocumentReference?patient.identifier={nhs}|9449305552&type=http://snomed.info/sct|373942005&_total=accurate"),
        )
        .await;
    found.assert_status(200);
    assert_eq!(found.body["total"], 1, "{}", found.text);
    let reference = &found.body["entry"][0]["resource"];
    assert_eq!(reference["masterIdentifier"]["value"], "D-7");
    assert!(reference["content"][0]["attachment"].get("data").is_none(), "the Bundle as sent is not carried: {reference}");
    let composition = app.get(&app.gp, reference["context"]["related"][0]["reference"].as_str().unwrap()).await;
    composition.assert_status(200);
    assert_eq!(composition.body["section"][0]["entry"][0]["reference"].as_str().map(|r| r.starts_with("Condition/")), Some(true));
    // Sent again: nothing doubles.
    let (status, said) = publish(&app, &app.trust, &document).await;
    assert_eq!(status, 200, "{said}");
    assert_eq!(app.stored("DocumentReference").await.0, 1);
}
