//! GP extracts, EMIS Web-style and SystmOne-style: the synthetic generator's extracts translate
//! into resources every validator accepts, and file into the store patient by patient,
//! idempotently, with their labels; a later extract's deleted rows delete.

use gateway::demo::PRACTICES;
use gateway::ingest::file_extract;
use gateway::synthetic::{emis_extract, emis_open_records, systmone_extract};
use gateway::translate::Format;
use gateway::translate::codes::CodeMaps;
use gateway::translate::emis::ExtractFile;
use gateway::translate::translate_extract;
use serde_json::Value;
use tests::TestApp;

#[test]
fn synthetic_extracts_translate_into_resources_every_validator_accepts() {
    let indexes: Vec<usize> = (0..30).collect();
    let emis = translate_extract(Format::EmisCsv, &emis_extract(&PRACTICES[1], &indexes, "20260301120000"), &CodeMaps::demo()).unwrap();
    let systmone =
        translate_extract(Format::SystmOneCsv, &systmone_extract(&PRACTICES[1], &indexes, "20260301120000"), &CodeMaps::demo()).unwrap();
    let open =
        translate_extract(Format::EmisXml, &emis_open_records(&PRACTICES[1], &indexes, "20260301120000"), &CodeMaps::demo()).unwrap();
    assert!(emis.refused.is_empty() && systmone.refused.is_empty(), "{:?} {:?}", emis.refused, systmone.refused);
    assert!(open.refused.is_empty(), "{:?}", open.refused);
    assert_eq!((emis.patients.len(), systmone.patients.len(), open.patients.len()), (30, 30, 30));
    let validator = conformance::Validator::embedded().unwrap();
    let mut resources: Vec<(String, Value)> = Vec::new();
    let mut problems = Vec::new();
    let mut types = std::collections::BTreeMap::<String, usize>::new();
    for patient in emis.patients.iter().chain(&systmone.patients).chain(&open.patients) {
        for (index, entry) in patient.bundle["entry"].as_array().unwrap().iter().enumerate() {
            let resource = &entry["resource"];
            let type_name = resource["resourceType"].as_str().unwrap();
            *types.entry(type_name.to_owned()).or_default() += 1;
            let report = validator.validate(fhir_models::ResourceType::parse(type_name).unwrap(), resource);
            if !report.is_acceptable() {
                problems.push(format!("{} entry {index}: {:?}", patient.patient_guid, report.into_outcome().issue));
            }
            resources.push((format!("{} entry {index}", patient.patient_guid), resource.clone()));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    for (type_name, at_least) in [
        ("Patient", 90),
        ("Organization", 90),
        ("Encounter", 60),
        ("Observation", 180),
        ("Condition", 90),
        ("AllergyIntolerance", 30),
        ("Immunization", 60),
        ("MedicationStatement", 90),
        ("MedicationRequest", 90),
        ("Provenance", 90),
    ] {
        assert!(types.get(type_name).copied().unwrap_or(0) >= at_least, "{type_name}: {types:?}");
    }
    if let Some(tools) = tests::require_tool("HIE_TEST_TOOLS_DIR") {
        let values: Vec<Value> = resources.iter().map(|(_, resource)| resource.clone()).collect();
        for (name, program, script) in tests::independent_validators(&tools) {
            let verdicts = tests::run_validator(&program, &script, &values);
            let failures: Vec<String> =
                verdicts.iter().filter(|v| !v.ok).map(|v| format!("{}: {:?}", resources[v.index].0, v.issues)).collect();
            assert!(failures.is_empty(), "{name} refuses {} translated resources:\n{}", failures.len(), failures.join("\n"));
        }
    }
}

/// What the store holds: the extract is filed as the practice's own system, which no test
/// client is, so this reads the store directly.
async fn total(app: &TestApp, query: &str) -> i64 {
    app.stored(query).await.0
}

fn mark_deleted(files: &mut [ExtractFile], kind: &str, line: usize) {
    let file = files.iter_mut().find(|f| f.name.contains(kind)).unwrap();
    let text = String::from_utf8(file.bytes.clone()).unwrap();
    let mut lines: Vec<String> = text.split("\r\n").map(str::to_owned).collect();
    let (rest, _) = lines[line - 1].rsplit_once(',').unwrap();
    lines[line - 1] = format!("{rest},true");
    file.bytes = lines.join("\r\n").into_bytes();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_extract_is_filed_patient_by_patient_and_filing_it_again_changes_nothing() {
    let app = TestApp::spawn().await;
    let maps = CodeMaps::demo();
    let indexes: Vec<usize> = (0..10).collect();
    let extract = emis_extract(&PRACTICES[0], &indexes, "20260301120000");
    let expected = translate_extract(Format::EmisCsv, &extract, &maps).unwrap();
    let count = |type_name: &str| -> i64 {
        expected
            .patients
            .iter()
            .flat_map(|p| p.bundle["entry"].as_array().unwrap().iter())
            .filter(|e| e["resource"]["resourceType"] == type_name)
            .count() as i64
    };

    let report = file_extract(&app.fhir, Format::EmisCsv, &extract, &maps, None, "test").await.unwrap();
    assert_eq!((report.patients, report.filed, report.duplicates), (10, 10, 0), "{report:?}");
    assert!(report.refused.is_empty() && report.retry.is_empty(), "{report:?}");
    assert_eq!(report.unmapped_codes, 2, "the EMIS-local counselling code of patients 2 and 7");
    for type_name in [
        "Patient",
        "Encounter",
        "Observation",
        "Condition",
        "AllergyIntolerance",
        "Immunization",
        "MedicationStatement",
        "MedicationRequest",
        "Provenance",
    ] {
        assert_eq!(total(&app, type_name).await, count(type_name), "{type_name}");
    }
    assert_eq!(total(&app, "Organization").await, 1, "one practice, created once");
    // Labels, as the consent rules will read them.
    assert_eq!(
        total(&app, "Patient?_security=http://terminology.hl7.org/CodeSystem/v3-Confidentiality|R").await,
        1,
        "patient 7 is restricted"
    );
    assert_eq!(total(&app, "Observation?_security=http://terminology.hl7.org/CodeSystem/v3-Confidentiality|V").await, 2);
    // Coded as SNOMED CT, with the Read code the practice used.
    assert_eq!(total(&app, "Observation?code=http://snomed.info/sct|163030003").await, 10);
    assert_eq!(total(&app, "Observation?code=http://read.info/readv2|2469.").await, 10);
    let (_, patients) =
        app.stored(&format!("Patient?identifier=https://fhir.nhs.uk/Id/nhs-number|{}", gateway::demo::test_nhs_number(0))).await;
    let patient = &patients[0];
    assert_eq!(patient["generalPractitioner"][0]["display"], PRACTICES[0].name);
    let version = patient["meta"]["versionId"].clone();

    // The same extract again: recognised patient by patient, nothing written.
    let again = file_extract(&app.fhir, Format::EmisCsv, &extract, &maps, None, "test").await.unwrap();
    assert_eq!((again.filed, again.duplicates), (0, 10), "{again:?}");
    assert_eq!(total(&app, "Observation").await, count("Observation"));
    let (_, same) = app.stored(&format!("Patient?_id={}", patient["id"].as_str().unwrap())).await;
    assert_eq!(same[0]["meta"]["versionId"], version);

    // The next day's extract deletes patient 0's repeat medication and its first issue.
    let mut next = emis_extract(&PRACTICES[0], &indexes, "20260302120000");
    mark_deleted(&mut next, "Prescribing_DrugRecord", 2);
    mark_deleted(&mut next, "Prescribing_IssueRecord", 2);
    let delta = file_extract(&app.fhir, Format::EmisCsv, &next, &maps, None, "test").await.unwrap();
    assert_eq!((delta.filed, delta.duplicates), (10, 0), "{delta:?}");
    assert_eq!(total(&app, "MedicationStatement").await, count("MedicationStatement") - 1);
    assert_eq!(total(&app, "MedicationRequest").await, count("MedicationRequest") - 1);
    assert_eq!(total(&app, "Observation").await, count("Observation"), "updates, not duplicates");
    assert_eq!(total(&app, "Patient").await, 10);
}

#[tokio::test]
async fn a_patient_with_a_bad_row_is_refused_with_its_place_and_the_others_are_filed() {
    let app = TestApp::spawn().await;
    let indexes: Vec<usize> = (0..3).collect();
    let mut extract = emis_extract(&PRACTICES[2], &indexes, "20260301120000");
    let file = extract.iter_mut().find(|f| f.name.contains("CareRecord_Observation")).unwrap();
    let text = String::from_utf8(file.bytes.clone()).unwrap();
    // The first observation's code is one the extract does not define.
    let broken = text.replacen(",1006,", ",9999,", 1);
    assert_ne!(broken, text);
    file.bytes = broken.into_bytes();
    let report = file_extract(&app.fhir, Format::EmisCsv, &extract, &CodeMaps::demo(), None, "test").await.unwrap();
    assert_eq!((report.patients, report.filed), (3, 2), "{report:?}");
    assert_eq!(report.refused.len(), 1);
    assert!(
        report.refused[0].contains("CareRecord_Observation_")
            && report.refused[0].contains(":2: CodeId: code 9999 is not in Coding_ClinicalCode"),
        "{}",
        report.refused[0]
    );
    assert_eq!(total(&app, "Patient").await, 2, "the refused patient's record is not half-filed");
}

#[tokio::test]
async fn a_systmone_extract_is_filed_once_with_ctv3_mapped_and_removed_rows_deleted() {
    let app = TestApp::spawn().await;
    let maps = CodeMaps::demo();
    let indexes: Vec<usize> = (0..6).collect();
    let extract = systmone_extract(&PRACTICES[1], &indexes, "20260301120000");
    let report = file_extract(&app.fhir, Format::SystmOneCsv, &extract, &maps, None, "test").await.unwrap();
    assert_eq!((report.patients, report.filed), (6, 6), "{report:?}");
    assert_eq!(report.unmapped_codes, 2, "patients 1 and 5 have a practice-defined code");
    assert_eq!(total(&app, "Patient").await, 6);
    // Type 2 diabetes recorded in CTV3 only (patients 1 and 4) is found by its SNOMED concept.
    assert_eq!(total(&app, "Condition?code=http://snomed.info/sct|44054006").await, 2);
    assert_eq!(total(&app, "Condition?code=http://read.info/ctv3|X40J5").await, 2);
    assert_eq!(total(&app, "Immunization").await, 3);
    let again = file_extract(&app.fhir, Format::SystmOneCsv, &extract, &maps, None, "test").await.unwrap();
    assert_eq!((again.filed, again.duplicates), (0, 6));

    // The next extract marks patient 0's medication removed.
    let mut next = systmone_extract(&PRACTICES[1], &indexes, "20260302120000");
    let file = next.iter_mut().find(|f| f.name.starts_with("SRPrimaryCareMedication")).unwrap();
    let text = String::from_utf8(file.bytes.clone()).unwrap();
    let mut lines: Vec<String> = text.split("\r\n").map(str::to_owned).collect();
    lines[1] = lines[1].replacen(",N,", ",Y,", 1);
    file.bytes = lines.join("\r\n").into_bytes();
    let before = total(&app, "MedicationStatement").await;
    let delta = file_extract(&app.fhir, Format::SystmOneCsv, &next, &maps, None, "test").await.unwrap();
    assert_eq!(delta.filed, 6, "{delta:?}");
    assert_eq!(total(&app, "MedicationStatement").await, before - 1);
    assert_eq!(total(&app, "Observation").await, 12 + 2, "updates, not duplicates: two BP readings each, two practice codes");
}

#[tokio::test]
async fn a_patient_registered_twice_under_one_nhs_number_is_one_patient_not_two() {
    let app = TestApp::spawn().await;
    let mut extract = emis_extract(&PRACTICES[0], &[0, 1, 2], "20260301120000");
    let file = extract.iter_mut().find(|f| f.name.contains("Admin_Patient")).unwrap();
    let text = String::from_utf8(file.bytes.clone()).unwrap();
    let (first, second) = (gateway::demo::test_nhs_number(0).to_string(), gateway::demo::test_nhs_number(1).to_string());
    file.bytes = text.replacen(&second, &first, 1).into_bytes();
    let report = file_extract(&app.fhir, Format::EmisCsv, &extract, &CodeMaps::demo(), None, "test").await.unwrap();
    assert_eq!((report.filed, report.refused.len()), (3, 0), "{report:?}");
    assert_eq!(total(&app, &format!("Patient?identifier=https://fhir.nhs.uk/Id/nhs-number|{first}")).await, 1);
    assert_eq!(total(&app, "Patient").await, 2);
}

/// An extract as a GP system posts it: `multipart/form-data`, one part per file.
fn multipart(files: &[ExtractFile]) -> (String, Vec<u8>) {
    let boundary = "hie-extract-boundary-7d1c";
    let mut body = Vec::new();
    for file in files {
        let name = std::path::Path::new(&file.name).file_name().unwrap().to_string_lossy().into_owned();
        body.extend_from_slice(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\nContent-Type: text/csv\r\n\r\n")
                .as_bytes(),
        );
        body.extend_from_slice(&file.bytes);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_practice_s_gp_system_posts_its_extract_over_https_and_only_its_own() {
    let app = TestApp::spawn().await;
    let url = app.base.replace("/fhir/r4", "/ingest/emis-csv");
    let post = |client: &reqwest::Client, url: &str, files: &[ExtractFile]| {
        let (content_type, body) = multipart(files);
        client.post(url).header("content-type", content_type).body(body).send()
    };
    let indexes: Vec<usize> = (0..4).collect();
    // The test GP system is practice Y90001's.
    let own = emis_extract(&PRACTICES[0], &indexes, "20260301120000");
    let answer = post(&app.gp, &url, &own).await.unwrap();
    assert_eq!(answer.status(), 200);
    let outcome: Value = answer.json().await.unwrap();
    assert!(outcome["issue"][0]["diagnostics"].as_str().unwrap().contains("4 patients: 4 filed"), "{outcome}");
    assert_eq!(total(&app, "Patient").await, 4);
    let patients = app.search_all(&app.gp, "Patient").await;
    assert_eq!(patients.len(), 4, "the practice reads back what it filed");
    let observations = total(&app, "Observation").await;

    let again = post(&app.gp, &url, &own).await.unwrap();
    assert_eq!(again.status(), 200);
    let outcome: Value = again.json().await.unwrap();
    assert!(outcome["issue"][0]["diagnostics"].as_str().unwrap().contains("0 filed, 4 already filed"), "{outcome}");
    assert_eq!(total(&app, "Observation").await, observations);

    // Another practice's extract: every patient refused, saying why; nothing filed.
    let other = emis_extract(&PRACTICES[1], &[10, 11], "20260301120000");
    let answer = post(&app.gp, &url, &other).await.unwrap();
    assert_eq!(answer.status(), 422);
    let outcome: Value = answer.json().await.unwrap();
    let refusals: Vec<&str> = outcome["issue"].as_array().unwrap().iter().skip(1).map(|i| i["diagnostics"].as_str().unwrap()).collect();
    assert_eq!(refusals.len(), 2, "{outcome}");
    assert!(refusals.iter().all(|r| r.contains("practice Y90002's record; this client publishes for Y90001 only")), "{refusals:?}");
    assert_eq!(total(&app, "Patient").await, 4);

    // SystmOne practices post theirs the same way.
    let systmone = systmone_extract(&PRACTICES[0], &[20, 21], "20260301120000");
    let answer = post(&app.gp, &app.base.replace("/fhir/r4", "/ingest/systmone-csv"), &systmone).await.unwrap();
    assert_eq!(answer.status(), 200, "{}", answer.text().await.unwrap());
    assert_eq!(total(&app, "Patient").await, 6);

    // Only a GP system publishes an extract, and only as files.
    assert_eq!(post(&app.trust, &url, &own).await.unwrap().status(), 403);
    assert_eq!(post(&app.portal, &url, &own).await.unwrap().status(), 401);
    let not_multipart = app.gp.post(&url).header("content-type", "text/csv").body("PatientGuid\r\n").send().await.unwrap();
    assert_eq!(not_multipart.status(), 415);
    let bad = vec![ExtractFile { name: own[0].name.clone(), bytes: b"not,a\r\nvalid\"extract".to_vec() }];
    let answer = post(&app.gp, &url, &bad).await.unwrap();
    assert_eq!(answer.status(), 400, "an extract that cannot be read at all");
    let outcome: Value = answer.json().await.unwrap();
    assert!(outcome["issue"][0]["diagnostics"].as_str().unwrap().contains(".csv"), "the error names the file: {outcome}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_s_ingest_is_recorded_in_the_audit_trail_with_the_patients_it_wrote() {
    let app = TestApp::spawn().await;
    let dir = tempfile::tempdir().unwrap();
    for file in emis_extract(&PRACTICES[0], &[0, 1, 2], "20260301120000") {
        let name = std::path::Path::new(&file.name).file_name().unwrap().to_owned();
        std::fs::write(dir.path().join(name), &file.bytes).unwrap();
    }
    let settings = tests::test_settings(&app.pki, &app.issuers, app.database_url.clone());
    gateway::cli::ingest(&settings, Format::EmisCsv, &[dir.path().to_owned()], false, None).await.unwrap();
    assert_eq!(total(&app, "Patient").await, 3);
    let (_, patients) = app.stored("Patient").await;
    let events = app.audit_events().await;
    let asked = |event: &Value| -> String {
        use base64::Engine;
        let queries = event["entity"].as_array().into_iter().flatten().filter_map(|entity| entity["query"].as_str());
        queries.map(|query| String::from_utf8(base64::engine::general_purpose::STANDARD.decode(query).unwrap()).unwrap()).collect()
    };
    let runs: Vec<String> = events
        .iter()
        .filter(|event| asked(event).starts_with("CLI hie-gateway ingest --from emis-csv"))
        .map(|event| event.to_string())
        .collect();
    assert_eq!(runs.len(), 1, "one record for the run");
    for patient in &patients {
        let reference = format!("Patient/{}", patient["id"].as_str().unwrap());
        assert!(runs[0].contains(&reference), "the record names {reference}: {}", runs[0]);
    }
    assert!(runs[0].contains("operator"), "{}", runs[0]);
    // The trail still verifies with the run's record in it.
    let store = app.store().await;
    let verified = gateway::audit::verify(&store, &app.audit_key(), 0).await.unwrap();
    store.close().await;
    assert!(matches!(verified, gateway::audit::Verdict::Intact { .. }), "{verified:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emis_open_records_are_filed_once_whether_posted_together_or_one_by_one() {
    let app = TestApp::spawn().await;
    let url = app.base.replace("/fhir/r4", "/ingest/emis-xml");
    let records = emis_open_records(&PRACTICES[0], &[0, 1, 2], "20260301120000");
    let (content_type, body) = multipart(&records);
    let answer = app.gp.post(&url).header("content-type", content_type).body(body).send().await.unwrap();
    assert_eq!(answer.status(), 200);
    let outcome: Value = answer.json().await.unwrap();
    assert!(outcome["issue"][0]["diagnostics"].as_str().unwrap().contains("3 patients: 3 filed"), "{outcome}");
    assert_eq!(total(&app, "Patient").await, 3);
    assert_eq!(total(&app, "Encounter").await, 3);
    assert_eq!(total(&app, "Observation").await, 7, "two blood pressures each, and patient 2's counselling note");
    assert_eq!(total(&app, "Observation?_security=http://terminology.hl7.org/CodeSystem/v3-Confidentiality|V").await, 1);
    assert_eq!(total(&app, "Condition?code=http://snomed.info/sct|195967001").await, 3);
    assert_eq!(total(&app, "MedicationRequest").await, 3);
    // One record on its own, as the body: recognised, nothing written.
    let answer = app.gp.post(&url).header("content-type", "application/xml").body(records[1].bytes.clone()).send().await.unwrap();
    assert_eq!(answer.status(), 200);
    let outcome: Value = answer.json().await.unwrap();
    assert!(outcome["issue"][0]["diagnostics"].as_str().unwrap().contains("1 patients: 0 filed, 1 already filed"), "{outcome}");
    // A broken record is refused with its place; nothing of it is filed.
    let broken = String::from_utf8(records[0].bytes.clone()).unwrap().replacen("<Sex>", "<Sex>Q", 1);
    let answer = app.gp.post(&url).header("content-type", "application/xml").body(broken).send().await.unwrap();
    assert_eq!(answer.status(), 422);
    let outcome: Value = answer.json().await.unwrap();
    assert!(outcome["issue"][1]["diagnostics"].as_str().unwrap().contains(": Sex: "), "{outcome}");
    // Another practice's records are refused.
    let other = emis_open_records(&PRACTICES[1], &[5], "20260301120000");
    let answer = app.gp.post(&url).header("content-type", "application/xml").body(other[0].bytes.clone()).send().await.unwrap();
    assert_eq!(answer.status(), 422);
    assert_eq!(total(&app, "Patient").await, 3);
}
