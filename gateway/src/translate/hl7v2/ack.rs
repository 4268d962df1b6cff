//! Acknowledgements (original mode): MSH, MSA and, for an error, ERR naming the segment, field
//! and reason — in the layout of the message's own version (ERR-1 before v2.5, ERR-2/3/4/8
//! from v2.5).

use super::Header;
use super::error::{ErrorCode, Hl7Error};
use super::message::{Delimiters, escape};

/// MSA-1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AckCode {
    /// Accepted: committed.
    Accept,
    /// Error in the content: fix the message before sending it again.
    Error,
    /// Rejected: type, event, version or processing id not taken here, or the gateway cannot
    /// take messages now (send it again later).
    Reject,
}

impl AckCode {
    pub fn code(&self) -> &'static str {
        match self {
            Self::Accept => "AA",
            Self::Error => "AE",
            Self::Reject => "AR",
        }
    }

    pub fn for_error(error: &Hl7Error) -> Self {
        if error.code.is_reject() { Self::Reject } else { Self::Error }
    }
}

/// Who the gateway says it is in the ACK's MSH-3/MSH-4 when the message named no receiver.
pub const GATEWAY_APPLICATION: &str = "HIE-GATEWAY";

/// Build an ACK. `header` is `None` when MSH itself could not be read; the ACK then uses the
/// standard delimiters and version 2.5.1.
pub fn acknowledgement(
    header: Option<&Header>,
    code: AckCode,
    error: Option<&Hl7Error>,
    note: Option<&str>,
    timestamp: &str,
    ack_control_id: &str,
) -> String {
    let delimiters = header.map_or(Delimiters::STANDARD, |h| h.delimiters);
    let field = delimiters.field;
    let component = delimiters.component;
    let encoding: String =
        [Some(component), Some(delimiters.repetition), delimiters.escape, Some(delimiters.subcomponent)].into_iter().flatten().collect();
    let version = header.map(|h| h.version.as_str()).filter(|v| super::SUPPORTED_VERSIONS.contains(v)).unwrap_or("2.5.1");
    let text = |value: &str| escape(value, &delimiters);
    // MSH-3..6 are echoed as received (swapped), so they need no escaping.
    let (receiving_app, receiving_facility, sending_app, sending_facility, control_id, trigger, processing) = match header {
        Some(h) => (
            if h.raw_parties[2].is_empty() { GATEWAY_APPLICATION.to_owned() } else { h.raw_parties[2].clone() },
            h.raw_parties[3].clone(),
            h.raw_parties[0].clone(),
            h.raw_parties[1].clone(),
            h.control_id.clone(),
            h.trigger_event.clone(),
            if h.processing_id.is_empty() { "P".to_owned() } else { h.processing_id.clone() },
        ),
        None => (GATEWAY_APPLICATION.to_owned(), String::new(), String::new(), String::new(), String::new(), String::new(), "P".to_owned()),
    };
    let message_type = if trigger.is_empty() { "ACK".to_owned() } else { format!("ACK{component}{trigger}{component}ACK") };
    let mut ack = format!(
        "MSH{field}{encoding}{field}{receiving_app}{field}{receiving_facility}{field}{sending_app}{field}{sending_facility}{field}{timestamp}{field}{field}{message_type}{field}{ack_control_id}{field}{processing}{field}{version}\r",
    );
    let msa_text = error.map(|e| e.to_string()).or_else(|| note.map(str::to_owned)).unwrap_or_default();
    ack.push_str(&format!("MSA{field}{}{field}{}", code.code(), text(&control_id)));
    if !msa_text.is_empty() {
        ack.push_str(&format!("{field}{}", text(&truncate(&msa_text, 80))));
    }
    ack.push('\r');
    if let Some(error) = error {
        let subcomponent = delimiters.subcomponent;
        let error_code = error.code;
        if version < "2.5" {
            // ERR-1 (ELD): segment ^ sequence ^ field ^ code&text&HL70357
            let location = &error.location;
            ack.push_str(&format!(
                "ERR{field}{}{component}{}{component}{}{component}{}{subcomponent}{}{subcomponent}HL70357\r",
                location.segment.clone().unwrap_or_default(),
                location.sequence,
                location.field.map(|f| f.to_string()).unwrap_or_default(),
                error_code.code(),
                error_code.text(),
            ));
        } else {
            ack.push_str(&format!(
                "ERR{field}{field}{}{field}{}{component}{}{component}HL70357{field}E{field}{field}{field}{field}{}\r",
                error.location.erl(component),
                error_code.code(),
                error_code.text(),
                text(&error.reason),
            ));
        }
    }
    ack
}

fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut cut: String = text.chars().take(max - 1).collect();
    cut.push('…');
    cut
}

/// An internal failure as an error for the ACK: the gateway could not take the message now.
pub fn unavailable(reason: &str) -> Hl7Error {
    Hl7Error::new(ErrorCode::ApplicationInternal, super::Location::segment("MSH", 1), reason)
}

#[cfg(test)]
mod tests {
    use super::super::{Message, header};
    use super::*;
    use crate::translate::hl7v2::Location;

    fn header_of(text: &str) -> Header {
        header(&Message::parse(text).unwrap()).unwrap()
    }

    #[test]
    fn accept_echoes_the_control_id_and_swaps_sender_and_receiver() {
        let h = header_of("MSH|^~\\&|PAS|RRK|HIE|HUB|20240101120000||ADT^A01^ADT_A01|MSG1|P|2.4");
        let ack = acknowledgement(Some(&h), AckCode::Accept, None, None, "20240101120001", "A1");
        assert_eq!(ack, "MSH|^~\\&|HIE|HUB|PAS|RRK|20240101120001||ACK^A01^ACK|A1|P|2.4\rMSA|AA|MSG1\r");
    }

    #[test]
    fn errors_name_the_place_in_the_version_s_layout() {
        let error = Hl7Error::new(ErrorCode::RequiredFieldMissing, Location::field("PID", 1, 3), "PID-3 has no identifier | at all");
        let old = header_of("MSH|^~\\&|PAS|RRK|||20240101||ADT^A01|MSG1|P|2.4");
        let ack = acknowledgement(Some(&old), AckCode::Error, Some(&error), None, "20240101", "A1");
        assert!(ack.contains("MSA|AE|MSG1|PID-3: PID-3 has no identifier \\F\\ at all\r"), "{ack}");
        assert!(ack.ends_with("ERR|PID^1^3^101&Required field missing&HL70357\r"), "{ack}");
        let new = header_of("MSH|^~\\&|PAS|RRK|||20240101||ADT^A01|MSG1|P|2.5.1");
        let ack = acknowledgement(Some(&new), AckCode::Error, Some(&error), None, "20240101", "A1");
        assert!(ack.ends_with("ERR||PID^1^3^1|101^Required field missing^HL70357|E||||PID-3 has no identifier \\F\\ at all\r"), "{ack}");
    }

    #[test]
    fn hierarchic_designators_and_escapes_in_msh_come_back_as_sent() {
        let h = header_of("MSH|^~\\&|PAS\\F\\X|RRK^2.16.840.1.113883.2.1.4.3^ISO|HIE^1.2.3^ISO|HUB|20240101||ADT^A01|M1|P|2.5");
        let ack = acknowledgement(Some(&h), AckCode::Accept, None, None, "20240101", "A1");
        assert!(ack.starts_with("MSH|^~\\&|HIE^1.2.3^ISO|HUB|PAS\\F\\X|RRK^2.16.840.1.113883.2.1.4.3^ISO|20240101||"), "{ack}");
    }

    #[test]
    fn unreadable_headers_still_get_an_ack() {
        let error = Message::parse("garbage").unwrap_err();
        let ack = acknowledgement(None, AckCode::for_error(&error), Some(&error), None, "20240101", "A1");
        assert!(ack.starts_with("MSH|^~\\&|HIE-GATEWAY||||20240101||ACK|A1|P|2.5.1\rMSA|AE||"), "{ack}");
    }
}
