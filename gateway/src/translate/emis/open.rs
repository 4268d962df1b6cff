//! EMIS Open `MedicalRecord` XML (schema EomMedicalRecord38, namespace
//! `http://www.e-mis.com/emisopen/MedicalRecord`) → one FHIR R4 `transaction` Bundle per file
//! (a file is one patient's record).
//!
//! Read: `Registration` (the patient), `Originator/Organisation` resolved in `LocationList` (the
//! practice), `ConsultationList` (Encounters, with the items recorded in each), `EventList`,
//! `AllergyList`, `MedicationList` (authorisations) and `IssueList` (issues). The resources and
//! their keys are the CSV extract's ([`super::records`], EMIS GUIDs), so a practice's record filed
//! through either interface is the same record. Events become Observations, or a Condition when
//! they carry a `Problem`, an AllergyIntolerance (EventType 11) or an Immunization (13);
//! attachments, alerts and problem ratings (7, 10, 14) and referrals (8) are not translated.
//!
//! Dates are `dd/MM/yyyy` with `DatePart` saying how much of them is known (0 or 4: the day,
//! with `AssignedTime` `HH:mm` when given, England's local time; 1: `MM/yyyy`; 2: `yyyy`;
//! 3: unknown). Codes: SNOMED CT kept; Read v2 (`READ2`) kept beside the SNOMED concept from
//! `MapCode` (when `MapScheme` is SNOMED) or the national Read map; EMIS's own schemes kept as
//! EMIS codes; codes without a SNOMED concept are flagged and counted. An item under an EMIS
//! confidentiality policy (`PolicyID`) is labelled practice-confidential (`V`): the gateway
//! cannot read the policy's terms, so the item stays with its practice.
//!
//! A file that cannot be read refuses its patient only, naming the file, line and element.
//! DTDs are refused and the number of nodes bounded, so hostile XML is refused, not expanded.

use std::collections::HashMap;

use fhir_models::system::{READ_V2, SNOMED_CT as SNOMED, V3_CONFIDENTIALITY as CONFIDENTIALITY};
use roxmltree::{Document, Node, ParsingOptions};
use serde_json::{Value, json};
use time::{Date, Month, Time};

use super::records::{self, Authorisation, Consultation, Issue, Measured};
use super::{EMIS_LOCAL_CODE, ExtractError, ExtractFile, PatientBundle, Translated, UNMAPPED_EXTENSION, condition_on, identifier};
use crate::translate::codes::CodeMaps;
use crate::translate::gp::{self, DetailError, PatientDetails};
use crate::translate::rows::england_date_time;
use crate::translate::transaction::{TransactionBuilder, content_digest, derived_id};

pub const NAMESPACE: &str = "http://www.e-mis.com/emisopen/MedicalRecord";
/// EMIS drug preparations without a dm+d concept.
pub const EMIS_PREPARATION: &str = "urn:hie:emis:preparation";
const NODES_LIMIT: u32 = 2_000_000;

/// Translate EMIS Open records, one per file.
pub fn translate(files: &[ExtractFile], maps: &CodeMaps) -> Result<Translated, ExtractError> {
    if files.is_empty() {
        return Err(ExtractError::file("(extract)", "no EMIS Open MedicalRecord files"));
    }
    let mut translated = Translated::default();
    let mut patients: HashMap<String, String> = HashMap::new();
    for file in files {
        match translate_record(file, maps) {
            Ok(patient) => match patients.insert(patient.patient_guid.clone(), file.name.clone()) {
                Some(earlier) => translated.refused.push((
                    file.name.clone(),
                    ExtractError::file(
                        &file.name,
                        format!("the patient {} is also in {earlier}: one record per patient", patient.patient_guid),
                    ),
                )),
                None => translated.patients.push(patient),
            },
            Err(error) => translated.refused.push((file.name.clone(), error)),
        }
    }
    Ok(translated)
}

/// One file being read: its name and text, for errors that say where.
struct Source<'d, 'i> {
    name: &'d str,
    document: &'d Document<'i>,
}

impl Source<'_, '_> {
    fn error(&self, node: Node<'_, '_>, element: &str, reason: impl Into<String>) -> ExtractError {
        let position = self.document.text_pos_at(node.range().start);
        ExtractError { file: self.name.to_owned(), line: u64::from(position.row), column: Some(element.to_owned()), reason: reason.into() }
    }

    fn required<'a, 'i>(&self, node: Node<'a, 'i>, name: &str) -> Result<Node<'a, 'i>, ExtractError> {
        child(node, name).ok_or_else(|| self.error(node, name, format!("{} has no {name}", node.tag_name().name())))
    }

    fn required_text<'a>(&self, node: Node<'a, '_>, name: &str) -> Result<&'a str, ExtractError> {
        text(node, name).ok_or_else(|| self.error(node, name, format!("{} has no {name}", node.tag_name().name())))
    }

    /// A `dd/MM/yyyy` date element (with `time`, `HH:mm`, when given) at full precision.
    fn date(&self, node: Node<'_, '_>, name: &str) -> Result<Option<String>, ExtractError> {
        self.dated(node, name, None, None)
    }

    /// A date with its precision: `part` is the `DatePart` element, `time` the time element.
    fn dated(&self, node: Node<'_, '_>, name: &str, part: Option<&str>, time: Option<&str>) -> Result<Option<String>, ExtractError> {
        let Some(value) = text(node, name) else { return Ok(None) };
        let precision = match part.and_then(|part| text(node, part)) {
            None => 0,
            Some(part) => part.parse::<u8>().map_err(|_| self.error(node, "DatePart", format!("{part:?} is not 0 to 4")))?,
        };
        let invalid = |expected: &str| self.error(node, name, format!("{value:?} is not a date ({expected})"));
        Ok(match precision {
            3 => None,
            2 => Some(year(value.rsplit('/').next().unwrap_or(value)).ok_or_else(|| invalid("yyyy"))?.to_string()),
            1 => {
                let mut parts = value.rsplit('/');
                let (year_text, month_text) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
                let year = year(year_text).ok_or_else(|| invalid("MM/yyyy"))?;
                let month = month_text.parse::<u8>().ok().filter(|m| (1..=12).contains(m)).ok_or_else(|| invalid("MM/yyyy"))?;
                Some(format!("{year:04}-{month:02}"))
            }
            0 | 4 => {
                let date = day(value).ok_or_else(|| invalid("dd/MM/yyyy"))?;
                match time.and_then(|time| text(node, time)) {
                    Some(clock) => {
                        let at = clock_time(clock)
                            .ok_or_else(|| self.error(node, time.unwrap_or_default(), format!("{clock:?} is not HH:mm")))?;
                        Some(england_date_time(date, at))
                    }
                    None => Some(date.to_string()),
                }
            }
            other => return Err(self.error(node, "DatePart", format!("{other} is not 0 to 4"))),
        })
    }

    fn number(&self, node: Node<'_, '_>, name: &str) -> Result<Option<serde_json::Number>, ExtractError> {
        let Some(value) = text(node, name) else { return Ok(None) };
        let number =
            value.parse::<serde_json::Number>().ok().filter(|_| value.bytes().all(|b| b.is_ascii_digit() || b == b'.' || b == b'-'));
        number.map(Some).ok_or_else(|| self.error(node, name, format!("{value:?} is not a number")))
    }
}

fn child<'a, 'i>(node: Node<'a, 'i>, name: &str) -> Option<Node<'a, 'i>> {
    node.children().find(|n| n.is_element() && n.tag_name().name() == name)
}

fn children<'a, 'i: 'a>(node: Node<'a, 'i>, name: &'a str) -> impl Iterator<Item = Node<'a, 'i>> + 'a {
    node.children().filter(move |n| n.is_element() && n.tag_name().name() == name)
}

/// The trimmed text of a child element; `None` when absent or empty.
fn text<'a>(node: Node<'a, '_>, name: &str) -> Option<&'a str> {
    child(node, name).and_then(|n| n.text()).map(str::trim).filter(|t| !t.is_empty())
}

/// A referenced item's GUID: `<AuthorID><GUID>…</GUID></AuthorID>`.
fn guid_of<'a>(node: Node<'a, '_>, name: &str) -> Option<&'a str> {
    child(node, name).and_then(|reference| text(reference, "GUID"))
}

fn year(text: &str) -> Option<i32> {
    (text.len() == 4 && text.bytes().all(|b| b.is_ascii_digit())).then(|| text.parse().ok()).flatten()
}

fn day(text: &str) -> Option<Date> {
    let mut parts = text.split('/');
    let (day, month, year_text) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || day.is_empty() || day.len() > 2 || month.is_empty() || month.len() > 2 {
        return None;
    }
    Date::from_calendar_date(year(year_text)?, Month::try_from(month.parse::<u8>().ok()?).ok()?, day.parse().ok()?).ok()
}

fn clock_time(text: &str) -> Option<Time> {
    let (hour, rest) = text.split_once(':')?;
    let minute = rest.get(..2)?;
    Time::from_hms(hour.parse().ok()?, minute.parse().ok()?, 0).ok()
}

/// What the record's items point at: the practice, consultations, the patient.
struct Record<'a> {
    source: &'a Source<'a, 'a>,
    maps: &'a CodeMaps,
    subject: String,
    practice: Option<Value>,
    unmapped: usize,
}

impl Record<'_> {
    /// An item's `Code` (or `name`) as a CodeableConcept, SNOMED CT first.
    fn code(&mut self, item: Node<'_, '_>, name: &str) -> Result<Value, ExtractError> {
        let code = self.source.required(item, name)?;
        let value = self.source.required_text(code, "Value")?;
        let scheme = text(code, "Scheme").unwrap_or_default().to_ascii_uppercase();
        let term = text(code, "Term").or_else(|| text(item, "DisplayTerm"));
        let mapped = match (text(code, "MapCode"), text(code, "MapScheme")) {
            (Some(map), Some(scheme)) if scheme.eq_ignore_ascii_case("SNOMED") => Some(map.to_owned()),
            _ => None,
        };
        // A Read code's term id follows a '-' (`H33..-00`); Read codes are five characters.
        let concept = value.split('-').next().unwrap_or(value);
        let (original, snomed) = match scheme.as_str() {
            "SNOMED" => (None, Some(concept.to_owned())),
            "READ2" => {
                let read = format!("{concept:.<5}");
                let snomed = mapped.or_else(|| self.maps.read_v2(&read).map(str::to_owned));
                (Some((READ_V2, read)), snomed)
            }
            "" => return Err(self.source.error(code, "Scheme", "the code has no Scheme")),
            _ => (Some((EMIS_LOCAL_CODE, value.to_owned())), mapped),
        };
        let mut codings = Vec::new();
        let with_display = |mut coding: Value| {
            if let Some(term) = term {
                coding["display"] = json!(term);
            }
            coding
        };
        if let Some(snomed) = &snomed {
            codings.push(with_display(json!({"system": SNOMED, "code": snomed})));
        }
        if let Some((system, original)) = original {
            let mut coding = with_display(json!({"system": system, "code": original}));
            if snomed.is_none() {
                coding["extension"] = json!([{"url": UNMAPPED_EXTENSION, "valueBoolean": true}]);
            }
            codings.push(coding);
        }
        self.unmapped += usize::from(snomed.is_none());
        let mut concept = json!({"coding": codings});
        if let Some(text) = text(item, "DisplayTerm").or(term) {
            concept["text"] = json!(text);
        }
        Ok(concept)
    }

    /// `Drug/PreparationID`: the dm+d concept (`MapCode`) when given, and EMIS's preparation.
    fn drug(&self, medication: Node<'_, '_>) -> Result<Value, ExtractError> {
        let drug = self.source.required(medication, "Drug")?;
        let preparation = self.source.required(drug, "PreparationID")?;
        let value = self.source.required_text(preparation, "Value")?;
        let term = text(preparation, "Term");
        let mut codings = Vec::new();
        if let (Some(map), Some(scheme)) = (text(preparation, "MapCode"), text(preparation, "MapScheme"))
            && scheme.eq_ignore_ascii_case("SNOMED")
        {
            codings.push(json!({"system": SNOMED, "code": map}));
        }
        codings.push(json!({"system": EMIS_PREPARATION, "code": value}));
        if let Some(term) = term {
            for coding in &mut codings {
                coding["display"] = json!(term);
            }
        }
        let mut concept = json!({"coding": codings});
        if let Some(term) = term {
            concept["text"] = json!(term);
        }
        Ok(concept)
    }

    /// An item under an EMIS confidentiality policy stays with its practice.
    fn confidential(item: Node<'_, '_>, resource: &mut Value) {
        if text(item, "PolicyID").is_some_and(|policy| policy != "0") {
            resource["meta"] = json!({"security": [{"system": CONFIDENTIALITY, "code": "V", "display": "very restricted"}]});
        }
    }
}

fn translate_record(file: &ExtractFile, maps: &CodeMaps) -> Result<PatientBundle, ExtractError> {
    let xml = match std::str::from_utf8(&file.bytes) {
        Ok(xml) => std::borrow::Cow::Borrowed(xml),
        Err(_) => encoding_rs::WINDOWS_1252.decode_without_bom_handling(&file.bytes).0,
    };
    let options = ParsingOptions { allow_dtd: false, nodes_limit: NODES_LIMIT, ..ParsingOptions::default() };
    let document = Document::parse_with_options(xml.trim_start_matches('\u{feff}'), options).map_err(|error| ExtractError {
        file: file.name.clone(),
        line: u64::from(error.pos().row),
        column: None,
        reason: format!("not XML: {error}"),
    })?;
    let source = Source { name: &file.name, document: &document };
    let root = document.root_element();
    if root.tag_name().name() != "MedicalRecord" || root.tag_name().namespace().is_some_and(|ns| ns != NAMESPACE) {
        return Err(source.error(
            root,
            root.tag_name().name(),
            format!("the root element is not an EMIS Open MedicalRecord ({NAMESPACE})"),
        ));
    }
    let registration = source.required(root, "Registration")?;
    let patient_guid = source.required_text(registration, "GUID")?;
    let created = child(root, "MessageInformation").ok_or_else(|| {
        source.error(root, "MessageInformation", "MessageInformation/DateCreated is required: when the record was extracted")
    })?;
    let recorded = match (text(created, "DateCreated").and_then(day), text(created, "TimeCreated").and_then(clock_time)) {
        (Some(date), time) => england_date_time(date, time.unwrap_or(Time::MIDNIGHT)),
        (None, _) => return Err(source.error(created, "DateCreated", "MessageInformation/DateCreated (dd/MM/yyyy) is required")),
    };

    // The practice: the Originator's organisation, described in LocationList.
    let organisation_guid = child(root, "Originator").and_then(|originator| guid_of(originator, "Organisation"));
    let location = organisation_guid.and_then(|guid| {
        child(root, "LocationList").and_then(|list| children(list, "Location").find(|location| text(*location, "GUID") == Some(guid)))
    });
    let ods = match location.and_then(|location| Some((location, text(location, "NationalCode")?))) {
        Some((location, code)) => Some(
            fhir_models::OdsCode::parse(code)
                .map_err(|_| source.error(location, "NationalCode", format!("{code:?} is not an ODS code")))?
                .to_string(),
        ),
        None => None,
    };
    let name = location.and_then(|location| text(location, "LocationName")).unwrap_or("EMIS practice");
    let digest = content_digest(&file.bytes);
    let key = format!("open|{}|{patient_guid}|{recorded}", organisation_guid.unwrap_or_default());
    let provenance_id = derived_id("emis", &key);
    let mut bundle = TransactionBuilder::new(&provenance_id);
    let practice = ods.as_deref().map(|ods| gp::practice(&mut bundle, ods, name));

    let patient = patient(&source, registration, practice.as_ref())?;
    let patient_condition = gp::patient_condition(&patient, condition_on("patient-guid", patient_guid));
    let subject = bundle.upsert(patient, &patient_condition);
    let mut record = Record { source: &source, maps, subject, practice, unmapped: 0 };

    for consultation in child(root, "ConsultationList").into_iter().flat_map(|list| children(list, "Consultation")) {
        let guid = source.required_text(consultation, "GUID")?;
        let mut encounter = records::encounter(&Consultation {
            guid,
            finished: true,
            subject: &record.subject,
            kind: None,
            start: source.dated(consultation, "AssignedDate", Some("DatePart"), None)?,
            provider: record.practice.as_ref(),
        });
        Record::confidential(consultation, &mut encounter);
        let encounter = bundle.upsert(encounter, &condition_on("consultation-guid", guid));
        let elements = child(consultation, "ElementList").into_iter().flat_map(|list| children(list, "ConsultationElement"));
        for item in elements.flat_map(|element| element.children().filter(|n| n.is_element())) {
            item_in(&mut record, &mut bundle, item, Some(&encounter))?;
        }
    }
    for (list, name) in [("EventList", "Event"), ("AllergyList", "Allergy"), ("MedicationList", "Medication"), ("IssueList", "Issue")] {
        for item in child(root, list).into_iter().flat_map(|list| children(list, name)) {
            item_in(&mut record, &mut bundle, item, None)?;
        }
    }

    let targets = bundle.full_urls();
    let author = match &ods {
        Some(ods) => format!("{name} ({ods})"),
        None => name.to_owned(),
    };
    let sources = vec![file.name.clone()];
    let rows = gp::PatientRows {
        format: "EMIS-Open",
        id: &provenance_id,
        recorded: &recorded,
        author: &author,
        key: &key,
        sources: &sources,
        digest: &digest,
    };
    bundle.put(gp::provenance(&rows, &targets));
    Ok(PatientBundle {
        patient_guid: patient_guid.to_owned(),
        organisation: ods,
        bundle: bundle.finish(),
        provenance_id,
        digest,
        unmapped_codes: record.unmapped,
    })
}

fn patient(source: &Source<'_, '_>, registration: Node<'_, '_>, practice: Option<&Value>) -> Result<Value, ExtractError> {
    let guid = source.required_text(registration, "GUID")?;
    let sex = text(registration, "Sex").map(|sex| if sex.eq_ignore_ascii_case("UNKNOWN") { "U" } else { sex });
    let details = PatientDetails {
        nhs_number: text(registration, "NhsNumber"),
        family: text(registration, "FamilyName"),
        given: text(registration, "FirstNames").map(|names| names.split_whitespace().collect()).unwrap_or_default(),
        title: text(registration, "Title"),
        gender: sex,
        birth: source.date(registration, "DateOfBirth")?,
        death: source.date(registration, "DateOfDeath")?,
    };
    let active = text(registration, "DeductedDate").is_none() && text(registration, "Dead").is_none_or(|dead| dead == "0");
    let mut patient = gp::patient_resource(&details, identifier("patient-guid", guid), active).map_err(|error| match error {
        DetailError::NhsNumber(reason) => source.error(registration, "NhsNumber", reason),
        DetailError::Gender(reason) => source.error(registration, "Sex", reason),
    })?;
    if let Some(address) = child(registration, "Address") {
        let lines: Vec<&str> = ["HouseNameFlat", "Street", "Village"].into_iter().filter_map(|part| text(address, part)).collect();
        let mut fhir_address = json!({"use": "home"});
        if !lines.is_empty() {
            fhir_address["line"] = json!(lines);
        }
        for (part, field) in [("Town", "city"), ("County", "district"), ("PostCode", "postalCode")] {
            if let Some(value) = text(address, part) {
                fhir_address[field] = json!(value);
            }
        }
        if fhir_address.as_object().is_some_and(|a| a.len() > 1) {
            patient["address"] = json!([fhir_address]);
        }
    }
    let telecom: Vec<Value> = [("HomeTelephone", "phone", "home"), ("Mobile", "phone", "mobile"), ("Email", "email", "home")]
        .into_iter()
        .filter_map(|(element, system, use_)| {
            text(registration, element).map(|value| json!({"system": system, "value": value, "use": use_}))
        })
        .collect();
    if !telecom.is_empty() {
        patient["telecom"] = json!(telecom);
    }
    if let Some(practice) = practice {
        patient["generalPractitioner"] = json!([practice]);
    }
    Ok(patient)
}

/// One item (an Event, Allergy, Medication or Issue), in a consultation or not.
fn item_in(
    record: &mut Record<'_>,
    bundle: &mut TransactionBuilder,
    item: Node<'_, '_>,
    encounter: Option<&str>,
) -> Result<(), ExtractError> {
    let source = record.source;
    let subject = record.subject.clone();
    let (mut resource, key, guid) = match item.tag_name().name() {
        "Medication" => {
            let guid = source.required_text(item, "GUID")?;
            let expires = source.date(item, "DateRxExpire")?;
            let statement = records::medication_statement(&Authorisation {
                guid,
                active: !matches!(text(item, "Status"), Some("P" | "R" | "N")),
                medication: record.drug(item)?,
                subject: &subject,
                start: source.date(item, "AssignedDate")?,
                end: expires,
                dosage: text(item, "Dosage"),
                prescription_type: text(item, "PrescriptionType"),
            });
            (statement, "drug-record-guid", guid)
        }
        "Issue" => {
            let guid = source.required_text(item, "GUID")?;
            let request = records::medication_request(&Issue {
                guid,
                cancelled: false,
                medication: record.drug(item)?,
                subject: &subject,
                authored: source.date(item, "AssignedDate")?,
                dosage: text(item, "Dosage"),
                quantity: source.number(item, "Quantity")?,
                unit: text(item, "QuantityUnits"),
                days: source.number(item, "Duration")?,
                authorisation: guid_of(item, "MedicationLink"),
            });
            (request, "issue-record-guid", guid)
        }
        kind @ ("Event" | "Allergy") => {
            let guid = source.required_text(item, "GUID")?;
            let event_type = match text(item, "EventType") {
                None => None,
                Some(value) => Some(value.parse::<u8>().map_err(|_| source.error(item, "EventType", format!("{value:?} is not 0 to 14")))?),
            };
            // Attachments, referrals, alerts and problem ratings are not clinical records here.
            if kind == "Event" && child(item, "Problem").is_none() && matches!(event_type, Some(7 | 8 | 10 | 14)) {
                return Ok(());
            }
            let effective = source.dated(item, "AssignedDate", Some("DatePart"), Some("AssignedTime"))?;
            let entered = child(item, "OriginalAuthor").map(|author| source.date(author, "SystemDate")).transpose()?.flatten();
            let resource = if let Some(problem) = child(item, "Problem") {
                let code = record.code(item, "Code")?;
                let ended = source.dated(problem, "EndDate", Some("EndDatePart"), None)?;
                let past = text(problem, "ProblemStatus") == Some("0");
                let mut condition = gp::problem(code, &subject, effective, entered, ended);
                if past {
                    condition["clinicalStatus"]["coding"][0]["code"] = json!("resolved");
                }
                match text(problem, "Significance") {
                    Some("1") => records::add_note(&mut condition, Some("Significant Problem")),
                    Some("2") => records::add_note(&mut condition, Some("Minor Problem")),
                    _ => {}
                }
                condition
            } else if kind == "Allergy" || event_type == Some(11) {
                let substance = if child(item, "Codes").is_some() { "Codes" } else { "Code" };
                records::allergy(record.code(item, substance)?, &subject, effective, entered)
            } else if event_type == Some(13) {
                let occurred = effective
                    .or(entered)
                    .ok_or_else(|| source.error(item, "AssignedDate", "an immunisation needs the date it was given"))?;
                records::immunization(record.code(item, "Code")?, &subject, occurred)
            } else {
                let measured = match child(item, "NumericValue") {
                    Some(numeric) => source.number(numeric, "Value")?.map(|value| -> Result<Measured<'_>, ExtractError> {
                        Ok(Measured {
                            value,
                            unit: text(numeric, "Units"),
                            low: source.number(numeric, "NumericMinimum")?,
                            high: source.number(numeric, "NumericMaximum")?,
                        })
                    }),
                    None => None,
                }
                .transpose()?;
                records::observation(record.code(item, "Code")?, &subject, effective, measured)
            };
            (resource, "observation-guid", guid)
        }
        // Diaries, referrals, attachments and test requests are not translated.
        _ => return Ok(()),
    };
    if key == "observation-guid" {
        resource["identifier"] = json!([identifier(key, guid)]);
        records::add_note(&mut resource, text(item, "DescriptiveText"));
        if let (Some(encounter), false) = (encounter, resource["resourceType"] == "AllergyIntolerance") {
            resource["encounter"] = json!({"reference": encounter});
        }
    }
    Record::confidential(item, &mut resource);
    bundle.upsert(resource, &condition_on(key, guid));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::demo::PRACTICES;
    use crate::synthetic::emis_open_records;

    fn resources<'a>(bundle: &'a Value, resource_type: &str) -> Vec<&'a Value> {
        bundle["entry"].as_array().unwrap().iter().map(|e| &e["resource"]).filter(|r| r["resourceType"] == resource_type).collect()
    }

    #[test]
    fn a_record_becomes_one_bundle_keyed_as_the_csv_extract_keys_it() {
        let files = emis_open_records(&PRACTICES[0], &[0, 2, 7], "20260301120000");
        let translated = translate(&files, &CodeMaps::demo()).unwrap();
        assert!(translated.refused.is_empty(), "{:?}", translated.refused);
        assert_eq!(translated.patients.len(), 3);
        let first = &translated.patients[0];
        assert_eq!(first.organisation.as_deref(), Some("Y90001"));
        let patient = resources(&first.bundle, "Patient")[0];
        assert_eq!(patient["identifier"][0]["system"], fhir_models::system::NHS_NUMBER);
        assert_eq!(patient["identifier"][1]["system"], "urn:hie:emis:patient-guid");
        assert_eq!(patient["generalPractitioner"][0]["identifier"]["value"], "Y90001");
        let systolic = resources(&first.bundle, "Observation").into_iter().find(|o| o["code"]["coding"][0]["code"] == "163030003").unwrap();
        assert_eq!(systolic["valueQuantity"]["unit"], "mmHg");
        assert_eq!(systolic["code"]["coding"][1]["code"], "2469.");
        assert!(
            systolic["effectiveDateTime"].as_str().unwrap().ends_with("+00:00")
                || systolic["effectiveDateTime"].as_str().unwrap().ends_with("+01:00")
        );
        assert!(systolic["encounter"]["reference"].as_str().unwrap().starts_with("urn:uuid:"), "recorded in the consultation");
        let condition = resources(&first.bundle, "Condition")[0];
        assert_eq!(condition["onsetDateTime"].as_str().map(str::len), Some(4), "the problem's year only (DatePart 2)");
        assert_eq!(resources(&first.bundle, "AllergyIntolerance").len(), 1);
        assert_eq!(resources(&first.bundle, "Immunization").len(), 1);
        assert_eq!(resources(&first.bundle, "MedicationStatement").len(), 1);
        let issue = resources(&first.bundle, "MedicationRequest")[0];
        assert_eq!(issue["groupIdentifier"]["system"], "urn:hie:emis:drug-record-guid");
        assert_eq!(issue["medicationCodeableConcept"]["coding"][0]["system"], SNOMED);
        for entry in first.bundle["entry"].as_array().unwrap() {
            let url = entry["request"]["url"].as_str().unwrap();
            let keyed =
                url.contains("?identifier=") || entry["request"]["ifNoneExist"].as_str().is_some_and(|c| c.starts_with("identifier="));
            assert!(keyed || url.starts_with("Provenance/"), "{url}");
        }
        // Patient 2's counselling note is under a confidentiality policy and has no SNOMED concept.
        let second = &translated.patients[1];
        let confidential: Vec<&Value> =
            resources(&second.bundle, "Observation").into_iter().filter(|o| o["meta"]["security"][0]["code"] == "V").collect();
        assert_eq!(confidential.len(), 1);
        assert_eq!(confidential[0]["code"]["coding"][0]["extension"][0]["url"], UNMAPPED_EXTENSION);
        assert!(second.unmapped_codes >= 1);
        // Deterministic, and a re-sent record is the same Provenance.
        let again = translate(&files, &CodeMaps::demo()).unwrap();
        assert_eq!((&again.patients[0].bundle, &again.patients[0].provenance_id), (&first.bundle, &first.provenance_id));
    }

    fn with(change: impl Fn(&str) -> String) -> ExtractFile {
        let file = emis_open_records(&PRACTICES[0], &[0], "20260301120000").remove(0);
        ExtractFile { name: file.name, bytes: change(std::str::from_utf8(&file.bytes).unwrap()).into_bytes() }
    }

    #[test]
    fn a_bad_record_is_refused_with_its_file_line_and_element() {
        let cases = [
            (
                with(|xml| xml.replacen("<Sex>F</Sex>", "<Sex>Q</Sex>", 1).replacen("<Sex>M</Sex>", "<Sex>Q</Sex>", 1)),
                "Sex: \"Q\" is not M, F, I or U",
            ),
            (with(|xml| xml.replacen("<NhsNumber>", "<NhsNumber>1", 1)), "NhsNumber:"),
            (with(|xml| xml.replacen("<DatePart>0</DatePart>", "<DatePart>9</DatePart>", 1)), "DatePart: 9 is not 0 to 4"),
            (with(|xml| xml.replacen("/2025</AssignedDate>", "-2025</AssignedDate>", 1)), "AssignedDate:"),
            (with(|xml| xml.replacen("<Scheme>READ2</Scheme>", "", 1)), "Scheme: the code has no Scheme"),
            (with(|xml| xml.replacen("<Registration>", "<Registration><Oops>", 1)), "not XML"),
            (
                with(|xml| xml.replacen("<MessageInformation>", "<Other>", 1).replacen("</MessageInformation>", "</Other>", 1)),
                "MessageInformation",
            ),
            (with(|xml| format!("<!DOCTYPE MedicalRecord [<!ENTITY x \"x\">]>{xml}")), "not XML"),
        ];
        for (file, expected) in cases {
            let translated = translate(std::slice::from_ref(&file), &CodeMaps::demo()).unwrap();
            assert_eq!(translated.patients.len(), 0, "{expected}");
            let error = translated.refused[0].1.to_string();
            assert!(error.starts_with(&file.name) && error.contains(expected), "{error} (expected {expected})");
        }
        let twice = [with(|xml| xml.to_owned()), ExtractFile { name: "copy.xml".into(), ..with(|xml| xml.to_owned()) }];
        let translated = translate(&twice, &CodeMaps::demo()).unwrap();
        assert_eq!((translated.patients.len(), translated.refused.len()), (1, 1));
    }

    #[test]
    fn dates_keep_the_precision_their_date_part_gives() {
        let cases = [
            (
                "<AssignedDate>05/06/2019</AssignedDate><DatePart>0</DatePart><AssignedTime>10:30</AssignedTime>",
                Some("2019-06-05T10:30:00+01:00"),
            ),
            ("<AssignedDate>05/12/2019</AssignedDate><AssignedTime>10:30</AssignedTime>", Some("2019-12-05T10:30:00+00:00")),
            ("<AssignedDate>06/2019</AssignedDate><DatePart>1</DatePart>", Some("2019-06")),
            ("<AssignedDate>2019</AssignedDate><DatePart>2</DatePart>", Some("2019")),
            ("<AssignedDate>01/01/1900</AssignedDate><DatePart>3</DatePart>", None),
        ];
        for (inner, expected) in cases {
            let text = format!("<E>{inner}</E>");
            let document = Document::parse(&text).unwrap();
            let source = Source { name: "x", document: &document };
            let got = source.dated(document.root_element(), "AssignedDate", Some("DatePart"), Some("AssignedTime")).unwrap();
            assert_eq!(got.as_deref(), expected, "{inner}");
        }
    }
}
