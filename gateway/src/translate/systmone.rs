//! SystmOne-style Strategic Reporting CSV extracts (`SR*.csv`: Windows-1252 text, `dd MMM yyyy`
//! dates) → one FHIR R4 `transaction` Bundle per patient.
//!
//! Read here: `SRPatient`, `SRPatientRegistration`, `SROrganisation`, `SRCode`, `SRProblem`,
//! `SRPrimaryCareMedication`, `SRImmunisation`, `SRDrugSensitivity`; other files are ignored.
//! Every file starts with `RowIdentifier, IDOrganisationVisibleTo`; clinical files carry
//! `IDPatient` (the patient's `SRPatient.RowIdentifier`), `DateEvent`, `DateEventRecorded`,
//! `IDOrganisation` and `RemovedData` (a removed row becomes a conditional delete).
//! `SROrganisation` is read as `RowIdentifier, OrganisationName, NationalId` (the ODS code) —
//! its column names are not in the public schema notes, so the file is optional: without it the
//! registered practice is named by its SystmOne id only.
//!
//! Codes: SNOMED CT as the practice recorded it, the CTV3 code as a second coding; a CTV3 code
//! without a SNOMED concept is mapped through the NHS CTV3 table, or kept, flagged and counted.
//! Resources are keyed on the row identifiers (`urn:hie:systmone:<file>`), so re-sent extracts
//! and deltas apply as updates.

use std::collections::{BTreeMap, HashMap, HashSet};

use fhir_models::system::{CTV3, SNOMED_CT};
use serde_json::{Value, json};

use super::codes::CodeMaps;
use super::emis::{ExtractFile, PatientBundle, Translated, UNMAPPED_EXTENSION};
use super::gp::{self, set};
use super::rows::{DateStyle, Extract, ExtractError, Row, Table, read_extract};
use super::transaction::{TransactionBuilder, derived_id, query_value};

const PATIENT: &str = "SRPatient";
const REGISTRATION: &str = "SRPatientRegistration";
const ORGANISATION: &str = "SROrganisation";
const CODE: &str = "SRCode";
const PROBLEM: &str = "SRProblem";
const MEDICATION: &str = "SRPrimaryCareMedication";
const IMMUNISATION: &str = "SRImmunisation";
const SENSITIVITY: &str = "SRDrugSensitivity";
// Longest first: `SRPatientRegistration` before `SRPatient`.
const KINDS: [&str; 8] = [REGISTRATION, PATIENT, ORGANISATION, CODE, PROBLEM, MEDICATION, IMMUNISATION, SENSITIVITY];

fn kind_of(name: &str) -> Option<&'static str> {
    let base = name.rsplit(['/', '\\']).next().unwrap_or(name);
    let stem = base.split('.').next().unwrap_or(base);
    KINDS.into_iter().find(|kind| stem == *kind || stem.starts_with(&format!("{kind}_")))
}

const SYSTMONE_PATIENT: gp::PatientColumns =
    gp::PatientColumns { nhs_number: "NHSNumber", given: "FirstName", gender: "Gender", birth: "DateBirth", death: "DateDeath" };

fn identifier(kind: &str, value: &str) -> Value {
    json!({"system": format!("urn:hie:systmone:{kind}"), "value": value})
}

fn condition_on(kind: &str, value: &str) -> String {
    format!("identifier={}", query_value(&format!("urn:hie:systmone:{kind}|{value}")))
}

/// Translate a whole extract; fails whole only when it cannot be read at all.
pub fn translate(files: &[ExtractFile], maps: &CodeMaps) -> Result<Translated, ExtractError> {
    let Extract { tables, patients, recorded } =
        read_extract(files, kind_of, DateStyle::DayMonthName, PATIENT, "SRPatient_<yyyyMMddHHmmss>.csv")?;
    let empty = Table::default();
    let table = |kind: &str| tables.get(kind).unwrap_or(&empty);
    let organisations: HashMap<&str, (Option<&str>, &str)> = table(ORGANISATION)
        .rows()
        .filter_map(|row| Some((row.get("RowIdentifier")?, (row.get("NationalId"), row.get("OrganisationName").unwrap_or_default()))))
        .collect();
    // The latest registration of each patient names their practice.
    let mut registrations: HashMap<&str, &Row> = HashMap::new();
    for row in table(REGISTRATION).rows() {
        if row.flag("RemovedData")? || row.get("DateDeRegistration").is_some() {
            continue;
        }
        registrations.insert(row.require("IDPatient")?, row);
    }
    let problems: HashMap<&str, &Row> = table(PROBLEM).rows().filter_map(|row| Some((row.get("IDCode")?, row))).collect();

    let clinical = [CODE, MEDICATION, IMMUNISATION, SENSITIVITY];
    let mut by_patient: BTreeMap<&str, Vec<(&'static str, &Row)>> = BTreeMap::new();
    for kind in clinical {
        for row in table(kind).rows() {
            by_patient.entry(row.require("IDPatient")?).or_default().push((kind, row));
        }
    }
    let mut translated = Translated::default();
    let mut seen = HashSet::new();
    for row in patients.rows() {
        let id = row.require("RowIdentifier")?;
        if !seen.insert(id) {
            return Err(row.error("RowIdentifier", "a patient appears twice in SRPatient"));
        }
        let rows = by_patient.remove(id).unwrap_or_default();
        let practice = registrations.get(id).and_then(|registration| {
            let org = registration.get("IDOrganisation")?;
            Some(organisations.get(org).map(|(ods, name)| (org, *ods, *name)).unwrap_or((org, None, "")))
        });
        match translate_patient(row, &rows, practice, &problems, maps, &recorded) {
            Ok(bundle) => translated.patients.push(bundle),
            Err(error) => translated.refused.push((id.to_owned(), error)),
        }
    }
    for (id, rows) in by_patient {
        translated.refused.push((id.to_owned(), rows[0].1.error("IDPatient", "no SRPatient row for this patient in the extract")));
    }
    Ok(translated)
}

/// SNOMED CT as recorded, else the CTV3 map's; the CTV3 code kept as a second coding.
fn concept(
    row: &Row,
    maps: &CodeMaps,
    snomed_column: &str,
    ctv3_column: &str,
    text_columns: [&str; 2],
) -> Result<(Value, bool), ExtractError> {
    let ctv3 = row.get(ctv3_column);
    let text = text_columns.iter().find_map(|column| row.get(column));
    let snomed = row.get(snomed_column).or_else(|| ctv3.and_then(|code| maps.ctv3(code)));
    let mut codings = Vec::new();
    if let Some(snomed) = snomed {
        let mut coding = json!({"system": SNOMED_CT, "code": snomed});
        if let Some(display) = row.get("SNOMEDText").or(text) {
            coding["display"] = json!(display);
        }
        codings.push(coding);
    }
    if let Some(ctv3) = ctv3 {
        let mut coding = json!({"system": CTV3, "code": ctv3});
        if let Some(display) = row.get("CTV3Text").or(text) {
            coding["display"] = json!(display);
        }
        if snomed.is_none() {
            coding["extension"] = json!([{"url": UNMAPPED_EXTENSION, "valueBoolean": true}]);
        }
        codings.push(coding);
    }
    if codings.is_empty() {
        return Err(row.error(snomed_column, format!("neither {snomed_column} nor {ctv3_column} is given")));
    }
    let mut concept = json!({"coding": codings});
    if let Some(text) = text {
        concept["text"] = json!(text);
    }
    Ok((concept, snomed.is_none()))
}

fn translate_patient(
    patient: &Row,
    rows: &[(&'static str, &Row)],
    practice: Option<(&str, Option<&str>, &str)>,
    problems: &HashMap<&str, &Row>,
    maps: &CodeMaps,
    recorded: &str,
) -> Result<PatientBundle, ExtractError> {
    let id = patient.require("RowIdentifier")?;
    let digest = super::gp::rows_digest(patient, rows);
    let provenance_id = derived_id("systmone", &format!("{recorded}|{id}"));
    let mut bundle = TransactionBuilder::new(&provenance_id);
    let mut unmapped = 0;

    let practice_reference = match practice {
        Some((_, Some(ods), name)) => Some(gp::practice(&mut bundle, ods, name)),
        Some((org, None, _)) => {
            Some(json!({"identifier": identifier("organisation", org), "display": format!("SystmOne organisation {org}")}))
        }
        None => None,
    };
    let mut resource = gp::patient(patient, &SYSTMONE_PATIENT, identifier("patient", id), !patient.flag("RemovedData")?)?;
    if let Some(previous) = patient.get("PreviousSurname") {
        let mut names = resource["name"].as_array().cloned().unwrap_or_default();
        names.push(json!({"use": "old", "family": previous}));
        resource["name"] = json!(names);
    }
    if let Some(email) = patient.get("EmailAddress") {
        resource["telecom"] = json!([{"system": "email", "value": email, "use": "home"}]);
    }
    if let Some(practice) = &practice_reference {
        resource["generalPractitioner"] = json!([practice]);
    }
    let patient_condition = gp::patient_condition(&resource, condition_on("patient", id));
    let subject = bundle.upsert(resource, &patient_condition);
    let mut sources = vec![format!("{PATIENT} line {}", patient.line())];

    for (kind, row) in rows {
        sources.push(format!("{kind} line {}", row.line()));
        let row_id = row.require("RowIdentifier")?;
        let (resource_type, key) = match *kind {
            CODE if problems.contains_key(row_id) => ("Condition", "code"),
            CODE => ("Observation", "code"),
            MEDICATION => ("MedicationStatement", "medication"),
            IMMUNISATION => ("Immunization", "immunisation"),
            _ => ("AllergyIntolerance", "drug-sensitivity"),
        };
        if row.flag("RemovedData")? {
            bundle.delete(resource_type, &condition_on(key, row_id));
            continue;
        }
        let event = row.date_time("DateEvent", None)?;
        let entered = row.date_time("DateEventRecorded", None)?;
        let mut resource = match resource_type {
            "Condition" => {
                let (code, lacks) = concept(row, maps, "SNOMEDCode", "CTV3Code", ["SNOMEDText", "CTV3Text"])?;
                unmapped += usize::from(lacks);
                let problem = problems[row_id];
                let mut condition = gp::problem(code, &subject, event.clone(), entered.clone(), problem.date_time("DateEnd", None)?);
                if let Some(severity) = problem.get("Severity") {
                    condition["note"] = json!([{"text": format!("Severity: {severity}")}]);
                }
                condition
            }
            "Observation" => {
                let (code, lacks) = concept(row, maps, "SNOMEDCode", "CTV3Code", ["SNOMEDText", "CTV3Text"])?;
                unmapped += usize::from(lacks);
                let mut observation =
                    json!({"resourceType": "Observation", "status": "final", "code": code, "subject": {"reference": subject}});
                set(&mut observation, "effectiveDateTime", event.clone());
                if row.flag("IsNumeric")?
                    && let Some(value) = row.number("NumericValue")?
                {
                    let mut quantity = json!({"value": value});
                    if let Some(unit) = row.get("NumericUnit") {
                        quantity["unit"] = json!(unit);
                    }
                    if let Some(comparator) = row.get("NumericComparator").filter(|c| ["<", "<=", ">=", ">"].contains(c)) {
                        quantity["comparator"] = json!(comparator);
                    }
                    observation["valueQuantity"] = quantity;
                }
                observation
            }
            "MedicationStatement" => {
                let name = row.require("NameOfMedication")?;
                let mut medication = json!({"text": name});
                if let Some(dmd) = row.get("IDMultiLexDMD").filter(|code| code.bytes().all(|b| b.is_ascii_digit())) {
                    medication["coding"] = json!([{"system": SNOMED_CT, "code": dmd, "display": name}]);
                }
                let ended = row.date_time("DateMedicationEnd", None)?;
                let mut statement = json!({
                    "resourceType": "MedicationStatement",
                    "status": if ended.is_some() { "completed" } else { "active" },
                    "medicationCodeableConcept": medication,
                    "subject": {"reference": subject},
                });
                let mut period = json!({});
                if let Some(start) = row.date_time("DateMedicationStart", None)?.or(event.clone()) {
                    period["start"] = json!(start);
                }
                if let Some(end) = ended {
                    period["end"] = json!(end);
                }
                if period.as_object().is_some_and(|p| !p.is_empty()) {
                    statement["effectivePeriod"] = period;
                }
                if let Some(dosage) = row.get("MedicationDosage") {
                    statement["dosage"] = json!([{"text": dosage}]);
                }
                if row.flag("IsRepeatMedication")? {
                    statement["note"] = json!([{"text": "Repeat medication"}]);
                }
                statement
            }
            "Immunization" => {
                let (code, lacks) = concept(row, maps, "ImmsSNOMEDCode", "ImmsReadCode", ["VaccinationName", "ImmsSNOMEDCode"])?;
                unmapped += usize::from(lacks);
                let given = row
                    .get("VaccinationStatus")
                    .is_none_or(|status| status.eq_ignore_ascii_case("Given") || status.eq_ignore_ascii_case("Completed"));
                let mut immunization = json!({
                    "resourceType": "Immunization",
                    "status": if given { "completed" } else { "not-done" },
                    "vaccineCode": code,
                    "patient": {"reference": subject},
                    "occurrenceDateTime": event.clone().or(entered.clone()).unwrap_or_else(|| recorded.to_owned()),
                    "primarySource": true,
                });
                if let Some(batch) = row.get("VaccBatchNumber") {
                    immunization["lotNumber"] = json!(batch);
                }
                set(&mut immunization, "expirationDate", row.date_time("DateExpiry", Some("YMD"))?);
                immunization
            }
            _ => {
                let mut allergy = json!({
                    "resourceType": "AllergyIntolerance",
                    "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical",
                        "code": if row.get("DateEnded").is_some() { "inactive" } else { "active" }}]},
                    "category": ["medication"],
                    "code": {"text": format!("Drug sensitivity (SystmOne drug code {})", row.get("IDDrugCode").unwrap_or("not given"))},
                    "patient": {"reference": subject},
                });
                set(&mut allergy, "onsetDateTime", row.date_time("DateStarted", None)?.or(event.clone()));
                set(&mut allergy, "recordedDate", entered.clone());
                allergy
            }
        };
        resource["identifier"] = json!([identifier(key, row_id)]);
        bundle.upsert(resource, &condition_on(key, row_id));
    }

    let targets = bundle.full_urls();
    let author = match practice {
        Some((_, Some(ods), name)) => format!("{name} ({ods})"),
        Some((org, None, _)) => format!("SystmOne organisation {org}"),
        None => "SystmOne practice".into(),
    };
    let key = format!("{recorded}|{id}");
    let source = gp::PatientRows {
        format: "SystmOne",
        id: &provenance_id,
        recorded,
        author: &author,
        key: &key,
        sources: &sources,
        digest: &digest,
    };
    bundle.put(gp::provenance(&source, &targets));
    Ok(PatientBundle {
        patient_guid: id.to_owned(),
        organisation: practice.and_then(|(_, ods, _)| ods.map(str::to_owned)),
        bundle: bundle.finish(),
        provenance_id,
        digest,
        unmapped_codes: unmapped,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::demo::PRACTICES;
    use crate::synthetic::systmone_extract;

    fn resources<'a>(bundle: &'a Value, resource_type: &str) -> Vec<&'a Value> {
        bundle["entry"].as_array().unwrap().iter().map(|e| &e["resource"]).filter(|r| r["resourceType"] == resource_type).collect()
    }

    #[test]
    fn an_extract_becomes_one_bundle_per_patient_with_ctv3_mapped_and_dates_read() {
        let files = systmone_extract(&PRACTICES[1], &[0, 1, 2, 3], "20260301120000");
        let translated = translate(&files, &CodeMaps::demo()).unwrap();
        assert!(translated.refused.is_empty(), "{:?}", translated.refused);
        assert_eq!(translated.patients.len(), 4);
        let first = &translated.patients[0];
        assert_eq!(first.organisation.as_deref(), Some("Y90002"));
        let patient = resources(&first.bundle, "Patient")[0];
        assert_eq!(patient["identifier"][0]["value"], crate::demo::test_nhs_number(0).as_string());
        assert_eq!(patient["birthDate"], crate::demo::person(0).birth_date);
        assert_eq!(patient["generalPractitioner"][0]["identifier"]["value"], "Y90002");
        let systolic = resources(&first.bundle, "Observation").into_iter().find(|o| o["code"]["coding"][0]["code"] == "163030003").unwrap();
        assert_eq!(systolic["code"]["coding"][1]["system"], CTV3);
        assert_eq!(systolic["valueQuantity"]["unit"], "mmHg");
        assert!(systolic["effectiveDateTime"].as_str().unwrap().starts_with("2025-01-01T10:00:00"));
        // Patient 1's diabetes is recorded in CTV3 only (X40J5): the CTV3 table maps it.
        let diabetes = resources(&translated.patients[1].bundle, "Condition")[0];
        assert_eq!(diabetes["code"]["coding"][0], json!({"system": SNOMED_CT, "code": "44054006", "display": "Type 2 diabetes mellitus"}));
        assert_eq!(diabetes["onsetDateTime"], "2015-01-01");
        // Patient 1 also has a practice-defined code nothing maps: kept, flagged, counted.
        assert_eq!(translated.patients[1].unmapped_codes, 1);
        let immunization = resources(&first.bundle, "Immunization")[0];
        assert_eq!((immunization["lotNumber"].as_str(), immunization["status"].as_str()), (Some("FLU2025-17"), Some("completed")));
        assert_eq!(resources(&first.bundle, "AllergyIntolerance").len(), 1);
    }

    #[test]
    fn removed_rows_delete_and_bad_dates_say_where() {
        let mut files = systmone_extract(&PRACTICES[1], &[0, 1], "20260301120000");
        let medication = files.iter_mut().find(|f| f.name.starts_with("SRPrimaryCareMedication")).unwrap();
        let text = String::from_utf8(medication.bytes.clone()).unwrap();
        let mut lines: Vec<String> = text.split("\r\n").map(str::to_owned).collect();
        lines[1] = lines[1].replacen(",N,", ",Y,", 1);
        medication.bytes = lines.join("\r\n").into_bytes();
        let patients = files.iter_mut().find(|f| f.name.starts_with("SRPatient_")).unwrap();
        let text = String::from_utf8(patients.bytes.clone()).unwrap();
        let birth = crate::demo::person(1).birth_date;
        let year = &birth[..4];
        patients.bytes = text.replacen(&format!(" {year},"), " 19X0,", 1).into_bytes();
        let translated = translate(&files, &CodeMaps::demo()).unwrap();
        let deletes: Vec<&Value> =
            translated.patients[0].bundle["entry"].as_array().unwrap().iter().filter(|e| e["request"]["method"] == "DELETE").collect();
        assert_eq!(deletes.len(), 1);
        assert!(deletes[0]["request"]["url"].as_str().unwrap().starts_with("MedicationStatement?identifier="));
        assert_eq!(translated.refused.len(), 1);
        let error = translated.refused[0].1.to_string();
        assert!(error.starts_with("SRPatient_20260301120000.csv:3: DateBirth:"), "{error}");
    }

    #[test]
    fn windows_1252_text_is_read() {
        let files = vec![ExtractFile {
            name: "SRPatient_20260301120000.csv".into(),
            bytes: b"RowIdentifier,IDOrganisationVisibleTo,FirstName,Surname,NHSNumber,DateBirth\r\n1,9,Ren\xe9e,O\x92Neill,9449305552,05 Mar 1980\r\n".to_vec(),
        }];
        let translated = translate(&files, &CodeMaps::demo()).unwrap();
        let patient = resources(&translated.patients[0].bundle, "Patient")[0];
        assert_eq!(patient["name"][0]["given"][0], "Ren\u{e9}e");
        assert_eq!(patient["name"][0]["family"], "O\u{2019}Neill");
        assert_eq!(patient["birthDate"], "1980-03-05");
    }
}
