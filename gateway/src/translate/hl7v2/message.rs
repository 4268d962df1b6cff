//! HL7 v2 "pipe and hat" messages: segments, fields, repetitions, components, subcomponents and
//! escape sequences, read without copying.
//!
//! Positions are 1-based as HL7 writes them (`PID-3.4.1`). MSH is special: MSH-1 is the field
//! separator itself and MSH-2 the encoding characters, so its n-th field sits one place earlier
//! in the split than any other segment's.

use std::borrow::Cow;

use super::error::{ErrorCode, Hl7Error, Location};

/// The separators a message declares in MSH-1 and MSH-2.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Delimiters {
    pub field: char,
    pub component: char,
    pub repetition: char,
    pub escape: Option<char>,
    pub subcomponent: char,
}

impl Delimiters {
    pub const STANDARD: Self = Self { field: '|', component: '^', repetition: '~', escape: Some('\\'), subcomponent: '&' };
}

/// One parsed message, borrowing the text it came from.
#[derive(Debug)]
pub struct Message<'a> {
    pub delimiters: Delimiters,
    segments: Vec<Segment<'a>>,
}

#[derive(Clone, Debug)]
pub struct Segment<'a> {
    /// Three characters: `MSH`, `PID`, `ZU1`…
    pub id: &'a str,
    /// 1-based position in the message, for error locations.
    pub position: usize,
    /// How many segments with this id came before it, plus one (`OBX` 3 is the third OBX).
    pub sequence: usize,
    text: &'a str,
    delimiters: Delimiters,
}

/// A field: one or more repetitions.
#[derive(Clone, Copy, Debug)]
pub struct Field<'a> {
    text: &'a str,
    delimiters: Delimiters,
}

/// One repetition of a field: components, each of subcomponents.
#[derive(Clone, Copy, Debug)]
pub struct Repetition<'a> {
    text: &'a str,
    delimiters: Delimiters,
}

impl<'a> Message<'a> {
    /// Split a message into segments. Segments end with `\r` (the standard), `\n` or `\r\n`
    /// (files edited by hand); blank lines are skipped.
    pub fn parse(text: &'a str) -> Result<Self, Hl7Error> {
        let text = text.trim_start_matches(['\u{feff}', ' ', '\t', '\r', '\n']);
        if !text.starts_with("MSH") {
            let start: String = text.chars().take(20).collect();
            return Err(Hl7Error::new(
                ErrorCode::SegmentSequence,
                Location::segment("MSH", 1),
                format!("a message starts with an MSH segment; this one starts with {start:?}"),
            ));
        }
        let delimiters = delimiters(text)?;
        let mut segments: Vec<Segment<'a>> = Vec::with_capacity(16);
        for (index, line) in text.split(['\r', '\n']).filter(|line| !line.trim().is_empty()).enumerate() {
            let id = line.get(..3).filter(|id| id.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit()));
            let Some(id) = id.filter(|_| line.len() == 3 || line[3..].starts_with(delimiters.field)) else {
                let start: String = line.chars().take(12).collect();
                return Err(Hl7Error::new(
                    ErrorCode::SegmentSequence,
                    Location::at_position(index + 1),
                    format!("segment {} does not start with a three-letter segment id and a field separator: {start:?}", index + 1),
                ));
            };
            let sequence = segments.iter().filter(|segment| segment.id == id).count() + 1;
            segments.push(Segment { id, position: index + 1, sequence, text: line, delimiters });
        }
        Ok(Self { delimiters, segments })
    }

    pub fn segments(&self) -> &[Segment<'a>] {
        &self.segments
    }

    pub fn msh(&self) -> &Segment<'a> {
        &self.segments[0]
    }

    /// The first segment with this id.
    pub fn first(&self, id: &str) -> Option<&Segment<'a>> {
        self.segments.iter().find(|segment| segment.id == id)
    }

    /// The first segment with this id, or an error naming it as required.
    pub fn required(&self, id: &str, why: &str) -> Result<&Segment<'a>, Hl7Error> {
        self.first(id).ok_or_else(|| {
            Hl7Error::new(ErrorCode::SegmentSequence, Location::segment(id, 1), format!("the {id} segment is missing; {why}"))
        })
    }
}

fn delimiters(text: &str) -> Result<Delimiters, Hl7Error> {
    let mut chars = text[3..].chars();
    let field = chars.next().ok_or_else(|| msh_error(1, "MSH-1 (field separator) is missing"))?;
    if field.is_alphanumeric() || field == '\r' || field == '\n' {
        return Err(msh_error(1, format!("MSH-1 field separator {field:?} is not a separator character")));
    }
    let encoding: String = chars.take_while(|&c| c != field && c != '\r' && c != '\n').collect();
    let mut encoding_chars = encoding.chars();
    let component = encoding_chars.next().ok_or_else(|| msh_error(2, "MSH-2 (encoding characters) is empty"))?;
    let repetition = encoding_chars.next().unwrap_or('~');
    let escape = encoding_chars.next();
    let subcomponent = encoding_chars.next().unwrap_or('&');
    let all = [field, component, repetition, subcomponent];
    let distinct = all.iter().enumerate().all(|(i, a)| all[i + 1..].iter().all(|b| a != b));
    if !distinct || all.iter().any(|c| c.is_alphanumeric()) || escape.is_some_and(|e| all.contains(&e) || e.is_alphanumeric()) {
        return Err(msh_error(2, format!("MSH-2 encoding characters {encoding:?} must be distinct non-alphanumeric characters")));
    }
    Ok(Delimiters { field, component, repetition, escape, subcomponent })
}

fn msh_error(field: usize, reason: impl Into<String>) -> Hl7Error {
    Hl7Error::new(ErrorCode::DataType, Location::field("MSH", 1, field), reason)
}

impl<'a> Segment<'a> {
    /// Field `n` (1-based), empty when absent.
    pub fn field(&self, n: usize) -> Field<'a> {
        let text = if self.id == "MSH" {
            match n {
                0 => "",
                1 => &self.text[3..3 + self.delimiters.field.len_utf8()],
                n => self.text.split(self.delimiters.field).nth(n - 1).unwrap_or(""),
            }
        } else {
            self.text.split(self.delimiters.field).nth(n).unwrap_or("")
        };
        Field { text, delimiters: self.delimiters }
    }

    /// The unescaped text of the first component of field `n`'s first repetition.
    pub fn value(&self, n: usize) -> Option<Cow<'a, str>> {
        self.field(n).first().component(1).text()
    }

    /// Like [`value`](Self::value), or an error naming the field.
    pub fn required_value(&self, n: usize, what: &str) -> Result<Cow<'a, str>, Hl7Error> {
        self.value(n)
            .ok_or_else(|| Hl7Error::new(ErrorCode::RequiredFieldMissing, self.locate(n), format!("{}-{n} ({what}) is required", self.id)))
    }

    /// The segment as received.
    pub fn raw(&self) -> &'a str {
        self.text
    }

    pub fn locate(&self, field: usize) -> Location {
        Location::field(self.id, self.sequence, field)
    }

    /// How many fields the segment has (the id excluded).
    pub fn field_count(&self) -> usize {
        self.text.split(self.delimiters.field).count() - 1 + usize::from(self.id == "MSH")
    }
}

impl<'a> Field<'a> {
    pub fn is_empty(&self) -> bool {
        self.text.is_empty() || self.text == "\"\""
    }

    /// `""` is HL7's explicit null: "delete the value held".
    pub fn is_explicit_null(&self) -> bool {
        self.text == "\"\""
    }

    pub fn repetitions(self) -> impl Iterator<Item = Repetition<'a>> + 'a {
        let delimiters = self.delimiters;
        // Empty repetitions are kept, so that `(n)` in an error names the n-th as written.
        let text = if self.is_explicit_null() { "" } else { self.text };
        text.split(delimiters.repetition).filter(move |_| !text.is_empty()).map(move |text| Repetition { text, delimiters })
    }

    pub fn first(&self) -> Repetition<'a> {
        self.repetitions().next().unwrap_or(Repetition { text: "", delimiters: self.delimiters })
    }

    pub fn raw(&self) -> &'a str {
        self.text
    }
}

impl<'a> Repetition<'a> {
    /// Component `n` (1-based) as a repetition-like value whose subcomponents can be read.
    pub fn component(&self, n: usize) -> Repetition<'a> {
        let text = self.text.split(self.delimiters.component).nth(n.saturating_sub(1)).unwrap_or("");
        Repetition { text, delimiters: self.delimiters }
    }

    /// Subcomponent `n` of this component.
    pub fn sub(&self, n: usize) -> Repetition<'a> {
        let text = self.text.split(self.delimiters.subcomponent).nth(n.saturating_sub(1)).unwrap_or("");
        Repetition { text, delimiters: self.delimiters }
    }

    /// The unescaped text of the first subcomponent; `None` when empty or `""`.
    pub fn text(&self) -> Option<Cow<'a, str>> {
        let first = self.text.split(self.delimiters.subcomponent).next().unwrap_or("");
        let trimmed = first.trim();
        if trimmed.is_empty() || trimmed == "\"\"" {
            return None;
        }
        Some(plain(unescape(trimmed, &self.delimiters)))
    }

    /// The unescaped text of the whole value, subcomponents and all.
    pub fn full_text(&self) -> Option<Cow<'a, str>> {
        let trimmed = self.text.trim();
        (!trimmed.is_empty() && trimmed != "\"\"").then(|| plain(unescape(trimmed, &self.delimiters)))
    }

    pub fn is_empty(&self) -> bool {
        self.text.trim().is_empty()
    }

    pub fn raw(&self) -> &'a str {
        self.text
    }
}

/// FHIR strings hold no control characters and no whitespace but space, tab, CR and LF: other
/// spaces (a no-break space from a word processor) become a space, control characters go.
fn plain(text: Cow<'_, str>) -> Cow<'_, str> {
    let foreign = |c: char| (c.is_whitespace() || c.is_control()) && !matches!(c, ' ' | '\t' | '\r' | '\n');
    if !text.chars().any(foreign) {
        return text;
    }
    Cow::Owned(
        text.chars().filter(|&c| !c.is_control() || matches!(c, '\t' | '\r' | '\n')).map(|c| if foreign(c) { ' ' } else { c }).collect(),
    )
}

/// Undo HL7 escape sequences: `\F\ \S\ \T\ \R\ \E\` are the delimiters, `\.br\` a line break,
/// `\Xhh…\` hexadecimal bytes; highlighting and other formatting escapes are dropped. An
/// unterminated escape is kept as written.
pub fn unescape<'a>(text: &'a str, delimiters: &Delimiters) -> Cow<'a, str> {
    let Some(escape) = delimiters.escape else { return Cow::Borrowed(text) };
    if !text.contains(escape) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find(escape) {
        out.push_str(&rest[..start]);
        let after = &rest[start + escape.len_utf8()..];
        let Some(end) = after.find(escape) else {
            out.push_str(&rest[start..]);
            return Cow::Owned(out);
        };
        let sequence = &after[..end];
        match sequence {
            "F" => out.push(delimiters.field),
            "S" => out.push(delimiters.component),
            "T" => out.push(delimiters.subcomponent),
            "R" => out.push(delimiters.repetition),
            "E" => out.push(escape),
            ".br" => out.push('\n'),
            "H" | "N" => {}
            // Hex digits only: anything else (a multi-byte character) is kept as written.
            _ if sequence.starts_with('X') && sequence.len() % 2 == 1 && sequence[1..].bytes().all(|b| b.is_ascii_hexdigit()) => {
                let bytes: Option<Vec<u8>> =
                    (1..sequence.len()).step_by(2).map(|i| u8::from_str_radix(&sequence[i..i + 2], 16).ok()).collect();
                match bytes {
                    Some(bytes) => out.push_str(&String::from_utf8_lossy(&bytes)),
                    None => out.push_str(&rest[start..start + 2 * escape.len_utf8() + end]),
                }
            }
            // Formatting commands (.sp, .in, .ti, .sk, .ce, .fi, .nf) carry no text.
            _ if sequence.starts_with('.') => {}
            _ => out.push_str(&rest[start..start + 2 * escape.len_utf8() + end]),
        }
        rest = &after[end + escape.len_utf8()..];
    }
    out.push_str(rest);
    Cow::Owned(out)
}

/// Escape text for a field of an outgoing message (an ACK's error text).
pub fn escape(text: &str, delimiters: &Delimiters) -> String {
    let Some(escape) = delimiters.escape else {
        return text.replace([delimiters.field, delimiters.component, delimiters.repetition, delimiters.subcomponent], " ");
    };
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        let code = match c {
            c if c == delimiters.field => Some("F"),
            c if c == delimiters.component => Some("S"),
            c if c == delimiters.subcomponent => Some("T"),
            c if c == delimiters.repetition => Some("R"),
            c if c == escape => Some("E"),
            '\r' | '\n' => Some(".br"),
            _ => None,
        };
        match code {
            Some(code) => {
                out.push(escape);
                out.push_str(code);
                out.push(escape);
            }
            None => out.push(c),
        }
    }
    out
}

/// Decode a message's bytes: UTF-8 when it is valid UTF-8, otherwise ISO 8859-1 (HL7's default
/// character set when MSH-18 is empty), which maps every byte to a character.
pub fn decode(bytes: &[u8]) -> Cow<'_, str> {
    match std::str::from_utf8(bytes) {
        Ok(text) => Cow::Borrowed(text),
        Err(_) => Cow::Owned(bytes.iter().map(|&b| b as char).collect()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ADT: &str = "MSH|^~\\&|PAS|RRK|HIE|HIE|20240101120000||ADT^A01^ADT_A01|MSG1|P|2.4\rEVN|A01|20240101120000\rPID|1||9449305552^^^NHS^NH~K123^^^RRK^MR||SMITH^JOHN^^^MR||19800101|M\rPV1|1|I|W1^B2^3";

    #[test]
    fn fields_components_and_repetitions() {
        let message = Message::parse(ADT).unwrap();
        assert_eq!(message.segments().len(), 4);
        let msh = message.msh();
        assert_eq!(msh.field(1).raw(), "|");
        assert_eq!(msh.field(2).raw(), "^~\\&");
        assert_eq!(msh.value(3).as_deref(), Some("PAS"));
        assert_eq!(msh.field(9).first().component(2).text().as_deref(), Some("A01"));
        assert_eq!(msh.value(12).as_deref(), Some("2.4"));
        let pid = message.first("PID").unwrap();
        let ids: Vec<_> = pid.field(3).repetitions().map(|r| r.component(1).text().unwrap().into_owned()).collect();
        assert_eq!(ids, ["9449305552", "K123"]);
        assert_eq!(pid.field(5).first().component(2).text().as_deref(), Some("JOHN"));
        assert_eq!(pid.value(99), None);
        assert_eq!(pid.locate(3).to_string(), "PID-3");
    }

    #[test]
    fn newline_separated_segments_and_sequences() {
        let text = ADT.replace('\r', "\r\n") + "\r\nOBX|1\nOBX|2\n";
        let message = Message::parse(&text).unwrap();
        let obx: Vec<_> = message.segments().iter().filter(|s| s.id == "OBX").map(|s| s.sequence).collect();
        assert_eq!(obx, [1, 2]);
    }

    #[test]
    fn escapes_are_undone_and_redone() {
        let d = Delimiters::STANDARD;
        assert_eq!(unescape("A\\F\\B\\S\\C\\T\\D\\R\\E\\E\\\\.br\\F", &d), "A|B^C&D~E\\\nF");
        assert_eq!(unescape("\\X4142\\ and \\H\\bold\\N\\", &d), "AB and bold");
        assert_eq!(unescape("unterminated \\F", &d), "unterminated \\F");
        // Not hex: kept as written, never sliced inside a character.
        assert_eq!(unescape("\\X1€\\ \\X1éA\\", &d), "\\X1€\\ \\X1éA\\");
        assert_eq!(escape("a|b^c&d~e\\f\nx", &d), "a\\F\\b\\S\\c\\T\\d\\R\\e\\E\\f\\.br\\x");
    }

    #[test]
    fn malformed_starts_are_named() {
        let error = Message::parse("PID|1").unwrap_err();
        assert!(error.reason.contains("starts with an MSH"), "{error}");
        let error = Message::parse("MSH|^~\\&|A\rP|x").unwrap_err();
        assert!(error.reason.contains("segment 2"), "{error}");
        let error = Message::parse("MSHA^~\\&").unwrap_err();
        assert!(error.reason.contains("MSH-1"), "{error}");
        let error = Message::parse("MSH|^^\\&|").unwrap_err();
        assert!(error.reason.contains("MSH-2"), "{error}");
    }

    #[test]
    fn explicit_null_is_empty() {
        let message = Message::parse("MSH|^~\\&|A\rPID|1|\"\"|x").unwrap();
        let pid = message.first("PID").unwrap();
        assert!(pid.field(2).is_explicit_null());
        assert_eq!(pid.value(2), None);
        assert_eq!(pid.field(2).repetitions().count(), 0);
    }

    #[test]
    fn text_is_fit_for_fhir_strings() {
        let message = Message::parse("MSH|^~\\&|A\rNTE|1||a\u{a0}b\u{7}c\td").unwrap();
        assert_eq!(message.first("NTE").unwrap().value(3).as_deref(), Some("a bc\td"));
    }

    #[test]
    fn latin1_bytes_decode() {
        assert_eq!(decode(b"caf\xe9"), "café");
        assert_eq!(decode("café".as_bytes()), "café");
    }
}
