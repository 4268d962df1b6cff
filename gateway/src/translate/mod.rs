//! Translators: records from trusts' and GP systems' formats into FHIR R4 transaction Bundles.
//!
//! **Architecture Invariant:** translators are pure functions of their input (`&str`/bytes →
//! Bundle or error): no I/O, no clock, no store. So they can be fuzzed and benchmarked alone,
//! `hie-gateway translate` works without a server or database, and the ingest paths (MLLP,
//! `POST /ingest`, `hie-gateway ingest`) commit exactly what `translate` prints.
//!
//! Every Bundle is a `transaction` of conditional upserts keyed on the source's own identifiers
//! (NHS number, visit number, order and document numbers), plus one Provenance naming the input,
//! so applying the same input twice changes nothing.

pub mod codes;
pub mod discharge;
pub mod emis;
pub mod fhir;
pub mod gp;
pub mod hl7v2;
pub mod rows;
pub mod systmone;
pub mod transaction;

use std::fmt;

/// The source formats of DESIGN §6. Only those with a translator are accepted on the command
/// line; the others are named so that a user asking for one gets a clear answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Hl7v2,
    EmisCsv,
    /// EMIS Open `MedicalRecord` XML, one patient per file.
    EmisXml,
    SystmOneCsv,
    /// Legacy CDA discharge summaries (ITK eDischarge).
    Cda,
    /// ITK3 FHIR STU3 eDischarge Bundles.
    Itk3,
    /// FHIR R4 as another system publishes it: a Bundle or one resource.
    Fhir,
}

const TRANSLATED: &str = "hl7v2, emis-csv, emis-xml, systmone-csv, cda, itk3, fhir";

impl Format {
    pub const ALL: [Self; 7] = [Self::Hl7v2, Self::EmisCsv, Self::EmisXml, Self::SystmOneCsv, Self::Cda, Self::Itk3, Self::Fhir];

    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Hl7v2 => "hl7v2",
            Self::EmisCsv => "emis-csv",
            Self::EmisXml => "emis-xml",
            Self::SystmOneCsv => "systmone-csv",
            Self::Cda => "cda",
            Self::Itk3 => "itk3",
            Self::Fhir => "fhir",
        }
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        match text {
            "hl7v2" => Ok(Self::Hl7v2),
            "emis-csv" => Ok(Self::EmisCsv),
            "emis-xml" => Ok(Self::EmisXml),
            "systmone-csv" => Ok(Self::SystmOneCsv),
            "cda" => Ok(Self::Cda),
            "itk3" => Ok(Self::Itk3),
            "fhir" => Ok(Self::Fhir),
            other => Err(format!("unknown format {other:?}; this gateway translates: {TRANSLATED}")),
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Translate a GP extract (several files) of `format` into a Bundle per patient.
pub fn translate_extract(
    format: Format,
    files: &[emis::ExtractFile],
    maps: &codes::CodeMaps,
) -> Result<emis::Translated, rows::ExtractError> {
    match format {
        Format::EmisCsv => emis::translate(files, maps),
        Format::EmisXml => emis::open::translate(files, maps),
        Format::SystmOneCsv => systmone::translate(files, maps),
        Format::Hl7v2 | Format::Cda | Format::Itk3 | Format::Fhir => {
            Err(rows::ExtractError::file("(extract)", format!("{format} is not an extract")))
        }
    }
}

impl Format {
    /// Whether an input is a set of files (an extract) rather than messages.
    pub fn is_extract(&self) -> bool {
        matches!(self, Self::EmisCsv | Self::EmisXml | Self::SystmOneCsv)
    }

    /// The files of an extract in a directory: their extension.
    pub fn file_extension(&self) -> &'static str {
        if *self == Self::EmisXml { "xml" } else { "csv" }
    }

    /// Whether an input is one whole document (a discharge summary, a FHIR Bundle) per file or
    /// request.
    pub fn is_document(&self) -> bool {
        matches!(self, Self::Cda | Self::Itk3 | Self::Fhir)
    }
}

/// Translate one document of `format` (a discharge summary, a FHIR Bundle) that arrived at
/// `received`: the time of an input that carries none of its own.
pub fn translate_document(
    format: Format,
    bytes: &[u8],
    received: time::OffsetDateTime,
) -> Result<discharge::Translated, discharge::DocumentError> {
    match format {
        Format::Cda => discharge::cda::translate(bytes),
        Format::Itk3 => discharge::itk3::translate(bytes),
        Format::Fhir => {
            let received = received
                .replace_nanosecond(0)
                .unwrap_or(received)
                .format(&time::format_description::well_known::Rfc3339)
                .map_err(|e| discharge::DocumentError::new("fhir", "(time received)", e.to_string()))?;
            fhir::translate(bytes, &received)
        }
        other => Err(discharge::DocumentError::new("document", "(input)", format!("{other} is not a document format"))),
    }
}

/// Split a file of HL7 v2 messages: each message starts with `MSH`; MLLP framing bytes and
/// batch envelopes (FHS/BHS/BTS/FTS) are dropped. Returns each message with the line it starts
/// on (1-based), for error messages that say where.
pub fn split_hl7v2_messages(text: &str) -> Vec<(usize, String)> {
    let mut messages: Vec<(usize, String)> = Vec::new();
    let mut current: Option<(usize, String)> = None;
    // Lines as an editor numbers them: LF-separated when the file has any LF (CR LF counts
    // once), else CR-separated (a file of messages as they travel).
    let line_break = if text.contains('\n') { '\n' } else { '\r' };
    for (index, physical) in text.split(line_break).enumerate() {
        for segment in physical.split('\r') {
            let segment = segment.trim_matches(|c| c == '\u{0b}' || c == '\u{1c}' || c == '\u{feff}');
            if segment.trim().is_empty() {
                continue;
            }
            if segment.starts_with("MSH") {
                if let Some(done) = current.take() {
                    messages.push(done);
                }
                current = Some((index + 1, String::new()));
            }
            if matches!(segment.get(..3), Some("FHS" | "BHS" | "BTS" | "FTS")) {
                continue;
            }
            match &mut current {
                Some((_, message)) => {
                    message.push_str(segment);
                    message.push('\r');
                }
                None => messages.push((index + 1, segment.to_owned())),
            }
        }
    }
    messages.extend(current);
    messages
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_split_on_msh_with_their_line_numbers() {
        let text = "FHS|^~\\&\nMSH|^~\\&|A\nPID|1\n\n\u{0b}MSH|^~\\&|B\rPID|2\u{1c}\r\nBTS|2\n";
        let messages = split_hl7v2_messages(text);
        assert_eq!(messages, vec![(2, "MSH|^~\\&|A\rPID|1\r".to_owned()), (5, "MSH|^~\\&|B\rPID|2\r".to_owned())]);
        assert_eq!(split_hl7v2_messages("PID|1\nMSH|x")[0], (1, "PID|1".to_owned()));
        let crlf = split_hl7v2_messages("MSH|a\r\nPID|1\r\nMSH|b\r\n");
        assert_eq!(crlf.iter().map(|(line, _)| *line).collect::<Vec<_>>(), [1, 3], "CR LF is one line break");
        let cr_only = split_hl7v2_messages("MSH|a\rPID|1\rMSH|b\r");
        assert_eq!(cr_only.iter().map(|(line, _)| *line).collect::<Vec<_>>(), [1, 3]);
    }

    #[test]
    fn formats_not_built_say_so() {
        assert_eq!(Format::parse("hl7v2"), Ok(Format::Hl7v2));
        assert_eq!(Format::parse("emis-csv"), Ok(Format::EmisCsv));
        assert_eq!(Format::parse("cda"), Ok(Format::Cda));
        assert_eq!(Format::parse("emis-xml"), Ok(Format::EmisXml));
        assert_eq!(Format::parse("fhir"), Ok(Format::Fhir));
        assert!(Format::parse("xml").unwrap_err().contains("unknown format"));
    }
}
