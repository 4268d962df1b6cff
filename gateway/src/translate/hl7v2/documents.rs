//! MDM^T02, T04 and T08: clinical documents with their content. The document becomes a
//! DocumentReference upserted on its unique document number (TXA-12), so a status change or an
//! edit of the same document updates it; the content travels inline as an Attachment (text
//! from TX/FT/ST OBX segments, or the encapsulated PDF/RTF/image of ED segments).

use serde_json::{Map, Value, json};

use super::Context;
use super::datatypes::{
    attachment, codeable_concept, entity_identifier, identifier, ods_reference, person_reference, text_attachment, timestamp,
};
use super::error::{ErrorCode, Hl7Error};
use super::patient;
use crate::translate::discharge::DISCHARGE_SUMMARY;
use crate::translate::discharge::narrative::{paragraphs, plain};
use crate::translate::transaction::{TransactionBuilder, query_value};

const UKCORE_DOCUMENT_REFERENCE: &str = "https://fhir.hl7.org.uk/StructureDefinition/UKCore-DocumentReference";

/// HL7 table 0270 document types with a SNOMED CT record-artifact equivalent.
fn snomed_document_type(code: &str) -> Option<(&'static str, &'static str)> {
    match code {
        "DS" => Some(("373942005", "Discharge summary")),
        "CN" => Some(("371530004", "Clinical consultation report")),
        "OP" => Some(("371526002", "Operative report")),
        "HP" => Some(("371529009", "History and physical report")),
        _ => None,
    }
}

pub fn translate(context: &Context<'_, '_>, event: &str, builder: &mut TransactionBuilder) -> Result<(), Hl7Error> {
    let message = context.message;
    let pid = message.required("PID", "a document is filed against a patient")?;
    let txa = message.required("TXA", &format!("MDM^{event} describes its document in TXA"))?;
    let patient = patient::upsert(context, pid, message.first("PD1"), builder, patient::Demographics::CreateIfMissing)?;
    let authority = context.header.authority();
    let number = entity_identifier(&txa.field(12).first(), authority, "document-number").ok_or_else(|| {
        Hl7Error::new(
            ErrorCode::RequiredFieldMissing,
            txa.locate(12),
            "TXA-12 (unique document number) is required to identify the document",
        )
    })?;

    let mut document = Map::new();
    document.insert("resourceType".into(), json!("DocumentReference"));
    document.insert("meta".into(), json!({"profile": [UKCORE_DOCUMENT_REFERENCE]}));
    document.insert("masterIdentifier".into(), number.to_json());
    document.insert("status".into(), json!("current"));
    let doc_status = match txa.value(17).as_deref() {
        None => None,
        Some("AU" | "LA" | "DO") => Some("final"),
        Some("IP" | "IN" | "PA" | "DI") => Some("preliminary"),
        Some("CA") => Some("entered-in-error"),
        Some(other) => {
            return Err(Hl7Error::new(
                ErrorCode::TableValueNotFound,
                txa.locate(17),
                format!("TXA-17 document completion status {other:?} is not in HL7 table 0271 (AU, DI, DO, IN, IP, LA, PA, CA)"),
            ));
        }
    };
    if let Some(doc_status) = doc_status {
        document.insert("docStatus".into(), json!(doc_status));
    }
    let document_type = txa.field(2).first();
    let type_code = document_type.component(1).text();
    let mut codings = Vec::new();
    if let Some((code, display)) = type_code.as_deref().and_then(snomed_document_type) {
        codings.push(json!({"system": fhir_models::system::SNOMED_CT, "code": code, "display": display}));
    }
    if let Some(concept) = codeable_concept(&document_type) {
        match concept.get("coding").and_then(Value::as_array) {
            Some(original) if type_code.is_some() && document_type.component(3).text().is_none() => {
                // A bare table 0270 code.
                for coding in original {
                    let mut coding = coding.clone();
                    coding["system"] = json!("http://terminology.hl7.org/CodeSystem/v2-0270");
                    codings.push(coding);
                }
            }
            Some(original) => codings.extend(original.iter().cloned()),
            None => {}
        }
    }
    let title = document_type.component(2).text().map(|t| t.into_owned());
    if codings.is_empty() {
        return Err(Hl7Error::new(ErrorCode::RequiredFieldMissing, txa.locate(2), "TXA-2 (document type) is required"));
    }
    let mut type_concept = json!({"coding": codings});
    if let Some(title) = &title {
        type_concept["text"] = json!(title);
    }
    document.insert("type".into(), type_concept);
    document.insert("subject".into(), json!({"reference": patient.full_url}));
    let activity = txa.value(4).map(|t| timestamp(&t, &txa.locate(4))).transpose()?;
    if let Some(date) = activity.as_ref().and_then(|t| t.instant()) {
        document.insert("date".into(), json!(date));
    }
    let authors: Vec<Value> = txa.field(9).repetitions().filter_map(|xcn| person_reference(&xcn, "Practitioner")).collect();
    if !authors.is_empty() {
        document.insert("author".into(), Value::Array(authors));
    }
    if let Some(authenticator) = person_reference(&txa.field(22).first(), "Practitioner") {
        document.insert("authenticator".into(), authenticator);
    }
    if let Some(custodian) = context.message.msh().field(4).first().component(1).text().and_then(|code| ods_reference(&code)) {
        document.insert("custodian".into(), custodian);
    }

    let mut text_lines: Vec<String> = Vec::new();
    let mut contents: Vec<Value> = Vec::new();
    for obx in message.segments().iter().filter(|s| s.id == "OBX") {
        match obx.value(2).map(|t| t.to_ascii_uppercase()).as_deref() {
            Some("ED") => {
                for (index, ed) in obx.field(5).repetitions().enumerate() {
                    let attached = attachment(&ed, title.as_deref(), &obx.locate(5).repetition(index + 1))?;
                    contents.push(json!({"attachment": attached}));
                }
            }
            Some("TX" | "FT" | "ST" | "CF") | None => {
                text_lines.extend(obx.field(5).repetitions().filter_map(|r| r.full_text().map(|t| t.into_owned())));
            }
            Some(other) => {
                return Err(Hl7Error::new(
                    ErrorCode::DataType,
                    obx.locate(2),
                    format!("OBX-2 {other:?}: a document's content is text (TX, FT, ST) or encapsulated data (ED)"),
                ));
            }
        }
    }
    if !text_lines.is_empty() {
        contents.insert(0, json!({"attachment": text_attachment(&text_lines.join("\n"), title.as_deref())}));
    }
    if contents.is_empty() {
        return Err(Hl7Error::new(
            ErrorCode::SegmentSequence,
            txa.locate(1),
            format!("MDM^{event} carries no document content: OBX segments with the text or the encapsulated document are required"),
        ));
    }
    if let Some(date) = activity.as_ref().map(|t| t.text.clone())
        && let Some(Value::Object(attachment)) = contents[0].get_mut("attachment")
    {
        attachment.insert("creation".into(), json!(date));
    }
    document.insert("content".into(), Value::Array(contents));
    if let Some(pv1) = message.first("PV1")
        && let Some(visit) = identifier(&pv1.field(19).first(), authority, "visit-number", &pv1.locate(19))?
    {
        document.insert("context".into(), json!({"encounter": [{"type": "Encounter", "identifier": visit.to_json()}]}));
    }
    // TXA-18, the document's confidentiality (HL7 table 0272): its label goes on every resource
    // that holds the document's content.
    let confidentiality = match txa.value(18).as_deref() {
        None | Some("U") => None,
        Some(code @ ("R" | "V")) => crate::translate::discharge::entry_label(code),
        Some(other) => {
            return Err(Hl7Error::new(
                ErrorCode::TableValueNotFound,
                txa.locate(18),
                format!("TXA-18 document confidentiality status {other:?} is not U, R or V (HL7 table 0272)"),
            ));
        }
    };
    if let Some(label) = &confidentiality {
        document.entry("meta").or_insert_with(|| json!({}))["security"] = json!([label]);
    }
    let condition = format!("identifier={}", query_value(&number.search_token()));
    if is_discharge_summary(&document["type"]) {
        let mut composition = discharge_composition(context, &document, &number.to_json(), &text_lines)?;
        if let Some(label) = &confidentiality {
            composition["meta"]["security"] = json!([label]);
        }
        let composition_url = builder.upsert(composition, &condition);
        let related = json!([{"reference": composition_url}]);
        match document.get_mut("context") {
            Some(Value::Object(context)) => {
                context.insert("related".into(), related);
            }
            _ => {
                document.insert("context".into(), json!({"related": related}));
            }
        }
    }
    builder.upsert(Value::Object(document), &condition);
    Ok(())
}

fn is_discharge_summary(document_type: &Value) -> bool {
    document_type["coding"]
        .as_array()
        .is_some_and(|codings| codings.iter().any(|c| c["system"] == fhir_models::system::SNOMED_CT && c["code"] == DISCHARGE_SUMMARY.0))
}

/// A discharge summary (TXA-2 `DS`) is an R4 document too: a Composition of one PRSB
/// "Clinical summary" section holding the text, which GP systems read like any other discharge
/// summary (CDA, ITK3). Encapsulated content (a PDF) stays on the DocumentReference.
fn discharge_composition(
    context: &Context<'_, '_>,
    document: &Map<String, Value>,
    identifier: &Value,
    text: &[String],
) -> Result<Value, Hl7Error> {
    let status = match document.get("docStatus").and_then(Value::as_str) {
        Some("preliminary") => "preliminary",
        // TXA-17 `CA`: the document was cancelled.
        Some("entered-in-error") => "entered-in-error",
        _ => "final",
    };
    let date = match document.get("content").and_then(|c| c[0]["attachment"]["creation"].as_str()) {
        Some(date) => date.to_owned(),
        None => {
            let msh = context.message.msh();
            let sent = msh.value(7).ok_or_else(|| {
                Hl7Error::new(ErrorCode::RequiredFieldMissing, msh.locate(7), "a discharge summary needs a date: TXA-4 or MSH-7")
            })?;
            timestamp(&sent, &msh.locate(7))?.text
        }
    };
    let authors = match (document.get("author"), document.get("custodian")) {
        (Some(authors), _) => authors.clone(),
        (None, Some(custodian)) => json!([custodian]),
        (None, None) => json!([{"display": context.header.sender()}]),
    };
    let narrative = if text.is_empty() {
        plain("The summary was sent as an attached document; it is on this document's DocumentReference as sent.")
    } else {
        paragraphs(text)
    };
    let mut composition = json!({
        "resourceType": "Composition",
        "meta": {"profile": ["https://fhir.hl7.org.uk/StructureDefinition/UKCore-Composition"]},
        "identifier": identifier,
        "status": status,
        "type": document["type"],
        "subject": document["subject"],
        "date": date,
        "author": authors,
        "title": document["type"]["text"].as_str().unwrap_or(DISCHARGE_SUMMARY.1),
        "section": [{
            "title": "Clinical summary",
            "code": {"coding": [{"system": fhir_models::system::SNOMED_CT, "code": "887181000000106", "display": "Clinical summary"}]},
            "text": {"status": "additional", "div": narrative},
        }],
    });
    if let Some(custodian) = document.get("custodian") {
        composition["custodian"] = custodian.clone();
    }
    if let Some(encounter) = document.get("context").and_then(|c| c["encounter"].get(0)) {
        composition["encounter"] = encounter.clone();
    }
    Ok(composition)
}
