//! Secondary use (research, planning, public health): served only to clients approved for the
//! purpose, read-only, and never of a patient who opted out — nationally (the National Data
//! Opt-out) or at their practice (a Type 1 opt-out: what that practice recorded). Direct care is
//! untouched by either.

use serde_json::{Value, json};
use tests::TestApp;

const NHS: &str = "https://fhir.nhs.uk/Id/nhs-number";
const ODS: &str = "https://fhir.nhs.uk/Id/ods-organization-code";
/// The research unit's organisation, and the practice (the test GP system's).
const RESEARCH_UNIT: &str = "RYY";
const PRACTICE: &str = "Y90001";

fn purposes() -> Value {
    let reason = |code: &str| json!({"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": code});
    json!([reason("HOPERAT"), reason("HRESCH"), reason("PUBHLTH")])
}

fn opt_out(patient: &str, practice: Option<&str>) -> Value {
    let mut provision = json!({"type": "deny", "purpose": purposes()});
    if let Some(practice) = practice {
        provision["actor"] = json!([{"role": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "CST"}]},
            "reference": {"identifier": {"system": ODS, "value": practice}}}]);
    }
    json!({"resourceType": "Consent", "status": "active",
        "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}]},
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-6"}]}],
        "patient": {"reference": format!("Patient/{patient}")}, "provision": provision})
}

fn observation(patient: &str, text: &str, labels: &[&str]) -> Value {
    let mut resource = json!({"resourceType": "Observation", "status": "final", "code": {"text": text},
        "subject": {"reference": format!("Patient/{patient}")}});
    if !labels.is_empty() {
        resource["meta"] = json!({"security": labels.iter().map(|code|
            json!({"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": code})).collect::<Vec<_>>()});
    }
    resource
}

fn texts(bundle: &Value) -> Vec<String> {
    let mut texts: Vec<String> = bundle["entry"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[])
        .iter()
        .filter_map(|entry| entry["resource"]["code"]["text"].as_str().map(str::to_owned))
        .collect();
    texts.sort();
    texts
}

/// A gateway with a research unit registered for HRESCH, and a minter of its analysts' tokens.
async fn with_research_unit() -> (TestApp, tests::ClientFiles) {
    let pki = tests::TestPki::new();
    let unit = pki.issue_client("research-unit", RESEARCH_UNIT, consent::ClientKind::Trust);
    let mut entry = unit.entry.clone();
    entry.secondary_uses = vec!["HRESCH".into()];
    let options = tests::TestOptions {
        backend: tests::Backend::from_env(),
        database_url: None,
        configure: Some(Box::new(move |settings| settings.clients.push(entry))),
    };
    (TestApp::spawn_with_pki(pki, options).await, unit)
}

fn analyst_token(app: &TestApp, purpose: &str) -> String {
    app.issuers.clinician.mint(
        tests::TEST_AUDIENCE,
        "analyst-1",
        3600,
        &json!({"scope": "user/*.rs", "requesting_organization": RESEARCH_UNIT, "purpose_of_use": purpose}),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secondary_use_honours_the_national_and_type_1_opt_outs() {
    let (app, unit) = with_research_unit().await;
    let token = |purpose: &str| analyst_token(&app, purpose);
    let researcher = tests::https_client_with_token(&app.pki, Some(&unit), Some(&token("HRESCH")));

    // Three patients registered at the practice: one without an opt-out, one opted out
    // nationally, one with a Type 1 opt-out at the practice.
    let mut ids = Vec::new();
    for (n, name) in ["open", "national", "type1"].into_iter().enumerate() {
        let nhs = gateway::demo::test_nhs_number(700 + n as u64).as_string();
        let patient = json!({"resourceType": "Patient", "identifier": [{"system": NHS, "value": nhs}], "name": [{"family": name}],
            "generalPractitioner": [{"identifier": {"system": ODS, "value": PRACTICE}}]});
        ids.push(app.create(&patient).await);
    }
    let (open, national, type1) = (&ids[0], &ids[1], &ids[2]);
    app.create(&opt_out(national, None)).await;
    app.create(&opt_out(type1, Some(PRACTICE))).await;
    for (patient, name) in [(open, "open"), (national, "national"), (type1, "type1")] {
        app.create(&observation(patient, &format!("{name} at the trust"), &[])).await;
        app.post(&app.gp, "Observation", &observation(patient, &format!("{name} at the practice"), &[])).await.assert_status(201);
    }
    app.create(&observation(open, "open, sensitive", &["HIV"])).await;

    // Search counts and pages only what may be used.
    let search = app.get(&researcher, "Observation?_total=accurate&_count=50").await;
    search.assert_status(200);
    assert_eq!(texts(&search.body), ["open at the practice", "open at the trust", "type1 at the trust"], "{}", search.text);
    assert_eq!(search.body["total"], 3);
    let patients = app.get(&researcher, "Patient?_total=accurate").await;
    assert_eq!(patients.body["total"], 2, "{}", patients.text);
    assert!(!patients.text.contains(national.as_str()));
    // The opted-out patient's record is as if it did not exist: a search names no refusal, a
    // read answers as a missing resource does.
    let targeted = app.get(&researcher, &format!("Observation?patient={national}&_total=accurate")).await;
    targeted.assert_status(200);
    assert_eq!(targeted.body["total"], 0);
    let withheld = app.get(&researcher, &format!("Patient/{national}")).await;
    let missing = app.get(&researcher, "Patient/no-such-patient").await;
    withheld.assert_status(404);
    assert_eq!(withheld.text.replace(national.as_str(), "X"), missing.text.replace("no-such-patient", "X"));
    app.get(&researcher, &format!("Patient/{open}")).await.assert_status(200);

    // Direct care is untouched: the practice sees its patients' whole record.
    let care = app.get(&app.gp, &format!("Observation?patient={national}&_total=accurate")).await;
    assert_eq!(texts(&care.body), ["national at the practice", "national at the trust"], "{}", care.text);
    let care = app.get(&app.gp, &format!("Observation?patient={type1}")).await;
    assert_eq!(texts(&care.body), ["type1 at the practice", "type1 at the trust"], "{}", care.text);

    // Read only, for the approved purpose only, by approved clients only.
    app.post(&researcher, "Observation", &observation(open, "written by research", &[])).await.assert_status(403);
    let planner = tests::https_client_with_token(&app.pki, Some(&unit), Some(&token("HOPERAT")));
    let refused = app.get(&planner, "Observation").await;
    refused.assert_status(403).assert_outcome();
    assert!(refused.text.contains("secondary-use"), "{}", refused.text);
    // The research unit's certificate serves research only, not direct care.
    let carer = tests::https_client_with_token(&app.pki, Some(&unit), Some(&token("TREAT")));
    app.get(&carer, &format!("Patient/{open}")).await.assert_status(403);
    let gp_research = app.issuers.clinician.mint(
        tests::TEST_AUDIENCE,
        "gp-1",
        3600,
        &json!({"scope": "user/*.rs", "requesting_organization": PRACTICE, "purpose_of_use": "HRESCH"}),
    );
    let gp_research = tests::https_client_with_token(&app.pki, Some(&app.pki.gp), Some(&gp_research));
    app.get(&gp_research, "Observation").await.assert_status(403);

    // The audit trail names the purpose and the rule that withheld the record.
    let events = app.audit_events().await;
    let read = events
        .iter()
        .find(|event| event["outcomeDesc"].as_str().is_some_and(|text| text.contains("secondary-use-opt-out")))
        .unwrap_or_else(|| panic!("the withheld read is audited: {events:?}"));
    assert_eq!(read["purposeOfEvent"][0]["coding"][0]["code"], "HRESCH");
    assert_eq!(read["outcome"], "4", "{read}");
}

/// A practice's extract records Type 1 opt-outs as coded entries; once filed, they are the
/// sharing wish the rules read — of what that practice recorded — so a research search gets
/// nothing the practice recorded of a patient who opted out there, and everything again once
/// they withdrew it. A later delta extract counts with what was filed before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_type_1_opt_out_in_a_gp_extract_keeps_the_practice_record_from_research() {
    use gateway::demo::{PRACTICES, test_nhs_number};
    use gateway::translate::{Format, codes::CodeMaps};
    let (app, unit) = with_research_unit().await;
    let researcher = tests::https_client_with_token(&app.pki, Some(&unit), Some(&analyst_token(&app, "HRESCH")));
    let maps = CodeMaps::demo();
    // Patient 9 opted out in 2019; patient 29 did too, and withdrew it in 2022 — at both
    // practices, whose extracts hold the same patients (one Patient each, by NHS number).
    let indexes: Vec<usize> = (0..30).collect();
    let emis = gateway::synthetic::emis_extract(&PRACTICES[0], &indexes, "20260301120000");
    let systmone = gateway::synthetic::systmone_extract(&PRACTICES[1], &indexes, "20260301120000");
    for (format, extract) in [(Format::EmisCsv, &emis), (Format::SystmOneCsv, &systmone)] {
        let report = gateway::ingest::file_extract(&app.fhir, format, extract, &maps, None, "test").await.unwrap();
        assert!(report.refused.is_empty() && report.retry.is_empty() && report.filed == 30, "{report:?}");
    }
    assert_eq!(app.stored("Consent?status=active").await.0, 2, "patient 9's opt-out at each practice");
    assert_eq!(app.stored("Consent?status=inactive").await.0, 2, "patient 29's, withdrawn at each practice");

    let patient_of = |index: u64| {
        let app = &app;
        async move {
            let (_, patients) = app.stored(&format!("Patient?identifier={NHS}|{}", test_nhs_number(index))).await;
            patients[0]["id"].as_str().unwrap().to_owned()
        }
    };
    let used = |patient: String| {
        let (app, researcher) = (&app, &researcher);
        async move {
            let records = app.get(researcher, &format!("Observation?patient={patient}&_total=accurate")).await;
            records.assert_status(200);
            let read = app.get(researcher, &format!("Patient/{patient}")).await;
            (records.body["total"].as_i64().unwrap(), read.status.as_u16())
        }
    };
    let (nine, twenty_nine, zero) = (patient_of(9).await, patient_of(29).await, patient_of(0).await);
    assert_eq!(used(nine.clone()).await, (0, 404), "opted out at both practices: nothing is used");
    let (both_practices, read) = used(twenty_nine.clone()).await;
    assert!(both_practices > 0 && read == 200);
    assert!(used(zero).await.0 > 0);

    // The practice deletes patient 29's withdrawal (entered in error): the opt-out stands again
    // for what that practice recorded, and only for that.
    let mut delta = gateway::synthetic::emis_extract(&PRACTICES[0], &indexes, "20260302120000");
    let observations = delta.iter_mut().find(|file| file.name.contains("CareRecord_Observation")).unwrap();
    let text = String::from_utf8(observations.bytes.clone()).unwrap();
    let lines: Vec<String> = text
        .split("\r\n")
        .map(|line| match line.starts_with("{9E000001") {
            true => {
                let (rest, confidential) = line.rsplit_once(',').unwrap();
                let (rest, _) = rest.rsplit_once(',').unwrap();
                format!("{rest},true,{confidential}")
            }
            false => line.to_owned(),
        })
        .collect();
    assert_ne!(lines.join("\r\n"), text, "the withdrawal row is in the extract");
    observations.bytes = lines.join("\r\n").into_bytes();
    let report = gateway::ingest::file_extract(&app.fhir, Format::EmisCsv, &delta, &maps, None, "test").await.unwrap();
    assert!(report.refused.is_empty() && report.retry.is_empty(), "{report:?}");
    assert_eq!(app.stored("Consent?status=active").await.0, 3);
    assert_eq!(app.stored("Consent").await.0, 4, "each practice's wish for a patient is updated in place, not added to");
    let (from_one_practice, read) = used(twenty_nine).await;
    assert!(0 < from_one_practice && from_one_practice < both_practices, "{from_one_practice} of {both_practices}");
    assert_eq!(read, 404, "the Patient was filed by the practice the opt-out is at");
    assert_eq!(used(nine.clone()).await, (0, 404));

    // Patient 9's opt-out row at the first practice is recoded (it was entered against the wrong
    // code): nothing there says opted out any more, so what that practice recorded is used again;
    // the other practice's opt-out still stands.
    let mut recoded = gateway::synthetic::emis_extract(&PRACTICES[0], &indexes, "20260303120000");
    let observations = recoded.iter_mut().find(|file| file.name.contains("CareRecord_Observation")).unwrap();
    let text = String::from_utf8(observations.bytes.clone()).unwrap();
    let changed = text.replace(",1011,", ",1006,");
    assert_ne!(changed, text, "the opt-out rows are in the extract");
    observations.bytes = changed.into_bytes();
    let report = gateway::ingest::file_extract(&app.fhir, Format::EmisCsv, &recoded, &maps, None, "test").await.unwrap();
    assert!(report.refused.is_empty() && report.retry.is_empty(), "{report:?}");
    let (from_one_practice, read) = used(nine).await;
    assert!(from_one_practice > 0, "the first practice's records are used again");
    assert_eq!(read, 200, "the Patient was filed by the first practice");
}
