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
