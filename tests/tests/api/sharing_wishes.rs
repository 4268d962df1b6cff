//! Patients set their own sharing wishes as Consent resources, and a change is in force on the
//! next request, on every instance.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tests::{Answer, TestApp, TestOptions, https_client_with_token};

const NHS: &str = "https://fhir.nhs.uk/Id/nhs-number";

fn share_nothing(patient: &str) -> Value {
    json!({
        "resourceType": "Consent",
        "status": "active",
        "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}]},
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-6"}]}],
        "patient": {"reference": format!("Patient/{patient}")},
        "provision": {"type": "deny"}
    })
}

/// The answer of `app` to `path` once it has `status`: another instance learns of a commit when
/// its notification arrives (PostgreSQL NOTIFY; SQLite's data version, checked every 250 ms).
async fn once(app: &TestApp, client: &reqwest::Client, path: &str, status: u16) -> Answer {
    let started = Instant::now();
    loop {
        let answer = app.get(client, path).await;
        if answer.status.as_u16() == status || started.elapsed() > Duration::from_secs(5) {
            answer.assert_status(status);
            return answer;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_patients_wish_is_in_force_at_once_on_every_instance_and_only_for_their_own_record() {
    let first = TestApp::spawn().await;
    first.register_fixture_patients_with_the_gp().await;
    let mine = first.create(&tests::fixture("resources/Patient.json")).await;
    let mut other = tests::fixture("resources/Patient.json");
    other["identifier"][0]["value"] = json!("9690937286");
    let theirs = first.create(&other).await;
    let mut observation = tests::fixture("resources/Observation.json");
    observation["subject"] = json!({"reference": format!("Patient/{mine}")});
    first.create(&observation).await;
    // A second instance on the same database, with a GP certificate of the same practice.
    let second =
        TestApp::spawn_with(TestOptions { backend: first.backend, database_url: Some(first.database_url.clone()), configure: None }).await;
    let record = format!("Observation?patient=Patient/{mine}");
    second.get(&second.gp, &record).await.assert_status(200);

    let token = first.issuers.patient.mint(
        tests::TEST_AUDIENCE,
        "nhs-login-9449305552",
        600,
        &json!({"scope": "openid patient/*.rs patient/Consent.cud", "nhs_number": "9449305552", "identity_proofing_level": "P9"}),
    );
    let me = https_client_with_token(&first.pki, None, Some(&token));

    // Share nothing: the next request through this instance is refused, and through the other
    // as soon as it hears of the commit.
    let created = first.post(&me, "Consent", &share_nothing(&mine)).await;
    created.assert_status(201);
    let consent = created.body["id"].as_str().unwrap().to_owned();
    first.get(&first.gp, &record).await.assert_status(403);
    let refused = once(&second, &second.gp, &record, 403).await;
    refused.assert_outcome();
    assert_eq!(refused.body["issue"][0]["details"]["coding"][0]["code"], "NO_PATIENT_CONSENT");
    let by_nhs = second.get(&second.gp, &format!("Patient?identifier={NHS}|9449305552")).await;
    by_nhs.assert_status(403);
    // Shared reference data is still shared.
    second.get(&second.gp, "Organization/fixture-practice").await.assert_status(200);

    // The patient reads their own wishes.
    let wishes = first.get(&me, "Consent?_total=accurate").await;
    assert_eq!(wishes.body["total"], 1);

    // Only their own: not another patient's record, not by identifier, not another's Consent.
    let for_someone_else = first.post(&me, "Consent", &share_nothing(&theirs)).await;
    for_someone_else.assert_status(422).assert_outcome();
    let theirs_consent = first.post(&first.trust, "Consent", &share_nothing(&theirs)).await;
    theirs_consent.assert_status(201);
    let their_id = theirs_consent.body["id"].as_str().unwrap();
    let mut takeover = share_nothing(&mine);
    takeover["id"] = json!(their_id);
    first.put(&me, &format!("Consent/{their_id}"), &takeover).await.assert_status(404);
    first.delete(&me, &format!("Consent/{their_id}")).await.assert_status(404);
    let mut by_identifier = share_nothing(&mine);
    by_identifier["patient"] = json!({"identifier": {"system": NHS, "value": "9449305552"}});
    let unreadable = first.post(&first.trust, "Consent", &by_identifier).await;
    unreadable.assert_status(422);
    assert_eq!(unreadable.expressions(), ["Consent.patient"]);
    // A transaction's placeholder or conditional reference is resolved before the check; alone,
    // neither names a stored patient.
    for reference in ["urn:uuid:0d6c0c49-6f35-4f4e-9a55-3c1a4f0f7a11".to_owned(), format!("Patient?identifier={NHS}|9449305552")] {
        let mut unresolved = share_nothing(&mine);
        unresolved["patient"] = json!({"reference": reference});
        let answer = first.post(&first.trust, "Consent", &unresolved).await;
        answer.assert_status(422);
        assert_eq!(answer.expressions(), ["Consent.patient"], "{reference}");
    }
    // Patients write nothing else, and no batch writes.
    first.post(&me, "Observation", &observation).await.assert_status(403);
    let batch = json!({"resourceType": "Bundle", "type": "batch", "entry": [
        {"resource": share_nothing(&theirs), "request": {"method": "POST", "url": "Consent"}}]});
    let answer = first.post(&me, "", &batch).await;
    answer.assert_status(200);
    assert!(answer.body["entry"][0]["response"]["status"].as_str().unwrap().starts_with("403"), "{}", answer.text);

    // Withdrawn (deleted): in force no more, on the next request.
    first.delete(&me, &format!("Consent/{consent}")).await.assert_status(204);
    first.get(&first.gp, &record).await.assert_status(200);
    once(&second, &second.gp, &record, 200).await;
    // Or limited to one organisation: only that one reads.
    let mut only_trust = share_nothing(&mine);
    only_trust["provision"]["provision"] = json!([{"type": "permit", "actor": [{
        "role": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "IRCP"}]},
        "reference": {"identifier": {"system": "https://fhir.nhs.uk/Id/ods-organization-code", "value": "R9Z"}}}]}]);
    first.post(&me, "Consent", &only_trust).await.assert_status(201);
    first.get(&first.gp, &record).await.assert_status(403);
    once(&second, &second.gp, &record, 403).await;
}
