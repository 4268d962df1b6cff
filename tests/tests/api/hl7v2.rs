//! HL7 v2: translation of third-party messages, and the MLLP feed end to end (ACK after
//! commit, ERR segments, idempotent re-sends, the dead-letter store, concurrent senders).

use std::collections::BTreeMap;

use serde_json::Value;
use tests::{MllpSender, TestApp, ack_segment};

const NHS: &str = "https://fhir.nhs.uk/Id/nhs-number";

/// Every message of the corpus either translates into a Bundle whose every resource passes the
/// R4 schema, the UK Core rules and the independent validators, with the resources its type
/// calls for, or is refused with the place and reason listed in `expected-rejections.txt`.
#[test]
fn third_party_messages_translate_or_are_refused_with_a_reason() {
    let root = tests::fixture_path("hl7v2");
    let expected: BTreeMap<String, (String, String)> = std::fs::read_to_string(root.join("expected-rejections.txt"))
        .unwrap()
        .lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .map(|line| {
            let mut parts = line.splitn(3, '\t');
            let key = parts.next().unwrap().to_owned();
            (key, (parts.next().unwrap_or("").to_owned(), parts.next().unwrap_or("").to_owned()))
        })
        .collect();
    let validator = conformance::Validator::embedded().unwrap();
    let mut files: Vec<std::path::PathBuf> = walk(&root).into_iter().filter(|p| p.extension().is_some_and(|e| e == "hl7")).collect();
    files.sort();
    let mut translated = 0;
    let mut resources: Vec<(String, Value)> = Vec::new();
    let mut problems: Vec<String> = Vec::new();
    let mut refused: BTreeMap<String, (String, String)> = BTreeMap::new();
    for file in &files {
        let name = file.strip_prefix(&root).unwrap().display().to_string();
        let bytes = std::fs::read(file).unwrap();
        let text = gateway::translate::hl7v2::message::decode(&bytes);
        let messages = gateway::translate::split_hl7v2_messages(&text);
        if messages.is_empty() {
            refused.insert(name.clone(), (String::new(), "no message".into()));
        }
        for (line, message) in messages {
            let key = if line == 1 { name.clone() } else { format!("{name}:{line}") };
            match gateway::translate::hl7v2::translate(&message) {
                Ok(result) => {
                    translated += 1;
                    let entries = result.bundle["entry"].as_array().unwrap();
                    let types: Vec<&str> = entries.iter().map(|e| e["resource"]["resourceType"].as_str().unwrap()).collect();
                    let needs: &[&str] = match (result.header.message_code.as_str(), result.header.trigger_event.as_str()) {
                        ("ADT", "A01" | "A02" | "A03" | "A04") => &["Patient", "Encounter", "Provenance"],
                        ("ORU", _) => &["Patient", "DiagnosticReport", "Provenance"],
                        ("MDM", _) => &["Patient", "DocumentReference", "Provenance"],
                        ("ORM" | "OML", _) => &["Patient", "ServiceRequest", "Provenance"],
                        ("VXU", _) => &["Patient", "Immunization", "Provenance"],
                        ("SIU", _) => &["Patient", "Appointment", "Provenance"],
                        _ => &["Patient", "Provenance"],
                    };
                    for need in needs {
                        if !types.contains(need) {
                            problems.push(format!("{key}: no {need} in {types:?}"));
                        }
                    }
                    for (index, entry) in entries.iter().enumerate() {
                        let resource = &entry["resource"];
                        let resource_type = fhir_models::ResourceType::parse(resource["resourceType"].as_str().unwrap()).unwrap();
                        let report = validator.validate(resource_type, resource);
                        if !report.is_acceptable() {
                            problems.push(format!("{key} entry {index}: {:?}", report.into_outcome().issue));
                        }
                        resources.push((format!("{key} entry {index}"), resource.clone()));
                    }
                }
                Err(error) => {
                    assert!(
                        !error.reason.is_empty() && error.location.segment.is_some() || error.location.sequence > 0,
                        "{key}: {error:?}"
                    );
                    refused.insert(key, (error.location.to_string(), error.reason));
                }
            }
        }
    }
    for (key, (location, reason)) in &refused {
        match expected.get(key) {
            Some((expected_location, expected_reason)) if expected_location == location && reason.contains(expected_reason.as_str()) => {}
            Some(other) => problems.push(format!("{key}: refused at {location}: {reason}; expected {other:?}")),
            None => problems.push(format!("{key}: refused at {location}: {reason} (not an expected rejection)")),
        }
    }
    for key in expected.keys().filter(|key| !refused.contains_key(*key)) {
        problems.push(format!("{key}: expected to be refused, but translated"));
    }
    assert!(problems.is_empty(), "{} problems:\n{}", problems.len(), problems.join("\n"));
    assert!(translated >= 100, "only {translated} messages translated");
    eprintln!("{translated} messages translated into {} resources; {} refused as expected", resources.len(), refused.len());

    if let Some(tools) = tests::require_tool("HIE_TEST_TOOLS_DIR") {
        let values: Vec<Value> = resources.iter().map(|(_, resource)| resource.clone()).collect();
        for (validator, program, script) in tests::independent_validators(&tools) {
            let verdicts = tests::run_validator(&program, &script, &values);
            let failures: Vec<String> =
                verdicts.iter().filter(|v| !v.ok).map(|v| format!("{}: {:?}", resources[v.index].0, v.issues)).collect();
            assert!(failures.is_empty(), "{validator} refuses {} translated resources:\n{}", failures.len(), failures.join("\n"));
        }
    }
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() { found.extend(walk(&path)) } else { found.push(path) }
    }
    found
}

/// An ADT message from a UK trust's PAS.
fn adt(event: &str, control_id: &str, nhs_number: &str, visit: &str, extra: &str) -> String {
    let pv1 = match event {
        "A28" | "A31" => "PV1|1|N".to_owned(),
        "A03" => format!(
            "PV1|1|I|WARD9^B1^2^RRK||||C123456^JONES^ANN^^^DR^^^GMC|||MED||||19|||||{visit}^^^RRK^VN|||||||||||||||||01||||||||20240305100000|20240309143000"
        ),
        "A02" => format!(
            "PV1|1|I|WARD9^B1^2^RRK|||WARD4^A^1^RRK|C123456^JONES^ANN^^^DR^^^GMC|||MED||||19|||||{visit}^^^RRK^VN|||||||||||||||||||||||||20240305100000"
        ),
        _ => format!(
            "PV1|1|I|WARD4^A^1^RRK||||C123456^JONES^ANN^^^DR^^^GMC|||MED||||19|||||{visit}^^^RRK^VN|||||||||||||||||||||||||20240305100000"
        ),
    };
    format!(
        "MSH|^~\\&|PAS|RRK|HIE|HIE|20240305101500||ADT^{event}^ADT_{event}|{control_id}|P|2.4\r\
         EVN|{event}|20240305101500\r\
         PID|1||{nhs_number}^^^NHS^NH~K{visit}^^^RRK^MR||{extra}^OLIVIA^^^MS^^L||19800101|F|||1 High St^^Leeds^^LS1 1AA^GBR^H||0113 496 0000^PRN^PH|||||||||||||||||||01\r\
         PD1|||Leeds Practice^^Y90001|G1234567^SMITH^JOHN\r\
         {pv1}"
    )
}

/// What the store holds (the feed files as its sending organisation, which no test client is).
async fn total(app: &TestApp, query: &str) -> i64 {
    app.stored(query).await.0
}

fn msa(ack: &str) -> Vec<String> {
    ack_segment(ack, "MSA").unwrap_or_else(|| panic!("no MSA in {ack:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admission_is_acknowledged_after_it_is_committed_and_later_events_update_the_same_encounter() {
    let app = TestApp::spawn().await;
    let mut pas = MllpSender::connect(&app.mllp).await;
    let ack = pas.send(&adt("A01", "M1", "9449305552", "V100", "TAYLOR")).await;
    assert_eq!(msa(&ack)[1..3], ["AA", "M1"], "{ack}");
    assert!(ack.starts_with("MSH|^~\\&|HIE|HIE|PAS|RRK|"), "{ack}");
    // The ACK came after the commit: the records are there now.
    let patients = app.search_all(&app.gp, &format!("Patient?identifier={NHS}|9449305552")).await;
    assert_eq!(patients.len(), 1);
    assert_eq!(patients[0]["name"][0]["family"], "TAYLOR");
    assert_eq!(patients[0]["generalPractitioner"][0]["identifier"]["value"], "Y90001");
    assert_eq!(patients[0]["identifier"][0]["extension"][0]["valueCodeableConcept"]["coding"][0]["code"], "01");
    let encounters = app.search_all(&app.gp, "Encounter?identifier=urn:hie:rrk:vn|V100").await;
    assert_eq!(encounters.len(), 1);
    let encounter_id = encounters[0]["id"].as_str().unwrap().to_owned();
    assert_eq!(encounters[0]["status"], "in-progress");
    assert_eq!(encounters[0]["class"]["code"], "IMP");
    assert_eq!(encounters[0]["subject"]["reference"], format!("Patient/{}", patients[0]["id"].as_str().unwrap()));
    assert_eq!(encounters[0]["period"]["start"], "2024-03-05T10:00:00+00:00");

    for (event, control_id) in [("A02", "M2"), ("A08", "M3"), ("A03", "M4")] {
        let ack = pas.send(&adt(event, control_id, "9449305552", "V100", "TAYLOR-SMITH")).await;
        assert_eq!(msa(&ack)[1], "AA", "{event}: {ack}");
    }
    let encounter = app.get(&app.gp, &format!("Encounter/{encounter_id}")).await;
    assert_eq!(encounter.body["status"], "finished");
    assert_eq!(encounter.body["period"]["end"], "2024-03-09T14:30:00+00:00");
    assert_eq!(encounter.body["location"][0]["location"]["display"], "WARD9, room B1, bed 2");
    assert_eq!(encounter.body["meta"]["versionId"], "4", "A01, A02, A08 and A03 each made one version");
    assert_eq!(total(&app, "Encounter").await, 1, "never duplicated");
    assert_eq!(total(&app, "Patient").await, 1);
    let patient = app.get(&app.gp, &format!("Patient?identifier={NHS}|9449305552")).await;
    assert_eq!(patient.body["entry"][0]["resource"]["name"][0]["family"], "TAYLOR-SMITH", "A08 updated the name");

    // A13 cancels the discharge: in progress again, no end.
    let ack = pas.send(&adt("A13", "M5", "9449305552", "V100", "TAYLOR-SMITH")).await;
    assert_eq!(msa(&ack)[1], "AA", "{ack}");
    let encounter = app.get(&app.gp, &format!("Encounter/{encounter_id}")).await;
    assert_eq!(encounter.body["status"], "in-progress");
    assert!(encounter.body["period"].get("end").is_none(), "{}", encounter.body);
    // Every message left a Provenance naming it, targeting what it wrote.
    let provenances = app.search_all(&app.gp, &format!("Provenance?target=Encounter/{encounter_id}")).await;
    assert_eq!(provenances.len(), 5);
    assert!(provenances.iter().any(|p| p["entity"][0]["what"]["identifier"]["value"] == "PAS|RRK|M1"));

    // Every message is in the audit trail, recorded before its ACK: the sender, the message,
    // its outcome, what it wrote and whose record that is.
    let events = app.audit_events().await;
    let query = |event: &Value| -> String {
        event["entity"].as_array().unwrap().iter().find_map(|e| e["query"].as_str()).map_or_else(String::new, |q| {
            String::from_utf8(base64::Engine::decode(&base64::engine::general_purpose::STANDARD, q).unwrap()).unwrap()
        })
    };
    let messages: Vec<&Value> = events.iter().filter(|event| query(event).starts_with("MLLP ")).collect();
    assert_eq!(messages.len(), 5, "one record per message");
    let first = messages[0];
    assert_eq!(query(first), "MLLP ADT^A01 M1 from PAS|RRK ACK AA");
    assert_eq!((first["action"].as_str(), first["outcome"].as_str()), (Some("E"), Some("0")));
    assert_eq!(first["agent"][1]["who"]["identifier"]["value"], "RRK", "the sending facility");
    let patient_id = patients[0]["id"].as_str().unwrap();
    let references: Vec<&str> = first["entity"].as_array().unwrap().iter().filter_map(|e| e["what"]["reference"].as_str()).collect();
    assert!(references.contains(&format!("Patient/{patient_id}").as_str()), "{references:?}");
    assert!(references.contains(&format!("Encounter/{encounter_id}/_history/1").as_str()), "{references:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resent_message_changes_nothing_and_a_reused_control_id_is_refused() {
    let app = TestApp::spawn().await;
    let mut pas = MllpSender::connect(&app.mllp).await;
    let message = adt("A01", "R1", "9690937286", "V7", "EVANS");
    assert_eq!(msa(&pas.send(&message).await)[1], "AA");
    let first = app.search_all(&app.gp, "Encounter").await;
    // The same bytes again, on another connection: acknowledged, nothing written.
    let mut again = MllpSender::connect(&app.mllp).await;
    let ack = again.send(&message).await;
    assert_eq!(msa(&ack)[1..3], ["AA", "R1"]);
    assert!(msa(&ack)[3].contains("duplicate"), "{ack}");
    let second = app.search_all(&app.gp, "Encounter").await;
    assert_eq!(first, second, "the Encounter is unchanged, same version");
    assert_eq!(total(&app, "Patient").await, 1);
    let history = app.get(&app.gp, &format!("Encounter/{}/_history", first[0]["id"].as_str().unwrap())).await;
    assert_eq!(history.body["entry"].as_array().unwrap().len(), 1, "one version");
    // The re-send's record names what the first filing wrote and whose record it is in, so a
    // filing whose own record was lost (its sender told to send again) is in the trail too.
    let events = app.audit_events().await;
    let resent =
        events.iter().rev().find(|event| event.to_string().contains("filed earlier by the same input")).expect("the re-send's record");
    let encounter = format!("Encounter/{}", first[0]["id"].as_str().unwrap());
    assert!(resent.to_string().contains(&encounter), "{resent}");
    let patient = app.stored("Patient").await.1[0]["id"].as_str().unwrap().to_owned();
    assert!(resent["entity"].as_array().unwrap().iter().any(|e| e["what"]["reference"] == format!("Patient/{patient}")), "{resent}");

    // The same control id with other content: refused, kept, the record untouched.
    let ack = pas.send(&adt("A01", "R1", "9690937286", "V7", "EVANS-JONES")).await;
    assert_eq!(msa(&ack)[1], "AE", "{ack}");
    let err = ack_segment(&ack, "ERR").unwrap();
    assert!(err[1].starts_with("MSH^1^10^205"), "{ack}");
    assert_eq!(app.search_all(&app.gp, "Encounter").await, first);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_messages_get_an_error_naming_the_place_and_are_kept() {
    let app = TestApp::spawn().await;
    let mut pas = MllpSender::connect(&app.mllp).await;
    // v2.4: ERR-1 (segment^sequence^field^code&text&HL70357).
    let ack = pas.send(&adt("A01", "B1", "9449305553", "V1", "BAD")).await;
    assert_eq!(msa(&ack)[1..3], ["AE", "B1"], "{ack}");
    assert!(msa(&ack)[3].contains("NHS number"), "{ack}");
    assert_eq!(ack_segment(&ack, "ERR").unwrap()[1], "PID^1^3^102&Data type error&HL70357", "{ack}");
    // v2.5.1: ERR-2 location, ERR-3 code, ERR-8 the reason in full.
    let unsupported_event = "MSH|^~\\&|PAS|RRK|||20240305101500||BAR^P01^BAR_P01|B2|P|2.5.1\rPID|1||9449305552^^^NHS^NH";
    let ack = pas.send(unsupported_event).await;
    assert_eq!(msa(&ack)[1], "AR", "{ack}");
    let err = ack_segment(&ack, "ERR").unwrap();
    assert_eq!((err[2].as_str(), err[3].as_str()), ("MSH^1^9^1", "200^Unsupported message type^HL70357"), "{ack}");
    // The reason, with the component separator escaped as HL7 requires.
    assert!(err[8].contains("BAR\\S\\P01 is not translated"), "{ack}");
    let old_version = "MSH|^~\\&|PAS|RRK|||20240305101500||ADT^A01|B3|P|2.2\rPID|1||9449305552^^^NHS^NH";
    let ack = pas.send(old_version).await;
    assert_eq!(msa(&ack)[1], "AR");
    // A version it does not read is answered in 2.5.1's layout.
    assert!(ack.contains("|MSH^1^12^1|203^Unsupported version id^HL70357|"), "{ack}");
    let training = adt("A01", "B4", "9449305552", "V1", "TRAINING").replace("|B4|P|2.4", "|B4|T|2.4");
    let ack = pas.send(&training).await;
    assert_eq!(msa(&ack)[1], "AR", "{ack}");
    assert!(ack.contains("202&Unsupported processing id"), "{ack}");
    let no_visit = adt("A02", "B5", "9449305552", "", "NOVISIT").replace("|20240305100000", "|");
    let ack = pas.send(&no_visit).await;
    assert_eq!(msa(&ack)[1], "AE", "{ack}");
    assert!(ack.contains("PV1^1^19^101"), "{ack}");
    let garbage = "this is not HL7";
    let ack = pas.send(garbage).await;
    assert_eq!(msa(&ack)[1], "AE", "{ack}");

    assert_eq!(total(&app, "Patient").await, 0, "nothing was half-filed");
    // Each refusal is in the dead-letter store with its reason and the bytes as received.
    let kept = app.rejected_inputs().await;
    assert_eq!(kept.len(), 6, "{kept:?}");
    let garbage_kept = kept.iter().find(|k| k.content == garbage.as_bytes()).expect("the unreadable message is kept too");
    assert_eq!(garbage_kept.channel, "mllp");
    let nhs = kept.iter().find(|k| k.control_id.as_deref() == Some("B1")).unwrap();
    assert_eq!(nhs.location.as_deref(), Some("PID-3.1"));
    assert_eq!(nhs.sender.as_deref(), Some("PAS|RRK"));
    assert!(nhs.reason.contains("9449305553"));
    let metrics = reqwest::get(format!("{}/metrics", app.ops)).await.unwrap().text().await.unwrap();
    assert!(metrics.contains("hie_hl7v2_messages_total{ack=\"AE\"} 3"), "{metrics}");
    assert!(metrics.contains("hie_hl7v2_messages_total{ack=\"AR\"} 3"), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_merge_retires_the_prior_record_in_favour_of_the_surviving_one() {
    let app = TestApp::spawn().await;
    let mut pas = MllpSender::connect(&app.mllp).await;
    let register = |control_id: &str, mrn: &str, family: &str| {
        format!(
            "MSH|^~\\&|PAS|RRK|||20240305101500||ADT^A28^ADT_A05|{control_id}|P|2.5.1\rEVN|A28|20240305101500\rPID|1||{mrn}^^^RRK^MR||{family}^SAM||19900101|M\rPV1|1|N"
        )
    };
    assert_eq!(msa(&pas.send(&register("G1", "K1", "OLDNAME")).await)[1], "AA");
    assert_eq!(msa(&pas.send(&register("G2", "K2", "NEWNAME")).await)[1], "AA");
    let merge = "MSH|^~\\&|PAS|RRK|||20240305111500||ADT^A40^ADT_A39|G3|P|2.5.1\rEVN|A40|20240305111500\rPID|1||K2^^^RRK^MR||NEWNAME^SAM||19900101|M\rMRG|K1^^^RRK^MR||||||OLDNAME^SAM";
    let ack = pas.send(merge).await;
    assert_eq!(msa(&ack)[1], "AA", "{ack}");
    // The feed's own records, as filed (no practice is named in these registrations).
    let prior = &app.stored("Patient?identifier=urn:hie:rrk:mr|K1").await.1[0];
    let surviving = &app.stored("Patient?identifier=urn:hie:rrk:mr|K2").await.1[0];
    assert_eq!(prior["active"], false);
    assert_eq!(prior["link"][0]["type"], "replaced-by");
    assert_eq!(prior["link"][0]["other"]["reference"], format!("Patient/{}", surviving["id"].as_str().unwrap()));
    assert_eq!(surviving["link"][0]["type"], "replaces");
    assert_eq!(surviving["link"][0]["other"]["reference"], format!("Patient/{}", prior["id"].as_str().unwrap()));
    assert_eq!(total(&app, "Patient").await, 2, "merged, not duplicated");
    assert_eq!(msa(&pas.send(merge).await)[1], "AA");
    assert_eq!(total(&app, "Patient").await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_and_documents_become_reports_observations_and_document_references() {
    let app = TestApp::spawn().await;
    let mut lab = MllpSender::connect(&app.mllp).await;
    let oru = |control_id: &str, status: &str, potassium: &str| {
        format!(
            "MSH|^~\\&|LIMS|RRK|||20240306090000||ORU^R01^ORU_R01|{control_id}|P|2.5.1\r\
             PID|1||9449305552^^^NHS^NH||TAYLOR^OLIVIA||19800101|F\r\
             OBR|1|PL77^ICE|FL88^LIMS|U&E^Urea and electrolytes^L|||20240306080000|||||||||||||||20240306085500|||{status}\r\
             OBX|1|NM|2823-3^Potassium^LN||{potassium}|mmol/L^^UCUM|3.5-5.3|N|||{status}\r\
             OBX|2|NM|2951-2^Sodium^LN||139|mmol/L^^UCUM|133-146|N|||{status}\r\
             NTE|1||Haemolysed sample\r\
             OBX|3|SN|33914-3^eGFR^LN||>^90|mL/min/1.73m2^^UCUM||||||{status}"
        )
    };
    // The PAS admitted the patient with an address; the lab's PID is thin.
    assert_eq!(msa(&lab.send(&adt("A01", "ADT1", "9449305552", "V100", "TAYLOR")).await)[1], "AA");
    assert_eq!(msa(&lab.send(&oru("L1", "P", "6.1")).await)[1], "AA");
    let patient = &app.search_all(&app.gp, &format!("Patient?identifier={NHS}|9449305552")).await[0];
    assert_eq!(patient["address"][0]["postalCode"], "LS1 1AA", "a result does not overwrite what ADT said about the patient");
    assert_eq!(patient["meta"]["versionId"], "1");
    let reports = app.search_all(&app.gp, "DiagnosticReport?identifier=urn:hie:lims:filler-order-number|FL88").await;
    assert_eq!(reports.len(), 1);
    assert_eq!(reports[0]["status"], "preliminary");
    assert_eq!(reports[0]["result"].as_array().unwrap().len(), 3);
    let potassium = &app.search_all(&app.gp, "Observation?code=http://loinc.org|2823-3").await[0];
    assert_eq!(
        potassium["valueQuantity"],
        serde_json::json!({"value": 6.1, "unit": "mmol/L", "system": "http://unitsofmeasure.org", "code": "mmol/L"})
    );
    assert_eq!(potassium["referenceRange"][0]["high"]["value"], 5.3);
    let sodium = &app.search_all(&app.gp, "Observation?code=http://loinc.org|2951-2").await[0];
    assert_eq!(sodium["note"][0]["text"], "Haemolysed sample");
    let egfr = &app.search_all(&app.gp, "Observation?code=http://loinc.org|33914-3").await[0];
    assert_eq!(egfr["valueQuantity"]["comparator"], ">");
    // The corrected, final result replaces the preliminary one: same resources, new versions.
    assert_eq!(msa(&lab.send(&oru("L2", "C", "4.2")).await)[1], "AA");
    assert_eq!(total(&app, "Observation").await, 3);
    assert_eq!(total(&app, "DiagnosticReport").await, 1);
    let corrected = app.get(&app.gp, &format!("Observation/{}", potassium["id"].as_str().unwrap())).await;
    assert_eq!(corrected.body["status"], "corrected");
    assert_eq!(corrected.body["valueQuantity"]["value"], 4.2);

    let mdm = "MSH|^~\\&|EPR|RRK|||20240309150000||MDM^T02^MDM_T02|D1|P|2.5.1\r\
               EVN|T02|20240309150000\r\
               PID|1||9449305552^^^NHS^NH||TAYLOR^OLIVIA||19800101|F\r\
               PV1|1|I|WARD9||||||||||||||||V100^^^RRK^VN\r\
               TXA|1|DS^Discharge summary|TX|20240309143000|C123456^JONES^ANN|||||||DOC42^EPR|||||AU\r\
               OBX|1|TX|DS^Discharge summary||Admitted with chest pain.~Discharged home on aspirin.||||||F";
    let ack = lab.send(mdm).await;
    assert_eq!(msa(&ack)[1], "AA", "{ack}");
    let documents = app
        .search_all(&app.gp, &format!("DocumentReference?patient.identifier={NHS}|9449305552&type=http://snomed.info/sct|373942005"))
        .await;
    assert_eq!(documents.len(), 1, "a GP system finds the discharge summary");
    let document = &documents[0];
    assert_eq!(document["docStatus"], "final");
    assert_eq!(document["masterIdentifier"]["value"], "DOC42");
    assert_eq!(document["context"]["encounter"][0]["identifier"]["value"], "V100");
    use base64::Engine;
    let text = base64::engine::general_purpose::STANDARD.decode(document["content"][0]["attachment"]["data"].as_str().unwrap()).unwrap();
    assert_eq!(String::from_utf8(text).unwrap(), "Admitted with chest pain.\nDischarged home on aspirin.");
    // A discharge summary is an R4 document too, as CDA and ITK3 ones are.
    let composition = app.get(&app.gp, document["context"]["related"][0]["reference"].as_str().unwrap()).await;
    composition.assert_status(200);
    let composition = &composition.body;
    assert_eq!((composition["status"].as_str(), composition["identifier"]["value"].as_str()), (Some("final"), Some("DOC42")));
    assert_eq!(composition["type"]["coding"][0]["code"], "373942005");
    assert_eq!(composition["date"], "2024-03-09T14:30:00+00:00");
    assert_eq!(composition["encounter"]["identifier"]["value"], "V100");
    assert_eq!(composition["section"][0]["code"]["coding"][0]["code"], "887181000000106");
    assert_eq!(
        composition["section"][0]["text"]["div"],
        "<div xmlns=\"http://www.w3.org/1999/xhtml\"><p>Admitted with chest pain.</p><p>Discharged home on aspirin.</p></div>"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn immunisations_and_appointments_are_filed_and_later_messages_update_them() {
    let app = TestApp::spawn().await;
    let mut trust = MllpSender::connect(&app.mllp).await;
    assert_eq!(msa(&trust.send(&adt("A01", "ADT1", "9449305552", "V100", "TAYLOR")).await)[1], "AA");
    let vxu = |control_id: &str, action: &str| {
        format!(
            "MSH|^~\\&|IMMS|RRK|||20240310093000||VXU^V04^VXU_V04|{control_id}|P|2.5.1\r\
             PID|1||9449305552^^^NHS^NH||TAYLOR^OLIVIA||19800101|F\r\
             ORC|RE||IMM-77^RRK\r\
             RXA|0|1|20240309101500||39114911000001105^Fluenz Tetra nasal spray^SCT|0.2|mL^milliliter^UCUM||00||||||AB1234|20241130||||CP|{action}\r\
             RXR|NS^Nasal^HL70162"
        )
    };
    assert_eq!(msa(&trust.send(&vxu("V1", "A")).await)[1], "AA");
    let immunizations = app.search_all(&app.gp, &format!("Immunization?patient.identifier={NHS}|9449305552")).await;
    assert_eq!(immunizations.len(), 1, "the registered practice sees the immunisation");
    assert_eq!((immunizations[0]["status"].as_str(), immunizations[0]["lotNumber"].as_str()), (Some("completed"), Some("AB1234")));
    // The sender withdraws the record: the same Immunization, now entered in error.
    assert_eq!(msa(&trust.send(&vxu("V2", "D")).await)[1], "AA");
    let withdrawn = app.get(&app.gp, &format!("Immunization/{}", immunizations[0]["id"].as_str().unwrap())).await;
    assert_eq!((withdrawn.body["status"].as_str(), withdrawn.body["meta"]["versionId"].as_str()), (Some("entered-in-error"), Some("2")));
    assert_eq!(total(&app, "Immunization").await, 1);

    let siu = |event: &str, control_id: &str, start: &str| {
        format!(
            "MSH|^~\\&|PAS|RRK|||20240310093000||SIU^{event}^SIU_S12|{control_id}|P|2.5.1\r\
             SCH||APT-900^RRK|||||||20|min|||||||||||||||Booked\r\
             TQ1|1||||||{start}\r\
             PID|1||9449305552^^^NHS^NH||TAYLOR^OLIVIA||19800101|F\r\
             RGS|1\r\
             AIL|1||CLINIC2^^^RRK"
        )
    };
    assert_eq!(msa(&trust.send(&siu("S12", "S1", "20240320091500")).await)[1], "AA");
    assert_eq!(msa(&trust.send(&siu("S13", "S2", "20240327091500")).await)[1], "AA");
    let appointments = app.search_all(&app.gp, &format!("Appointment?actor:Patient.identifier={NHS}|9449305552")).await;
    assert_eq!(appointments.len(), 1, "a reschedule moves the booking, it does not add one");
    assert_eq!(
        (appointments[0]["start"].as_str(), appointments[0]["end"].as_str()),
        (Some("2024-03-27T09:15:00+00:00"), Some("2024-03-27T09:35:00Z"))
    );
    assert_eq!(msa(&trust.send(&siu("S15", "S3", "20240327091500")).await)[1], "AA");
    let cancelled = app.get(&app.gp, &format!("Appointment/{}", appointments[0]["id"].as_str().unwrap())).await;
    assert_eq!(cancelled.body["status"], "cancelled");
    // Re-sending the whole feed changes nothing.
    for message in [vxu("V1", "A"), vxu("V2", "D"), siu("S12", "S1", "20240320091500"), siu("S15", "S3", "20240327091500")] {
        assert_eq!(msa(&trust.send(&message).await)[1], "AA");
    }
    assert_eq!((total(&app, "Immunization").await, total(&app, "Appointment").await), (1, 1));
    assert_eq!(app.get(&app.gp, &format!("Appointment/{}", appointments[0]["id"].as_str().unwrap())).await.body["meta"]["versionId"], "3");
}

/// Four senders at once, each on its own connection: every message ACKed AA, the store holds
/// exactly what the messages describe, and sending everything again changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_senders_are_all_acknowledged_and_resending_everything_duplicates_nothing() {
    let app = TestApp::spawn().await;
    let per_sender: usize = std::env::var("HIE_TEST_MLLP_MESSAGES").ok().and_then(|v| v.parse().ok()).unwrap_or(60);
    let patients_per_sender = per_sender / 3;
    let messages = |sender: usize| -> Vec<String> {
        (0..per_sender)
            .map(|n| {
                let patient = n % patients_per_sender;
                let number = gateway::demo::test_nhs_number((sender * 10_000 + patient) as u64).as_string();
                let event = ["A01", "A08", "A03"][n / patients_per_sender];
                adt(event, &format!("S{sender}-{n}"), &number, &format!("V{sender}-{patient}"), "LOAD")
                    .replace("|PAS|RRK|", &format!("|PAS{sender}|RRK|"))
            })
            .collect()
    };
    let send_all = |address: String| async move {
        let senders = (0..4).map(|sender| {
            let address = address.clone();
            let batch = messages(sender);
            tokio::spawn(async move {
                let mut connection = MllpSender::connect(&address).await;
                let mut codes = Vec::new();
                for message in &batch {
                    codes.push(msa(&connection.send(message).await)[1].clone());
                }
                codes
            })
        });
        let mut codes = Vec::new();
        for sender in senders {
            codes.extend(sender.await.unwrap());
        }
        codes
    };
    let codes = send_all(app.mllp.clone()).await;
    assert_eq!(codes.len(), 4 * per_sender);
    assert!(codes.iter().all(|code| code == "AA"), "{codes:?}");
    let expected_patients = (4 * patients_per_sender) as i64;
    assert_eq!(total(&app, "Patient").await, expected_patients);
    assert_eq!(total(&app, "Encounter").await, expected_patients);
    assert_eq!(total(&app, "Encounter?status=finished").await, expected_patients);
    assert_eq!(total(&app, "Provenance").await, (4 * per_sender) as i64);
    let versions = |resources: Vec<Value>| {
        let mut versions: Vec<(String, String)> =
            resources.iter().map(|r| (r["id"].as_str().unwrap().to_owned(), r["meta"]["versionId"].as_str().unwrap().to_owned())).collect();
        versions.sort();
        versions
    };
    let before =
        (versions(app.search_all(&app.gp, "Encounter?_count=500").await), versions(app.search_all(&app.gp, "Patient?_count=500").await));
    let codes = send_all(app.mllp.clone()).await;
    assert!(codes.iter().all(|code| code == "AA"));
    let after =
        (versions(app.search_all(&app.gp, "Encounter?_count=500").await), versions(app.search_all(&app.gp, "Patient?_count=500").await));
    assert_eq!(before, after, "no resource got a new version");
    assert_eq!(total(&app, "Patient").await, expected_patients);
    assert_eq!(total(&app, "Encounter").await, expected_patients);
    assert_eq!(total(&app, "Provenance").await, (4 * per_sender) as i64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_frame_is_refused_and_the_connection_closed() {
    let app = TestApp::spawn_with(tests::TestOptions {
        backend: tests::Backend::from_env(),
        database_url: None,
        configure: Some(Box::new(|settings| settings.mllp.max_message_bytes = 1024)),
    })
    .await;
    let mut sender = MllpSender::connect(&app.mllp).await;
    let ack = sender.send(&format!("{}\rNTE|1||{}", adt("A01", "BIG", "9449305552", "V1", "X"), "x".repeat(2000))).await;
    assert_eq!(msa(&ack)[1], "AE", "{ack}");
    assert!(ack.contains("longer than this gateway takes"), "{ack}");
    assert_eq!(sender.read_ack().await, None, "the connection is closed");
    let mut again = MllpSender::connect(&app.mllp).await;
    assert_eq!(msa(&again.send(&adt("A01", "SMALL", "9449305552", "V1", "X")).await)[1], "AA");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trusts_and_gp_systems_can_post_messages_over_https_too() {
    let app = TestApp::spawn().await;
    let url = app.base.replace("/fhir/r4", "/ingest/hl7v2");
    let good = adt("A01", "H1", "9449305552", "V1", "HTTPS");
    let bad = adt("A01", "H2", "9449305553", "V2", "HTTPS");
    let post =
        |client: &reqwest::Client, body: String| client.post(&url).header("content-type", "x-application/hl7-v2+er7").body(body).send();
    let answer = post(&app.trust, format!("{good}\r\n{bad}")).await.unwrap();
    assert_eq!(answer.status(), 422);
    let outcome: Value = answer.json().await.unwrap();
    assert_eq!(outcome["resourceType"], "OperationOutcome");
    assert_eq!(outcome["issue"][0]["severity"], "information");
    assert!(outcome["issue"][0]["diagnostics"].as_str().unwrap().contains("\"H1\" filed"), "{outcome}");
    assert_eq!(outcome["issue"][1]["severity"], "error");
    assert!(outcome["issue"][1]["diagnostics"].as_str().unwrap().contains("refused at PID-3.1"), "{outcome}");
    assert_eq!(total(&app, "Patient").await, 1);

    let answer = post(&app.gp, good.clone()).await.unwrap();
    assert_eq!(answer.status(), 200);
    let outcome: Value = answer.json().await.unwrap();
    assert!(outcome["issue"][0]["diagnostics"].as_str().unwrap().contains("already filed"), "{outcome}");

    assert_eq!(post(&app.portal, good.clone()).await.unwrap().status(), 401, "a certificate alone publishes nothing");
    assert_eq!(post(&app.unregistered, good.clone()).await.unwrap().status(), 403);
    let unknown = app.trust.post(app.base.replace("/fhir/r4", "/ingest/xml")).body("{}").send().await.unwrap();
    assert_eq!(unknown.status(), 400);
    assert!(unknown.text().await.unwrap().contains("unknown format \\\"xml\\\""));
    let empty = post(&app.trust, "hello".into()).await.unwrap();
    assert_eq!(empty.status(), 422, "a body that is not HL7 v2 is refused and kept");
    // Kept with the organisation of the client that posted it, which a replay publishes as again
    // (whatever MSH-4 says).
    let kept = app.rejected_inputs().await;
    assert_eq!(kept.len(), 2, "{kept:?}");
    assert!(kept.iter().all(|k| k.channel == "http" && k.publisher.as_deref() == Some(app.pki.trust.entry.ods.as_ref())), "{kept:?}");
}
