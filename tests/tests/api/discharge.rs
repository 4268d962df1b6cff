//! Discharge summaries, legacy CDA and ITK3 FHIR STU3: the synthetic trusts' documents become
//! R4 documents every validator accepts, with hand-checked values; posted over HTTPS by a trust
//! they are filed once (a re-send changes nothing), found by a GP system by patient and type,
//! labelled as their most sensitive entry, and a refused one is answered with where and why and
//! kept.

use gateway::synthetic::discharge::discharge_summaries;
use gateway::translate::{Format, translate_document};
use serde_json::Value;
use tests::TestApp;

const NHS_SYSTEM: &str = "https://fhir.nhs.uk/Id/nhs-number";
const EPOCH: time::OffsetDateTime = time::OffsetDateTime::UNIX_EPOCH;

fn resources<'a>(bundle: &'a Value, kind: &str) -> Vec<&'a Value> {
    bundle["entry"].as_array().unwrap().iter().map(|e| &e["resource"]).filter(|r| r["resourceType"] == kind).collect()
}

fn codes(concept: &Value) -> Vec<&str> {
    concept["coding"].as_array().into_iter().flatten().filter_map(|c| c["code"].as_str()).collect()
}

#[test]
fn synthetic_summaries_become_r4_documents_every_validator_accepts() {
    let labels = consent::SensitivityLabels::new(consent::SensitivityLabels::uk_default());
    let indexes: Vec<usize> = (0..20).collect();
    let validator = conformance::Validator::embedded().unwrap();
    let mut all: Vec<(String, Value)> = Vec::new();
    for format in [Format::Cda, Format::Itk3, Format::Fhir] {
        for (name, bytes) in discharge_summaries(format, &indexes) {
            let mut translated = translate_document(format, &bytes, EPOCH).unwrap_or_else(|e| panic!("{name}: {e}"));
            translated.label(&labels);
            let bundle = &translated.bundle;
            for (index, entry) in bundle["entry"].as_array().unwrap().iter().enumerate() {
                let resource = &entry["resource"];
                let kind = resource["resourceType"].as_str().unwrap();
                let report = validator.validate(fhir_models::ResourceType::parse(kind).unwrap(), resource);
                assert!(report.is_acceptable(), "{name} entry {index} ({kind}): {:?}", report.into_outcome().issue);
                all.push((format!("{name} entry {index} ({kind})"), resource.clone()));
            }
            let composition = resources(bundle, "Composition")[0];
            let reference = resources(bundle, "DocumentReference")[0];
            assert_eq!(codes(&composition["type"])[0], "373942005", "{name}");
            assert_eq!(codes(&reference["type"]), ["373942005"], "{name}");
            let headings: Vec<&str> = composition["section"].as_array().unwrap().iter().map(|s| codes(&s["code"])[0]).collect();
            assert_eq!(
                headings,
                ["887181000000106", "887161000000102", "887171000000109", "886921000000105", "933361000000108", "887201000000105"],
                "{name}: PRSB headings in order"
            );
            // Every section entry is a resource of the same Bundle.
            let full_urls: Vec<&str> = bundle["entry"].as_array().unwrap().iter().filter_map(|e| e["fullUrl"].as_str()).collect();
            for section in composition["section"].as_array().unwrap() {
                for entry in section["entry"].as_array().into_iter().flatten() {
                    assert!(full_urls.contains(&entry["reference"].as_str().unwrap()), "{name}: dangling section entry {entry}");
                }
            }
            assert_eq!(reference["context"]["related"][0]["reference"], composition_url(bundle));
            assert_eq!(resources(bundle, "Provenance").len(), 1);
        }
    }

    // Hand-checked: the first CDA summary (demo person 0 at the first trust).
    let (_, cda) = &discharge_summaries(Format::Cda, &[0])[0];
    let text = std::str::from_utf8(cda).unwrap();
    let translated = translate_document(Format::Cda, cda, EPOCH).unwrap();
    let bundle = &translated.bundle;
    let nhs = gateway::demo::test_nhs_number(0).as_string();
    let patient = resources(bundle, "Patient")[0];
    assert_eq!(patient["identifier"][0]["value"], nhs.as_str());
    assert_eq!(patient["birthDate"], gateway::demo::person(0).birth_date.as_str());
    let patient_entry = bundle["entry"].as_array().unwrap().iter().find(|e| e["resource"]["resourceType"] == "Patient").unwrap();
    assert_eq!(patient_entry["request"]["method"], "POST", "a document does not overwrite demographics");
    assert_eq!(patient_entry["request"]["ifNoneExist"], format!("identifier={NHS_SYSTEM}|{nhs}"));
    let encounter = resources(bundle, "Encounter")[0];
    let admitted = text.split("<low value=\"").nth(1).unwrap()[..8].to_owned();
    assert_eq!(
        encounter["period"]["start"],
        format!("{}-{}-{}", &admitted[..4], &admitted[4..6], &admitted[6..8]),
        "a date stays a date (precision kept)"
    );
    assert!(encounter["period"]["end"].as_str().unwrap().ends_with(":00+00:00"), "{encounter}");
    let trust = bundle["entry"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| {
            e["resource"]["resourceType"] == "Organization" && e["resource"]["identifier"][0]["value"] == gateway::demo::TRUSTS[0].ods
        })
        .unwrap();
    assert_eq!(encounter["serviceProvider"]["reference"], trust["fullUrl"], "the custodian trust provided the care");
    let composition = resources(bundle, "Composition")[0];
    assert_eq!(composition["status"], "final");
    assert_eq!(composition["date"], encounter["period"]["end"]);
    let reference = resources(bundle, "DocumentReference")[0];
    use base64::Engine;
    let attached =
        base64::engine::general_purpose::STANDARD.decode(reference["content"][0]["attachment"]["data"].as_str().unwrap()).unwrap();
    assert_eq!(attached, *cda, "the document as sent is attached");
    assert_eq!(reference["content"][0]["attachment"]["contentType"], "application/hl7-v3+xml");
    let provenance = resources(bundle, "Provenance")[0];
    assert_eq!(provenance["entity"][1]["what"]["identifier"]["value"], translated.digest.as_str());
    assert_eq!(translated.organisation.as_deref(), Some(gateway::demo::TRUSTS[0].ods));

    // Labels: person 7's summaries record HIV; person 5's are restricted.
    for format in [Format::Cda, Format::Itk3, Format::Fhir] {
        let (_, bytes) = &discharge_summaries(format, &[7])[0];
        let mut hiv = translate_document(format, bytes, EPOCH).unwrap();
        hiv.label(&labels);
        for kind in ["Composition", "DocumentReference"] {
            let security = &resources(&hiv.bundle, kind)[0]["meta"]["security"];
            assert!(security.as_array().unwrap().iter().any(|l| l["code"] == "HIV"), "{format} {kind}: {security}");
        }
        let (_, bytes) = &discharge_summaries(format, &[5])[0];
        let restricted = translate_document(format, bytes, EPOCH).unwrap();
        for entry in restricted.bundle["entry"].as_array().unwrap() {
            let resource = &entry["resource"];
            if matches!(resource["resourceType"].as_str(), Some("Patient" | "Organization" | "Practitioner" | "PractitionerRole")) {
                continue;
            }
            assert_eq!(resource["meta"]["security"][0]["code"], "R", "{format}: {}", resource["resourceType"]);
        }
    }

    if let Some(tools) = tests::require_tool("HIE_TEST_TOOLS_DIR") {
        let values: Vec<Value> = all.iter().map(|(_, resource)| resource.clone()).collect();
        for (name, program, script) in tests::independent_validators(&tools) {
            let verdicts = tests::run_validator(&program, &script, &values);
            let failures: Vec<String> = verdicts.iter().filter(|v| !v.ok).map(|v| format!("{}: {:?}", all[v.index].0, v.issues)).collect();
            assert!(failures.is_empty(), "{name} refuses {} translated resources:\n{}", failures.len(), failures.join("\n"));
        }
    }
}

fn composition_url(bundle: &Value) -> Value {
    bundle["entry"].as_array().unwrap().iter().find(|e| e["resource"]["resourceType"] == "Composition").unwrap()["fullUrl"].clone()
}

async fn post(app: &TestApp, client: &reqwest::Client, format: &str, body: Vec<u8>) -> (u16, String) {
    let url = app.base.replace("/fhir/r4", &format!("/ingest/{format}"));
    let answer = client.post(&url).body(body).send().await.unwrap();
    let status = answer.status().as_u16();
    let outcome: Value = answer.json().await.unwrap();
    assert_eq!(outcome["resourceType"], "OperationOutcome");
    (status, outcome["issue"][0]["diagnostics"].as_str().unwrap().to_owned())
}

async fn search_as(app: &TestApp, client: &reqwest::Client, query: &str) -> Vec<Value> {
    let answer = app.get(client, query).await;
    answer.assert_status(200);
    answer.body["entry"].as_array().cloned().unwrap_or_default().into_iter().map(|e| e["resource"].clone()).collect()
}

/// A gateway with the GP system of the synthetic patients' first practice registered, and a
/// client for it with a clinician's token.
async fn with_the_practice_registered() -> (TestApp, reqwest::Client) {
    let practice = &gateway::demo::PRACTICES[0];
    let pki = tests::TestPki::new();
    let surgery = pki.issue_client("surgery", practice.ods, consent::ClientKind::GpSystem);
    let entry = surgery.entry.clone();
    let options = tests::TestOptions {
        backend: tests::Backend::from_env(),
        database_url: None,
        configure: Some(Box::new(move |settings| settings.clients.push(entry))),
    };
    let app = TestApp::spawn_with_pki(pki, options).await;
    let token = app.issuers.clinician_token(practice.ods, "user/*.cruds");
    let client = tests::https_client_with_token(&app.pki, Some(&surgery), Some(&token));
    (app, client)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trust_posts_discharge_summaries_and_a_gp_system_finds_them() {
    let (app, surgery) = with_the_practice_registered().await;
    let practice = &gateway::demo::PRACTICES[0];
    let search = |query: String| {
        let (app, surgery) = (&app, &surgery);
        async move { search_as(app, surgery, &query).await }
    };
    // Patients 0, 3 and 7 are registered at the practice (its own record of them).
    for index in [0u64, 3, 7] {
        let patient = serde_json::json!({"resourceType": "Patient",
            "identifier": [{"system": NHS_SYSTEM, "value": gateway::demo::test_nhs_number(index).as_string()}],
            "generalPractitioner": [{"identifier": {"system": "https://fhir.nhs.uk/Id/ods-organization-code", "value": practice.ods}}]});
        app.post(&surgery, "Patient", &patient).await.assert_status(201);
    }
    let (_, cda) = discharge_summaries(Format::Cda, &[0]).remove(0);
    let (_, itk3) = discharge_summaries(Format::Itk3, &[3]).remove(0);
    let (_, hiv) = discharge_summaries(Format::Itk3, &[7]).remove(0);

    let (status, said) = post(&app, &app.trust, "cda", cda.clone()).await;
    assert_eq!(status, 200, "{said}");
    assert!(said.contains("filed"), "{said}");
    for document in [&itk3, &hiv] {
        let (status, said) = post(&app, &app.trust, "itk3", document.clone()).await;
        assert_eq!(status, 200, "{said}");
    }

    // The practice finds each document by the patient's NHS number and the document type.
    for (index, format) in [(0u64, "cda"), (3, "itk3")] {
        let nhs = gateway::demo::test_nhs_number(index).as_string();
        let found = search(format!("DocumentReference?patient.identifier={NHS_SYSTEM}|{nhs}&type=http://snomed.info/sct|373942005")).await;
        assert_eq!(found.len(), 1, "{format}: {found:?}");
        let related = found[0]["context"]["related"][0]["reference"].as_str().unwrap().to_owned();
        let composition = app.get(&surgery, &related).await;
        composition.assert_status(200);
        let diagnoses = composition.body["section"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| codes(&s["code"]).contains(&"887161000000102"))
            .unwrap()["entry"]
            .as_array()
            .unwrap()
            .clone();
        assert!(!diagnoses.is_empty());
        for entry in &diagnoses {
            let condition = app.get(&surgery, entry["reference"].as_str().unwrap()).await;
            condition.assert_status(200);
            assert_eq!(condition.body["resourceType"], "Condition");
        }
        let conditions = search(format!("Condition?patient.identifier={NHS_SYSTEM}|{nhs}")).await;
        assert_eq!(conditions.len(), diagnoses.len(), "{format}: one Condition per diagnosis, no more");
    }
    // Patient 7's summary holds an HIV diagnosis: the document is as sensitive as that entry, so
    // it stays with the trust that recorded it, relationship or not.
    let nhs = gateway::demo::test_nhs_number(7).as_string();
    let query = format!("DocumentReference?patient.identifier={NHS_SYSTEM}|{nhs}&type=http://snomed.info/sct|373942005");
    assert!(search(query.clone()).await.is_empty(), "the practice does not see the HIV-labelled summary");
    let patient_7 = search(format!("Patient?identifier={NHS_SYSTEM}|{nhs}")).await;
    let subject = format!("Patient/{}", patient_7[0]["id"].as_str().unwrap());
    let published = search_as(&app, &app.trust, "DocumentReference?type=http://snomed.info/sct|373942005&_count=50").await;
    assert_eq!(published.len(), 3, "the trust sees every summary it published");
    let document = published.iter().find(|d| d["subject"]["reference"] == subject.as_str()).expect("patient 7's summary");
    let composition = app.get(&app.trust, document["context"]["related"][0]["reference"].as_str().unwrap()).await;
    let security = &composition.body["meta"]["security"];
    assert!(security.as_array().unwrap().iter().any(|l| l["code"] == "HIV"), "the document is as sensitive as its HIV entry: {security}");

    // A re-send changes nothing: same answers, same versions.
    let before = search("Composition?_count=50".into()).await;
    let (status, said) = post(&app, &app.trust, "cda", cda.clone()).await;
    assert_eq!((status, said.contains("already filed; nothing changed")), (200, true), "{said}");
    let (status, _) = post(&app, &app.trust, "itk3", itk3.clone()).await;
    assert_eq!(status, 200);
    let after = search("Composition?_count=50".into()).await;
    assert_eq!(before.len(), 2);
    let versions = |list: &[Value]| list.iter().map(|c| (c["id"].clone(), c["meta"]["versionId"].clone())).collect::<Vec<_>>();
    assert_eq!(versions(&before), versions(&after));
    assert_eq!(search("DocumentReference?_count=50".into()).await.len(), 2);

    // Version 2 of the CDA summary (new id, same set id): the same Composition, DocumentReference
    // and entries, updated; nothing duplicated.
    let nhs = gateway::demo::test_nhs_number(0).as_string();
    let v1 = String::from_utf8(cda.clone()).unwrap();
    let v1_id = v1.split("<id root=\"").nth(1).unwrap().split('"').next().unwrap().to_owned();
    let medicines_before = search(format!("MedicationStatement?patient.identifier={NHS_SYSTEM}|{nhs}")).await;
    assert_eq!(medicines_before.len(), 2);
    // Version 2 stops the second medicine.
    let second_medicine = v1.match_indices("<entry><substanceAdministration").nth(1).unwrap().0;
    let second_end = second_medicine + v1[second_medicine..].find("</entry>").unwrap() + "</entry>".len();
    let v2 = format!("{}{}", &v1[..second_medicine], &v1[second_end..])
        .replace(&v1_id, "6f0c1a2b-3c4d-4e5f-8a9b-0c1d2e3f4a5b")
        .replace("<versionNumber value=\"1\"/>", "<versionNumber value=\"2\"/>")
        .replace("Recovered well", "Recovered well; reviewed again");
    let (status, said) = post(&app, &app.trust, "cda", v2.into_bytes()).await;
    assert_eq!(status, 200, "{said}");
    let compositions = search(format!("Composition?patient.identifier={NHS_SYSTEM}|{nhs}")).await;
    assert_eq!(compositions.len(), 1, "a new version updates its document");
    assert_eq!(compositions[0]["meta"]["versionId"], "2");
    assert!(compositions[0]["section"][0]["text"]["div"].as_str().unwrap().contains("reviewed again"));
    let references = search(format!("DocumentReference?patient.identifier={NHS_SYSTEM}|{nhs}")).await;
    assert_eq!(references.len(), 1);
    assert_eq!(references[0]["masterIdentifier"]["value"], "urn:uuid:6f0c1a2b-3c4d-4e5f-8a9b-0c1d2e3f4a5b");
    let conditions = search(format!("Condition?patient.identifier={NHS_SYSTEM}|{nhs}")).await;
    assert!(conditions.iter().all(|c| c["meta"]["versionId"] == "1"), "unchanged entries are unchanged: {conditions:?}");
    let medicines = search(format!("MedicationStatement?patient.identifier={NHS_SYSTEM}|{nhs}")).await;
    assert_eq!(medicines.len(), 1, "the medicine version 2 no longer lists is gone with version 1");
    let dropped: Vec<&Value> = medicines_before.iter().filter(|m| m["id"] != medicines[0]["id"]).collect();
    assert_eq!(dropped.len(), 1, "the medicine kept is one of the two filed");
    app.get(&surgery, &format!("MedicationStatement/{}", dropped[0]["id"].as_str().unwrap())).await.assert_status(410);
    // An older version arriving late (dated before the one filed) changes nothing.
    let effective = v1.split("<effectiveTime value=\"").nth(1).unwrap()[..8].to_owned();
    let v0 = v1
        .replace(&v1_id, "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d")
        .replace("<versionNumber value=\"1\"/>", "<versionNumber value=\"0\"/>")
        .replacen(
            &format!("<effectiveTime value=\"{effective}"),
            &format!("<effectiveTime value=\"{}", &format!("{}01", &effective[..6])),
            1,
        );
    assert!(effective[6..] != *"01", "the synthetic discharge day is never the 1st");
    let (status, said) = post(&app, &app.trust, "cda", v0.into_bytes()).await;
    assert_eq!(status, 200, "{said}");
    assert!(said.contains("a later version is filed; nothing changed"), "{said}");
    let compositions = search(format!("Composition?patient.identifier={NHS_SYSTEM}|{nhs}")).await;
    assert_eq!(compositions[0]["meta"]["versionId"], "2");
    assert_eq!(search(format!("MedicationStatement?patient.identifier={NHS_SYSTEM}|{nhs}")).await.len(), 1);

    // The same document id with other content is refused, and kept with its reason.
    let changed = String::from_utf8(cda.clone()).unwrap().replace("Recovered well", "Recovered slowly").into_bytes();
    let (status, said) = post(&app, &app.trust, "cda", changed).await;
    assert_eq!(status, 422, "{said}");
    assert!(said.contains("already filed with different content"), "{said}");
    // Broken XML: the line and column.
    let (status, said) =
        post(&app, &app.gp, "cda", b"<ClinicalDocument xmlns=\"urn:hl7-org:v3\">\n  <id>\n</ClinicalDocument>".to_vec()).await;
    assert_eq!(status, 422, "{said}");
    assert!(said.starts_with("refused at line 3, column 1: not well-formed XML"), "{said}");
    // An ITK3 section entry that is not in the Bundle.
    let mut dangling: Value = serde_json::from_slice(&itk3).unwrap();
    dangling["entry"][1]["resource"]["entry"][0]["resource"]["section"][1]["entry"][0]["reference"] =
        "urn:uuid:00000000-0000-4000-8000-000000000000".into();
    let (status, said) = post(&app, &app.trust, "itk3", serde_json::to_vec(&dangling).unwrap()).await;
    assert_eq!(status, 422, "{said}");
    assert!(said.contains("Bundle.entry[1].resource.entry[0].resource.section[1].entry[0]: the entry is not in the Bundle"), "{said}");

    let kept = app.rejected_inputs().await;
    assert_eq!(kept.len(), 3, "{kept:?}");
    assert_eq!(kept.iter().map(|k| k.format.as_str()).collect::<Vec<_>>(), ["itk3", "cda", "cda"]);
    assert_eq!(kept[1].publisher.as_deref(), Some("Y90001"), "kept with the client organisation that sent it");
    assert!(kept[2].reason.contains("different content"));

    // Only registered publishing clients with a token post records.
    let (status, _) = post(&app, &app.portal, "cda", cda.clone()).await;
    assert_eq!(status, 401, "a certificate alone publishes nothing");
    let (status, _) = post(&app, &app.unregistered, "cda", cda).await;
    assert_eq!(status, 403);
    assert_eq!(app.rejected_inputs().await.len(), 3, "refused clients leave nothing behind");
}
