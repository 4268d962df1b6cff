//! Deterministic synthetic discharge summaries from the demo trusts, as legacy CDA (ITK
//! eDischarge), as ITK3 FHIR STU3 message Bundles, and as FHIR R4 document Bundles (a trust
//! that publishes R4 itself), for the demo region's people (the same
//! test-range NHS numbers and practices). Each carries admission and discharge, one or two
//! diagnoses, perhaps a procedure, an allergy (or "no known allergies"), discharge medicines,
//! and the PRSB sections a GP reads. Every tenth summary records an HIV diagnosis (a sensitive
//! class the labels must catch); every thirteenth is marked restricted (`R`).

use serde_json::{Value, json};

use crate::demo::{PRACTICES, Practice, Sequence, TRUSTS, person, test_nhs_number};
use crate::translate::Format;

const DIAGNOSES: [(&str, &str); 6] = [
    ("233604007", "Pneumonia"),
    ("22298006", "Myocardial infarction"),
    ("195967001", "Asthma"),
    ("68566005", "Urinary tract infectious disease"),
    ("13645005", "Chronic obstructive lung disease"),
    ("230690007", "Cerebrovascular accident"),
];
const HIV: (&str, &str) = ("86406008", "Human immunodeficiency virus infection");
const PROCEDURES: [(&str, &str); 3] =
    [("80146002", "Excision of appendix"), ("40701008", "Echocardiography"), ("397956004", "Prosthetic arthroplasty of the hip")];
const MEDICINES: [(&str, &str, &str); 4] = [
    ("322236009", "Paracetamol 500mg tablets", "Two tablets up to four times a day when required"),
    ("323509004", "Amoxicillin 500mg capsules", "One capsule three times a day for 5 days"),
    ("319740004", "Aspirin 75mg gastro-resistant tablets", "One tablet once a day"),
    ("320176004", "Salbutamol 100micrograms/dose inhaler", "Two puffs when required"),
];
const PENICILLIN_ALLERGY: (&str, &str) = ("91936005", "Allergy to penicillin");
const NO_KNOWN_ALLERGY: (&str, &str) = ("716186003", "No known allergy");

/// What one summary says, in either format.
struct Summary {
    index: usize,
    nhs_number: String,
    given: &'static str,
    family: &'static str,
    female: bool,
    birth_date: String,
    practice: &'static Practice,
    trust: &'static Practice,
    document_uuid: String,
    set_uuid: String,
    /// `yyyy-MM-dd` and the discharge instant's parts.
    admitted: String,
    discharged: String,
    discharged_time: String,
    diagnoses: Vec<(&'static str, &'static str)>,
    procedure: Option<(&'static str, &'static str)>,
    allergy: (&'static str, &'static str),
    medicines: Vec<(&'static str, &'static str, &'static str)>,
    restricted: bool,
    clinician: (&'static str, &'static str, String),
}

fn uuid_from(sequence: &mut Sequence) -> String {
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&sequence.next().to_be_bytes());
    bytes[8..].copy_from_slice(&sequence.next().to_be_bytes());
    uuid::Builder::from_random_bytes(bytes).into_uuid().to_string()
}

/// A UUID named by some bytes (the same name, the same UUID).
fn name_uuid(name: &[u8]) -> uuid::Uuid {
    let hash = ring::digest::digest(&ring::digest::SHA256, name);
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&hash.as_ref()[..16]);
    uuid::Builder::from_random_bytes(bytes).into_uuid()
}

fn summary(index: usize) -> Summary {
    let mut sequence = Sequence::new(0x4449_5343_4841 ^ index as u64);
    let who = person(index);
    let trust = &TRUSTS[index % TRUSTS.len()];
    let month = 1 + sequence.below(9);
    let day = 1 + sequence.below(20);
    let stay = 1 + sequence.below(7);
    let mut diagnoses = vec![*sequence.pick(&DIAGNOSES)];
    if sequence.below(2) == 0 {
        let second = *sequence.pick(&DIAGNOSES);
        if second != diagnoses[0] {
            diagnoses.push(second);
        }
    }
    if index % 10 == 7 {
        diagnoses.push(HIV);
    }
    let procedure = (sequence.below(3) == 0).then(|| *sequence.pick(&PROCEDURES));
    let allergy = if sequence.below(3) == 0 { PENICILLIN_ALLERGY } else { NO_KNOWN_ALLERGY };
    let mut medicines = vec![MEDICINES[0]];
    let other = *sequence.pick(&MEDICINES[1..]);
    medicines.push(other);
    let clinician_given = ["Priya", "Tom", "Grace", "Ade"][index % 4];
    let clinician_family = ["Shah", "Evans", "Okafor", "Morgan"][index % 4];
    Summary {
        index,
        nhs_number: test_nhs_number(index as u64).as_string(),
        given: who.given,
        family: who.family,
        female: who.female,
        birth_date: who.birth_date,
        practice: &PRACTICES[index % PRACTICES.len()],
        trust,
        document_uuid: uuid_from(&mut sequence),
        set_uuid: uuid_from(&mut sequence),
        admitted: format!("2026-{month:02}-{day:02}"),
        discharged: format!("2026-{month:02}-{:02}", day + stay),
        discharged_time: format!("{:02}:{:02}:00", 10 + sequence.below(8), sequence.below(60)),
        diagnoses,
        procedure,
        allergy,
        medicines,
        restricted: index % 13 == 5,
        clinician: (clinician_given, clinician_family, format!("5552{:08}", index % 97 + 1)),
    }
}

/// The summaries for demo people `indexes`, as files: `(name, bytes)`.
pub fn discharge_summaries(format: Format, indexes: &[usize]) -> Vec<(String, Vec<u8>)> {
    indexes
        .iter()
        .map(|&index| {
            let summary = summary(index);
            match format {
                Format::Itk3 => (
                    format!("discharge-{}-{}.json", summary.trust.ods, summary.nhs_number),
                    serde_json::to_vec_pretty(&itk3(&summary)).expect("JSON"),
                ),
                Format::Fhir => (
                    format!("discharge-{}-{}.r4.json", summary.trust.ods, summary.nhs_number),
                    serde_json::to_vec_pretty(&r4_document(&summary)).expect("JSON"),
                ),
                _ => (format!("discharge-{}-{}.xml", summary.trust.ods, summary.nhs_number), cda(&summary).into_bytes()),
            }
        })
        .collect()
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

fn compact(date: &str) -> String {
    date.replace(['-', ':'], "")
}

const SCT_OID: &str = "2.16.840.1.113883.2.1.3.2.4.15";

fn cda(s: &Summary) -> String {
    let code = |code: &str, display: &str| format!(r#"<code code="{code}" codeSystem="{SCT_OID}" displayName="{}"/>"#, escape(display));
    let section = |code_value: &str, title: &str, text: &str, entries: &str| {
        format!(
            "    <component><section><id root=\"{}\"/>{}<title>{}</title><text>{text}</text>{entries}</section></component>\n",
            name_uuid(format!("{}:{code_value}", s.set_uuid).as_bytes()),
            code(code_value, title),
            escape(title)
        )
    };
    let entry_id = |name: &str| name_uuid(format!("{}:{name}", s.set_uuid).as_bytes());
    let mut diagnoses_text = String::from("<list>");
    let mut diagnoses_entries = String::new();
    for (number, (value, display)) in s.diagnoses.iter().enumerate() {
        diagnoses_text.push_str(&format!("<item>{}</item>", escape(display)));
        diagnoses_entries.push_str(&format!(
            r#"<entry><observation classCode="OBS" moodCode="EVN"><id root="{}"/>{}<effectiveTime value="{}"/></observation></entry>"#,
            entry_id(&format!("diagnosis-{number}")),
            code(value, display),
            compact(&s.admitted)
        ));
    }
    diagnoses_text.push_str("</list>");
    let (procedures_text, procedures_entries) = match s.procedure {
        Some((value, display)) => (
            format!("<paragraph>{} on {}</paragraph>", escape(display), s.admitted),
            format!(
                r#"<entry><procedure classCode="PROC" moodCode="EVN"><id root="{}"/>{}<statusCode code="completed"/><effectiveTime value="{}"/></procedure></entry>"#,
                entry_id("procedure"),
                code(value, display),
                compact(&s.admitted)
            ),
        ),
        None => ("<paragraph>None performed.</paragraph>".to_owned(), String::new()),
    };
    let allergy_entry = format!(
        r#"<entry><observation classCode="OBS" moodCode="EVN"><id root="{}"/>{}</observation></entry>"#,
        entry_id("allergy"),
        code(s.allergy.0, s.allergy.1)
    );
    let mut medicines_text = String::from("<table><thead><tr><th>Medicine</th><th>Dose</th></tr></thead><tbody>");
    let mut medicines_entries = String::new();
    for (number, (value, display, dose)) in s.medicines.iter().enumerate() {
        medicines_text.push_str(&format!("<tr><td>{}</td><td>{}</td></tr>", escape(display), escape(dose)));
        medicines_entries.push_str(&format!(
            r#"<entry><substanceAdministration classCode="SBADM" moodCode="INT"><id root="{}"/><text>{}</text><statusCode code="active"/><consumable><manufacturedProduct><manufacturedMaterial>{}</manufacturedMaterial></manufacturedProduct></consumable></substanceAdministration></entry>"#,
            entry_id(&format!("medicine-{number}")),
            escape(dose),
            code(value, display)
        ));
    }
    medicines_text.push_str("</tbody></table>");
    let mut body = String::new();
    body.push_str(&section(
        "887181000000106",
        "Clinical summary",
        &format!(
            "<paragraph>Admitted on {} and discharged home on {}. Recovered well; follow up with the GP in two weeks.</paragraph>",
            s.admitted, s.discharged
        ),
        "",
    ));
    body.push_str(&section("887161000000102", "Diagnoses", &diagnoses_text, &diagnoses_entries));
    body.push_str(&section("887171000000109", "Procedures", &procedures_text, &procedures_entries));
    body.push_str(&section(
        "886921000000105",
        "Allergies and adverse reactions",
        &format!("<paragraph>{}</paragraph>", escape(s.allergy.1)),
        &allergy_entry,
    ));
    body.push_str(&section("933361000000108", "Medications and medical devices", &medicines_text, &medicines_entries));
    body.push_str(&section(
        "887201000000105",
        "Plan and requested actions",
        "<paragraph>GP to review medication in two weeks.</paragraph>",
        "",
    ));
    let gender = if s.female { "2" } else { "1" };
    let confidentiality = if s.restricted { "R" } else { "N" };
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<ClinicalDocument xmlns="urn:hl7-org:v3" xmlns:npfitlc="NPFIT:HL7:Localisation">
  <typeId root="2.16.840.1.113883.1.3" extension="POCD_HD000040"/>
  <npfitlc:messageType root="2.16.840.1.113883.2.1.3.2.4.18.17" extension="POCD_MT000002UK01"/>
  <id root="{document}"/>
  <code code="163391000000107" codeSystem="{SCT_OID}" displayName="Discharge from inpatient care"/>
  <title>Inpatient discharge summary</title>
  <effectiveTime value="{effective}+0000"/>
  <confidentialityCode code="{confidentiality}" codeSystem="2.16.840.1.113883.1.11.16926"/>
  <setId root="{set}"/>
  <versionNumber value="1"/>
  <recordTarget typeCode="RCT"><patientRole classCode="PAT">
    <id root="2.16.840.1.113883.2.1.4.1" extension="{nhs}"/>
    <patient classCode="PSN"><name><given>{given}</given><family>{family}</family></name>
      <administrativeGenderCode code="{gender}" codeSystem="2.16.840.1.113883.2.1.3.2.4.16.25"/><birthTime value="{birth}"/></patient>
    <providerOrganization><id root="2.16.840.1.113883.2.1.3.2.4.19.1" extension="{practice}"/><name>{practice_name}</name></providerOrganization>
  </patientRole></recordTarget>
  <author typeCode="AUT"><time value="{effective}+0000"/><assignedAuthor classCode="ASSIGNED">
    <id root="1.2.826.0.1285.0.2.0.65" extension="{sds}"/>
    <assignedPerson><name><prefix>Dr</prefix><given>{clinician_given}</given><family>{clinician_family}</family></name></assignedPerson>
    <representedOrganization><id root="2.16.840.1.113883.2.1.3.2.4.19.1" extension="{trust}"/><name>{trust_name}</name></representedOrganization>
  </assignedAuthor></author>
  <custodian><assignedCustodian><representedCustodianOrganization><id root="2.16.840.1.113883.2.1.3.2.4.19.1" extension="{trust}"/><name>{trust_name}</name></representedCustodianOrganization></assignedCustodian></custodian>
  <componentOf><encompassingEncounter><id root="2.16.840.1.113883.2.1.3.2.4.18.24" extension="SPELL-{trust}-{index:06}"/>
    <effectiveTime><low value="{admitted}"/><high value="{effective}+0000"/></effectiveTime></encompassingEncounter></componentOf>
  <component><structuredBody>
{body}  </structuredBody></component>
</ClinicalDocument>
"#,
        document = s.document_uuid,
        effective = compact(&format!("{}{}", s.discharged, s.discharged_time)),
        set = s.set_uuid,
        nhs = s.nhs_number,
        given = escape(s.given),
        family = escape(s.family),
        birth = compact(&s.birth_date),
        practice = s.practice.ods,
        practice_name = escape(s.practice.name),
        sds = s.clinician.2,
        clinician_given = s.clinician.0,
        clinician_family = s.clinician.1,
        trust = s.trust.ods,
        trust_name = escape(s.trust.name),
        index = s.index,
        admitted = compact(&s.admitted),
    )
}

fn itk3(s: &Summary) -> Value {
    let url = |name: &str| format!("urn:uuid:{}", name_uuid(format!("{}:{name}", s.set_uuid).as_bytes()));
    let sct = |code: &str, display: &str| json!({"coding": [{"system": "http://snomed.info/sct", "code": code, "display": display}]});
    let subject = json!({"reference": url("patient")});
    let encounter_ref = json!({"reference": url("encounter")});
    let discharged_at = format!("{}T{}+00:00", s.discharged, s.discharged_time);
    let entry_identifier = |name: &str| json!([{"system": format!("https://fhir.{}.nhs.uk/Id/discharge-entry", s.trust.ods.to_ascii_lowercase()), "value": format!("{}-{name}", s.set_uuid)}]);
    let mut entries: Vec<Value> = Vec::new();
    let mut push = |name: &str, resource: Value| entries.push(json!({"fullUrl": url(name), "resource": resource}));
    let mut diagnosis_refs = Vec::new();
    for (number, (code, display)) in s.diagnoses.iter().enumerate() {
        let name = format!("diagnosis-{number}");
        diagnosis_refs.push(json!({"reference": url(&name)}));
        push(
            &name,
            json!({
                "resourceType": "Condition",
                "meta": {"profile": ["https://fhir.hl7.org.uk/STU3/StructureDefinition/CareConnect-ProblemHeader-Condition-1"]},
                "identifier": entry_identifier(&name),
                "clinicalStatus": "active",
                "verificationStatus": "confirmed",
                "category": [{"coding": [{"system": "http://hl7.org/fhir/condition-category", "code": "encounter-diagnosis"}]}],
                "code": sct(code, display),
                "subject": subject,
                "onsetDateTime": s.admitted,
            }),
        );
    }
    let mut procedure_refs = Vec::new();
    if let Some((code, display)) = s.procedure {
        procedure_refs.push(json!({"reference": url("procedure")}));
        push(
            "procedure",
            json!({
                "resourceType": "Procedure",
                "identifier": entry_identifier("procedure"),
                "status": "completed",
                "code": sct(code, display),
                "subject": subject,
                "performedDateTime": s.admitted,
            }),
        );
    }
    push(
        "allergy",
        json!({
            "resourceType": "AllergyIntolerance",
            "identifier": entry_identifier("allergy"),
            "clinicalStatus": "active",
            "verificationStatus": "confirmed",
            "code": sct(s.allergy.0, s.allergy.1),
            "patient": subject,
        }),
    );
    let mut medicine_items = Vec::new();
    for (number, (code, display, dose)) in s.medicines.iter().enumerate() {
        let name = format!("medicine-{number}");
        medicine_items.push(json!({"item": {"reference": url(&name)}}));
        push(
            &name,
            json!({
                "resourceType": "MedicationStatement",
                "identifier": entry_identifier(&name),
                "status": "active",
                "medicationCodeableConcept": sct(code, display),
                "effectiveDateTime": s.discharged,
                "subject": subject,
                "taken": "unk",
                "dosage": [{"text": dose}],
            }),
        );
    }
    push(
        "medicines-list",
        json!({
            "resourceType": "List",
            "status": "current",
            "mode": "snapshot",
            "code": sct("933361000000108", "Medications and medical devices"),
            "subject": subject,
            "entry": medicine_items,
        }),
    );
    push(
        "patient",
        json!({
            "resourceType": "Patient",
            "meta": {"profile": ["https://fhir.nhs.uk/STU3/StructureDefinition/CareConnect-ITK-Patient-1"]},
            "identifier": [{"system": "https://fhir.nhs.uk/Id/nhs-number", "value": s.nhs_number}],
            "name": [{"use": "official", "family": s.family, "given": [s.given]}],
            "gender": if s.female { "female" } else { "male" },
            "birthDate": s.birth_date,
            "generalPractitioner": [{"reference": url("practice")}],
        }),
    );
    push(
        "practice",
        json!({"resourceType": "Organization", "identifier": [{"system": "https://fhir.nhs.uk/Id/ods-organization-code", "value": s.practice.ods}], "name": s.practice.name}),
    );
    push(
        "trust",
        json!({"resourceType": "Organization", "identifier": [{"system": "https://fhir.nhs.uk/Id/ods-organization-code", "value": s.trust.ods}], "name": s.trust.name}),
    );
    push(
        "clinician",
        json!({
            "resourceType": "Practitioner",
            "identifier": [{"system": "https://fhir.nhs.uk/Id/sds-user-id", "value": s.clinician.2}],
            "name": [{"family": s.clinician.1, "given": [s.clinician.0], "prefix": ["Dr"]}],
        }),
    );
    push(
        "clinician-role",
        json!({"resourceType": "PractitionerRole", "practitioner": {"reference": url("clinician")}, "organization": {"reference": url("trust")}}),
    );
    push(
        "encounter",
        json!({
            "resourceType": "Encounter",
            "identifier": [{"system": format!("https://fhir.{}.nhs.uk/Id/spell", s.trust.ods.to_ascii_lowercase()), "value": format!("SPELL-{}-{:06}", s.trust.ods, s.index)}],
            "status": "finished",
            "class": {"system": "http://hl7.org/fhir/v3/ActCode", "code": "IMP", "display": "inpatient encounter"},
            "subject": subject,
            "period": {"start": s.admitted, "end": discharged_at},
            "serviceProvider": {"reference": url("trust")},
        }),
    );
    let div = |text: String| json!({"status": "generated", "div": format!("<div xmlns=\"http://www.w3.org/1999/xhtml\">{text}</div>")});
    let list =
        |items: Vec<String>| format!("<ul>{}</ul>", items.into_iter().map(|i| format!("<li>{}</li>", escape(&i))).collect::<String>());
    let composition = json!({
        "resourceType": "Composition",
        "meta": {"profile": ["https://fhir.nhs.uk/STU3/StructureDefinition/ITK-EDIS-Composition-1"]},
        "identifier": {"system": "https://tools.ietf.org/html/rfc4122", "value": s.set_uuid},
        "status": "final",
        "type": sct("373942005", "Discharge summary"),
        "subject": subject,
        "encounter": encounter_ref,
        "date": discharged_at,
        "author": [{"reference": url("clinician-role")}],
        "title": "Inpatient discharge summary",
        "confidentiality": if s.restricted { "R" } else { "N" },
        "custodian": {"reference": url("trust")},
        "section": [
            {"title": "Clinical summary", "code": sct("887181000000106", "Clinical summary"),
             "text": div(format!("<p>Admitted on {} and discharged home on {}. Recovered well; follow up with the GP in two weeks.</p>", s.admitted, s.discharged))},
            {"title": "Diagnoses", "code": sct("887161000000102", "Diagnoses"),
             "text": div(list(s.diagnoses.iter().map(|(_, d)| (*d).to_owned()).collect())), "entry": diagnosis_refs},
            {"title": "Procedures", "code": sct("887171000000109", "Procedures"),
             "text": div(match s.procedure { Some((_, d)) => format!("<p>{}</p>", escape(d)), None => "<p>None performed.</p>".into() }), "entry": procedure_refs},
            {"title": "Allergies and adverse reactions", "code": sct("886921000000105", "Allergies and adverse reactions"),
             "text": div(format!("<p>{}</p>", escape(s.allergy.1))), "entry": [{"reference": url("allergy")}]},
            {"title": "Medications and medical devices", "code": sct("933361000000108", "Medications and medical devices"),
             "text": div(list(s.medicines.iter().map(|(_, d, dose)| format!("{d}: {dose}")).collect())), "entry": [{"reference": url("medicines-list")}]},
            {"title": "Plan and requested actions", "code": sct("887201000000105", "Plan and requested actions"),
             "text": div("<p>GP to review medication in two weeks.</p>".into())},
        ],
    });
    entries.insert(0, json!({"fullUrl": url("composition"), "resource": composition}));
    let document = json!({
        "resourceType": "Bundle",
        "meta": {"profile": ["https://fhir.nhs.uk/STU3/StructureDefinition/ITK-Document-Bundle-1"]},
        "identifier": {"system": "https://tools.ietf.org/html/rfc4122", "value": s.document_uuid},
        "type": "document",
        "entry": entries,
    });
    json!({
        "resourceType": "Bundle",
        "meta": {"profile": ["https://fhir.nhs.uk/STU3/StructureDefinition/ITK-Message-Bundle-1"]},
        "identifier": {"system": "https://tools.ietf.org/html/rfc4122", "value": name_uuid(s.document_uuid.as_bytes()).to_string()},
        "type": "message",
        "entry": [
            {"fullUrl": url("header"), "resource": {
                "resourceType": "MessageHeader",
                "event": {"system": "https://fhir.nhs.uk/STU3/CodeSystem/ITK-MessageEvent-2", "code": "ITK007C", "display": "ITK eDischarge"},
                "timestamp": discharged_at,
                "source": {"endpoint": format!("urn:nhs-uk:addressing:ods:{}", s.trust.ods)},
                "focus": {"reference": url("document")},
            }},
            {"fullUrl": url("document"), "resource": document},
        ],
    })
}

/// The same summary as an R4 document Bundle, as a trust publishing UK Core R4 sends it: the
/// ITK3 document's resources in their R4 shapes (status codes as CodeableConcepts, the
/// terminology.hl7.org systems, no STU3-only elements, UK Core profiles), with a timestamp and
/// no message around it. It carries no DocumentReference: the gateway makes one.
fn r4_document(s: &Summary) -> Value {
    let message = itk3(s);
    let mut document = message["entry"][1]["resource"].clone();
    let concept = |system: &str, code: &Value| json!({"coding": [{"system": system, "code": code}]});
    for entry in document["entry"].as_array_mut().into_iter().flatten() {
        let resource = &mut entry["resource"];
        let kind = resource["resourceType"].as_str().unwrap_or_default().to_owned();
        if let Some(object) = resource.as_object_mut() {
            object.remove("meta");
            object.remove("taken");
        }
        match kind.as_str() {
            "Condition" => {
                resource["clinicalStatus"] =
                    concept("http://terminology.hl7.org/CodeSystem/condition-clinical", &resource["clinicalStatus"]);
                resource["verificationStatus"] =
                    concept("http://terminology.hl7.org/CodeSystem/condition-ver-status", &resource["verificationStatus"]);
                resource["category"][0]["coding"][0]["system"] = json!("http://terminology.hl7.org/CodeSystem/condition-category");
            }
            "AllergyIntolerance" => {
                resource["clinicalStatus"] =
                    concept("http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical", &resource["clinicalStatus"]);
                resource["verificationStatus"] =
                    concept("http://terminology.hl7.org/CodeSystem/allergyintolerance-verification", &resource["verificationStatus"]);
            }
            "Encounter" => resource["class"]["system"] = json!("http://terminology.hl7.org/CodeSystem/v3-ActCode"),
            _ => {}
        }
        if matches!(kind.as_str(), "Patient" | "Composition" | "Condition" | "Encounter" | "AllergyIntolerance" | "MedicationStatement") {
            resource["meta"] = json!({"profile": [format!("https://fhir.hl7.org.uk/StructureDefinition/UKCore-{kind}")]});
        }
    }
    document.as_object_mut().map(|bundle| bundle.remove("meta"));
    document["timestamp"] = message["entry"][0]["resource"]["timestamp"].clone();
    document
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::translate::translate_document;

    #[test]
    fn summaries_are_deterministic_and_translate_in_every_format() {
        for format in [Format::Cda, Format::Itk3, Format::Fhir] {
            let first = discharge_summaries(format, &[0, 7]);
            assert_eq!(first, discharge_summaries(format, &[0, 7]), "{format}: same arguments, same bytes");
            for (name, bytes) in &first {
                let translated =
                    translate_document(format, bytes, time::OffsetDateTime::UNIX_EPOCH).unwrap_or_else(|e| panic!("{name}: {e}"));
                let types: Vec<&str> =
                    translated.bundle["entry"].as_array().unwrap().iter().filter_map(|e| e["resource"]["resourceType"].as_str()).collect();
                for wanted in [
                    "Patient",
                    "Encounter",
                    "Composition",
                    "DocumentReference",
                    "Condition",
                    "AllergyIntolerance",
                    "MedicationStatement",
                    "Provenance",
                ] {
                    assert!(types.contains(&wanted), "{format} {name}: no {wanted} in {types:?}");
                }
            }
        }
    }
}
