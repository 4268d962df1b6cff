//! Legacy CDA discharge summaries: NHS CDA (`POCD_MT000002UK01`, ITK eDischarge), bare or in an
//! ITK distribution envelope. Read with a namespace-aware DOM (roxmltree, which refuses DTDs, so
//! no entity expansion or external entities), then handed to the shared builder.
//!
//! Header: document id, set id and version, title, effective time, confidentiality, the patient
//! (NHS number by its OID, Modulus 11 checked), authors and their organisations (ODS codes by
//! OID), the custodian, the encompassing encounter. Body: each section's code, title and
//! narrative, and its coded entries — diagnoses (Condition), procedures, allergies and
//! medications — found by the statement's kind and the section's PRSB heading. A `nonXMLBody`
//! (a PDF, say) stays attached to the DocumentReference as sent.

use roxmltree::{Document, Node, ParsingOptions};
use serde_json::{Value, json};

use super::{DISCHARGE_SUMMARY, build, narrative, system_for_oid};
use super::{
    Discharge, DocumentError, EncounterDetails, Entry, EntryKind, Identifier, Organisation, Party, PatientDetails, Section, Translated,
};
use crate::translate::hl7v2::datatypes::parse_timestamp;

const V3: &str = "urn:hl7-org:v3";
const NPFIT: &str = "NPFIT:HL7:Localisation";
const FORMAT: &str = "cda";
const NHS_NUMBER_OID: &str = "2.16.840.1.113883.2.1.4.1";
const ODS_OID: &str = "2.16.840.1.113883.2.1.3.2.4.19.1";
const SDS_USER_OID: &str = "1.2.826.0.1285.0.2.0.65";

/// The NHS CDA message type of an inpatient discharge summary.
const DISCHARGE_MESSAGE_TYPE: &str = "POCD_MT000002UK01";

/// Document codes that are discharge summaries (SNOMED CT and LOINC).
const DISCHARGE_CODES: &[&str] = &[DISCHARGE_SUMMARY.0, "163391000000107", "18842-5", "34105-7", "28655-9"];

/// Elements allowed in one document: far above any real discharge summary, and a bound on the
/// memory a hostile one can take.
const NODES_LIMIT: u32 = 2_000_000;

/// Sections within sections: real documents use two or three levels; the bound keeps recursion
/// (and the Composition) finite.
const MAX_SECTION_DEPTH: usize = 8;

/// Translate a CDA document into the R4 transaction.
pub fn translate(bytes: &[u8]) -> Result<Translated, DocumentError> {
    build(read(bytes)?, bytes)
}

/// Every coded element's (system, code) under `node`: what the document's labels come from.
fn codings_under(node: Node<'_, '_>) -> Vec<(String, String)> {
    node.descendants()
        .filter(|n| n.is_element())
        .filter_map(|n| Some((system_for_oid(n.attribute("codeSystem")?.trim()), n.attribute("code")?.trim().to_owned())))
        .collect()
}

fn fail(location: impl Into<String>, reason: impl Into<String>) -> DocumentError {
    DocumentError::new(FORMAT, location, reason)
}

/// Where a node is: editor line and column, and its element path.
fn at(node: Node<'_, '_>) -> String {
    let position = node.document().text_pos_at(node.range().start);
    let mut names: Vec<&str> = node.ancestors().filter(Node::is_element).map(|n| n.tag_name().name()).collect();
    names.reverse();
    format!("line {}, column {} (/{})", position.row, position.col, names.join("/"))
}

fn is(node: &Node<'_, '_>, name: &str) -> bool {
    node.is_element() && node.tag_name().name() == name && node.tag_name().namespace() == Some(V3)
}

fn child<'a, 'input>(node: Node<'a, 'input>, name: &str) -> Option<Node<'a, 'input>> {
    node.children().find(|n| is(n, name))
}

fn children<'a, 'input>(node: Node<'a, 'input>, name: &'a str) -> impl Iterator<Item = Node<'a, 'input>> + 'a {
    node.children().filter(move |n| is(n, name))
}

fn path<'a, 'input>(node: Node<'a, 'input>, names: &[&str]) -> Option<Node<'a, 'input>> {
    names.iter().try_fold(node, |node, name| child(node, name))
}

fn text_of(node: Node<'_, '_>) -> Option<String> {
    let text: String = node.descendants().filter(Node::is_text).filter_map(|n| n.text()).collect::<Vec<_>>().join(" ");
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    (!text.is_empty()).then_some(text)
}

/// An `II` as an Identifier: `root` + `extension`, or the root alone as a URI.
fn instance_identifier(node: Node<'_, '_>) -> Option<Identifier> {
    let root = node.attribute("root")?.trim();
    let is_oid = !root.is_empty() && root.bytes().all(|b| b.is_ascii_digit() || b == b'.');
    let is_uuid = uuid::Uuid::parse_str(root).is_ok();
    if !is_oid && !is_uuid {
        return None;
    }
    let root_uri = if is_oid { format!("urn:oid:{root}") } else { format!("urn:uuid:{}", root.to_ascii_lowercase()) };
    match node.attribute("extension").map(str::trim).filter(|e| !e.is_empty()) {
        Some(extension) if is_oid => Some(Identifier::new(system_for_oid(root), extension)),
        Some(extension) => Some(Identifier::new(root_uri, extension)),
        None => Some(Identifier::new("urn:ietf:rfc:3986", root_uri)),
    }
}

/// A `TS` value as a FHIR date or dateTime.
fn time_value(node: Node<'_, '_>) -> Result<Option<String>, DocumentError> {
    match node.attribute("value").map(str::trim).filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(value) => parse_timestamp(value).map(|ts| Some(ts.text)).map_err(|reason| fail(at(node), reason)),
    }
}

/// An `IVL_TS` (or a bare `TS`): start and end.
fn interval(node: Node<'_, '_>) -> Result<(Option<String>, Option<String>), DocumentError> {
    if let Some(value) = time_value(node)? {
        return Ok((Some(value), None));
    }
    let low = child(node, "low").map(time_value).transpose()?.flatten();
    let high = child(node, "high").map(time_value).transpose()?.flatten();
    Ok((low, high))
}

/// A `CD`/`CE` as a CodeableConcept: the code, its translations, its original text.
fn concept(node: Node<'_, '_>) -> Option<Value> {
    let coding = |node: Node<'_, '_>| {
        let code = node.attribute("code")?.trim();
        let system = node.attribute("codeSystem")?.trim();
        if code.is_empty() || system.is_empty() {
            return None;
        }
        let mut coding = json!({"system": system_for_oid(system), "code": code});
        if let Some(display) = node.attribute("displayName").map(str::trim).filter(|d| !d.is_empty()) {
            coding["display"] = json!(display);
        }
        Some(coding)
    };
    let mut codings: Vec<Value> = coding(node).into_iter().collect();
    codings.extend(children(node, "translation").filter_map(coding));
    let text = child(node, "originalText").and_then(text_of);
    if codings.is_empty() {
        return None;
    }
    let mut concept = json!({"coding": codings});
    if let Some(text) = text {
        concept["text"] = json!(text);
    }
    Some(concept)
}

/// A person's `PN` as a HumanName.
fn human_name(node: Node<'_, '_>) -> Option<Value> {
    let mut name = serde_json::Map::new();
    let given: Vec<String> = children(node, "given").filter_map(text_of).collect();
    if !given.is_empty() {
        name.insert("given".into(), json!(given));
    }
    if let Some(family) = child(node, "family").and_then(text_of) {
        name.insert("family".into(), json!(family));
    }
    let prefix: Vec<String> = children(node, "prefix").filter_map(text_of).collect();
    if !prefix.is_empty() {
        name.insert("prefix".into(), json!(prefix));
    }
    if name.is_empty() {
        // An unstructured name: its text.
        name.insert("text".into(), json!(text_of(node)?));
    }
    Some(serde_json::Value::Object(name))
}

fn organisation(node: Node<'_, '_>) -> Organisation {
    let ods =
        children(node, "id").find(|id| id.attribute("root") == Some(ODS_OID)).and_then(|id| id.attribute("extension")).map(str::to_owned);
    Organisation { ods, name: child(node, "name").and_then(text_of) }
}

/// Read a CDA document.
pub fn read(bytes: &[u8]) -> Result<Discharge, DocumentError> {
    let text = std::str::from_utf8(bytes)
        .map_err(|error| fail(format!("byte {}", error.valid_up_to()), "the document is not UTF-8 (send CDA as UTF-8 XML)"))?;
    let text = text.trim_start_matches('\u{feff}');
    let options = ParsingOptions { allow_dtd: false, nodes_limit: NODES_LIMIT, ..ParsingOptions::default() };
    let document = Document::parse_with_options(text, options).map_err(|error| {
        let position = error.pos();
        fail(format!("line {}, column {}", position.row, position.col), format!("not well-formed XML: {error}"))
    })?;
    let root = document.root_element();
    let clinical = if is(&root, "ClinicalDocument") {
        root
    } else if root.tag_name().name() == "DistributionEnvelope" {
        root.descendants()
            .find(|n| is(n, "ClinicalDocument"))
            .ok_or_else(|| fail(at(root), "the ITK distribution envelope carries no ClinicalDocument (urn:hl7-org:v3) payload"))?
    } else {
        return Err(fail(
            at(root),
            format!(
                "the root element is {:?} in namespace {:?}; a CDA document is a ClinicalDocument in urn:hl7-org:v3",
                root.tag_name().name(),
                root.tag_name().namespace().unwrap_or("")
            ),
        ));
    };
    let mut read = read_clinical_document(clinical)?;
    read.digested = text[clinical.range()].as_bytes().to_vec();
    read.source_codings = codings_under(clinical);
    Ok(read)
}

fn read_clinical_document(doc: Node<'_, '_>) -> Result<Discharge, DocumentError> {
    let message_type = doc
        .children()
        .find(|n| n.is_element() && n.tag_name().name() == "messageType" && n.tag_name().namespace() == Some(NPFIT))
        .and_then(|n| n.attribute("extension"));
    let code_node = child(doc, "code");
    let original_type = code_node.and_then(concept);
    let title = child(doc, "title").and_then(text_of);
    let is_discharge = message_type == Some(DISCHARGE_MESSAGE_TYPE)
        || original_type.as_ref().is_some_and(|concept| {
            concept["coding"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["code"].as_str().is_some_and(|code| DISCHARGE_CODES.contains(&code)))
        })
        || title.as_deref().is_some_and(|t| t.to_ascii_lowercase().contains("discharge"));
    if !is_discharge {
        let what = match (message_type, code_node.and_then(|c| c.attribute("code"))) {
            (Some(message), _) => format!("message type {message}"),
            (None, Some(code)) => format!("document code {code}"),
            (None, None) => "a document with no type".to_owned(),
        };
        return Err(fail(
            at(code_node.unwrap_or(doc)),
            format!("this gateway files discharge summaries ({DISCHARGE_MESSAGE_TYPE}, or a discharge summary code); {what} is not one"),
        ));
    }

    let id = child(doc, "id").and_then(instance_identifier);
    if id.is_none() {
        return Err(fail(at(child(doc, "id").unwrap_or(doc)), "ClinicalDocument/id needs a root (an OID or a UUID)"));
    }
    let set_id = child(doc, "setId").and_then(instance_identifier);
    let version = child(doc, "versionNumber").and_then(|v| v.attribute("value")).map(str::to_owned);
    let effective = child(doc, "effectiveTime").ok_or_else(|| fail(at(doc), "ClinicalDocument/effectiveTime is required"))?;
    let date = time_value(effective)?.ok_or_else(|| fail(at(effective), "effectiveTime has no value"))?;
    let confidentiality = match child(doc, "confidentialityCode") {
        None => None,
        Some(node) => match node.attribute("code") {
            Some(code @ ("N" | "R" | "V")) => Some(code.to_owned()),
            other => return Err(fail(at(node), format!("confidentialityCode {other:?} is not N, R or V"))),
        },
    };

    let patient_role = path(doc, &["recordTarget", "patientRole"]).ok_or_else(|| fail(at(doc), "recordTarget/patientRole is required"))?;
    let nhs_id = children(patient_role, "id").find(|id| id.attribute("root") == Some(NHS_NUMBER_OID)).ok_or_else(|| {
        fail(
            at(patient_role),
            format!("the patient has no NHS number (an id with root {NHS_NUMBER_OID}); a discharge summary is filed against one"),
        )
    })?;
    let nhs_number = fhir_models::NhsNumber::parse(nhs_id.attribute("extension").unwrap_or_default())
        .map_err(|error| fail(at(nhs_id), format!("the NHS number is not valid: {error}")))?;
    let person = child(patient_role, "patient");
    let gender = match person.and_then(|p| child(p, "administrativeGenderCode")).and_then(|g| g.attribute("code")) {
        None => None,
        Some("1" | "M") => Some("male"),
        Some("2" | "F") => Some("female"),
        Some("9" | "UN") => Some("other"),
        Some(_) => Some("unknown"),
    };
    let birth_date = match person.and_then(|p| child(p, "birthTime")) {
        Some(node) => time_value(node)?.map(|value| value.split('T').next().unwrap_or_default().to_owned()),
        None => None,
    };
    let patient = PatientDetails { nhs_number, name: person.and_then(|p| child(p, "name")).and_then(human_name), gender, birth_date };

    let authors = children(doc, "author")
        .filter_map(|author| child(author, "assignedAuthor"))
        .map(|assigned| Party {
            sds_user_id: children(assigned, "id")
                .find(|id| id.attribute("root") == Some(SDS_USER_OID))
                .and_then(|id| id.attribute("extension"))
                .map(str::to_owned),
            name: path(assigned, &["assignedPerson", "name"]).and_then(human_name),
            organisation: child(assigned, "representedOrganization").map(organisation),
        })
        .collect();
    let custodian = path(doc, &["custodian", "assignedCustodian", "representedCustodianOrganization"]).map(organisation);

    let encounter = match path(doc, &["componentOf", "encompassingEncounter"]) {
        Some(node) => {
            let (start, end) = match child(node, "effectiveTime") {
                Some(time) => interval(time)?,
                None => (None, None),
            };
            Some(EncounterDetails { identifier: child(node, "id").and_then(instance_identifier), start, end, class: None })
        }
        None => None,
    };

    let set_key = set_id.clone().or_else(|| id.clone()).map(|i| i.to_string()).unwrap_or_default();
    let body = child(doc, "component").ok_or_else(|| fail(at(doc), "the document has no body (component)"))?;
    let sections = if let Some(structured) = child(body, "structuredBody") {
        children(structured, "component")
            .filter_map(|component| child(component, "section"))
            .enumerate()
            .map(|(index, section)| read_section(section, &set_key, &format!("{}", index + 1), 1))
            .collect::<Result<Vec<_>, _>>()?
    } else if let Some(unstructured) = child(body, "nonXMLBody") {
        let media = child(unstructured, "text").and_then(|t| t.attribute("mediaType")).unwrap_or("text/plain");
        vec![Section {
            title: Some("Clinical narrative".into()),
            codes: vec![json!({"system": fhir_models::system::SNOMED_CT, "code": "1077901000000108"})],
            narrative: Some(narrative::plain(&format!(
                "The summary was sent as a document of type {media}; it is attached to this document's DocumentReference as sent."
            ))),
            ..Section::default()
        }]
    } else {
        return Err(fail(at(body), "the body is neither a structuredBody nor a nonXMLBody"));
    };

    Ok(Discharge {
        format: FORMAT,
        id,
        set_id,
        version,
        title: title.unwrap_or_else(|| DISCHARGE_SUMMARY.1.to_owned()),
        date,
        original_type: original_type.and_then(|c| c["coding"].as_array().cloned()).unwrap_or_default(),
        status: "final",
        confidentiality,
        patient: Some(patient),
        authors,
        custodian,
        encounter,
        sections,
        original_content_type: "application/hl7-v3+xml",
        source_codings: Vec::new(),
        digested: Vec::new(),
    })
}

fn read_section(section: Node<'_, '_>, set_key: &str, number: &str, depth: usize) -> Result<Section, DocumentError> {
    if depth > MAX_SECTION_DEPTH {
        return Err(fail(at(section), format!("sections nest more than {MAX_SECTION_DEPTH} deep")));
    }
    let narrative = match child(section, "text") {
        Some(text) => narrative::from_node(text).map_err(|reason| fail(at(text), reason))?,
        None => None,
    };
    let mut out = Section {
        title: child(section, "title").and_then(text_of),
        codes: child(section, "code").and_then(concept).and_then(|c| c["coding"].as_array().cloned()).unwrap_or_default(),
        narrative,
        ..Section::default()
    };
    let carries = out.heading().and_then(|heading| heading.carries);
    for (index, entry) in children(section, "entry").enumerate() {
        if let Some(read) = read_entry(entry, carries, set_key, &format!("{number}.{}", index + 1))? {
            out.entries.push(read);
        }
    }
    out.sections = children(section, "component")
        .filter_map(|component| child(component, "section"))
        .enumerate()
        .map(|(index, child_section)| read_section(child_section, set_key, &format!("{number}.s{}", index + 1), depth + 1))
        .collect::<Result<_, _>>()?;
    Ok(out)
}

/// One coded entry; `None` for a statement this gateway does not make a resource of (its
/// content stays in the narrative and the attached original).
fn read_entry(entry: Node<'_, '_>, carries: Option<EntryKind>, set_key: &str, number: &str) -> Result<Option<Entry>, DocumentError> {
    let Some(statement) = entry.children().find(|n| n.is_element() && n.tag_name().namespace() == Some(V3)) else {
        return Ok(None);
    };
    let kind = match (statement.tag_name().name(), carries) {
        ("procedure", _) => EntryKind::Procedure,
        ("substanceAdministration" | "supply", _) => EntryKind::Medication,
        ("observation" | "act", Some(kind)) => kind,
        _ => return Ok(None),
    };
    let is_concern = statement.tag_name().name() == "act";
    // A concern act wraps the observation that says what the concern is.
    let clinical = if is_concern {
        children(statement, "entryRelationship").find_map(|r| child(r, "observation")).unwrap_or(statement)
    } else {
        statement
    };
    // "No allergy to penicillin", a ruled-out diagnosis, a procedure not done: not facts to file
    // as such. They stay in the narrative (and the original), never as a positive record.
    if [statement, clinical].iter().any(|n| n.attribute("negationInd") == Some("true")) {
        return Ok(None);
    }
    // Only what happened is a Condition, an allergy or a procedure; medicines on a discharge
    // summary are intended (INT) as often as given (EVN).
    let mood = clinical.attribute("moodCode").unwrap_or("EVN");
    if kind != EntryKind::Medication && mood != "EVN" {
        return Ok(None);
    }
    let coded_value = || children(clinical, "value").find(|v| v.attribute("code").is_some());
    let code_node = match kind {
        EntryKind::Medication => {
            path(statement, &["consumable", "manufacturedProduct", "manufacturedMaterial", "code"]).or_else(|| child(statement, "code"))
        }
        EntryKind::Allergy => children(clinical, "participant")
            .find_map(|p| path(p, &["participantRole", "playingEntity", "code"]))
            .or_else(coded_value)
            .or_else(|| child(clinical, "code")),
        EntryKind::Condition => coded_value().or_else(|| child(clinical, "code")),
        EntryKind::Procedure => child(clinical, "code"),
    };
    let Some(code) = code_node.and_then(concept) else {
        // Uncoded: the narrative carries it.
        return Ok(None);
    };
    let (start, end) = match child(clinical, "effectiveTime").or_else(|| child(statement, "effectiveTime")) {
        Some(time) => interval(time)?,
        None => (None, None),
    };
    // HL7 v3 ActStatus: new, active, held, suspended, completed, aborted, cancelled, nullified,
    // obsolete. An observation's own `completed` says it was recorded, not that it is over:
    // only a concern act's status speaks of the allergy.
    let status_code = child(statement, "statusCode").and_then(|s| s.attribute("code"));
    let status = match (kind, status_code) {
        (_, Some("nullified")) => Some("entered-in-error"),
        (EntryKind::Procedure, Some("completed") | None) => Some("completed"),
        (EntryKind::Procedure, Some("active")) => Some("in-progress"),
        (EntryKind::Procedure, Some("new")) => Some("preparation"),
        (EntryKind::Procedure, Some("held" | "suspended")) => Some("on-hold"),
        (EntryKind::Procedure, Some("aborted")) => Some("stopped"),
        (EntryKind::Procedure, Some("cancelled")) => Some("not-done"),
        (EntryKind::Procedure, Some(_)) => Some("unknown"),
        (EntryKind::Medication, Some("active" | "new") | None) => Some("active"),
        (EntryKind::Medication, Some("completed")) => Some("completed"),
        (EntryKind::Medication, Some("aborted" | "cancelled" | "obsolete")) => Some("stopped"),
        (EntryKind::Medication, Some("held" | "suspended")) => Some("on-hold"),
        (EntryKind::Medication, Some(_)) => Some("unknown"),
        // Listed on a discharge summary: a current allergy (R4 ait-1 wants a clinical status),
        // unless its concern is closed.
        (EntryKind::Allergy, Some("completed" | "aborted")) if is_concern => Some("inactive"),
        (EntryKind::Allergy, _) => Some("active"),
        (EntryKind::Condition, _) => None,
    };
    // A nullified diagnosis or allergy is entered in error, not a current one.
    let (status, verification) = match (kind, status) {
        (EntryKind::Condition | EntryKind::Allergy, Some("entered-in-error")) => (None, Some("entered-in-error".to_owned())),
        (_, status) => (status, None),
    };
    let reactions = children(clinical, "entryRelationship")
        .filter(|r| r.attribute("typeCode") == Some("MFST"))
        .filter_map(|r| child(r, "observation"))
        .filter_map(|o| children(o, "value").find_map(concept).or_else(|| child(o, "code").and_then(concept)))
        .map(|manifestation| json!({"manifestation": [manifestation]}))
        .collect();
    let key = child(statement, "id")
        .and_then(instance_identifier)
        .unwrap_or_else(|| Identifier::new("urn:hie:cda:entry", format!("{set_key}/{number}")));
    Ok(Some(Entry {
        kind,
        key,
        code,
        start,
        end,
        status: status.map(str::to_owned),
        verification,
        text: child(statement, "text").and_then(text_of),
        reactions,
        criticality: None,
        // An entry's own confidentiality (HL7 v3 Confidentiality: R, V).
        labels: child(statement, "confidentialityCode")
            .and_then(|code| code.attribute("code"))
            .filter(|code| matches!(*code, "R" | "V"))
            .and_then(super::entry_label)
            .into_iter()
            .collect(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn document(patient_id: &str, body: &str) -> String {
        format!(
            r#"<?xml version="1.0" encoding="UTF-8"?>
<ClinicalDocument xmlns="urn:hl7-org:v3" xmlns:npfitlc="NPFIT:HL7:Localisation" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
  <npfitlc:messageType root="2.16.840.1.113883.2.1.3.2.4.18.17" extension="POCD_MT000002UK01"/>
  <id root="6B2C5E38-0F6A-4C0B-9D8A-2F1E0C3B4A55"/>
  <code code="163391000000107" codeSystem="2.16.840.1.113883.2.1.3.2.4.15" displayName="Discharge from inpatient care"/>
  <title>Inpatient discharge summary</title>
  <effectiveTime value="20260301143000+0000"/>
  <confidentialityCode code="N" codeSystem="2.16.840.1.113883.1.11.16926"/>
  <setId root="0E0C2E1A-7D64-4B77-A3B4-4D2C1B0A9F88"/>
  <versionNumber value="1"/>
  <recordTarget><patientRole>{patient_id}<patient><name><given>Ann</given><family>Example</family></name>
    <administrativeGenderCode code="2" codeSystem="2.16.840.1.113883.2.1.3.2.4.16.25"/><birthTime value="19700214"/></patient></patientRole></recordTarget>
  <author><time value="20260301143000+0000"/><assignedAuthor><id root="1.2.826.0.1285.0.2.0.65" extension="100000000001"/>
    <assignedPerson><name><prefix>Dr</prefix><given>Sam</given><family>Jones</family></name></assignedPerson>
    <representedOrganization><id root="2.16.840.1.113883.2.1.3.2.4.19.1" extension="R9Z"/><name>Northgate</name></representedOrganization></assignedAuthor></author>
  <custodian><assignedCustodian><representedCustodianOrganization><id root="2.16.840.1.113883.2.1.3.2.4.19.1" extension="R9Z"/></representedCustodianOrganization></assignedCustodian></custodian>
  <componentOf><encompassingEncounter><id root="2.16.840.1.113883.2.1.3.2.4.18.23" extension="V123"/><effectiveTime><low value="20260225"/><high value="20260301120000+0000"/></effectiveTime></encompassingEncounter></componentOf>
  <component>{body}</component>
</ClinicalDocument>"#
        )
    }

    const NHS: &str = r#"<id root="2.16.840.1.113883.2.1.4.1" extension="9449305552"/>"#;

    #[test]
    fn header_body_and_entries_are_read() {
        let body = r#"<structuredBody>
          <component><section><code code="887161000000102" codeSystem="2.16.840.1.113883.2.1.3.2.4.15"/><title>Diagnoses</title>
            <text><paragraph>Community-acquired pneumonia</paragraph></text>
            <entry><observation classCode="OBS" moodCode="EVN"><id root="1F0E2D3C-4B5A-6978-8796-A5B4C3D2E1F0"/>
              <code code="233604007" codeSystem="2.16.840.1.113883.2.1.3.2.4.15" displayName="Pneumonia"/><effectiveTime value="20260225"/></observation></entry></section></component>
          <component><section><title>Medications and medical devices</title><text>Amoxicillin</text>
            <entry><substanceAdministration classCode="SBADM" moodCode="INT"><text>500 mg three times a day</text><statusCode code="active"/>
              <consumable><manufacturedProduct><manufacturedMaterial><code code="323509004" codeSystem="2.16.840.1.113883.2.1.3.2.4.15" displayName="Amoxicillin 500mg capsules"/></manufacturedMaterial></manufacturedProduct></consumable></substanceAdministration></entry></section></component>
        </structuredBody>"#;
        let read = read(document(NHS, body).as_bytes()).unwrap();
        assert_eq!(read.date, "2026-03-01T14:30:00+00:00");
        assert_eq!(read.patient.as_ref().unwrap().nhs_number.as_string(), "9449305552");
        assert_eq!(read.patient.as_ref().unwrap().birth_date.as_deref(), Some("1970-02-14"));
        assert_eq!(read.authors[0].sds_user_id.as_deref(), Some("100000000001"));
        assert_eq!(read.custodian.as_ref().unwrap().ods.as_deref(), Some("R9Z"));
        let encounter = read.encounter.as_ref().unwrap();
        assert_eq!((encounter.start.as_deref(), encounter.end.as_deref()), (Some("2026-02-25"), Some("2026-03-01T12:00:00+00:00")));
        assert_eq!(read.sections.len(), 2);
        let diagnosis = &read.sections[0].entries[0];
        assert_eq!((diagnosis.kind, diagnosis.code["coding"][0]["code"].as_str()), (EntryKind::Condition, Some("233604007")));
        assert_eq!(diagnosis.key.value, "urn:uuid:1f0e2d3c-4b5a-6978-8796-a5b4c3d2e1f0");
        let medicine = &read.sections[1].entries[0];
        assert_eq!(medicine.kind, EntryKind::Medication);
        assert_eq!(medicine.text.as_deref(), Some("500 mg three times a day"));
        assert_eq!(medicine.key.system, "urn:hie:cda:entry", "no id: keyed on the set id and its place");
    }

    #[test]
    fn negations_plans_and_statuses_are_read_as_they_are_meant() {
        let entry = |section: &str, statement: &str| {
            format!(
                r#"<structuredBody><component><section><code code="{section}" codeSystem="2.16.840.1.113883.2.1.3.2.4.15"/><title>x</title>{statement}</section></component></structuredBody>"#
            )
        };
        let code = r#"<code code="91936005" codeSystem="2.16.840.1.113883.2.1.3.2.4.15"/>"#;
        let entries = |body: String| read(document(NHS, &body).as_bytes()).unwrap().sections.remove(0).entries;
        let negated = entries(entry(
            "886921000000105",
            &format!(r#"<entry><observation moodCode="EVN" negationInd="true">{code}</observation></entry>"#),
        ));
        assert!(negated.is_empty(), "\"no allergy to penicillin\" is not an allergy to penicillin");
        let recorded = entries(entry(
            "886921000000105",
            &format!(r#"<entry><observation moodCode="EVN"><statusCode code="completed"/>{code}</observation></entry>"#),
        ));
        assert_eq!(recorded[0].status.as_deref(), Some("active"), "an observation completed is a current allergy recorded");
        let closed = entries(entry(
            "886921000000105",
            &format!(
                r#"<entry><act moodCode="EVN"><statusCode code="completed"/><entryRelationship><observation moodCode="EVN">{code}</observation></entryRelationship></act></entry>"#
            ),
        ));
        assert_eq!(closed[0].status.as_deref(), Some("inactive"), "a closed concern is an inactive allergy");
        let planned = entries(entry("887171000000109", &format!(r#"<entry><procedure moodCode="INT">{code}</procedure></entry>"#)));
        assert!(planned.is_empty(), "a planned procedure was not done");
        let nullified = entries(entry(
            "887161000000102",
            &format!(r#"<entry><observation moodCode="EVN"><statusCode code="nullified"/>{code}</observation></entry>"#),
        ));
        assert_eq!((nullified[0].status.as_deref(), nullified[0].verification.as_deref()), (None, Some("entered-in-error")));
        let deep = format!(
            "<structuredBody><component>{}<title>x</title>{}</component></structuredBody>",
            "<section><component>".repeat(20),
            "</component></section>".repeat(20)
        );
        assert!(read(document(NHS, &deep).as_bytes()).unwrap_err().reason.contains("nest more than 8 deep"));
    }

    #[test]
    fn the_same_document_in_another_envelope_is_the_same_document() {
        let bare = document(NHS, "<structuredBody/>");
        let clinical = bare.split_once("?>\n").unwrap().1;
        let wrapped = format!(
            r#"<itk:DistributionEnvelope xmlns:itk="urn:nhs-itk:ns:201005"><itk:header trackingid="T1"/><itk:payloads count="1"><itk:payload id="P1">{clinical}</itk:payload></itk:payloads></itk:DistributionEnvelope>"#
        );
        let (one, two) = (translate(bare.as_bytes()).unwrap(), translate(wrapped.as_bytes()).unwrap());
        assert_eq!(one.digest, two.digest);
        assert_eq!(one.provenance_id, two.provenance_id);
    }

    #[test]
    fn errors_name_the_place_and_the_reason() {
        let body = "<structuredBody/>";
        let bad_nhs = document(r#"<id root="2.16.840.1.113883.2.1.4.1" extension="9449305553"/>"#, body);
        let error = read(bad_nhs.as_bytes()).unwrap_err();
        assert!(error.location == "line 11, column 30 (/ClinicalDocument/recordTarget/patientRole/id)", "{error}");
        assert!(error.reason.contains("NHS number"), "{error}");
        let no_nhs = read(document("", body).as_bytes()).unwrap_err();
        assert!(no_nhs.reason.contains("no NHS number"), "{no_nhs}");
        let broken = read(b"<ClinicalDocument xmlns=\"urn:hl7-org:v3\"><id></ClinicalDocument>").unwrap_err();
        assert!(broken.location.starts_with("line 1, column "), "{broken}");
        assert!(broken.reason.contains("not well-formed"), "{broken}");
        let other = read(b"<Bundle xmlns=\"http://hl7.org/fhir\"/>").unwrap_err();
        assert!(other.reason.contains("ClinicalDocument in urn:hl7-org:v3"), "{other}");
        let dtd =
            read(b"<!DOCTYPE x [<!ENTITY a \"aaaa\">]><ClinicalDocument xmlns=\"urn:hl7-org:v3\">&a;</ClinicalDocument>").unwrap_err();
        assert!(dtd.reason.contains("not well-formed"), "DTDs are refused: {dtd}");
        let bad_time = document(NHS, body).replace("20260301143000+0000\"/>\n  <conf", "20261301\"/>\n  <conf");
        assert!(read(bad_time.as_bytes()).unwrap_err().reason.contains("month out of range"));
        let not_discharge = document(NHS, body)
            .replace("POCD_MT000002UK01", "POCD_MT000026GB01")
            .replace("163391000000107", "861421000000109")
            .replace("Inpatient discharge summary", "End of life care");
        assert!(read(not_discharge.as_bytes()).unwrap_err().reason.contains("files discharge summaries"));
    }
}
