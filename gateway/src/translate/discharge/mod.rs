//! Discharge summaries — legacy CDA (ITK eDischarge, `POCD_MT000002UK01`) and ITK3 FHIR STU3
//! eDischarge document bundles — translated into one R4 document: a `Composition` (type SNOMED
//! CT 373942005 "Discharge summary", PRSB-coded sections with their narrative), a
//! `DocumentReference` (so GP systems find it by patient and type, with the document as sent
//! attached), the discharging `Encounter`, and the structured entries it carries (diagnoses,
//! procedures, allergies, medications) as resources of their own that the sections reference.
//!
//! Each format's reader fills a [`Discharge`]; one builder turns it into the transaction, so
//! both formats make the same R4 shapes. Entries, the Composition and the DocumentReference are
//! upserted on the document's own identifiers (the set id across versions, each entry's id) *for
//! that patient* (a key never reaches another patient's records), so a re-sent document changes
//! nothing and a new version updates the Composition, the DocumentReference and the entries it
//! still carries.

pub mod cda;
pub mod itk3;
pub(crate) mod narrative;

use std::fmt;

use fhir_models::NhsNumber;
use fhir_models::system::{NHS_NUMBER, ODS_ORGANIZATION_CODE, SDS_USER_ID, SNOMED_CT, V3_CONFIDENTIALITY};
use serde_json::{Map, Value, json};

use super::transaction::{Source, TransactionBuilder, content_digest, derived_id, escape_search, provenance, query_value};

/// SNOMED CT 373942005 |Discharge summary (record artifact)|: the type of every document made here.
pub const DISCHARGE_SUMMARY: (&str, &str) = ("373942005", "Discharge summary");

const UKCORE: &str = "https://fhir.hl7.org.uk/StructureDefinition/UKCore-";
const RECORD_HEADINGS: &str = "https://fhir.hl7.org.uk/CodeSystem/UKCore-RecordStandardHeadings";

/// A document that cannot be translated: which format, where in it, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocumentError {
    pub format: &'static str,
    /// Where: `line L, column C (XPath)` in a CDA document, a FHIRPath into an ITK3 Bundle.
    pub location: String,
    pub reason: String,
}

impl DocumentError {
    pub(crate) fn new(format: &'static str, location: impl Into<String>, reason: impl Into<String>) -> Self {
        Self { format, location: location.into(), reason: reason.into() }
    }
}

impl fmt::Display for DocumentError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} document at {}: {}", self.format, self.location, self.reason)
    }
}

impl std::error::Error for DocumentError {}

/// A translated document, ready to file.
#[derive(Debug)]
pub struct Translated {
    pub bundle: Value,
    /// The document version in words (`system|value`), for reports.
    pub document: String,
    /// The Provenance's id, derived from the document version: a re-send finds it.
    pub provenance_id: String,
    /// RFC 6920 digest of the document as received.
    pub digest: String,
    /// The ODS code of the organisation that holds the document (custodian, else author's).
    pub organisation: Option<String>,
    /// Every coding anywhere in the source document, translated into a resource or not.
    pub source_codings: Vec<(String, String)>,
}

impl Translated {
    /// Label the document (Composition, DocumentReference) with the sensitivity labels of every
    /// code the source carries — its entries, and what stays only in its narrative and the
    /// attached original (an observation this gateway does not make a resource of) — since the
    /// narrative and the original say what they say.
    ///
    /// The entries are made from the source's own codes, so the source's codings cover them.
    pub fn label(&mut self, labels: &consent::SensitivityLabels) {
        use fhir_models::system::V3_ACT_CODE;
        let found = labels.labels_for(self.source_codings.iter().map(|(system, code)| (system.as_str(), code.as_str())));
        if found.is_empty() {
            return;
        }
        for entry in self.bundle["entry"].as_array_mut().into_iter().flatten() {
            let resource = &mut entry["resource"];
            if !matches!(resource["resourceType"].as_str(), Some("Composition" | "DocumentReference")) {
                continue;
            }
            let mut security = resource["meta"]["security"].as_array().cloned().unwrap_or_default();
            for code in &found {
                if !security.iter().any(|label| label["system"] == V3_ACT_CODE && label["code"] == *code) {
                    security.push(json!({"system": V3_ACT_CODE, "code": code}));
                }
            }
            resource["meta"]["security"] = json!(security);
        }
    }
}

/// An identifier as FHIR writes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identifier {
    pub system: String,
    pub value: String,
}

impl Identifier {
    pub fn new(system: impl Into<String>, value: impl Into<String>) -> Self {
        Self { system: system.into(), value: value.into() }
    }

    fn to_json(&self) -> Value {
        json!({"system": self.system, "value": self.value})
    }

    /// The conditional-update key: this identifier, on this patient's records only.
    fn condition(&self, nhs_number: &str) -> String {
        format!(
            "identifier={}|{}&patient.identifier={NHS_NUMBER}|{nhs_number}",
            query_value(&escape_search(&self.system)),
            query_value(&escape_search(&self.value))
        )
    }
}

impl fmt::Display for Identifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}|{}", self.system, self.value)
    }
}

/// What a discharge summary says, whatever format it came in.
#[derive(Debug, Default)]
pub struct Discharge {
    pub format: &'static str,
    /// This version of the document.
    pub id: Option<Identifier>,
    /// The document across its versions (CDA `setId`); this version's id when there is none.
    pub set_id: Option<Identifier>,
    pub version: Option<String>,
    pub title: String,
    /// FHIR dateTime.
    pub date: String,
    /// The document type as sent, kept beside SNOMED CT 373942005.
    pub original_type: Vec<Value>,
    /// R4 Composition.status.
    pub status: &'static str,
    /// HL7 v3 confidentiality (`N`, `R`, `V`).
    pub confidentiality: Option<String>,
    pub patient: Option<PatientDetails>,
    pub authors: Vec<Party>,
    pub custodian: Option<Organisation>,
    pub encounter: Option<EncounterDetails>,
    pub sections: Vec<Section>,
    /// The document as received and its media type, attached to the DocumentReference.
    pub original_content_type: &'static str,
    /// Every coding in the source (see [`Translated::source_codings`]).
    pub source_codings: Vec<(String, String)>,
    /// The document itself, without a transport envelope (an ITK distribution envelope, an ITK3
    /// message): what the duplicate check digests, so the same document re-sent in another
    /// envelope is the same document.
    pub digested: Vec<u8>,
}

#[derive(Debug)]
pub struct PatientDetails {
    pub nhs_number: NhsNumber,
    /// A HumanName.
    pub name: Option<Value>,
    pub gender: Option<&'static str>,
    pub birth_date: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct Organisation {
    pub ods: Option<String>,
    pub name: Option<String>,
}

/// An author: a person (with their SDS user id when given) and the organisation they act for.
#[derive(Debug, Default)]
pub struct Party {
    pub sds_user_id: Option<String>,
    /// A HumanName.
    pub name: Option<Value>,
    pub organisation: Option<Organisation>,
}

#[derive(Debug, Default)]
pub struct EncounterDetails {
    pub identifier: Option<Identifier>,
    pub start: Option<String>,
    pub end: Option<String>,
    /// A v3 ActCode Coding (`IMP`, `EMER`, `AMB`…).
    pub class: Option<Value>,
}

#[derive(Debug, Default)]
pub struct Section {
    pub title: Option<String>,
    /// Codings as sent.
    pub codes: Vec<Value>,
    /// XHTML `<div>`, already made safe (see `narrative`).
    pub narrative: Option<String>,
    pub entries: Vec<Entry>,
    pub sections: Vec<Section>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    Condition,
    Procedure,
    Allergy,
    Medication,
}

/// A structured entry of a section.
#[derive(Debug)]
pub struct Entry {
    pub kind: EntryKind,
    /// The entry's own identifier in the source (its key across re-sends and versions).
    pub key: Identifier,
    /// A CodeableConcept.
    pub code: Value,
    /// FHIR dateTimes: onset / performed / effective, and their end.
    pub start: Option<String>,
    pub end: Option<String>,
    /// The source's status code, already checked against the R4 value set of the kind.
    pub status: Option<String>,
    pub verification: Option<String>,
    /// Free text: a dose, a comment.
    pub text: Option<String>,
    /// Allergy reactions, as R4 `AllergyIntolerance.reaction` elements.
    pub reactions: Vec<Value>,
    /// Allergy criticality (`low`, `high`, `unable-to-assess`).
    pub criticality: Option<String>,
    /// Labels the source put on this entry alone (`NOPAT`, `R`, `V`), as R4 codings.
    pub labels: Vec<Value>,
}

/// A label a source gave an entry, as the R4 coding the access rules read: `NOPAT` (not for the
/// patient's view), or a confidentiality of `R` or `V`; `None` for anything else.
pub fn entry_label(code: &str) -> Option<Value> {
    match code {
        "NOPAT" => Some(json!({"system": fhir_models::system::V3_ACT_CODE, "code": "NOPAT"})),
        "R" | "V" => Some(json!({"system": V3_CONFIDENTIALITY, "code": code})),
        _ => None,
    }
}

/// A PRSB heading of the eDischarge standard: its SNOMED CT code, its name, the UK Core
/// RecordStandardHeadings code where UK Core names one, and the entries it carries.
pub struct Heading {
    pub snomed: &'static str,
    pub display: &'static str,
    pub ukcore: Option<&'static str>,
    pub carries: Option<EntryKind>,
}

const fn heading(snomed: &'static str, display: &'static str, ukcore: Option<&'static str>, carries: Option<EntryKind>) -> Heading {
    Heading { snomed, display, ukcore, carries }
}

/// PRSB eDischarge headings (reference: nhs-interop §4).
pub const HEADINGS: &[Heading] = &[
    heading("886781000000108", "Admission details", None, None),
    heading("886921000000105", "Allergies and adverse reactions", Some("allergies-and-adverse-reaction"), Some(EntryKind::Allergy)),
    heading("887141000000103", "Assessment scales", None, None),
    heading("887181000000106", "Clinical summary", Some("clinical-narrative"), None),
    heading("887161000000102", "Diagnoses", Some("diagnoses"), Some(EntryKind::Condition)),
    heading("886811000000106", "Discharge details", Some("discharge-details"), None),
    heading("887261000000109", "Distribution list", None, None),
    heading("886711000000101", "GP practice", Some("general-practitioner-practice"), None),
    heading("1078911000000106", "Individual requirements", None, None),
    heading("1052951000000105", "Information and advice given", None, None),
    heading("1082101000000102", "Investigation results", None, None),
    heading("886961000000102", "Legal information", None, None),
    heading("933361000000108", "Medications and medical devices", Some("medications-and-medical-devices"), Some(EntryKind::Medication)),
    heading("886751000000102", "Participation in research", None, None),
    heading("886731000000109", "Patient demographics", Some("patient-demographics"), None),
    heading("1052941000000107", "Patient and carer concerns", None, None),
    heading("887231000000104", "Person completing record", Some("person-completing-record"), None),
    heading("887201000000105", "Plan and requested actions", None, None),
    heading("887171000000109", "Procedures", None, Some(EntryKind::Procedure)),
    heading("1052891000000108", "Referrer details", None, None),
    heading("886931000000107", "Safety alerts", None, None),
    heading("887051000000101", "Social context", None, None),
    heading("1077881000000105", "Attendance details", None, None),
    heading("1077901000000108", "Clinical narrative", Some("clinical-narrative"), None),
];

impl Section {
    /// The PRSB heading this section is: by its SNOMED CT code, else by its title.
    pub fn heading(&self) -> Option<&'static Heading> {
        let by_code = self
            .codes
            .iter()
            .filter(|coding| coding["system"] == SNOMED_CT)
            .find_map(|coding| HEADINGS.iter().find(|h| coding["code"] == h.snomed));
        by_code.or_else(|| {
            let title = self.title.as_deref()?.trim();
            HEADINGS.iter().find(|h| h.display.eq_ignore_ascii_case(title))
        })
    }
}

/// A code system named by OID, as FHIR names it.
pub fn system_for_oid(oid: &str) -> String {
    match oid {
        // NHS England's SNOMED CT OID and the international one.
        "2.16.840.1.113883.2.1.3.2.4.15" | "2.16.840.1.113883.6.96" => SNOMED_CT.to_owned(),
        "2.16.840.1.113883.2.1.3.2.4.19.1" | "2.16.840.1.113883.2.1.4.3" => ODS_ORGANIZATION_CODE.to_owned(),
        "2.16.840.1.113883.2.1.4.1" => NHS_NUMBER.to_owned(),
        "1.2.826.0.1285.0.2.0.65" => SDS_USER_ID.to_owned(),
        "2.16.840.1.113883.6.3" => "http://hl7.org/fhir/sid/icd-10".to_owned(),
        "2.16.840.1.113883.6.1" => "http://loinc.org".to_owned(),
        "2.16.840.1.113883.5.25" => V3_CONFIDENTIALITY.to_owned(),
        other => format!("urn:oid:{other}"),
    }
}

/// Build the R4 transaction for a document read by either reader; `original` is what was
/// received (attached as sent).
pub fn build(document: Discharge, original: &[u8]) -> Result<Translated, DocumentError> {
    let format = document.format;
    let fail = |location: &str, reason: &str| DocumentError::new(format, location, reason);
    let id = document.id.clone().ok_or_else(|| fail("document id", "the document has no id: it cannot be told from another"))?;
    let set_id = document.set_id.clone().unwrap_or_else(|| id.clone());
    let patient_details = document.patient.as_ref().ok_or_else(|| fail("patient", "the document names no patient with an NHS number"))?;
    if document.date.is_empty() {
        return Err(fail("document date", "the document has no date"));
    }
    let version_key = format!("{id}{}", document.version.as_deref().map(|v| format!("#{v}")).unwrap_or_default());
    let mut bundle = TransactionBuilder::new(&format!("{format}:{version_key}"));
    let security = security_labels(&document);

    let nhs = patient_details.nhs_number.as_string();
    let mut patient = json!({
        "resourceType": "Patient",
        "meta": {"profile": [format!("{UKCORE}Patient")]},
        "identifier": [{"system": NHS_NUMBER, "value": nhs}],
    });
    set(&mut patient, "name", patient_details.name.clone().map(|name| json!([name])));
    set(&mut patient, "gender", patient_details.gender.map(|gender| json!(gender)));
    set(&mut patient, "birthDate", patient_details.birth_date.clone().map(Value::String));
    // A document mentions the patient; their demographics are owned by the registration feeds.
    let subject = bundle.ensure(patient, &format!("identifier={NHS_NUMBER}|{nhs}"));

    let custodian = document.custodian.as_ref().and_then(|org| organisation(&mut bundle, org));
    let mut authors: Vec<Value> = Vec::new();
    for party in &document.authors {
        if let Some(person) = practitioner(&mut bundle, party) {
            authors.push(person);
        }
        if let Some(org) = party.organisation.as_ref().and_then(|org| organisation(&mut bundle, org))
            && !authors.contains(&org)
        {
            authors.push(org);
        }
    }
    if authors.is_empty() {
        authors.push(custodian.clone().ok_or_else(|| fail("author", "the document names neither an author nor a custodian"))?);
    }

    let encounter_details = document.encounter.as_ref();
    let encounter_key = encounter_details
        .and_then(|e| e.identifier.clone())
        .unwrap_or_else(|| Identifier::new(format!("urn:hie:{format}:encounter"), set_id.to_string()));
    let mut encounter = json!({
        "resourceType": "Encounter",
        "meta": {"profile": [format!("{UKCORE}Encounter")]},
        "identifier": [encounter_key.to_json()],
        "status": if encounter_details.and_then(|e| e.end.as_ref()).is_some() || encounter_details.is_none() { "finished" } else { "in-progress" },
        "class": encounter_details.and_then(|e| e.class.clone()).unwrap_or_else(|| json!({"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "IMP", "display": "inpatient encounter"})),
        "subject": {"reference": subject},
    });
    if let Some(details) = encounter_details {
        let mut period = Map::new();
        if let Some(start) = &details.start {
            period.insert("start".into(), json!(start));
        }
        if let Some(end) = &details.end {
            period.insert("end".into(), json!(end));
        }
        if !period.is_empty() {
            encounter["period"] = Value::Object(period);
        }
    }
    set(&mut encounter, "serviceProvider", custodian.clone());
    apply_security(&mut encounter, &security);
    // The visit is owned by the trust's ADT feed when it has one: a document mentions it.
    let encounter_url = bundle.ensure(encounter, &encounter_key.condition(&nhs));

    let context = EntryContext {
        subject: &subject,
        nhs_number: &nhs,
        encounter: &encounter_url,
        recorded: &document.date,
        security: &security,
        retracted: document.status == "entered-in-error",
    };
    let sections: Vec<Value> = document.sections.iter().map(|section| composition_section(&mut bundle, section, &context)).collect();

    let mut type_codings = vec![json!({"system": SNOMED_CT, "code": DISCHARGE_SUMMARY.0, "display": DISCHARGE_SUMMARY.1})];
    type_codings.extend(document.original_type.iter().filter(|c| c["code"] != DISCHARGE_SUMMARY.0).cloned());
    let mut composition = json!({
        "resourceType": "Composition",
        "meta": {"profile": [format!("{UKCORE}Composition")]},
        "identifier": set_id.to_json(),
        "status": document.status,
        "type": {"coding": type_codings},
        "subject": {"reference": subject},
        "encounter": {"reference": encounter_url},
        "date": document.date,
        "author": authors,
        "title": document.title,
        "section": sections,
    });
    set(&mut composition, "confidentiality", document.confidentiality.clone().map(Value::String));
    set(&mut composition, "custodian", custodian.clone());
    apply_security(&mut composition, &security);
    let composition_authors = composition["author"].clone();
    let composition_url = bundle.upsert(composition, &set_id.condition(&nhs));

    use base64::Engine;
    let mut attachment = json!({
        "contentType": document.original_content_type,
        "data": base64::engine::general_purpose::STANDARD.encode(original),
        "title": document.title,
        "creation": document.date,
    });
    if document.original_content_type.contains("xml") {
        attachment["language"] = json!("en-GB");
    }
    let mut reference = json!({
        "resourceType": "DocumentReference",
        "meta": {"profile": [format!("{UKCORE}DocumentReference")]},
        "masterIdentifier": id.to_json(),
        "identifier": [set_id.to_json()],
        "status": if document.status == "entered-in-error" { "entered-in-error" } else { "current" },
        "type": {"coding": [{"system": SNOMED_CT, "code": DISCHARGE_SUMMARY.0, "display": DISCHARGE_SUMMARY.1}]},
        "subject": {"reference": subject},
        "author": composition_authors,
        "description": document.title,
        "content": [{"attachment": attachment}],
        "context": {"encounter": [{"reference": encounter_url}], "related": [{"reference": composition_url}]},
    });
    if document.status != "entered-in-error" {
        reference["docStatus"] = json!(document.status);
    }
    if let Some(instant) = instant(&document.date) {
        reference["date"] = json!(instant);
    }
    if let Some(details) = encounter_details
        && let Some(start) = &details.start
    {
        reference["context"]["period"] = json!({"start": start});
        set(&mut reference["context"]["period"], "end", details.end.clone().map(Value::String));
    }
    set(&mut reference, "custodian", custodian.clone());
    if let Some(code) = &document.confidentiality {
        reference["securityLabel"] = json!([{"coding": [{"system": V3_CONFIDENTIALITY, "code": code}]}]);
    }
    apply_security(&mut reference, &security);
    bundle.upsert(reference, &set_id.condition(&nhs));

    let digest = content_digest(&document.digested);
    let provenance_id = derived_id("doc", &format!("{format}:{version_key}"));
    let organisation = document
        .custodian
        .as_ref()
        .and_then(|o| o.ods.clone())
        .or_else(|| document.authors.iter().find_map(|a| a.organisation.as_ref()?.ods.clone()));
    let targets = bundle.full_urls();
    let recorded = instant(&document.date).unwrap_or_else(|| start_of(&document.date));
    let display = format!(
        "{} discharge summary {:?}{}",
        format.to_uppercase(),
        document.title,
        document.version.as_deref().map(|v| format!(", version {v}")).unwrap_or_default()
    );
    let author = organisation.clone().unwrap_or_else(|| "unknown organisation".into());
    let mut record = provenance(
        &Source {
            id: &provenance_id,
            recorded: &recorded,
            author: &author,
            system: &format!("urn:hie:{format}:document"),
            key: &version_key,
            display: &display,
            digest: &digest,
            digested: "the document as received, without its transport envelope",
        },
        &targets,
    );
    apply_security(&mut record, &security);
    bundle.put(record);
    let source_codings = document.source_codings;
    Ok(Translated { bundle: bundle.finish(), document: version_key, provenance_id, digest, organisation, source_codings })
}

struct EntryContext<'a> {
    subject: &'a str,
    nhs_number: &'a str,
    encounter: &'a str,
    recorded: &'a str,
    security: &'a [Value],
    /// The document is entered in error: so is everything it said.
    retracted: bool,
}

fn composition_section(bundle: &mut TransactionBuilder, section: &Section, context: &EntryContext<'_>) -> Value {
    let mut out = Map::new();
    let heading = section.heading();
    if let Some(title) = section.title.clone().or_else(|| heading.map(|h| h.display.to_owned())) {
        out.insert("title".into(), json!(title));
    }
    let mut codings: Vec<Value> = Vec::new();
    if let Some(heading) = heading {
        codings.push(json!({"system": SNOMED_CT, "code": heading.snomed, "display": heading.display}));
        if let Some(code) = heading.ukcore {
            codings.push(json!({"system": RECORD_HEADINGS, "code": code}));
        }
    }
    for coding in &section.codes {
        if !codings.iter().any(|kept| kept["system"] == coding["system"] && kept["code"] == coding["code"]) {
            codings.push(coding.clone());
        }
    }
    if !codings.is_empty() {
        out.insert("code".into(), json!({"coding": codings}));
    }
    let mut references = Vec::new();
    for entry in &section.entries {
        references.push(json!({"reference": entry_resource(bundle, entry, context)}));
    }
    let children: Vec<Value> = section.sections.iter().map(|child| composition_section(bundle, child, context)).collect();
    match &section.narrative {
        Some(div) => {
            out.insert("text".into(), json!({"status": if references.is_empty() { "additional" } else { "generated" }, "div": div}));
        }
        None if references.is_empty() && children.is_empty() => {
            // R4 cmp-1: a section holds text, entries or sections; an empty one says so.
            out.insert("text".into(), json!({"status": "generated", "div": narrative::plain("No information recorded in this section.")}));
            out.insert(
                "emptyReason".into(),
                json!({"coding": [{"system": "http://terminology.hl7.org/CodeSystem/list-empty-reason", "code": "unavailable"}]}),
            );
        }
        None => {}
    }
    if !references.is_empty() {
        out.insert("entry".into(), json!(references));
    }
    if !children.is_empty() {
        out.insert("section".into(), json!(children));
    }
    Value::Object(out)
}

/// One structured entry as an R4 resource, upserted on its source identifier.
fn entry_resource(bundle: &mut TransactionBuilder, entry: &Entry, context: &EntryContext<'_>) -> String {
    let subject = json!({"reference": context.subject});
    let encounter = json!({"reference": context.encounter});
    let mut resource = match entry.kind {
        EntryKind::Condition => {
            let mut condition = json!({
                "resourceType": "Condition",
                "meta": {"profile": [format!("{UKCORE}Condition")]},
                "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-category", "code": "encounter-diagnosis", "display": "Encounter Diagnosis"}]}],
                "code": entry.code,
                "subject": subject,
                "encounter": encounter,
                "recordedDate": context.recorded,
            });
            let verification = if context.retracted { Some("entered-in-error") } else { entry.verification.as_deref() };
            // R4 con-5: no clinical status on a condition entered in error.
            if let Some(status) = entry.status.as_deref().filter(|_| verification != Some("entered-in-error")) {
                condition["clinicalStatus"] = concept("http://terminology.hl7.org/CodeSystem/condition-clinical", status);
            }
            if let Some(status) = verification {
                condition["verificationStatus"] = concept("http://terminology.hl7.org/CodeSystem/condition-ver-status", status);
            }
            set(&mut condition, "onsetDateTime", entry.start.clone().map(Value::String));
            set(&mut condition, "abatementDateTime", entry.end.clone().map(Value::String));
            condition
        }
        EntryKind::Procedure => {
            let mut procedure = json!({
                "resourceType": "Procedure",
                "meta": {"profile": [format!("{UKCORE}Procedure")]},
                "status": if context.retracted { "entered-in-error".into() } else { entry.status.clone().unwrap_or_else(|| "completed".into()) },
                "code": entry.code,
                "subject": subject,
                "encounter": encounter,
            });
            match (&entry.start, &entry.end) {
                (Some(start), Some(end)) => procedure["performedPeriod"] = json!({"start": start, "end": end}),
                (Some(start), None) => procedure["performedDateTime"] = json!(start),
                _ => {}
            }
            procedure
        }
        EntryKind::Allergy => {
            let mut allergy = json!({
                "resourceType": "AllergyIntolerance",
                "meta": {"profile": [format!("{UKCORE}AllergyIntolerance")]},
                "code": entry.code,
                "patient": subject,
                "encounter": encounter,
                "recordedDate": context.recorded,
            });
            let verification = if context.retracted { Some("entered-in-error") } else { entry.verification.as_deref() };
            // R4 ait-2: no clinical status on an allergy entered in error.
            if let Some(status) = entry.status.as_deref().filter(|_| verification != Some("entered-in-error")) {
                allergy["clinicalStatus"] = concept("http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical", status);
            }
            if let Some(status) = verification {
                allergy["verificationStatus"] = concept("http://terminology.hl7.org/CodeSystem/allergyintolerance-verification", status);
            }
            set(&mut allergy, "onsetDateTime", entry.start.clone().map(Value::String));
            set(&mut allergy, "criticality", entry.criticality.clone().map(Value::String));
            if !entry.reactions.is_empty() {
                allergy["reaction"] = json!(entry.reactions);
            }
            if let Some(text) = &entry.text {
                allergy["note"] = json!([{"text": text}]);
            }
            allergy
        }
        EntryKind::Medication => {
            let mut medication = json!({
                "resourceType": "MedicationStatement",
                "meta": {"profile": [format!("{UKCORE}MedicationStatement")]},
                "status": if context.retracted { "entered-in-error".into() } else { entry.status.clone().unwrap_or_else(|| "active".into()) },
                "medicationCodeableConcept": entry.code,
                "subject": subject,
                "context": encounter,
                "dateAsserted": context.recorded,
            });
            match (&entry.start, &entry.end) {
                (Some(start), Some(end)) => medication["effectivePeriod"] = json!({"start": start, "end": end}),
                (Some(start), None) => medication["effectiveDateTime"] = json!(start),
                _ => {}
            }
            if let Some(text) = &entry.text {
                medication["dosage"] = json!([{"text": text}]);
            }
            medication
        }
    };
    resource["identifier"] = json!([entry.key.to_json()]);
    let mut labels = context.security.to_vec();
    labels.extend(entry.labels.iter().filter(|label| !context.security.contains(label)).cloned());
    apply_security(&mut resource, &labels);
    bundle.upsert(resource, &entry.key.condition(context.nhs_number))
}

/// An Organization keyed on its ODS code (created if unknown); a display-only reference when
/// the document gives a name and no code.
fn organisation(bundle: &mut TransactionBuilder, org: &Organisation) -> Option<Value> {
    match (&org.ods, &org.name) {
        (Some(ods), name) => {
            let mut resource = json!({
                "resourceType": "Organization",
                "meta": {"profile": [format!("{UKCORE}Organization")]},
                "identifier": [{"system": ODS_ORGANIZATION_CODE, "value": ods}],
            });
            set(&mut resource, "name", name.clone().map(Value::String));
            let url = bundle.ensure(resource, &format!("identifier={ODS_ORGANIZATION_CODE}|{}", query_value(ods)));
            Some(json!({"reference": url}))
        }
        (None, Some(name)) => Some(json!({"display": name})),
        (None, None) => None,
    }
}

/// A Practitioner keyed on their SDS user id; a display-only reference for a named person
/// without one.
fn practitioner(bundle: &mut TransactionBuilder, party: &Party) -> Option<Value> {
    let display = party.name.as_ref().and_then(name_text);
    match &party.sds_user_id {
        Some(sds) => {
            let mut resource = json!({
                "resourceType": "Practitioner",
                "meta": {"profile": [format!("{UKCORE}Practitioner")]},
                "identifier": [{"system": SDS_USER_ID, "value": sds}],
            });
            set(&mut resource, "name", party.name.clone().map(|name| json!([name])));
            let url = bundle.ensure(resource, &format!("identifier={SDS_USER_ID}|{}", query_value(sds)));
            let mut reference = json!({"reference": url});
            set(&mut reference, "display", display.map(Value::String));
            Some(reference)
        }
        None => display.map(|name| json!({"display": name})),
    }
}

/// A HumanName in words.
fn name_text(name: &Value) -> Option<String> {
    if let Some(text) = name["text"].as_str() {
        return Some(text.to_owned());
    }
    let mut parts: Vec<&str> = Vec::new();
    for key in ["prefix", "given"] {
        parts.extend(name[key].as_array().into_iter().flatten().filter_map(Value::as_str));
    }
    parts.extend(name["family"].as_str());
    (!parts.is_empty()).then(|| parts.join(" "))
}

/// The document's confidentiality as a label on each resource it makes: restricted (`R`) and
/// very restricted (`V`) documents keep that through every resource (normal needs no label).
fn security_labels(document: &Discharge) -> Vec<Value> {
    match document.confidentiality.as_deref() {
        Some(code @ ("R" | "V")) => vec![json!({"system": V3_CONFIDENTIALITY, "code": code})],
        _ => Vec::new(),
    }
}

fn apply_security(resource: &mut Value, labels: &[Value]) {
    if !labels.is_empty() {
        resource["meta"]["security"] = json!(labels);
    }
}

fn concept(system: &str, code: &str) -> Value {
    json!({"coding": [{"system": system, "code": code}]})
}

fn set(resource: &mut Value, field: &str, value: Option<Value>) {
    if let Some(value) = value {
        resource[field] = value;
    }
}

/// The first instant of a date, or of a year-month or a year (UTC).
fn start_of(date: &str) -> String {
    let day = match date.len() {
        4 => format!("{date}-01-01"),
        7 => format!("{date}-01"),
        _ => date.get(..10).unwrap_or("1970-01-01").to_owned(),
    };
    format!("{day}T00:00:00Z")
}

/// A FHIR dateTime with a time and offset as an instant (seconds kept); `None` for a date.
fn instant(date_time: &str) -> Option<String> {
    let has_time = date_time.len() > 10 && date_time.as_bytes().get(10) == Some(&b'T');
    let has_zone =
        date_time.ends_with('Z') || date_time.get(date_time.len().saturating_sub(6)..).is_some_and(|zone| zone.starts_with(['+', '-']));
    (has_time && has_zone && date_time.len() >= 20).then(|| date_time.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_are_found_by_code_or_title() {
        let by_code = Section { codes: vec![json!({"system": SNOMED_CT, "code": "887161000000102"})], ..Section::default() };
        assert_eq!(by_code.heading().unwrap().display, "Diagnoses");
        let by_title = Section { title: Some(" allergies and adverse reactions ".into()), ..Section::default() };
        assert_eq!(by_title.heading().unwrap().carries, Some(EntryKind::Allergy));
        assert!(Section { title: Some("Ward notes".into()), ..Section::default() }.heading().is_none());
    }

    #[test]
    fn partial_dates_start_at_their_first_instant() {
        assert_eq!(start_of("2026"), "2026-01-01T00:00:00Z");
        assert_eq!(start_of("2026-03"), "2026-03-01T00:00:00Z");
        assert_eq!(start_of("2026-03-04"), "2026-03-04T00:00:00Z");
    }

    #[test]
    fn keys_are_escaped_and_scoped_to_the_patient() {
        let key = Identifier::new("urn:x", "a,b|c\\d$e");
        assert_eq!(
            key.condition("9449305552"),
            "identifier=urn:x|a\\,b\\|c\\\\d\\$e&patient.identifier=https://fhir.nhs.uk/Id/nhs-number|9449305552"
        );
    }

    #[test]
    fn only_full_times_with_offsets_are_instants() {
        assert_eq!(instant("2026-03-01T14:30:00+00:00").as_deref(), Some("2026-03-01T14:30:00+00:00"));
        assert_eq!(instant("2026-03-01T14:30:00Z").as_deref(), Some("2026-03-01T14:30:00Z"));
        assert_eq!(instant("2026-03-01"), None);
        assert_eq!(instant("2026-03"), None);
    }
}
