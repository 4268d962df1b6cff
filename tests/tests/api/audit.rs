//! The audit trail: every request — permitted, refused or failed — has its AuditEvent, written
//! before the answer; `audit verify` finds a record edited, deleted, reordered or cut from the
//! end; a patient reads who looked at their record.

use gateway::audit::Verdict;
use gateway::store::SqlStore;
use reqwest::Method;
use serde_json::{Value, json};
use tests::{TestApp, https_client_with_token};

const NHS: &str = "https://fhir.nhs.uk/Id/nhs-number";

async fn store(app: &TestApp) -> SqlStore {
    app.store().await
}

/// The status each record says its request was answered with, in order.
async fn recorded_statuses(store: &SqlStore) -> Vec<u16> {
    store
        .audit_records(0, 100_000)
        .await
        .unwrap()
        .iter()
        .map(|record| record.event()["outcomeDesc"].as_str().unwrap().split(' ').next().unwrap().parse().unwrap())
        .collect()
}

async fn verdict(app: &TestApp) -> Verdict {
    let store = store(app).await;
    let verdict = gateway::audit::verify(&store, &app.audit_key(), 0).await.unwrap();
    store.close().await;
    verdict
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_is_recorded_before_its_answer_and_tampering_is_found() {
    let app = TestApp::spawn().await;
    app.register_fixture_patients_with_the_gp().await;
    let patient = app.create(&tests::fixture("resources/Patient.json")).await;
    let mut expected = vec![201u16, 201];
    let requests: Vec<(&reqwest::Client, Method, String, Option<Value>, u16)> = vec![
        (&app.gp, Method::GET, format!("Patient/{patient}"), None, 200),
        (&app.gp, Method::GET, "Patient/no-such-patient".into(), None, 404),
        (&app.anonymous, Method::GET, format!("Patient/{patient}"), None, 401),
        (&app.unregistered, Method::GET, format!("Patient/{patient}"), None, 403),
        (&app.portal, Method::GET, "Observation".into(), None, 401),
        (&app.gp, Method::GET, "Patient?_count=lots".into(), None, 400),
        (&app.gp, Method::POST, "Patient".into(), Some(json!({"resourceType": "Patient", "gender": "woman"})), 422),
        (&app.gp, Method::GET, "metadata".into(), None, 200),
        (&app.gp, Method::GET, format!("Patient?identifier={NHS}|9449305552"), None, 200),
        (&app.trust, Method::GET, "NoSuchType/1".into(), None, 404),
    ];
    for (client, method, path, body, status) in &requests {
        let answer = app.send(client, method.clone(), path, body.as_ref(), &[]).await;
        assert_eq!(answer.status.as_u16(), *status, "{method} {path}: {}", answer.text);
        expected.push(*status);
        // Written before the answer left: the record is there as soon as the answer is.
        let store = store(&app).await;
        assert_eq!(recorded_statuses(&store).await, expected, "after {method} {path}");
        store.close().await;
    }

    // The check every test makes as it ends (tests::audit_coverage), here with exact figures:
    // every request answered has its record, and no record is without a request.
    let (answered, recorded, unrecorded) = tests::audit_coverage(&app.metrics_text());
    assert_eq!((answered, recorded, unrecorded), (expected.len() as u64, expected.len() as u64, 0));

    // What a record holds: who, which organisation, what, the patient, the resource returned.
    let store = store(&app).await;
    let records = store.audit_records(0, 100).await.unwrap();
    let read = records[2].event();
    assert_eq!(read["resourceType"], "AuditEvent");
    assert_eq!(read["id"], "3");
    assert_eq!(read["subtype"][0]["code"], "read");
    assert_eq!(read["outcome"], "0");
    assert_eq!(read["purposeOfEvent"][0]["coding"][0]["code"], "TREAT");
    assert_eq!(read["agent"][0]["role"][0]["coding"][0]["code"], "R8000");
    assert_eq!(read["agent"][1]["who"]["identifier"]["value"], "Y90001");
    let entities: Vec<&str> = read["entity"].as_array().unwrap().iter().filter_map(|e| e["what"]["reference"].as_str()).collect();
    assert_eq!(entities, [format!("Patient/{patient}"), format!("Patient/{patient}/_history/1")]);
    let refused = records[5].event();
    assert_eq!(refused["outcome"], "4");
    assert!(refused["outcomeDesc"].as_str().unwrap().contains("client-registration"), "{refused}");
    store.close().await;

    // Intact, then each kind of tampering is found at its place.
    let total = expected.len() as i64;
    assert!(matches!(verdict(&app).await, Verdict::Intact { records, .. } if records == total));
    app.execute_sql("UPDATE audit_log SET event = replace(event, '\"status\":200', '\"status\":403') WHERE seq = 3").await;
    assert!(matches!(verdict(&app).await, Verdict::Broken { at: 3, ref reason } if reason.contains("edited")), "{:?}", verdict(&app).await);
    app.execute_sql("UPDATE audit_log SET event = replace(event, '\"status\":403', '\"status\":200') WHERE seq = 3").await;
    assert!(matches!(verdict(&app).await, Verdict::Intact { .. }));

    app.execute_sql("CREATE TABLE kept AS SELECT * FROM audit_log WHERE seq = 4").await;
    app.execute_sql("DELETE FROM audit_log WHERE seq = 4").await;
    assert!(
        matches!(verdict(&app).await, Verdict::Broken { at: 4, ref reason } if reason.contains("missing")),
        "{:?}",
        verdict(&app).await
    );
    app.execute_sql("INSERT INTO audit_log SELECT * FROM kept").await;
    assert!(matches!(verdict(&app).await, Verdict::Intact { .. }));

    // Two records swapped in place.
    app.execute_sql("UPDATE audit_log SET seq = -5 WHERE seq = 5").await;
    app.execute_sql("UPDATE audit_log SET seq = 5 WHERE seq = 6").await;
    app.execute_sql("UPDATE audit_log SET seq = 6 WHERE seq = -5").await;
    assert!(matches!(verdict(&app).await, Verdict::Broken { at: 5, .. }), "{:?}", verdict(&app).await);
    app.execute_sql("UPDATE audit_log SET seq = -5 WHERE seq = 5").await;
    app.execute_sql("UPDATE audit_log SET seq = 5 WHERE seq = 6").await;
    app.execute_sql("UPDATE audit_log SET seq = 6 WHERE seq = -5").await;
    assert!(matches!(verdict(&app).await, Verdict::Intact { .. }));

    // Hiding a record from its patient's access log (the index is outside the chain).
    app.execute_sql("CREATE TABLE kept_patients AS SELECT * FROM audit_patients WHERE seq = 3").await;
    app.execute_sql("DELETE FROM audit_patients WHERE seq = 3").await;
    assert!(
        matches!(verdict(&app).await, Verdict::Broken { at: 3, ref reason } if reason.contains("patient index")),
        "{:?}",
        verdict(&app).await
    );
    app.execute_sql("INSERT INTO audit_patients SELECT * FROM kept_patients").await;
    assert!(matches!(verdict(&app).await, Verdict::Intact { .. }));

    app.execute_sql(&format!("DELETE FROM audit_log WHERE seq = {total}")).await;
    assert!(matches!(verdict(&app).await, Verdict::Broken { ref reason, .. } if reason.contains("end")), "{:?}", verdict(&app).await);
}

/// Rewrite `records` in place as a forger would: the first of them with `edited` text (if
/// given), each hashed with `hash` after `previous`, and the head moved to the last.
async fn rewrite_trail(
    app: &TestApp,
    records: &[gateway::audit::AuditRecord],
    previous: &str,
    edited: Option<&str>,
    hash: impl Fn(&str, i64, i64, &str) -> String,
) {
    let mut previous = previous.to_owned();
    for (n, record) in records.iter().enumerate() {
        let text = match edited {
            Some(edited) if n == 0 => edited,
            _ => record.text.as_str(),
        };
        let next = hash(&previous, record.seq, record.recorded, text);
        let quoted = text.replace('\'', "''");
        app.execute_sql(&format!(
            "UPDATE audit_log SET event = '{quoted}', previous = '{previous}', hash = '{next}' WHERE seq = {}",
            record.seq
        ))
        .await;
        previous = next;
    }
    app.execute_sql(&format!("UPDATE audit_head SET hash = '{previous}' WHERE id = 1")).await;
}

/// Whoever can write the database but has not the audit key cannot edit a record and recompute
/// the chain after it: the hashes are HMACs under the key, which is kept apart from the data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edit_cannot_be_covered_up_without_the_audit_key() {
    use gateway::audit::{AuditKey, KEYED_PREFIX, chain_hash};
    let app = TestApp::spawn().await;
    let patient = app.create(&tests::fixture("resources/Patient.json")).await;
    for _ in 0..3 {
        app.get(&app.trust, &format!("Patient/{patient}")).await.assert_status(200);
    }
    let trail = store(&app).await;
    let records = trail.audit_records(0, 100).await.unwrap();
    trail.close().await;
    assert_eq!(records.len(), 4);
    assert!(records.iter().all(|record| record.hash.starts_with(KEYED_PREFIX)), "every record is keyed");
    assert!(matches!(verdict(&app).await, Verdict::Intact { records: 4, unkeyed: 0, .. }));
    // An instance given another key refuses to extend this trail, rather than start a stretch
    // of it that never verifies.
    let mut settings = tests::test_settings(&app.pki, &app.issuers, app.database_url.clone());
    settings.audit.key_file = app.pki.dir.path().join("another.key");
    std::fs::write(&settings.audit.key_file, "ab".repeat(32)).unwrap();
    let refused = gateway::startup::Application::build(settings).await.err().expect("an instance with another key does not start");
    assert!(refused.to_string().contains("not the key the audit trail was written with"), "{refused:#}");

    // Record 2 says the read was refused, and every hash from there is recomputed under a key
    // the forger made up; the head is moved to match.
    let forged = AuditKey::new(&[0x42; 32]);
    let edited = records[1].text.replacen("200", "403", 1);
    assert_ne!(edited, records[1].text, "the forger changed something");
    let forged_hash = |previous: &str, seq: i64, recorded: i64, text: &str| chain_hash(&forged, previous, seq, recorded, text);
    rewrite_trail(&app, &records[1..], &records[0].hash, Some(&edited), forged_hash).await;
    let found = verdict(&app).await;
    assert!(matches!(found, Verdict::Broken { at: 2, ref reason } if reason.contains("edited")), "{found:?}");
    // Checked with another key, the untouched first record already fails.
    let trail = store(&app).await;
    let other = gateway::audit::verify(&trail, &forged, 0).await.unwrap();
    trail.close().await;
    assert!(matches!(other, Verdict::Broken { at: 1, ref reason } if reason.contains("edited")), "{other:?}");
    // A forger without any key rewrites the whole trail with unkeyed hashes, as a gateway
    // older than the key wrote them: refused, unless the operator says the trail began so.
    let unkeyed = |previous: &str, seq: i64, recorded: i64, text: &str| -> String {
        let digest = ring::digest::digest(&ring::digest::SHA256, format!("{previous}\n{seq}\n{recorded}\n{text}").as_bytes());
        digest.as_ref().iter().map(|byte| format!("{byte:02x}")).collect()
    };
    rewrite_trail(&app, &records, gateway::audit::GENESIS, None, unkeyed).await;
    let found = verdict(&app).await;
    assert!(matches!(found, Verdict::Broken { at: 1, ref reason } if reason.contains("unkeyed")), "{found:?}");
    let trail = store(&app).await;
    let vouched = gateway::audit::verify(&trail, &app.audit_key(), 4).await.unwrap();
    trail.close().await;
    assert!(matches!(vouched, Verdict::Intact { records: 4, unkeyed: 4, .. }), "{vouched:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_patient_reads_who_looked_at_their_record_and_emergencies_are_flagged() {
    let app = TestApp::spawn().await;
    app.register_fixture_patients_with_the_gp().await;
    let mine = app.create(&tests::fixture("resources/Patient.json")).await;
    let mut someone_else = tests::fixture("resources/Patient.json");
    someone_else["identifier"][0]["value"] = json!("9690937286");
    let theirs = app.create(&someone_else).await;
    // Their GP reads my record; a clinician elsewhere breaks the glass for it.
    app.get(&app.gp, &format!("Patient/{mine}")).await.assert_status(200);
    let claims = json!({"scope": "user/*.rs", "requesting_organization": "R9Z", "requesting_practitioner_role": "R8000",
        "purpose_of_use": "ETREAT", "reason": "unconscious in the emergency department"});
    let emergency = app.issuers.clinician.mint(tests::TEST_AUDIENCE, "dr-er", 600, &claims);
    let emergency = https_client_with_token(&app.pki, Some(&app.pki.trust), Some(&emergency));
    app.get(&emergency, &format!("Patient/{mine}/$everything")).await.assert_status(200);
    // Someone reads the other patient's record only.
    app.get(&app.trust, &format!("Patient/{theirs}")).await.assert_status(200);

    let me = https_client_with_token(&app.pki, None, Some(&app.issuers.patient_token("9449305552", "P9")));
    let log = app.get(&me, "$access-log?_count=50").await;
    log.assert_status(200);
    assert_eq!(log.body["type"], "searchset");
    let events: Vec<&Value> = log.body["entry"].as_array().unwrap().iter().map(|e| &e["resource"]).collect();
    let organisations = |event: &Value| -> Vec<String> {
        event["agent"].as_array().unwrap().iter().filter_map(|a| a["who"]["identifier"]["value"].as_str().map(str::to_owned)).collect()
    };
    assert!(events.iter().any(|e| organisations(e).contains(&"Y90001".to_owned()) && e["subtype"][0]["code"] == "read"), "{}", log.text);
    let emergency = events.iter().find(|e| e["meta"]["tag"][0]["code"] == "emergency-access").expect("the emergency access is flagged");
    assert_eq!(emergency["purposeOfEvent"][0]["text"], "unconscious in the emergency department");
    assert!(organisations(emergency).contains(&"R9Z".to_owned()));
    // Nothing about anyone else, and no queries.
    assert!(!log.text.contains(&theirs), "another patient's id leaked: {}", log.text);
    assert!(!log.text.contains("\"query\""));
    for event in &events {
        for entity in event["entity"].as_array().into_iter().flatten() {
            assert_eq!(entity["what"]["reference"], format!("Patient/{mine}"));
        }
    }
    // Paging, newest first.
    let first = app.get(&me, "$access-log?_count=1").await;
    let next = first.body["link"].as_array().unwrap().iter().find(|l| l["relation"] == "next").unwrap()["url"].as_str().unwrap().to_owned();
    let second = app.get(&me, &next).await;
    let first_id: i64 = first.body["entry"][0]["resource"]["id"].as_str().unwrap().parse().unwrap();
    let second_id: i64 = second.body["entry"][0]["resource"]["id"].as_str().unwrap().parse().unwrap();
    assert!(second_id < first_id);
    // Only patients read an access log.
    app.get(&app.gp, "$access-log").await.assert_status(403).assert_outcome();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_writing_at_once_extend_one_intact_chain() {
    let first = TestApp::spawn().await;
    let second =
        TestApp::spawn_with(tests::TestOptions { backend: first.backend, database_url: Some(first.database_url.clone()), configure: None })
            .await;
    // Each instance's writer holds the head it last wrote; the other's appends make it collide
    // and start again from the new head.
    let mut requests = Vec::new();
    for round in 0..40 {
        for app in [&first, &second] {
            requests.push(app.get(&app.gp, if round % 2 == 0 { "metadata" } else { "Patient/unknown" }));
        }
    }
    let answers = futures_util::future::join_all(requests).await;
    let unexpected: Vec<String> = answers
        .iter()
        .filter(|answer| !matches!(answer.status.as_u16(), 200 | 404))
        .map(|answer| format!("{} {}", answer.status, answer.text.chars().take(300).collect::<String>()))
        .collect();
    assert!(unexpected.is_empty(), "{unexpected:?}");
    match verdict(&first).await {
        Verdict::Intact { records, .. } => assert_eq!(records, 80, "every request, once"),
        broken => panic!("{broken:?}"),
    }
}
