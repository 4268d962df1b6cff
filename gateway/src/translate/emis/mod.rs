//! EMIS Web-style CSV extracts (versions 5.x) → one FHIR R4 `transaction` Bundle per patient.
//!
//! An extract is a set of files named `<n>_<Domain>_<File>_<yyyyMMddHHmmss>_<agreement>.csv`
//! (or simply `<Domain>_<File>.csv`), each with a header row. Read here: `Admin_Organisation`,
//! `Admin_Patient`, `Coding_ClinicalCode`, `Coding_DrugCode`, `CareRecord_Consultation`,
//! `CareRecord_Observation`, `CareRecord_Problem`, `Prescribing_DrugRecord`,
//! `Prescribing_IssueRecord`; other files are ignored. Columns are found by header name.
//!
//! Each patient's records become one Bundle of conditional upserts keyed on EMIS's GUIDs (so a
//! re-sent extract, or a delta, applies as updates), `Deleted = true` rows become conditional
//! deletes, and a Provenance names the extract and the file rows it came from. A row that cannot
//! be read refuses its patient's whole Bundle (never half a record), with the file, line and
//! column; other patients are unaffected.
//!
//! Labels (DESIGN §4): `IsConfidential` → v3-Confidentiality `V` (practice-confidential: never
//! leaves the practice); a patient's `SpineSensitive` → v3-Confidentiality `R` (restricted,
//! the PDS "S-flag"). Codes: SNOMED CT from `Coding_ClinicalCode` first, the Read code the
//! practice used kept as a second coding; a code with no SNOMED concept keeps its Read coding,
//! is flagged (`unmapped`) and counted.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde_json::{Value, json};

use super::codes::CodeMaps;
use super::gp;
use super::rows::{DateStyle, Extract, Row, Table, read_extract};
use super::transaction::{TransactionBuilder, derived_id, query_value};

pub use super::rows::{ExtractError, ExtractFile};

pub mod open;
mod records;

use fhir_models::system::{READ_V2, SNOMED_CT as SNOMED, V3_CONFIDENTIALITY as CONFIDENTIALITY};

/// Marks a coding the translator could not map to SNOMED CT (kept as the practice sent it).
pub const UNMAPPED_EXTENSION: &str = "urn:hie:translation:unmapped-code";
/// EMIS's own codes (`ReadTermId` starting `EMIS`), which no national table maps.
pub const EMIS_LOCAL_CODE: &str = "urn:hie:emis:clinical-code";

/// One patient's translated records.
#[derive(Debug)]
pub struct PatientBundle {
    pub patient_guid: String,
    /// The ODS code of the practice the patient's records came from.
    pub organisation: Option<String>,
    pub bundle: Value,
    /// The Provenance's id: the same for the same extract and patient, so a re-sent extract is
    /// recognised.
    pub provenance_id: String,
    /// RFC 6920 digest of the patient's rows, in file order.
    pub digest: String,
    /// Codes kept without a SNOMED CT concept.
    pub unmapped_codes: usize,
}

/// A translated extract: a Bundle per patient, and the patients refused with the reason.
#[derive(Debug, Default)]
pub struct Translated {
    pub patients: Vec<PatientBundle>,
    pub refused: Vec<(String, ExtractError)>,
}

const PATIENT: &str = "Admin_Patient";
const ORGANISATION: &str = "Admin_Organisation";
const CLINICAL_CODE: &str = "Coding_ClinicalCode";
const DRUG_CODE: &str = "Coding_DrugCode";
const CONSULTATION: &str = "CareRecord_Consultation";
const OBSERVATION: &str = "CareRecord_Observation";
const PROBLEM: &str = "CareRecord_Problem";
const DRUG_RECORD: &str = "Prescribing_DrugRecord";
const ISSUE_RECORD: &str = "Prescribing_IssueRecord";
const KINDS: [&str; 9] = [PATIENT, ORGANISATION, CLINICAL_CODE, DRUG_CODE, CONSULTATION, OBSERVATION, PROBLEM, DRUG_RECORD, ISSUE_RECORD];

/// What a file is, from its name.
fn kind_of(name: &str) -> Option<&'static str> {
    let base = name.rsplit(['/', '\\']).next().unwrap_or(name);
    let stem = base.strip_suffix(".csv").or_else(|| base.strip_suffix(".CSV")).unwrap_or(base);
    KINDS.into_iter().find(|kind| {
        stem == *kind || stem.contains(&format!("_{kind}_")) || stem.starts_with(&format!("{kind}_")) || stem.ends_with(&format!("_{kind}"))
    })
}

/// Translate a whole extract. Fails whole only when the extract cannot be read at all (no
/// patient file, a file without a column every row needs, bytes that are not CSV).
pub fn translate(files: &[ExtractFile], maps: &CodeMaps) -> Result<Translated, ExtractError> {
    let Extract { tables, patients, recorded } =
        read_extract(files, kind_of, DateStyle::Iso, PATIENT, "<n>_<Domain>_<File>_<yyyyMMddHHmmss>_<agreement>.csv")?;
    let agreement = files.iter().find_map(|file| agreement_of(&file.name)).unwrap_or_default();
    let empty = Table::default();
    let table = |kind: &str| tables.get(kind).unwrap_or(&empty);
    let codes = CodeBook::new(table(CLINICAL_CODE), table(DRUG_CODE), maps)?;
    let organisations = Organisations::new(table(ORGANISATION))?;
    let problems: HashSet<&str> = table(PROBLEM).rows().filter_map(|row| row.get("ObservationGuid")).collect();
    let problem_rows: HashMap<&str, &Row> = table(PROBLEM).rows().filter_map(|row| Some((row.get("ObservationGuid")?, row))).collect();

    // Every clinical row, grouped by patient, in file order.
    let clinical = [CONSULTATION, OBSERVATION, DRUG_RECORD, ISSUE_RECORD];
    let mut by_patient: BTreeMap<&str, Vec<(&'static str, &Row)>> = BTreeMap::new();
    for kind in clinical {
        for row in table(kind).rows() {
            let guid = row.require("PatientGuid")?;
            by_patient.entry(guid).or_default().push((kind, row));
        }
    }
    let mut translated = Translated::default();
    let mut seen = HashSet::new();
    for row in patients.rows() {
        let guid = row.require("PatientGuid")?;
        if !seen.insert(guid) {
            return Err(row.error("PatientGuid", "a patient appears twice in Admin_Patient"));
        }
        let rows = by_patient.remove(guid).unwrap_or_default();
        let context = Context {
            codes: &codes,
            organisations: &organisations,
            problems: &problems,
            problem_rows: &problem_rows,
            recorded: &recorded,
            agreement: &agreement,
        };
        match translate_patient(&context, row, &rows) {
            Ok(bundle) => translated.patients.push(bundle),
            Err(error) => translated.refused.push((guid.to_owned(), error)),
        }
    }
    // Records of a patient the extract does not describe cannot be filed against anyone.
    for (guid, rows) in by_patient {
        let (_, row) = rows[0];
        translated.refused.push((guid.to_owned(), row.error("PatientGuid", "no Admin_Patient row for this patient in the extract")));
    }
    Ok(translated)
}

fn agreement_of(name: &str) -> Option<String> {
    let base = name.rsplit(['/', '\\']).next()?.strip_suffix(".csv")?;
    let last = base.rsplit('_').next()?;
    (last.len() == 36 && last.matches('-').count() == 4).then(|| last.to_owned())
}

const EMIS_PATIENT: gp::PatientColumns =
    gp::PatientColumns { nhs_number: "NhsNumber", given: "GivenName", gender: "Sex", birth: "DateOfBirth", death: "DateOfDeath" };

struct Context<'a> {
    codes: &'a CodeBook,
    organisations: &'a Organisations,
    problems: &'a HashSet<&'a str>,
    problem_rows: &'a HashMap<&'a str, &'a Row>,
    recorded: &'a str,
    agreement: &'a str,
}

/// `Coding_ClinicalCode` and `Coding_DrugCode`, by CodeId.
struct CodeBook {
    clinical: HashMap<String, ClinicalCode>,
    drugs: HashMap<String, (String, Option<String>)>,
}

struct ClinicalCode {
    term: String,
    read: Option<String>,
    /// An EMIS-local code.
    local: Option<String>,
    snomed: Option<String>,
    category: String,
}

impl CodeBook {
    fn new(clinical: &Table, drugs: &Table, maps: &CodeMaps) -> Result<Self, ExtractError> {
        let mut book = Self { clinical: HashMap::new(), drugs: HashMap::new() };
        for row in clinical.rows() {
            let term_id = row.get("ReadTermId");
            let local = term_id.filter(|id| id.starts_with("EMIS")).map(str::to_owned);
            // Otherwise ReadTermId is the 5-character Read code and a 2-digit term code (`H33..00`).
            let read = term_id.filter(|id| !id.starts_with("EMIS")).map(|id| id.get(..5).unwrap_or(id).to_owned());
            // The practice system's SNOMED concept, else the national Read map's.
            let snomed = row
                .get("SnomedCTConceptId")
                .map(str::to_owned)
                .or_else(|| read.as_deref().and_then(|read| maps.read_v2(read)).map(str::to_owned));
            let code = ClinicalCode {
                term: row.get("Term").unwrap_or_default().to_owned(),
                read,
                local,
                snomed,
                category: row.get("EmisCodeCategoryDescription").unwrap_or_default().to_owned(),
            };
            book.clinical.insert(row.require("CodeId")?.to_owned(), code);
        }
        for row in drugs.rows() {
            book.drugs.insert(
                row.require("CodeId")?.to_owned(),
                (row.get("Term").unwrap_or_default().to_owned(), row.get("DmdProductCodeId").map(str::to_owned)),
            );
        }
        Ok(book)
    }

    /// The row's clinical code as a CodeableConcept, and whether it lacks a SNOMED concept.
    fn clinical(&self, row: &Row, column: &str) -> Result<(Value, &ClinicalCode, bool), ExtractError> {
        let id = row.require(column)?;
        let code = self.clinical.get(id).ok_or_else(|| row.error(column, format!("code {id} is not in Coding_ClinicalCode")))?;
        let mut codings = Vec::new();
        if let Some(snomed) = &code.snomed {
            codings.push(json!({"system": SNOMED, "code": snomed, "display": code.term}));
        }
        for (system, original) in [(READ_V2, &code.read), (EMIS_LOCAL_CODE, &code.local)] {
            if let Some(original) = original {
                let mut coding = json!({"system": system, "code": original, "display": code.term});
                if code.snomed.is_none() {
                    coding["extension"] = json!([{"url": UNMAPPED_EXTENSION, "valueBoolean": true}]);
                }
                codings.push(coding);
            }
        }
        if codings.is_empty() {
            return Err(row.error(column, format!("code {id} has no SNOMED CT concept, Read code or EMIS code")));
        }
        Ok((json!({"coding": codings, "text": code.term}), code, code.snomed.is_none()))
    }

    fn drug(&self, row: &Row) -> Result<Value, ExtractError> {
        let id = row.require("CodeId")?;
        let (term, dmd) = self.drugs.get(id).ok_or_else(|| row.error("CodeId", format!("drug code {id} is not in Coding_DrugCode")))?;
        let codings: Vec<Value> = dmd.iter().map(|dmd| json!({"system": SNOMED, "code": dmd, "display": term})).collect();
        Ok(json!({"coding": codings, "text": term}))
    }
}

/// `Admin_Organisation`: GUID → ODS code and name.
struct Organisations(HashMap<String, (Option<String>, String)>);

impl Organisations {
    fn new(table: &Table) -> Result<Self, ExtractError> {
        let mut map = HashMap::new();
        for row in table.rows() {
            let ods = row.get("ODSCode").map(str::to_owned);
            if let Some(ods) = &ods
                && fhir_models::OdsCode::parse(ods).is_err()
            {
                return Err(row.error("ODSCode", format!("{ods:?} is not an ODS code")));
            }
            map.insert(row.require("OrganisationGuid")?.to_owned(), (ods, row.get("OrganisationName").unwrap_or_default().to_owned()));
        }
        Ok(Self(map))
    }

    fn get(&self, guid: Option<&str>) -> Option<&(Option<String>, String)> {
        self.0.get(guid?)
    }
}

pub(crate) fn identifier(kind: &str, value: &str) -> Value {
    json!({"system": format!("urn:hie:emis:{kind}"), "value": value})
}

pub(crate) fn condition_on(kind: &str, value: &str) -> String {
    format!("identifier={}", query_value(&format!("urn:hie:emis:{kind}|{value}")))
}

fn security(row: &Row, column: &str, code: &str, display: &str) -> Result<Option<Value>, ExtractError> {
    Ok(row.flag(column)?.then(|| json!({"system": CONFIDENTIALITY, "code": code, "display": display})))
}

fn translate_patient(context: &Context<'_>, patient: &Row, rows: &[(&'static str, &Row)]) -> Result<PatientBundle, ExtractError> {
    let guid = patient.require("PatientGuid")?;
    let organisation = context.organisations.get(patient.get("OrganisationGuid"));
    let ods = organisation.and_then(|(ods, _)| ods.clone());
    let digest = gp::rows_digest(patient, rows);
    let provenance_id = derived_id("emis", &format!("{}|{}|{guid}", context.agreement, context.recorded));
    let mut bundle = TransactionBuilder::new(&provenance_id);
    let mut unmapped = 0;

    let practice = match organisation {
        Some((Some(ods), name)) => Some((gp::practice(&mut bundle, ods, name), format!("{name} ({ods})"))),
        _ => None,
    };
    let patient_resource = patient_resource(patient, practice.as_ref().map(|(reference, _)| reference))?;
    let patient_condition = gp::patient_condition(&patient_resource, condition_on("patient-guid", guid));
    let subject = bundle.upsert(patient_resource, &patient_condition);
    let mut sources = vec![format!("{PATIENT} line {}", patient.line())];

    // Consultations first: the other records point at them.
    let mut consultations = HashMap::new();
    for (kind, row) in rows.iter().filter(|(kind, _)| *kind == CONSULTATION) {
        sources.push(format!("{kind} line {}", row.line()));
        let consultation = row.require("ConsultationGuid")?;
        if row.flag("Deleted")? {
            bundle.delete("Encounter", &condition_on("consultation-guid", consultation));
            continue;
        }
        let mut encounter = records::encounter(&records::Consultation {
            guid: consultation,
            finished: row.flag("Complete").unwrap_or(true),
            subject: &subject,
            kind: row.get("ConsultationSourceTerm"),
            start: row.date_time("EffectiveDate", None)?,
            provider: practice.as_ref().map(|(reference, _)| reference),
        });
        label(&mut encounter, security(row, "IsConfidential", "V", "very restricted")?);
        consultations.insert(consultation, bundle.upsert(encounter, &condition_on("consultation-guid", consultation)));
    }

    for (kind, row) in rows.iter().filter(|(kind, _)| *kind != CONSULTATION) {
        sources.push(format!("{kind} line {}", row.line()));
        let encounter = row.get("ConsultationGuid").and_then(|guid| consultations.get(guid));
        let confidential = security(row, "IsConfidential", "V", "very restricted")?;
        match *kind {
            OBSERVATION => {
                let guid = row.require("ObservationGuid")?;
                let is_problem = context.problems.contains(guid);
                let (code, details, lacks_snomed) = context.codes.clinical(row, "CodeId")?;
                let category = details.category.to_ascii_lowercase();
                let (resource_type, key) = if is_problem {
                    ("Condition", "observation-guid")
                } else if category.contains("allerg") {
                    ("AllergyIntolerance", "observation-guid")
                } else if category.contains("immunisation") || category.contains("vaccin") {
                    ("Immunization", "observation-guid")
                } else {
                    ("Observation", "observation-guid")
                };
                if row.flag("Deleted")? {
                    bundle.delete(resource_type, &condition_on(key, guid));
                    continue;
                }
                unmapped += usize::from(lacks_snomed);
                let effective = row.date_time("EffectiveDate", row.get("EffectiveDatePrecision"))?;
                let entered = row.date_time("EnteredDate", Some("YMD"))?;
                let mut resource = match resource_type {
                    "Condition" => {
                        let problem = context.problem_rows.get(guid).copied();
                        let ended = problem.map(|p| p.date_time("EndDate", None)).transpose()?.flatten();
                        let mut condition = gp::problem(code, &subject, effective.clone(), entered.clone(), ended);
                        if let Some(significance) = problem.and_then(|p| p.get("SignificanceDescription")) {
                            condition["note"] = json!([{"text": significance}]);
                        }
                        condition
                    }
                    "AllergyIntolerance" => records::allergy(code, &subject, effective.clone(), entered.clone()),
                    "Immunization" => records::immunization(
                        code,
                        &subject,
                        effective.clone().or(entered.clone()).unwrap_or_else(|| context.recorded.to_owned()),
                    ),
                    _ => {
                        let measured = match row.number("Value")? {
                            Some(value) => Some(records::Measured {
                                value,
                                unit: row.get("NumericUnit"),
                                low: row.number("NumericRangeLow")?,
                                high: row.number("NumericRangeHigh")?,
                            }),
                            None => None,
                        };
                        records::observation(code, &subject, effective.clone(), measured)
                    }
                };
                resource["identifier"] = json!([identifier(key, guid)]);
                records::add_note(&mut resource, row.get("AssociatedText"));
                if let (Some(encounter), true) = (encounter, resource_type != "AllergyIntolerance") {
                    resource["encounter"] = json!({"reference": encounter});
                }
                label(&mut resource, confidential);
                bundle.upsert(resource, &condition_on(key, guid));
            }
            DRUG_RECORD => {
                let guid = row.require("DrugRecordGuid")?;
                if row.flag("Deleted")? {
                    bundle.delete("MedicationStatement", &condition_on("drug-record-guid", guid));
                    continue;
                }
                let mut statement = records::medication_statement(&records::Authorisation {
                    guid,
                    active: row.flag("IsActive")?,
                    medication: context.codes.drug(row)?,
                    subject: &subject,
                    start: row.date_time("EffectiveDate", None)?,
                    end: row.date_time("CancellationDate", None)?,
                    dosage: row.get("Dosage"),
                    prescription_type: row.get("PrescriptionType"),
                });
                label(&mut statement, confidential);
                bundle.upsert(statement, &condition_on("drug-record-guid", guid));
            }
            ISSUE_RECORD => {
                let guid = row.require("IssueRecordGuid")?;
                if row.flag("Deleted")? {
                    bundle.delete("MedicationRequest", &condition_on("issue-record-guid", guid));
                    continue;
                }
                let mut request = records::medication_request(&records::Issue {
                    guid,
                    cancelled: row.date_time("CancellationDate", None)?.is_some(),
                    medication: context.codes.drug(row)?,
                    subject: &subject,
                    authored: row.date_time("EffectiveDate", None)?,
                    dosage: row.get("Dosage"),
                    quantity: row.number("Quantity")?,
                    unit: row.get("QuantityUnit"),
                    days: row.number("CourseDurationInDays")?,
                    authorisation: row.get("DrugRecordGuid"),
                });
                label(&mut request, confidential);
                bundle.upsert(request, &condition_on("issue-record-guid", guid));
            }
            _ => unreachable!("only clinical kinds are grouped by patient"),
        }
    }

    let targets = bundle.full_urls();
    let key = format!("{}|{}|{guid}", context.agreement, context.recorded);
    let author = practice.map(|(_, author)| author).unwrap_or_else(|| "EMIS practice".into());
    let rows = gp::PatientRows {
        format: "EMIS",
        id: &provenance_id,
        recorded: context.recorded,
        author: &author,
        key: &key,
        sources: &sources,
        digest: &digest,
    };
    bundle.put(gp::provenance(&rows, &targets));
    Ok(PatientBundle {
        patient_guid: guid.to_owned(),
        organisation: ods,
        bundle: bundle.finish(),
        provenance_id,
        digest,
        unmapped_codes: unmapped,
    })
}

fn label(resource: &mut Value, label: Option<Value>) {
    if let Some(label) = label {
        resource["meta"] = json!({"security": [label]});
    }
}

fn patient_resource(row: &Row, practice: Option<&Value>) -> Result<Value, ExtractError> {
    let guid = row.require("PatientGuid")?;
    let active = !row.flag("Deleted")? && row.date_time("DateOfDeactivation", None)?.is_none();
    let mut patient = gp::patient(row, &EMIS_PATIENT, identifier("patient-guid", guid), active)?;
    let lines: Vec<&str> = ["HouseNameFlatNumber", "NumberAndStreet", "Village"].into_iter().filter_map(|column| row.get(column)).collect();
    let mut address = json!({"use": "home"});
    if !lines.is_empty() {
        address["line"] = json!(lines);
    }
    for (column, field) in [("Town", "city"), ("County", "district"), ("Postcode", "postalCode")] {
        if let Some(value) = row.get(column) {
            address[field] = json!(value);
        }
    }
    if address.as_object().is_some_and(|a| a.len() > 1) {
        patient["address"] = json!([address]);
    }
    let telecom: Vec<Value> = [("HomePhone", "phone", "home"), ("MobilePhone", "phone", "mobile"), ("EmailAddress", "email", "home")]
        .into_iter()
        .filter_map(|(column, system, use_)| row.get(column).map(|value| json!({"system": system, "value": value, "use": use_})))
        .collect();
    if !telecom.is_empty() {
        patient["telecom"] = json!(telecom);
    }
    if let Some(practice) = practice {
        patient["generalPractitioner"] = json!([practice]);
    }
    let labels: Vec<Value> =
        [security(row, "SpineSensitive", "R", "restricted")?, security(row, "IsConfidential", "V", "very restricted")?]
            .into_iter()
            .flatten()
            .collect();
    if !labels.is_empty() {
        patient["meta"]["security"] = json!(labels);
    }
    Ok(patient)
}

#[cfg(test)]
mod tests {
    use fhir_models::system::NHS_NUMBER;

    use super::*;
    use crate::demo::PRACTICES;
    use crate::synthetic::emis_extract;

    fn resources<'a>(bundle: &'a Value, resource_type: &str) -> Vec<&'a Value> {
        bundle["entry"].as_array().unwrap().iter().map(|e| &e["resource"]).filter(|r| r["resourceType"] == resource_type).collect()
    }

    fn extract() -> Vec<ExtractFile> {
        emis_extract(&PRACTICES[0], &[0, 2, 7], "20260301120000")
    }

    #[test]
    fn an_extract_becomes_one_bundle_per_patient_keyed_on_emis_guids() {
        let translated = translate(&extract(), &CodeMaps::demo()).unwrap();
        assert!(translated.refused.is_empty(), "{:?}", translated.refused);
        assert_eq!(translated.patients.len(), 3);
        let first = &translated.patients[0];
        assert_eq!(first.organisation.as_deref(), Some("Y90001"));
        let patient = resources(&first.bundle, "Patient")[0];
        assert_eq!(patient["identifier"][0]["system"], NHS_NUMBER);
        assert_eq!(patient["generalPractitioner"][0]["identifier"]["value"], "Y90001");
        // Every entry is a conditional upsert on an EMIS GUID (or the NHS number), but the Provenance.
        for entry in first.bundle["entry"].as_array().unwrap() {
            let url = entry["request"]["url"].as_str().unwrap();
            let keyed =
                url.contains("?identifier=") || entry["request"]["ifNoneExist"].as_str().is_some_and(|c| c.starts_with("identifier="));
            assert!(keyed || url.starts_with("Provenance/"), "{url}");
        }
        let observations = resources(&first.bundle, "Observation");
        let systolic = observations.iter().find(|o| o["code"]["coding"][0]["code"] == "163030003").expect("systolic BP");
        assert_eq!(systolic["valueQuantity"]["unit"], "mmHg");
        assert_eq!(systolic["referenceRange"][0]["high"]["value"], 140.0);
        assert_eq!(systolic["code"]["coding"][1], json!({"system": READ_V2, "code": "2469.", "display": "O/E - Systolic BP reading"}));
        assert_eq!(resources(&first.bundle, "Condition").len(), 1);
        assert_eq!(resources(&first.bundle, "AllergyIntolerance").len(), 1, "patient 0 has the penicillin allergy");
        assert_eq!(resources(&first.bundle, "MedicationRequest").len(), 2);
        let provenance = resources(&first.bundle, "Provenance")[0];
        assert_eq!(provenance["recorded"], "2026-03-01T12:00:00+00:00");
        assert!(provenance["entity"][0]["what"]["display"].as_str().unwrap().contains("Admin_Patient line 2"));
        assert_eq!(provenance["target"].as_array().unwrap().len(), first.bundle["entry"].as_array().unwrap().len() - 1);
        // Deterministic.
        let again = translate(&extract(), &CodeMaps::demo()).unwrap();
        assert_eq!(again.patients[0].bundle, first.bundle);
        assert_eq!(again.patients[0].provenance_id, first.provenance_id);
    }

    #[test]
    fn labels_and_unmapped_codes_are_stamped_and_counted() {
        let translated = translate(&extract(), &CodeMaps::demo()).unwrap();
        // Patient 7 is restricted (S-flag); patient 2 has a practice-confidential entry with an
        // EMIS-local code no table maps.
        let restricted = resources(&translated.patients[2].bundle, "Patient")[0];
        assert_eq!(restricted["meta"]["security"], json!([{"system": CONFIDENTIALITY, "code": "R", "display": "restricted"}]));
        let second = &translated.patients[1];
        let confidential: Vec<&Value> =
            resources(&second.bundle, "Observation").into_iter().filter(|o| o["meta"]["security"][0]["code"] == "V").collect();
        assert_eq!(confidential.len(), 1);
        assert_eq!(confidential[0]["code"]["coding"][0]["system"], EMIS_LOCAL_CODE);
        assert_eq!(confidential[0]["code"]["coding"][0]["extension"][0]["url"], UNMAPPED_EXTENSION);
        assert!(second.unmapped_codes >= 1);
        // A Read code without a SNOMED concept in the extract is mapped through the Read table.
        let all: Vec<&Value> = translated.patients.iter().flat_map(|p| resources(&p.bundle, "Condition")).collect();
        for condition in all {
            assert_eq!(condition["code"]["coding"][0]["system"], SNOMED, "{condition}");
        }
        let without_maps = translate(&extract(), &CodeMaps::default()).unwrap();
        let unmapped: usize = without_maps.patients.iter().map(|p| p.unmapped_codes).sum();
        let mapped: usize = translated.patients.iter().map(|p| p.unmapped_codes).sum();
        assert!(unmapped >= mapped, "the map only ever reduces what is unmapped");
    }

    fn replace_row(files: &mut [ExtractFile], kind: &str, row: usize, change: impl Fn(&str) -> String) {
        let file = files.iter_mut().find(|f| f.name.contains(kind)).unwrap();
        let text = String::from_utf8(file.bytes.clone()).unwrap();
        let mut lines: Vec<String> = text.split("\r\n").map(str::to_owned).collect();
        lines[row] = change(&lines[row]);
        file.bytes = lines.join("\r\n").into_bytes();
    }

    #[test]
    fn a_bad_row_refuses_its_patient_only_and_says_where() {
        let mut files = extract();
        replace_row(&mut files, "Admin_Patient", 2, |line| line.replacen(",M,", ",Q,", 1).replacen(",F,", ",Q,", 1));
        let translated = translate(&files, &CodeMaps::demo()).unwrap();
        assert_eq!(translated.patients.len(), 2);
        assert_eq!(translated.refused.len(), 1);
        let error = translated.refused[0].1.to_string();
        assert!(error.contains("Admin_Patient_20260301120000_") && error.contains(":3: Sex: \"Q\" is not M, F, I or U"), "{error}");
    }

    #[test]
    fn deleted_rows_become_conditional_deletes() {
        let mut files = extract();
        replace_row(&mut files, "Prescribing_DrugRecord", 1, |line| format!("{},true", line.rsplit_once(',').unwrap().0));
        let translated = translate(&files, &CodeMaps::demo()).unwrap();
        let deletes: Vec<&Value> =
            translated.patients[0].bundle["entry"].as_array().unwrap().iter().filter(|e| e["request"]["method"] == "DELETE").collect();
        assert_eq!(deletes.len(), 1);
        assert!(
            deletes[0]["request"]["url"]
                .as_str()
                .unwrap()
                .starts_with("MedicationStatement?identifier=urn%3Ahie%3Aemis%3Adrug-record-guid")
                || deletes[0]["request"]["url"]
                    .as_str()
                    .unwrap()
                    .starts_with("MedicationStatement?identifier=urn:hie:emis:drug-record-guid")
        );
    }

    #[test]
    fn an_extract_without_a_patient_file_or_a_time_is_refused_whole() {
        let files: Vec<ExtractFile> = extract().into_iter().filter(|f| !f.name.contains("Admin_Patient")).collect();
        assert!(translate(&files, &CodeMaps::demo()).unwrap_err().to_string().contains("no Admin_Patient file"));
        let renamed: Vec<ExtractFile> =
            extract().into_iter().map(|f| ExtractFile { name: f.name.replace("_20260301120000", ""), bytes: f.bytes }).collect();
        assert!(translate(&renamed, &CodeMaps::demo()).unwrap_err().to_string().contains("no extract time"));
    }
}
