//! HL7 v2 (2.3 to 2.8) into FHIR R4 transaction Bundles: ADT, ORU, MDM, ORM/OML, VXU, SIU.
//!
//! Pure: text in, Bundle or [`Hl7Error`] out. A message of a type this module does not know is
//! refused whole (AR, with the reason), never half-translated. Every Bundle carries one
//! Provenance, whose id is derived from the sender and MSH-10, so the ingest path can tell a
//! re-sent message from a new one.

pub mod ack;
mod adt;
mod appointments;
pub mod datatypes;
mod documents;
pub mod error;
mod immunizations;
pub mod message;
mod orders;
mod patient;
mod results;

pub use error::{ErrorCode, Hl7Error, Location};
pub use message::{Delimiters, Message};

use serde_json::Value;

use self::datatypes::{Timestamp, timestamp};
use super::transaction::{Source, TransactionBuilder, content_digest, derived_id};

/// The versions whose segment layouts this module reads.
pub const SUPPORTED_VERSIONS: [&str; 12] = ["2.3", "2.3.1", "2.4", "2.5", "2.5.1", "2.6", "2.7", "2.7.1", "2.8", "2.8.1", "2.8.2", "2.9"];

/// The message types and trigger events translated, with what each becomes.
pub const SUPPORTED_EVENTS: [(&str, &str, &str); 27] = [
    ("ADT", "A01", "admit: Patient, Encounter in progress"),
    ("ADT", "A02", "transfer: Encounter location moves"),
    ("ADT", "A03", "discharge: Encounter finished"),
    ("ADT", "A04", "register outpatient or ED attendance: Patient, Encounter"),
    ("ADT", "A05", "pre-admit: Encounter planned"),
    ("ADT", "A06", "outpatient to inpatient: Encounter class changes"),
    ("ADT", "A07", "inpatient to outpatient: Encounter class changes"),
    ("ADT", "A08", "update patient and visit: Patient, Encounter"),
    ("ADT", "A11", "cancel admit or visit: Encounter cancelled"),
    ("ADT", "A12", "cancel transfer: Encounter location back"),
    ("ADT", "A13", "cancel discharge: Encounter in progress again"),
    ("ADT", "A28", "add person: Patient"),
    ("ADT", "A31", "update person: Patient"),
    ("ADT", "A40", "merge patient: prior Patient inactive, replaced by the surviving one"),
    ("ORU", "R01", "results: DiagnosticReport and Observations"),
    ("MDM", "T02", "document with content: DocumentReference"),
    ("MDM", "T04", "document status change with content: DocumentReference"),
    ("MDM", "T08", "document edit with content: DocumentReference"),
    ("ORM", "O01", "order: ServiceRequest"),
    ("OML", "O21", "laboratory order: ServiceRequest"),
    ("VXU", "V04", "immunisations given or refused: Immunization"),
    ("SIU", "S12", "new appointment booking: Appointment booked"),
    ("SIU", "S13", "appointment rescheduled: Appointment times change"),
    ("SIU", "S14", "appointment modified: Appointment"),
    ("SIU", "S15", "appointment cancelled: Appointment cancelled"),
    ("SIU", "S17", "appointment deleted: Appointment entered in error"),
    ("SIU", "S26", "patient did not attend: Appointment noshow"),
];

/// What MSH says about a message: enough to acknowledge it even when its body is refused.
#[derive(Clone, Debug)]
pub struct Header {
    pub sending_application: String,
    pub sending_facility: String,
    pub receiving_application: String,
    pub receiving_facility: String,
    pub control_id: String,
    pub message_code: String,
    pub trigger_event: String,
    pub version: String,
    pub processing_id: String,
    pub delimiters: Delimiters,
    /// MSH-3 to MSH-6 as received, echoed (swapped) in the ACK.
    pub raw_parties: [String; 4],
}

impl Header {
    /// Who sent it: MSH-3 and MSH-4. Control ids (MSH-10) are unique per sender.
    pub fn sender(&self) -> String {
        format!("{}|{}", self.sending_application, self.sending_facility)
    }

    /// The id of the Provenance that records this message: the same for a re-sent message.
    pub fn provenance_id(&self) -> String {
        derived_id("hl7v2", &format!("{}|{}", self.sender(), self.control_id))
    }

    /// Whoever assigns identifiers without an OID: the sending facility, else the application.
    fn authority(&self) -> &str {
        if self.sending_facility.is_empty() { &self.sending_application } else { &self.sending_facility }
    }
}

/// A translated message.
#[derive(Debug)]
pub struct Translated {
    pub header: Header,
    /// A FHIR R4 `transaction` Bundle.
    pub bundle: Value,
    /// The Provenance's id (see [`Header::provenance_id`]).
    pub provenance_id: String,
    /// The RFC 6920 digest of the message's segments.
    pub digest: String,
}

/// Read MSH. Fails only when the message cannot even be acknowledged properly.
pub fn header(message: &Message<'_>) -> Result<Header, Hl7Error> {
    let msh = message.msh();
    let text = |n: usize| msh.value(n).map(|v| v.into_owned()).unwrap_or_default();
    let message_type = msh.field(9).first();
    Ok(Header {
        sending_application: msh.field(3).first().full_text().map(|t| t.replace('&', "^")).unwrap_or_default(),
        sending_facility: msh.field(4).first().full_text().map(|t| t.replace('&', "^")).unwrap_or_default(),
        receiving_application: msh.field(5).first().full_text().map(|t| t.into_owned()).unwrap_or_default(),
        receiving_facility: msh.field(6).first().full_text().map(|t| t.into_owned()).unwrap_or_default(),
        control_id: text(10),
        message_code: message_type.component(1).text().map(|t| t.into_owned()).unwrap_or_default(),
        trigger_event: message_type.component(2).text().map(|t| t.into_owned()).unwrap_or_default(),
        version: msh.field(12).first().component(1).text().map(|t| t.into_owned()).unwrap_or_default(),
        processing_id: msh.field(11).first().component(1).text().map(|t| t.into_owned()).unwrap_or_default(),
        delimiters: message.delimiters,
        raw_parties: [3, 4, 5, 6].map(|n| msh.field(n).raw().to_owned()),
    })
}

/// Translate one message.
pub fn translate(text: &str) -> Result<Translated, Hl7Error> {
    let message = Message::parse(text)?;
    let header = header(&message)?;
    translate_parsed(&message, header)
}

pub fn translate_parsed(message: &Message<'_>, header: Header) -> Result<Translated, Hl7Error> {
    let msh = message.msh();
    if header.control_id.is_empty() {
        return Err(Hl7Error::new(ErrorCode::RequiredFieldMissing, msh.locate(10), "MSH-10 (message control id) is required"));
    }
    if header.message_code.is_empty() {
        return Err(Hl7Error::new(ErrorCode::RequiredFieldMissing, msh.locate(9), "MSH-9 (message type) is required"));
    }
    if header.version.is_empty() {
        return Err(Hl7Error::new(ErrorCode::RequiredFieldMissing, msh.locate(12), "MSH-12 (version id) is required"));
    }
    if !SUPPORTED_VERSIONS.contains(&header.version.as_str()) {
        return Err(Hl7Error::new(
            ErrorCode::UnsupportedVersionId,
            msh.locate(12),
            format!("HL7 version {:?} is not supported; this gateway reads {}", header.version, SUPPORTED_VERSIONS.join(", ")),
        ));
    }
    let recorded = timestamp(&msh.required_value(7, "date/time of message")?, &msh.locate(7))?;
    let mut builder = TransactionBuilder::new(&format!("{}|{}", header.sender(), header.control_id));
    let context = Context { header: &header, message };
    match (header.message_code.as_str(), header.trigger_event.as_str()) {
        ("ADT", event) => adt::translate(&context, event, &mut builder)?,
        ("ORU", "R01") => results::translate(&context, &mut builder)?,
        ("MDM", event @ ("T02" | "T04" | "T08")) => documents::translate(&context, event, &mut builder)?,
        ("MDM", event) => {
            return Err(Hl7Error::new(
                ErrorCode::UnsupportedEventCode,
                msh.locate(9).component(2),
                format!(
                    "MDM^{event} is not filed: only MDM^T02, T04 and T08 carry the document's content, which a DocumentReference needs"
                ),
            ));
        }
        ("ORM", "O01") | ("OML", "O21") => orders::translate(&context, &mut builder)?,
        ("VXU", "V04") => immunizations::translate(&context, &mut builder)?,
        ("SIU", event @ ("S12" | "S13" | "S14" | "S15" | "S17" | "S26")) => appointments::translate(&context, event, &mut builder)?,
        ("ACK", _) => {
            return Err(Hl7Error::new(ErrorCode::UnsupportedMessageType, msh.locate(9), "an ACK acknowledges a message; it is not filed"));
        }
        (code, event) => {
            let known = SUPPORTED_EVENTS.iter().any(|(c, _, _)| *c == code);
            let supported: Vec<String> = SUPPORTED_EVENTS.iter().map(|(c, e, _)| format!("{c}^{e}")).collect();
            return Err(Hl7Error::new(
                if known { ErrorCode::UnsupportedEventCode } else { ErrorCode::UnsupportedMessageType },
                if known { msh.locate(9).component(2) } else { msh.locate(9) },
                format!("{code}^{event} is not translated by this gateway; it takes {}", supported.join(", ")),
            ));
        }
    }
    // Over the segments as received, joined by CR: the same message is the same whether it came
    // over MLLP or in a file with other line ends.
    let segments: Vec<&str> = message.segments().iter().map(|segment| segment.raw()).collect();
    let digest = content_digest(segments.join("\r").as_bytes());
    let provenance_id = header.provenance_id();
    let targets = builder.full_urls();
    builder.put(provenance(&header, &provenance_id, &recorded, &digest, &targets));
    Ok(Translated { header, bundle: builder.finish(), provenance_id, digest })
}

/// What every part of a translation needs.
pub(crate) struct Context<'m, 'a> {
    pub header: &'m Header,
    pub message: &'m Message<'a>,
}

fn provenance(header: &Header, id: &str, recorded: &Timestamp, digest: &str, targets: &[String]) -> Value {
    // `recorded` is an instant: a date-only MSH-7 is recorded at the start of its day.
    let recorded = recorded.instant().map(str::to_owned).unwrap_or_else(|| format!("{}T00:00:00+00:00", recorded.date()));
    let display = format!("HL7 v2 {}^{} {} from {}", header.message_code, header.trigger_event, header.control_id, header.sender());
    let key = format!("{}|{}", header.sender(), header.control_id);
    let source = Source {
        id,
        recorded: &recorded,
        author: &header.sender(),
        system: "urn:hie:hl7v2:message",
        key: &key,
        display: &display,
        digest,
        digested: "SHA-256 of the message as received",
    };
    super::transaction::provenance(&source, targets)
}

/// Each message is refused with its error code at its location.
#[cfg(test)]
pub(crate) fn assert_refused(cases: &[(String, ErrorCode, &str)]) {
    for (message, code, location) in cases {
        let error = translate(message).unwrap_err();
        assert_eq!((error.code, error.location.to_string()), (*code, (*location).to_owned()), "{error}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A01: &str = "MSH|^~\\&|PAS|RRK|HIE|HIE|20240305101500||ADT^A01^ADT_A01|M1|P|2.4\rEVN|A01|20240305101500\rPID|1||9449305552^^^NHS^NH||TAYLOR^OLIVIA||19800101|F\rPV1|1|I|WARD4^A^1||||||||||||||||V100^^^RRK^VN";

    #[test]
    fn a_translation_is_deterministic_and_keyed_on_the_source_s_identifiers() {
        let first = translate(A01).unwrap();
        let second = translate(A01).unwrap();
        assert_eq!(first.bundle, second.bundle);
        let urls: Vec<&str> = first.bundle["entry"].as_array().unwrap().iter().map(|e| e["request"]["url"].as_str().unwrap()).collect();
        assert_eq!(
            urls,
            [
                "Patient?identifier=https://fhir.nhs.uk/Id/nhs-number|9449305552",
                "Encounter?identifier=urn:hie:rrk:vn|V100",
                &format!("Provenance/{}", first.provenance_id),
            ]
        );
        let other_sender = translate(&A01.replace("|PAS|RRK|", "|EPR|RRK|")).unwrap();
        assert_ne!(other_sender.provenance_id, first.provenance_id, "control ids are unique per sender only");
        assert_ne!(translate(&A01.replace("TAYLOR", "TAYLER")).unwrap().digest, first.digest);
    }

    #[test]
    fn repeated_set_ids_and_patients_in_one_message_make_one_resource_each() {
        let oru = "MSH|^~\\&|LIMS|RRK|||20240306090000||ORU^R01|L1|P|2.5.1\rPID|1||9449305552^^^NHS^NH\rOBR|1||F1|X^Panel^L\rOBX|1|NM|A^a^L||1\rOBX|1|NM|B^b^L||2\rPID|1||9449305552^^^NHS^NH\rOBR|2||F2|Y^Panel^L\rOBX|1|NM|C^c^L||3";
        let bundle = translate(oru).unwrap().bundle;
        let urls: Vec<&str> = bundle["entry"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["request"]["ifNoneExist"].as_str().or(e["request"]["url"].as_str()).unwrap())
            .collect();
        let mut unique = urls.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), urls.len(), "one entry per condition: {urls:?}");
        let observations = bundle["entry"].as_array().unwrap().iter().filter(|e| e["resource"]["resourceType"] == "Observation").count();
        assert_eq!(observations, 3, "{urls:?}");
        let patients = bundle["entry"].as_array().unwrap().iter().filter(|e| e["resource"]["resourceType"] == "Patient").count();
        assert_eq!(patients, 1);
        assert_eq!(bundle["entry"][0]["request"]["method"], "POST", "a result does not replace the Patient");
    }

    #[test]
    fn a_document_s_confidentiality_labels_what_holds_its_content() {
        let mdm = |confidentiality: &str| {
            format!(
                "MSH|^~\\&|EPR|RRK|||20240309150000||MDM^T02^MDM_T02|D1|P|2.5.1\rPID|1||9449305552^^^NHS^NH\r\
                 TXA|1|DS^Discharge summary|TX|20240309143000||||||||DOC42^EPR|||||AU|{confidentiality}\r\
                 OBX|1|TX|DS^Discharge summary||Seen in the sexual health clinic.||||||F"
            )
        };
        let bundle = translate(&mdm("V")).unwrap().bundle;
        let labelled: Vec<&str> = bundle["entry"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["resource"]["meta"]["security"][0]["code"] == "V")
            .map(|e| e["resource"]["resourceType"].as_str().unwrap())
            .collect();
        assert_eq!(labelled, ["Composition", "DocumentReference"]);
        let usual = translate(&mdm("U")).unwrap().bundle;
        assert!(usual["entry"].as_array().unwrap().iter().all(|e| e["resource"]["meta"].get("security").is_none()));
        let error = translate(&mdm("X")).unwrap_err();
        assert_eq!((error.code, error.location.to_string()), (ErrorCode::TableValueNotFound, "TXA-18".to_owned()));
    }

    #[test]
    fn unsupported_types_versions_and_events_are_refused_whole() {
        let cases = [
            (A01.replace("ADT^A01^ADT_A01", "BAR^P01"), ErrorCode::UnsupportedMessageType, "MSH-9"),
            (A01.replace("ADT^A01^ADT_A01", "SIU^S16"), ErrorCode::UnsupportedEventCode, "MSH-9.2"),
            (A01.replace("ADT^A01^ADT_A01", "ADT^A60"), ErrorCode::UnsupportedEventCode, "MSH-9.2"),
            (A01.replace("ADT^A01^ADT_A01", "MDM^T01"), ErrorCode::UnsupportedEventCode, "MSH-9.2"),
            (A01.replace("|2.4", "|2.1"), ErrorCode::UnsupportedVersionId, "MSH-12"),
            (A01.replace("|M1|", "||"), ErrorCode::RequiredFieldMissing, "MSH-10"),
            (A01.replace("20240305101500||", "||"), ErrorCode::RequiredFieldMissing, "MSH-7"),
            (A01.replace("PV1|1|I", "PV1|1|Q"), ErrorCode::TableValueNotFound, "PV1-2"),
            // An admission without a visit number is keyed on its time; a transfer cannot be.
            (A01.replace("V100^^^RRK^VN", "").replace("ADT^A01^ADT_A01", "ADT^A02"), ErrorCode::RequiredFieldMissing, "PV1-19"),
            (A01.replace("19800101", "19801301"), ErrorCode::DataType, "PID-7"),
        ];
        assert_refused(&cases);
    }
}
