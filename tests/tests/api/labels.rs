//! Sensitivity labels stamped at write time (DESIGN §4): the configured code sets add
//! `meta.security` labels, publishers' labels are kept, and a re-sent resource is unchanged.

use serde_json::{Value, json};
use tests::TestApp;

const ACT_CODE: &str = "http://terminology.hl7.org/CodeSystem/v3-ActCode";

fn condition(system: &str, code: &str, patient: &str) -> Value {
    json!({
        "resourceType": "Condition",
        "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}]},
        "code": {"coding": [{"system": system, "code": code}]},
        "subject": {"reference": format!("Patient/{patient}")}
    })
}

fn labels(resource: &Value) -> Vec<(String, String)> {
    resource["meta"]["security"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|label| (label["system"].as_str().unwrap().to_owned(), label["code"].as_str().unwrap().to_owned()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sensitive_codes_are_labelled_whoever_publishes_them_and_publishers_labels_are_kept() {
    let app = TestApp::spawn().await;
    let patient = app.create(&tests::fixture("resources/Patient.json")).await;

    let hiv = app.create(&condition("http://snomed.info/sct", "86406008", &patient)).await;
    let stored = app.get(&app.trust, &format!("Condition/{hiv}")).await;
    assert_eq!(labels(&stored.body), [(ACT_CODE.to_owned(), "HIV".to_owned())]);

    let mut restricted = condition("http://hl7.org/fhir/sid/icd-10", "B20.1", &patient);
    restricted["meta"] = json!({"security": [{"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": "R"}]});
    let restricted_id = app.create(&restricted).await;
    let stored = app.get(&app.trust, &format!("Condition/{restricted_id}")).await;
    assert_eq!(
        labels(&stored.body),
        [("http://terminology.hl7.org/CodeSystem/v3-Confidentiality".to_owned(), "R".to_owned()), (ACT_CODE.to_owned(), "HIV".to_owned())]
    );

    let asthma = app.create(&condition("http://snomed.info/sct", "195967001", &patient)).await;
    assert!(labels(&app.get(&app.trust, &format!("Condition/{asthma}")).await.body).is_empty());

    // Searchable, so the consent scope can exclude a label in SQL.
    let labelled = app.search_all(&app.trust, &format!("Condition?_security={ACT_CODE}|HIV")).await;
    let mut ids: Vec<&str> = labelled.iter().map(|c| c["id"].as_str().unwrap()).collect();
    ids.sort();
    let mut expected = vec![hiv.as_str(), restricted_id.as_str()];
    expected.sort();
    assert_eq!(ids, expected);

    // The same resource again (without the label it was given): nothing changes.
    let mut again = condition("http://snomed.info/sct", "86406008", &patient);
    again["id"] = json!(hiv);
    let answer = app.put(&app.trust, &format!("Condition/{hiv}"), &again).await;
    answer.assert_status(200);
    assert_eq!(answer.header("etag"), Some("W/\"1\""), "a re-sent resource is unchanged");
    // Through a transaction too (the path translated records take).
    let transaction = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": condition("http://snomed.info/sct", "8098009", &patient), "request": {"method": "POST", "url": "Condition"}}
    ]});
    let answer = app.post(&app.trust, "", &transaction).await;
    answer.assert_status(200);
    let location = answer.body["entry"][0]["response"]["location"].as_str().unwrap().split("/_history").next().unwrap().to_owned();
    assert_eq!(labels(&app.get(&app.trust, &location).await.body), [(ACT_CODE.to_owned(), "STD".to_owned())]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_code_sets_replace_the_default() {
    let app = TestApp::spawn_with(tests::TestOptions {
        backend: tests::Backend::from_env(),
        database_url: None,
        configure: Some(Box::new(|settings| {
            settings.labels.sensitive = vec![consent::SensitiveCodeSet {
                label: "PSY".into(),
                description: "depression".into(),
                system: "http://snomed.info/sct".into(),
                codes: vec!["35489007".into()],
                prefixes: vec![],
            }];
        })),
    })
    .await;
    let patient = app.create(&tests::fixture("resources/Patient.json")).await;
    let depression = app.create(&condition("http://snomed.info/sct", "35489007", &patient)).await;
    assert_eq!(labels(&app.get(&app.trust, &format!("Condition/{depression}")).await.body), [(ACT_CODE.to_owned(), "PSY".to_owned())]);
    let hiv = app.create(&condition("http://snomed.info/sct", "86406008", &patient)).await;
    assert!(labels(&app.get(&app.trust, &format!("Condition/{hiv}")).await.body).is_empty(), "the default no longer applies");
}
